"""A small version of the simulation that validates the analysis plan (analysis/simulate.py, docs/analysis.md): the
primary test's verdicts keep their error rates and its intervals their coverage on planted paired studies, and it
finds under heavy tails what the t-test cannot."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lstm_odyssey.analysis.simulate import CASES, DELTA, simulate

REPLICATES = 200


def bound(rate: float) -> float:
    """The goal plus three binomial standard errors at this many replicates (a rate at the goal passes)."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / REPLICATES)


@pytest.fixture(scope="module")
def table():
    return simulate(REPLICATES, pairs=50, seed=1).set_index(["case", "test"])


@pytest.mark.slow
def test_false_verdicts_stay_below_five_percent_and_intervals_cover(table):
    assert (table["false_rate"] <= bound(0.05)).all(), table["false_rate"]
    margin = 3 * math.sqrt(0.95 * 0.05 / REPLICATES)
    assert ((table["coverage"] - 0.95).abs() <= margin).all(), table["coverage"]


def test_a_tight_null_is_supported_and_a_two_delta_harm_contradicted(table):
    assert table.loc[("null (0)", "rank"), "supported"] > 0.8
    assert table.loc[("harm (2δ)", "rank"), "contradicted"] > 0.8


def test_under_heavy_tails_the_rank_test_keeps_power_the_t_test_loses(table):
    rank, t = table.loc[("harm (2δ), heavy tails", "rank")], table.loc[("harm (2δ), heavy tails", "t")]
    assert rank["power"] > t["power"] + 0.2
    assert rank["ci_width"] < t["ci_width"] / 3


def test_the_cases_plant_what_they_say():
    rng = np.random.default_rng(0)
    for case in CASES:
        d = np.concatenate([case.draw(rng, 50) for _ in range(400)])
        assert abs(np.median(d) - case.effect) < 0.01  # symmetric noise around the planted effect
        tail = np.mean(np.abs(d - case.effect) > 1.0)
        assert (0.15 < tail < 0.3) if case.heavy else tail == 0
    assert {c.effect for c in CASES} == {0.0, DELTA / 2, 2 * DELTA}
