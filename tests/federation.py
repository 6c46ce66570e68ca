"""Helpers for tests that launch real federations through ``helics run``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dsosim.runner.build.federation import BuildResult, build, free_port
from dsosim.runner.launch import LaunchOutcome, build_and_launch

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "configs" / "scenarios"


def run_scenario(
    scenario: Path,
    out: Path,
    *,
    hours: float,
    timeout_s: float = 300,
    edit_runner=None,
    model: str | None = None,
    processes: int | None = None,
) -> tuple[BuildResult, LaunchOutcome]:
    def make() -> BuildResult:
        built = build(
            scenario, out, hours=hours, port=free_port(), model=model, processes=processes
        )
        if edit_runner is not None:
            spec = json.loads(built.runner.read_text())
            edit_runner(spec)
            built.runner.write_text(json.dumps(spec, indent=2))
        return built

    return build_and_launch(make, timeout_s=timeout_s)


def table(results: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(results / name)
