"""Several federates in one process (``--processes N``, ``federates.pack``):
the same results as one process per federate, every federate still its own,
and a stop signal to a packed process stops the federation cleanly."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest

from dsosim.federates.pack import exit_code
from dsosim.runner.build import packing
from dsosim.runner.build.federation import build, free_port
from dsosim.runner.build.scenario import ScenarioError
from tests.faults import QUICKSTART, helics_run, kill_all_in, no_orphans, summary, wait_running
from tests.federation import SCENARIOS, run_scenario


def _digests(results: Path) -> dict[str, str]:
    return {
        str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(results.rglob("*"))
        if p.is_file()
    }


def test_groups_keep_each_lda_together_and_every_federate_once(tmp_path: Path) -> None:
    built = build(SCENARIOS / "study.toml", tmp_path, hours=1.0, model="4", processes=0)
    config = built.config
    groups = packing.groups(config, 3)
    names = [n for g in groups for n in g]
    packable = set(config.federate_names()) - {config.recorder.name}
    assert sorted(names) == sorted(packable) and len(names) == len(set(names))
    assert groups[0][0] == config.iso.name
    for i, dso in enumerate(config.dsos):
        mine = next(g for g in groups if dso.name in g)
        assert groups.index(mine) == i % 3
        assert f"{dso.name}_imo" in mine  # model 4: an independent operator per LDA
        assert {a.name for a in config.aggregators if a.dso == dso.name} <= set(mine)
    # more processes than LDAs: no empty process
    assert len(packing.groups(config, 20)) == len(config.dsos)
    with pytest.raises(ValueError, match="at least 1"):
        packing.groups(config, 0)


def test_runner_runs_the_packs_the_recorder_and_the_broker(tmp_path: Path) -> None:
    built = build(SCENARIOS / "study.toml", tmp_path, hours=1.0, processes=2)
    spec = json.loads(built.runner.read_text())
    names = [f["name"] for f in spec["federates"]]
    assert names == ["dsosim-broker", "federates.1", "federates.2", "recorder"]
    first = spec["federates"][1]["exec"]
    assert "-m dsosim.federates.pack" in first and "--name iso" in first
    # the scenario's setting (study.toml packs) and --processes 0 (one process each)
    scenario_default = build(SCENARIOS / "study.toml", tmp_path / "d", hours=1.0)
    assert len(json.loads(scenario_default.runner.read_text())["federates"]) < 10
    separate = build(SCENARIOS / "study.toml", tmp_path / "s", hours=1.0, processes=0)
    assert len(json.loads(separate.runner.read_text())["federates"]) == 27


def test_bad_process_counts_are_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="--processes -1"):
        build(QUICKSTART, tmp_path, processes=-1)
    bad = tmp_path / "bad.toml"
    bad.write_text(QUICKSTART.read_text() + "\nprocesses = 0\n")
    with pytest.raises(ScenarioError, match="processes"):
        build(bad, tmp_path / "b")


def test_exit_code_prefers_the_failure() -> None:
    assert exit_code([0, 0]) == 0
    assert exit_code([3, 1, 3]) == 1
    assert exit_code([3, 2]) == 2
    assert exit_code([3, 143, 3]) == 143
    assert exit_code([0, 3]) == 3


@pytest.mark.federation
def test_packed_federation_writes_the_same_bytes(tmp_path: Path) -> None:
    separate, o1 = run_scenario(QUICKSTART, tmp_path / "a", hours=1.0, processes=0)
    packed, o2 = run_scenario(QUICKSTART, tmp_path / "b", hours=1.0)  # quickstart: 1 process
    assert o1.ok and o2.ok, (o1.failure, o2.failure)
    spec = json.loads(packed.runner.read_text())
    assert [f["name"] for f in spec["federates"]] == ["dsosim-broker", "federates.1", "recorder"]
    d1, d2 = _digests(separate.results_dir), _digests(packed.results_dir)
    assert len(d1) > 10 and d1 == d2


@pytest.mark.federation
def test_stop_signal_to_a_packed_process_stops_every_federate(tmp_path: Path) -> None:
    built = build(QUICKSTART, tmp_path, hours=48, port=free_port(), processes=1)
    folder = built.runner.parent
    try:
        proc = helics_run(folder)
        wait_running(folder)
        pack = next(
            int(line.split(":")[0])
            for line in _processes(folder)
            if "dsosim.federates.pack" in line
        )
        os.kill(pack, signal.SIGTERM)
        proc.communicate(timeout=60)
        assert no_orphans(folder) == []
        s = summary(built.results_dir)
        assert s["status"] == "incomplete" and s["complete"] is False
        assert "stopped by SIGTERM" in s["error"]
        log = (folder / "federates.1.log").read_text(errors="replace")
        for name in ("iso", "lda5", "agg_solar", "agg_storage"):
            assert f"[{name}]" in log
    finally:
        kill_all_in(folder)


@pytest.mark.federation
def test_second_launch_of_a_packed_runner_never_joins(tmp_path: Path) -> None:
    """The packed process takes every federate's lock before its HELICS core
    exists: a second launch of the same runner is refused without contacting
    the broker, and the first run completes."""
    # 72 h: a packed quickstart day takes about 8 s on a quiet machine, and the
    # first run must outlast the second launch's start-up (a day was once
    # over before the second launch's processes took their locks)
    built = build(QUICKSTART, tmp_path, hours=72, port=free_port(), processes=1)
    folder = built.runner.parent
    first = helics_run(folder)
    try:
        wait_running(folder, intervals=1)
        second = helics_run(folder)
        out2, _ = second.communicate(timeout=120)
        assert first.poll() is None, "the first run ended before the second launch was refused"
        assert second.returncode != 0, out2
        out1, _ = first.communicate(timeout=300)
        assert first.returncode == 0, out1
        assert summary(built.results_dir)["complete"] is True
        logs = "".join(p.read_text(errors="replace") for p in folder.glob("*.log"))
        assert "another launch of this federation is running" in logs
    finally:
        kill_all_in(folder)
        first.communicate()


def _processes(folder: Path) -> list[str]:
    from tests.faults import processes_in

    return processes_in(folder)
