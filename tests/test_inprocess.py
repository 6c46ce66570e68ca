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


def test_bench_phases_books_every_role_second_and_bounds_the_critical_path(
    tmp_path: Path,
) -> None:
    """``dsosim bench phases`` on the quickstart for an hour: its bookings are
    the federates' own thread CPU (so they add up to no more than the
    process's), and its critical path lies between the perfect split and all
    the work."""
    out = tmp_path / "phases.json"
    args = ["--scenario", str(SCENARIOS / "quickstart.toml"), "--hours", "1", "--start-hour", "12"]
    done = subprocess.run(
        [sys.executable, "-m", "dsosim.runner.cli", "bench", "phases", *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["intervals"] == 12 and r["processes"] == 1  # the quickstart packs into one
    phases = {p.split("+")[0] for p in r["phases_ms"]}
    assert {"BID", "AGGREGATE", "CLEAR", "DISPATCH", "MEASURE"} <= phases
    assert list(r["phases_ms"]["CLEAR"]) == ["iso"]  # only the ISO works at the clear
    total = sum(sum(cpu.values()) for cpu in r["phases_ms"].values())
    assert abs(total - r["role_cpu_ms"]) < 1e-6 * total
    assert abs(sum(r["ldas_ms"].values()) - total) < 1e-6 * total
    # one process: nothing runs in parallel
    assert abs(r["critical_path_ms"] - r["role_cpu_ms"]) < 1e-6 * total
    assert r["perfect_ms"] * 2 == pytest.approx(r["role_cpu_ms"])
    assert "critical path on 2 cores" in done.stdout


def test_critical_path_of_a_hand_worked_schedule() -> None:
    from dsosim.runner.bench.phases import Booking, critical_path

    # step 0: a (1 s) and b (3 s) in two processes on 2 cores -> 3 s;
    # step 1: three processes of 1 s each on 2 cores -> 1.5 s; set-up not counted
    bookings = [
        Booking(0.0, "a", 1.0),
        Booking(0.0, "b", 3.0),
        Booking(1.0, "a", 1.0),
        Booking(1.0, "b", 1.0),
        Booking(1.0, "c", 1.0),
        Booking(-1.0, "c", 9.0),
    ]
    path, work = critical_path(bookings, {"a": "p", "b": "q", "c": "r"}, cores=2)
    assert (path, work) == (4.5, 7.0)
    # a and b in one process: step 0 is 4 s, step 1 is max(2, 1.5) = 2 s
    assert critical_path(bookings, {"a": "p", "b": "p", "c": "r"}, cores=2) == (6.0, 7.0)
