"""Scenario -> federation: the federation config and the HELICS runner file.

``build`` resolves a scenario into ``federation.json`` (every federate's
section: paths, placed DER fleets, the broker address) and ``runner.json``
(what ``helics run --path=runner.json`` launches: an in-process broker and one
process per federate). Nothing about hosts is assumed below this module: the
broker address, port and key are data, so a later split into one runner file
per host only has to change how federates are grouped into files.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dsosim.federates.aggregator.spec_json import fleet_from_json
from dsosim.federates.aggregator.specs import BatterySpec
from dsosim.federates.common.config import (
    AggregatorConfig,
    DayAheadConfig,
    DsoConfig,
    FederationConfig,
    HelicsSettings,
    HilConfig,
    HilDeviceConfig,
    IsoConfig,
    IsoInterface,
    LedgerBoundConfig,
    LimitsConfig,
    OrgModel,
    RecorderConfig,
    TimeSettings,
    TransmissionEvent,
    independent_name,
    write_broker_key,
)
from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR
from dsosim.federates.common.profiles import wholesale_load
from dsosim.federates.common.schedule import DAY_AHEAD_ORIGIN_SUBSTEPS
from dsosim.federates.common.tables import TABLES_BY_ROLE
from dsosim.federates.dso.controls import control_margin_pu
from dsosim.federates.dso.feeder import Feeder, FeederError
from dsosim.federates.hil.gateway import is_local_endpoint
from dsosim.federates.iso.case import CaseError, load_case
from dsosim.federates.iso.events import EventError, check_events
from dsosim.runner.build import existing_ders, packing
from dsosim.runner.build.hosts import HostsFile, assign, load_hosts, place, write_host_files
from dsosim.runner.build.models import load_model
from dsosim.runner.build.placement import bus_peak_loads, place_fleet
from dsosim.runner.build.scenario import Scenario, ScenarioError, load_scenario

ISO_NAME = "iso"
RECORDER_NAME = "recorder"
BROKER_NAME = "dsosim-broker"
RUNNER_FILE = "runner.json"
FEDERATION_FILE = "federation.json"
KEY_FILE = "broker.key"


@dataclass(frozen=True)
class BuildResult:
    runner: Path
    federation: Path
    results_dir: Path
    config: FederationConfig


PORT_RANGE = (20000, 32000)
"""Broker ports are drawn below Linux's ephemeral range (32768-60999), where
the federates' own zmq sockets get their ports: a port found free here is not
taken by a federate of another run a moment later."""


def free_port(host: str = "127.0.0.1") -> int:
    """A random port P such that P and P+1 are free now (the zmq core uses both)."""
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(*PORT_RANGE)
        try:
            with socket.socket() as s1, socket.socket() as s2:
                s1.bind((host, port))
                s2.bind((host, port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free pair of ports found in {PORT_RANGE}")


def build(
    scenario_path: str | Path,
    out_dir: str | Path,
    *,
    hours: float | None = None,
    start_hour: float | None = None,
    port: int | None = None,
    portable: bool = False,
    model: str | None = None,
    hil_bind: str | None = None,
    first_ldas: int | None = None,
    hosts: str | Path | None = None,
    seed: int | None = None,
    processes: int | None = None,
) -> BuildResult:
    """Write ``federation.json`` and ``runner.json`` for a scenario into ``out_dir``.

    ``portable`` writes paths relative to ``out_dir`` and ``python`` as the
    interpreter (for runner files checked into the repository, launched from
    an activated environment); otherwise absolute paths and this interpreter.
    ``start_hour`` moves the start to that hour of the scenario's start date
    (for short comparisons of, say, the evening peak: the profiles, weather and
    devices follow the clock). ``first_ldas`` keeps only the scenario's first
    N LDAs (``dsosim bench scale``).
    ``hosts`` (a hosts file, ``runner.build.hosts``) spreads the federation over
    several machines: one folder per host under ``out_dir``; the result's
    ``runner`` is then the broker host's. ``processes`` packs the federates
    into that many processes (``runner.build.packing``; single host only);
    None takes the scenario's ``processes``, 0 gives every federate its own.
    """
    plan = load_hosts(hosts) if hosts is not None else None
    scenario, base = load_scenario(scenario_path)
    scenario = _overridden(
        scenario,
        scenario_path,
        hours=hours,
        start_hour=start_hour,
        model=model,
        first_ldas=first_ldas,
        seed=seed,
        hil_bind=hil_bind,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    out_abs = Path(os.path.abspath(out))
    # with hosts, federation.json lives one folder down (out/<host>/)
    relative_to = out_abs / "host" if plan is not None else out_abs

    def path_for(p: Path) -> str:
        return os.path.relpath(p, relative_to) if portable else str(p)

    processes = _processes(processes, plan, scenario.processes)
    if port is None:
        port = plan.broker.port if plan is not None else free_port()
    config = federation_config(scenario, base, port=port, path_for=path_for, out_dir=out_abs)
    python = "python" if portable else sys.executable
    if plan is not None:
        config = place(config, plan, port)
        runners = write_host_files(config, plan, out, python)
        write_keys([r.parent for r in runners.values()], portable=portable)
        home = out / plan.host(_recorder_host(config, plan)).name
        return BuildResult(
            runners[plan.broker.host],
            home / FEDERATION_FILE,
            home / config.recorder.results_dir,
            config,
        )
    federation = out / FEDERATION_FILE
    federation.write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
    write_keys([out], portable=portable)
    runner = out / RUNNER_FILE
    spec = runner_spec(config, python, processes=processes)
    runner.write_text(json.dumps(spec, indent=2) + "\n")
    return BuildResult(runner, federation, out / config.recorder.results_dir, config)


def _processes(asked: int | None, plan: HostsFile | None, scenario: int | None) -> int | None:
    """How many processes the federates are packed into (None: one each)."""
    if asked is None:
        return scenario if plan is None else None
    if asked < 0:
        raise ScenarioError(f"--processes {asked}: give at least 1 (0: one per federate)")
    if plan is not None and asked > 0:
        raise ScenarioError(
            "--processes packs federates on one host; with --hosts each has its own process"
        )
    return asked or None


def recorder_config(
    dsos: list[DsoConfig],
    model: OrgModel,
    aggregators: Sequence[str],
    hil: str | None = None,
) -> RecorderConfig:
    """The recorder, with who may write what: each federate only the tables of
    its kind (``common.tables.TABLES_BY_ROLE``), and the money only from those
    who run the markets: settlement rows from the ISO (its market) and each
    LDA's utility and independent operator (that LDA's markets), so no market
    participant can book itself a payment."""
    independent = "independent" in (model.dmo, model.derm)
    markets: dict[str, tuple[str, ...]] = {ISO_NAME: ("iso",)}
    imos = [independent_name(d.name) for d in dsos] if independent else []
    for d in dsos:
        markets[d.name] = (f"*:{d.name}",)
        if independent:
            markets[independent_name(d.name)] = (f"*:{d.name}",)
    kinds: list[tuple[str, Sequence[str]]] = [
        ("iso", [ISO_NAME]),
        ("dso", [d.name for d in dsos]),
        ("dmo", [d.name for d in dsos] + imos),
        ("aggregator", aggregators),
        ("hil", [hil] if hil else []),
        ("forecaster", [ISO_NAME, *(d.name for d in dsos), *aggregators]),
    ]
    everyone = [ISO_NAME, *(d.name for d in dsos), *imos, *aggregators, *([hil] if hil else [])]
    writers: dict[str, list[str]] = {t: list(everyone) for t in TABLES_BY_ROLE["any"]}
    for kind, names in kinds:
        for table in TABLES_BY_ROLE[kind]:
            writers.setdefault(table, [])
            writers[table] += [n for n in names if n not in writers[table]]
    return RecorderConfig(
        name=RECORDER_NAME,
        results_dir="results",
        writers={t: tuple(w) for t, w in sorted(writers.items())},
        markets=markets,
    )


def write_keys(folders: Sequence[Path], *, portable: bool) -> None:
    """One fresh secret broker key per build, in ``broker.key`` (mode 0600)
    beside each ``federation.json`` (with hosts: copy each host folder with its
    key). Portable (checked-in) runners get none: the first process of their
    first launch creates it (``config.broker_key``), so no key is published."""
    if portable:
        return
    key = None
    for folder in folders:
        key = write_broker_key(folder / KEY_FILE, key=key)


def _recorder_host(config: FederationConfig, plan: HostsFile) -> str:
    return assign(plan, config.federate_names())[config.recorder.name]


def federation_config(
    scenario: Scenario, base: Path, *, port: int, path_for: Any, out_dir: Path | None = None
) -> FederationConfig:
    """Resolve a validated scenario into the federation every federate reads.
    ``out_dir`` receives the feeder files written for LDAs that hand the
    feeder's own DERs to an aggregator (``runner.existing_ders``)."""
    interval_s = scenario.interval_s
    dsos, aggregators = [], []
    for lda in scenario.ldas:
        feeder = Path(os.path.abspath(base / lda.feeder))
        if not feeder.is_file():
            what = (
                "is a folder, not an OpenDSS file"
                if feeder.is_dir()
                else "is not a regular file"
                if feeder.exists()
                else "feeder file not found"
            )
            raise ScenarioError(f"ldas[{lda.name}].feeder: {what}: {feeder}")
        try:
            loads = bus_peak_loads(feeder)
        except FeederError as exc:
            raise ScenarioError(f"ldas[{lda.name}].feeder: {exc}") from None
        dso_feeder, handed = feeder, None
        if lda.existing_ders_to is not None:
            own = Feeder(feeder, name=lda.name).existing_ders
            handed = existing_ders.fleet_devices(own)
            dso_feeder = existing_ders.write_handover_master(
                path_for(feeder),
                own,
                (out_dir or base) / f"feeder_{lda.name}.dss",
                lda=lda.name,
                aggregator=lda.existing_ders_to,
            )
        for agg in lda.aggregators:
            placed = place_fleet(
                feeder,
                agg,
                seed=scenario.seed,
                lda=lda.name,
                loads=loads,
                load_forecast=_published_load(scenario.transmission.load_profile),
            )
            if handed is not None and agg.name == lda.existing_ders_to:
                placed = existing_ders.merge_into_fleet(placed, handed)
            aggregators.append(
                AggregatorConfig(
                    name=agg.name,
                    dso=lda.name,
                    buses=tuple(placed["buses"]),
                    fleet=placed["spec"],
                    response_error=agg.response_error,
                    utility_owned=agg.utility_owned,
                )
            )
        dsos.append(
            DsoConfig(
                name=lda.name,
                iso=ISO_NAME,
                feeder=path_for(dso_feeder),
                td_bus=lda.td_bus,
                scale=lda.scale,
                load_profile=lda.load_profile,
                load_scale=lda.load_scale,
                load_forecast_error=lda.load_forecast_error,
                reuse_linearisation_kw=lda.reuse_linearisation_kw,
                voltage_basis=lda.voltage_basis,
                limits=_limits(lda, Path(dso_feeder)),
                aggregators=tuple(a.name for a in lda.aggregators),
            )
        )
    case = scenario.transmission.case
    case_path = Path(os.path.abspath(base / case)) if case.endswith(".m") else None
    ledger_bound = _check_td_buses(
        case if case_path is None else str(case_path), dsos, scenario.transmission.load_scale
    )
    _check_events(case if case_path is None else str(case_path), scenario.transmission.events)
    if case_path is not None:
        case = path_for(case_path)
    iso = IsoConfig(
        name=ISO_NAME,
        case=case,
        load_scale=scenario.transmission.load_scale,
        line_limit_mw=scenario.transmission.line_limit_mw,
        load_profile=scenario.transmission.load_profile,
        interfaces=tuple(IsoInterface(dso=d.name, td_bus=d.td_bus) for d in dsos),
        events=scenario.transmission.events,
        day_ahead=_day_ahead(scenario),
    )
    rt = scenario.real_time
    try:
        time = TimeSettings(
            interval_s=interval_s,
            n_intervals=scenario.n_intervals,
            step_s=scenario.step_s,
            substep_s=scenario.substep_s,
            settle_s=rt.settle_s if rt.enabled else None,
            start=scenario.start,
            origin_s=(
                DAY_AHEAD_ORIGIN_SUBSTEPS * scenario.substep_s
                if scenario.day_ahead.enabled
                else 0.0
            ),
        )
    except ValidationError as exc:
        reason = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ScenarioError(f"real_time: {reason}") from None
    wall_s = time.step * time.n_intervals + (scenario.hil.wait_s if scenario.hil else 0.0)
    helics = HelicsSettings(
        broker_address=f"tcp://127.0.0.1:{port}",
        broker_port=port,
        stall_timeout_s=stall_timeout(scenario),
        real_time=rt.enabled,
        rt_lead_s=rt.rt_lead_s,
        rt_lag_s=rt.rt_lag_s,
        # a real-time run lasts its wall time: the hang guard must not cut it short
        max_cosim_duration_s=max(3600, int(wall_s * 1.5) + 600) if rt.enabled else 3600,
    )
    hil = hil_config(scenario, base, aggregators, path_for) if scenario.hil else None
    return FederationConfig(
        name=scenario.name,
        seed=scenario.seed,
        model=load_model(scenario.model),
        helics=helics,
        time=time,
        iso=iso,
        dsos=tuple(dsos),
        aggregators=tuple(aggregators),
        recorder=recorder_config(
            dsos,
            load_model(scenario.model),
            [a.name for a in aggregators],
            hil.name if hil else None,
        ),
        hil=hil,
        ledger_bound=ledger_bound,
    )


