"""The shipped study scenario builds into the federation it promises: eight
LDAs at distinct T-D buses of case118, eight distinct synthetic feeders, about
two thousand home devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsosim.federates.aggregator.spec_json import fleet_from_json
from dsosim.runner.build.federation import build
from dsosim.runner.feeders.synthetic import generate_feeder

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "configs" / "scenarios" / "study.toml"


def test_study_builds_eight_ldas_with_about_two_thousand_devices(tmp_path: Path) -> None:
    config = build(STUDY, tmp_path, port=23000).config
    assert config.iso.case == "case118"
    assert len(config.dsos) == 8
    assert len({d.td_bus for d in config.dsos}) == 8
    feeders = [Path(d.feeder).parent.name for d in config.dsos]
    assert len(set(feeders)) == 8 and all(f.startswith("synth-") for f in feeders)
    assert len(config.aggregators) == 16
    devices = 0
    for a in config.aggregators:
        spec = fleet_from_json(a.fleet)
        devices += sum(
            len(getattr(spec, kind))
            for kind in ("pvs", "batteries", "evs", "hvacs", "water_heaters")
        )
    assert 1_800 <= devices <= 2_200, devices


def test_shipped_synthetic_feeders_are_what_the_generator_writes(tmp_path: Path) -> None:
    for folder in sorted((ROOT / "configs" / "feeders").glob("synth-*")):
        _, buses, seed = folder.name.split("-")
        generate_feeder(int(buses), int(seed.removeprefix("s")), tmp_path / folder.name)
        for made in sorted((tmp_path / folder.name).iterdir()):
            assert made.read_bytes() == (folder / made.name).read_bytes(), made.name


@pytest.mark.federation
def test_the_study_runs_as_a_federation(tmp_path: Path) -> None:
    """Its first two hours through ``helics run`` (26 federates in the
    scenario's packed processes): complete, every LDA cleared every interval,
    the books close. The LDA markets on its larger feeders met numerical
    trouble that no smaller case showed."""
    import pandas as pd

    from tests.federation import run_scenario

    built, outcome = run_scenario(STUDY, tmp_path / "study", hours=2, timeout_s=600)
    assert outcome.ok, outcome.failure
    s = outcome.summary
    assert s["complete"] is True and s["intervals"] == 24
    assert abs(s["settlement_residual"]) < 1e-6
    interface = pd.read_parquet(built.results_dir / "interface")
    assert interface.groupby("interval").size().eq(8).all()
