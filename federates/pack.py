"""Several federates in one process, each still its own HELICS federate.

``python -m dsosim.federates.pack --config federation.json --name A --name B``
runs federates A and B (ISO, utilities, independent operators, aggregators)
in threads of one process. Each keeps everything it has as a process of its
own: its own HELICS federate and core, endpoint, log lines, lock, failure
handling (:func:`~dsosim.federates.common.shell.run_federate`): only the
interpreter, its imports and its memory are shared. A federation packed into a
few processes starts much faster (Python, numpy, pydantic and HELICS's
bindings are imported once per process, not once per federate) and switches
between fewer processes; its results are the same bytes (a test checks).

The threads share the interpreter's lock: pure-Python work of two federates
in one process does not run in parallel, while HELICS, OpenDSS, HiGHS and
numpy's larger operations release it. ``dsosim build --processes N`` packs
a federation into N such processes (the recorder, the broker and a HIL
gateway keep their own).

On a stop signal every federate of the process is interrupted (each then
stops as it would alone); the process exits with the most telling of their
exit codes: a failure (1) before a refused join (2), before a stop signal
(128 + signal), before being stopped by the federation (3).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import helics as h

from dsosim.federates.common.config import FederationConfig, load_federation
from dsosim.federates.common.lifecycle import (
    AlreadyRunning,
    StopSignals,
    die_with_parent,
    hold_lock,
)
from dsosim.federates.common.log import federate_log
from dsosim.federates.common.shell import FederateShell, core_init, run_federate

Body = Callable[[FederateShell], None]


def body_of(config: FederationConfig, name: str, base: Path) -> Body:
    """The federate ``name``'s run function, importing only its own kind."""
    if name == config.iso.name:
        from dsosim.federates.iso.__main__ import run as run_iso

        return lambda shell: run_iso(shell, config)
    if any(d.name == name for d in config.dsos):
        from dsosim.federates.dso.__main__ import run as run_dso

        return lambda shell: run_dso(shell, config, name, base)
    if name in config.independent_names():
        from dsosim.federates.imo.__main__ import run as run_imo

        return lambda shell: run_imo(shell, config, name)
    if any(a.name == name for a in config.aggregators):
        from dsosim.federates.aggregator.__main__ import run as run_aggregator

        return lambda shell: run_aggregator(shell, config, name)
    raise ValueError(
        f"{name!r} cannot be packed: only the ISO, utilities, independent operators "
        "and aggregators of this federation can"
    )


def exit_code(codes: list[int]) -> int:
    """The process's exit code from its federates' (see the module docstring)."""
    for wanted in (1, 2):
        if wanted in codes:
            return wanted
    signalled = [c for c in codes if c >= 128]
    return max(signalled) if signalled else max(codes, default=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsosim.federates.pack")
    parser.add_argument("--config", required=True, help="federation.json written by dsosim build")
    parser.add_argument(
        "--name", required=True, action="append", help="a federate to run (repeat for each)"
    )
    args = parser.parse_args(argv)
    config, base = load_federation(args.config)
    bodies = [(name, body_of(config, name, base)) for name in args.name]
    die_with_parent()
    # Every federate's lock first, before the process's HELICS core exists: a
    # second launch of the same runner must never contact the broker (see
    # ``run_federate``), and a core may connect as soon as it is made.
    for name in args.name:
        try:
            hold_lock(base / f".{name}.lock", f"federate {name!r} of {base}")
        except AlreadyRunning as exc:
            federate_log(name).error(
                "FAILED: %s: another launch of this federation is running; "
                "not joining (it would disturb that run)",
                exc,
            )
            return 2
    shown = args.name if len(args.name) <= 4 else [*args.name[:3], f"{len(args.name) - 3} more"]
    stops = StopSignals(f"process of {', '.join(shown)}").start()
    shells: list[FederateShell] = []
    lock = threading.Lock()

    def interrupt_all(reason: str) -> None:
        with lock:
            live = list(shells)
        for shell in live:
            shell.interrupt(reason)

    stops.on_stop(interrupt_all)

    # one HELICS core for the process's federates: messages between them stay
    # in the process, and one core's threads serve them all (measured: about a
    # tenth less CPU per interval for the study packed in two processes)
    try:
        core = h.helicsCreateCore(
            config.helics.core_type,
            f"pack-{os.getpid()}",
            core_init(args.name[0], config.helics, len(args.name)),
        )
    except h.HelicsException as exc:
        for name in args.name:
            federate_log(name).error("could not join the federation: %s", exc)
        return 2

    def shell_for(name: str) -> FederateShell:
        shell = FederateShell(
            name,
            config.helics,
            recorder=config.recorder.name,
            owns_library=False,
            core=h.helicsCoreGetIdentifier(core),
        )
        with lock:
            shells.append(shell)
        return shell

    codes = [0] * len(bodies)

    def one(i: int, name: str, body: Body) -> None:
        codes[i] = run_federate(name, lambda: shell_for(name), body, stops=stops)

    threads = [
        threading.Thread(target=one, args=(i, name, body), name=name)
        for i, (name, body) in enumerate(bodies)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stops.on_stop(None)
    h.helicsCoreFree(core)
    h.helicsCloseLibrary()
    return exit_code(codes)


if __name__ == "__main__":
    sys.exit(main())
