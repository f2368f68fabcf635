"""Stable-Baselines3 PPO on gymnasium CartPole-v1 with PureJaxRL's CartPole hyperparameters
(purejaxppo's `purejaxrl-cartpole` preset).

Runs in its own venv (requirements-sb3.txt); prints one JSON line on stdout:

    python sb3_cartpole.py --total-timesteps 500000 --seed 0 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

LEARNING_RATE = 2.5e-4

DIFFERENCES = [
    "value loss not clipped (SB3 default clip_range_vf=None); purejaxppo clips it with clip_coef",
    "value loss is vf_coef * MSE; purejaxppo's is vf_coef * 0.5 * MSE (half the weight)",
    "environment: gymnasium CartPole-v1 stepped in Python on numpy (DummyVecEnv), one env "
    "after another; purejaxppo steps gymnax CartPole-v1 inside the compiled JAX program",
    "PyTorch eager on the CPU (torch.set_num_threads), no compilation; one seed per process, "
    "where purejaxppo trains many seeds in one vmapped program",
    "SB3 collects whole 512-step rollouts until total_timesteps is reached (rounds up); "
    "purejaxppo runs total_timesteps // 512 updates (rounds down)",
    "final_return: mean return of the last 100 finished training episodes (Monitor); "
    "purejaxppo's is the mean training return over the last 5% of updates",
]


def linear_schedule(progress_remaining: float) -> float:
    """SB3 passes the fraction of training left (1 -> 0); anneal linearly to zero."""
    return LEARNING_RATE * progress_remaining


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-timesteps", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    env = make_vec_env("CartPole-v1", n_envs=4, seed=args.seed, vec_env_cls=DummyVecEnv)
    model = PPO(
        "MlpPolicy",
        env,
        learning_rate=linear_schedule,
        n_steps=128,
        batch_size=128,
        n_epochs=4,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
        normalize_advantage=True,
        policy_kwargs=dict(
            net_arch=dict(pi=[64, 64], vf=[64, 64]),
            activation_fn=torch.nn.Tanh,
            ortho_init=True,
        ),
        seed=args.seed,
        device="cpu",
        verbose=0,
    )
    setup_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    model.learn(total_timesteps=args.total_timesteps)
    run_seconds = time.perf_counter() - t0

    returns = [info["r"] for info in model.ep_info_buffer]
    steps = int(model.num_timesteps)
    result = {
        "peer": f"stable-baselines3 {stable_baselines3.__version__}",
        "env": "CartPole-v1",
        "total_timesteps": steps,
        "num_seeds": 1,
        "setup_seconds": round(setup_seconds, 3),
        "run_seconds": round(run_seconds, 3),
        "steps_per_second": round(steps / run_seconds, 1),
        "final_return": round(float(np.mean(returns)), 3) if returns else None,
        "differences": DIFFERENCES,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
