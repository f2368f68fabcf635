"""Choose each environment family's shipped defaults with the package's own sweeps (issue 24).

    python benchmarks/tune.py --families classic pendulum            # every stage, then report
    python benchmarks/tune.py --families minatar --stage report --runs /work/tune-runs
    python benchmarks/tune.py --families minatar --stage confirm --winner-from coarse
    python benchmarks/tune.py --families brax --budget 2 --runs /big/disk/tune   # a bigger machine
    python benchmarks/tune.py --families minatar --stage confirm --confirm-steps 5000000   # 5x

A family is a set of tasks that share one setting (as the PPO paper used one setting for every
Atari game), a tuning budget (env steps per run), a small grid of static programs (fields that
recompile: num_envs, num_steps, epochs, minibatches, network, width) and a space of traced fields
(learning rate, clip, entropy, lambda, value coefficient, gamma, gradient norm) drawn by random
search inside each static program. Stages, each a folder under RUNS/FAMILY/:

  coarse     per static program and coarse task (a subset of the family's tasks), one
             `purejaxppo train --samples N --sweep ...` random search (N = the family's draws x
             --budget), 2 seeds; plus the random-policy runs where the family measures them.
  finalists  the top --finalists settings by normalized IQM over the coarse tasks (only static
             programs finished on every coarse task compete) on ALL the family's tasks, on new
             seeds; one `train_sweep` per static program and task, its Grid the finalists.
  confirm    the winner (the best finalist; `--winner-from coarse` takes the best coarse setting
             when the finalists stage has not run) and the family's anchors, on 8 fresh seeds:
             normalized IQM [95% CI] across the tasks, per-task IQM, P(winner > anchor), curves.
  peers      another implementation's PPO as an anchor where the family names one (brax: brax's
             own PPO with its published per-task settings, benchmarks/peers/brax_ppo.py in its
             own venv), on the confirmation's seed count and budget, one JSON per run; scored by
             the same final-return window and set beside the winner.
  report     no training: reads every folder and writes OUT/tune_FAMILY.{json,md,png}.

Every run is a `purejaxppo train` subprocess (coarse, random policy) or the driver's `train_sweep`
(finalists, confirm: an arbitrary list of traced settings in one program), with checkpoints every
tenth of the run. A finished folder (summary.json with the requested steps) is reused; a stopped
one is resumed; a folder holding other settings than the stage plans is refused. So a stopped
session loses at most a tenth of a run, and a second invocation trains nothing twice.

Seeds never shared between stages: coarse runs use keys split from PRNG seed 100 (also the seed of
the draws), finalists 200, confirm 300, random-policy runs 900 (`STAGE_SEEDS`); within a stage
every setting gets the same seed keys.

Scoring: a run's final return is the mean return of the episodes ending in its last 5% of updates,
the window widened until every run of the folder has one (benchmarks/minatar.py's final_window:
Freeway-MinAtar's 2500-step episodes can leave a 5% window empty), normalized per task as
(x - random) / (reference - random). random: the family's published random-policy score, or one
measured here (learning rate 0, 51,200 steps x 8 seeds, the task's preset). reference: the
family's stated one, or else the best setting's mean final return in the first stage with a
finished folder on the task, fixed once in RUNS/FAMILY/references.json. Aggregates are IQM with
stratified-bootstrap 95% intervals over tasks (purejaxppo.stats), ranked by IQM, then mean.

--budget scales the number of random draws per static program (minatar 192, classic 8, pendulum 4,
brax 64 at --budget 1); a different budget draws different settings, so it needs its own
--runs. Cost: per folder (compile_seconds + run_seconds) x devices from its summary.json, on the
machine recorded beside it (tune_machine.json, or the stage folder's machine.json).

The winner, the finalists and the references are chosen once and kept in RUNS/FAMILY/choices.json
and references.json, so later stages and reports use the same ones; delete them to choose again.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from benchmarks.minatar import GYMNAX_PPO, RANDOM_STEPS, episode_mean, final_window  # noqa: E402
from purejaxppo import stats  # noqa: E402

STAGES = ("coarse", "finalists", "confirm", "peers", "report")
STAGE_SEEDS = {"coarse": 100, "finalists": 200, "confirm": 300, "random": 900}
STAGE_NUM_SEEDS = {"coarse": 2, "finalists": 4, "confirm": 8, "random": 8}
CHECKPOINTS_PER_RUN = 10  # a killed session loses at most this fraction of a run
SIGNIFICANT = 3  # digits the winner's continuous values are rounded to before confirmation


class TuneError(Exception):
    """A stage that cannot run as asked: one line, exit code 2."""


# ---------------------------------------------------------------------------------------------
# Families.
# ---------------------------------------------------------------------------------------------


class Family(NamedTuple):
    """The tasks that share one setting, the search over it, and what it is compared with."""

    name: str
    tasks: tuple[str, ...]  # env ids
    coarse_tasks: tuple[str, ...]  # the subset the random search runs on
    steps: int  # the tuning budget: env steps per run
    base: tuple[str, ...]  # `--set` assignments every static program shares
    statics: dict[str, tuple[str, ...]]  # static program -> its own `--set` assignments
    space: tuple[str, ...]  # `--sweep` items of the random search, in draw order
    draws: int  # random draws per static program at --budget 1
    anchors: dict[str, tuple[str, ...]]  # name -> `train` arguments (complete settings)
    random: dict[str, float]  # published random-policy scores; tasks left out are measured
    random_source: str
    reference: dict[str, float]  # stated references; tasks left out are measured (fixed once)
    reference_source: str
    peers: dict[str, str]  # anchors tune.py does not train, and why
    notes: str = ""
    # Published scores shown beside the confirmation as a reference (not trained here), and
    # where they come from with their budget.
    published: dict[str, float] = {}
    published_source: str = ""
    # `train` arguments every search job starts from, before its statics and base: the settings
    # the search was run over, by name, so that shipping its winner as the task's preset does
    # not change what a recorded folder's arguments resolve to.
    start: tuple[str, ...] = ()
    # Peer anchors the peers stage trains (PEER_RUNNERS' names).
    trained_peers: tuple[str, ...] = ()


MINATAR_GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
# The traced space every family draws from, in the order the draws are taken.
# Centred on the publicly known good region (PureJaxRL's MinAtar settings: lr 5e-3, clip 0.2,
# entropy 0.01, lambda 0.95, gamma 0.99, gradient norm 0.5), a factor of about 3 either way: a
# 2-core CPU affords a few dozen draws per program, too few for the wide classic-control space.
MINATAR_SPACE = (
    "learning_rate=loguniform:0.0015:0.015",
    "clip_coef=uniform:0.1:0.3",
    "ent_coef=loguniform:0.003:0.03",
    "gae_lambda=uniform:0.8:0.97",
    "vf_coef=uniform:0.25:1.0",
    "gamma=0.99,0.995",
    "max_grad_norm=0.5,1.0",
)
PUREJAXRL_MINATAR = ("--config", "purejaxrl-minatar")
MINATAR_PAPER = ("--config", "minatar-paper")  # the MinAtar default until 2026-12

MINATAR = Family(
    name="minatar",
    tasks=tuple(f"{g}-MinAtar" for g in MINATAR_GAMES),
    coarse_tasks=("Breakout-MinAtar", "SpaceInvaders-MinAtar", "Asterix-MinAtar"),
    steps=1_000_000,
    base=(
        "num_envs=64",
        "num_steps=128",
        "update_epochs=4",
        "num_minibatches=8",
        "anneal_clip=false",
    ),
    # Cheapest first: a session that ends early has the MLP programs on every coarse task.
    statics={
        "mlp": ("network=mlp", "activation=relu", "hidden_sizes=64,64"),
        "mlp256": ("network=mlp", "activation=relu", "hidden_sizes=256,256"),
        "cnn": ("network=minatar_cnn",),
    },
    space=MINATAR_SPACE,
    draws=192,
    anchors={"purejaxrl": PUREJAXRL_MINATAR, "previous": MINATAR_PAPER},
    random={
        "Asterix-MinAtar": 0.52,
        "Breakout-MinAtar": 0.42,
        "Freeway-MinAtar": 0.39,
        "Seaquest-MinAtar": 0.10,
        "SpaceInvaders-MinAtar": 4.23,
    },
    random_source="BENCHMARKS.md MinAtar table (benchmarks/minatar.py: the preset with "
    "learning rate 0, 51,200 steps x 8 seeds, mean of every episode)",
    reference={},
    reference_source="the best setting's mean final return in the first stage with a finished "
    "folder on the game, fixed once",
    peers={},
    notes="Coarse tasks leave out Freeway and Seaquest, which gymnax steps slowly. Every static "
    "program starts from the game's preset (anneal_lr on, clip_vloss on, minatar_cnn unless "
    "the static says mlp) with the base fields over it. Anchors: `purejaxrl` = the settings "
    "PureJaxRL publishes for MinAtar run through our trainer (preset purejaxrl-minatar); "
    "`previous` = the preset until 2026-12 (minatar-paper: the PPO paper's Atari Table 5).",
    start=MINATAR_PAPER,
    published={f"{game}-MinAtar": score for game, score in GYMNAX_PPO.items()},
    published_source="gymnax's README, PPO with an MLP after 10M steps (10x this budget; "
    "its own seeds and window)",
)

# PPO returns gymnax's README gives for its classic-control tasks (the `R:` of its table).
GYMNAX_CLASSIC_PPO = {"CartPole-v1": 500, "Acrobot-v1": -80, "MountainCar-v0": -118,
                      "Pendulum-v1": -130}  # fmt: skip

CLASSIC = Family(
    name="classic",
    tasks=("CartPole-v1", "Acrobot-v1", "MountainCar-v0"),
    coarse_tasks=("Acrobot-v1", "MountainCar-v0"),
    steps=500_000,
    base=(
        "num_steps=128",
        "update_epochs=4",
        "num_minibatches=4",
        "hidden_sizes=64,64",
        "activation=tanh",
    ),
    statics={"e4": ("num_envs=4",), "e16": ("num_envs=16",)},
    space=(
        "learning_rate=loguniform:1e-4:1e-2",
        "clip_coef=uniform:0.1:0.3",
        "ent_coef=loguniform:0.0001:0.05",
        "gae_lambda=uniform:0.8:0.99",
        "vf_coef=uniform:0.25:1.0",
        "gamma=0.97,0.99,0.995",
        "max_grad_norm=0.5,1.0,2.0",
    ),
    draws=8,
    anchors={"previous": ("--config", "purejaxrl-cartpole")},
    random={},
    random_source="measured: the task's preset with learning rate 0 (the initial policy), "
    "51,200 steps x 8 seeds, mean of every episode",
    # gymnasium's reward_threshold for each task: the return at which it counts as solved.
    reference={"CartPole-v1": 475.0, "Acrobot-v1": -100.0, "MountainCar-v0": -110.0},
    reference_source="gymnasium's reward_threshold (the return it calls solved)",
    peers={},
    notes="The three discrete tasks share one setting, at 500k steps. The coarse search runs "
    "on Acrobot and MountainCar (CartPole, solved by most settings, is checked from the "
    "finalists on); 8 draws per program fit a shared 2-core CPU. Anchor `previous` = the "
    "default until 2026-12 (preset purejaxrl-cartpole: PureJaxRL's CartPole settings, the "
    "Config defaults).",
    start=("--config", "purejaxrl-cartpole"),
    published={k: GYMNAX_CLASSIC_PPO[k] for k in ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")},
    published_source="gymnax's README (gymnax 1.0), PPO from gymnax-blines, whose configs "
    "(agents/TASK/ppo.yaml) train CartPole-v1 150k steps and Acrobot-v1 and MountainCar-v0 "
    "500k; scored on 164 test rollouts, its own seeds",
)

# The Pendulum-v1 preset until 2026-12, every field its successor sets.
PENDULUM_PREVIOUS = (
    "--set",
    "num_envs=16",
    "num_steps=256",
    "update_epochs=10",
    "num_minibatches=8",
    "anneal_lr=true",
    "learning_rate=0.001",
    "gamma=0.95",
    "gae_lambda=0.95",
    "clip_coef=0.2",
    "ent_coef=0",
    "vf_coef=0.5",
    "max_grad_norm=0.5",
)
PENDULUM = Family(
    name="pendulum",
    tasks=("Pendulum-v1",),
    coarse_tasks=("Pendulum-v1",),
    steps=1_000_000,
    base=("num_envs=16", "num_steps=256", "num_minibatches=8", "ent_coef=0"),
    statics={"k10": ("update_epochs=10",), "k4": ("update_epochs=4",)},
    space=(
        "learning_rate=loguniform:1e-4:1e-2",
        "clip_coef=uniform:0.1:0.3",
        "gae_lambda=uniform:0.8:0.99",
        "vf_coef=uniform:0.25:1.0",
        "gamma=0.9,0.95,0.97,0.99",
        "max_grad_norm=0.5,1.0,2.0",
    ),
    draws=4,
    anchors={"previous": PENDULUM_PREVIOUS},
    random={},
    random_source=CLASSIC.random_source,
    reference={},
    reference_source="the best setting's mean final return in the coarse stage, fixed once",
    peers={},
    notes="Pendulum has its own setting at 1M steps; no entropy bonus (a Gaussian policy). "
    "Static programs: today's shape (16 x 256, 10 epochs of 8 minibatches) and the same with "
    "4 epochs; 4 draws per program fit a shared 2-core CPU (--budget scales them). Anchor "
    "`previous` = the Pendulum-v1 preset until 2026-12 (10 epochs, Adam 1e-3, gamma 0.95).",
    start=PENDULUM_PREVIOUS,
    published={"Pendulum-v1": GYMNAX_CLASSIC_PPO["Pendulum-v1"]},
    published_source="gymnax's README (gymnax 1.0), PPO from gymnax-blines, whose config "
    "(agents/Pendulum-v1/ppo.yaml) trains 1M steps; scored on 164 test rollouts, "
    "its own seeds",
)

# The PPO paper's Table 1 tasks with the backends of benchmarks/objectives.py's full protocol
# (spring). Swimmer is left out: brax has it only on the generalized pipeline, whose fluid
# forces call jnp.clip(a_min=...), an argument jax 0.10 no longer takes (a TypeError at the
# first step, measured 2026-12-06; the playground adapter's SwimmerSwimmer6 is another swimmer).
BRAX_TASKS = {
    "halfcheetah": "spring",
    "hopper": "spring",
    "inverted_double_pendulum": "spring",
    "inverted_pendulum": "spring",
    "reacher": "spring",
    "walker2d": "spring",
}
BRAX_PREVIOUS = ("--config", "brax-16x128")  # the brax default until 2026-12
BRAX = Family(
    name="brax",
    tasks=tuple(f"brax:{t}@{b}" for t, b in BRAX_TASKS.items()),
    coarse_tasks=("brax:hopper@spring", "brax:walker2d@spring", "brax:halfcheetah@spring"),
    steps=1_000_000,
    base=("hidden_sizes=64,64", "activation=tanh"),
    statics={
        "e16": ("num_envs=16", "num_steps=128", "update_epochs=10", "num_minibatches=8"),
        "e64": ("num_envs=64", "num_steps=64", "update_epochs=4", "num_minibatches=8"),
        "paper": (
            "num_envs=1",
            "num_steps=2048",
            "update_epochs=10",
            "num_minibatches=32",
            "anneal_lr=false",
            "clip_vloss=false",
        ),
    },
    space=(
        "learning_rate=loguniform:1e-4:3e-3",
        "clip_coef=uniform:0.1:0.3",
        "ent_coef=0,0.001,0.01",
        "gae_lambda=uniform:0.9:0.99",
        "vf_coef=uniform:0.25:1.0",
        "gamma=0.97,0.99,0.995",
        "max_grad_norm=0.5,1.0,1000000000",
    ),
    draws=64,
    anchors={"previous": BRAX_PREVIOUS, "ppo-mujoco": ("--config", "ppo-mujoco")},
    random={},
    random_source=CLASSIC.random_source,
    reference={},
    reference_source=MINATAR.reference_source,
    peers={},
    notes="The coarse search runs on the three locomotion tasks. Static `paper` is the PPO "
    "paper's MuJoCo shape (1 actor x 2048, 10 epochs of 64); max_grad_norm 1e9 never clips. "
    "Anchors: `previous` = the brax default until 2026-12 (brax-16x128); `ppo-mujoco` = the "
    "paper's settings; peer `brax-ppo` = brax's own PPO trainer with the settings brax publishes "
    "per task "
    "(benchmarks/peers/brax_ppo.py; hopper and walker2d take halfcheetah's, as brax publishes "
    "SAC for them), which rounds the budget up to whole training steps of its own size.",
    start=BRAX_PREVIOUS,
    trained_peers=("brax-ppo",),
)

FAMILIES = {f.name: f for f in (MINATAR, CLASSIC, PENDULUM, BRAX)}


def task_label(task: str) -> str:
    """A task's folder name: 'Breakout' for Breakout-MinAtar, 'hopper' for brax:hopper@spring."""
    return task.removeprefix("brax:").split("@")[0].removesuffix("-MinAtar")


