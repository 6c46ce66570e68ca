"""Loads set and read through DSS C-API's batch interface give the same
engine state, power flow and powers, to the bit, as the classic API one load
at a time (what the feeder did before)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsosim.federates.dso.batch import LoadBatch
from dsosim.federates.dso.feeder import Feeder

ROOT = Path(__file__).resolve().parents[1]
SYNTH = ROOT / "configs" / "feeders" / "synth-120-s5" / "Master.dss"


def _with_ders(name: str) -> Feeder:
    feeder = Feeder(SYNTH, name=name)
    for i, bus in enumerate(sorted({ld.bus for ld in feeder.loads})[:12]):
        feeder.attach_der(f"d{i}", bus)
    return feeder


def _classic_loads(feeder: Feeder, factors: np.ndarray) -> None:
    """The loads set one by one through the classic Loads API."""
    loads = feeder.engine.Loads
    for i, (kw, kvar) in enumerate(
        zip(feeder._base_kw * factors, feeder._base_kvar * factors, strict=True), start=1
    ):
        loads.Idx(i)
        loads.kW(float(kw))
        loads.kvar(float(kvar))


def _classic_ders(feeder: Feeder, mw: np.ndarray) -> None:
    """The DERs set one by one: kW, then the volt-var reactive power again
    where one is set (kW resets it from the power factor)."""
    loads = feeder.engine.Loads
    for idx, p in zip(feeder._der_idx, mw, strict=True):
        loads.Idx(idx)
        loads.kW(float(p * 1000.0))
        if idx in feeder._der_kvar:
            loads.kvar(feeder._der_kvar[idx])


def _classic_der_kw(feeder: Feeder) -> list[float]:
    loads, element = feeder.engine.Loads, feeder.engine.CktElement
    out = []
    for idx in feeder._der_idx:
        loads.Idx(idx)
        out.append(element.TotalPowers()[0])
    return out


def test_batch_sets_and_reads_as_the_classic_api_to_the_bit() -> None:
    classic, batched = _with_ders("classic"), _with_ders("batched")
    n_loads, n_der = len(classic.loads), len(classic.der_names)
    rng = np.random.default_rng(7)
    for step in range(12):
        factors = rng.uniform(0.3, 1.3, n_loads) if step % 2 else np.full(n_loads, 0.8)
        mw = rng.normal(0.0, 0.05, n_der)
        if step >= 4:  # volt-var reactive powers on some DERs (0 elsewhere)
            mvar = np.where(rng.random(n_der) < 0.6, rng.normal(0.0, 0.01, n_der), 0.0)
            classic.set_der_mvar(mvar)
            batched.set_der_mvar(mvar)
        _classic_loads(classic, factors)
        _classic_ders(classic, mw)
        batched.set_load_multipliers(factors)
        batched.set_der_mw(mw)
        a, b = classic.solve(), batched.solve()
        assert a.v_pu.tobytes() == b.v_pu.tobytes()
        assert (a.losses_mw, a.substation_p_mw) == (b.losses_mw, b.substation_p_mw)
        got = LoadBatch(batched.engine, batched._der_idx).total_kw()
        assert got == _classic_der_kw(batched)
        assert np.array_equal(np.array(got), np.array(_classic_der_kw(classic)))
        # the metered load by the power balance (DER powers read in one call)
        # is the loads' own sum, to the power flow's tolerance
        assert b.load_mw == pytest.approx(batched._metered_load_mw_by_element(), abs=1e-5)


def test_batch_checks_its_input() -> None:
    feeder = Feeder(SYNTH, name="checked")
    batch = LoadBatch(feeder.engine, [1, 2, 3])
    assert len(batch) == 3
    with pytest.raises(ValueError, match="2,"):
        batch.set("kW", np.ones(2))
    with pytest.raises(ValueError, match="kvar of loads, not 'kva'"):
        batch.set("kva", np.ones(3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch of 2 loads has 1"):
        LoadBatch(feeder.engine, [1, len(feeder.loads) + 1])  # no such load
    empty = LoadBatch(feeder.engine, [])
    empty.set("kW", np.zeros(0))
    assert empty.total_kw() == []