def _day_ahead(scenario: Scenario) -> DayAheadConfig | None:
    da = scenario.day_ahead
    if not da.enabled:
        return None
    return DayAheadConfig(**da.model_dump(exclude={"enabled"}))


STALL_TIMEOUT_S = 120.0
"""Default: no federate granted time for two minutes stops the federation."""


def stall_timeout(scenario: Scenario) -> float:
    """Seconds without any grant before the broker calls the run stalled:
    ``STALL_TIMEOUT_S``, or longer where waiting is normal (a real-time
    interval's idle wall time, the HIL gateway's wait for its devices)."""
    out = STALL_TIMEOUT_S
    if scenario.real_time.enabled:
        out = max(out, 2 * scenario.step_s + 60)
    if scenario.hil is not None:
        out = max(out, scenario.hil.wait_s + 60)
    return out


def _limits(lda: Any, feeder_master: Path) -> LimitsConfig:
    """The LDA's limits with the control margin its feeder's regulators and
    switched capacitors call for (``dso.controls``), unless the scenario
    gives one."""
    margin = lda.limits.control_margin_pu
    if margin is None:
        feeder = Feeder(feeder_master, name=lda.name, voltage_basis=lda.voltage_basis)
        margin = round(control_margin_pu(feeder), 4)  # above the power flow tolerance
    try:
        return LimitsConfig(**{**lda.limits.model_dump(), "control_margin_pu": margin})
    except ValidationError as exc:
        reason = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ScenarioError(f"ldas[{lda.name}].limits: {reason}") from None


