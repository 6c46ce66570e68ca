"""The factorised linearisation (one sparse LU of the power flow's Jacobian)
against OpenDSS itself: central finite differences of full power flows, with
OpenDSS's convergence tolerance tightened to 1e-12 so that the reference is
exact to ~1e-7. The bound checked: every voltage derivative within 1e-4 of
the largest change the DER causes (relative), the marginal loss factor within
1e-5, the loading secants within 0.5 % of the largest. Feeders cover the
OpenDSS load models it reproduces (1-5 and 8, ZIP with a cut-off; 6 and 7 fall
back to finite differences), loads outside vminpu/vmaxpu and
below vlowpu, wye, delta and split-phase connections, line-to-line readings,
regulators, capacitors, two sources, and the feeder's own PV, storage and
generator.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from dsosim.federates.dso import linearise
from dsosim.federates.dso.feeder import Feeder, FeederError
from tests.byof_fixtures import quirky_feeder
from tests.test_byof import IEEE13, SHARED

DELTA_MW = 1e-3

EVERY_MODEL = """\
Clear
New Circuit.models basekv=12.47 pu=1.0 phases=3 bus1=src MVAsc3=200 MVAsc1=180
New Line.l1 bus1=src bus2=a r1=0.3 x1=0.6 r0=0.6 x0=1.2 units=km length=2 normamps=400
New Line.l2 bus1=a bus2=b r1=0.4 x1=0.7 r0=0.8 x0=1.4 units=km length=3 normamps=300
New Line.l3 bus1=b bus2=c r1=0.4 x1=0.7 r0=0.8 x0=1.4 units=km length=3 normamps=300
New Load.m1 bus1=a phases=3 kv=12.47 kw=900 kvar=300 model=1
New Load.m2 bus1=a.1 phases=1 kv=7.2 kw=200 kvar=80 model=2
New Load.m3 bus1=b.2 phases=1 kv=7.2 kw=250 kvar=90 model=3
New Load.m4 bus1=b.1.2 phases=1 conn=delta kv=12.47 kw=300 kvar=100 model=4 cvrwatts=0.8 cvrvars=3
New Load.m5 bus1=c phases=3 conn=delta kv=12.47 kw=600 kvar=200 model=5
New Load.m8 bus1=b phases=3 kv=12.47 kw=500 kvar=200 model=8
~ zipv=[0.3 0.3 0.4 0.2 0.3 0.5 0.6]
! outside the constant-power band: one below vminpu, one above vmaxpu, one below vlowpu
New Load.low bus1=c.2 phases=1 kv=7.2 kw=120 kvar=40 model=1 vminpu=1.02
New Load.high bus1=a.2 phases=1 kv=7.2 kw=120 kvar=40 model=4 vmaxpu=0.9 vminpu=0.5
New Load.lowest bus1=b.3 phases=1 kv=7.2 kw=100 kvar=30 model=5 vlowpu=0.98 vminpu=0.99
New Capacitor.c1 bus1=b phases=3 kv=12.47 kvar=300
Set VoltageBases=[12.47]
CalcVoltageBases
"""


def _compare(feeder: Feeder, buses: list[str], mw: list[float]) -> None:
    for k, bus in enumerate(buses):
        feeder.attach_der(f"d{k}", bus)
    feeder.set_der_mw(mw)
    feeder.engine.Text.Command("set tolerance=1e-12")
    feeder.solve()
    fact = feeder.sensitivities(method="factorised", delta_mw=DELTA_MW)
    fd = feeder.sensitivities(method="fd", delta_mw=DELTA_MW)
    scale = np.abs(fd.dv_dp).max(axis=0)
    assert (scale > 0).all()
    v_err = np.abs(fact.dv_dp - fd.dv_dp).max(axis=0) / scale
    assert v_err.max() < 1e-4, v_err
    np.testing.assert_allclose(fact.dpsub_dp, fd.dpsub_dp, atol=1e-5, rtol=0)
    for a, b in (
        (fact.dloading_dp_up, fd.dloading_dp_up),
        (fact.dloading_dp_down, fd.dloading_dp_down),
    ):
        if b.size:
            # secants of the linearised currents vs of power flows: they differ
            # by the currents' curvature over DELTA_MW (largest on service
            # transformers, where 1 kW is a tenth of the load)
            assert np.abs(a - b).max() <= 5e-3 * np.abs(b).max() + 1e-9
    np.testing.assert_allclose(fact.injection_headroom_mw, fd.injection_headroom_mw, rtol=1e-3)
    np.testing.assert_allclose(fact.consumption_headroom_mw, fd.consumption_headroom_mw, rtol=1e-3)


def _shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"shared feeder {relative} not available")
    return path


def test_every_load_model_inside_and_outside_its_band(tmp_path: Path) -> None:
    master = tmp_path / "models.dss"
    master.write_text(EVERY_MODEL)
    feeder = Feeder(master, name="models", vmin=0.5, vmax=1.5)
    # the three loads placed outside their bands really are there
    dss = feeder.engine
    for name, lo, hi in (("low", 0.0, 1.02), ("high", 0.9, 2.0), ("lowest", 0.0, 0.98)):
        dss.Circuit.SetActiveElement(f"Load.{name}")
        node = dss.CktElement.BusNames()[0]
        dss.Circuit.SetActiveBus(node.split(".")[0])
        phase = int(node.split(".")[1])
        vpu = dss.Bus.puVmagAngle()[2 * (list(dss.Bus.Nodes()).index(phase))]
        assert lo < vpu < hi, (name, vpu)
    _compare(feeder, ["a", "b", "c"], [0.2, -0.3, 0.1])


def test_shipped_ieee13() -> None:
    feeder = Feeder(IEEE13, name="ieee13")
    _compare(feeder, ["675", "680", "652", "611"], [-0.2, 0.1, 0.0, -0.05])


@pytest.mark.parametrize(
    ("relative", "basis"),
    [
        ("ieee34/ieee34Mod1.dss", "ln"),
        ("ieee37/ieee37.dss", "ll"),
        ("ieee123/IEEE123Master.dss", "ln"),
        ("epri-ckt7/Master_ckt7.dss", "ln"),
        ("lv-european/Master.dss", "ln"),
    ],
)
def test_shared_feeders(relative: str, basis: str) -> None:
    feeder = Feeder(_shared(relative), name="f", voltage_basis=basis)  # type: ignore[arg-type]
    buses = sorted({ld.bus for ld in feeder.loads})
    rng = np.random.default_rng(7)
    chosen = [buses[i] for i in rng.choice(len(buses), size=min(5, len(buses)), replace=False)]
    small = 0.002 if "lv-european" in relative else 0.05
    _compare(feeder, chosen, list(np.linspace(-small, small, len(chosen))))


def test_split_phase_services_two_sources_and_own_ders(tmp_path: Path) -> None:
    feeder = Feeder(quirky_feeder(tmp_path / "Q1"), name="q1")
    _compare(feeder, ["C1a", "C3b", "N2", "N4"], [-0.004, 0.002, 0.1, -0.2])


def test_auto_checks_against_opendss_once_and_falls_back_when_they_disagree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feeder = Feeder(IEEE13, name="ieee13")
    feeder.attach_der("a", "675")
    feeder.set_der_mw([0.0])
    feeder.solve()
    good = feeder.sensitivities()
    assert feeder._factorised_ok is True and not feeder.notes
    np.testing.assert_allclose(
        good.dv_dp, feeder.sensitivities(method="factorised").dv_dp, rtol=0, atol=0
    )

    wrong = Feeder(IEEE13, name="ieee13")
    wrong.attach_der("a", "675")
    real = linearise.branch_currents
    monkeypatch.setattr(linearise, "branch_currents", lambda v, *a: 3.0 * real(v, *a))
    wrong.set_der_mw([0.0])
    wrong.solve()
    sens = wrong.sensitivities()
    assert wrong._factorised_ok is False
    assert "sensitivities by finite differences" in wrong.notes[-1]
    fd = wrong.sensitivities(method="fd").dv_dp  # the same up to OpenDSS's tolerance
    np.testing.assert_allclose(sens.dv_dp, fd, rtol=0, atol=1e-3 * np.abs(fd).max())


def test_unknown_method_is_refused() -> None:
    feeder = Feeder(IEEE13, name="ieee13")
    with pytest.raises(FeederError, match="unknown sensitivity method"):
        feeder.sensitivities(method="guess")  # type: ignore[arg-type]


def test_a_load_model_it_does_not_reproduce_falls_back_with_a_note(tmp_path: Path) -> None:
    master = tmp_path / "fixedq.dss"
    master.write_text(
        EVERY_MODEL.replace(
            "Set VoltageBases",
            "New Load.m6 bus1=c.3 phases=1 kv=7.2 kw=150 kvar=60 model=6\nSet VoltageBases",
        )
    )
    feeder = Feeder(master, name="fixedq", vmin=0.5, vmax=1.5)
    feeder.attach_der("a", "b")
    feeder.solve()
    with pytest.raises(FeederError, match="model=6"):
        feeder.sensitivities(method="factorised")
    sens = feeder.sensitivities()
    assert "sensitivities by finite differences (load m6 has model=6" in feeder.notes[-1]
    fd = feeder.sensitivities(method="fd").dv_dp
    np.testing.assert_allclose(sens.dv_dp, fd, rtol=0, atol=1e-3 * np.abs(fd).max())


@pytest.mark.parametrize(
    "master",
    [IEEE13, SHARED / "ieee123" / "IEEE123Master.dss", "every_model"],
    ids=["ieee13", "ieee123", "every_model"],
)
def test_closed_form_load_jacobian_matches_differences_of_the_load_models(
    master: Path | str, tmp_path: Path
) -> None:
    """Constant-power branches inside their band get their current's
    derivative in closed form; it agrees with central differences of the load
    models (those differences are exact to ~1e-9 relative) to 1e-7 of the
    largest entry, and branches outside the band (every_model's low, high and
    lowest) keep the differences exactly."""
    if isinstance(master, Path) and not master.is_file():
        pytest.skip(f"shared feeder {master.name} not available")
    if master == "every_model":
        path = tmp_path / "models.dss"
        path.write_text(EVERY_MODEL)
        feeder = Feeder(path, name="models", vmin=0.5, vmax=1.5)
    else:
        feeder = Feeder(Path(master), name="f")
    feeder.attach_der("a", feeder.loads[0].bus)
    feeder.set_der_mw([-0.05])
    feeder.solve()
    model = feeder._jacobian_model()
    br = model.branches
    volts = feeder._complex_volts()
    vb = volts[br.a] - np.where(br.b >= 0, volts[np.maximum(br.b, 0)], 0.0)
    p_w, q_var = feeder._load_powers_w()
    closed = linearise.load_jacobian(vb, br, p_w, q_var)
    diffs = linearise.current_jacobian(linearise.branch_currents, vb, br, p_w, q_var)
    scale = max(float(np.abs(d).max()) for d in diffs)
    for got, want in zip(closed, diffs, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7 * scale)
    ratio = np.abs(vb) / br.v0
    outside = (br.model != 1) | (ratio <= br.vmin) | (ratio >= br.vmax)
    assert outside.any() and (~outside).any()
    for got, want in zip(closed, diffs, strict=True):
        np.testing.assert_array_equal(got[outside], want[outside])


def test_a_feeders_linearisation_does_not_depend_on_the_feeders_linearised_between() -> None:
    """Each feeder keeps its own sparsity pattern and ordering: linearising
    five other feeders (five patterns) in between changes nothing, to the bit
    (a cache shared by the process once evicted the ordering with more than
    four feeders, and the next factorisation, ordered afresh, differed in the
    last digits: results depended on how federates were packed in processes)."""
    buses = ["675", "680", "652", "611", "634", "671"]

    def feeder_with(n: int) -> Feeder:
        feeder = Feeder(IEEE13, name=f"f{n}")
        for k in range(n):
            feeder.attach_der(f"d{k}", buses[k])
        feeder.set_der_mw(np.linspace(-0.2, 0.1, n))
        feeder.solve()
        return feeder

    main = feeder_with(6)
    main.sensitivities(method="factorised")
    alone = main.sensitivities(method="factorised")
    others = [feeder_with(n) for n in range(1, 6)]
    for other in others:
        other.sensitivities(method="factorised")
    again = main.sensitivities(method="factorised")
    for field in ("dv_dp", "dloading_dp_up", "dloading_dp_down", "dpsub_dp"):
        assert np.array_equal(getattr(alone, field), getattr(again, field)), field


def test_bench_linearise_reference_and_present_agree_to_the_bit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``dsosim bench linearise`` times the present linearisation against the
    one before its speed-up (runner/bench/linearise_reference.py), kept for
    that: the speed-up changed no number, on the study's eight feeders with
    their volt-var closed loops (no timing is checked here)."""
    import argparse

    from dsosim.runner.bench import linearise as bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.handle(parser.parse_args(["--intervals", "2"])) == 0
    out = capsys.readouterr().out
    assert "results identical to the bit: 16 of 16 linearisations" in out


