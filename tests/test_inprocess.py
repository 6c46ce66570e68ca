"""The in-process reference of ``dsosim bench scale`` makes the federation's
role calls: its serialised run writes the very tables the federation writes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dsosim.runner.build.federation import build
from dsosim.runner.build.scenario import ScenarioError
from tests.federation import SCENARIOS, run_scenario


def _parts(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("part-*.parquet"))
    }


def test_in_process_tables_are_byte_identical_to_the_federation(tmp_path: Path) -> None:
    built, outcome = run_scenario(SCENARIOS / "quickstart.toml", tmp_path / "fed", hours=1)
    assert outcome.ok, outcome.failure
    # In a process of its own, as ``dsosim bench scale`` runs it: the reference
    # runs OpenDSS in worker threads, and OpenDSS engines created in a thread of
    # a process that already made and freed others (this test session) have
    # crashed the whole pytest process (segfault) under load.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsosim.runner.bench.inprocess",
            "--config",
            str(built.federation),
            "--mode",
            "serialised",
            "--results",
            str(tmp_path / "one"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["intervals"] == 12 and got["cpu_per_interval_s"] > 0
    federation = _parts(built.results_dir)
    assert len(federation) >= 10
    assert _parts(tmp_path / "one") == federation


def test_first_ldas_keeps_a_prefix_and_refuses_too_many(tmp_path: Path) -> None:
    built = build(SCENARIOS / "study.toml", tmp_path / "a", port=23000, first_ldas=2)
    assert [d.name for d in built.config.dsos] == ["lda1_synth120", "lda2_synth140"]
    assert len(built.config.aggregators) == 4
    with pytest.raises(ScenarioError, match="has 8 LDA"):
        build(SCENARIOS / "study.toml", tmp_path / "b", port=23000, first_ldas=9)
