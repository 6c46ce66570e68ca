"""The factorised linearisation as it was before its speed-up (main of 30 Nov
2026, 13:50 UTC), kept as the reference ``dsosim bench linearise`` times
the present one against in the same run, and checks it equal to.

The same mathematics in the same order (so the same numbers, to the bit):
the Jacobian's COO entries built every time and factorised by
:func:`.linearise.factor_dv_real` (the pattern and ordering looked up by
comparing index arrays; here in a list per feeder, as a process with at most
four feeders had it: with more, the shared list of four evicted them and
every factorisation ordered the unknowns again, which is slower still), the
central differences of the load models in four calls, every load-model
current by the general expressions (``linearise._branch_currents_any``, the
whole of ``branch_currents`` then), the right-hand side summed with
``np.add.at``, and the reactive derivatives of the volt-var closed loop
computing their unit currents, the conductor currents and the sources'
terms again. :func:`installed` puts it in place of the present one
on one feeder, for the duration of a ``with`` block.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsosim.federates.dso import linearise
from dsosim.federates.dso.feeder import Feeder, _JacobianModel, _NotLinearisable

_Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class _Factorisation:
    solver: linearise.DvSolver
    volts: np.ndarray
    vb: np.ndarray
    n_branches: int
    model: _JacobianModel
    column: np.ndarray


class _OldFactored(linearise.Factored):
    """The right-hand side summed with ``np.add.at``."""

    def solve(self, rhs: tuple[np.ndarray, np.ndarray, np.ndarray], k: int) -> np.ndarray:
        b_rows, b_cols, b_vals = rhs
        b = np.zeros((self._size, k), order="F")
        if self._position is None:
            np.add.at(b, (b_rows, b_cols), b_vals)
            return self._lu.solve(b)
        np.add.at(b, (self._position[b_rows], b_cols), b_vals)
        return self._lu.solve(b)[self._position]


def _factor_dv_real(
    y_real: tuple[np.ndarray, np.ndarray, np.ndarray],
    n: int,
    a: np.ndarray,
    b: np.ndarray,
    blocks: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    patterns: list[Any],
) -> linearise.DvSolver:
    r1, c1, v1 = y_real
    r2, c2, v2 = linearise._incidence_entries(a, b, blocks)
    lu = linearise._factor(
        np.concatenate([r1, r2]),
        np.concatenate([c1, c2]),
        np.concatenate([v1, v2]),
        2 * n,
        patterns,
    )
    old = _OldFactored(lu._lu, lu._position, lu._size)
    return linearise.DvSolver(old, a, b)


def _load_jacobian(
    v: np.ndarray, br: linearise.PhaseBranches, p_w: np.ndarray, q_var: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mag = np.abs(v)
    ratio = mag / br.v0
    closed = (
        (br.model == 1)
        & (mag > 0.0)
        & (ratio > br.vmin * (1.0 + 1e-6))
        & (ratio < br.vmax * (1.0 - 1e-6))
        & (ratio > br.vlow * (1.0 + 1e-6))
    )
    s0 = (p_w[br.load] + 1j * q_var[br.load]) * br.share
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(closed, -np.conj(s0) / np.conj(np.where(closed, v, 1.0)) ** 2, 0.0)
    rr, ri = w.real.copy(), w.imag.copy()
    ir, ii = w.imag.copy(), -w.real
    rest = np.flatnonzero(~closed)
    if len(rest):
        got = linearise.current_jacobian(
            linearise._branch_currents_any, v[rest], br.take(rest), p_w, q_var
        )
        for block, part in zip((rr, ri, ir, ii), got, strict=True):
            block[rest] = part
    return rr, ri, ir, ii


def _der_branches(
    feeder: Feeder, model: _JacobianModel, groups: list[list[int]]
) -> tuple[np.ndarray, np.ndarray, linearise.PhaseBranches]:
    key = tuple(feeder._der_idx[m[0]] for m in groups)
    cached = feeder.__dict__.get("_reference_rows")
    if cached is None or cached[0] is not model or cached[1] != key:
        br = model.branches
        per_group = [np.flatnonzero(br.load == feeder._der_idx[m[0]] - 1) for m in groups]
        rows = np.concatenate(per_group) if per_group else np.zeros(0, dtype=np.intp)
        group_of = np.repeat(np.arange(len(groups)), [len(r) for r in per_group])
        cached = (model, key, rows, group_of, br.take(rows))
        feeder.__dict__["_reference_rows"] = cached
    return cached[2], cached[3], cached[4]


def _loading_derivative(
    feeder: Feeder, volts: np.ndarray, dvx: np.ndarray, delta_mw: float
) -> tuple[np.ndarray, np.ndarray]:
    n_br = len(feeder._branch_names)
    currents = feeder._fresh_currents()
    if not n_br or currents is None:
        return np.zeros((n_br, dvx.shape[1])), np.zeros((n_br, dvx.shape[1]))
    inv = 1.0 / feeder._branch_ratings
    current = currents.product(volts) * inv
    dcur = currents.product_real(dvx)
    step = (delta_mw * inv)[:, None]
    rows = len(inv)
    re, im = dcur[:rows], dcur[rows:]
    re *= step
    im *= step
    twice = 2.0 * current
    cross = re * twice.real[:, None]
    cross += im * twice.imag[:, None]
    re *= re
    im *= im
    re += im
    del im
    base = current.real**2 + current.imag**2
    re += base[:, None]
    up = re + cross
    re -= cross
    groups = feeder._branch_groups()
    l0 = np.sqrt(groups.maximum(base))[:, None]
    l_up = np.sqrt(groups.maximum(up))
    l_dn = np.sqrt(np.maximum(groups.maximum(re), 0.0))
    return (l_up - l0) / delta_mw, (l0 - l_dn) / delta_mw


def _source_derivative(
    feeder: Feeder, volts: np.ndarray, dvx: np.ndarray, model: _JacobianModel
) -> np.ndarray:
    return feeder._source_derivative(volts, dvx, model.source_terms_real(feeder))


def _factorised_columns(self: Feeder, delta_mw: float) -> _Columns | None:
    try:
        model = self._jacobian_model()
    except _NotLinearisable as exc:
        self._factorised_why = str(exc)
        return None
    volts = self._complex_volts()
    br = model.branches
    vb = volts[br.a] - np.where(br.b >= 0, volts[np.maximum(br.b, 0)], 0.0)
    p_w, q_var = self._load_powers_w()
    blocks = _load_jacobian(vb, br, p_w, q_var)
    extra_a, extra_s = self._other_pc_elements(volts)
    ea = np.concatenate([br.a, extra_a])
    eb = np.concatenate([br.b, np.full(len(extra_a), linearise.GROUND)])
    if len(extra_a):
        ve = volts[extra_a]
        eblocks = linearise.current_jacobian(linearise.constant_power_current, ve, extra_s)
        blocks = tuple(  # type: ignore[assignment]
            np.concatenate([x, y]) for x, y in zip(blocks, eblocks, strict=True)
        )
    groups = list(self._ders_by_bus().values())
    rhs = np.zeros((len(ea), len(groups)), dtype=complex)
    rows, group_of, der_branches = _der_branches(self, model, groups)
    unit = linearise._branch_currents_any(
        vb[rows], der_branches, np.ones(len(p_w)), np.zeros(len(q_var))
    )
    rhs[rows, group_of] = unit * 1.0e6
    patterns = self.__dict__.setdefault("_reference_patterns", [])
    try:
        solver = _factor_dv_real(model.real_entries(self), model.n_nodes, ea, eb, blocks, patterns)
        dvx = solver.solve(rhs)
    except RuntimeError as exc:
        self._factorised_why = f"the network matrix is singular ({exc})"
        return None
    dv_read = self._reading_derivative(volts, dvx)
    dl_up, dl_down = _loading_derivative(self, volts, dvx, delta_mw)
    dp = _source_derivative(self, volts, dvx, model)
    column = np.empty(len(self._der_names), dtype=np.intp)
    for g, members in enumerate(groups):
        column[members] = g
    self.__dict__["_reference_factorisation"] = _Factorisation(
        solver, volts, vb, len(ea), model, column
    )
    self._factorisation = None
    if np.array_equal(column, np.arange(len(groups))):
        dv, up, down, dps = dv_read, dl_up, dl_down, dp
    else:
        dv, up, down, dps = dv_read[:, column], dl_up[:, column], dl_down[:, column], dp[column]
    return self._magnitudes(volts), dv, up, down, dps


def _reactive_sensitivities(
    self: Feeder, ders: np.ndarray, delta_mvar: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    f = self.__dict__.get("_reference_factorisation")
    if f is None or not len(ders):
        return None
    groups = list(self._ders_by_bus().values())
    rows, group_of, der_branches = _der_branches(self, f.model, groups)
    n_loads = f.model.n_loads
    unit = linearise._branch_currents_any(
        f.vb[rows], der_branches, np.zeros(n_loads), np.ones(n_loads)
    )
    wanted = f.column[np.asarray(ders, dtype=np.intp)]
    pick = np.isin(group_of, wanted)
    where = {int(g): c for c, g in enumerate(wanted.tolist())}
    rhs = np.zeros((f.n_branches, len(wanted)), dtype=complex)
    rhs[rows[pick], [where[int(g)] for g in group_of[pick]]] = unit[pick] * 1.0e6
    dvx = f.solver.solve(rhs)
    dl_up, dl_down = _loading_derivative(self, f.volts, dvx, delta_mvar)
    return (
        self._reading_derivative(f.volts, dvx),
        (dl_up + dl_down) / 2.0,
        _source_derivative(self, f.volts, dvx, f.model),
    )


@contextmanager
def installed(feeder: Feeder) -> Iterator[None]:
    """The reference linearisation in place of the present one on ``feeder``
    (its own methods back after the block)."""
    feeder.__dict__["_factorised_columns"] = types.MethodType(_factorised_columns, feeder)
    feeder.__dict__["reactive_sensitivities"] = types.MethodType(_reactive_sensitivities, feeder)
    try:
        yield
    finally:
        for name in ("_factorised_columns", "reactive_sensitivities", "_reference_factorisation"):
            feeder.__dict__.pop(name, None)
