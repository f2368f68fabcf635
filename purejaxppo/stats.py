"""Interval estimates for comparing sweeps, after Agarwal et al. 2021 ("Deep RL at the Edge of
the Statistical Precipice"): the interquartile mean (IQM), mean and median of run scores with
stratified-bootstrap confidence intervals, the probability of improvement, and performance
profiles. Plain vectorized numpy, no JAX: it runs on a sweep's results after training.

Scores are a list of 1-D arrays, one per task (the strata); the runs of a task are its seeds,
and tasks may have different numbers of runs. A single 1-D array is one task; a 2-D array is
[runs, tasks], the layout rliable uses.

- mean:   the mean over tasks of each task's mean over runs.
- median: the median of all runs pooled over tasks (rliable's median is of the per-task means,
          which for one task is the mean; the pooled median is the one that says something
          about a single-task sweep).
- IQM:    the mean of the middle half of all runs pooled over tasks: floor(n/4) runs are cut
          from each end, as scipy.stats.trim_mean(x, 0.25) does.

Every bootstrap replicate resamples, within each task, as many runs as the task has, with
replacement. A replicate is kept as counts (how often each run was drawn), so every statistic
is a weighted sum over the runs sorted once, with no sort per replicate: 2000 replicates of
1024 runs take milliseconds. Intervals are percentile intervals of the replicates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

AGGREGATES = ("iqm", "mean", "median")
DEFAULT_REPS = 2000
DEFAULT_CONFIDENCE = 0.95


class Estimate(NamedTuple):
    """A point estimate with its confidence interval."""

    point: float
    low: float
    high: float

    def rounded(self, digits: int = 4) -> list[float]:
        return [round(float(x), digits) for x in self]

    def __str__(self) -> str:
        return f"{self.point:.4g} [{self.low:.4g}, {self.high:.4g}]"


def as_tasks(scores: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """The scores as one float64 array of runs per task; refuses empty tasks and non-finite
    values (a diverged run is the caller's to leave out and count)."""
    if isinstance(scores, np.ndarray) and scores.ndim == 2:
        tasks = [scores[:, t] for t in range(scores.shape[1])]
    elif isinstance(scores, np.ndarray) or (len(scores) > 0 and np.ndim(scores[0]) == 0):
        tasks = [np.asarray(scores)]
    else:
        tasks = list(scores)
    out = []
    for t, x in enumerate(tasks):
        x = np.asarray(x, np.float64).ravel()
        if x.size == 0:
            raise ValueError(f"task {t} has no runs")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"task {t} has non-finite scores; leave diverged runs out")
        out.append(x)
    if not out:
        raise ValueError("no tasks")
    return out


def forward_fill(x: np.ndarray) -> np.ndarray:
    """NaN (updates in which no episode ended) replaced by the last value before it, along the
    last axis; leading NaN stay."""
    x = np.array(x, np.float64)
    idx = np.where(np.isnan(x), 0, np.arange(x.shape[-1]))
    np.maximum.accumulate(idx, axis=-1, out=idx)
    return np.take_along_axis(x, idx, axis=-1)


def resample_counts(rng: np.random.Generator, n: int, reps: int) -> np.ndarray:
    """[reps, n] int counts: how often each of n runs is drawn in n draws with replacement."""
    draws = rng.integers(0, n, size=(reps, n)) + (np.arange(reps) * n)[:, None]
    counts = np.bincount(draws.ravel(), minlength=reps * n).reshape(reps, n)
    return counts.astype(np.int32)


class Pooled(NamedTuple):
    """All runs of all tasks sorted once, with per-replicate weights in the same order."""

    values: np.ndarray  # [N] ascending
    weights: np.ndarray  # [B, N] int counts; each row sums to N
    upto: np.ndarray  # [B, N] their running sum
    task_means: np.ndarray  # [B, T] each task's (weighted) mean


