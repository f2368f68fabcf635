"""Real Atari through ale-py (purejaxppo/atari.py): how fast, and how far an hour gets.

    python benchmarks/atari.py --part speed
        env steps/s of the adapter alone (random actions in a jitted scan, through the same
        vmapped one-environment interface the trainer uses) for 8 and 16 emulators, and of
        training with the `atari` preset (one seed, 8 actors), compile time apart
    python benchmarks/atari.py --part learn --game Breakout --steps 1200000
        one `purejaxppo train --config atari` run (the paper's Table 5 settings) of the given
        length into runs/atari/, its curve and final score into results/atari_<game>.json

Each figure is one process on this machine; the learning runs of two games may run side by
side, one per core (pass --games to run them one after another in one call instead).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from throughput import machine, save  # noqa: E402

from purejaxppo import stats  # noqa: E402

# The PPO paper's Table 6: PPO's mean episode reward over the last 100 episodes after 40M
# frames (10M steps), for scale.
PAPER_PPO = {"Breakout": 274.8, "Pong": 20.7}


def adapter_speed(num_envs: int, steps: int = 400) -> dict:
    import jax

    from purejaxppo.atari import AleEnv, random_play

    run = random_play(AleEnv("ale:Breakout"), num_envs, steps)

    t0 = time.perf_counter()
    jax.block_until_ready(run(jax.random.key(0)))
    first = time.perf_counter() - t0
    best = []
    for i in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(run(jax.random.key(i + 1)))
        best.append(time.perf_counter() - t0)
    run_s = min(best)
    return {
        "num_envs": num_envs,
        "steps": steps,
        "env_steps_per_second": round(num_envs * steps / run_s),
        "compile_and_first_run_seconds": round(first, 2),
    }


def train(game: str, steps: int, seeds: int, out: Path) -> dict:
    import subprocess

    cmd = [sys.executable, "-m", "purejaxppo.cli", "train", "--config", "atari",
           "--env", f"ale:{game}", "--num-seeds", str(seeds), "--total-timesteps", str(steps),
           "--out", str(out)]  # fmt: skip
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    metrics = np.load(out / "metrics.npz")
    return {
        "wall_seconds": round(time.time() - t0, 1),
        "summary": {
            k: summary[k]
            for k in (
                "env",
                "num_seeds",
                "total_timesteps",
                "compile_seconds",
                "run_seconds",
                "steps_per_second",
                "final_return",
            )
        },  # fmt: skip
        "env_steps": metrics["env_steps"].tolist(),
        "episode_return": np.round(metrics["episode_return"][0], 3).tolist(),  # [seed, update]
        "episodes": metrics["episodes"][0].tolist(),
    }


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3.6), dpi=110, squeeze=False)
    for ax, (game, r) in zip(axes[0], rows.items(), strict=True):
        steps = np.asarray(r["env_steps"])
        for seed, ret in enumerate(stats.forward_fill(r["episode_return"])):
            ax.plot(steps, ret, lw=1.2, label=f"seed {seed}")
        ax.set_title(f"ale:{game}, atari preset (paper PPO at 10M steps: {PAPER_PPO[game]})")
        ax.set_xlabel("environment steps (4 frames each)")
        ax.set_ylabel("raw game score per episode")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("speed", "learn"), required=True)
    parser.add_argument("--games", nargs="+", default=["Breakout"], choices=sorted(PAPER_PPO))
    parser.add_argument("--steps", type=int, default=1_000_000, help="env steps per seed")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--runs", default=str(ROOT / "runs" / "atari"))
    args = parser.parse_args()
    if args.part == "speed":
        rows = [adapter_speed(n) for n in (8, 16)]
        training = train("Breakout", 20_480, 1, Path(args.runs) / "speed-breakout")
        save(
            "atari_speed",
            {"machine": machine(), "adapter": rows, "training": training["summary"]},
        )
        print(json.dumps({"adapter": rows, "training": training["summary"]}, indent=1))
        return
    for game in args.games:
        out = Path(args.runs) / f"{game}-{args.steps}-seeds{args.seeds}"
        result = {"machine": machine(), "game": game, "paper_ppo_10M": PAPER_PPO[game],
                  **train(game, args.steps, args.seeds, out)}  # fmt: skip
        (RESULTS / f"atari_{game}.json").write_text(json.dumps(result) + "\n")
        print(json.dumps(result["summary"]))
    done = {g: json.loads((RESULTS / f"atari_{g}.json").read_text())
            for g in PAPER_PPO if (RESULTS / f"atari_{g}.json").exists()}  # fmt: skip
    plot(done, RESULTS / "atari.png")


if __name__ == "__main__":
    main()
