"""The PPO paper's Table 1: surrogate objectives compared on seven continuous-control tasks.

Schulman et al. 2017 (arXiv:1707.06347), section 6.1, compare eleven settings of the policy
surrogate (no clipping or penalty; clipping with eps 0.1/0.2/0.3; adaptive KL penalty with d_targ
0.003/0.01/0.03; fixed KL penalty with beta 0.3/1/3/10) on seven MuJoCo tasks, three seeds each,
1M steps per run, with one set of hyperparameters (their Table 3). This script runs the same
sweep on the brax counterparts of those tasks:

    python benchmarks/objectives.py --protocol reduced            # about an hour on 2 CPU cores
    python benchmarks/objectives.py --protocol full               # 1M steps per run (a GPU)
    python benchmarks/objectives.py --protocol smoke --out /tmp/x # a few minutes; for a test
    python benchmarks/objectives.py --tasks hopper,reacher        # a subset of the tasks

`Config.objective` is static and everything else that varies is a traced `HParams` field, so each
task compiles one program per objective family (none, clip, kl_adaptive, kl_fixed) and trains
every setting x seed of that family in it, vmapped over one flat axis of runs.

Scores follow the paper: a run's score is the mean total reward of its last 100 episodes; per task
the scores are shifted and scaled so that a uniformly random policy scores 0 and the best setting
(mean over its seeds) scores 1; a setting's table entry is the mean over its 7 x 3 = 21 runs
(18 without swimmer, which runs only on an accelerator here: see SWIMMER).

Writes OUT/objectives.json (all numbers), OUT/objectives.md (the table beside the paper's) and
OUT/objectives_<task>.png (learning curves), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo import stats
from purejaxppo.envs import make_env
from purejaxppo.ppo import Config, HParams, last_episodes_return, make_train
from purejaxppo.presets import load_preset
from purejaxppo.sweep import Grid, layout_runs

# ---------------------------------------------------------------------------------------------
# The paper's settings and numbers.
# ---------------------------------------------------------------------------------------------


class Setting(NamedTuple):
    """One row of Table 1: an objective family and the traced fields that select the setting."""

    name: str  # short id used in the JSON and file names
    label: str  # the paper's row label
    objective: str  # Config.objective (static: one compiled program per family)
    hparams: dict[str, float]  # HParams fields changed from BASE_HPARAMS
    paper: float  # the paper's normalized score (Table 1)


SETTINGS: tuple[Setting, ...] = (
    Setting("none", "No clipping or penalty", "none", {}, -0.39),
    Setting("clip_0.1", "Clipping, eps = 0.1", "clip", {"clip_coef": 0.1}, 0.76),
    Setting("clip_0.2", "Clipping, eps = 0.2", "clip", {"clip_coef": 0.2}, 0.82),
    Setting("clip_0.3", "Clipping, eps = 0.3", "clip", {"clip_coef": 0.3}, 0.70),
    # Adaptive beta starts at 1 (kl_beta is its initial value).
    Setting(
        "kl_adaptive_0.003",
        "Adaptive KL, d_targ = 0.003",
        "kl_adaptive",
        {"kl_target": 0.003, "kl_beta": 1.0},
        0.68,
    ),
    Setting(
        "kl_adaptive_0.01",
        "Adaptive KL, d_targ = 0.01",
        "kl_adaptive",
        {"kl_target": 0.01, "kl_beta": 1.0},
        0.74,
    ),
    Setting(
        "kl_adaptive_0.03",
        "Adaptive KL, d_targ = 0.03",
        "kl_adaptive",
        {"kl_target": 0.03, "kl_beta": 1.0},
        0.71,
    ),
    Setting("kl_fixed_0.3", "Fixed KL, beta = 0.3", "kl_fixed", {"kl_beta": 0.3}, 0.62),
    Setting("kl_fixed_1", "Fixed KL, beta = 1", "kl_fixed", {"kl_beta": 1.0}, 0.71),
    Setting("kl_fixed_3", "Fixed KL, beta = 3", "kl_fixed", {"kl_beta": 3.0}, 0.72),
    Setting("kl_fixed_10", "Fixed KL, beta = 10", "kl_fixed", {"kl_beta": 10.0}, 0.69),
)

FAMILIES = ("none", "clip", "kl_adaptive", "kl_fixed")

# The brax counterparts of the paper's seven MuJoCo tasks (HalfCheetah, Hopper,
# InvertedDoublePendulum, InvertedPendulum, Reacher, Swimmer, Walker2d; all v1 in the paper).
TASKS = (
    "halfcheetah",
    "hopper",
    "inverted_double_pendulum",
    "inverted_pendulum",
    "reacher",
    "swimmer",
    "walker2d",
)

NUM_SEEDS = 3
LAST_EPISODES = 100  # the paper scores a run by its last 100 episodes
EPISODE_LENGTH = 1000  # brax's default time limit, as the paper's MuJoCo tasks

# The paper's MuJoCo hyperparameters (Table 3): one actor, horizon T = 2048, 10 epochs of
# minibatch 64 (2048 / 32), 64x64 tanh networks with a state-independent log-std (the package's
# ActorCritic), Adam 3e-4 without annealing, gamma 0.99, lambda 0.95, no entropy bonus, no value
# clipping. Departures and choices the paper leaves open:
#   - max_grad_norm = 1e9: the paper does not clip gradients; a norm this large never triggers.
#   - observations are normalized by running statistics, as in the paper's code (baselines'
#     ppo1 normalizes observations); the package clips them at 10 (ppo1: 5).
#   - rewards are scaled by a running std of the discounted return (the package's default for
#     continuous actions, not in ppo1). Advantages are standardized per minibatch anyway, so this
#     leaves the balance of surrogate and KL penalty alone and only eases the critic's fit: brax
#     returns reach hundreds to thousands, which a critic at Adam 3e-4 needs far more than a
#     reduced budget's updates to reach. It applies alike to every setting.
#   - advantages are standardized per minibatch (ppo1: per rollout).
#   - vf_coef 0.5: actor and critic share no parameters and Adam is invariant to a loss scale,
#     so it hardly matters.
# The settings are the `ppo-mujoco` preset's (one definition); the KL fields are the penalty
# settings' starting points.
_, _PAPER_CONFIG, _PAPER_HPARAMS = load_preset("ppo-mujoco")
BASE_CONFIG = {k: v for k, v in _PAPER_CONFIG.items() if k != "total_timesteps"}
BASE_HPARAMS = HParams(**_PAPER_HPARAMS, kl_beta=1.0, kl_target=0.01)

ROLLOUT = BASE_CONFIG["num_envs"] * BASE_CONFIG["num_steps"]  # 2048 steps per update
# 1M rounded up to whole rollouts: the paper's code stops at the first rollout past 1M steps.
PAPER_STEPS = 489 * ROLLOUT


# ---------------------------------------------------------------------------------------------
# Protocols: per task the brax backend and the environment steps of every run.
# ---------------------------------------------------------------------------------------------


class Budget(NamedTuple):
    backend: str  # brax pipeline (positional, spring), or "mjx" for swimmer's stand-in below
    steps: int  # environment steps per run, a multiple of ROLLOUT


# brax's swimmer exists only for the generalized pipeline (its fluid drag), and fails there on
# jax 0.10 (brax/fluid.py passes jnp.clip an a_min argument jax no longer takes: a TypeError at the
# first step, measured 2026-12-06). Its stand-in is MuJoCo Playground's dm_control swimmer with 6
# links on MJX (extra `playground`): a swimmer too, but rewarded for reaching a target with its
# nose (dm_control's Swimmer), not for forward speed (gym's Swimmer-v1), so its raw returns are
# not the paper's; the table's per-task normalization makes its column comparable in kind.
# MJX is built for accelerators: on this 2-core CPU the fixed-KL program (12 runs x 1 actor)
# took 190 s per update of 2048 steps, 129 env steps/s (measured 2026-12-07, compile 46.5 s;
# the random policy: 32,000 steps in 222 s), so the four programs' 33 runs x 1M steps would take
# about 4 x 489 x 190 s = 103 h. The full protocol runs swimmer on a GPU or TPU and skips it,
# recorded so, on a CPU; the reduced and smoke protocols leave it out: their table averages
# 6 tasks x 3 seeds = 18 runs.
SWIMMER = "playground:SwimmerSwimmer6"
SWIMMER_BACKEND = "mjx"
CPU_TOO_SLOW = {
    SWIMMER_BACKEND: "MJX's swimmer runs about 130 env steps/s in this program on a 2-core CPU "
    "(190 s per update of 12 runs, measured 2026-12-07): about 100 hours for the full protocol; "
    "run it on a GPU or TPU"
}

# REDUCED: about an hour on this shared 2-core CPU for 6 tasks x 4 programs, compiles included.
# Measured with the real programs (jit(vmap(train)), tracing + compile timed apart from a 4-update
# run) on the fixed-KL family (4 settings x 3 seeds = 12 runs), while other jobs kept 1.0-1.5 of
# the 2 cores busy. Columns: trace + compile seconds, seconds per update of all 12 runs (2048 env
# steps each), and that time times the share of a core the program got ("cpu", about its time
# on an otherwise idle machine: a program's run keeps one core busy).
#   task                      positional             spring
#   inverted_pendulum         24 s, 0.98 s (0.97)    20 s, 0.67 s (0.66)
#   inverted_double_pendulum  26 s, 1.20 s (1.16)    31 s, 1.04 s (0.77)
#   reacher                   45 s, 2.73 s (1.67)    35 s, 1.30 s (1.00)
#   hopper                    68 s, 2.93 s (2.20)    37 s, 1.61 s (1.13)
#   walker2d                  55 s, 4.50 s (2.97)    51 s, 2.16 s (1.51)
#   halfcheetah               35 s, 12.75 s (9.56)   29 s, 3.47 s (3.44)
# spring is faster to run and mostly to compile on every task, so every task uses it. All four
# programs of a task together take about 3x the fixed-KL program per update (measured on hopper
# and halfcheetah: the 3-run program costs half the 12-run one, as sequential env steps dominate).
# Per update of all four: inverted_pendulum 2.0 s, inverted_double_pendulum 2.4 s, reacher 3.1 s,
# hopper 3.9 s, walker2d 4.7 s, halfcheetah 10.7 s on an idle machine. With the budgets below
# (locomotion 150 updates, halfcheetah 100 as it is the slowest, the easy tasks 50-75) the runs
# take about 48 min; compiles overlap the runs (see run_tasks), which leaves a few minutes of
# compiling and random-policy scoring exposed: about 52 min idle, 65-70 min if other jobs keep
# more than one core busy meanwhile.
REDUCED: dict[str, Budget] = {
    "halfcheetah": Budget("spring", 100 * ROLLOUT),
    "hopper": Budget("spring", 150 * ROLLOUT),
    "inverted_double_pendulum": Budget("spring", 75 * ROLLOUT),
    "inverted_pendulum": Budget("spring", 50 * ROLLOUT),
    "reacher": Budget("spring", 75 * ROLLOUT),
    "walker2d": Budget("spring", 150 * ROLLOUT),
}

PROTOCOLS: dict[str, dict[str, Budget]] = {
    # The paper's budget, on the reduced protocol's backends so the two are comparable.
    "full": {
        task: Budget(REDUCED[task].backend if task in REDUCED else SWIMMER_BACKEND, PAPER_STEPS)
        for task in TASKS
    },
    "reduced": REDUCED,
    # One update on two quick tasks: every program, score and output, for a test.
    "smoke": {
        "inverted_pendulum": Budget("spring", ROLLOUT),
        "reacher": Budget("spring", ROLLOUT),
    },
}
# XLA compiler options per protocol. smoke's runs are tiny and its time is nearly all compiling,
# which XLA's backend optimization level 0 makes about 40% faster (the code it emits runs slower).
COMPILER_OPTIONS: dict[str, dict[str, Any]] = {"smoke": {"xla_backend_optimization_level": 0}}


# ---------------------------------------------------------------------------------------------
# Training one objective family on one task.
# ---------------------------------------------------------------------------------------------


def task_env_name(task: str, backend: str) -> str:
    return SWIMMER if backend == SWIMMER_BACKEND else f"brax:{task}@{backend}"


def task_env(task: str, backend: str) -> Any:
    """The task's environment: brax's at its time limit, or swimmer's stand-in at its own
    (1000 steps, as brax's and the paper's)."""
    name = task_env_name(task, backend)
    if backend == SWIMMER_BACKEND:
        return make_env(name)
    return make_env(name, episode_length=EPISODE_LENGTH)


def family_settings(family: str) -> list[Setting]:
    return [s for s in SETTINGS if s.objective == family]


def family_config(task: str, budget: Budget, family: str) -> Config:
    return Config(
        env=task_env_name(task, budget.backend),
        total_timesteps=budget.steps,
        objective=family,
        **BASE_CONFIG,
    )


def family_runs(settings: Sequence[Setting], num_seeds: int, seed: int) -> tuple[HParams, Any]:
    """HParams [R] and keys [R] of a family's runs, laid out as every sweep is (run r: setting
    r // num_seeds, seed r % num_seeds; see sweep.layout_runs). Seed s gets the same key in
    every setting and every family."""
    grid = Grid(tuple(settings[0].hparams), tuple(s.hparams for s in settings))
    runs = layout_runs(BASE_HPARAMS, grid, num_seeds, seed)
    return runs.hparams, runs.keys


class Program(NamedTuple):
    """One objective family's compiled jit(vmap(train)) for one task, with its inputs."""

    task: str
    family: str
    config: Config
    compiled: Any  # jax.stages.Compiled
    hparams: HParams  # leaves [R]
    keys: jax.Array  # [R]
    compile_seconds: float  # tracing, lowering and XLA compile