def hil_config(
    scenario: Scenario, base: Path, aggregators: list[AggregatorConfig], path_for: Any
) -> HilConfig:
    """The gateway's section: each hardware DER resolved in its fleet (its
    simulated rating, capacity and initial state), key files checked."""
    hil = scenario.hil
    assert hil is not None
    fleets = {a.name: fleet_from_json(a.fleet) for a in aggregators}
    devices = []
    for i, d in enumerate(hil.devices):
        where = f"hil.devices[{i}] ({d.id})"
        spec = fleets[d.aggregator]
        pool = spec.batteries if d.kind == "battery" else spec.pvs
        here = [s for s in pool if s.bus == d.bus]
        if d.nth >= len(here):
            buses = sorted({s.bus for s in pool})
            raise ScenarioError(
                f"{where}: aggregator {d.aggregator!r} has {len(here)} {d.kind} "
                f"DER(s) at bus {d.bus!r}, so no number {d.nth} (buses with "
                f"{d.kind}: {buses})"
            )
        der = here[d.nth]
        storage: dict[str, float] = {}
        if isinstance(der, BatterySpec):
            rated, capacity = der.power_mw * 1e3, der.energy_mwh * 1e3
            storage = {
                "soc_init": der.soc_init,
                "soc_min": der.soc_min,
                "soc_max": der.soc_max,
                "efficiency": der.efficiency,
            }
        else:
            rated, capacity = der.rating_mw * 1e3, None
        devices.append(
            HilDeviceConfig(
                id=d.id,
                aggregator=d.aggregator,
                kind=d.kind,
                bus=d.bus,
                nth=d.nth,
                rated_kw=d.rated_kw,
                sim_rated_kw=rated,
                sim_capacity_kwh=capacity,
                **storage,
            )
        )
    keys = {}
    for field in ("curve_secret_key", "curve_authorized_dir"):
        value = getattr(hil, field)
        if value is None:
            continue
        p = Path(os.path.abspath(base / value))
        if not p.exists():
            raise ScenarioError(f"hil.{field}: not found: {p}")
        keys[field] = path_for(p)
    if not is_local_endpoint(hil.bind) and not keys and not hil.allow_unauthenticated:
        raise ScenarioError(
            f"hil.bind: {hil.bind} is reachable from other machines; set "
            f"curve_secret_key and curve_authorized_dir (dsosim hil-keys writes "
            f"them) or, on an isolated lab network, allow_unauthenticated = true"
        )
    return HilConfig(
        bind=hil.bind,
        timeout_ms=hil.timeout_ms,
        heartbeat_s=hil.heartbeat_s,
        fallback=hil.fallback,
        implausible=hil.implausible,
        power_tolerance=hil.power_tolerance,
        soc_tolerance=hil.soc_tolerance,
        spin_ms=hil.spin_ms,
        realtime_priority=hil.realtime_priority,
        wait_s=hil.wait_s,
        allow_unauthenticated=hil.allow_unauthenticated,
        devices=tuple(devices),
        **keys,
    )


