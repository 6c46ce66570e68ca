"""Scenario validation: wrong input gets a message naming file, field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsosim.runner.build.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS_DIR = ROOT / "configs" / "scenarios"
QUICKSTART = SCENARIOS_DIR / "quickstart.toml"


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
    assert (
        str(path) in text
        and "sede: unknown field" in text
        and "seed" in text.split("allowed here:")[1]
    )


def test_nested_unknown_field_lists_section_fields(tmp_path: Path) -> None:
    path = _write(tmp_path, 'name = "x"\n' + GOOD_LDA + "pv_shar = 0.3\n")
    with pytest.raises(
        ScenarioError,
        match=r"ldas\.0\.aggregators\.0\.pv_shar: unknown field; allowed here: .*pv_share",
    ):
        load_scenario(path)


def test_out_of_range_and_bad_choice(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'name = "x"\nmodel = "p2p"\n' + GOOD_LDA.replace("td_bus = 5", "td_bus = 5\nscale = -2"),
    )
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    text = str(err.value)
    assert "model: Input should be 'baseline', '1', '2', '3', '4', '5', '6' or 'layered'" in text
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


def _scenario_with(tmp_path: Path, **replace: str) -> Path:
    text = QUICKSTART.read_text().replace(
        '"../feeders/', f'"{(ROOT / "configs" / "feeders").as_posix()}/'
    )
    for old, new in replace.items():
        text = text.replace(old, new)
    return _write(tmp_path, text)


def test_build_rejects_td_bus_missing_from_case(tmp_path: Path) -> None:
    from dsosim.runner.build.federation import build

    with pytest.raises(ScenarioError, match=r"ldas\[lda5\]\.td_bus: bus 42 is not in case 'case9'"):
        build(
            _scenario_with(tmp_path, **{"td_bus = 5": "td_bus = 42"}), tmp_path / "out", port=23999
        )


def test_build_rejects_unknown_case_and_missing_feeder(tmp_path: Path) -> None:
    from dsosim.runner.build.federation import build

    with pytest.raises(ScenarioError, match="transmission.case: .*case9999"):
        build(
            _scenario_with(tmp_path, **{'case = "case9"': 'case = "case9999"'}),
            tmp_path / "o1",
            port=23999,
        )
    with pytest.raises(
        ScenarioError, match=r"ldas\[lda5\]\.feeder: feeder file not found: .*Nope\.dss"
    ):
        build(
            _scenario_with(tmp_path, **{"ieee13/Master.dss": "ieee13/Nope.dss"}),
            tmp_path / "o2",
            port=23999,
        )


def test_build_rejects_aggregator_bus_without_load(tmp_path: Path) -> None:
    from dsosim.runner.build.federation import build

    with pytest.raises(
        ScenarioError, match=r"aggregators\[agg_solar\]\.buses: \['999'\] carry no load"
    ):
        build(
            _scenario_with(tmp_path, **{'"675", "692"': '"999", "692"'}),
            tmp_path / "o3",
            port=23999,
        )


# ------------------------------------------------------- real time and hardware

HIL = ROOT / "configs" / "scenarios" / "hil.toml"


def _hil_with(tmp_path: Path, **replace: str) -> Path:
    text = HIL.read_text().replace(
        "../feeders/ieee13/Master.dss", str(ROOT / "configs" / "feeders" / "ieee13" / "Master.dss")
    )
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return _write(tmp_path, text)


def test_shipped_hil_scenario_is_valid_and_compresses_time() -> None:
    scenario, _ = load_scenario(HIL)
    assert scenario.real_time.enabled and scenario.step_s == 1.0 and scenario.substep_s == 0.1
    assert [d.id for d in scenario.hil.devices] == ["bat1", "pv1"]


def test_hil_needs_real_time_and_known_aggregators(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="hil needs real_time.enabled = true"):
        load_scenario(_hil_with(tmp_path, **{"enabled = true": "enabled = false"}))
    with pytest.raises(
        ScenarioError, match=r"hil.devices\[1\].aggregator: 'agg_x' is not an aggregator"
    ):
        load_scenario(_hil_with(tmp_path, **{'aggregator = "agg_solar"': 'aggregator = "agg_x"'}))
    with pytest.raises(ScenarioError, match="device ids must be unique; repeated: \\['bat1'\\]"):
        load_scenario(_hil_with(tmp_path, **{'id = "pv1"': 'id = "bat1"'}))
    with pytest.raises(ScenarioError, match="CURVE needs both"):
        load_scenario(_hil_with(tmp_path, **{"[hil]\n": '[hil]\ncurve_secret_key = "k"\n'}))
    with pytest.raises(ScenarioError, match="hil.fallback: .*'hold' or 'unavailable'"):
        load_scenario(_hil_with(tmp_path, **{'fallback = "hold"': 'fallback = "zero"'}))


def test_build_resolves_hardware_ders_and_refuses_what_it_cannot(tmp_path: Path) -> None:
    from dsosim.runner.build.federation import build

    built = build(_hil_with(tmp_path), tmp_path / "ok", port=23999)
    bat1 = built.config.hil.devices[0]
    assert bat1.sim_rated_kw > 100 and bat1.sim_capacity_kwh == pytest.approx(4 * bat1.sim_rated_kw)
    assert bat1.scale == pytest.approx(5.0 / bat1.sim_rated_kw)
    assert built.config.helics.real_time and built.config.time.time_scale == 300.0
    assert "dsosim.federates.hil" in built.runner.read_text()
    with pytest.raises(
        ScenarioError, match=r"hil.devices\[0\] \(bat1\): .*has 0 battery DER\(s\) at bus '675'"
    ):
        build(_hil_with(tmp_path, **{'bus = "634"': 'bus = "675"'}), tmp_path / "o1", port=23999)
    with pytest.raises(
        ScenarioError, match="hil.bind: tcp://0.0.0.0:5570 is reachable from other machines"
    ):
        build(
            _hil_with(tmp_path, **{'bind = "tcp://127.0.0.1:5570"': 'bind = "tcp://0.0.0.0:5570"'}),
            tmp_path / "o2",
            port=23999,
        )
    with pytest.raises(ScenarioError, match="hil.curve_secret_key: not found: .*nokey"):
        build(
            _hil_with(
                tmp_path,
                **{"[hil]\n": '[hil]\ncurve_secret_key = "nokey"\ncurve_authorized_dir = "."\n'},
            ),
            tmp_path / "o3",
            port=23999,
        )
    with pytest.raises(
        ScenarioError,
        match=(
            r"real_time: the last exchange of an interval comes 0.9 s after its start "
            r"but an interval is only 0.5 s \(step_s\)"
        ),
    ):
        build(_hil_with(tmp_path, **{"step_s = 1.0": "step_s = 0.5"}), tmp_path / "o4", port=23999)


def test_start_date_time_default_toml_and_text_and_no_time_zone(tmp_path: Path) -> None:
    scenario, _ = load_scenario(_write(tmp_path, 'name = "s"\n' + GOOD_LDA))
    assert scenario.start.isoformat() == "2026-07-20T00:00:00"
    native = 'name = "s"\nstart = 2027-01-05T06:30:00\nhours = 72\n' + GOOD_LDA
    scenario, _ = load_scenario(_write(tmp_path, native))
    assert scenario.start.isoformat() == "2027-01-05T06:30:00" and scenario.n_intervals == 864
    scenario, _ = load_scenario(
        _write(tmp_path, 'name = "s"\nstart = "2027-01-05T06:30"\n' + GOOD_LDA)
    )
    assert scenario.start.hour == 6
    with pytest.raises(ScenarioError, match="start: .*without a time zone"):
        load_scenario(_write(tmp_path, 'name = "s"\nstart = 2027-01-05T06:30:00Z\n' + GOOD_LDA))


def test_transmission_events_are_validated_in_the_scenario_and_at_build(tmp_path: Path) -> None:
    from dsosim.runner.build.federation import build

    event = '\n[[transmission.events]]\nkind = "generator_outage"\nstart_hour = 1\nend_hour = 2\n'
    with pytest.raises(ScenarioError, match=r"transmission\.events\.0.*needs gen"):
        load_scenario(_scenario_with(tmp_path, **{"[[ldas]]": event + "\n[[ldas]]"}))
    bad = event + "gen = 7\n"
    with pytest.raises(
        ScenarioError, match=r"transmission\.events\[0\]\.gen: 7 is not a generator"
    ):
        build(
            _scenario_with(tmp_path, **{"[[ldas]]": bad + "\n[[ldas]]"}), tmp_path / "o", port=23999
        )


def test_day_ahead_section_checked(tmp_path: Path) -> None:
    ok = 'name = "s"\n[day_ahead]\nenabled = true\n' + GOOD_LDA
    scenario, _ = load_scenario(_write(tmp_path, ok))
    assert scenario.day_ahead.enabled and scenario.day_ahead.period_minutes == 60
    bad_period = 'name = "s"\n[day_ahead]\nenabled = true\nperiod_minutes = 50\n' + GOOD_LDA
    with pytest.raises(ScenarioError, match="period_minutes must divide a day"):
        load_scenario(_write(tmp_path, bad_period))
    not_midnight = 'name = "s"\nstart = 2026-07-20T06:00:00\n[day_ahead]\nenabled = true\n'
    with pytest.raises(ScenarioError, match="must start at midnight"):
        load_scenario(_write(tmp_path, not_midnight + GOOD_LDA))
    gate = 'name = "s"\n[day_ahead]\nenabled = true\ngate_closure_hours = 14\n'
    scenario, _ = load_scenario(_write(tmp_path, gate + GOOD_LDA))
    assert scenario.day_ahead.gate_closure_hours == 14
    odd_gate = 'name = "s"\n[day_ahead]\nenabled = true\ngate_closure_hours = 0.1\n'
    with pytest.raises(ScenarioError, match=r"gate_closure_hours \(0.1\) must be a whole number"):
        load_scenario(_write(tmp_path, odd_gate + GOOD_LDA))
    late_gate = 'name = "s"\n[day_ahead]\nenabled = true\ngate_closure_hours = 24\n'
    with pytest.raises(ScenarioError, match="gate_closure_hours"):
        load_scenario(_write(tmp_path, late_gate + GOOD_LDA))
    two_settlement = SCENARIOS_DIR / "two-settlement.toml"
    scenario, _ = load_scenario(two_settlement)
    assert scenario.hours == 72 and scenario.day_ahead.enabled


def test_start_must_fall_on_an_interval_and_start_hour_moves_it(tmp_path: Path) -> None:
    from dsosim.runner.build.federation import build

    off = 'name = "s"\nstart = 2027-01-05T06:32:00\n' + GOOD_LDA
    with pytest.raises(ScenarioError, match=r"start: 06:32:00 is not a whole number of 5-minute"):
        load_scenario(_write(tmp_path, off))
    built = build(QUICKSTART, tmp_path / "o", start_hour=17.5, hours=1.0, port=23999)
    time = built.config.time
    assert time.start.isoformat() == "2026-07-20T17:30:00" and time.start_s == 63_000.0
    assert time.timestamp(12).isoformat() == "2026-07-20T18:30:00"
    for bad, match in ((24.0, r"--start-hour must be in \[0, 24\)"), (1.01, "not a whole number")):
        with pytest.raises(ScenarioError, match=match):
            build(QUICKSTART, tmp_path / "o2", start_hour=bad, port=23999)
    with pytest.raises(ScenarioError, match="must start at midnight"):
        build(SCENARIOS_DIR / "two-settlement.toml", tmp_path / "o3", start_hour=6, port=23999)
