"""``dsosim hil-keys DIR --name gateway --name bat1 ...``: CURVE key pairs for HIL.

Writes ZeroMQ certificate files (``zmq.auth.create_certificates``):
``NAME.key`` holds the public key, ``NAME.key_secret`` the pair. The name
``gateway`` (``--gateway-name``) is the gateway's pair; every other name is a
device (or a controller PC serving devices).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

PROG = "dsosim hil-keys"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _name(text: str) -> str:
    if not NAME.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a name is 1-64 of [A-Za-z0-9_.-], starting with a letter or digit"
        )
    return text


DESCRIPTION = (
    "Write ZeroMQ CURVE certificate pairs (NAME.key public, NAME.key_secret "
    "secret) and say which file goes where."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="folder to write the key files into (created)")
    p.add_argument(
        "--name",
        required=True,
        action="append",
        type=_name,
        help="a key pair to make; repeat (e.g. --name gateway --name bat1)",
    )
    p.add_argument(
        "--gateway-name",
        default="gateway",
        type=_name,
        metavar="NAME",
        help="which --name is the gateway's pair (default: gateway)",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing key files")


def handle(args: argparse.Namespace) -> int:
    import zmq.auth

    folder = Path(args.dir)
    names: list[str] = list(dict.fromkeys(args.name))
    files = [folder / f"{n}{ext}" for n in names for ext in (".key", ".key_secret")]
    existing = [str(f) for f in files if f.exists()]
    if existing and not args.force:
        print(
            f"{PROG}: {', '.join(existing)} already exist; not overwriting (--force to replace "
            f"them: peers holding the old keys will be refused)",
            file=sys.stderr,
        )
        return 2
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for n in names:
            public, secret = zmq.auth.create_certificates(folder, n)
            os.chmod(secret, 0o600)
            print(f"wrote {public} (public) and {secret} (secret)")
    except OSError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    _print_where(folder, names, args.gateway_name)
    return 0


def _print_where(folder: Path, names: list[str], gateway: str) -> None:
    devices = [n for n in names if n != gateway]
    print()
    if gateway in names:
        print(
            f"Gateway machine: {folder / (gateway + '.key_secret')} (its own pair), and a folder "
            f"holding only the public keys of the devices it lets in: "
            f"{', '.join(d + '.key' for d in devices) or '(no device named here)'}."
        )
    else:
        print(
            f"No --name {gateway}: the gateway's pair is not among these; devices need its "
            f"{gateway}.key."
        )
    for d in devices:
        print(f"Device {d}: {folder / (gateway + '.key')} and {folder / (d + '.key_secret')}:")
        print(
            f"  dsosim hil-device --connect tcp://GATEWAY_HOST:5570 --device {d} "
            f"--curve-server-key {folder / (gateway + '.key')} "
            f"--curve-key {folder / (d + '.key_secret')}"
        )
    print("Keep the .key_secret files private; the .key files can be copied anywhere.")
