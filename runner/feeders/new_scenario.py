"""Write a complete, commented scenario for a utility's feeder(s).

:func:`write_new_scenario` inspects each feeder (``runner.feeder_inspect``),
loads the transmission case, attaches every feeder at a T-D bus of the case
(given, or the case's load buses from the largest down, one per feeder), and
writes a scenario TOML that ``dsosim run`` accepts without edits:

* ``scale``: the feeder stands for enough similar feeders that its peak is
  about 30 % of the case's load at its T-D bus (at least 1), and all LDAs
  together take at most half of the case's spare generation capacity;
* two aggregators per LDA, over the feeder's load buses (seeded shuffle,
  split between them; on feeders with more than ``2 * max_der_buses`` load
  buses, a seeded sample of ``max_der_buses`` buses each, because every DER
  bus is a column of the DSO's linearisation and LP): one solar-led
  (``<lda>_solar``), one storage- and flexibility-led (``<lda>_storage``);
* the feeder's own PV systems and storage, if any, handed to the solar
  aggregator (``existing_ders_to``);
* the voltage basis the inspection chose (line-to-line on delta feeders);
* ANSI range A and the normal ratings as limits, widened where the feeder as
  compiled already breaks them (:func:`limits_for`);
* 5-minute intervals over 24 hours.

Every field gets a comment; field descriptions come from the scenario schema
itself, so the comments follow it.
"""

from __future__ import annotations

import json
import math
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from dsosim.federates.iso.case import CaseError, TransmissionCase, load_case
from dsosim.runner.build import scenario as schema
from dsosim.runner.feeders.inspect import FeederReport, feeder_label, inspect_feeder

PEAK_SHARE_OF_BUS_LOAD = 0.3
SPARE_CAPACITY_SHARE = 0.5
MAX_DER_BUSES = 25
VMIN, VMAX = 0.95, 1.05

# (suffix, fields) of the two aggregators every LDA gets.
AGGREGATORS: tuple[tuple[str, dict[str, float]], ...] = (
    ("solar", {"pv_share": 0.5, "battery_share": 0.1, "battery_hours": 2.0, "flex_share": 0.05}),
    (
        "storage",
        {
            "pv_share": 0.1,
            "battery_share": 0.3,
            "battery_hours": 4.0,
            "flex_share": 0.15,
            "flex_value": 45.0,
        },
    ),
)


class NewScenarioError(ValueError):
    """An argument of ``new-scenario`` that cannot work (names the option)."""


@dataclass(frozen=True)
class Attached:
    """One feeder as the scenario attaches it."""

    report: FeederReport
    lda: str
    td_bus: int
    scale: int
    aggregators: tuple[tuple[str, tuple[str, ...]], ...]
    """(name, buses) per aggregator."""
    existing_ders_to: str | None


@dataclass(frozen=True)
class NewScenario:
    path: Path
    name: str
    case: str
    attached: tuple[Attached, ...]


def write_new_scenario(
    feeders: Sequence[str | Path],
    out: str | Path,
    *,
    case: str = "case9",
    td_buses: Sequence[int] = (),
    name: str | None = None,
    seed: int = 1,
    hours: float = 24.0,
    interval_minutes: float = 5.0,
    max_der_buses: int = MAX_DER_BUSES,
    force: bool = False,
) -> NewScenario:
    """Inspect the feeders and write the scenario to ``out`` (a ``.toml``).

    Raises ``NewScenarioError`` (bad option), ``FeederError`` (the feeder's
    own problems, with OpenDSS's message) or ``CaseError`` (the case)."""
    out = Path(out)
    if out.suffix != ".toml":
        raise NewScenarioError(f"--out {out}: the scenario file must end in .toml")
    if out.exists() and not force:
        raise NewScenarioError(f"--out {out}: file exists (pass --force to overwrite it)")
    if not feeders:
        raise NewScenarioError("--feeder: give at least one OpenDSS master file")
    if td_buses and len(td_buses) != len(feeders):
        raise NewScenarioError(
            f"--td-bus: given {len(td_buses)} time(s) for {len(feeders)} feeder(s); give one per "
            "--feeder, in the same order, or none to choose them from the case"
        )
    if max_der_buses < 1:
        raise NewScenarioError(f"--max-der-buses must be >= 1, got {max_der_buses}")
    for f in feeders:
        if not Path(f).is_file():
            raise NewScenarioError(f"--feeder {f}: file not found")
    base = Path(os.path.abspath(out)).parent
    case_arg, case_path = _case_argument(case, base)
    try:
        tcase = load_case(case_path or case_arg)
    except (CaseError, OSError) as exc:
        raise NewScenarioError(f"--case {case}: {exc}") from None
    buses = _td_buses(tcase, td_buses, len(feeders), case)
    reports = [inspect_feeder(f) for f in feeders]
    scales = _scales(tcase, buses, [r.load_mw for r in reports])
    used: set[str] = set()
    attached = []
    for report, bus, scale in zip(reports, buses, scales, strict=True):
        lda = _unique(f"lda_{_ident(feeder_label(report.master))}", used)
        aggs = _place(report, lda, seed, max_der_buses)
        own = [d for d in report.existing_ders if d.enabled and d.kind in ("pv", "storage")]
        attached.append(Attached(report, lda, bus, scale, aggs, aggs[0][0] if own else None))
    scenario_name = name or _scenario_name([r.master for r in reports])
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", scenario_name):
        raise NewScenarioError(f"--name {scenario_name!r}: use letters, digits, '_', '.', '-'")
    text = render(scenario_name, seed, hours, interval_minutes, case_arg, tcase, attached, base)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    schema.load_scenario(out)  # what we wrote must be a valid scenario
    return NewScenario(out, scenario_name, case_arg, tuple(attached))


