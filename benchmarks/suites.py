"""The newer JAX suites through their adapters (purejaxppo/suites.py): how fast, and what a
short run learns against a random policy.

    python benchmarks/suites.py --part speed
        per task, in one process: env steps/s of the adapter alone (a uniformly random legal
        action each step, in a jitted scan through the same vmapped one-environment interface
        the trainer uses) and of training with the task's preset (one seed), compile apart
    python benchmarks/suites.py --part learn [--tasks ...] [--steps N --seeds S]
        per task: `purejaxppo train` with its preset on fresh seeds (TASKS: each task's budget),
        the final return (the last 5% of updates) with a bootstrap interval, beside the random
        legal policy's mean return over 1024 whole episodes (the first of each of 1024
        environments; 64 for Craftax)

Results go to results/suites.json (each part keeps the other's entries).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from throughput import machine, save  # noqa: E402

# Per task: the learning part's default budget (env steps per seed, seeds) and the random
# policy's measurement (episodes, and the scan length that must see every one of them end:
# Craftax's time limit is 10,000 steps, but random play dies within a few hundred).
TASKS = {
    "jumanji:Snake-v1": dict(steps=2_000_000, seeds=4),
    "jumanji:Knapsack-v1": dict(steps=500_000, seeds=4),
    "jumanji:Knapsack-v1:unmasked": dict(steps=500_000, seeds=4),
    "craftax:Craftax-Classic-Symbolic-v1": dict(
        steps=200_000, seeds=2, random_episodes=64, random_steps=2_000
    ),
    "xminigrid:MiniGrid-Empty-8x8": dict(steps=500_000, seeds=4),
    "xminigrid:MiniGrid-DoorKey-5x5": dict(steps=500_000, seeds=4),
    "playground:CartpoleBalance": dict(steps=500_000, seeds=4),
}
# Tasks whose learning this machine cannot afford: throughput only.
SPEED_ONLY = ("craftax:Craftax-Classic-Pixels-v1", "playground:CheetahRun")
# Training steps timed by --part speed where 65,536 would take many minutes on this CPU.
SPEED_STEPS = {
    "craftax:Craftax-Classic-Symbolic-v1": 16_384,
    "craftax:Craftax-Classic-Pixels-v1": 16_384,
    "playground:CheetahRun": 8_192,
}


def random_legal_action(env, state, key, n: int):
    """A uniformly random legal action for each of a batch of n states (any action where the
    env has no mask; uniform in the action bounds for continuous actions)."""
    import jax
    import jax.numpy as jnp

    from purejaxppo.ppo import legal_actions

    if not env.discrete:
        shape = (n, env.action_dim)
        return jax.random.uniform(key, shape, minval=env.action_low, maxval=env.action_high)

    mask = legal_actions(env, state)
    logits = jnp.zeros((n, env.action_dim))
    if mask is not None:
        logits = jnp.where(mask, logits, -jnp.inf)
    return jax.random.categorical(key, logits)


def random_step(env, state, key, n: int):
    """One step of a batch of n envs, each taking a uniformly random legal action: the Step."""
    import jax

    from purejaxppo.ppo import step_envs

    act_key, env_key = jax.random.split(key)
    action = random_legal_action(env, state, act_key, n)
    return step_envs(env, jax.random.split(env_key, n), state, action)


def random_legal(env, num_envs: int, steps: int):
    """A jitted scan of `steps` steps of `num_envs` envs taking a uniformly random legal action
    (all actions legal without a mask); returns (returns of finished episodes summed, count)."""
    import jax
    import jax.numpy as jnp

    def run(key):
        reset_key, key = jax.random.split(key)
        obs, state = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))

        def step(c, k):
            state, ret, total, count = c
            out = random_step(env, state, k, num_envs)
            ret = ret + out.reward
            done = out.terminated | out.truncated
            total = total + jnp.sum(jnp.where(done, ret, 0.0))
            count = count + jnp.sum(done)
            return (out.state, jnp.where(done, 0.0, ret), total, count), None

        init = (state, jnp.zeros(num_envs), jnp.float32(0), jnp.int32(0))
        (_, _, total, count), _ = jax.lax.scan(step, init, jax.random.split(key, steps))
        return total, count

    return jax.jit(run)


def adapter_speed(task: str, num_envs: int = 64, steps: int = 200) -> dict:
    if task in SPEED_STEPS:
        steps = 32  # a few hundred steps/s on this CPU
    import jax

    from purejaxppo.envs import make_env

    run = random_legal(make_env(task), num_envs, steps)
    t0 = time.perf_counter()
    jax.block_until_ready(run(jax.random.key(0)))
    first = time.perf_counter() - t0
    times = []
    for i in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(run(jax.random.key(i + 1)))
        times.append(time.perf_counter() - t0)
    return {
        "num_envs": num_envs,
        "steps": steps,
        "env_steps_per_second": round(num_envs * steps / min(times)),
        "compile_and_first_run_seconds": round(first, 2),
    }


def random_return(task: str, episodes: int = 1024, steps: int | None = None) -> float:
    """Mean return of the random legal policy over `episodes` whole episodes: the first episode
    of each of `episodes` environments, every one of which ends within `steps` (default
    max_episode_steps; the first episode of each is a fair draw; a run of fixed length would
    favour short ones)."""
    import jax
    import jax.numpy as jnp

    from purejaxppo.envs import make_env

    env = make_env(task)

    def run(key):
        reset_key, key = jax.random.split(key)
        _, state = jax.vmap(env.reset)(jax.random.split(reset_key, episodes))

        def step(c, k):
            state, ret, first, ended = c
            out = random_step(env, state, k, episodes)
            ret = ret + jnp.where(ended, 0.0, out.reward)
            done = out.terminated | out.truncated
            first = jnp.where(done & ~ended, ret, first)
            return (out.state, ret, first, ended | done), None

        zeros = jnp.zeros(episodes)
        init = (state, zeros, zeros, jnp.zeros(episodes, jnp.bool_))
        keys = jax.random.split(key, steps or env.max_episode_steps)
        (_, _, first, ended), _ = jax.lax.scan(step, init, keys)
        return first, ended

    first, ended = jax.jit(run)(jax.random.key(7))
    assert bool(ended.all()), f"an episode outlived {steps or env.max_episode_steps} steps"
    return round(float(first.mean()), 3)


def train(task: str, steps: int, seeds: int, out: Path, seed: int) -> dict:
    cmd = [sys.executable, "-m", "purejaxppo.cli", "train", "--env", task,
           "--num-seeds", str(seeds), "--seed", str(seed), "--total-timesteps", str(steps),
           "--out", str(out)]  # fmt: skip
    if (out / "summary.json").exists():
        cmd = [sys.executable, "-m", "purejaxppo.cli", "train", "--resume", str(out)]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    keep = ("env", "num_seeds", "total_timesteps", "compile_seconds", "run_seconds",
            "steps_per_second", "final_return", "final_return_mean", "per_setting")  # fmt: skip
    return {"wall_seconds": round(time.time() - t0, 1), **{k: summary.get(k) for k in keep}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("speed", "learn"), required=True)
    parser.add_argument("--tasks", nargs="+", default=None, choices=[*TASKS, *SPEED_ONLY])
    parser.add_argument("--steps", type=int, default=None, help="env steps per seed (TASKS)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per task (TASKS)")
    parser.add_argument("--seed", type=int, default=1000, help="first seed (fresh seeds)")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "suites"))
    args = parser.parse_args()
    path = RESULTS / "suites.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data["machine"] = machine()
    tasks = args.tasks or ([*TASKS, *SPEED_ONLY] if args.part == "speed" else list(TASKS))
    for task in tasks:
        row = data.setdefault(task, {})
        if args.part == "speed":
            row["adapter"] = adapter_speed(task)
            # Craftax and a contact-rich Playground task run at a few hundred steps/s here: a
            # few updates are enough to time them.
            steps = SPEED_STEPS.get(task, 65_536)
            run = train(task, steps, 1, Path(args.runs) / f"speed-{task}-{steps}", 0)
            speed = ("compile_seconds", "run_seconds", "steps_per_second")
            row["training_one_seed"] = {"steps": steps, **{k: run[k] for k in speed}}
        else:
            if task in SPEED_ONLY:
                raise SystemExit(f"--part learn: {task} is measured for speed only")
            plan = TASKS[task]
            steps, seeds = args.steps or plan["steps"], args.seeds or plan["seeds"]
            row["random_policy_return"] = random_return(
                task, plan.get("random_episodes", 1024), plan.get("random_steps")
            )
            out = Path(args.runs) / f"learn-{task}-{steps}-seeds{seeds}"
            row["learning"] = train(task, steps, seeds, out, args.seed)
        print(json.dumps({task: row}), flush=True)
        save("suites", data)


if __name__ == "__main__":
    main()
