"""Population-based training (Jaderberg et al. 2017) inside the compiled program.

The population is the sweep's runs (settings x seeds, one flat run axis). Every `every` updates
the runs are scored on the return of the episodes that ended since the previous step; the bottom
`fraction` (and every diverged run) copy the whole training state of a run drawn uniformly from
the top `fraction` (exploit: parameters, optimizer state, normalizer statistics, KL coefficient
and step-size scale, and the environments with their running episodes, so the copy goes on where
its parent is), keeping only their own random key; then each evolved hyperparameter of a copy
is its parent's times a factor drawn from `factors`, or, with probability `resample`, a fresh
draw from the sweep's distribution for that field (explore), clipped to the field's limits.

All of it is a pure function of the population's state, hyperparameters, the interval's metrics
and a key (`pbt_step`), so it runs inside the jitted advance over a sharded run axis: copying a
run from another device is a gather that XLA turns into the collective it needs. `make_advance`
is the advance program with PBT steps in it; the lineage comes out as per-update metrics:
`pbt_parent` (the run copied at that update, the run itself where none) and `pbt_<field>` (the
run's value of each evolved field after that update), and `lineage` turns a folder's history into
metrics.npz's per-step arrays and summary.json's section.

Scoring order (lowest first, so replaced first): diverged runs (a non-finite parameter or loss
in the interval), then runs with no finished episode in the interval, then by score; ties keep
the run order. Padding runs (a device multiple) never take part.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.ppo import HPARAM_LIMITS, HParams, TrainState
from purejaxppo.sweep import Draw

PARENT = "pbt_parent"  # metric: the run copied at this update (the run itself where none)
PREFIX = "pbt_"  # metric pbt_<field>: the run's value of an evolved field after this update
STREAM = 0x9B7  # folded into the sweep's seed: PBT's keys are a stream of their own


@dataclasses.dataclass(frozen=True)
class PBTOptions:
    """How the population evolves. `space`: the evolved fields and how a resample draws each
    (a Draw, or a tuple of values to choose from): the sweep's traced fields."""

    every: int
    fraction: float = 0.25
    factors: tuple[float, ...] = (0.8, 1.25)
    resample: float = 0.25
    space: tuple[tuple[str, Draw | tuple[float, ...]], ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.space)

    def replaced(self, population: int) -> int:
        """Runs replaced at each step (at least; diverged runs beyond these are replaced too)."""
        return int(math.floor(self.fraction * population))

    def check_population(self, population: int) -> None:
        check_options(self, population)

    def record(self) -> dict[str, Any]:
        """config.json's "pbt" entry."""
        return {
            "every": self.every,
            "fraction": self.fraction,
            "factors": list(self.factors),
            "resample": self.resample,
            "space": {
                name: (spec._asdict() if isinstance(spec, Draw) else list(spec))
                for name, spec in self.space
            },
        }

    @classmethod
    def from_record(cls, raw: Any) -> PBTOptions:
        """The inverse of record(), checked; raises ValueError naming what is wrong."""
        if not isinstance(raw, dict) or set(raw) != {
            "every", "fraction", "factors", "resample", "space"
        }:  # fmt: skip
            raise ValueError(f"pbt must hold every, fraction, factors, resample, space: {raw!r}")
        space = []
        for name, spec in dict(raw["space"]).items():
            if isinstance(spec, dict):
                space.append(
                    (name, Draw(str(spec["kind"]), float(spec["low"]), float(spec["high"])))
                )
            else:
                space.append((name, tuple(float(v) for v in spec)))
        options = cls(
            every=raw["every"],
            fraction=raw["fraction"],
            factors=tuple(float(f) for f in raw["factors"]),
            resample=raw["resample"],
            space=tuple(space),
        )
        check_options(options)
        return options


