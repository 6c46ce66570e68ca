"""One federation over several machines: which federate runs where.

A hosts file (TOML) names the machines, the address each is reached at, and
the federates each runs (names or shell-style patterns, ``lda1*``); the
broker runs on one of them::

    [broker]
    host = "a"          # the machine that runs the broker
    port = 23500        # broker port (it also uses the next one); open both there

    [[hosts]]
    name = "a"
    address = "10.0.0.1"
    federates = ["iso", "recorder"]

    [[hosts]]
    name = "b"
    address = "10.0.0.2"
    federates = ["*"]   # every federate no earlier host took

``dsosim build SCENARIO --hosts hosts.toml --out DIR`` then writes
``DIR/<host>/federation.json`` (the same on every host) and
``DIR/<host>/runner.json`` (that host's processes) for ``helics run
--path=DIR/<host>/runner.json`` on each machine. Every federate's HELICS core
is told its host's address (``local_interface``): a zmq core otherwise
advertises 127.0.0.1 and a broker on another machine can never reach it back.
Results are written where the recorder runs. docs/deploy.md has the whole
procedure.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dsosim.federates.common.config import FederationConfig

HOST_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class HostsError(ValueError):
    """The hosts file is missing, unreadable or does not fit the federation."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerPlace(_Strict):
    host: str = Field(description="the [[hosts]] entry that runs the broker")
    port: int = Field(23500, ge=1024, le=65534, description="broker port (and the next one)")


class Host(_Strict):
    name: Annotated[str, Field(pattern=HOST_NAME)]
    address: str = Field(description="IPv4 address the other hosts reach this one at")
    federates: tuple[str, ...] = Field(min_length=1)
    python: str | None = Field(None, description="interpreter on that host (default: the build's)")

    @model_validator(mode="after")
    def _address(self) -> Host:
        try:
            ipaddress.IPv4Address(self.address)
        except ValueError:
            raise ValueError(f"address {self.address!r} is not an IPv4 address") from None
        return self


class HostsFile(_Strict):
    broker: BrokerPlace
    hosts: tuple[Host, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> HostsFile:
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise ValueError(f"host names repeat: {names}")
        if self.broker.host not in names:
            raise ValueError(f"broker.host {self.broker.host!r} is not one of the hosts {names}")
        return self

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)


def load_hosts(path: str | Path) -> HostsFile:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise HostsError(f"{p}: cannot read the hosts file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise HostsError(f"{p}: not valid TOML: {exc}") from None
    try:
        return HostsFile.model_validate(data)
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'file'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise HostsError(f"{p}: {where}") from None


def assign(hosts: HostsFile, federates: Sequence[str]) -> dict[str, str]:
    """Federate -> host: the first host (in file order) whose patterns match it.
    Every federate must land somewhere; a pattern that matches nothing is an
    error (a typo would otherwise silently move federates)."""
    placed: dict[str, str] = {}
    for host in hosts.hosts:
        for pattern in host.federates:
            matched = [f for f in federates if fnmatch.fnmatchcase(f, pattern)]
            if not matched:
                raise HostsError(
                    f"hosts[{host.name}].federates: {pattern!r} matches no federate "
                    f"(federates: {list(federates)})"
                )
            for f in matched:
                placed.setdefault(f, host.name)
    missing = [f for f in federates if f not in placed]
    if missing:
        raise HostsError(f"federates on no host: {missing} (add them, or a '*' entry)")
    return placed


def place(config: FederationConfig, hosts: HostsFile, port: int) -> FederationConfig:
    """The federation with the broker on its host and every federate's core
    advertising its own host's address."""
    placed = assign(hosts, config.federate_names())
    broker = hosts.host(hosts.broker.host).address
    helics = config.helics.model_copy(
        update={
            "broker_address": f"tcp://{broker}:{port}",
            "broker_port": port,
            "broker_interface": broker,
            "interfaces": {f: hosts.host(h).address for f, h in sorted(placed.items())},
        }
    )
    return config.model_copy(update={"helics": helics})


def write_host_files(
    config: FederationConfig, hosts: HostsFile, out: Path, python: str
) -> dict[str, Path]:
    """``out/<host>/federation.json`` and ``runner.json`` per host; host -> runner file."""
    from dsosim.runner.build.federation import FEDERATION_FILE, RUNNER_FILE, runner_spec

    placed = assign(hosts, config.federate_names())
    federation = json.dumps(config.model_dump(mode="json"), indent=2) + "\n"
    runners = {}
    for host in hosts.hosts:
        folder = out / host.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / FEDERATION_FILE).write_text(federation)
        mine = [f for f, h in placed.items() if h == host.name]
        spec = runner_spec(
            config,
            host.python or python,
            only=mine,
            with_broker=host.name == hosts.broker.host,
        )
        spec["name"] = f"{config.name}-{host.name}"
        runner = folder / RUNNER_FILE
        runner.write_text(json.dumps(spec, indent=2) + "\n")
        runners[host.name] = runner
    return runners
