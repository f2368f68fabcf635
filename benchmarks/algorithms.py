"""The PPO paper's comparisons with other algorithms, each a setting of the one trainer.

    python benchmarks/algorithms.py --part atari      # Tables 2 and 6 on MinAtar: PPO vs A2C
    python benchmarks/algorithms.py --part mujoco     # Figure 3 on brax: PPO, A2C, VPG, TRPO
    python benchmarks/algorithms.py --part atari --steps 500000 --games Breakout Freeway

Every run goes through the `purejaxppo train` command, as a user runs it: on MinAtar PPO with
the game's own preset; on brax PPO with the paper's MuJoCo settings (`ppo-mujoco`) and, for
contrast, with the brax tasks' defaults (`ppo-brax`); the others with their shipped presets
(`a2c-minatar`, `a2c-brax`, `vpg-brax`, `trpo-brax`). XLA runs one trainer per device, and the
command uses every core, so the runs go one after another.

Atari (Tables 2 and 6 of the paper): per game and algorithm, the paper's two scores, each the
mean over seeds: (1) the mean return of every episode of training ("average over all of
training", favouring fast learning) and (2) the mean return of the last 100 episodes of each
seed. A game is won by the algorithm with the higher score, separately for each metric.

MuJoCo (Figure 3 of the paper): learning curves per task (median and interquartile band over
seeds) and the mean return of the last 100 episodes per algorithm.

Writes benchmarks/results/algorithms_<part>.{json,png}; run folders go to runs/algorithms/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from benchmarks.minatar import GAMES, train_cli  # noqa: E402
from purejaxppo.ppo import episode_mean, last_updates_return  # noqa: E402
from purejaxppo.stats import forward_fill  # noqa: E402

LAST_EPISODES = 100  # the paper's second metric: the last 100 episodes of each run
# Algorithm -> extra `purejaxppo train` arguments, per part. PPO keeps the env's own preset.
ATARI = {"ppo": [], "a2c": ["--config", "a2c-minatar"]}
MUJOCO = {
    "ppo": ["--config", "ppo-mujoco"],  # the paper's Table 3 settings, as its Figure 3 ran
    "ppo-brax": ["--config", "brax-16x128"],  # the brax default until 2026-12, for contrast
    "a2c": ["--config", "a2c-brax"],
    "vpg": ["--config", "vpg-brax"],
    "trpo": ["--config", "trpo-brax"],
}
# brax tasks of the Table 1 benchmark (benchmarks/objectives.py) with their CPU-safe backend.
MUJOCO_TASKS = {
    "inverted_pendulum": "spring",
    "inverted_double_pendulum": "spring",
    "reacher": "spring",
    "hopper": "spring",
    "walker2d": "spring",
    "halfcheetah": "spring",
}


def train(env: str, algo: str, extra: list[str], steps: int, seeds: int, runs: Path) -> dict:
    """One algorithm on one env through the CLI (a finished folder is reused)."""
    out = runs / f"{env.replace(':', '-').replace('@', '-')}-{algo}-{steps}-seeds{seeds}"
    return train_cli(out, env, extra, steps, seeds, f"{env} {algo}")


def scores(metrics: dict[str, np.ndarray]) -> dict[str, Any]:
    r, c = metrics["episode_return"][0], metrics["episodes"][0]  # one setting: [seeds, updates]
    all_training = episode_mean(r, c)
    last = last_updates_return(r, c, LAST_EPISODES)
    return {
        "all_training_mean": round(float(np.nanmean(all_training)), 3),
        "last_100_mean": round(float(np.nanmean(last)), 3),
        "last_100_std": round(float(np.nanstd(last)), 3),
        "last_100_per_seed": np.round(last, 3).tolist(),
    }


def run_part(
    part: str, names: list[str], steps: dict[str, int], seeds: int, runs: Path, out: Path
) -> dict[str, Any]:
    algos = ATARI if part == "atari" else MUJOCO
    rows: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, Any]] = {}
    for name in names:
        env = f"{name}-MinAtar" if part == "atari" else f"brax:{name}@{MUJOCO_TASKS[name]}"
        for algo, extra in algos.items():
            job = train(env, algo, extra, steps[name], seeds, runs)
            s = job["summary"]
            rows.setdefault(name, {})[algo] = {
                **scores(job["metrics"]),
                "steps_per_second": s.get("steps_per_second"),
                "run_seconds": s.get("run_seconds"),
                "compile_seconds": s.get("compile_seconds"),
                "devices": s.get("devices"),
                "total_timesteps": s.get("total_timesteps"),
            }
            curves.setdefault(name, {})[algo] = job["metrics"]
    result: dict[str, Any] = {"part": part, "steps": steps, "seeds": seeds, "rows": rows}
    if part == "atari":
        result["wins"] = {
            metric: {
                algo: sum(
                    1 for row in rows.values() if max(row, key=lambda a: row[a][metric]) == algo
                )
                for algo in algos
            }
            for metric in ("all_training_mean", "last_100_mean")
        }
    plot(part, curves, out / f"algorithms_{part}.png")
    return result


def binned(steps: np.ndarray, returns: np.ndarray, counts: np.ndarray, bins: int = 50):
    """Curves on a common grid whatever the rollout length: per seed, the episode-weighted mean
    return of the updates in each of `bins` equal spans of env steps (forward-filled where no
    episode ended). Returns (bin ends in env steps, [seeds, bins])."""
    edges = np.linspace(0, steps[-1], bins + 1)
    which = np.clip(np.searchsorted(edges, steps, side="left") - 1, 0, bins - 1)
    out = np.full((returns.shape[0], bins), np.nan)
    for b in range(bins):
        sel = which == b
        if sel.any():
            out[:, b] = episode_mean(returns[:, sel], counts[:, sel])
    return edges[1:], forward_fill(out)


def plot(part: str, curves: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(curves)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for i, (algo, m) in enumerate(curves[name].items()):
            x, per_seed = binned(m["env_steps"], m["episode_return"][0], m["episodes"][0])
            q25, med, q75 = np.nanpercentile(per_seed, [25, 50, 75], axis=0)
            ax.plot(x, med, color=f"C{i}", lw=1.2, label=algo)
            ax.fill_between(x, q25, q75, color=f"C{i}", alpha=0.2, lw=0)
        ax.set_title(name)
        ax.set_xlabel("env steps per seed")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    axes[0][0].set_ylabel("episode return (median, IQR over seeds)")
    axes[0][-1].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("atari", "mujoco"), required=True)
    parser.add_argument("--steps", type=int, default=None, help="env steps per seed")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--games", nargs="*", default=list(GAMES), choices=GAMES)
    parser.add_argument(
        "--tasks", nargs="*", default=list(MUJOCO_TASKS), choices=list(MUJOCO_TASKS)
    )
    parser.add_argument(
        "--steps-for", nargs="*", default=[], metavar="NAME=STEPS", help="per-game/task --steps"
    )
    parser.add_argument("--runs", default=str(ROOT / "runs" / "algorithms"), help="run folders")
    parser.add_argument("--out", default=str(RESULTS), help="where algorithms_<part>.json goes")
    args = parser.parse_args(argv)
    atari = args.part == "atari"
    names = args.games if atari else args.tasks
    steps = {n: args.steps or (1_000_000 if atari else 300_000) for n in names}
    for item in args.steps_for:
        name, _, n = item.partition("=")
        if name not in steps or not n.isdigit():
            parser.error(f"--steps-for expects NAME=STEPS with NAME in {names}, got {item!r}")
        steps[name] = int(n)
    seeds = args.seeds or (8 if atari else 4)
    t0 = time.time()
    result = run_part(args.part, names, steps, seeds, Path(args.runs), Path(args.out))
    result["wall_seconds_this_call"] = round(time.time() - t0, 1)  # finished runs are reused
    path = Path(args.out) / f"algorithms_{args.part}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    from benchmarks.report import write_report

    write_report()
    return result


if __name__ == "__main__":
    main()
