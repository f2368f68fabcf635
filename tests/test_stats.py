"""The interval estimates of purejaxppo.stats: by hand, against scipy on expanded samples, by
simulated coverage, and against rliable's own functions (figures recorded below)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from purejaxppo import stats


def test_iqm_mean_median_by_hand():
    # 8 runs: cut 2 from each end, the mean of 3, 4, 5, 6.
    assert stats.iqm(np.array([8.0, 1, 7, 2, 6, 3, 5, 4])) == 4.5
    # 5 runs: floor(5/4) = 1 cut from each end: mean of 0, 0, 10.
    assert stats.iqm(np.array([100.0, 0, 10, 0, -50])) == pytest.approx(10 / 3)
    # 3 runs: nothing cut.
    assert stats.iqm(np.array([1.0, 2, 6])) == 3.0
    e = stats.interval_estimates(np.array([1.0, 2, 6, 7]), reps=10)
    assert e["mean"].point == 4.0 and e["median"].point == 4.0 and e["iqm"].point == 4.0
    # Two tasks of unequal size: the mean is of task means, IQM and median pool the runs.
    tasks = [np.array([0.0, 1.0]), np.array([10.0, 20.0, 30.0, 40.0])]
    e = stats.interval_estimates(tasks, reps=10)
    assert e["mean"].point == pytest.approx((0.5 + 25.0) / 2)
    assert e["median"].point == 15.0  # pooled 0, 1, 10, 20, 30, 40
    assert e["iqm"].point == pytest.approx(61 / 4)  # floor(6/4) = 1 cut: 1, 10, 20, 30
    assert stats.iqm(tasks) == e["iqm"].point
    # [runs, tasks] is the same as one array per column.
    grid = np.array([[0.0, 10.0], [1.0, 20.0]])
    assert stats.iqm(grid) == stats.iqm([grid[:, 0], grid[:, 1]])


def test_weighted_statistics_equal_the_expanded_resample():
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 9, 16):
        x = np.round(rng.normal(size=n), 1)  # ties included
        counts = stats.resample_counts(rng, n, 50)
        assert (counts.sum(1) == n).all()
        pooled = stats.pool([x], [counts])
        for b in range(50):
            sample = np.repeat(x, counts[b])
            assert stats.trimmed_mean(pooled)[b] == pytest.approx(
                scipy.stats.trim_mean(sample, 0.25)
            )
            assert stats.weighted_median(pooled)[b] == pytest.approx(np.median(sample))
            assert pooled.task_means[b, 0] == pytest.approx(sample.mean())


def test_resampling_is_uniform_over_runs():
    counts = stats.resample_counts(np.random.default_rng(0), 10, 20000)
    # Each run is drawn 10 * 20000 / 10 times on average, with binomial spread.
    np.testing.assert_allclose(counts.mean(0), 1.0, atol=0.03)
    np.testing.assert_allclose(counts.var(0), 0.9, atol=0.05)  # n p (1 - p)


def test_bootstrap_intervals_cover_the_true_value_at_about_the_nominal_rate():
    # 400 synthetic sweeps of 20 seeds (and of 2 tasks x 10 seeds) from a normal distribution,
    # whose mean, median and IQM are all its center, 0. A 95% percentile bootstrap interval on
    # 20 runs covers somewhat less than 95%; we accept 0.90 to 0.98 (the standard error of a
    # coverage from 400 trials is about 0.011). Fixed seed: the figure is the same every run.
    rng = np.random.default_rng(12345)
    trials = 400
    hits = {name: 0 for name in stats.AGGREGATES}
    hits_stratified = dict(hits)
    widths = []
    for t in range(trials):
        data = rng.normal(size=20)
        e = stats.interval_estimates(data, reps=1000, seed=t)
        for name, est in e.items():
            hits[name] += est.low <= 0.0 <= est.high
        widths.append(e["mean"].high - e["mean"].low)
        two = [rng.normal(loc=0.0, size=10), rng.normal(loc=0.0, size=10)]
        for name, est in stats.interval_estimates(two, reps=1000, seed=t).items():
            hits_stratified[name] += est.low <= 0.0 <= est.high
    for name in stats.AGGREGATES:
        assert 0.90 <= hits[name] / trials <= 0.98, (name, hits[name] / trials)
        assert 0.90 <= hits_stratified[name] / trials <= 0.98, (name, hits_stratified)
    # And the interval is about as wide as the normal theory's 2 * 1.96 / sqrt(20) = 0.88.
    assert 0.75 < np.mean(widths) < 0.92


def test_probability_of_improvement():
    a = np.random.default_rng(0).normal(size=16)
    same = stats.probability_of_improvement(a, a)
    assert same.point == 0.5 and same.low < 0.5 < same.high
    # By hand: x = 1, 2, 3 against y = 2, 2: of 6 pairs, 3 > 2 twice and 2 = 2 twice.
    assert stats.probability_of_improvement([1.0, 2, 3], [2.0, 2], reps=10).point == 0.5
    # x = 3, 4 against y = 1, 2, 3: 5 wins and one tie of 6 pairs.
    assert stats.probability_of_improvement([3.0, 4], [1.0, 2, 3], reps=10).point == 5.5 / 6
    assert stats.probability_of_improvement([5.0, 6], [1.0, 2], reps=10) == (1.0, 1.0, 1.0)
    # Against the Mann-Whitney U statistic, with ties, and P(X > Y) + P(Y > X) = 1.
    rng = np.random.default_rng(1)
    for _ in range(20):
        x, y = rng.integers(0, 5, 7).astype(float), rng.integers(0, 5, 9).astype(float)
        u = scipy.stats.mannwhitneyu(x, y, alternative="greater").statistic / (7 * 9)
        p = stats.probability_of_improvement(x, y, reps=10).point
        assert p == pytest.approx(u)
        assert p + stats.probability_of_improvement(y, x, reps=10).point == pytest.approx(1.0)
    # Two tasks: the average of the per-task probabilities.
    both = stats.probability_of_improvement([[3.0, 4], [0.0]], [[1.0, 2, 3], [1.0]], reps=10)
    assert both.point == pytest.approx((5.5 / 6 + 0.0) / 2)


def test_performance_profile_by_hand():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    point, low, high = stats.performance_profile(x, [-1.0, 0.0, 1.5, 3.0], reps=500)
    np.testing.assert_allclose(point, [1.0, 0.75, 0.5, 0.0])
    assert (low <= point + 1e-12).all() and (point <= high + 1e-12).all()
    assert low[0] == high[0] == 1.0 and low[-1] == high[-1] == 0.0
    # Two tasks: the average of the per-task fractions.
    point, _, _ = stats.performance_profile([np.array([0.0, 2.0]), np.array([1.0])], [0.5], 10)
    np.testing.assert_allclose(point, [(0.5 + 1.0) / 2])


def test_curve_estimates_band_each_point():
    runs = np.array([[0.0, 1.0, 2.0], [0.0, 3.0, 2.0], [0.0, 5.0, 2.0]])
    point, low, high = stats.curve_estimates([runs], reps=200, aggregate="mean")
    np.testing.assert_allclose(point, [0.0, 3.0, 2.0])
    assert low[0] == high[0] == 0.0 and low[2] == high[2] == 2.0
    assert 1.0 <= low[1] < 3.0 < high[1] <= 5.0


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        stats.interval_estimates(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="no runs"):
        stats.interval_estimates([np.array([1.0]), np.array([])])
    with pytest.raises(ValueError, match="tasks"):
        stats.probability_of_improvement([[1.0], [2.0]], [[1.0]])


# rliable 1.2.0 (with arch 7.2.0, numpy 2.4.6, pandas 2.x), run once in a throwaway venv on the
# arrays below: aggregate_iqm, aggregate_mean, probability_of_improvement and
# create_performance_profile, and get_interval_estimates / create_performance_profile's 95%
# percentile intervals (50000 replicates for the aggregates, 20000 for the others). The points
# must match to rounding; the intervals, both Monte Carlo, to 2% of the data's range.
RLIABLE_A = np.array(
    [[0.12, 0.80, 1.30], [0.45, 0.95, 0.70], [0.33, 0.20, 1.10], [0.90, 0.60, 0.95],
     [0.05, 0.75, 1.45], [0.61, 0.88, 0.40], [0.27, 0.51, 1.02], [0.74, 0.99, 0.85]]
)  # fmt: skip
RLIABLE_B = np.array(
    [[0.10, 0.70, 1.00], [0.20, 0.65, 0.90], [0.35, 0.40, 0.80], [0.50, 0.72, 1.20],
     [0.15, 0.30, 0.60], [0.44, 0.58, 0.75]]
)  # fmt: skip
RLIABLE_C = np.array([3.0, 7, 1, 9, 4, 4, 8, 2, 6, 5, 10, 0])[:, None]
RLIABLE = {
    # name: (iqm, iqm interval, mean, mean interval)
    "A": (0.7283333333333334, (0.575, 0.85), 0.7050000000000001, (0.5925, 0.8166666667)),
    "B": (0.5690000000000001, (0.478, 0.645), 0.5744444444444444, (0.4988888889, 0.6516666667)),
    "C": (4.833333333333333, (2.6666666667, 7.1666666667), 4.916666666666667, (3.25, 6.6666666667)),
}
RLIABLE_POI_A_OVER_B = (0.6597222222222222, (0.4861111111, 0.8263888889))
RLIABLE_PROFILE_TAUS = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
RLIABLE_PROFILE_A = (
    [1.0, 0.875, 0.7083333333, 0.4583333333, 0.1666666667, 0.0833333333],
    [1.0, 0.75, 0.5416666667, 0.2916666667, 0.0416666667, 0.0],
    [1.0, 1.0, 0.875, 0.625, 0.2916666667, 0.2083333333],
)


@pytest.mark.parametrize("name", ["A", "B", "C"])
def test_matches_rliable(name):
    scores = {"A": RLIABLE_A, "B": RLIABLE_B, "C": RLIABLE_C}[name]
    iqm, iqm_ci, mean, mean_ci = RLIABLE[name]
    tol = 0.02 * (scores.max() - scores.min())
    e = stats.interval_estimates(scores, reps=50000, seed=0)
    assert e["iqm"].point == pytest.approx(iqm, abs=1e-12)
    assert e["mean"].point == pytest.approx(mean, abs=1e-12)
    np.testing.assert_allclose([e["iqm"].low, e["iqm"].high], iqm_ci, atol=tol)
    np.testing.assert_allclose([e["mean"].low, e["mean"].high], mean_ci, atol=tol)


def test_matches_rliable_improvement_and_profile():
    p = stats.probability_of_improvement(RLIABLE_A, RLIABLE_B, reps=20000)
    assert p.point == pytest.approx(RLIABLE_POI_A_OVER_B[0], abs=1e-12)
    np.testing.assert_allclose([p.low, p.high], RLIABLE_POI_A_OVER_B[1], atol=0.02)
    point, low, high = stats.performance_profile(RLIABLE_A, RLIABLE_PROFILE_TAUS, reps=20000)
    np.testing.assert_allclose(point, RLIABLE_PROFILE_A[0], atol=1e-9)
    np.testing.assert_allclose(low, RLIABLE_PROFILE_A[1], atol=0.02)
    np.testing.assert_allclose(high, RLIABLE_PROFILE_A[2], atol=0.02)
