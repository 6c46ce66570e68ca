"""``dsosim replay RUN_DIR [--out DIR]``: rerun a recorded HIL run as a pure simulation.

A hardware-in-the-loop run records what every device answered (the
``hil_answers`` table). The replay rebuilds the run's federation as it was
(same ``federation.json``: scenario, seed, fleets, time settings) but not in
real time and with the HIL gateway playing the recorded answers back instead
of serving devices (``federates/hil/replay.py``). Plausibility checks,
fallbacks and every federate downstream then see what they saw in the
real-time run, and the results come out the same, deterministically (the
``realtime`` table aside: a replay has no wall clock).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from dsosim.federates.common.config import FederationConfig, load_federation
from dsosim.runner.build.federation import (
    FEDERATION_FILE,
    RUNNER_FILE,
    BuildResult,
    free_port,
    runner_spec,
)
from dsosim.runner.launch import build_and_launch

DESCRIPTION = __doc__


class ReplayError(ValueError):
    """RUN_DIR cannot be replayed; the message says why."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder of a HIL run (its federation.json)")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/replay)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def replay_config(run_dir: Path, out: Path, port: int) -> FederationConfig:
    """The recorded run's federation, made a replay: no real time, a new
    broker port, the gateway playing back ``hil_answers`` (as many intervals
    as were recorded)."""
    path = run_dir / FEDERATION_FILE
    if not path.is_file():
        raise ReplayError(f"{path} not found: RUN_DIR must be the folder of a run")
    try:
        config, base = load_federation(path)
    except (ValueError, ValidationError, OSError) as exc:
        raise ReplayError(f"{path}: {exc}") from None
    if config.hil is None:
        raise ReplayError(f"{path}: not a hardware-in-the-loop run (no [hil]); nothing to replay")
    if config.hil.replay is not None:
        raise ReplayError(f"{path} is itself a replay; replay the recorded run instead")
    relative = [d.feeder for d in config.dsos if not Path(d.feeder).is_absolute()]
    if relative and base.resolve() != out.resolve():
        raise ReplayError(
            f"{path} has paths relative to its folder ({relative[0]}); replay it with "
            f"--out {run_dir} or rebuild the run with dsosim run"
        )
    recorded = (base / config.recorder.results_dir).resolve()
    answers = recorded / "hil_answers"
    if not answers.is_dir():
        raise ReplayError(
            f"{answers} not found: the run recorded no device answers (recording came "
            f"with HIL protocol v2 and the plausibility checks)"
        )
    import pandas as pd

    intervals = int(pd.read_parquet(answers, columns=["interval"])["interval"].max()) + 1
    helics = config.helics.model_copy(
        update={
            "broker_address": f"tcp://127.0.0.1:{port}",
            "broker_port": port,
            "broker_key": f"dsosim-replay-{config.name}-{port}",
            "real_time": False,
            "max_cosim_duration_s": 3600,
        }
    )
    hil = config.hil.model_copy(update={"replay": str(recorded), "wait_s": 0.0})
    time = config.time.model_copy(update={"n_intervals": min(intervals, config.time.n_intervals)})
    return config.model_copy(update={"helics": helics, "hil": hil, "time": time})


def build_replay(run_dir: str | Path, out: str | Path, port: int | None = None) -> BuildResult:
    """Write the replay's ``federation.json`` and ``runner.json`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = replay_config(Path(run_dir), out, port or free_port())
    federation = out / FEDERATION_FILE
    federation.write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
    runner = out / RUNNER_FILE
    runner.write_text(json.dumps(runner_spec(config, sys.executable), indent=2) + "\n")
    return BuildResult(runner, federation, out / config.recorder.results_dir, config)


def handle(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "replay"
    try:
        built = build_replay(run_dir, out)
    except (ReplayError, OSError) as exc:
        print(f"dsosim replay: {exc}", file=sys.stderr)
        return 2
    n = built.config.time.n_intervals
    print(f"replaying {built.config.name}: {n} intervals from {run_dir}", flush=True)

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            print(f"  {done}/{total} intervals", flush=True)

    first = [built]
    built, outcome = build_and_launch(
        lambda: first.pop() if first else build_replay(run_dir, out), on_progress=progress
    )
    if not outcome.ok:
        print(f"dsosim replay: FAILED\n{outcome.failure}", file=sys.stderr)
        print(f"results written so far (marked incomplete): {built.results_dir}", file=sys.stderr)
        return 1
    print(f"done in {outcome.wall_s:.1f} s; results in {built.results_dir}")
    return 0