def check_options(options: PBTOptions, population: int | None = None) -> None:
    """Raise ValueError naming the field (as its command-line flag) where an option is out of
    range; with `population`, also where a step would replace no run."""
    every, fraction, resample = options.every, options.fraction, options.resample
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"--pbt-every must be an integer >= 1, got {every!r}")
    if not 0 < fraction <= 0.5:
        raise ValueError(f"--pbt-fraction must lie in (0, 0.5], got {fraction}")
    if not options.factors or not all(math.isfinite(f) and f > 0 for f in options.factors):
        raise ValueError(
            f"--pbt-perturb must be positive factors, e.g. 0.8,1.25; got {list(options.factors)}"
        )
    if not 0 <= resample <= 1:
        raise ValueError(f"--pbt-resample must lie in [0, 1], got {resample}")
    if not options.space:
        raise ValueError(
            "--pbt-every evolves the --sweep fields: sweep at least one traced field "
            "(e.g. --sweep learning_rate=loguniform:1e-4:1e-2 --samples 8)"
        )
    for name, spec in options.space:
        if name not in HPARAM_LIMITS:
            raise ValueError(
                f"--pbt-every evolves traced fields only ({', '.join(HPARAM_LIMITS)}); "
                f"{name!r} changes the compiled program"
            )
        if isinstance(spec, Draw):
            if spec.kind not in ("uniform", "loguniform") or not spec.low < spec.high:
                raise ValueError(f"the PBT space of {name!r} is not a distribution: {spec}")
            if spec.kind == "loguniform" and spec.low <= 0:
                raise ValueError(f"the PBT space of {name!r} needs 0 < low: {spec}")
        elif not spec:
            raise ValueError(f"the PBT space of {name!r} is empty")
    if population is not None and options.replaced(population) < 1:
        raise ValueError(
            f"--pbt-fraction {fraction:g} of a population of {population} runs replaces none; "
            f"use at least {math.ceil(1 / fraction)} runs (--samples/--sweep x --num-seeds)"
        )


# ---------------------------------------------------------------------------------------------
# Pure pieces: score, select, copy, explore. Arrays are over the population axis [R].
# ---------------------------------------------------------------------------------------------