def num_draws(family: Family, budget: float) -> int:
    return max(1, round(family.draws * budget))


# ---------------------------------------------------------------------------------------------
# Scoring (numpy only).
# ---------------------------------------------------------------------------------------------


def normalize(x: np.ndarray, random: float, reference: float) -> np.ndarray:
    """(x - random) / (reference - random): 0 is the random policy, 1 the reference."""
    if not reference > random:
        raise TuneError(
            f"the reference {reference:g} is not above the random-policy score {random:g}: "
            "state a reference for this task in its family"
        )
    return (np.asarray(x, np.float64) - random) / (reference - random)


def run_finals(metrics: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
    """[settings, seeds] final returns of one folder's runs, the window widened until each run
    has an episode in it; and the window in updates."""
    finals, window = final_window(metrics)
    return np.asarray(finals, np.float64), int(window)


def aggregate(per_task: Sequence[np.ndarray], seed: int = 0) -> dict[str, list[float]]:
    """IQM, mean and median with 95% intervals of runs stratified by task."""
    est = stats.interval_estimates([np.asarray(x) for x in per_task], seed=seed)
    return {name: est[name].rounded() for name in stats.AGGREGATES}


def rank(rows: Sequence[dict[str, Any]]) -> list[int]:
    """Row indices best first: by IQM, ties (common at a task's top score) broken by the mean,
    then by the IQM interval's low end; rows without a score last."""

    def key(i: int) -> tuple[float, ...]:
        agg = rows[i].get("normalized")
        if agg is None:
            return (-math.inf,) * 3
        return (agg["iqm"][0], agg["mean"][0], agg["iqm"][1])

    return sorted(range(len(rows)), key=key, reverse=True)


def stage_keys(stage: str, num_seeds: int) -> np.ndarray:
    """[num_seeds, 2] uint32 key data of a stage's seeds (the driver's layout_runs: seed s of
    every setting gets split(key(base), num_seeds)[s])."""
    import jax

    keys = jax.random.split(jax.random.key(STAGE_SEEDS[stage]), num_seeds)
    return np.asarray(jax.random.key_data(keys))


def rounded(value: float, digits: int = SIGNIFICANT) -> float:
    """`value` to `digits` significant digits."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


# ---------------------------------------------------------------------------------------------
# Jobs: one run folder each, with the settings it must hold.
# ---------------------------------------------------------------------------------------------


class Job(NamedTuple):
    """One folder of a stage: one compiled program on one task."""

    folder: Path
    stage: str
    task: str
    static: str  # the static program's name (coarse, finalists) or the group's label
    names: tuple[str, ...]  # the candidate each grid setting stands for, in grid order
    argv: tuple[str, ...]  # `purejaxppo train` arguments (without --out) for CLI jobs
    sweep: Any  # (Config, HParams, Grid) for train_sweep jobs; None for CLI jobs
    num_seeds: int
    seed: int
    steps: int
    # Each candidate's values of the family's traced fields, in grid order (train_sweep jobs: the
    # grid holds only the fields in which the candidates differ); None: the grid's settings.
    settings: tuple[dict[str, float], ...] | None = None


def cli_args(argv: Sequence[str]) -> argparse.Namespace:
    from purejaxppo.cli import build_parser

    return build_parser().parse_args(["train", *argv, "--out", "-"])


def resolve_argv(argv: Sequence[str]) -> tuple[Any, Any, Any]:
    """(Config, HParams, Grid) the `train` command would run for these arguments, found the
    way the command finds them (presets, --config, --set, a random search's draws)."""
    from purejaxppo.cli import UsageError, settings_from_args
    from purejaxppo.sweep import make_grid, random_search

    args = cli_args(argv)
    try:
        config, hparams, traced, static = settings_from_args(args)
    except UsageError as err:
        raise TuneError(f"train {' '.join(argv)}: {err}") from None
    if static:
        raise TuneError(f"train {' '.join(argv)}: a tuning job sweeps traced fields only")
    grid = random_search(traced, args.samples, args.seed) if args.samples else make_grid(traced)
    return config, hparams, grid


def expected_record(job: Job) -> dict[str, Any]:
    """The folder's config.json as this job would write it, less the device count."""
    from purejaxppo.record import settings_record

    config, hparams, grid = job.sweep if job.sweep is not None else resolve_argv(job.argv)
    record = settings_record(config, hparams, grid, job.num_seeds, job.seed, 1)
    record = json.loads(json.dumps(record))
    record.pop("devices")
    record.pop("schedule", None)
    return record


def random_job(family: Family, task: str, runs: Path) -> Job:
    """The random-policy runs of a task: its preset with learning rate 0 (the initial policy)."""
    seeds, seed = STAGE_NUM_SEEDS["random"], STAGE_SEEDS["random"]
    argv = (
        "--env",
        task,
        "--num-seeds",
        str(seeds),
        "--seed",
        str(seed),
        "--total-timesteps",
        str(RANDOM_STEPS),
        *family.start,
        "--set",
        "learning_rate=0",
    )
    return Job(
        runs / family.name / "random" / task_label(task),
        "random",
        task,
        "random",
        ("random",),
        argv,
        None,
        seeds,
        seed,
        RANDOM_STEPS,
    )


def coarse_jobs(family: Family, runs: Path, budget: float) -> list[Job]:
    """One random search per static program and coarse task, as the command line runs it."""
    seeds, seed = STAGE_NUM_SEEDS["coarse"], STAGE_SEEDS["coarse"]
    draws = num_draws(family, budget)
    jobs = []
    for static, sets in family.statics.items():
        for task in family.coarse_tasks:
            argv = (
                "--env",
                task,
                "--num-seeds",
                str(seeds),
                "--total-timesteps",
                str(family.steps),
                "--seed",
                str(seed),
                *family.start,
                "--set",
                *sets,
                *family.base,
                "--samples",
                str(draws),
                "--sweep",
                *family.space,
            )
            names = tuple(f"{static}-{i}" for i in range(draws))
            folder = runs / family.name / "coarse" / static / task_label(task)
            jobs.append(
                Job(folder, "coarse", task, static, names, argv, None, seeds, seed, family.steps)
            )
    return jobs


class Candidate(NamedTuple):
    """A setting to train on every task: `train` arguments over the task's preset."""

    name: str
    argv: tuple[str, ...]


def setting_argv(family: Family, static: str, setting: dict[str, float]) -> tuple[str, ...]:
    """`--set` arguments for one traced setting of a static program."""
    traced = [f"{k}={v!r}" for k, v in setting.items()]
    return (*family.start, "--set", *family.statics[static], *family.base, *traced)


def group_jobs(
    family: Family,
    stage: str,
    candidates: Sequence[Candidate],
    runs: Path,
    steps: int,
    num_seeds: int,
    label: Callable[[list[str]], str],
) -> list[Job]:
    """Per task, the candidates that resolve to the same Config train as one program whose
    Grid holds their traced settings (the fields in which they differ)."""
    from purejaxppo.sweep import HPARAM_NAMES, Grid

    seed = STAGE_SEEDS[stage]
    traced = [item.split("=")[0] for item in family.space]
    jobs = []
    for task in family.tasks:
        groups: dict[Any, list[tuple[str, Any]]] = {}
        for cand in candidates:
            argv = ("--env", task, "--total-timesteps", str(steps), *cand.argv)
            config, hparams, _ = resolve_argv(argv)
            groups.setdefault(config, []).append((cand.name, hparams))
        for config, members in groups.items():
            names = [n for n, _ in members]
            hps = [h for _, h in members]
            fields = tuple(f for f in HPARAM_NAMES if len({float(getattr(h, f)) for h in hps}) > 1)
            grid = Grid(fields, tuple({f: float(getattr(h, f)) for f in fields} for h in hps))
            folder = runs / stage_dir(family, stage, steps) / label(names) / task_label(task)
            settings = tuple({f: float(getattr(h, f)) for f in traced} for h in hps)
            jobs.append(
                Job(
                    folder,
                    stage,
                    task,
                    label(names),
                    tuple(names),
                    (),
                    (config, hps[0], grid),
                    num_seeds,
                    seed,
                    steps,
                    settings,
                )
            )
    return jobs


def stage_dir(family: Family, stage: str, steps: int) -> str:
    """FAMILY/STAGE at the tuning budget, FAMILY/STAGE@STEPS at any other."""
    return f"{family.name}/{stage}" + ("" if steps == family.steps else f"@{steps}")


# ---------------------------------------------------------------------------------------------
# Training a job: reuse, resume, or train.
# ---------------------------------------------------------------------------------------------


def read_summary(folder: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and "env" in summary else None


def requested_steps(job: Job) -> int:
    """Env steps per run the trainer does for the job: whole updates (steps // batch)."""
    config = job.sweep[0] if job.sweep is not None else resolve_argv(job.argv)[0]
    return config.num_updates * config.batch_size


def same_record(a: Any, b: Any) -> bool:
    """Equal JSON records, floats equal to 1e-9 relative: a random search's draws differ in
    the last bit between machines (exp and log of another libm)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_record(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_record(x, y) for x, y in zip(a, b, strict=True))
    numbers = [isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)]
    if all(numbers):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def current_record(raw: Any) -> Any:
    """A config.json as this version writes it: a field added since the run was recorded gets
    its default, which is what the run did (a new field's default keeps the behaviour before
    it), as `purejaxppo train --resume` reads the record. A record the trainer refuses is
    returned as it is (the comparison then names what differs)."""
    from purejaxppo.record import RecordError, RunRecord, settings_record

    try:
        sweep = RunRecord.from_record(raw).sweep
    except RecordError:
        return raw
    record = settings_record(
        sweep.config, sweep.hparams, sweep.grid, sweep.num_seeds, sweep.seed, 1
    )
    return {**raw, **json.loads(json.dumps(record)), "devices": raw.get("devices", 1)}


def job_state(job: Job) -> str:
    """'finished', 'stopped' (a summary of fewer steps, or none with a config.json) or 'new';
    raises TuneError when the folder holds other settings than the job's."""
    if not (job.folder / "config.json").is_file():
        return "new"
    try:
        recorded = json.loads((job.folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise TuneError(f"{job.folder}: config.json is unreadable ({err})") from None
    recorded = current_record(recorded)
    # The device count and the checkpoint schedule do not change what a run learns.
    recorded = {k: v for k, v in recorded.items() if k not in ("devices", "schedule")}
    expected = expected_record(job)
    if not same_record(recorded, expected):
        differ = sorted(
            k
            for k in set(recorded) | set(expected)
            if not same_record(recorded.get(k), expected.get(k))
        )
        raise TuneError(
            f"{job.folder} holds another run than the {job.stage} stage plans (it differs in "
            f"{', '.join(differ)}); move it away, or use another --runs"
        )
    summary = read_summary(job.folder)
    if (
        summary is not None
        and "interrupted_at_update" not in summary
        and summary.get("total_timesteps") == requested_steps(job)
    ):
        return "finished"
    return "stopped"


def machine_note() -> dict[str, Any]:
    from benchmarks.throughput import machine

    info = machine()
    import jax

    info["devices"] = jax.local_device_count()
    return info


def run_job(job: Job, log: Callable[[str], None]) -> None:
    """Train the job's folder to the end, unless it is finished already."""
    state = job_state(job)
    if state == "finished":
        log(f"{job.folder}: finished, reused")
        return
    t0 = time.time()
    log(f"{job.folder}: {'resuming' if state == 'stopped' else 'training'}")
    if job.sweep is None:
        train_cli(job, resume=state == "stopped")
    else:
        from purejaxppo.driver import train_sweep
        from purejaxppo.record import Options, Sweep

        config, hparams, grid = job.sweep
        options = Options(
            checkpoint_every=max(1, config.num_updates // CHECKPOINTS_PER_RUN),
            resume=state == "stopped",
        )
        summary = train_sweep(
            job.folder, Sweep(config, hparams, grid, job.num_seeds, job.seed), options
        )
        if "interrupted_at_update" in summary:
            raise KeyboardInterrupt
    from purejaxppo.files import write_atomic

    write_atomic(job.folder / "tune_machine.json", json.dumps(machine_note(), indent=2).encode())
    log(f"{job.folder}: done in {time.time() - t0:.0f} s")


def train_cli(job: Job, resume: bool) -> None:
    """`purejaxppo train` for a job, as a user runs it (checkpointing a tenth of the way)."""
    config = resolve_argv(job.argv)[0]
    every = str(max(1, config.num_updates // CHECKPOINTS_PER_RUN))
    if resume:
        args = ["--resume", str(job.folder)]
    else:
        args = [*job.argv, "--out", str(job.folder)]
    cmd = [sys.executable, "-m", "purejaxppo.cli", "train", *args, "--checkpoint-every", every]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode == 130:
        raise KeyboardInterrupt
    if proc.returncode != 0:
        raise TuneError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")


# ---------------------------------------------------------------------------------------------
# Reading a job's results.
# ---------------------------------------------------------------------------------------------


class Result(NamedTuple):
    """A finished folder's runs: final returns per setting and seed, curves, cost."""

    job: Job
    finals: np.ndarray  # [settings, seeds]; NaN for a diverged run or one without episodes
    window: int  # updates in the final window
    steps: np.ndarray  # [updates] env steps per run
    returns: np.ndarray  # [settings, seeds, updates] episode return, carried forward
    all_training: np.ndarray  # [settings, seeds] mean return of every episode


def load_result(job: Job) -> Result | None:
    """The job's results if its folder is finished (None otherwise)."""
    if job_state(job) != "finished":
        return None
    summary = read_summary(job.folder)
    with np.load(job.folder / "metrics.npz") as data:
        metrics = {k: np.asarray(data[k]) for k in ("episode_return", "episodes", "env_steps")}
    finals, window = run_finals(metrics)
    for d in summary.get("diverged", []):
        finals[int(d["setting"]), int(d["seed"])] = np.nan
    returns = stats.forward_fill(metrics["episode_return"])
    all_training = episode_mean(metrics["episode_return"], metrics["episodes"])
    return Result(job, finals, window, metrics["env_steps"], returns, all_training)


def folder_cost(folder: Path) -> dict[str, Any] | None:
    """Device-seconds a folder took, from its summary.json, and the machine it ran on."""
    summary = read_summary(folder)
    if summary is None:
        return None
    seconds = (summary.get("compile_seconds") or 0) + (summary.get("run_seconds") or 0)
    devices = int(summary.get("devices", 1))
    machine = None
    for path in (
        folder / "tune_machine.json",
        folder.parent / "machine.json",
        folder.parent.parent / "machine.json",
    ):
        if path.is_file():
            machine = json.loads(path.read_text())
            break
    return {
        "device_seconds": round(seconds * devices, 1),
        "devices": devices,
        "machine": machine_label(machine),
    }


def machine_label(machine: dict[str, Any] | None) -> str:
    if machine is None:
        return "not recorded"
    if "label" in machine:
        return str(machine["label"])
    return f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {machine.get('backend')}"


# ---------------------------------------------------------------------------------------------
# Choices made once: references, finalists, winner.
# ---------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, data: Any) -> None:
    from purejaxppo.files import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2).encode())


class Scale(NamedTuple):
    """Per task: the random-policy score and the reference, each with where it came from."""

    random: dict[str, tuple[float, str]]
    reference: dict[str, tuple[float, str]]

    def normalized(self, task: str, x: np.ndarray) -> np.ndarray:
        return normalize(x, self.random[task][0], self.reference[task][0])

    def covers(self, task: str) -> bool:
        return task in self.random and task in self.reference


def random_scores(family: Family, runs: Path, train: bool, log: Callable) -> dict:
    """task -> (random-policy score, source): the family's published ones, else measured."""
    out = {t: (v, family.random_source) for t, v in family.random.items()}
    for task in family.tasks:
        if task in out:
            continue
        job = random_job(family, task, runs)
        if train:
            run_job(job, log)
        result = load_result(job)
        if result is not None:
            value = float(np.nanmean(result.all_training))
            out[task] = (round(value, 3), f"measured in {job.folder}: {family.random_source}")
    return out


def references(
    family: Family, runs: Path, stage_results: dict[str, list[Result]]
) -> dict[str, tuple[float, str]]:
    """task -> (reference, source): the family's stated one, else fixed once from the first
    stage (coarse, finalists, confirm) with a finished folder on the task: the best setting's
    mean final return over that stage's finished folders on it."""
    path = runs / family.name / "references.json"
    fixed = read_json(path)
    out = {t: (v, family.reference_source) for t, v in family.reference.items()}
    changed = False
    for task in family.tasks:
        if task in out:
            continue
        if task in fixed:
            out[task] = (fixed[task]["value"], fixed[task]["source"])
            continue
        for stage in ("coarse", "finalists", "confirm"):
            mine = [r for r in stage_results.get(stage, []) if r.job.task == task]
            if not mine:
                continue
            best, where = -math.inf, ""
            for r in mine:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    means = np.nanmean(r.finals, axis=1)
                h = int(np.nanargmax(means))
                if means[h] > best:
                    best, where = float(means[h]), f"{r.job.folder} setting {r.job.names[h]}"
            source = (
                f"best setting's mean final return in the {stage} stage ({where}), fixed "
                f"{time.strftime('%Y-%m-%d')}"
            )
            fixed[task] = {"value": round(best, 3), "source": source}
            out[task] = (round(best, 3), source)
            changed = True
            break
    if changed:
        write_json(path, fixed)
    return out


# ---------------------------------------------------------------------------------------------
# Stages.
# ---------------------------------------------------------------------------------------------


def settings_scores(results: Sequence[Result], scale: Scale, tasks: Sequence[str]) -> list[dict]:
    """One row per candidate found in the results: its grid setting, per-task raw finals and,
    where every task of `tasks` is finished for it, its normalized aggregates."""
    rows: dict[str, dict[str, Any]] = {}
    for r in results:
        grid_settings = candidate_settings(r.job)
        for h, name in enumerate(r.job.names):
            row = rows.setdefault(
                name,
                {"name": name, "static": r.job.static, "setting": grid_settings[h], "tasks": {}},
            )
            finals = r.finals[h]
            row["tasks"][r.job.task] = {
                "finals": [None if not np.isfinite(x) else round(float(x), 3) for x in finals],
                "mean": None
                if not np.isfinite(finals).any()
                else round(float(np.nanmean(finals)), 3),
                "window_updates": r.window,
            }
    out = []
    for i, row in enumerate(rows.values()):
        per_task = []
        for task in tasks:
            cell = row["tasks"].get(task)
            if cell is None or not scale.covers(task):
                break
            x = np.array([v for v in cell["finals"] if v is not None], np.float64)
            if x.size == 0:
                break
            per_task.append(scale.normalized(task, x))
        else:
            row["normalized"] = aggregate(per_task, seed=i)
        out.append(row)
    return out


def candidate_settings(job: Job) -> list[dict[str, float]]:
    """Each grid setting's values of the family's traced fields."""
    if job.settings is not None:
        return list(job.settings)
    recorded = json.loads((job.folder / "config.json").read_text())
    return list(recorded["grid"]["settings"])


def coarse_ranking(family: Family, jobs: list[Job], results: list[Result], scale: Scale) -> dict:
    """Per static program: the coarse tasks it finished; the settings of the programs finished
    on every coarse task ranked together by normalized IQM over those tasks; the others
    reported on what they have, apart."""
    by_static: dict[str, list[Result]] = {}
    for r in results:
        by_static.setdefault(r.job.static, []).append(r)
    statics = {}
    eligible_rows: list[dict] = []
    for static in family.statics:
        done = [r.job.task for r in by_static.get(static, [])]
        missing = [t for t in family.coarse_tasks if t not in done]
        tasks = [t for t in family.coarse_tasks if t in done]
        rows = settings_scores(by_static.get(static, []), scale, tasks) if tasks else []
        order = rank(rows)
        statics[static] = {
            "tasks_finished": tasks,
            "tasks_missing": missing,
            "complete": not missing,
            "ranked_on": tasks,
            "settings": [rows[i] for i in order],
        }
        if not missing:
            eligible_rows += rows
    order = rank(eligible_rows)
    return {
        "statics": statics,
        "ranking": [eligible_rows[i]["name"] for i in order],
        "rows": {row["name"]: row for row in eligible_rows},
        "static_comparison": compare_statics(family, by_static),
    }


def compare_statics(family: Family, by_static: dict[str, list[Result]]) -> dict[str, Any]:
    """On each coarse task two or more static programs finished (with the same draws and
    seeds): per program, the best setting's mean, the IQM [CI] of all its runs (the search's
    spread), and P(a run of one > a run of the other) for every pair."""
    out: dict[str, Any] = {}
    for task in family.coarse_tasks:
        have = {
            s: next(r for r in rs if r.job.task == task)
            for s, rs in by_static.items()
            if any(r.job.task == task for r in rs)
        }
        if len(have) < 2:
            continue
        runs = {s: r.finals[np.isfinite(r.finals)] for s, r in have.items()}
        row: dict[str, Any] = {"programs": {}, "p_row_over_column": {}}
        for i, (s, r) in enumerate(have.items()):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                means = np.nanmean(r.finals, axis=1)
            row["programs"][s] = {
                "best_setting_mean": round(float(np.nanmax(means)), 3),
                "best_setting": r.job.names[int(np.nanargmax(means))],
                "all_runs_iqm": stats.interval_estimates(runs[s], seed=i)["iqm"].rounded(3),
                "runs": int(runs[s].size),
            }
        for a in have:
            for b in have:
                if a != b:
                    p = stats.probability_of_improvement(runs[a], runs[b], reps=500)
                    row["p_row_over_column"][f"{a} > {b}"] = p.rounded(3)
        out[task] = row
    return out


def extra_folders(family: Family, runs: Path, scored: set[Path]) -> list[dict[str, Any]]:
    """Coarse folders with a summary that are not among the scored (finished, planned) ones: a
    stopped run, a task outside the coarse subset. Their steps, shown apart, never scored."""
    out = []
    root = runs / family.name / "coarse"
    for summary_path in sorted(root.glob("*/*/summary.json")):
        folder = summary_path.parent
        summary = read_summary(folder)
        if summary is None or folder in scored:
            continue
        with np.load(folder / "metrics.npz") as data:
            metrics = {k: np.asarray(data[k]) for k in ("episode_return", "episodes")}
        finals, window = run_finals(metrics)
        out.append(
            {
                "folder": str(folder),
                "static": folder.parent.name,
                "task": summary["env"],
                "steps_done": int(summary.get("total_timesteps", 0)),
                "steps_requested": family.steps,
                "stopped": "interrupted_at_update" in summary,
                "window_updates": window,
                "finals": finals,
            }
        )
    return out


def choose_finalists(family: Family, ranking: dict, k: int, runs: Path) -> list[dict[str, Any]]:
    """The top k coarse settings, fixed once in choices.json."""
    path = runs / family.name / "choices.json"
    choices = read_json(path)
    if "finalists" in choices:
        return choices["finalists"]
    if not ranking["ranking"]:
        raise TuneError(
            f"{family.name}: no static program has finished the coarse stage on every coarse "
            f"task ({', '.join(family.coarse_tasks)}); run --stage coarse first"
        )
    picked = []
    for name in ranking["ranking"][:k]:
        row = ranking["rows"][name]
        picked.append(
            {
                "name": name,
                "static": row["static"],
                "setting": row["setting"],
                "coarse_normalized": row["normalized"],
            }
        )
    choices["finalists"] = picked
    write_json(path, choices)
    return picked


def finalist_jobs(family: Family, finalists: list[dict], runs: Path) -> list[Job]:
    cands = [
        Candidate(f["name"], setting_argv(family, f["static"], f["setting"])) for f in finalists
    ]
    statics = {f["name"]: f["static"] for f in finalists}
    return group_jobs(
        family,
        "finalists",
        cands,
        runs,
        family.steps,
        STAGE_NUM_SEEDS["finalists"],
        lambda names: statics[names[0]],
    )


def choose_winner(
    family: Family,
    runs: Path,
    source: str,
    finalists_rows: list[dict] | None,
    coarse: dict | None,
) -> dict[str, Any]:
    """The best finalist (or best coarse setting), its continuous values rounded, fixed once."""
    path = runs / family.name / "choices.json"
    choices = read_json(path)
    if "winner" in choices:
        return choices["winner"]
    if source == "finalists":
        if not finalists_rows or any("normalized" not in r for r in finalists_rows):
            raise TuneError(
                f"{family.name}: the finalists stage has not finished on every task; run "
                "--stage finalists first (or --winner-from coarse)"
            )
        best = finalists_rows[rank(finalists_rows)[0]]
        basis = {"finalists_normalized": best["normalized"]}
    else:
        if coarse is None or not coarse["ranking"]:
            raise TuneError(f"{family.name}: no finished coarse ranking to choose a winner from")
        best = coarse["rows"][coarse["ranking"][0]]
        basis = {"coarse_normalized": best["normalized"]}
    continuous = {item.split("=")[0] for item in family.space if ":" in item}
    setting = {k: (rounded(v) if k in continuous else v) for k, v in best["setting"].items()}
    winner = {
        "name": "winner",
        "from": source,
        "draw": best["name"],
        "static": best["static"],
        "setting": setting,
        "exact_setting": best["setting"],
        **basis,
    }
    choices["winner"] = winner
    write_json(path, choices)
    return winner


def confirm_candidates(family: Family, winner: dict, anchors: Sequence[str]) -> list[Candidate]:
    cands = [Candidate("winner", setting_argv(family, winner["static"], winner["setting"]))]
    cands += [Candidate(a, family.anchors[a]) for a in anchors]
    return cands


def confirm_jobs(family: Family, cands: list[Candidate], runs: Path, steps: int) -> list[Job]:
    return group_jobs(
        family,
        "confirm",
        cands,
        runs,
        steps,
        STAGE_NUM_SEEDS["confirm"],
        lambda names: "+".join(names),
    )


# ---------------------------------------------------------------------------------------------
# Peer anchors: another implementation's PPO, one run per JSON file.
# ---------------------------------------------------------------------------------------------


def peer_seeds() -> list[int]:
    """The confirmation's seed count, as the integer seeds another trainer takes (300, 301, ...:
    the confirmation's PRNG seed and up, so never a seed of the search)."""
    return [STAGE_SEEDS["confirm"] + k for k in range(STAGE_NUM_SEEDS["confirm"])]


def peer_folder(family: Family, runs: Path, steps: int, peer: str, task: str) -> Path:
    return runs / stage_dir(family, "peers", steps) / peer / task_label(task)


def brax_ppo_run(task: str, seed: int, steps: int) -> dict[str, Any]:
    """brax's PPO with its published settings on one brax:NAME@BACKEND task, in its own venv."""
    from benchmarks.peers.runner import run_peer

    name, _, backend = task.removeprefix("brax:").partition("@")
    args = ["--settings", "published", "--env", name, "--backend", backend or "positional"]
    return run_peer("brax", [*args, "--seed", str(seed), "--total-timesteps", str(steps)])


PEER_RUNNERS: dict[str, Callable[[str, int, int], dict[str, Any]]] = {"brax-ppo": brax_ppo_run}


def run_peers(
    family: Family,
    runs: Path,
    steps: int,
    log: Callable[[str], None],
    tasks: Sequence[str] | None = None,
) -> None:
    """Every peer run not yet recorded on the family's tasks (or those of `tasks`, by folder
    label, in that order), a task's seeds in order; each run's JSON is written atomically when
    it ends, so a stopped session loses at most the run in progress."""
    by_label = {task_label(t): t for t in family.tasks}
    chosen = family.tasks if tasks is None else [by_label[t] for t in tasks]
    for peer in family.trained_peers:
        for task in chosen:
            folder = peer_folder(family, runs, steps, peer, task)
            for seed in peer_seeds():
                path = folder / f"seed-{seed}.json"
                if path.exists():
                    continue
                log(f"{folder}: {peer} seed {seed}: training")
                t0 = time.time()
                write_json(path, PEER_RUNNERS[peer](task, seed, steps))
                log(f"{folder}: {peer} seed {seed}: done in {time.time() - t0:.0f} s")


def load_peer_result(
    family: Family, runs: Path, steps: int, peer: str, task: str
) -> tuple[Result, list[dict[str, Any]]] | None:
    """A peer's runs on a task as a Result, with their records (None until every seed is
    recorded): the per-update episode returns and counts it recorded, scored by our final-return
    window."""
    folder = peer_folder(family, runs, steps, peer, task)
    paths = [folder / f"seed-{seed}.json" for seed in peer_seeds()]
    if not all(p.exists() for p in paths):
        return None
    recs = [read_json(p) for p in paths]
    lengths = {len(r["env_steps"]) for r in recs}
    if len(lengths) != 1:
        raise TuneError(f"{folder}: its runs recorded different numbers of training steps")
    ret = np.array([[np.nan if x is None else x for x in r["episode_return"]] for r in recs])
    metrics = {
        "episode_return": ret[None].astype(np.float64),
        "episodes": np.array([r["episodes"] for r in recs])[None],
        "env_steps": np.asarray(recs[0]["env_steps"]),
    }
    finals, window = run_finals(metrics)
    job = Job(folder, "peers", task, peer, (peer,), (), None, len(recs), peer_seeds()[0], steps)
    returns = stats.forward_fill(metrics["episode_return"])
    all_training = episode_mean(metrics["episode_return"], metrics["episodes"])
    return Result(job, finals, window, metrics["env_steps"], returns, all_training), recs


def peer_table(
    family: Family,
    loaded: dict[str, list[tuple[Result, list[dict[str, Any]]]]],
    winner: list[Result],
    scale: Scale,
) -> dict[str, Any]:
    """Per peer with finished tasks (load_peer_result's, by peer): the winner beside it
    (confirm_table of the two) and what its runs were (steps actually trained, its trainer's
    own deterministic evaluation, wall time)."""
    out: dict[str, Any] = {}
    for peer, done in loaded.items():
        if not done:
            continue
        mine = [r for r, _ in done]
        table = confirm_table(family, winner + mine, scale, ["winner", peer])
        runs_info: dict[str, Any] = {}
        for r, recs in done:
            runs_info[r.job.task] = {
                "total_timesteps": recs[0]["total_timesteps"],
                "training_steps": len(recs[0]["env_steps"]),
                "final_window_updates": r.window,
                "eval_return_mean": round(float(np.mean([x["eval_return"] for x in recs])), 3),
                "wall_seconds": round(sum(x["wall_seconds"] for x in recs), 1),
                "settings_from": recs[0].get("settings_from"),
                "peer": recs[0]["peer"],
            }
        out[peer] = {**table, "runs": runs_info, "folders": [str(r.job.folder) for r in mine]}
    return out


# ---------------------------------------------------------------------------------------------
# The confirmation's statistics and curves.
# ---------------------------------------------------------------------------------------------


def confirm_table(
    family: Family, results: list[Result], scale: Scale, names: Sequence[str]
) -> dict[str, Any]:
    """Per candidate: normalized aggregates over the tasks every candidate finished, per-task
    IQM [CI]; P(winner > each anchor). Tasks not finished by every candidate are listed."""
    per: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    for r in results:
        for h, name in enumerate(r.job.names):
            if name not in per:  # a candidate of the same folder left out of this table
                continue
            x = r.finals[h]
            per[name][r.job.task] = x[np.isfinite(x)]
    not_run = [n for n in names if not per[n]]
    names = [n for n in names if per[n]]
    tasks = [
        t
        for t in family.tasks
        if all(t in per[n] and per[n][t].size for n in names) and scale.covers(t)
    ]
    table: dict[str, Any] = {
        "tasks": tasks,
        "tasks_missing": [t for t in family.tasks if t not in tasks],
        "not_run": not_run,
        "candidates": {},
    }
    for i, name in enumerate(names):
        row: dict[str, Any] = {"per_task": {}}
        for task, x in per[name].items():
            if x.size:
                est = stats.interval_estimates(x, seed=i)
                row["per_task"][task] = {
                    "iqm": est["iqm"].rounded(3),
                    "runs": int(x.size),
                    "mean": round(float(x.mean()), 3),
                }
        if tasks:
            row["normalized"] = aggregate([scale.normalized(t, per[name][t]) for t in tasks], i)
        table["candidates"][name] = row
    table["p_winner_over"] = {}
    if tasks and "winner" in names:
        for j, name in enumerate(n for n in names if n != "winner"):
            p = stats.probability_of_improvement(
                [per["winner"][t] for t in tasks], [per[name][t] for t in tasks], seed=j
            )
            table["p_winner_over"][name] = p.rounded()
    return table


def plot_confirm(results: list[Result], family: Family, path: Path, title: str) -> bool:
    """Per task: each candidate's IQM learning curve over seeds with its 95% band."""
    from purejaxppo import compare

    tasks = [t for t in family.tasks if any(r.job.task == t for r in results)]
    if not tasks:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(3.8 * len(tasks), 3.3), squeeze=False)
    colors: dict[str, str] = {}
    for ax, task in zip(axes[0], tasks, strict=True):
        for r in (r for r in results if r.job.task == task):
            grid = compare.curve_grid(int(r.steps[-1]))
            for h, name in enumerate(r.job.names):
                runs = types.SimpleNamespace(steps=r.steps, returns=r.returns[h])
                curves = compare.resampled_curves(runs, grid)
                defined = np.isfinite(curves).all(0)
                if not defined.any():
                    continue
                point, low, high = stats.curve_estimates([curves[:, defined]], reps=500)
                color = colors.setdefault(name, f"C{len(colors)}")
                ax.plot(grid[defined], point, color=color, lw=1.3, label=name)
                ax.fill_between(grid[defined], low, high, color=color, alpha=0.2, lw=0)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("env steps per run")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("episode return: IQM over seeds, 95% band")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------
# One family end to end.
# ---------------------------------------------------------------------------------------------


class Options(NamedTuple):
    stages: tuple[str, ...]  # the training stages to run (report always follows)
    runs: Path
    out: Path
    budget: float = 1.0
    finalists: int = 3
    winner_from: str = "finalists"
    anchors: tuple[str, ...] | None = None  # None: all the family's anchors
    confirm_steps: int | None = None  # None: the tuning budget
    peer_tasks: tuple[str, ...] | None = None  # the peers stage's tasks by label; None: all


def tune_family(family: Family, opts: Options, log: Callable[[str], None] = print) -> dict:
    """Run the asked stages of one family and write its record; returns the record."""
    train = set(opts.stages)
    # The random-policy runs belong to the coarse stage; a confirmation in a fresh --runs (the
    # 5x report, say) measures them too, as it cannot normalize without them.
    rand = random_scores(family, opts.runs, bool(train & {"coarse", "confirm"}), log)
    coarse = coarse_jobs(family, opts.runs, opts.budget)
    if "coarse" in train:
        for job in coarse:
            run_job(job, log)
    results = {"coarse": [r for r in map(load_result, coarse) if r is not None]}
    refs = references(family, opts.runs, results)
    scale = Scale(rand, refs)
    ranking = coarse_ranking(family, coarse, results["coarse"], scale)

    finalists = read_json(opts.runs / family.name / "choices.json").get("finalists")
    if "finalists" in train:
        finalists = choose_finalists(family, ranking, opts.finalists, opts.runs)
    fjobs = finalist_jobs(family, finalists, opts.runs) if finalists else []
    if "finalists" in train:
        for job in fjobs:
            run_job(job, log)
    results["finalists"] = [r for r in map(load_result, fjobs) if r is not None]
    refs = references(family, opts.runs, results)
    scale = Scale(rand, refs)
    frows = settings_scores(results["finalists"], scale, family.tasks) if fjobs else []

    winner = read_json(opts.runs / family.name / "choices.json").get("winner")
    if "confirm" in train:
        winner = choose_winner(family, opts.runs, opts.winner_from, frows, ranking)
    anchors = tuple(family.anchors) if opts.anchors is None else opts.anchors
    steps = opts.confirm_steps or family.steps
    cands = confirm_candidates(family, winner, anchors) if winner else []
    cjobs = confirm_jobs(family, cands, opts.runs, steps) if cands else []
    if "confirm" in train:
        # The winner's program first, the coarse tasks (the quicker ones) first within it: a
        # session that ends early has the comparison that matters most on the most tasks.
        def order(job: Job) -> tuple[bool, bool]:
            return "winner" not in job.names, job.task not in family.coarse_tasks

        for job in sorted(cjobs, key=order):
            run_job(job, log)
    results["confirm"] = [r for r in map(load_result, cjobs) if r is not None]
    refs = references(family, opts.runs, results)
    scale = Scale(rand, refs)
    names = [c.name for c in cands]
    confirm = confirm_table(family, results["confirm"], scale, names) if cands else None
    if "peers" in train:
        run_peers(family, opts.runs, steps, log, opts.peer_tasks)
    loaded = {
        peer: [
            x
            for t in family.tasks
            if (x := load_peer_result(family, opts.runs, steps, peer, t)) is not None
        ]
        for peer in family.trained_peers
    }
    winner_results = [r for r in results["confirm"] if "winner" in r.job.names]
    peers = peer_table(family, loaded, winner_results, scale)
    results["peers"] = [r for done in loaded.values() for r, _ in done]

    record = build_record(
        family,
        opts,
        scale,
        coarse,
        ranking,
        finalists,
        frows,
        winner,
        cands,
        cjobs,
        confirm,
        results,
    )
    record["peer_anchors"] = peers
    opts.out.mkdir(parents=True, exist_ok=True)
    write_json(opts.out / f"tune_{family.name}.json", record)
    png = opts.out / f"tune_{family.name}.png"
    if plot_confirm(
        results["confirm"] + results["peers"],
        family,
        png,
        f"{family.name}: confirmation, {steps:,} steps, fresh seeds",
    ):
        # The link as BENCHMARKS.md (at the repository root) reads it: OUT may be a subfolder.
        full = png.resolve()
        record["curves"] = str(full.relative_to(ROOT)) if full.is_relative_to(ROOT) else str(full)
        write_json(opts.out / f"tune_{family.name}.json", record)
    (opts.out / f"tune_{family.name}.md").write_text(markdown(record))
    log(f"wrote {opts.out / f'tune_{family.name}.json'} and .md")
    return record


def stage_cost(folders: Sequence[Path]) -> dict[str, Any]:
    """Device-minutes per machine over the folders that have a summary."""
    per: dict[str, float] = {}
    count = 0
    for folder in folders:
        cost = folder_cost(folder)
        if cost is None:
            continue
        count += 1
        per[cost["machine"]] = per.get(cost["machine"], 0.0) + cost["device_seconds"]
    return {
        "folders": count,
        "device_seconds": {m: round(s, 1) for m, s in per.items()},
        "device_minutes": {m: round(s / 60, 1) for m, s in per.items()},
    }


def cli_command(job: Job) -> str:
    return "purejaxppo train " + " ".join(job.argv) + f" --out {job.folder}"


def build_record(
    family: Family,
    opts: Options,
    scale: Scale,
    coarse: list[Job],
    ranking: dict,
    finalists: list | None,
    frows: list,
    winner: dict | None,
    cands: list[Candidate],
    cjobs: list[Job],
    confirm: dict | None,
    results: dict[str, list[Result]],
) -> dict[str, Any]:
    runs_family = opts.runs / family.name
    extras = extra_folders(family, opts.runs, {r.job.folder for r in results["coarse"]})
    for extra in extras:
        finals = extra.pop("finals")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(finals, axis=1)
        top = [n for n in ranking["ranking"][:5]]
        index = {f"{extra['static']}-{i}": i for i in range(finals.shape[0])}
        extra["top_coarse_settings_mean"] = {
            n: (
                None
                if n not in index or not np.isfinite(means[index[n]])
                else round(float(means[index[n]]), 3)
            )
            for n in top
        }
    rand_folders = [runs_family / "random" / task_label(t) for t in family.tasks]
    extra_paths = [Path(e["folder"]) for e in extras]
    cost = {
        "random": stage_cost(rand_folders),
        "coarse": stage_cost(sorted({j.folder for j in coarse} | set(extra_paths))),
        "finalists": stage_cost(
            [p.parent for p in sorted((runs_family / "finalists").glob("*/*/summary.json"))]
        ),
        "confirm": stage_cost([j.folder for j in cjobs]),
        "reads": "device-minutes = (compile_seconds + run_seconds) x devices from each folder's "
        "summary.json (a resumed run counts its last session only), per machine",
    }
    record: dict[str, Any] = {
        "family": family.name,
        "issue": "24: shipped defaults chosen by our own sweeps",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/tune.py --families "
        + family.name
        + f" --runs {opts.runs}"
        + (f" --budget {opts.budget:g}" if opts.budget != 1 else ""),
        "notes": family.notes,
        "tasks": list(family.tasks),
        "coarse_tasks": list(family.coarse_tasks),
        "budget": {
            "steps_per_run": family.steps,
            "budget_scale": opts.budget,
            "draws_per_static": num_draws(family, opts.budget),
            "finalists": opts.finalists,
        },
        "seeds": {
            stage: {"prng_seed": STAGE_SEEDS[stage], "seeds": STAGE_NUM_SEEDS[stage]}
            for stage in STAGE_SEEDS
        },
        "search_space": list(family.space),
        "base": list(family.base),
        "statics": {k: list(v) for k, v in family.statics.items()},
        "anchors": {k: list(v) for k, v in family.anchors.items()},
        "peers_not_trained": family.peers,
        "published": {"scores": family.published, "source": family.published_source},
        "scoring": {
            "final": "mean return of the episodes ending in the last 5% of updates, widened "
            "until every run of the folder has one (benchmarks/minatar.py final_window)",
            "normalized": "(final - random) / (reference - random), per task",
            "aggregate": "IQM over runs stratified by task, 95% percentile bootstrap "
            "interval (purejaxppo.stats), 2000 replicates; ranked by IQM, then mean",
        },
        "random": {t: {"value": v, "source": s} for t, (v, s) in scale.random.items()},
        "reference": {t: {"value": v, "source": s} for t, (v, s) in scale.reference.items()},
        "coarse": {
            "commands": [cli_command(j) for j in coarse],
            "statics": ranking["statics"],
            "ranking": ranking["ranking"],
            "static_comparison": ranking["static_comparison"],
            "extra_not_scored": extras,
        },
        "finalists": None,
        "winner": winner,
        "confirm": None,
        "cost": cost,
    }
    if finalists:
        record["finalists"] = {
            "chosen": finalists,
            "tasks": list(family.tasks),
            "rows": [frows[i] for i in rank(frows)],
        }
    if winner:
        sets = setting_argv(family, winner["static"], winner["setting"])
        resolved = {}
        for task in family.tasks:
            config, hparams, _ = resolve_argv(("--env", task, *sets))
            resolved[task] = json.loads(
                json.dumps({"config": vars(config), "hparams": vars(hparams)})
            )
        # The winner's own assignments (after the family's start settings and "--set").
        own = sets[len(family.start) + 1 :]
        record["winner"] = {
            **winner,
            "start": " ".join(family.start),
            "set": " ".join(own),
            "resolved": resolved,
        }
    if confirm is not None:
        record["confirm"] = {
            "steps_per_run": cjobs[0].steps if cjobs else None,
            "candidates": {c.name: list(c.argv) for c in cands},
            "folders": sorted({str(j.folder) for j in cjobs}),
            "finished": sorted({str(r.job.folder) for r in results["confirm"]}),
            **confirm,
        }
    return record


# ---------------------------------------------------------------------------------------------
# The markdown summary.
# ---------------------------------------------------------------------------------------------


def fmt(v: Sequence[float] | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v[0]:.{digits}g} [{v[1]:.{digits}g}, {v[2]:.{digits}g}]"


def short_setting(setting: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3g}" for k, v in setting.items())


def markdown(record: dict[str, Any]) -> str:
    fam = record["family"]
    b = record["budget"]
    lines = [
        f"## Tuning the {fam} defaults (`benchmarks/tune.py`, issue 24)",
        "",
        f"{record['notes']}",
        "",
        f"Budget {b['steps_per_run']:,} env steps per run; {b['draws_per_static']} random draws "
        f"per static program; seeds (PRNG seed, count): "
        + ", ".join(f"{s} {v['prng_seed']} x{v['seeds']}" for s, v in record["seeds"].items())
        + f". Space: `{' '.join(record['search_space'])}`; base `{' '.join(record['base'])}`. "
        f"Score: {record['scoring']['final']}; normalized {record['scoring']['normalized']}; "
        f"{record['scoring']['aggregate']}.",
        "",
        "| task | random | reference |",
        "|---|---:|---|",
    ]
    for task in record["tasks"]:
        r, ref = record["random"].get(task), record["reference"].get(task)
        lines.append(
            f"| {task} | {r['value'] if r else '-'} | "
            f"{ref['value'] if ref else '-'} ({ref['source'] if ref else 'not yet'}) |"
        )
    lines += ["", "### Coarse search", ""]
    for static, info in record["coarse"]["statics"].items():
        if not info["tasks_finished"]:
            lines.append(f"- `{static}`: not run ({', '.join(info['tasks_missing'])} missing)")
            continue
        state = (
            "ranked with the others"
            if info["complete"]
            else f"finished on {', '.join(info['tasks_finished'])} only: NOT ranked with the "
            "complete programs"
        )
        lines.append(f"- `{static}`: {state}")
    lines += [
        "",
        "Top coarse settings (programs finished on every coarse task):",
        "",
        "| setting | normalized IQM [95% CI] | "
        + " | ".join(f"{t} mean" for t in record["coarse_tasks"])
        + " | values |",
        "|---|---|" + "---:|" * len(record["coarse_tasks"]) + "---|",
    ]
    rows = {}
    for info in record["coarse"]["statics"].values():
        for row in info["settings"]:
            rows[row["name"]] = row
    for name in record["coarse"]["ranking"][:10]:
        row = rows[name]
        cells = [str(row["tasks"].get(t, {}).get("mean", "-")) for t in record["coarse_tasks"]]
        lines.append(
            f"| {name} | {fmt(row['normalized']['iqm'])} | "
            + " | ".join(cells)
            + f" | {short_setting(row['setting'])} |"
        )
    for static, info in record["coarse"]["statics"].items():
        if info["tasks_finished"] and not info["complete"]:
            lines += ["", f"`{static}` on {', '.join(info['ranked_on'])} only (its best 5):", ""]
            for row in info["settings"][:5]:
                cells = [f"{t} {row['tasks'][t]['mean']}" for t in info["ranked_on"]]
                lines.append(
                    f"- {row['name']}: {', '.join(cells)}; {short_setting(row['setting'])}"
                )
    for task, cmp in record["coarse"]["static_comparison"].items():
        lines += [
            "",
            f"Static programs on {task} (the same {b['draws_per_static']} draws and seeds):",
            "",
            "| program | best setting's mean | IQM of all its runs [95% CI] |",
            "|---|---:|---|",
        ]
        for static, prog in cmp["programs"].items():
            lines.append(
                f"| {static} | {prog['best_setting_mean']} ({prog['best_setting']}) | "
                f"{fmt(prog['all_runs_iqm'])} |"
            )
        lines.append("")
        lines.append("; ".join(f"P({k}) = {fmt(v)}" for k, v in cmp["p_row_over_column"].items()))
    if record["coarse"]["extra_not_scored"]:
        lines.append("")
    for extra in record["coarse"]["extra_not_scored"]:
        lines.append(
            f"- not scored: `{extra['static']}` on {extra['task']} stopped at "
            f"{extra['steps_done']:,} of {extra['steps_requested']:,} steps; the top coarse "
            f"settings' mean final return there: {extra['top_coarse_settings_mean']}"
        )
    if record["finalists"]:
        lines += [
            "",
            "### Finalists (all tasks, new seeds)",
            "",
            "| setting | normalized IQM [95% CI] | "
            + " | ".join(f"{t} mean" for t in record["tasks"])
            + " |",
            "|---|---|" + "---:|" * len(record["tasks"]),
        ]
        for row in record["finalists"]["rows"]:
            cells = [str(row["tasks"].get(t, {}).get("mean", "-")) for t in record["tasks"]]
            lines.append(
                f"| {row['name']} | {fmt(row.get('normalized', {}).get('iqm'))} | "
                + " | ".join(cells)
                + " |"
            )
    if record["winner"]:
        w = record["winner"]
        lines += [
            "",
            f"**Winner** (from the {w['from']} stage, draw {w['draw']}): "
            f"`{(w.get('start', '') + ' --set').strip()} {w['set']}`",
        ]
    c = record["confirm"]
    if c:
        lines += ["", f"### Confirmation: {c['steps_per_run']:,} steps, fresh seeds", ""]
        if c["not_run"]:
            lines += [f"Not run (yet): {', '.join(c['not_run'])}.", ""]
        if c["tasks_missing"]:
            lines.append(
                f"Not (yet) finished by every candidate: {', '.join(c['tasks_missing'])}; "
                "the normalized figures cover the other tasks."
            )
            lines.append("")
        lines += [
            "| candidate | normalized IQM [95% CI] | "
            + " | ".join(f"{t} IQM" for t in record["tasks"])
            + " | P(winner > it) |",
            "|---|---|" + "---|" * len(record["tasks"]) + "---|",
        ]
        for name, row in c["candidates"].items():
            cells = [
                fmt(row["per_task"][t]["iqm"]) if t in row["per_task"] else "-"
                for t in record["tasks"]
            ]
            p = fmt(c["p_winner_over"].get(name)) if name != "winner" else "-"
            lines.append(
                f"| {name} | {fmt(row.get('normalized', {}).get('iqm'))} | "
                + " | ".join(cells)
                + f" | {p} |"
            )
        published = record.get("published", {}).get("scores")
        if published:
            cells = [str(published.get(t, "-")) for t in record["tasks"]]
            lines.append("| published (reference) | - | " + " | ".join(cells) + " | - |")
            lines += ["", f"Published: {record['published']['source']}."]
        for peer, pt in record.get("peer_anchors", {}).items():
            lines += [
                "",
                f"#### Peer anchor `{peer}` (same seed count, same final-return window)",
                "",
                "| task | winner IQM | " + f"{peer} IQM | {peer} steps (training steps) | "
                f"{peer} final window (updates) | {peer} own eval (mean) |",
                "|---|---|---|---:|---:|---:|",
            ]
            for task, info in pt["runs"].items():
                rows = pt["candidates"]
                w = rows.get("winner", {}).get("per_task", {}).get(task, {}).get("iqm")
                them = rows.get(peer, {}).get("per_task", {}).get(task, {}).get("iqm")
                lines.append(
                    f"| {task} | {fmt(w)} | {fmt(them)} | {info['total_timesteps']:,} "
                    f"({info['training_steps']}) | {info['final_window_updates']} | "
                    f"{info['eval_return_mean']} |"
                )
            if pt["tasks"]:
                lines += [
                    "",
                    f"Over {', '.join(pt['tasks'])}: normalized IQM winner "
                    f"{fmt(pt['candidates']['winner'].get('normalized', {}).get('iqm'))}, "
                    f"{peer} {fmt(pt['candidates'][peer].get('normalized', {}).get('iqm'))}; "
                    f"P(winner > {peer}) = {fmt(pt['p_winner_over'].get(peer))}.",
                ]
        if record.get("curves"):
            lines += ["", f"![{fam} confirmation curves]({record['curves']})"]
    lines += ["", "Cost (device-minutes: CPU core-minutes or GPU-minutes, per machine):", ""]
    for stage in ("random", "coarse", "finalists", "confirm"):
        cost = record["cost"][stage]
        if cost["folders"]:
            per = "; ".join(f"{m}: {v}" for m, v in cost["device_minutes"].items())
            lines.append(f"- {stage}: {cost['folders']} folders, {per}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--stage", choices=[*STAGES, "all"], default="all")
    parser.add_argument(
        "--budget", type=float, default=1.0, help="scale on the random draws per static program"
    )
    parser.add_argument("--runs", default=str(ROOT / "runs" / "tune"), help="run folders")
    parser.add_argument("--out", default=str(RESULTS), help="where tune_FAMILY.* go")
    parser.add_argument("--finalists", type=int, default=3, help="coarse settings promoted")
    parser.add_argument("--winner-from", choices=("finalists", "coarse"), default="finalists")
    parser.add_argument(
        "--anchors",
        nargs="*",
        default=None,
        help="anchors to confirm (default: all of the family's)",
    )
    parser.add_argument(
        "--confirm-steps",
        type=int,
        default=None,
        help="steps per confirmation run (default: the tuning budget)",
    )
    parser.add_argument(
        "--peer-tasks",
        nargs="+",
        default=None,
        help="the peers stage's tasks, in this order, by folder name (default: every task)",
    )
    args = parser.parse_args(argv)
    if not args.budget > 0:
        parser.error(f"--budget must be positive, got {args.budget}")
    if args.finalists < 1:
        parser.error(f"--finalists must be a positive integer, got {args.finalists}")
    if args.confirm_steps is not None and args.confirm_steps <= 0:
        parser.error(f"--confirm-steps must be positive, got {args.confirm_steps}")
    for name in args.families:
        bad = [a for a in args.anchors or [] if a not in FAMILIES[name].anchors]
        if bad:
            parser.error(f"--anchors {bad[0]}: {name}'s anchors are {list(FAMILIES[name].anchors)}")
        labels = [task_label(t) for t in FAMILIES[name].tasks]
        bad = [t for t in args.peer_tasks or [] if t not in labels]
        if bad:
            parser.error(f"--peer-tasks {bad[0]}: {name}'s tasks are {', '.join(labels)}")
    from purejaxppo.ppo import use_cpu_cores

    use_cpu_cores()  # before JAX starts, as the command line does: train_sweep matches it
    stages = (
        STAGES[:4] if args.stage == "all" else (() if args.stage == "report" else (args.stage,))
    )
    opts = Options(
        stages,
        Path(args.runs),
        Path(args.out),
        args.budget,
        args.finalists,
        args.winner_from,
        None if args.anchors is None else tuple(args.anchors),
        args.confirm_steps,
        None if args.peer_tasks is None else tuple(args.peer_tasks),
    )

    def log(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    try:
        for name in args.families:
            tune_family(FAMILIES[name], opts, log)
    except TuneError as err:
        print(f"tune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tune: stopped; run the same command again to go on", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
