"""brax's own PPO trainer on a brax task, in one of two settings:

  matched    (the default) inverted_pendulum on the positional backend, matched to purejaxppo's
             brax-16x128 preset (the brax default until 2026-12) on that task (BENCHMARKS.md's
             peers table; DIFFERENCES below);
  published  the hyperparameters brax publishes per task (PUBLISHED, from brax's
             notebooks/training.ipynb), on any of the PPO paper's Table-1 tasks and backend, with
             every training episode recorded per training step (the anchor of
             benchmarks/tune.py's brax family, scored by the same final-return window as ours).

Runs in its own venv (requirements-brax.txt); prints one JSON line on stdout:

    python brax_ppo.py --total-timesteps 1000000 --seed 0
    python brax_ppo.py --settings published --env hopper --backend spring --seed 300
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from typing import Any

import brax
import jax
import numpy as np
from brax import envs
from brax.training.agents.ppo import networks as ppo_networks
from brax.training.agents.ppo import train as ppo
from flax import linen

NUM_ENVS = 16
UNROLL_LENGTH = 128
BATCH_SIZE = 2  # trajectories of UNROLL_LENGTH steps per minibatch: 8 x 2 x 128 = 16 x 128
NUM_MINIBATCHES = 8
NUM_EVALS = 11  # one eval before training, then one after each of 10 equal training epochs

DIFFERENCES = [
    "no reward normalization: purejaxppo scales rewards by a running std of the discounted "
    "return (clipped to +-10); brax uses a constant reward_scaling=1",
    "value loss not clipped (brax default clipping_epsilon_value=None); purejaxppo clips it "
    "with clip_coef",
    "constant learning rate: brax has no linear annealing; purejaxppo anneals 3e-4 to 0",
    "Adam eps 1e-8 (optax default); purejaxppo uses 1e-5",
    "policy: tanh-squashed Gaussian whose std is a policy-network output (state-dependent, "
    "softplus + 0.001); purejaxppo uses a Gaussian with a state-independent log-std and clips "
    "actions to [-1, 1]",
    "initialization: lecun_uniform kernels everywhere; purejaxppo uses orthogonal init "
    "(gain sqrt 2 hidden, 0.01 policy head, 1 value head)",
    "advantages and value targets are recomputed for every minibatch from the current value "
    "network; purejaxppo computes GAE once per rollout with the rollout's values",
    "policy advantage is r_t + gamma * vs_{t+1} - V(s_t) (V-trace form, i.e. "
    "delta_t + gamma * A_{t+1} with lambda only inside vs); purejaxppo uses GAE "
    "A_t = delta_t + gamma * lambda * A_{t+1}",
    "minibatches are whole 128-step segments (2 envs x 128 steps, shuffled by segment); "
    "purejaxppo shuffles individual transitions",
    "time-limit truncation: the truncated step's advantage and TD error are zeroed (no bootstrap, "
    "bootstrap_on_timeout needs an info['time_out'] inverted_pendulum does not set); "
    "purejaxppo bootstraps from V(final observation)",
    "observation normalization: running mean/std updated once per update from the whole "
    "rollout, before the SGD epochs, not clipped; purejaxppo updates it at every env step and "
    "clips normalized observations to +-10",
    "auto-reset returns each env to its own first initial state (brax AutoResetWrapper); "
    "purejaxppo draws a fresh random initial state for every episode",
    "training runs 10 whole epochs of ceil(total / (10 * 2048)) updates, so total_timesteps "
    "rounds up (1,003,520 for 1M); purejaxppo runs total // 2048 updates (999,424 for 1M)",
    "jax 0.8.2 (pinned for brax's PPO trainer) and brax's pmap over one CPU device; "
    "purejaxppo runs jit-compiled on jax 0.10.x",
    "final_return: deterministic (tanh of the mean action) evaluation over 16 fresh episodes "
    "after training; purejaxppo's is the mean stochastic training return over the last 5% of "
    "updates",
]


# brax's notebooks/training.ipynb ("We determined some reasonable hyperparameters offline and
# share them here"), read 2026-12-07, less num_timesteps, num_evals and seed. It gives PPO settings
# for inverted_pendulum, inverted_double_pendulum, reacher and halfcheetah; hopper and walker2d
# it trains with SAC, so for them this uses halfcheetah's, the other 2D locomotion task's (stated
# in every record as `settings_from`). The network is brax's default (make_ppo_networks: policy
# 4 x 32, value 5 x 256, swish, tanh-squashed Gaussian), as the notebook passes none.
# Every task's setting shares these; each then states its own, one row per published setting.
_SHARED = dict(num_minibatches=32, learning_rate=3e-4, num_envs=2048)
_COLUMNS = (
    "reward_scaling",
    "unroll_length",
    "num_updates_per_batch",
    "discounting",
    "entropy_cost",
    "batch_size",
    "action_repeat",
)
_POLE = dict(_SHARED, **dict(zip(_COLUMNS, (10, 5, 4, 0.97, 1e-2, 1024, 1), strict=True)))
_CHEETAH = dict(_SHARED, **dict(zip(_COLUMNS, (1, 20, 8, 0.95, 1e-3, 512, 1), strict=True)))
_REACHER = dict(_SHARED, **dict(zip(_COLUMNS, (5, 50, 8, 0.95, 1e-3, 256, 4), strict=True)))
PUBLISHED: dict[str, tuple[str, dict[str, Any]]] = {
    "inverted_pendulum": ("inverted_pendulum", _POLE),
    "inverted_double_pendulum": ("inverted_double_pendulum", _POLE),
    "reacher": ("reacher", _REACHER),
    "halfcheetah": ("halfcheetah", _CHEETAH),
    "hopper": ("halfcheetah", _CHEETAH),
    "walker2d": ("halfcheetah", _CHEETAH),
}


class EpisodeRecorder:
    """Stands in for brax's EpisodeMetricsLogger (brax calls its update_episode_metrics once per
    training step when log_training_metrics is on): per training step, the transitions it
    unrolled and the returns of the episodes that ended in it (terminated or at the time limit;
    EpisodeWrapper's sum_reward at the done step is the whole episode's return)."""

    steps: list[int] = []
    returns: list[list[float]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs

    def update_episode_metrics(self, episode_metrics: Any, dones: Any, train_metrics: Any) -> None:
        del train_metrics
        done = np.asarray(dones).astype(bool)
        EpisodeRecorder.steps.append(int(done.size))
        ended = np.asarray(episode_metrics["sum_reward"])[done]
        EpisodeRecorder.returns.append([float(x) for x in ended])


def published(args: argparse.Namespace) -> dict[str, Any]:
    """One run of brax's PPO with its published settings; every training episode recorded."""
    from brax.training import logger as metric_logger

    source, settings = PUBLISHED[args.env]
    metric_logger.EpisodeMetricsLogger = EpisodeRecorder  # train() builds its logger from here
    env = envs.get_environment(args.env, backend=args.backend)
    per_step = (
        settings["batch_size"]
        * settings["unroll_length"]
        * settings["num_minibatches"]
        * settings["action_repeat"]
    )
    t0 = time.perf_counter()
    ppo.train(
        environment=env,
        num_timesteps=args.total_timesteps,
        episode_length=1000,
        normalize_observations=True,
        num_evals=2,  # one before training, one after: a single training epoch
        num_eval_envs=16,
        deterministic_eval=True,
        log_training_metrics=True,
        seed=args.seed,
        progress_fn=lambda step, metrics: last.update(metrics, step=step),
        **settings,
    )
    wall_seconds = time.perf_counter() - t0
    repeat = settings["action_repeat"]
    unrolled = [n * repeat for n in EpisodeRecorder.steps]
    if any(n != per_step for n in unrolled):
        raise RuntimeError(f"training steps of {sorted(set(unrolled))} env steps, not {per_step}")
    returns = EpisodeRecorder.returns
    return {
        "peer": f"brax {brax.__version__} PPO (jax {jax.__version__})",
        "settings": "published",
        "settings_from": source,
        "hyperparameters": settings,
        "env": f"brax:{args.env}@{args.backend}",
        "seed": args.seed,
        "requested_timesteps": args.total_timesteps,
        "total_timesteps": int(last["step"]),
        "env_steps": [per_step * (i + 1) for i in range(len(returns))],
        "episodes": [len(r) for r in returns],
        "episode_return": [float(np.mean(r)) if r else None for r in returns],
        "eval_return": round(float(last["eval/episode_reward"]), 3),
        "wall_seconds": round(wall_seconds, 1),
    }