def _check_events(case_name: str, events: tuple[TransmissionEvent, ...]) -> None:
    """Fail at build time on an event the case cannot have (unknown generator
    or bus): the ISO would refuse it at start-up."""
    if not events:
        return
    try:
        check_events(load_case(case_name), events)
    except EventError as exc:
        raise ScenarioError(str(exc)) from None


def _check_td_buses(case_name: str, dsos: list[DsoConfig], load_scale: float) -> LedgerBoundConfig:
    """Fail at build time, not mid-run, on a bad case or a T-D bus it lacks;
    the settlement sanity bound derived from the case (``ledger.SanityBound``)."""
    try:
        case = load_case(case_name)
    except (CaseError, OSError) as exc:
        raise ScenarioError(f"transmission.case: {exc}") from None
    buses = {int(b) for b in case.bus_ids}
    for d in dsos:
        if d.td_bus not in buses:
            raise ScenarioError(
                f"ldas[{d.name}].td_bus: bus {d.td_bus} is not in case {case_name!r} "
                f"(its buses: {sorted(buses)[:12]}{' ...' if len(buses) > 12 else ''})"
            )
    generation = float(case.gen_pmax_mw[case.gen_status > 0].clip(min=0.0).sum())
    load = float(abs(case.bus_pd_mw).sum()) * load_scale
    return LedgerBoundConfig(
        max_mw=2.0 * max(generation + load, 1.0),
        max_price=max(PRICE_CAP, abs(PRICE_FLOOR)),
    )


