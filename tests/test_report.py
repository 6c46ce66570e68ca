"""The comparison report: numbers a reader can read, units in the headers,
and the voltage band the scenario set rather than a fixed one."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dsosim.runner.analysis.report import readable, voltage_bands


def test_numbers_are_readable_with_units() -> None:
    table = pd.DataFrame(
        {
            "model": ["1", "2"],
            "complete": [True, False],
            "total_cost": [17234.5, 8499.851],
            "mean_lmp": [15.79934, 16.0],
            "dlmp_spread": [float("nan"), 0.30581],
            "messages": [216, 67770],
            "new_column": [0.123456, 12345.678],
        }
    )
    shown = readable(table)
    assert list(shown.columns) == [
        "model",
        "complete",
        "total_cost ($)",
        "mean_lmp ($/MWh)",
        "dlmp_spread ($/MWh)",
        "messages",
        "new_column",
    ]
    assert shown["total_cost ($)"].tolist() == ["17,234.50", "8,499.85"]
    assert shown["mean_lmp ($/MWh)"].tolist() == ["15.799", "16.000"]
    assert shown["dlmp_spread ($/MWh)"].tolist() == ["", "0.306"]
    assert shown["messages"].tolist() == ["216", "67,770"]
    assert shown["new_column"].tolist() == ["0.1235", "12,345.7"]
    assert "e+" not in shown.to_html()


def test_voltage_band_comes_from_the_runs(tmp_path: Path) -> None:
    for model, limits in (("1", {"vmin_pu": 0.9, "vmax_pu": 1.1}), ("3", {})):
        folder = tmp_path / f"model-{model}"
        folder.mkdir()
        (folder / "federation.json").write_text(json.dumps({"dsos": [{"limits": limits}]}))
    assert voltage_bands(tmp_path, ["1", "3", "4"]) == [(0.9, 1.1), (0.95, 1.05)]