# ---------------------------------------------------------------- choices


def limits_for(report: FeederReport) -> tuple[float, float, float]:
    """``vmin_pu``, ``vmax_pu``, ``max_loading``: ANSI range A and the normal
    ratings, widened (to the next 0.01, with the market's operating margin and
    0.005 to spare) where the feeder as compiled, at its peak without DERs,
    is already outside them. A limit the base case breaks where no DER can
    help would make the DSO's market price it at its violation penalty."""
    bc = report.base_case
    margin = (
        float(schema.LimitsConfig.model_fields["operating_margin_pu"].default)
        if "operating_margin_pu" in schema.LimitsConfig.model_fields
        else 0.0
    )
    vmin, vmax, loading = VMIN, VMAX, 1.0
    if bc.vmin_pu < VMIN + margin:
        vmin = max(0.8, math.floor((bc.vmin_pu - margin - 0.005) * 100.0) / 100.0)
    if bc.vmax_pu > VMAX - margin:
        vmax = min(1.2, math.ceil((bc.vmax_pu + margin + 0.005) * 100.0) / 100.0)
    if bc.max_loading > 1.0:
        loading = min(2.0, math.ceil((bc.max_loading + 0.005) * 100.0) / 100.0)
    return vmin, vmax, loading


def _case_argument(case: str, base: Path) -> tuple[str, str | None]:
    """The case as the scenario names it, and the file to load (for .m files)."""
    if case.endswith(".m"):
        path = Path(os.path.abspath(case))
        if not path.is_file():
            raise NewScenarioError(f"--case {case}: file not found")
        return _relative(path, base), str(path)
    return case, None


def _td_buses(case: TransmissionCase, given: Sequence[int], n: int, label: str) -> list[int]:
    ids = [int(b) for b in case.bus_ids]
    if given:
        for b in given:
            if b not in ids:
                raise NewScenarioError(
                    f"--td-bus {b}: bus {b} is not in case {label!r} (its buses: "
                    f"{sorted(ids)[:12]}{' ...' if len(ids) > 12 else ''})"
                )
        return list(given)
    order = sorted(range(len(ids)), key=lambda i: (-float(case.bus_pd_mw[i]), ids[i]))
    with_load = [ids[i] for i in order if case.bus_pd_mw[i] > 0] or [ids[i] for i in order]
    return [with_load[k % len(with_load)] for k in range(n)]


def _scales(case: TransmissionCase, buses: Sequence[int], feeder_mw: Sequence[float]) -> list[int]:
    ids = [int(b) for b in case.bus_ids]
    pd = np.asarray(case.bus_pd_mw, dtype=float)
    total = float(pd.sum())
    on = np.asarray(case.gen_status) > 0
    spare = float(np.asarray(case.gen_pmax_mw, dtype=float)[on].sum()) - total
    wanted = []
    for bus, mw in zip(buses, feeder_mw, strict=True):
        at_bus = float(pd[ids.index(bus)])
        target = PEAK_SHARE_OF_BUS_LOAD * (at_bus if at_bus > 0 else 0.1 * total)
        wanted.append(target / mw if mw > 0 else 1.0)
    added = sum(s * mw for s, mw in zip(wanted, feeder_mw, strict=True))
    room = SPARE_CAPACITY_SHARE * spare
    if added > room > 0:
        wanted = [s * room / added for s in wanted]
    return [max(1, round(s)) for s in wanted]


