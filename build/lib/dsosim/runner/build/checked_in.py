"""The runner files checked into ``configs/runs/``, and how to regenerate them.

Each entry is built with ``--portable`` (relative paths, ``python`` from the
activated environment) on a fixed broker port, so that from the repository
root ``helics run --path=configs/runs/<name>/runner.json`` launches it. A
test keeps them in sync with the generator; after a change that alters them,
run ``python -m dsosim.runner.build.checked_in`` from the repository root.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from dsosim.runner.build.federation import build
from dsosim.runner.build.models import MODEL_NAMES


@dataclass(frozen=True)
class CheckedIn:
    scenario: str
    out: str
    port: int
    model: str | None = None


RUNS: tuple[CheckedIn, ...] = (
    CheckedIn("configs/scenarios/quickstart.toml", "configs/runs/quickstart", 23710),
    *(
        CheckedIn(
            "configs/scenarios/tier-bypassing.toml",
            f"configs/runs/tier-bypassing/model-{m}",
            23720 + 2 * i,
            m,
        )
        for i, m in enumerate(MODEL_NAMES)
    ),
)


def regenerate(root: Path) -> list[Path]:
    """Rebuild every checked-in run under ``root`` (the repository root)."""
    written = []
    for run in RUNS:
        built = build(
            root / run.scenario, root / run.out, port=run.port, portable=True, model=run.model
        )
        written += [built.runner, built.federation]
    return written


if __name__ == "__main__":
    for path in regenerate(Path.cwd()):
        print(f"wrote {path}")
    sys.exit(0)
