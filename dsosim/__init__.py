"""dsosim from Python (notebooks, scripts): read a scenario, run it, load its results.

>>> import dsosim
>>> scenario = dsosim.Scenario.from_toml("configs/scenarios/quickstart.toml")
>>> results = dsosim.run(scenario, hours=2)            # or dsosim.load_results("runs/quickstart")
>>> results["interface"].plot(x="timestamp", y="lmp")   # every table is a DataFrame

Only this API lives here; the simulator is ``dsosim.federates`` (the roles and
their federates) and ``dsosim.runner`` (the ``dsosim`` command). Importing
``dsosim`` loads neither, nor pandas: they load when first used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from dsosim.runner.build.scenario import Scenario as ScenarioSpec

__all__ = ["Results", "RunFailed", "Scenario", "__version__", "load_results", "run"]


def __getattr__(name: str) -> str:
    """``dsosim.__version__``, read from the installed metadata when asked
    (importlib.metadata would slow every ``dsosim`` command's start)."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("dsosim")
        except PackageNotFoundError:  # a source tree that is not installed
            return "0+unknown"
    raise AttributeError(f"module 'dsosim' has no attribute {name!r}")


SUMMARY = "summary.json"


class Results(Mapping[str, "pd.DataFrame"]):
    """A run's result tables, read from disk when first asked for.

    ``results["market"]`` is the ``market`` table as a DataFrame (every table
    with an ``interval`` column also has its ``timestamp``); ``list(results)``
    names the tables on disk; ``results.summary`` is ``summary.json`` (the
    headline figures, ``complete`` false if the run stopped early).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._cache: dict[str, pd.DataFrame] = {}

    @property
    def summary(self) -> dict[str, Any]:
        path = self.folder / SUMMARY
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def complete(self) -> bool:
        return bool(self.summary.get("complete", False))

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(
            sorted(p.name for p in self.folder.iterdir() if p.is_dir() and any(p.glob("*.parquet")))
        )

    def __getitem__(self, table: str) -> pd.DataFrame:
        if table not in self._cache:
            if table not in self.tables:
                raise KeyError(f"{self.folder} has no table {table!r}; it has {list(self.tables)}")
            from dsosim.federates.recorder.summary import read_table

            self._cache[table] = read_table(self.folder, table)
        return self._cache[table]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tables)

    def __len__(self) -> int:
        return len(self.tables)

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return f"Results({str(self.folder)!r}, {state}, tables={list(self.tables)})"


def load_results(path: str | Path) -> Results:
    """The results of a run: ``path`` is the run's folder (``runs/<name>``,
    ``--out``) or its ``results`` folder, or a model's folder of a comparison
    (``<out>/model-3``)."""
    path = Path(path)
    for folder in (path / "results", path):
        if (folder / SUMMARY).is_file():
            return Results(folder)
    raise FileNotFoundError(
        f"{path}: no results here (expected {SUMMARY} in it or in {path / 'results'})"
    )


@dataclass(frozen=True)
class Scenario:
    """A scenario file, read and validated (``spec`` holds every setting; see
    docs/scenario.md). Relative paths in it are resolved against ``path``'s
    folder when it runs."""

    path: Path
    spec: ScenarioSpec

    @classmethod
    def from_toml(cls, path: str | Path) -> Scenario:
        """Read and validate; a bad file raises ``ScenarioError`` naming the
        field and what is wrong with it."""
        from dsosim.runner.build.scenario import load_scenario

        spec, _ = load_scenario(path)
        return cls(Path(path), spec)

    @property
    def name(self) -> str:
        return self.spec.name


class RunFailed(RuntimeError):
    """A run stopped before its end; ``results`` holds what was written so
    far (marked incomplete)."""

    def __init__(self, message: str, results: Results) -> None:
        super().__init__(message)
        self.results = results


def run(
    scenario: Scenario | str | Path,
    out: str | Path | None = None,
    *,
    model: str | None = None,
    hours: float | None = None,
    start_hour: float | None = None,
    timeout_s: float | None = None,
) -> Results:
    """Build and run a scenario's federation (as ``dsosim run`` does) and
    return its results. ``out`` defaults to ``runs/<scenario file stem>``;
    ``model``, ``hours`` and ``start_hour`` (an hour of the start date) override
    the scenario's. Raises
    :class:`RunFailed` if the federation stops early."""
    from dsosim.runner.build.federation import build
    from dsosim.runner.launch import build_and_launch

    path = scenario.path if isinstance(scenario, Scenario) else Path(scenario)
    out = Path(out) if out is not None else Path("runs") / path.stem
    options: dict[str, Any] = {} if timeout_s is None else {"timeout_s": timeout_s}
    built, outcome = build_and_launch(
        lambda: build(path, out, hours=hours, start_hour=start_hour, model=model), **options
    )
    results = Results(built.results_dir)
    if not outcome.ok:
        raise RunFailed(f"{path}: run failed: {outcome.failure}", results)
    return results