def _place(
    report: FeederReport, lda: str, seed: int, max_der_buses: int
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    loads = list(report.load_buses)
    rng = np.random.default_rng([seed, zlib.crc32(lda.encode())])
    order = [loads[i] for i in rng.permutation(len(loads))]
    if len(order) > 2 * max_der_buses:
        order = order[: 2 * max_der_buses]
    names = [f"{lda}_{suffix}" for suffix, _ in AGGREGATORS]
    if len(order) < 2:
        return tuple((n, tuple(order)) for n in names)
    return tuple((n, tuple(sorted(order[k::2]))) for k, n in enumerate(names))


def _ident(stem: str) -> str:
    word = re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_").lower() or "feeder"
    return word if word[0].isalpha() else f"f{word}"


def _unique(name: str, used: set[str]) -> str:
    candidate, k = name, 2
    while candidate in used:
        candidate, k = f"{name}_{k}", k + 1
    used.add(candidate)
    return candidate


def _scenario_name(masters: Sequence[Path]) -> str:
    return "_".join(dict.fromkeys(_ident(feeder_label(m)) for m in masters))[:60]


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive (Windows)
        return path.as_posix()


# -------------------------------------------------------------- rendering


def _doc(model: type[BaseModel], field: str, fallback: str = "") -> str:
    info = model.model_fields.get(field)
    return info.description if info is not None and info.description else fallback


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return repr(round(v, 6))
    if isinstance(v, tuple | list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def _line(key: str, value: object, comment: str) -> str:
    if isinstance(value, list | tuple) and len(value) > 6:
        items = [_value(x) for x in value]
        rows = [", ".join(items[i : i + 8]) for i in range(0, len(items), 8)]
        body = ",\n".join(f"    {r}" for r in rows)
        return (f"# {comment}\n" if comment else "") + f"{key} = [\n{body},\n]"
    text = f"{key} = {_value(value)}"
    return f"{text:<34} # {comment}" if comment else text


def _field(model: type[BaseModel], key: str, value: object, fallback: str = "") -> str | None:
    """A ``key = value  # description`` line, or None when the schema has no such field."""
    if key not in model.model_fields:
        return None
    return _line(key, value, _doc(model, key, fallback))


def render(
    name: str,
    seed: int,
    hours: float,
    interval_minutes: float,
    case_arg: str,
    case: TransmissionCase,
    attached: Sequence[Attached],
    base: Path,
) -> str:
    out: list[str] = [
        "# Scenario written by `dsosim new-scenario`. Run it with `dsosim run <this file>`;",
        "# edit it for your study: every field is documented in docs/scenario.md and",
        "# checked when the scenario is loaded (a wrong value is reported with its field).",
        "#",
        f"# Transmission case {case.name}: {len(case.bus_ids)} buses, "
        f"{float(np.sum(case.bus_pd_mw)):,.0f} MW of load.",
    ]
    for a in attached:
        out.append("#")
        out.append(f"# Feeder {a.report.master.name} (LDA {a.lda}), as inspected:")
        out.extend(f"#   {line}" for line in a.report.summary_lines())
        out.extend(f"#   NOTE: {w}" for w in a.report.warnings)
    out += ["", _line("name", name, "scenario name (results go to runs/<file stem>/)")]
    for key, value, fallback in (
        ("seed", seed, "seeds DER placement sizes, load forecast errors and weather"),
        ("hours", hours, "simulated horizon, hours"),
        ("interval_minutes", interval_minutes, "market interval length, minutes"),
        ("model", "layered", "organisational model"),
    ):
        line = _field(schema.Scenario, key, value, fallback)
        if line:
            out.append(line)
    out += ["", "[transmission]"]
    out.append(
        _line(
            "case",
            case_arg,
            _doc(schema.Transmission, "case")
            + (" (relative to this file)" if case_arg.endswith(".m") else ""),
        )
    )
    for key, value in (("load_scale", 1.0), ("load_profile", "system")):
        line = _field(schema.Transmission, key, value)
        if line:
            out.append(line)
    ids = [int(b) for b in case.bus_ids]
    load_buses = [b for b, pd in zip(ids, case.bus_pd_mw, strict=True) if pd > 0]
    for a in attached:
        out += _lda_lines(a, case, ids, load_buses, base)
    return "\n".join(out) + "\n"


def _lda_lines(
    a: Attached, case: TransmissionCase, ids: list[int], load_buses: list[int], base: Path
) -> list[str]:
    """The ``[[ldas]]`` section of one attached feeder: where it connects, its
    limits (widened where its own base case needs it) and its aggregators."""
    out: list[str] = []
    at_bus = float(case.bus_pd_mw[ids.index(a.td_bus)])
    r = a.report
    out += ["", "[[ldas]]", _line("name", a.lda, "LDA name (also its DSO federate's name)")]
    out.append(
        _line("feeder", _relative(r.master, base), "OpenDSS master file, relative to this file")
    )
    out.append(
        _line(
            "td_bus",
            a.td_bus,
            f"bus of {case.name} it connects to ({at_bus:g} MW of load there; buses "
            f"with load: {', '.join(map(str, load_buses[:10]))}"
            f"{' ...' if len(load_buses) > 10 else ''})",
        )
    )
    out.append(
        _line(
            "scale",
            a.scale,
            f"it stands for {a.scale} such feeders: {r.load_mw:.2f} MW x {a.scale} = "
            f"{r.load_mw * a.scale:.1f} MW peak at the T-D bus",
        )
    )
    shapes = r.own_shapes
    if shapes is not None and shapes.daily and shapes.kw_share >= 0.5:
        out.append(
            _line(
                "load_profile",
                "feeder",
                f"the feeder's own load shapes ({shapes.n_loads} of {r.n_loads} loads, "
                f"{100 * shapes.kw_share:.0f} % of the kW; the day's peak is "
                f"{shapes.day_peak:.2f} of the compiled load); residential, commercial or "
                "flat for a standard shape",
            )
        )
    else:
        line = _field(
            schema.Lda,
            "load_profile",
            "residential",
            "daily shape of the feeder's loads: residential, commercial or flat",
        )
        if line:
            out.append(line)
    line = _field(
        schema.Lda,
        "load_forecast_error",
        0.02,
        "std of the relative error of the DSO's load forecast",
    )
    if line:
        out.append(line)
    out.append(_line("voltage_basis", r.voltage_basis, r.voltage_basis_reason))
    if a.existing_ders_to:
        own = [d for d in r.existing_ders if d.enabled and d.kind in ("pv", "storage")]
        line = _field(schema.Lda, "existing_ders_to", a.existing_ders_to)
        if line:
            out.append(f"{line} ({len(own)} found)")
    bc = r.base_case
    vmin, vmax, loading = limits_for(r)
    out += ["", "[ldas.limits]"]
    out.append(
        _line(
            "vmin_pu",
            vmin,
            f"ANSI range A is {VMIN}"
            + (
                f"; widened to hold the base case (lowest {bc.vmin_pu:.3f}): tighten to study "
                "violations"
                if vmin < VMIN
                else f"; the base case's lowest is {bc.vmin_pu:.3f}"
            ),
        )
    )
    out.append(
        _line(
            "vmax_pu",
            vmax,
            f"ANSI range A is {VMAX}"
            + (
                f"; widened to hold the base case (highest {bc.vmax_pu:.3f})"
                if vmax > VMAX
                else f"; the base case's highest is {bc.vmax_pu:.3f}"
            ),
        )
    )
    out.append(
        _line(
            "max_loading",
            loading,
            "fraction of each line's and transformer's normal "
            "rating"
            + (
                f"; widened to hold the base case (highest {bc.max_loading:.2f})"
                if loading > 1.0
                else f"; the base case's highest is {bc.max_loading:.2f}"
            ),
        )
    )
    n_load = len(r.load_buses)
    placed = len({b for _, buses in a.aggregators for b in buses})
    sampled = (
        ""
        if placed >= n_load
        else " (a seeded sample: every DER bus is a column of the DSO's linearisation and LP)"
    )
    for (agg, buses), (suffix, fields) in zip(a.aggregators, AGGREGATORS, strict=True):
        out += ["", "[[ldas.aggregators]]", _line("name", agg, f"{suffix}-led DER aggregator")]
        out.append(
            _line(
                "buses",
                list(buses),
                f"{len(buses)} of the feeder's {n_load} load buses{sampled}",
            )
        )
        for key, value in fields.items():
            line = _field(schema.Aggregator, key, value)
            if line:
                out.append(line)
    return out