def runner_spec(
    config: FederationConfig,
    python: str,
    *,
    only: Sequence[str] | None = None,
    with_broker: bool = True,
    processes: int | None = None,
) -> dict[str, Any]:
    """The ``helics run`` JSON: the broker plus one process per federate
    (``only`` these federates, and the broker or not, for one of several hosts),
    or with ``processes`` the ISO, utilities, independent operators and
    aggregators packed into that many processes (``runner.build.packing``)."""
    h = config.helics
    # the broker reads port, key and limits from the federation file: the key
    # never appears on a command line (``ps`` shows those to every user)
    broker = f"{python} -u -m dsosim.federates.broker --config {FEDERATION_FILE}"
    if h.broker_interface != "127.0.0.1":
        broker += f" --interface {h.broker_interface}"
    entries = [{"name": BROKER_NAME, "directory": ".", "exec": broker}] if with_broker else []
    kinds: list[tuple[str, str]] = []
    if processes is not None:
        if only is not None:
            raise ValueError("packing federates into processes is for single-host builds")
        for i, group in enumerate(packing.groups(config, processes)):
            names = " ".join(f"--name {n}" for n in group)
            entries.append(
                {
                    "name": packing.process_name(i),
                    "directory": ".",
                    "exec": (
                        f"{python} -u -m dsosim.federates.pack --config {FEDERATION_FILE} {names}"
                    ),
                }
            )
    else:
        kinds += [("iso", config.iso.name)]
        kinds += [("dso", d.name) for d in config.dsos]
        kinds += [("imo", name) for name in config.independent_names()]
        kinds += [("aggregator", a.name) for a in config.aggregators]
    kinds += [("hil", config.hil.name)] if config.hil else []
    kinds += [("recorder", config.recorder.name)]
    for kind, name in kinds:
        if only is not None and name not in only:
            continue
        entries.append(
            {
                "name": name,
                "directory": ".",
                "exec": (
                    f"{python} -u -m dsosim.federates.{kind} "
                    f"--config {FEDERATION_FILE} --name {name}"
                ),
            }
        )
    return {"name": config.name, "federates": entries}


