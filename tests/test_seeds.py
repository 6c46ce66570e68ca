"""Statistics of a comparison over several seeds (``runner.analysis.seeds``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dsosim.runner.analysis.seeds import aggregate, seed_list, t_interval, with_intervals


def test_interval_of_a_hand_worked_sample() -> None:
    # 1..5: mean 3, sd sqrt(2.5); t(0.975, 4) = 2.776 (printed tables);
    # half width 2.776 * 1.5811 / sqrt(5) = 1.9632
    mean, half = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == pytest.approx(3.0)
    assert half == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5), rel=2e-4)


def test_interval_covers_the_true_mean_95_percent_of_the_time() -> None:
    # A known spread: N(10, 2) draws, 5 "seeds" per comparison, 4000 comparisons.
    rng = np.random.default_rng(2024)
    hits = 0
    trials = 4000
    for _ in range(trials):
        mean, half = t_interval(rng.normal(10.0, 2.0, 5).tolist())
        hits += abs(mean - 10.0) <= half
    # binomial sd of the coverage: sqrt(0.95 * 0.05 / 4000) = 0.0034; 4 sd either side
    assert abs(hits / trials - 0.95) < 4 * 0.0034
    # a z-interval (1.96 instead of t) would under-cover with 5 seeds: ~0.88
    z_hits = 0
    for _ in range(trials):
        x = rng.normal(10.0, 2.0, 5)
        z_hits += abs(x.mean() - 10.0) <= 1.96 * x.std(ddof=1) / math.sqrt(5)
    assert z_hits / trials < 0.92


def test_degenerate_samples() -> None:
    assert t_interval([4.0, 4.0, 4.0]) == (4.0, 0.0)
    mean, half = t_interval([7.0])
    assert mean == 7.0 and math.isnan(half)
    mean, half = t_interval([1.0, float("nan"), 3.0])  # a failed run is left out
    assert mean == 2.0 and half == pytest.approx(12.706 * math.sqrt(2) / math.sqrt(2), rel=1e-4)


def test_aggregate_per_model() -> None:
    runs = pd.DataFrame(
        {
            "model": ["1", "1", "1", "3", "3", "3"],
            "seed": [11, 12, 13, 11, 12, 13],
            "title": ["TSO only"] * 3 + ["distribution node"] * 3,
            "complete": [True, True, True, True, False, True],
            "voltage_violations": [204, 180, 228, 0, 0, 0],
            "total_cost": [10.0, 12.0, 14.0, 9.0, 9.5, 10.0],
        }
    )
    t = aggregate(runs).set_index("model")
    assert list(t.index) == ["1", "3"]
    assert t.loc["1", "seeds"] == 3 and t.loc["1", "complete"] and not t.loc["3", "complete"]
    assert t.loc["1", "title"] == "TSO only"
    assert t.loc["1", "voltage_violations"] == pytest.approx(204.0)
    half = 4.303 * 24.0 / math.sqrt(3)  # t(0.975, 2) = 4.303, sd = 24
    assert t.loc["1", "voltage_violations_lo"] == pytest.approx(204.0 - half, rel=1e-3)
    assert t.loc["1", "voltage_violations_hi"] == pytest.approx(204.0 + half, rel=1e-3)
    assert t.loc["3", "voltage_violations_lo"] == t.loc["3", "voltage_violations_hi"] == 0.0
    assert "seed_lo" not in t.columns
    text = with_intervals(t, ["total_cost", "title"])
    assert (
        text.loc["1", "total_cost"] == "12 [7.032, 16.97]" and text.loc["1", "title"] == "TSO only"
    )


def test_seed_list() -> None:
    assert seed_list(11, 5) == [11, 12, 13, 14, 15]
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        seed_list(11, 0)
