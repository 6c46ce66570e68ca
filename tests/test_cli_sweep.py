"""Every ``dsosim`` command on bad inputs: a short message and a non-zero exit
code, never a Python traceback (issue 13). The launcher's own faults (signals,
stalls, locks) have their sweep elsewhere; this one is about what the user
types and the files they point at.

Commands run in this process through ``dsosim.runner.cli.main`` (the console
script's entry point), so the sweep stays fast; one case goes through the real
console script to check the entry point itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dsosim.runner.cli import COMMANDS, main
from dsosim.runner.cli.errors import LOG_NAME, report_unexpected

GARBAGE = bytes(range(256)) * 4


def _files(tmp: Path) -> dict[str, Path]:
    """A zoo of bad inputs, written once per test."""
    tmp.mkdir(parents=True, exist_ok=True)
    made = {
        "missing": tmp / "no-such-file.toml",
        "empty_toml": tmp / "empty.toml",
        "garbage_toml": tmp / "garbage.toml",
        "binary": tmp / "binary.toml",
        "wrong_types": tmp / "wrong-types.toml",
        "unknown_feeder": tmp / "unknown-feeder.toml",
        "bad_dss_scenario": tmp / "bad-dss.toml",
        "bad_dss": tmp / "bad.dss",
        "empty_dss": tmp / "empty.dss",
        "no_circuit_dss": tmp / "nocircuit.dss",
        "binary_dss": tmp / "binary.dss",
        "garbage_m": tmp / "garbage.m",
        "a_dir": tmp / "a-folder",
        "a_file": tmp / "a-file.txt",
    }
    made["empty_toml"].write_text("")
    made["garbage_toml"].write_text("this is [not toml = = \n[[[\n")
    made["binary"].write_bytes(GARBAGE)
    made["wrong_types"].write_text('name = 5\nhours = "many"\n[transmission]\ncase = 7\n')
    made["unknown_feeder"].write_text(
        'name = "x"\n[transmission]\ncase = "case9"\n'
        '[[ldas]]\nname = "a"\nfeeder = "nowhere/Master.dss"\ntd_bus = 5\n'
    )
    made["bad_dss"].write_text(
        "New Circuit.c basekv=12.47\nNew Line.l1 bus1=a bus2=b linecode=zz\n"
    )
    made["empty_dss"].write_text("")
    made["no_circuit_dss"].write_text("! nothing but a comment\nSet voltagebases=[12.47]\n")
    made["binary_dss"].write_bytes(GARBAGE)
    made["bad_dss_scenario"].write_text(
        'name = "x"\n[transmission]\ncase = "case9"\n'
        f'[[ldas]]\nname = "a"\nfeeder = "{made["bad_dss"].name}"\ntd_bus = 5\n'
    )
    made["garbage_m"].write_text("function mpc = garbage\nmpc.bus = [1 2 3; 4 5];\n")
    made["a_dir"].mkdir(exist_ok=True)
    made["a_file"].write_text("not a folder\n")
    return made


def _cases(f: dict[str, Path], tmp: Path) -> list[list[str]]:
    out = str(tmp / "out")
    scenario_inputs = [
        "missing",
        "empty_toml",
        "garbage_toml",
        "binary",
        "wrong_types",
        "unknown_feeder",
        "bad_dss_scenario",
        "a_dir",
    ]
    cases: list[list[str]] = []
    for key in scenario_inputs:
        cases.append(["run", str(f[key]), "--out", out, "--quiet"])
        cases.append(["build", str(f[key]), "--out", out])
        cases.append(["compare", str(f[key]), "--out", out, "--hours", "0.5"])
    cases.append(["run", str(f["wrong_types"]), "--out", str(f["a_file"])])
    cases.append(["build", str(f["unknown_feeder"]), "--out", str(f["a_file"])])
    quickstart = str(Path(__file__).resolve().parents[1] / "configs/scenarios/quickstart.toml")
    for key in ("missing", "garbage_toml", "a_dir", "wrong_types"):
        cases.append(["build", quickstart, "--hosts", str(f[key]), "--out", out])
    cases.append(["build", quickstart, "--processes", "-1", "--out", out])
    cases.append(["run", quickstart, "--processes", "-3", "--out", out, "--quiet"])
    for key in ("missing", "bad_dss", "empty_dss", "no_circuit_dss", "binary_dss", "a_dir"):
        path = str(f[key]).replace(".toml", ".dss")
        cases.append(["new-scenario", "--feeder", path, "--out", str(tmp / "s.toml"), "--force"])
    good = Path(__file__).resolve().parents[1] / "configs" / "feeders"
    masters = sorted(good.glob("**/*.dss"))
    if masters:
        m = str(masters[0])
        base = ["new-scenario", "--feeder", m, "--force"]
        cases += [
            [*base, "--out", str(tmp / "s.txt")],
            [*base, "--out", str(f["a_dir"])],
            [*base, "--out", str(f["a_file"] / "s.toml")],
            [*base, "--out", str(tmp / "s.toml"), "--case", "case_nope"],
            [*base, "--out", str(tmp / "s.toml"), "--case", str(f["garbage_m"])],
            [*base, "--out", str(tmp / "s.toml"), "--td-bus", "999"],
            [*base, "--out", str(tmp / "s.toml"), "--td-bus", "5", "--td-bus", "6"],
            [*base, "--out", str(tmp / "s.toml"), "--max-der-buses", "0"],
            [*base, "--out", str(tmp / "s.toml"), "--hours", "-1"],
            [*base, "--out", str(tmp / "s.toml"), "--interval-minutes", "0"],
            [*base, "--out", str(tmp / "s.toml"), "--name", "bad name!"],
        ]
    cases += [
        ["opf", "case_nope", "--out", str(tmp / "o.csv")],
        ["opf", str(f["garbage_m"]), "--out", str(tmp / "o.csv")],
        ["opf", str(f["a_dir"]), "--out", str(tmp / "o.csv")],
        ["opf", "case9", "--out", str(f["a_dir"])],
        ["opf", "case9", "--out", str(f["a_file"] / "o.csv")],
        ["opf", "case9", "--load-scale", "-5", "--out", str(tmp / "o.csv")],
        ["synth-feeder", "--buses", "0", "--out", str(tmp / "sf")],
        ["synth-feeder", "--buses", "-3", "--out", str(tmp / "sf")],
        ["synth-feeder", "--buses", "20", "--out", str(f["a_file"])],
        ["synth-feeder", "--buses", "20", "--out", str(f["a_file"] / "x")],
        ["synth-feeder", "--buses", "20", "--pv", "-1", "--out", str(tmp / "sf")],
        ["hil-keys", str(f["a_file"]), "--name", "gateway"],
        ["hil-keys", str(f["a_file"] / "k"), "--name", "gateway"],
        ["hil-device", "--connect", "not an address", "--device", "d1"],
        ["hil-device", "--connect", "tcp://127.0.0.1:1", "--device", "d1", "--log", "/nope/x.csv"],
        ["hil-device", "--connect", "tcp://127.0.0.1:1", "--device", "d1", "--efficiency", "7"],
        [
            "hil-device",
            "--connect",
            "tcp://127.0.0.1:1",
            "--device",
            "d1",
            "--curve-server-key",
            str(f["binary"]),
            "--curve-key",
            str(f["binary"]),
        ],
        ["bench", "opf", "--cases", "case_nope", "--repeats", "1", "--intervals", "1"],
        ["bench", "opf", "--cases", str(f["garbage_m"]), "--repeats", "1", "--intervals", "1"],
        ["bench", "da", "--case", "case_nope"],
        ["bench", "da", "--periods", "0"],
        ["bench", "da", "--case", "case9", "--bids", "50"],
        ["bench", "ders", "--devices", "-5", "--intervals", "1"],
        ["bench", "ders", "--buses", "0", "--intervals", "1"],
        ["bench", "hil", "--seconds", "-1", "--out", str(f["a_file"])],
        ["bench", "scale", "--ldas", "0"],
        ["bench", "scale", "--ldas", "one,two"],
        ["bench", "scale", "--ldas", "1", "--hours", "0"],
        ["bench", "scale", "--ldas", "9", "--hours", "0.1"],
        ["bench", "scale", "--ldas", "1", "--scenario", str(f["garbage_toml"])],
        ["bench", "phases", "--hours", "0"],
        ["bench", "phases", "--cores", "0"],
        ["bench", "phases", "--hours", "0.1", "--scenario", str(f["garbage_toml"])],
        ["bench", "feeder", "--buses", "5"],
        ["bench", "feeder", "--buses", "1000", "--der-buses", "0"],
        ["bench", "feeder", "--buses", "1000", "--intervals", "0"],
        ["bench", "lda", "--repeats", "0"],
        ["bench", "lda", "--hours", "0.1", "--scenario", str(f["garbage_toml"])],
    ]
    run_dir = tmp / "a-run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "federation.json").write_text("{not json")
    cases += [
        ["replay", str(tmp / "no-such-run"), "--quiet"],
        ["replay", str(f["a_file"]), "--quiet"],
        ["replay", str(f["a_dir"]), "--quiet"],
        ["replay", str(run_dir), "--quiet"],
    ]
    return cases


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_every_command_is_in_the_sweep(tmp_path: Path) -> None:
    """A new command joins the sweep: the sweep lists every registered one."""
    swept = {argv[0] for argv in _cases(_files(tmp_path), tmp_path)}
    assert swept == set(COMMANDS), f"commands not swept: {set(COMMANDS) - swept}"


def test_no_command_prints_a_traceback_on_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _files(tmp_path / "in")
    monkeypatch.chdir(tmp_path)  # default output folders (runs/...) land here
    problems: list[str] = []
    for argv in _cases(files, tmp_path):
        code, text = _run(argv, capsys)
        if "Traceback" in text:
            problems.append(f"dsosim {' '.join(argv)} printed a traceback:\n{text[-1500:]}")
        elif code == 0:
            problems.append(f"dsosim {' '.join(argv)} accepted a bad input (exit 0):\n{text}")
        elif not text.strip():
            problems.append(f"dsosim {' '.join(argv)} failed (exit {code}) without a word")
        elif "unexpected error" in text:
            # caught at the top, but a bad input deserves a message of its own
            problems.append(f"dsosim {' '.join(argv)} hit the last-resort handler:\n{text}")
    assert not problems, "\n\n".join(problems)


def test_an_unexpected_error_is_a_short_account_with_a_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A defect deep inside a command: exit code 1, the command, its input,
    where it happened and the log file with the full traceback."""
    import dsosim.runner.cli.synth_feeder as command

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr(command, "generate_feeder", broken)
    out = tmp_path / "feeder"
    code, text = _run(["synth-feeder", "--buses", "20", "--out", str(out)], capsys)
    assert code == 1
    assert "Traceback" not in text
    assert "dsosim synth-feeder: unexpected error: RuntimeError: something nobody foresaw" in text
    assert "second line" not in text
    log = out / LOG_NAME
    assert f"full traceback: {log}" in text
    assert "in: synth_feeder.handle (line" in text  # the innermost frame of dsosim
    body = log.read_text()
    assert "Traceback (most recent call last)" in body and "second line" in body


def test_without_an_output_folder_the_log_goes_to_a_temporary_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse
    import io

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    stream = io.StringIO()
    try:
        raise KeyError("lda_x")
    except KeyError as exc:
        code = report_unexpected(
            "run", argparse.Namespace(scenario="my.toml"), ["run", "my.toml"], exc, stream
        )
    text = stream.getvalue()
    assert code == 1
    assert "input: my.toml" in text and "KeyError: 'lda_x'" in text
    logs = list(tmp_path.glob("dsosim-error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in text


def test_the_console_script_reports_without_a_traceback(tmp_path: Path) -> None:
    """The installed entry point, in a process of its own."""
    script = Path(sys.executable).parent / "dsosim"
    if not script.is_file():
        pytest.skip(f"no dsosim console script next to {sys.executable} (not pip-installed)")
    done = subprocess.run(
        [str(script), "run", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    assert "nope.toml" in done.stderr