def compile_program(
    task: str,
    budget: Budget,
    family: str,
    env: Any,
    seed: int,
    compiler_options: dict[str, Any] | None = None,
) -> Program:
    """Trace and compile one family's program (timed)."""
    config = family_config(task, budget, family)
    hparams, keys = family_runs(family_settings(family), NUM_SEEDS, seed)
    t0 = time.perf_counter()
    lowered = jax.jit(jax.vmap(make_train(config, env))).lower(keys, hparams)
    compiled = lowered.compile(compiler_options)
    return Program(task, family, config, compiled, hparams, keys, time.perf_counter() - t0)


def run_program(program: Program) -> tuple[dict[str, np.ndarray], float]:
    """Train every run of the program: (metrics {name: [R, num_updates]}, run seconds)."""
    t0 = time.perf_counter()
    _, metrics = jax.block_until_ready(program.compiled(program.keys, program.hparams))
    seconds = time.perf_counter() - t0
    return {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}, seconds


# ---------------------------------------------------------------------------------------------
# Scores.
# ---------------------------------------------------------------------------------------------


def random_policy_score(
    env: Any,
    key: jax.Array,
    num_envs: int = 16,
    compiler_options: dict[str, Any] | None = None,
) -> tuple[float, int]:
    """Mean return of the episodes a uniformly random policy (actions in the env's bounds)
    completes in num_envs environments over two episode lengths (>= 2 * num_envs episodes, as
    every episode ends by the time limit at the latest). Returns (mean, episodes)."""
    low, high = jnp.asarray(env.action_low), jnp.asarray(env.action_high)
    steps = 2 * env.max_episode_steps

    def run(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        reset_key, run_key = jax.random.split(key)
        obs, state = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))

        def step(c: tuple[Any, jax.Array, jax.Array, jax.Array], k: jax.Array):
            state, ep_return, total, episodes = c
            act_key, env_key = jax.random.split(k)
            action = jax.random.uniform(
                act_key, (num_envs, env.action_dim), minval=low, maxval=high
            )
            out = jax.vmap(env.step)(jax.random.split(env_key, num_envs), state, action)
            ep_return = ep_return + out.reward
            done = out.terminated | out.truncated
            total = total + jnp.sum(jnp.where(done, ep_return, 0.0))
            episodes = episodes + jnp.sum(done)
            return (out.state, jnp.where(done, 0.0, ep_return), total, episodes), None

        zero = jnp.zeros(num_envs, jnp.float32)
        init = (state, zero, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
        (_, _, total, episodes), _ = jax.lax.scan(step, init, jax.random.split(run_key, steps))
        return total, episodes

    compiled = jax.jit(run).lower(key).compile(compiler_options)
    total, episodes = jax.device_get(compiled(key))
    return float(total) / max(int(episodes), 1), int(episodes)


def nan_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def normalize(raw: np.ndarray, random_score: float, best: float) -> np.ndarray:
    """Shift and scale so the random policy scores 0 and the best setting 1."""
    scale = best - random_score
    if not np.isfinite(scale) or scale == 0.0:
        return np.full_like(raw, np.nan)
    return (raw - random_score) / scale


def smooth_curve(returns: np.ndarray, counts: np.ndarray, window: int) -> np.ndarray:
    """Episode-weighted mean over seeds, then over a trailing window of updates: [S, U] -> [U]."""
    weighted = np.where(counts > 0, np.nan_to_num(returns) * counts, 0.0).sum(0)
    n = counts.sum(0).astype(np.float64)
    kernel = np.ones(window)
    num = np.convolve(weighted, kernel)[: len(n)]
    den = np.convolve(n, kernel)[: len(n)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1.0), np.nan)