def pool(tasks: list[np.ndarray], counts: list[np.ndarray]) -> Pooled:
    values = np.concatenate(tasks)
    order = np.argsort(values, kind="stable")
    weights = np.concatenate(counts, axis=-1) if len(tasks) > 1 else counts[0]
    weights = np.take(weights, order, axis=1)  # (much faster than weights[:, order])
    task_means = np.stack([c @ x / x.size for x, c in zip(tasks, counts, strict=True)], -1)
    upto = np.cumsum(weights, axis=-1, dtype=np.int32)  # (int64 by default: 7x slower)
    return Pooled(values[order], weights, upto, task_means)


def trimmed_mean(p: Pooled, cut: float = 0.25) -> np.ndarray:
    """Mean of each weighted sorted sample with floor(cut * n) values cut from each end."""
    n = p.values.size
    g = int(cut * n)
    kept = np.minimum(p.upto, n - g) - np.maximum(p.upto - p.weights, g)
    return np.maximum(kept, 0) @ p.values / (n - 2 * g)


def weighted_median(p: Pooled) -> np.ndarray:
    """np.median of each sample in which values[i] appears weights[..., i] times."""
    n = p.values.size
    lo = (p.upto <= (n - 1) // 2).sum(-1)  # index of the sorted sample's middle value(s)
    hi = (p.upto <= n // 2).sum(-1)
    return (p.values[lo] + p.values[hi]) / 2


def aggregates(p: Pooled) -> dict[str, np.ndarray]:
    """IQM, mean and median of each replicate (row of the weights)."""
    return {name: one_aggregate(p, name) for name in AGGREGATES}


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    return low, high


def interval_estimates(
    scores: np.ndarray | Sequence[np.ndarray],
    reps: int = DEFAULT_REPS,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, Estimate]:
    """{'iqm', 'mean', 'median'} -> Estimate, intervals by stratified bootstrap over runs."""
    tasks = as_tasks(scores)
    rng = np.random.default_rng(seed)
    ones = [np.ones((1, x.size), np.int32) for x in tasks]
    point = aggregates(pool(tasks, ones))
    boot = aggregates(pool(tasks, [resample_counts(rng, x.size, reps) for x in tasks]))
    out = {}
    for name in AGGREGATES:
        low, high = percentile_interval(boot[name], confidence)
        out[name] = Estimate(float(point[name][0]), float(low), float(high))
    return out


def iqm(scores: np.ndarray | Sequence[np.ndarray]) -> float:
    tasks = as_tasks(scores)
    return float(aggregates(pool(tasks, [np.ones((1, x.size), np.int32) for x in tasks]))["iqm"][0])


# ---------------------------------------------------------------------------------------------
# Probability of improvement.
# ---------------------------------------------------------------------------------------------


def _wins(x: np.ndarray, wx: np.ndarray, y: np.ndarray, wy: np.ndarray) -> np.ndarray:
    """For each replicate: sum over pairs (i, j) of wx_i wy_j S(x_i, y_j) / (n m), where S is 1
    if x_i > y_j, 1/2 if equal, 0 if less (the Mann-Whitney U statistic over n m)."""
    order = np.argsort(x, kind="stable")
    xs, wx = x[order], wx[:, order]
    before = np.concatenate([np.zeros((wx.shape[0], 1)), np.cumsum(wx, axis=-1)], axis=-1)
    below = before[:, np.searchsorted(xs, y, "left")]  # weight of x < y_j
    upto = before[:, np.searchsorted(xs, y, "right")]  # weight of x <= y_j
    score = (before[:, -1:] - upto) + 0.5 * (upto - below)  # [B, m]
    return (score * wy).sum(-1) / (x.size * y.size)


def probability_of_improvement(
    scores_x: np.ndarray | Sequence[np.ndarray],
    scores_y: np.ndarray | Sequence[np.ndarray],
    reps: int = DEFAULT_REPS,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """P(X > Y): the chance that a run of X scores above a run of Y on the same task (ties
    count half), averaged over tasks; X and Y are resampled independently within each task."""
    xs, ys = as_tasks(scores_x), as_tasks(scores_y)
    if len(xs) != len(ys):
        raise ValueError(f"X has {len(xs)} tasks and Y {len(ys)}")
    rng = np.random.default_rng(seed)
    point = np.mean([_wins(x, np.ones((1, x.size)), y, np.ones((1, y.size)))[0]
                     for x, y in zip(xs, ys, strict=True)])  # fmt: skip
    boot = np.mean(
        [
            _wins(x, resample_counts(rng, x.size, reps), y, resample_counts(rng, y.size, reps))
            for x, y in zip(xs, ys, strict=True)
        ],
        axis=0,
    )
    low, high = percentile_interval(boot, confidence)
    return Estimate(float(point), float(low), float(high))


# ---------------------------------------------------------------------------------------------
# Performance profiles and curves.
# ---------------------------------------------------------------------------------------------


def _fraction_above(x: np.ndarray, w: np.ndarray, taus: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    xs, w = x[order], w[:, order]
    before = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w, axis=-1)], axis=-1)
    return 1 - before[:, np.searchsorted(xs, taus, "right")] / x.size


def performance_profile(
    scores: np.ndarray | Sequence[np.ndarray],
    taus: np.ndarray,
    reps: int = DEFAULT_REPS,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fraction of runs scoring above each tau (averaged over tasks): point, low, high."""
    tasks = as_tasks(scores)
    taus = np.asarray(taus, np.float64)
    rng = np.random.default_rng(seed)
    point = np.mean([_fraction_above(x, np.ones((1, x.size)), taus)[0] for x in tasks], axis=0)
    boot = np.mean(
        [_fraction_above(x, resample_counts(rng, x.size, reps), taus) for x in tasks], axis=0
    )
    low, high = percentile_interval(boot, confidence)
    return point, low, high


def curve_estimates(
    curves: Sequence[np.ndarray],
    reps: int = DEFAULT_REPS,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    aggregate: str = "iqm",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An aggregate learning curve: curves[t] is task t's [runs, points] scores; at each point
    the aggregate over runs (stratified by task) with its interval. The same replicates serve
    every point, so the band is a band of whole resampled sets of runs."""
    curves = [np.asarray(c, np.float64) for c in curves]
    rng = np.random.default_rng(seed)
    counts = [resample_counts(rng, c.shape[0], reps) for c in curves]
    ones = [np.ones((1, c.shape[0]), np.int32) for c in curves]
    points = curves[0].shape[1]
    out = np.empty((3, points))
    for k in range(points):
        tasks = [c[:, k] for c in curves]
        out[0, k] = one_aggregate(pool(tasks, ones), aggregate)[0]
        out[1:, k] = percentile_interval(one_aggregate(pool(tasks, counts), aggregate), confidence)
    return out[0], out[1], out[2]


def one_aggregate(p: Pooled, name: str) -> np.ndarray:
    if name == "iqm":
        return trimmed_mean(p)
    return p.task_means.mean(-1) if name == "mean" else weighted_median(p)


# ---------------------------------------------------------------------------------------------
# Naming settings.
# ---------------------------------------------------------------------------------------------


def setting_labels(
    fields: Sequence[str], settings: Sequence[dict[str, float]], sep: str = ", "
) -> list[str]:
    """'field=value' text of each setting of a grid or random search, unique by construction:
    values print at 6 significant digits; settings that differ but would read alike (two draws
    of a random search can agree in 6 digits) print at more, up to the shortest text that
    round-trips; a setting equal to another (a search drawing a listed value twice) ends in
    '#' and its index."""

    def text(setting: dict[str, float], digits: int | None) -> str:
        return sep.join(
            f"{k}={setting[k]:.{digits}g}" if digits else f"{k}={float(setting[k])!r}"
            for k in fields
        )

    keys = [tuple(float(s[k]) for k in fields) for s in settings]
    labels = [text(s, 6) for s in settings]
    for digits in (8, 10, 12, None):
        shared: dict[str, set[tuple[float, ...]]] = {}
        for label, key in zip(labels, keys, strict=True):
            shared.setdefault(label, set()).add(key)
        clash = {label for label, held in shared.items() if len(held) > 1}
        if not clash:
            break
        labels = [
            text(s, digits) if label in clash else label
            for label, s in zip(labels, settings, strict=True)
        ]
    count = Counter(labels)
    return [f"{label} #{h}" if count[label] > 1 else label for h, label in enumerate(labels)]