def test_branch_currents_of_the_usual_models_are_those_of_the_general_expressions() -> None:
    """Constant power, impedance and current branches (models 1, 2, 5) take a
    shorter path through :func:`branch_currents`: the same currents to the
    bit in every zone (no voltage, below vlowpu, between vlowpu and vminpu,
    in the band, above vmaxpu; vlowpu above vminpu), alone and mixed."""
    rng = np.random.default_rng(3)
    n = 4000
    v0 = rng.choice([7200.0, 12470.0, 240.0], n)
    vmin = rng.choice([0.95, 0.9, 0.5], n)
    vlow = np.where(rng.random(n) < 0.1, vmin + 0.02, rng.choice([0.5, 0.7], n))
    vmax = rng.choice([1.05, 1.1], n)
    ratio = rng.uniform(0.0, 1.3, n)
    ratio[rng.random(n) < 0.05] = 0.0
    v = ratio * v0 * np.exp(1j * rng.uniform(-np.pi, np.pi, n))
    n_loads = 50
    p_w = rng.uniform(-5e4, 5e4, n_loads)
    q_var = rng.uniform(-2e4, 2e4, n_loads)
    for models in ([1], [2], [5], [1, 2, 5], [1, 5]):
        br = linearise.PhaseBranches(
            a=np.zeros(n, dtype=np.intp),
            b=np.full(n, linearise.GROUND),
            load=rng.integers(0, n_loads, n),
            share=rng.choice([1.0, 0.5, 1.0 / 3.0], n),
            v0=v0,
            model=rng.choice(models, n),
            vmin=vmin,
            vmax=vmax,
            exp_p=np.ones(n),
            exp_q=np.full(n, 2.0),
            zip_p=np.zeros((n, 3)),
            zip_q=np.zeros((n, 3)),
            zip_cutoff=np.zeros(n),
            vlow=vlow,
        )
        short = linearise.branch_currents(v, br, p_w, q_var)
        general = linearise._branch_currents_any(v, br, p_w, q_var)
        assert np.array_equal(short.view(np.uint64), general.view(np.uint64)), models