last: dict[str, Any] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-timesteps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", choices=("matched", "published"), default="matched")
    parser.add_argument("--env", choices=tuple(PUBLISHED), default="inverted_pendulum")
    parser.add_argument("--backend", choices=("positional", "spring"), default="positional")
    args = parser.parse_args()
    if args.settings == "published":
        print(json.dumps(published(args)), flush=True)
        return
    if (args.env, args.backend) != ("inverted_pendulum", "positional"):
        parser.error("--settings matched runs inverted_pendulum on the positional backend only")

    env = envs.get_environment("inverted_pendulum", backend="positional")
    network_factory = functools.partial(
        ppo_networks.make_ppo_networks,
        policy_hidden_layer_sizes=(64, 64),
        value_hidden_layer_sizes=(64, 64),
        activation=linen.tanh,
    )
    # progress_fn runs after each eval; past step 0 its metrics carry brax's own
    # 'training/walltime': the summed wall time of the training epochs so far, evals excluded.
    walltimes: list[float] = []

    def progress(step: int, metrics: dict[str, Any]) -> None:
        if step > 0:
            walltimes.append(float(metrics["training/walltime"]))
        last.update(metrics, step=step)

    t0 = time.perf_counter()
    ppo.train(
        environment=env,
        num_timesteps=args.total_timesteps,
        num_envs=NUM_ENVS,
        episode_length=1000,
        action_repeat=1,
        unroll_length=UNROLL_LENGTH,
        batch_size=BATCH_SIZE,
        num_minibatches=NUM_MINIBATCHES,
        num_updates_per_batch=10,
        learning_rate=3e-4,
        entropy_cost=0.0,
        discounting=0.99,
        gae_lambda=0.95,
        clipping_epsilon=0.2,
        normalize_observations=True,
        reward_scaling=1.0,
        max_grad_norm=0.5,
        network_factory=network_factory,
        num_evals=NUM_EVALS,
        num_eval_envs=16,
        deterministic_eval=True,
        seed=args.seed,
        progress_fn=progress,
    )
    wall_seconds = time.perf_counter() - t0

    # Epochs are equal in size. brax compiles the training epoch on the first call and once more
    # on the second (seen with JAX_LOG_COMPILES=1), so the median epoch time is the steady one;
    # whatever the epochs took beyond that is compilation.
    epoch_times = np.diff(walltimes, prepend=0.0)
    epochs = len(epoch_times)
    epoch_seconds = float(np.median(epoch_times))
    run_seconds = epochs * epoch_seconds
    compile_seconds = walltimes[-1] - run_seconds
    total = int(last["step"])
    timing = (
        f"from brax's training/walltime (evals excluded) over {epochs} equal epochs of "
        f"{total // epochs} steps, which took {', '.join(f'{t:.2f}' for t in epoch_times)} s: "
        f"run_seconds = {epochs} x the median epoch ({epoch_seconds:.2f} s), compile_seconds = "
        f"the rest (brax compiles the training epoch in epoch 1 and again in epoch 2); train() "
        f"took {wall_seconds:.1f} s wall in all, with env setup, {NUM_EVALS} evals of 16 "
        f"episodes and their compilation"
    )
    result = {
        "peer": f"brax {brax.__version__} PPO (jax {jax.__version__})",
        "env": "brax:inverted_pendulum@positional",
        "total_timesteps": total,
        "num_seeds": 1,
        "compile_seconds": round(compile_seconds, 3),
        "run_seconds": round(run_seconds, 3),
        "steps_per_second": round(total / run_seconds, 1),
        "final_return": round(float(last["eval/episode_reward"]), 3),
        "differences": DIFFERENCES,
        "timing": timing,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
