"""Sensitivities of a solved feeder from one sparse factorisation.

At a solved operating point ``V`` (complex node voltages, all nodes but
ground), Kirchhoff's current law reads

    Y_net V + E i(V) = I_src

``Y_net`` stacks the primitive admittances of the power-delivery elements
(lines, transformers at their present taps, capacitors in their present
state, reactors) and of the sources' Thevenin impedances; ``I_src`` is the
sources' constant Norton current; ``i(V)`` are the currents the loads draw,
one per *phase branch* (a load phase between two nodes, or a node and ground),
and ``E`` the incidence of those branches. A change ``dP`` of a DER's net
demand changes its branch currents by ``di/dP``, and the voltages by

    (Y_net + E D E^T) dV = -E di/dP

where ``D`` holds, per branch, the 2x2 real derivative of its current with
respect to its voltage. Loads follow OpenDSS's load models (constant power,
impedance, motor, CVR exponents, constant current, ZIP; outside
``vminpu``-``vmaxpu`` as OpenDSS continues them), so the system is the
Jacobian of OpenDSS's own power flow: one sparse LU of this real ``2n x 2n``
matrix serves every DER, with
regulator taps and capacitor states frozen where the operating point has
them (the response within one interval). Voltage-magnitude, branch-current
and source-power derivatives follow from ``dV`` in closed form.

Other power-conversion elements (PV systems, storage, generators) are taken
as constant power per conductor at their present output.

:class:`~dsosim.federates.dso.feeder.Feeder` checks the result against
OpenDSS finite differences the first time it linearises and falls back to
finite differences if they disagree (an element whose behaviour is not
reproduced here); tests check the agreement on feeders with every load model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

GROUND = -1


@dataclass(frozen=True)
class PhaseBranches:
    """Every load phase of the circuit as a branch from node ``a`` to node
    ``b`` (``GROUND`` = -1), in the order of the loads they belong to."""

    a: np.ndarray
    b: np.ndarray
    load: np.ndarray
    """Index of the owning load (0-based, in OpenDSS's load order)."""
    share: np.ndarray
    """Share of the load's power on this branch (1 / phases)."""
    v0: np.ndarray
    """Nominal branch voltage, V."""
    model: np.ndarray
    vmin: np.ndarray
    vmax: np.ndarray
    exp_p: np.ndarray
    exp_q: np.ndarray
    """CVR exponents (model 4)."""
    zip_p: np.ndarray
    """ZIP fractions of P (model 8), shape (branches, 3): Z, I, P."""
    zip_q: np.ndarray
    zip_cutoff: np.ndarray
    """ZIPV's low-voltage cut-off (0: none)."""
    vlow: np.ndarray
    """``vlowpu``: below it every model is its nominal admittance."""

    def take(self, rows: np.ndarray) -> PhaseBranches:
        """The branches ``rows`` (their loads keep their indices)."""
        return PhaseBranches(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def branch_currents(
    v: np.ndarray, branches: PhaseBranches, p_w: np.ndarray, q_var: np.ndarray
) -> np.ndarray:
    """Current drawn by each phase branch (complex, a -> b) at branch voltages
    ``v``, for load powers ``p_w``/``q_var`` (W, var per load, as OpenDSS
    applies them), by OpenDSS's load models (``Load.pas``: ``DoConstantPQLoad``
    and its siblings): the model between ``vminpu`` and ``vmaxpu``, a constant
    impedance above, below ``vminpu`` a current interpolated linearly in the
    voltage magnitude down to ``vlowpu``, and the nominal admittance below
    that."""
    m = branches.model
    if not np.any((m != 1) & (m != 2) & (m != 5)):
        return _branch_currents_pzi(v, branches, p_w, q_var)
    return _branch_currents_any(v, branches, p_w, q_var)


def _load_terms(
    v: np.ndarray, br: PhaseBranches, p_w: np.ndarray, q_var: np.ndarray
) -> tuple[np.ndarray, ...]:
    """What every load model's current is built of, per branch: its share of
    the load's P and Q (W, var) and their complex sum, the base voltage, the
    admittance at it, the voltage's magnitude and unit phasor (0 at a dead
    node), the low-voltage, vminpu and vmaxpu thresholds (V), the current at
    the first, and the span between the first two."""
    p0 = p_w[br.load] * br.share
    q0 = q_var[br.load] * br.share
    s0 = p0 + 1j * q0
    vb = br.v0
    y = np.conj(s0) / vb**2
    mag = np.abs(v)
    safe = np.where(mag > 0.0, mag, 1.0)
    unit = np.where(mag > 0.0, v / safe, 0.0)
    v_low, v95, v105 = br.vlow * vb, br.vmin * vb, br.vmax * vb
    i_low = y * v_low
    span = np.where(v95 > v_low, v95 - v_low, 1.0)
    return p0, q0, s0, vb, y, mag, unit, v_low, v95, v105, i_low, span


def _branch_currents_pzi(
    v: np.ndarray, br: PhaseBranches, p_w: np.ndarray, q_var: np.ndarray
) -> np.ndarray:
    """:func:`branch_currents` of constant-power, -impedance and -current
    branches (models 1, 2, 5: a feeder's usual loads and every DER) by the
    same expressions, computing only those of the models present (the same
    currents to the bit: every operation is element by element; a test
    holds the two equal in every zone)."""
    m = br.model
    _, _, s0, vb, y, mag, unit, v_low, v95, v105, i_low, span = _load_terms(v, br, p_w, q_var)
    const_i = m == 5
    slope = np.where(const_i, (y * vb - i_low) / span, (y / br.vmin**2 * v95 - i_low) / span)
    low_zone = (i_low + slope * (mag - v_low)) * unit
    high_zone = y / np.where(const_i, br.vmax, br.vmax**2) * v
    yv = y * v
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if np.all(m == 1):
            band = np.conj(s0 / np.where(mag > 0.0, v, 1.0))
        else:
            band = np.where(m == 2, yv, 0.0)
            if np.any(m == 1):
                band = np.where(m == 1, np.conj(s0 / np.where(mag > 0.0, v, 1.0)), band)
            if np.any(const_i):
                band = np.where(const_i, np.conj(s0 / (unit * vb + (mag == 0.0))), band)
    current = np.where(mag > v105, high_zone, band)
    current = np.where(mag <= v95, low_zone, current)
    current = np.where(mag <= v_low, yv, current)
    current = np.where(m == 2, yv, current)
    return np.where(mag > 0.0, current, 0.0)


def _branch_currents_any(
    v: np.ndarray, br: PhaseBranches, p_w: np.ndarray, q_var: np.ndarray
) -> np.ndarray:
    """:func:`branch_currents` of branches of any model."""
    p0, q0, s0, vb, y, mag, unit, v_low, v95, v105, i_low, span = _load_terms(v, br, p_w, q_var)
    vr = mag / vb
    m95 = (y / br.vmin**2 * v95 - i_low) / span
    m95i = (y * vb - i_low) / span
    interp = (i_low + m95 * (mag - v_low)) * unit  # between vlowpu and vminpu
    interp_i = (i_low + m95i * (mag - v_low)) * unit
    high = y / br.vmax**2 * v
    high_i = y / br.vmax * v
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pq = np.conj(s0 / np.where(mag > 0.0, v, 1.0))
        p_only = np.conj(p0 / np.where(mag > 0.0, v, 1.0))
        q_only = np.conj(1j * q0 / np.where(mag > 0.0, v, 1.0))
        const_i = np.conj(s0 / (unit * vb + (mag == 0.0)))
        wf = np.where(br.exp_p != 1.0, vr**br.exp_p, vr)
        cvr = np.conj(p0 * wf / np.where(mag > 0.0, v, 1.0)) + np.where(
            br.exp_q == 2.0, 1j * y.imag * v, q_only * vr**br.exp_q
        )
        zp, zq = br.zip_p, br.zip_q
        zip_z = (y.real * zp[:, 0] + 1j * y.imag * zq[:, 0]) * v
        zip_i = np.conj((p0 * zp[:, 1] + 1j * q0 * zq[:, 1]) / (unit * vb + (mag == 0.0)))
        zip_p = np.conj((p0 * zp[:, 2] + 1j * q0 * zq[:, 2]) / np.where(mag > 0.0, v, 1.0))
    m = br.model
    band = np.select(
        [m == 2, m == 3, m == 4, m == 5, m == 8],
        [y * v, p_only + 1j * y.imag * v, cvr, const_i, zip_z + zip_i + zip_p],
        pq,
    )
    low_zone = np.select([m == 5], [interp_i], interp)
    high_zone = np.select([m == 5], [high_i], high)
    # ZIP outside the band: its Z part as is, its P and I parts as impedances
    zip_low = (
        zip_z
        + (
            (interp / np.where(mag > 0, v, 1.0)).real * zp[:, 2]
            + 1j * (interp / np.where(mag > 0, v, 1.0)).imag * zq[:, 2]
        )
        * v
    )
    zip_low = (
        zip_low
        + (
            (interp_i / np.where(mag > 0, v, 1.0)).real * zp[:, 1]
            + 1j * (interp_i / np.where(mag > 0, v, 1.0)).imag * zq[:, 1]
        )
        * v
    )
    y105, y105i = y / br.vmax**2, y / br.vmax
    zip_high = (
        zip_z
        + (
            (y105.real * zp[:, 2] + 1j * y105.imag * zq[:, 2])
            + (y105i.real * zp[:, 1] + 1j * y105i.imag * zq[:, 1])
        )
        * v
    )
    low_zone = np.where(m == 8, zip_low, low_zone)
    high_zone = np.where(m == 8, zip_high, high_zone)
    current = np.where(mag > v105, high_zone, band)
    current = np.where(mag <= v95, low_zone, current)
    current = np.where(mag <= v_low, y * v, current)
    current = np.where(m == 2, y * v, current)
    if np.any(m == 8):
        cutoff = br.zip_cutoff
        with np.errstate(over="ignore"):
            evx = np.exp(np.clip(2.0 * 500.0 * (vr - cutoff), -700.0, 700.0))
        yv = 0.5 * (1.0 + (evx - 1.0) / (evx + 1.0))
        current = np.where((m == 8) & (cutoff > 0.0) & (mag > v_low), current * yv, current)
    return np.where(mag > 0.0, current, 0.0)


def current_jacobian(
    current_of: Callable[..., np.ndarray], v: np.ndarray, *args: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """d[Re i, Im i] / d[Re v, Im v] per branch by central differences of the
    closed-form current (smooth away from the vminpu/vmaxpu kinks; step 1e-7
    of the voltage: the error is ~1e-14 relative)."""
    h = 1e-7 * np.maximum(np.abs(v), 1e-3)
    f = current_of
    d_re = (f(v + h, *args) - f(v - h, *args)) / (2.0 * h)
    d_im = (f(v + 1j * h, *args) - f(v - 1j * h, *args)) / (2.0 * h)
    return d_re.real, d_im.real, d_re.imag, d_im.imag


def load_jacobian(
    v: np.ndarray, branches: PhaseBranches, p_w: np.ndarray, q_var: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """d[Re i, Im i] / d[Re v, Im v] of every phase branch's current
    (:func:`branch_currents`). A constant-power branch (model 1) inside its
    ``vminpu``-``vmaxpu`` band draws ``i = conj(s / v)``, so ``di = w conj(dv)``
    with ``w = -conj(s) / conj(v)^2``: in closed form (most of a feeder's
    loads, and every DER). The other branches, and those within 1e-6 of a band
    edge (where the model has a kink), by :func:`current_jacobian`."""
    br = branches
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
        got = _stacked_jacobian(v[rest], br.take(np.tile(rest, 4)), p_w, q_var)
        for block, part in zip((rr, ri, ir, ii), got, strict=True):
            block[rest] = part
    return rr, ri, ir, ii


def _stacked_jacobian(
    v: np.ndarray, stacked: PhaseBranches, p_w: np.ndarray, q_var: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`current_jacobian` of :func:`branch_currents` with its four
    evaluations in one call (``stacked``: the branches four times over):
    every operation is element by element, so each current is computed as
    in four calls (tests hold the two equal to the bit), with a quarter of
    the calls' overhead (most of the time on a feeder's few hundred
    branches)."""
    h = 1e-7 * np.maximum(np.abs(v), 1e-3)
    n = len(v)
    f = branch_currents(np.concatenate([v + h, v - h, v + 1j * h, v - 1j * h]), stacked, p_w, q_var)
    d_re = (f[:n] - f[n : 2 * n]) / (2.0 * h)
    d_im = (f[2 * n : 3 * n] - f[3 * n :]) / (2.0 * h)
    return d_re.real, d_im.real, d_re.imag, d_im.imag


def constant_power_current(v: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Current drawn at ``v`` by constant power ``s`` (VA, drawn)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.abs(v) > 0.0, np.conj(s / v), 0.0)


def _incidence_entries(
    a: np.ndarray,
    b: np.ndarray,
    blocks: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COO entries (rows, cols, values) of ``E D E^T`` in the real form, node
    ``k``'s real part at ``2k`` and imaginary part at ``2k + 1``."""
    rr, ri, ir, ii = blocks
    rows, cols, vals = [], [], []
    for p, sp in ((a, 1.0), (b, -1.0)):
        for q, sq in ((a, 1.0), (b, -1.0)):
            keep = (p >= 0) & (q >= 0)
            pk, qk = 2 * p[keep], 2 * q[keep]
            sign = sp * sq
            for block, dr, dc in ((rr, 0, 0), (ri, 0, 1), (ir, 1, 0), (ii, 1, 1)):
                rows.append(pk + dr)
                cols.append(qk + dc)
                vals.append(sign * block[keep])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def real_form(y: sparse.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COO entries of the real form of a complex ``y = G + jB`` acting on
    interleaved (real, imaginary) parts: ``[[G, -B], [B, G]]`` per entry."""
    coo = sparse.coo_matrix(y)
    r, c, g, bb = 2 * coo.row, 2 * coo.col, coo.data.real, coo.data.imag
    rows = np.concatenate([r, r, r + 1, r + 1])
    cols = np.concatenate([c, c + 1, c, c + 1])
    vals = np.concatenate([g, -bb, bb, g])
    return rows, cols, vals


@dataclass(frozen=True)
class _Csc:
    """Where COO entries land in a CSC matrix (duplicates summed)."""

    slot: np.ndarray
    """Where each COO entry lands in the CSC data (duplicates share a slot)."""
    indices: np.ndarray
    indptr: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray, cols: np.ndarray, size: int) -> _Csc:
        order = np.lexsort((rows, cols))
        r, c = rows[order], cols[order]
        first = np.ones(len(r), dtype=bool)
        first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
        slot = np.empty(len(rows), dtype=np.intp)
        slot[order] = np.cumsum(first) - 1
        return cls(slot, r[first], np.searchsorted(c[first], np.arange(size + 1)))

    def matrix(self, vals: np.ndarray, size: int) -> sparse.csc_matrix:
        data = np.bincount(self.slot, weights=vals, minlength=len(self.indices))
        return sparse.csc_matrix((data, self.indices, self.indptr), shape=(size, size))


@dataclass
class _Pattern:
    """A Jacobian's sparsity pattern: its COO indices, their CSC places, and,
    once the first factorisation has chosen it, the fill-reducing order of
    the unknowns with the CSC places of the matrix in that order."""

    rows: np.ndarray
    cols: np.ndarray
    csc: _Csc
    ordering: tuple[np.ndarray, _Csc] | None = None
    """(new position of each unknown, the CSC places in that order)."""


_PATTERNS: list[_Pattern] = []


def _pattern(rows: np.ndarray, cols: np.ndarray, size: int, patterns: list[_Pattern]) -> _Pattern:
    """A feeder's Jacobian has the same pattern every interval: its index
    arrays, where each entry lands and the order of the unknowns are kept (the
    last few patterns, in ``patterns``), and only the values are summed into place."""
    pattern = next(
        (
            p
            for p in patterns
            if len(p.rows) == len(rows)
            and len(p.csc.indptr) == size + 1
            and np.array_equal(p.rows, rows)
            and np.array_equal(p.cols, cols)
        ),
        None,
    )
    if pattern is None:
        pattern = _Pattern(rows.copy(), cols.copy(), _Csc.of(rows, cols, size))
        patterns.insert(0, pattern)
        del patterns[4:]
    return pattern


_SUPERLU = {"diag_pivot_thresh": 0.1, "options": {"SymmetricMode": True}}


class Factored:
    """One sparse LU of a system (:func:`_factor`): solves right-hand sides
    given as (row, column, value) entries (duplicates summed), ``k`` columns,
    in the unknowns' own order."""

    def __init__(self, lu: Any, position: np.ndarray | None, size: int) -> None:
        self._lu = lu
        self._position = position
        self._size = size

    def solve(self, rhs: tuple[np.ndarray, np.ndarray, np.ndarray], k: int) -> np.ndarray:
        b_rows, b_cols, b_vals = rhs
        size = self._size
        rows = b_rows if self._position is None else self._position[b_rows]
        # summed into place in the entries' order, from zero (as np.add.at does),
        # column-major
        b = np.bincount(b_cols * size + rows, weights=b_vals, minlength=size * k)
        b = b.reshape((size, k), order="F")
        if self._position is None:
            return self._lu.solve(b)
        return self._lu.solve(b)[self._position]


def _factor(
    rows: np.ndarray,
    cols: np.ndarray,
    vals: np.ndarray,
    size: int,
    patterns: list[_Pattern] | None = None,
) -> Factored:
    """Factorise the system of COO entries (duplicates summed). The first
    time a pattern is seen SuperLU orders the unknowns (minimum degree on
    A + A^T); later factorisations of the same pattern take the matrix
    already in that order (``NATURAL``) and skip the ordering. Right-hand
    sides are built in column-major order, which SuperLU solves in place (a
    row-major one it copies first: ~40 % of the solve at 10,000 buses)."""
    pattern = _pattern(rows, cols, size, _PATTERNS if patterns is None else patterns)
    return _factor_pattern(pattern, vals, size)


def _factor_pattern(pattern: _Pattern, vals: np.ndarray, size: int) -> Factored:
    """:func:`_factor` of the entries of ``pattern`` with values ``vals``."""
    if pattern.ordering is None:
        lu = splu(pattern.csc.matrix(vals, size), permc_spec="MMD_AT_PLUS_A", **_SUPERLU)
        position = np.asarray(lu.perm_c, dtype=np.intp).copy()
        pattern.ordering = (position, _Csc.of(position[pattern.rows], position[pattern.cols], size))
        return Factored(lu, None, size)
    position, csc = pattern.ordering
    lu = splu(csc.matrix(vals, size), permc_spec="NATURAL", **_SUPERLU)
    return Factored(lu, position, size)


def factor_dv_real(
    y_real: tuple[np.ndarray, np.ndarray, np.ndarray],
    n: int,
    a: np.ndarray,
    b: np.ndarray,
    blocks: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    patterns: list[_Pattern] | None = None,
) -> DvSolver:
    """The LU of ``Y_net + E D E^T`` in real form (see :func:`solve_dv_real`),
    for as many sets of right-hand sides as needed. ``patterns``: where the
    sparsity patterns seen are kept (one list per feeder; default one shared
    by the process)."""
    r1, c1, v1 = y_real
    r2, c2, v2 = _incidence_entries(a, b, blocks)
    lu = _factor(
        np.concatenate([r1, r2]),
        np.concatenate([c1, c2]),
        np.concatenate([v1, v2]),
        2 * n,
        patterns,
    )
    return DvSolver(lu, a, b)


class Assembly:
    """One feeder's ``Y_net + E D E^T`` in real form, assembled by index
    (:func:`factor_dv_real` without its bookkeeping): the entries' rows and
    columns, where each lands in the matrix and the unknowns' order are
    worked out once; a factorisation gathers the values (the same values,
    summed in the same order: the same matrix to the bit) and factorises.
    It holds while the network's and the branches' index arrays are the
    ones it was made for (:meth:`fits`)."""

    def __init__(
        self,
        y_rows: np.ndarray,
        y_cols: np.ndarray,
        n: int,
        a: np.ndarray,
        b: np.ndarray,
    ) -> None:
        self.y_rows, self.y_cols, self.n = y_rows, y_cols, n
        self.a, self.b = a.copy(), b.copy()
        m = len(a)
        gather, signs = [], []
        rows, cols = [y_rows], [y_cols]
        for p, sp in ((a, 1.0), (b, -1.0)):  # as _incidence_entries, by index
            for q, sq in ((a, 1.0), (b, -1.0)):
                keep = np.flatnonzero((p >= 0) & (q >= 0))
                pk, qk = 2 * p[keep], 2 * q[keep]
                for j, (dr, dc) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
                    rows.append(pk + dr)
                    cols.append(qk + dc)
                    gather.append(j * m + keep)
                    signs.append(np.full(len(keep), sp * sq))
        self._gather = np.concatenate(gather)
        self._signs = np.concatenate(signs)
        size = 2 * n
        r, c = np.concatenate(rows), np.concatenate(cols)
        self._pattern = _Pattern(r, c, _Csc.of(r, c, size))

    def fits(
        self, y_rows: np.ndarray, y_cols: np.ndarray, n: int, a: np.ndarray, b: np.ndarray
    ) -> bool:
        """The index arrays are those this assembly was made for."""
        same_y = (y_rows is self.y_rows and y_cols is self.y_cols) or (
            np.array_equal(y_rows, self.y_rows) and np.array_equal(y_cols, self.y_cols)
        )
        return same_y and n == self.n and np.array_equal(a, self.a) and np.array_equal(b, self.b)

    def factor(
        self, y_vals: np.ndarray, blocks: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    ) -> DvSolver:
        """The LU for the network's values ``y_vals`` and the branches' 2x2
        blocks (:func:`factor_dv_real`)."""
        incidence = np.concatenate(blocks)[self._gather]
        incidence *= self._signs  # by +-1: exact, as sign * block
        vals = np.concatenate([y_vals, incidence])
        return DvSolver(_factor_pattern(self._pattern, vals, 2 * self.n), self.a, self.b)


class DvSolver:
    """dV in real form for branch current changes, on one factorisation
    (:func:`factor_dv_real`)."""

    def __init__(self, lu: Factored, a: np.ndarray, b: np.ndarray) -> None:
        self._lu, self._a, self._b = lu, a, b

    def solve(self, rhs_currents: np.ndarray) -> np.ndarray:
        """dV, shape (2 nodes, columns), for every column of ``rhs_currents``
        (branch current changes, shape (branches, columns))."""
        k = rhs_currents.shape[1]
        live, col = np.nonzero(rhs_currents)  # a DER's few branches
        current = rhs_currents[live, col]
        parts = []
        for p, sign in ((self._a[live], -1.0), (self._b[live], 1.0)):
            keep = p >= 0
            node, c, i = p[keep], col[keep], sign * current[keep]
            parts.append((2 * node, c, i.real))
            parts.append((2 * node + 1, c, i.imag))
        rhs = tuple(np.concatenate(x) for x in zip(*parts, strict=True))
        return self._lu.solve((rhs[0], rhs[1], rhs[2]), k)


def solve_dv_real(
    y_real: tuple[np.ndarray, np.ndarray, np.ndarray],
    n: int,
    a: np.ndarray,
    b: np.ndarray,
    blocks: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    rhs_currents: np.ndarray,
) -> np.ndarray:
    """Solve ``(Y_net + E D E^T) dV = -E di`` (``y_real``: the COO entries of
    the real form of ``Y_net``, :func:`real_form`; ``n`` nodes) for every column of
    ``rhs_currents`` (branch current changes, shape (branches, columns));
    returns dV in real form, shape (2 nodes, columns): node ``k``'s real
    part in row ``2k``, its imaginary part in row ``2k + 1``. One sparse LU (SuperLU with a
    minimum-degree ordering of A + A^T, which keeps the fill-in of a radial
    network's matrix near its own size, in its symmetric mode: the matrix is
    structurally symmetric and near diagonally dominant, so pivots are taken
    from the diagonal unless one is below 0.1 of its column's largest entry;
    on the synthetic 5,000- and 10,000-bus feeders that halves the fill-in and
    the time of the default partial pivoting, and the solutions agree with it
    to ~1e-12 relative). :func:`factor_dv_real` keeps the LU for more."""
    return factor_dv_real(y_real, n, a, b, blocks).solve(rhs_currents)


def solve_dv(
    y_real: tuple[np.ndarray, np.ndarray, np.ndarray],
    n: int,
    a: np.ndarray,
    b: np.ndarray,
    blocks: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    rhs_currents: np.ndarray,
) -> np.ndarray:
    """:func:`solve_dv_real` as complex dV, shape (nodes, columns)."""
    x = solve_dv_real(y_real, n, a, b, blocks, rhs_currents)
    dv = np.empty((n, x.shape[1]), dtype=complex)
    dv.real = x[0::2]
    dv.imag = x[1::2]
    return dv


def complex_rows(x: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Complex rows ``nodes`` of a real interleaved solution (:func:`solve_dv_real`)."""
    return x[2 * nodes] + 1j * x[2 * nodes + 1]


def real_rows(y: sparse.spmatrix) -> sparse.csr_matrix:
    """A complex ``y`` (rows x nodes) as the real matrix that maps an
    interleaved real solution (:func:`solve_dv_real`) to the real parts of
    ``y dV`` in its first rows and the imaginary parts below: outputs in
    contiguous blocks."""
    coo = sparse.coo_matrix(y)
    m = coo.shape[0]
    r, c, g, bb = coo.row, 2 * coo.col, coo.data.real, coo.data.imag
    return sparse.csr_matrix(
        (
            np.concatenate([g, -bb, bb, g]),
            (np.concatenate([r, r, r + m, r + m]), np.concatenate([c, c + 1, c, c + 1])),
        ),
        shape=(2 * m, 2 * coo.shape[1]),
    )
