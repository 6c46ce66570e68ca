"""The Python API (``import dsosim``): a run from Python, its results as
DataFrames with timestamps, and the README's notebook example as written."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

import dsosim
from dsosim.runner.build.scenario import ScenarioError
from tests.federation import ROOT, SCENARIOS

pytestmark = pytest.mark.federation


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("api") / "runs" / "quickstart"
    results = dsosim.run(dsosim.Scenario.from_toml(SCENARIOS / "quickstart.toml"), out, hours=1.0)
    assert results.complete and results.folder == out / "results"
    return out


def test_results_are_dataframes_with_timestamps(quick_run: Path) -> None:
    results = dsosim.load_results(quick_run)
    assert {"market", "interface", "settlements", "dispatch"} <= set(results)
    interface = results["interface"]
    assert isinstance(interface, pd.DataFrame) and len(interface) == 12  # 1 h of 5-min markets
    assert pd.api.types.is_datetime64_any_dtype(interface["timestamp"])
    steps = interface["timestamp"].diff().dropna().unique()
    assert list(steps) == [pd.Timedelta(minutes=5)]
    assert results.summary["complete"] is True and results.summary["intervals"] == 12
    # the run folder, its results folder: the same tables
    assert list(dsosim.load_results(quick_run / "results")) == list(results)


def test_bad_paths_and_tables_are_named(quick_run: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no results here"):
        dsosim.load_results(tmp_path)
    with pytest.raises(KeyError, match="no table 'prices'.*'market'"):
        dsosim.load_results(quick_run)["prices"]
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nhours = -1\n')
    with pytest.raises(ScenarioError, match="hours"):
        dsosim.Scenario.from_toml(bad)


def test_readme_python_example_runs(
    quick_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S)
    assert code is not None and "dsosim.load_results" in code.group(1)
    monkeypatch.chdir(quick_run.parents[1])  # runs/quickstart is the run above
    real_run = dsosim.run
    # the example's runs, shortened to an hour each
    monkeypatch.setattr(
        dsosim, "run", lambda s, out, **kw: real_run(s, tmp_path / out, **{**kw, "hours": 1.0})
    )
    text = code.group(1).replace('"configs/', f'"{ROOT}/configs/')
    exec(compile(text, "README.md", "exec"), {})
    assert (quick_run.parents[1] / "lmp.png").stat().st_size > 10_000