@pytest.mark.parametrize(
    ("load_scale", "der_mw", "loop"), [(0.3, -0.3, "closed"), (1.0, 0.3, "open")]
)
def test_utility_linearisation_computes_each_headroom_once_with_the_same_numbers(
    load_scale: float, der_mw: float, loop: str
) -> None:
    """With volt-var inverters the utility takes the open-loop sensitivities
    without headrooms and lets the closed loop compute them for its own
    derivatives, or, where no inverter is on a slope (the open loop stands),
    fills them in: the same linearisation to the bit as computing them twice."""
    from dsosim.federates.common.config import DsoConfig, TimeSettings
    from dsosim.federates.dso.grid import GridOperator

    config = DsoConfig(
        name="lda",
        iso="iso",
        feeder=str(IEEE13),
        td_bus=5,
        scale=1.0,
        load_scale=load_scale,
        load_forecast_error=0.0,
        aggregators=("a",),
    )
    ratings = {"a": {"675": 1.5, "611": 0.5, "652": 0.5}}
    time = TimeSettings(interval_s=300.0, n_intervals=4)
    grid = GridOperator(
        config, {"a": ("675", "611", "652")}, time, seed=1, base_dir=Path("/"), volt_var_mva=ratings
    )
    grid.der_mw = np.full(3, der_mw)
    state = grid.forecast(0).state  # linearised once: the ordering is chosen
    got = grid._linearise(state)
    assert grid.volt_var is not None
    open_loop = grid.feeder.sensitivities()
    want = grid.volt_var.closed_loop(state, open_loop)
    assert (want is open_loop) == (loop == "open")
    assert np.isfinite(got.injection_headroom_mw).all()
    for f in fields(want):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if isinstance(a, np.ndarray):
            assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), f.name
        else:
            assert a == b, f.name