def member_scores(metrics: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """(score, diverged), each [R], from an interval's per-update metrics [R, K]: the
    episode-weighted mean return of the episodes that ended in it (NaN where none did), and
    whether the run went non-finite in it."""
    counts = metrics["episodes"].astype(jnp.float32)
    total = jnp.sum(
        jnp.where(counts > 0, jnp.nan_to_num(metrics["episode_return"]) * counts, 0.0), -1
    )
    n = counts.sum(-1)
    score = jnp.where(n > 0, total / jnp.maximum(n, 1.0), jnp.nan)
    diverged = jnp.any(metrics["finite"] == 0, axis=-1)
    return score, diverged


def rank_key(score: jax.Array, diverged: jax.Array, valid: jax.Array) -> jax.Array:
    """A key to sort runs from the first to replace to the best: diverged (-inf), no episode
    (the lowest float), then by score; padding (not valid) after all (+inf)."""
    floor = jnp.finfo(jnp.float32).min
    key = jnp.where(jnp.isfinite(score), score, floor)
    key = jnp.where(diverged, -jnp.inf, key)
    return jnp.where(valid, key, jnp.inf)


def select_parents(
    score: jax.Array, diverged: jax.Array, population: int, fraction: float, key: jax.Array
) -> jax.Array:
    """Truncation selection over the first `population` runs of [R]: the bottom `fraction` of
    them, and every diverged one outside the top `fraction`, each copy a run drawn uniformly
    from the top `fraction`. Returns the parent of each run [R] int32 (itself where kept)."""
    size = score.shape[0]
    m = int(math.floor(fraction * population))
    index = jnp.arange(size, dtype=jnp.int32)
    if m < 1:
        return index
    valid = index < population
    order = jnp.argsort(rank_key(score, diverged, valid), stable=True).astype(jnp.int32)
    position = jnp.zeros(size, jnp.int32).at[order].set(index)  # rank of each run, 0 = worst
    top = order[population - m : population]
    replaced = valid & (position < population - m) & ((position < m) | diverged)
    # Drawn for the population only: the same draws however many padding runs follow.
    chosen = pad(top[jax.random.randint(key, (population,), 0, m)], size)
    return jnp.where(replaced, chosen, index)


def pad(x: jax.Array, size: int) -> jax.Array:
    """x [n, ...] with zeros after it to [size, ...]."""
    return jnp.concatenate([x, jnp.zeros((size - x.shape[0], *x.shape[1:]), x.dtype)])


def copy_members(state: TrainState, parent: jax.Array) -> TrainState:
    """Each run takes its parent's whole training state, except its own random key."""
    copied = jax.tree.map(lambda x: x[parent], state)
    return copied._replace(key=state.key, update=state.update)


def draw(spec: Draw | tuple[float, ...], key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Values of one field drawn as a random search draws it (sweep.random_search), float32."""
    if isinstance(spec, Draw):
        if spec.kind == "uniform":
            return jax.random.uniform(key, shape, jnp.float32, spec.low, spec.high)
        log = jax.random.uniform(key, shape, jnp.float32, math.log(spec.low), math.log(spec.high))
        return jnp.exp(log)
    values = jnp.asarray(spec, jnp.float32)
    return values[jax.random.randint(key, shape, 0, len(spec))]


def explore(
    hparams: HParams, parent: jax.Array, population: int, options: PBTOptions, key: jax.Array
) -> HParams:
    """The runs whose parent is another run take the parent's evolved fields, each times a
    factor from options.factors or, with probability options.resample, a fresh draw; clipped
    to HPARAM_LIMITS. The other runs and the other fields stay as they are. Draws are made for
    the first `population` runs (the padding after them never moves)."""
    size = parent.shape[0]
    moved = parent != jnp.arange(size, dtype=parent.dtype)
    factors = jnp.asarray(options.factors, jnp.float32)
    changes = {}
    for i, (name, spec) in enumerate(options.space):
        k_choice, k_factor, k_draw = jax.random.split(jax.random.fold_in(key, i), 3)
        inherited = getattr(hparams, name)[parent]
        factor = pad(factors[jax.random.randint(k_factor, (population,), 0, len(factors))], size)
        resampled = pad(jax.random.uniform(k_choice, (population,)) < options.resample, size)
        value = jnp.where(
            resampled, pad(draw(spec, k_draw, (population,)), size), inherited * factor
        )
        low, high = HPARAM_LIMITS[name]
        value = jnp.clip(value, low, high)
        changes[name] = jnp.where(moved, value, getattr(hparams, name))
    return hparams.replace(**changes)


def pbt_step(
    state: TrainState,
    hparams: HParams,
    metrics: dict[str, jax.Array],
    population: int,
    options: PBTOptions,
    key: jax.Array,
) -> tuple[TrainState, HParams, jax.Array]:
    """One exploit/explore step of the population from its last interval's metrics [R, K];
    returns (state, hparams, parent [R])."""
    k_select, k_explore = jax.random.split(key)
    score, diverged = member_scores(metrics)
    parent = select_parents(score, diverged, population, options.fraction, k_select)
    new_hparams = explore(hparams, parent, population, options, k_explore)
    return copy_members(state, parent), new_hparams, parent


def step_key(seed: int, update: jax.Array) -> jax.Array:
    """The key of the PBT step after `update` updates: the same on any device count and on a
    resume, and apart from the runs' own keys."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), STREAM), update)


def make_advance(
    update: Callable[[TrainState, HParams], tuple[TrainState, dict[str, jax.Array]]],
    num_updates: int,
    population: int,
    seed: int,
    options: PBTOptions,
) -> Callable[[TrainState, HParams, int], tuple[TrainState, dict[str, jax.Array]]]:
    """advance(state [R], hparams [R], length) -> (state, metrics [R, length]): `length`
    updates of every run, with a PBT step after each update count that is a multiple of
    options.every and below num_updates. Called only from a multiple of options.every (the
    driver cuts its chunks there), so the steps fall at the same updates however the run is
    cut. The metrics carry the lineage (PARENT, PREFIX + field)."""
    every, fields = options.every, options.fields

    def updates(state: TrainState, hparams: HParams, length: int):
        def one_run(s: TrainState, hp: HParams):
            return jax.lax.scan(lambda c, _: update(c, hp), s, None, length=length)

        return jax.vmap(one_run)(state, hparams)  # metrics [R, length]

    def lineage_columns(
        parent: jax.Array, hparams: HParams, length: int, last: jax.Array | None
    ) -> dict[str, jax.Array]:
        own = jnp.arange(parent.shape[0], dtype=jnp.int32)
        cols = jnp.broadcast_to(own[:, None], (own.shape[0], length))
        if last is not None:
            cols = cols.at[:, -1].set(last)
        out = {PARENT: cols}
        for name in fields:
            out[PREFIX + name] = jnp.broadcast_to(
                getattr(hparams, name)[:, None], (own.shape[0], length)
            )
        return out

    def interval(carry: tuple[TrainState, HParams], _: None):
        state, hparams = carry
        state, metrics = updates(state, hparams, every)
        done = state.update[0]

        def step(args):
            s, hp = args
            return pbt_step(s, hp, metrics, population, options, step_key(seed, done))

        def keep(args):
            s, hp = args
            return s, hp, jnp.arange(s.update.shape[0], dtype=jnp.int32)

        state, hparams_after, parent = jax.lax.cond(
            done < num_updates, step, keep, (state, hparams)
        )
        lineage = lineage_columns(parent, hparams, every, parent)
        for name in fields:  # after the step, at the interval's last update
            lineage[PREFIX + name] = (
                lineage[PREFIX + name].at[:, -1].set(getattr(hparams_after, name))
            )
        return (state, hparams_after), {**metrics, **lineage}

    def advance(state: TrainState, hparams: HParams, length: int):
        steps, tail = divmod(length, every)
        parts = []
        if steps:
            (state, hparams), stacked = jax.lax.scan(interval, (state, hparams), None, steps)
            # [steps, R, every] -> [R, steps * every]
            parts.append(
                jax.tree.map(
                    lambda x: jnp.moveaxis(x, 0, 1).reshape(x.shape[1], steps * every), stacked
                )
            )
        if tail:  # the run's last updates, after its last PBT step
            state, metrics = updates(state, hparams, tail)
            parent = jnp.arange(state.update.shape[0], dtype=jnp.int32)
            parts.append({**metrics, **lineage_columns(parent, hparams, tail, None)})
        metrics = {k: jnp.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}
        return state, metrics

    return advance


# ---------------------------------------------------------------------------------------------
# Reading the lineage back: metrics.npz's per-step arrays and summary.json's section.
# ---------------------------------------------------------------------------------------------


def step_updates(num_updates: int, every: int) -> np.ndarray:
    """The update counts after which a PBT step ran: every multiple of `every` below the end."""
    return np.arange(every, num_updates, every, dtype=np.int64)


class Lineage(NamedTuple):
    updates: np.ndarray  # [P] update count after which each step ran
    parent: np.ndarray  # [R, P] flat run index each run copied at each step (itself where kept)
    hparams: np.ndarray  # [R, P, F] each run's evolved fields after each step


def lineage(history: dict[str, np.ndarray], fields: Sequence[str], every: int) -> Lineage:
    """The per-step lineage from a run's per-update history (each metric [R, U])."""
    updates = step_updates(history[PARENT].shape[1], every)
    cols = updates - 1
    parent = history[PARENT][:, cols].astype(np.int64)
    hp = np.stack([history[PREFIX + f][:, cols] for f in fields], axis=-1).astype(np.float64)
    return Lineage(updates, parent, hp.reshape(parent.shape[0], len(updates), len(fields)))


def ancestry(parent: np.ndarray, run: int) -> np.ndarray:
    """The run whose state `run` carries during each interval [P + 1]: walking back from the
    end, at each step where a copy happened the line continues in the parent. Entry i is the
    run that trained interval i (before step i); the last entry is `run` itself."""
    steps = parent.shape[1]
    line = np.empty(steps + 1, np.int64)
    line[steps] = run
    for p in range(steps - 1, -1, -1):
        line[p] = parent[line[p + 1], p]
    return line


def schedule(lin: Lineage, initial: np.ndarray, run: int) -> np.ndarray:
    """The evolved fields the final state of `run` was trained with, interval by interval
    [P + 1, F]: interval i's values are those its trainer along the ancestry held after step
    i - 1 (the first interval: that run's initial values, `initial` [R, F])."""
    line = ancestry(lin.parent, run)
    out = np.empty((len(line), lin.hparams.shape[-1]), np.float64)
    out[0] = initial[line[0]]
    for i in range(1, len(line)):
        out[i] = lin.hparams[line[i], i - 1]
    return out


SCORE = (
    "the episode-weighted mean return of the episodes that ended in the --pbt-every updates "
    "since the previous step (diverged runs lowest, then runs with no finished episode)"
)


def summary_section(
    options: PBTOptions,
    history: dict[str, np.ndarray],
    initial: np.ndarray,
    finals: np.ndarray,
    kept: np.ndarray,
    num_seeds: int,
) -> dict[str, Any]:
    """summary.json's "pbt": the options, the steps, the best run's line and schedule, the
    population's final values. history: each metric [R, U]; initial: the runs' starting values
    of the evolved fields [R, F]; finals: final_return [R]; kept: runs not diverged [R]."""
    fields = options.fields
    lin = lineage(history, fields, options.every)
    own = np.arange(lin.parent.shape[0])[:, None]
    candidates = np.flatnonzero(kept & np.isfinite(finals))
    section: dict[str, Any] = {
        **options.record(),
        "score": SCORE,
        "total_updates": int(history[PARENT].shape[1]),
        "step_updates": lin.updates.tolist(),
        "replaced_per_step": (lin.parent != own).sum(0).tolist(),
    }
    if candidates.size:
        best = int(candidates[np.argmax(finals[candidates])])
        values = schedule(lin, initial, best)
        section["best"] = {
            "run": best,
            "setting": best // num_seeds,
            "seed": best % num_seeds,
            "final_return": round(float(finals[best]), 3),
            "interval_starts": [0, *lin.updates.tolist()],
            "ancestry": ancestry(lin.parent, best).tolist(),
            "schedule": {f: [float(v) for v in values[:, i]] for i, f in enumerate(fields)},
        }
        last = np.stack([history[PREFIX + f][candidates, -1] for f in fields], -1)
        section["final_values"] = {
            f: {
                "min": float(last[:, i].min()),
                "median": float(np.median(last[:, i])),
                "max": float(last[:, i].max()),
            }
            for i, f in enumerate(fields)
        }
    return section


def schedule_figure(
    runs: Sequence[tuple[str, dict[str, Any], dict[str, np.ndarray] | None, int]],
) -> bytes:
    """PNG: one panel per evolved field; per (label, summary section, history or None, batch
    size): the best run's schedule along its ancestry (bold), and every run's own value per
    update (thin) where the history is given. x in env steps per run."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields = sorted({f for _, sec, _, _ in runs for f in sec["best"]["schedule"]})
    cols = min(3, len(fields))
    rows = -(-len(fields) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.3 * rows), dpi=110, squeeze=False)
    for ax in axes.flat[len(fields) :]:
        ax.set_visible(False)
    for ax, field in zip(axes.flat, fields, strict=False):
        for label, sec, history, batch in runs:
            best = sec["best"]
            if field not in best["schedule"]:
                continue
            if history is not None:
                values = history[PREFIX + field]
                x = (np.arange(values.shape[1]) + 1) * batch
                for row in values:
                    ax.step(x, row, where="post", color="0.6", lw=0.5, alpha=0.5)
            starts = np.asarray(best["interval_starts"]) * batch
            ys = best["schedule"][field]
            ax.step(
                np.append(starts, sec["total_updates"] * batch),
                [*ys, ys[-1]],
                where="post",
                lw=2,
                label=f"{label} best run {best['run']} ({best['final_return']:g})",
            )
        ax.set_yscale("log" if field == "learning_rate" else "linear")
        ax.set_xlabel("environment steps per run")
        ax.set_title(field)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("PBT: the best run's hyperparameters along its ancestry (thin: every run)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
