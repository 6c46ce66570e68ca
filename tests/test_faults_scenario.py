"""Fault sweep, scenario files: each input that used to fail after launch (or
with a false or misleading message) now gets a clear error at build naming
the field (issue item 6)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dsosim.runner.build.federation import build
from dsosim.runner.build.scenario import ScenarioError, load_scenario
from tests.federation import SCENARIOS

FEEDER = SCENARIOS.parent / "feeders" / "ieee13" / "Master.dss"


def scenario(tmp_path: Path, *, top: str = "", lda: str = "", agg: str = "") -> Path:
    text = f"""name = "faulty"
{top}
[[ldas]]
name = "lda5"
feeder = "{FEEDER}"
td_bus = 5
{lda}
[[ldas.aggregators]]
name = "agg_solar"
{agg}
"""
    path = tmp_path / "faulty.toml"
    path.write_text(text)
    return path


CASES = [
    # (where the bad value goes, the value, what the error must say)
    ("name", "a" * 301, r"ldas\.0\.aggregators\.0\.name: String should match"),
    ("lda", "", None),  # control: the base scenario is valid
    ("top", "interval_minutes = 7", r"interval_minutes = 7 does not divide a day"),
    ("top", "hours = nan", r"hours: Input should be a finite number"),
    ("lda", "scale = 1e9", r"ldas\.0\.scale: Input should be less than or equal to 10000"),
    ("lda", "scale = inf", r"ldas\.0\.scale: Input should be a finite number"),
    ("top", "[transmission]\nline_limit_mw = inf", r"line_limit_mw: Input should be a finite"),
    ("top", "[transmission]\nline_limit_mw = 1e9", r"line_limit_mw: Input should be less"),
]


@pytest.mark.parametrize(("where", "line", "expected"), CASES)
def test_bad_scenario_values_are_named(tmp_path: Path, where: str, line: str, expected) -> None:
    if where == "name":
        path = scenario(tmp_path)
        path.write_text(path.read_text().replace('"agg_solar"', f'"{line}"'))
    else:
        path = scenario(tmp_path, **{where: line})
    if expected is None:
        load_scenario(path)
        return
    with pytest.raises(ScenarioError, match=expected) as info:
        load_scenario(path)
    assert len(str(info.value)) < 2000  # no dump of the whole input


def test_reserved_federate_names_are_refused(tmp_path: Path) -> None:
    text = scenario(tmp_path).read_text()
    for bad in ("iso", "recorder"):
        for old in ('name = "lda5"', 'name = "agg_solar"'):
            p = tmp_path / f"{bad}.toml"
            p.write_text(text.replace(old, f'name = "{bad}"'))
            with pytest.raises(ScenarioError, match=rf"names \['{bad}'\] are taken by the"):
                load_scenario(p)


def test_an_error_inside_ldas_does_not_add_a_false_empty_list_message(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(scenario(tmp_path, agg="pv_share = 7"))
    text = str(info.value)
    assert "ldas.0.aggregators.0.pv_share" in text and "(1 problem(s))" in text
    assert "should have at least 1 item" not in text


@pytest.mark.parametrize(
    ("feeder", "expected"),
    [("FOLDER", "is a folder, not an OpenDSS file"), ("/dev/null", "is not a regular file")],
)
def test_feeder_that_is_not_a_file_is_named(tmp_path: Path, feeder: str, expected: str) -> None:
    feeder = str(tmp_path) if feeder == "FOLDER" else feeder
    path = scenario(tmp_path)
    path.write_text(path.read_text().replace(str(FEEDER), feeder))
    with pytest.raises(ScenarioError, match=rf"ldas\[lda5\]\.feeder: {re.escape(expected)}"):
        build(path, tmp_path / "out")
