"""What the auto-reset costs in a brax step: `BraxEnv.step` against the same step without it.

    python benchmarks/brax_step.py [--envs 64] [--steps 500]

`BraxEnv.step` computes a whole `env.reset` on every step and selects it where an episode ended
(under vmap a branch is computed for every env either way). The reference here is the same
vmapped, scanned brax step with the reset left out, in the same process, timed alternately (best
of 5 each). The difference is the reset's share of a step. Writes
benchmarks/results/brax_step.json and rebuilds BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import write_report  # noqa: E402
from throughput import machine, save  # noqa: E402

from purejaxppo.envs import BraxEnv  # noqa: E402


def programs(env: BraxEnv, num_envs: int, steps: int):
    """(with reset, without reset): jitted scans of `steps` vmapped steps of num_envs envs."""

    def no_reset(key, state, action):
        nxt = env.env.step(state.env_state, action)
        return nxt.obs, type(state)(nxt, state.time + 1)

    def with_reset(key, state, action):
        out = env.step(key, state, action)
        return out.obs, out.state

    def scan(step):
        def run(key, state):
            def body(c, k):
                s = c
                a = jnp.tanh(jax.random.normal(k, (num_envs, env.action_dim)))
                obs, s = jax.vmap(step)(jax.random.split(k, num_envs), s, a)
                return s, obs.sum()

            return jax.lax.scan(body, state, jax.random.split(key, steps))

        return jax.jit(run)

    return scan(with_reset), scan(no_reset)


def measure(name: str, num_envs: int, steps: int) -> dict:
    env = BraxEnv(name)
    _, state = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), num_envs))
    full, bare = programs(env, num_envs, steps)
    key = jax.random.key(1)
    times = {"with_reset": [], "without_reset": []}
    compiled = {}
    for label, fn in (("with_reset", full), ("without_reset", bare)):
        t0 = time.perf_counter()
        compiled[label] = fn.lower(key, state).compile()
        times[label + "_compile"] = time.perf_counter() - t0
    for _ in range(5):
        for label in ("with_reset", "without_reset"):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled[label](key, state))
            times[label].append(time.perf_counter() - t0)
    full_s, bare_s = min(times["with_reset"]), min(times["without_reset"])
    return {
        "env": f"brax:{name}@positional",
        "num_envs": num_envs,
        "steps": steps,
        "with_reset_steps_per_second": round(num_envs * steps / full_s),
        "without_reset_steps_per_second": round(num_envs * steps / bare_s),
        "reset_share": round(1 - bare_s / full_s, 3),
        "compile_seconds": {k: round(v, 2) for k, v in times.items() if k.endswith("_compile")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    rows = []
    for name in ("inverted_pendulum", "halfcheetah"):
        rows.append(measure(name, args.envs, args.steps))
        print(rows[-1], flush=True)
    save("brax_step", {"machine": machine(), "rows": rows})
    write_report()


if __name__ == "__main__":
    main()