def _published_load(profile: str) -> tuple[float, ...] | None:
    """The ISO's published daily system load shape (hourly, per unit of the
    peak) that fleets shape their price prior with; None for a flat profile."""
    if profile == "flat":
        return None
    return tuple(round(float(x), 6) for x in wholesale_load(24, 3600.0))


def _overridden(
    scenario: Scenario,
    scenario_path: str | Path,
    *,
    hours: float | None,
    start_hour: float | None,
    model: str | None,
    first_ldas: int | None,
    seed: int | None,
    hil_bind: str | None,
) -> Scenario:
    """The scenario with the command line's overrides applied."""
    if hours is not None:
        scenario = scenario.model_copy(update={"hours": hours})
    if start_hour is not None:
        scenario = with_start_hour(scenario, start_hour, scenario_path)
    if model is not None:
        scenario = scenario.model_copy(update={"model": model})
    if first_ldas is not None:
        if not 1 <= first_ldas <= len(scenario.ldas):
            raise ScenarioError(
                f"{scenario_path}: has {len(scenario.ldas)} LDA(s), "
                f"cannot keep the first {first_ldas}"
            )
        scenario = scenario.model_copy(update={"ldas": scenario.ldas[:first_ldas]})
    if seed is not None:
        if seed < 0:
            raise ScenarioError(f"seed must be >= 0, got {seed}")
        scenario = scenario.model_copy(update={"seed": seed})
    if hil_bind is not None:
        if scenario.hil is None:
            raise ScenarioError(f"{scenario_path}: has no [hil] section to bind")
        scenario = scenario.model_copy(
            update={"hil": scenario.hil.model_copy(update={"bind": hil_bind})}
        )
    return scenario


def with_start_hour(scenario: Scenario, hour: float, where: str | Path) -> Scenario:
    """The scenario starting at ``hour`` (0 <= hour < 24) of its start date,
    checked like a ``start`` written in the file."""
    if not (isinstance(hour, (int, float)) and 0.0 <= hour < 24.0):
        raise ScenarioError(f"{where}: --start-hour must be in [0, 24), got {hour!r}")
    day = datetime.combine(scenario.start.date(), datetime.min.time())
    start = day + timedelta(seconds=round(hour * 3600.0, 6))
    try:
        return Scenario.model_validate(scenario.model_copy(update={"start": start}).model_dump())
    except ValidationError as exc:
        why = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ScenarioError(f"{where}: --start-hour {hour:g}: {why}") from None
