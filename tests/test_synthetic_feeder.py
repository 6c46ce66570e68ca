"""The synthetic feeder generator: deterministic, sized as asked, solvable in
range, unbalanced, with the devices it promises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsosim.federates.dso.feeder import Feeder
from dsosim.runner.cli import main as cli
from dsosim.runner.feeders.synthetic import SyntheticFeederError, generate_feeder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_same_files_other_seed_other_feeder(tmp_path: Path) -> None:
    a = generate_feeder(150, 3, tmp_path / "a")
    b = generate_feeder(150, 3, tmp_path / "b")
    c = generate_feeder(150, 4, tmp_path / "c")
    assert _files(a.master.parent) == _files(b.master.parent)
    assert _files(a.master.parent)["Lines.dss"] != _files(c.master.parent)["Lines.dss"]


@pytest.mark.parametrize("n", [10, 300])
def test_size_balance_and_voltages(tmp_path: Path, n: int) -> None:
    made = generate_feeder(n, 1, tmp_path)
    feeder = Feeder(made.master, name="syn")
    # n primary buses, the source bus, and the regulator's output bus when there is one.
    assert len(feeder.buses) == n + 1 + (1 if n >= 100 else 0)
    assert len(feeder.loads) == made.n_loads > n // 3
    assert sum(ld.kw for ld in feeder.loads) == pytest.approx(made.total_kw, abs=0.5)
    state = feeder.solve()
    assert state.converged
    watched = state.v_pu[state.monitored]
    assert 0.955 <= watched.min() and watched.max() <= 1.05
    assert state.n_thermal_violations == 0
    # The head delivers the loads plus losses.
    assert state.substation_p_mw == pytest.approx(state.load_mw + state.losses_mw, abs=1e-3)


def test_unbalanced_with_regulator_capacitor_and_own_ders(tmp_path: Path) -> None:
    made = generate_feeder(400, 2, tmp_path, n_pv=4, n_storage=2)
    feeder = Feeder(made.master, name="syn")
    engine = feeder.engine
    assert engine.RegControls.Count() == 2  # substation LTC and a line regulator
    assert engine.Capacitors.Count() == 1 and engine.CapControls.Count() == 1
    kinds = [d.kind for d in feeder.existing_ders]
    assert kinds.count("pv") == 4 and kinds.count("storage") == 2
    single = [n for n in feeder.node_names if n.count(".") == 1]
    phase_of = np.array([int(n.split(".")[1]) for n in single])
    buses_with = {
        p: {n.split(".")[0] for n, q in zip(single, phase_of, strict=True) if q == p}
        for p in (1, 2, 3)
    }
    one_phase = [b for b in feeder.buses if sum(b in s for s in buses_with.values()) == 1]
    assert len(one_phase) > 40  # single-phase laterals on every phase
    assert all(len(s) > 10 for s in buses_with.values())


def test_windows_line_endings(tmp_path: Path) -> None:
    made = generate_feeder(40, 1, tmp_path, crlf=True)
    assert b"\r\n" in made.master.read_bytes()
    assert Feeder(made.master, name="crlf").solve().converged


def test_bad_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SyntheticFeederError, match=r"n_buses must be in \[10, 50000\], got 3"):
        generate_feeder(3, 1, tmp_path)


def test_cli_writes_a_feeder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["synth-feeder", "--buses", "60", "--seed", "5", "--out", str(tmp_path / "f")]) == 0
    assert "60 buses" in capsys.readouterr().out
    assert (tmp_path / "f" / "Master.dss").is_file()
    assert cli(["synth-feeder", "--buses", "2", "--out", str(tmp_path / "g")]) == 2
    assert "n_buses must be in" in capsys.readouterr().err
