"""Bootstrap rank intervals: wider with fewer respondents, deterministic, honest about noise."""

from __future__ import annotations

import numpy as np
import pytest

from gridwatch.targeting.ranking import (
    Sample,
    period_rng,
    rank_intervals,
    replicate_scores,
)

TRUE_SCORES = np.linspace(84.0, 95.0, 12)


def _samples(n: int, seed: int = 3) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [Sample((rng.random(n) < p / 100).astype(float), np.ones(n)) for p in TRUE_SCORES]


def _intervals(n: int, seed: int = 3, replicates: int = 400):
    samples = _samples(n, seed)
    scores = [s.estimate() for s in samples]
    reps = replicate_scores(
        scores, samples, [None] * len(samples), replicates, period_rng(1, "2026Q3")
    )
    return scores, rank_intervals(scores, reps, bottom_n=5)


def test_rank_intervals_widen_with_fewer_respondents():
    _, few = _intervals(30)
    _, many = _intervals(1500)
    width_few = (few["rank_worst"] - few["rank_best"]).mean()
    width_many = (many["rank_worst"] - many["rank_best"]).mean()
    assert width_few > 2 * width_many
    # every interval contains its point rank
    for summary in (few, many):
        assert (summary["rank_best"] <= summary["rank"]).all()
        assert (summary["rank"] <= summary["rank_worst"]).all()


def test_bootstrap_is_deterministic_for_a_seed_and_period():
    samples = _samples(50)
    scores = [s.estimate() for s in samples]
    args = (scores, samples, [None] * 12, 200)
    a = replicate_scores(*args, period_rng(7, "2026Q3"))
    b = replicate_scores(*args, period_rng(7, "2026Q3"))
    c = replicate_scores(*args, period_rng(7, "2026Q2"))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_replicates_are_centred_on_the_score_of_record():
    sample = Sample(np.array([1.0] * 80 + [0.0] * 20), np.ones(100))
    reps = replicate_scores([91.0], [sample], [None], 2000, period_rng(1, "x"))
    # the published 91 % is the centre; the respondents (80 %) only supply the spread
    assert reps.mean() == pytest.approx(91.0, abs=0.3)
    assert reps.std() == pytest.approx(np.sqrt(0.8 * 0.2 / 100) * 100, rel=0.15)


def test_binomial_replicates_when_only_the_respondent_count_is_known():
    reps = replicate_scores(
        [85.0, 85.0, 85.0], [None] * 3, [40, 4000, None], 2000, period_rng(1, "x")
    )
    assert reps[:, 0].std() > 5 * reps[:, 1].std()
    assert (reps[:, 2] == 85.0).all()  # nothing known: no spread


def test_a_clear_outlier_is_bottom_beyond_the_noise_and_a_close_call_is_not():
    scores = [70.0, 89.0, 89.2, 89.4, 89.6, 89.8, 90.0, 90.2, 90.4, 90.6]
    samples = []
    rng = np.random.default_rng(5)
    for s in scores:
        samples.append(Sample((rng.random(300) < s / 100).astype(float), np.ones(300)))
    reps = replicate_scores(scores, samples, [None] * 10, 500, period_rng(2, "2026Q3"))
    summary = rank_intervals(scores, reps, bottom_n=5)
    bottom_start = len(scores) - 5 + 1
    assert summary["rank"][0] == 10 and summary["rank_best"][0] >= bottom_start
    assert summary["bottom_probability"][0] == pytest.approx(1.0)
    # the 5th from the bottom is a coin toss with its neighbours
    fifth = int(np.flatnonzero(summary["rank"] == bottom_start)[0])
    assert summary["rank_best"][fifth] < bottom_start
    assert 0.1 < summary["bottom_probability"][fifth] < 0.9