# ---------------------------------------------------------------------------------------------
# One task: the random policy, the four family programs, and the per-setting scores.
# ---------------------------------------------------------------------------------------------


class RandomScore(NamedTuple):
    score: float
    episodes: int
    seconds: float


def family_results(
    program: Program, metrics: dict[str, np.ndarray], budget: Budget
) -> tuple[dict[str, dict[str, Any]], dict[str, list[float | None]]]:
    """Per setting of the family: the raw per-seed scores and the seed-mean learning curve."""
    settings = family_settings(program.family)
    num_updates = program.config.num_updates
    shape = (len(settings), NUM_SEEDS, num_updates)
    ret = metrics["episode_return"].reshape(shape)
    cnt = metrics["episodes"].reshape(shape)
    finite = metrics["finite"].reshape(shape)
    window = max(1, num_updates // 20)
    out, curves = {}, {}
    for i, s in enumerate(settings):
        scored = [
            last_episodes_return(ret[i, j], cnt[i, j], LAST_EPISODES) for j in range(NUM_SEEDS)
        ]
        out[s.name] = {
            "objective": s.objective,
            "hparams": s.hparams,
            "raw": [round(x[0], 4) for x in scored],
            "episodes_scored": [x[1] for x in scored],
            "window_updates": [x[2] for x in scored],
            "finite": [bool(finite[i, j].min()) for j in range(NUM_SEEDS)],
            "budget": budget.steps,
            "num_updates": num_updates,
            "backend": budget.backend,
        }
        curve = smooth_curve(ret[i], cnt[i], window)
        curves[s.name] = [None if np.isnan(v) else round(float(v), 3) for v in curve]
    return out, curves


def finish_task(
    task: str,
    budget: Budget,
    random: RandomScore,
    programs: dict[str, dict[str, Any]],
    settings_out: dict[str, dict[str, Any]],
    curves: dict[str, list[float | None]],
) -> dict[str, Any]:
    """Normalize the task's scores: random policy 0, best setting (seed mean) 1."""
    for v in settings_out.values():
        v["compile_seconds"] = programs[v["objective"]]["compile_seconds"]
        v["run_seconds"] = programs[v["objective"]]["run_seconds"]
    means = {name: nan_mean(v["raw"]) for name, v in settings_out.items()}
    best = max(means, key=lambda k: -math.inf if math.isnan(means[k]) else means[k])
    for name, v in settings_out.items():
        norm = normalize(np.asarray(v["raw"], np.float64), random.score, means[best])
        v["raw_mean"] = round(means[name], 4)
        v["normalized"] = [round(float(x), 4) for x in norm]
        # The mean over seeds of an affine map is the map of the mean: exactly 1 for the best.
        v["normalized_mean"] = float(
            normalize(np.asarray([means[name]]), random.score, means[best])[0]
        )
    num_updates = budget.steps // ROLLOUT
    return {
        "env": task_env_name(task, budget.backend),
        "backend": budget.backend,
        "budget": budget.steps,
        "num_updates": num_updates,
        "random_score": round(random.score, 4),
        "random_episodes": random.episodes,
        "random_seconds": round(random.seconds, 2),
        "best_setting": best,
        "best_above_random": bool(means[best] > random.score),
        "programs": programs,
        "settings": {s.name: settings_out[s.name] for s in SETTINGS},
        "curve_steps": [(u + 1) * ROLLOUT for u in range(num_updates)],
        "curve_window_updates": max(1, num_updates // 20),
        "curves": {s.name: curves[s.name] for s in SETTINGS},
    }


class _Ready:
    """A finished computation with the Future interface (for --sequential)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


def run_tasks(
    budgets: dict[str, Budget],
    seed: int,
    log: Any,
    overlap: bool = True,
    compiler_options: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every task's random policy and four family programs, in order. With overlap, one
    background thread prepares the next job (compiles the next program, or scores the next
    task's random policy) while the main thread runs the current program: a program's run keeps
    about one core busy and XLA's compile one more, so on 2 cores compiles cost almost nothing."""
    envs = {task: task_env(task, b.backend) for task, b in budgets.items()}
    jobs: list[tuple[str, str | None]] = []
    for task in budgets:
        jobs += [(task, None)] + [(task, family) for family in FAMILIES]

    def prepare(job: tuple[str, str | None]) -> RandomScore | Program:
        task, family = job
        if family is None:
            t0 = time.perf_counter()
            score, episodes = random_policy_score(
                envs[task], jax.random.key(seed + 10_000), compiler_options=compiler_options
            )
            return RandomScore(score, episodes, time.perf_counter() - t0)
        return compile_program(
            task, budgets[task], family, envs[task], seed, compiler_options=compiler_options
        )

    pool = ThreadPoolExecutor(max_workers=1) if overlap else None

    def start(job: tuple[str, str | None]) -> Any:
        return pool.submit(prepare, job) if pool is not None else _Ready(prepare(job))

    results: dict[str, dict[str, Any]] = {}
    try:
        pending = start(jobs[0])
        random: RandomScore | None = None
        programs: dict[str, dict[str, Any]] = {}
        settings_out: dict[str, dict[str, Any]] = {}
        curves: dict[str, list[float | None]] = {}
        for i, (task, family) in enumerate(jobs):
            prepared = pending.result()
            if i + 1 < len(jobs):
                pending = start(jobs[i + 1])
            budget = budgets[task]
            if isinstance(prepared, RandomScore):
                random, programs, settings_out, curves = prepared, {}, {}, {}
                log(
                    f"[{task}] {budget.backend}, {budget.steps:,} steps per run; random policy "
                    f"{random.score:.2f} over {random.episodes} episodes ({random.seconds:.1f}s)"
                )
                continue
            metrics, run_seconds = run_program(prepared)
            runs = len(family_settings(prepared.family)) * NUM_SEEDS
            steps = runs * prepared.config.num_updates * prepared.config.batch_size
            programs[prepared.family] = {
                "runs": runs,
                "compile_seconds": round(prepared.compile_seconds, 2),
                "run_seconds": round(run_seconds, 2),
                "steps_per_second": round(steps / run_seconds, 1),
            }
            log(
                f"[{task}] {family}: {runs} runs, compile {prepared.compile_seconds:.1f}s, "
                f"run {run_seconds:.1f}s ({steps / run_seconds:,.0f} steps/s)"
            )
            out, curve = family_results(prepared, metrics, budget)
            settings_out.update(out)
            curves.update(curve)
            if family == FAMILIES[-1]:
                assert random is not None
                results[task] = finish_task(task, budget, random, programs, settings_out, curves)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return results


# ---------------------------------------------------------------------------------------------
# The table, the plots, and the command line.
# ---------------------------------------------------------------------------------------------


REFERENCE = "clip_0.2"  # the paper's pick: every row's probability of improvement is against it


def finite_scores(tasks: dict[str, dict[str, Any]], name: str) -> list[np.ndarray]:
    """A setting's normalized run scores per task, diverged runs (NaN) left out."""
    out = []
    for t in tasks.values():
        x = np.asarray(t["settings"][name]["normalized"], np.float64)
        out.append(x[np.isfinite(x)])
    return out


def final_table(tasks: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting: mean normalized score over every (task, seed) run, beside the paper's,
    with 95% bootstrap intervals stratified by task (mean and IQM), and the probability that a
    run of clipping at 0.2 beats a run of the setting on the same task."""
    rows = []
    reference = finite_scores(tasks, REFERENCE)
    for i, s in enumerate(SETTINGS):
        runs = finite_scores(tasks, s.name)
        finite = np.concatenate(runs)
        row: dict[str, Any] = {
            "setting": s.name,
            "label": s.label,
            "score": round(float(np.mean(finite)), 3) if finite.size else None,
            "runs": int(finite.size),
            "paper": s.paper,
            "per_task": {
                task: t["settings"][s.name]["normalized_mean"] for task, t in tasks.items()
            },
        }
        if all(x.size for x in runs):
            est = stats.interval_estimates(runs, seed=i)
            row["score_ci"] = [round(est["mean"].low, 3), round(est["mean"].high, 3)]
            row["iqm"] = est["iqm"].rounded(3)
            if s.name != REFERENCE and all(x.size for x in reference):
                poi = stats.probability_of_improvement(reference, runs, seed=i)
                row["p_reference_better"] = poi.rounded(3)
        rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    tasks = result["tasks"]
    names = list(tasks)
    lines = [
        f"# PPO surrogate objectives (Table 1 of Schulman et al. 2017), protocol "
        f"`{result['protocol']}`",
        "",
        "Normalized score: random policy 0, best setting per task 1; mean over "
        f"{len(names)} tasks x {NUM_SEEDS} seeds. A run scores the mean return of its last "
        f"{LAST_EPISODES} episodes. Runs: how many runs had a finite score (a diverged run "
        "has none and is left out; the JSON marks it). In brackets: 95% bootstrap intervals "
        "over seeds, stratified by task (`purejaxppo.stats`); IQM: the mean of the middle half "
        "of the runs; P(clip 0.2 better): the chance that a run with clipping at 0.2 scores "
        "above a run of the row's setting on the same task, averaged over tasks.",
        "",
        "| Setting | Score | Paper (1M steps) | Score 95% CI | IQM [95% CI] "
        "| P(clip 0.2 better) | Runs | " + " | ".join(names) + " |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(names),
    ]
    for row in result["table"]:
        score = "n/a" if row["score"] is None else f"{row['score']:.2f}"
        per_task = " | ".join(
            "n/a" if math.isnan(row["per_task"][t]) else f"{row['per_task'][t]:.2f}" for t in names
        )
        ci = "[{:.2f}, {:.2f}]".format(*row["score_ci"]) if "score_ci" in row else "n/a"
        iqm = "{:.2f} [{:.2f}, {:.2f}]".format(*row["iqm"]) if "iqm" in row else "n/a"
        poi = row.get("p_reference_better")
        poi_text = "{:.2f} [{:.2f}, {:.2f}]".format(*poi) if poi else "-"
        lines.append(
            f"| {row['label']} | {score} | {row['paper']:.2f} | {ci} | {iqm} | {poi_text} | "
            f"{row['runs']} | {per_task} |"
        )
    lines += [
        "",
        "| Task | Backend | Steps per run | Random policy | Best setting | Best raw score "
        "| Fewest episodes scored |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for task, t in tasks.items():
        best = t["best_setting"]
        fewest = min(n for s in t["settings"].values() for n in s["episodes_scored"])
        lines.append(
            f"| {task} | {t['backend']} | {t['budget']:,} | {t['random_score']:.2f} | {best} | "
            f"{t['settings'][best]['raw_mean']:.2f} | {fewest} |"
        )
    below = [task for task, t in tasks.items() if not t["best_above_random"]]
    if below:
        lines += [
            "",
            f"No setting beat the random policy on {', '.join(below)}: there the normalized "
            "scores are not meaningful (the scale is negative).",
        ]
    if result["skipped_tasks"]:
        lines += ["", f"Skipped: {', '.join(result['skipped_tasks'])} (see the JSON)."]
    if "swimmer" not in tasks:
        lines += [
            "",
            "swimmer is not in this table: brax's swimmer fails on jax 0.10, and its stand-in "
            f"(`{SWIMMER}`, MJX) runs about 130 env steps/s on a 2-core CPU; the full protocol "
            "runs it on a GPU or TPU.",
        ]
    if "merged_from" in result:
        parts = "; ".join(
            f"{', '.join(p['tasks'])} in {p['wall_seconds'] / 60:.0f} min"
            for p in result["merged_from"]
        )
        lines += ["", f"Ran as {len(result['merged_from'])} processes side by side: {parts}."]
    lines += ["", "Setup: " + result["notes"]["setup"], "", result["notes"]["normalization"], ""]
    return "\n".join(lines)


def plot_task(task: str, t: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "none": "black",
        "clip": "tab:blue",
        "kl_adaptive": "tab:green",
        "kl_fixed": "tab:red",
    }
    styles = ("-", "--", ":", "-.")
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    steps = np.asarray(t["curve_steps"])
    for family in FAMILIES:
        for i, s in enumerate(family_settings(family)):
            y = np.asarray([np.nan if v is None else v for v in t["curves"][s.name]])
            ax.plot(
                steps,
                y,
                color=colors[family],
                linestyle=styles[i % 4],
                marker="o" if len(steps) < 10 else None,
                label=s.label,
            )
    ax.axhline(t["random_score"], color="gray", linewidth=0.8, label="random policy")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return (mean over seeds)")
    ax.set_title(f"{task} ({t['backend']}), {NUM_SEEDS} seeds")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def without_nan(tree: Any) -> Any:
    """NaN floats become None (JSON null) so the file is strict JSON."""
    if isinstance(tree, dict):
        return {k: without_nan(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [without_nan(v) for v in tree]
    if isinstance(tree, float) and math.isnan(tree):
        return None
    return tree


def notes() -> dict[str, str]:
    return {
        "setup": (
            "one actor (num_envs 1), horizon 2048, 10 epochs, minibatch 64, Adam 3e-4 (no "
            "annealing), gamma 0.99, lambda 0.95, 64x64 tanh, state-independent log-std, no "
            "entropy bonus, no value clipping, no gradient clipping (max_grad_norm 1e9), "
            "advantages standardized per minibatch, vf_coef 0.5."
        ),
        "normalization": (
            "Observations are normalized by running mean and std (as in the paper's code); "
            "rewards are scaled by a running std of the discounted return (not in the paper's "
            "code; it only rescales the critic's targets, since advantages are standardized)."
        ),
        "score": (
            f"A run's score is the mean return of its last {LAST_EPISODES} episodes, computed from "
            "per-update aggregates (mean return and count of the episodes that ended in each "
            "update): walking back from the last update, each update's mean is weighted by its "
            "episode count until 100 episodes are covered (the oldest update partially). A run "
            "with fewer episodes uses all it has; episodes_scored records the count and "
            "window_updates how many updates back the window reaches."
        ),
        "normalized": (
            "Per task, normalized = (raw - random_score) / (best - random_score), with best the "
            "highest mean raw score over seeds among the settings; random_score is the mean "
            "return of a uniformly random policy (actions uniform in [-1, 1])."
        ),
        "timings": (
            "compile_seconds covers tracing, lowering and XLA compile of a family's program, "
            "run_seconds its execution. Unless overlap is false, the next program compiles (or "
            "the next task's random policy runs) in a background thread while the current one "
            "runs, so both times include some contention and wall_seconds is less than their "
            "sum."
        ),
        "curves": (
            "curves[setting][u]: episode-weighted mean return over seeds of the episodes ending "
            "in a trailing window of curve_window_updates updates ending at update u."
        ),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="PPO paper Table 1: surrogate objectives on the brax counterparts of its "
        "seven MuJoCo tasks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--protocol", choices=tuple(PROTOCOLS), default="reduced")
    parser.add_argument(
        "--tasks", default=None, help="comma-separated subset of the protocol's tasks"
    )
    parser.add_argument("--out", default="benchmarks/results", help="results folder")
    parser.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR",
        help="combine the objectives.json of runs over disjoint task subsets into --out",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="compile each program only after the previous one ran (slower; uncontended timings)",
    )
    args = parser.parse_args(argv)
    budgets = PROTOCOLS[args.protocol]
    if args.tasks:
        chosen = [t.strip() for t in args.tasks.split(",") if t.strip()]
        unknown = [t for t in chosen if t not in budgets]
        if unknown or not chosen:
            parser.error(
                f"--tasks: {', '.join(unknown) or '(empty)'} not in protocol {args.protocol!r} "
                f"(its tasks: {', '.join(budgets)})"
            )
        args.tasks = chosen
    else:
        args.tasks = list(budgets)
    return args


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def merge(dirs: Sequence[str], out: Path) -> dict[str, Any]:
    """One result from several runs of the same protocol over disjoint task subsets (for
    example two processes side by side on a 2-core machine, or several hosts)."""
    parts = [json.loads((Path(d) / "objectives.json").read_text()) for d in dirs]
    first = parts[0]
    for key in ("protocol", "seed", "config", "hparams", "settings"):
        if any(p[key] != first[key] for p in parts):
            raise SystemExit(f"error: --merge: the runs differ in {key!r}")
    tasks: dict[str, Any] = {}
    for part in parts:
        for task, t in part["tasks"].items():
            if task in tasks:
                raise SystemExit(f"error: --merge: task {task!r} is in more than one run")
            for st in t["settings"].values():
                st["normalized"] = [_nan(x) for x in st["normalized"]]
                st["normalized_mean"] = _nan(st["normalized_mean"])
            tasks[task] = t
    order = [task for task in TASKS if task in tasks]
    tasks = {task: tasks[task] for task in order}
    skipped = {k: v for p in parts for k, v in p["skipped_tasks"].items() if k not in tasks}
    result = {
        **first,
        "skipped_tasks": skipped,
        "tasks": tasks,
        "table": final_table(tasks),
        "merged_from": [
            {"tasks": list(p["tasks"]), "wall_seconds": p["wall_seconds"]} for p in parts
        ],
        "wall_seconds": max(p["wall_seconds"] for p in parts),
    }
    out.mkdir(parents=True, exist_ok=True)
    for d in dirs:
        for png in Path(d).glob("objectives_*.png"):
            if Path(d).resolve() != out.resolve():
                shutil.copy(png, out / png.name)
    write_outputs(result, out)
    return result


def write_outputs(result: dict[str, Any], out: Path) -> None:
    text = json.dumps(without_nan(result), indent=1, allow_nan=False)
    (out / "objectives.json").write_text(text + "\n")
    table = markdown(result)
    (out / "objectives.md").write_text(table)
    print(table)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        return merge(args.merge, out)
    budgets = PROTOCOLS[args.protocol]

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    chosen: dict[str, Budget] = {}
    skipped: dict[str, str] = {}
    for task in args.tasks:
        budget = budgets[task]
        if budget.backend in CPU_TOO_SLOW and jax.default_backend() == "cpu":
            skipped[task] = CPU_TOO_SLOW[budget.backend]
            log(f"[{task}] skipped: {skipped[task]}")
        else:
            chosen[task] = budget
    if not chosen:
        raise SystemExit("error: no task left to run on this backend")
    tasks = run_tasks(
        chosen,
        args.seed,
        log,
        overlap=not args.sequential,
        compiler_options=COMPILER_OPTIONS.get(args.protocol),
    )
    for task, t in tasks.items():
        plot_task(task, t, out / f"objectives_{task}.png")
    result: dict[str, Any] = {
        "benchmark": "PPO surrogate objectives, Table 1 of Schulman et al. 2017",
        "protocol": args.protocol,
        "seed": args.seed,
        "overlap": not args.sequential,
        "compiler_options": COMPILER_OPTIONS.get(args.protocol, {}),
        "skipped_tasks": skipped,
        "num_seeds": NUM_SEEDS,
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in BASE_CONFIG.items()},
        "hparams": {f.name: float(getattr(BASE_HPARAMS, f.name)) for f in fields(HParams)},
        "settings": [
            {"name": s.name, "label": s.label, "objective": s.objective, "hparams": s.hparams}
            for s in SETTINGS
        ],
        "notes": notes(),
        "tasks": tasks,
        "table": final_table(tasks),
    }
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_outputs(result, out)
    log(f"wrote {out}/objectives.json, objectives.md and {len(tasks)} plots")
    log(f"total {result['wall_seconds']:.0f}s")
    return result


if __name__ == "__main__":
    main()
