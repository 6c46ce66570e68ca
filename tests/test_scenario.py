"""Scenario validation: wrong input gets a message naming file, field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsosim.runner.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "scenarios" / "quickstart.toml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


GOOD_LDA = """
[[ldas]]
name = "a"
feeder = "f.dss"
td_bus = 5
[[ldas.aggregators]]
name = "g"
"""


def test_quickstart_is_valid() -> None:
    scenario, base = load_scenario(QUICKSTART)
    assert scenario.n_intervals == 288
    assert base == QUICKSTART.parent


def test_unknown_field_names_file_field_and_allowed(tmp_path: Path) -> None:
    path = _write(tmp_path, 'name = "x"\nsede = 3\n' + GOOD_LDA)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    text = str(err.value)
    assert str(path) in text and "sede: unknown field" in text and "seed" in text.split("allowed here:")[1]


def test_nested_unknown_field_lists_section_fields(tmp_path: Path) -> None:
    path = _write(tmp_path, 'name = "x"\n' + GOOD_LDA + "pv_shar = 0.3\n")
    with pytest.raises(ScenarioError, match=r"ldas\.0\.aggregators\.0\.pv_shar: unknown field; allowed here: .*pv_share"):
        load_scenario(path)


def test_out_of_range_and_bad_choice(tmp_path: Path) -> None:
    path = _write(tmp_path, 'name = "x"\nmodel = "p2p"\n' + GOOD_LDA.replace("td_bus = 5", "td_bus = 5\nscale = -2"))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    text = str(err.value)
    assert "model: Input should be 'layered'" in text
    assert "ldas.0.scale: Input should be greater than 0" in text


def test_duplicate_names_and_missing_sections(tmp_path: Path) -> None:
    path = _write(tmp_path, 'name = "x"\n' + GOOD_LDA.replace('name = "g"', 'name = "a"'))
    with pytest.raises(ScenarioError, match="repeated: \\['a'\\]"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="ldas: Field required"):
        load_scenario(_write(tmp_path, 'name = "x"\n'))


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="scenario file not found"):
        load_scenario(tmp_path / "nope.toml")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(_write(tmp_path, "name = \n"))
