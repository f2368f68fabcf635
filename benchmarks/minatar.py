"""Every gymnax MinAtar game, the paper's Atari settings, convolutional vs MLP torso.

    python benchmarks/minatar.py                       # 5 games x {minatar_cnn, mlp}, 8 seeds
    python benchmarks/minatar.py --steps 5000000       # the full budget (hours on 2 CPU cores)
    python benchmarks/minatar.py --games Breakout --networks minatar_cnn --steps 200000
    python benchmarks/minatar.py --steps-for Seaquest=500000   # gymnax's Seaquest steps slowly

Each (game, network) trains through the `purejaxppo train` command, as a user runs it, with the
`minatar-paper` preset (PPO paper Table 5: 8 actors x T 128, 3 epochs x 4 minibatches, Adam 2.5e-4
and clip 0.1 both annealed, c1 1, c2 0.01; the MinAtar default until 2026-12, when the tuned
setting of benchmarks/tune.py replaced it) and only the network changed for the MLP
(`network=mlp activation=relu`, 64x64). XLA runs one trainer on one core, so `--jobs` trainers
run side by side. A random-policy figure comes from the same code with learning_rate 0 (the
initial, near-uniform policy: policy-head gain 0.01) over a short run.

Writes benchmarks/results/minatar.{json,md} and minatar.png; run folders go to runs/minatar/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from purejaxppo import stats
from purejaxppo.ppo import episode_mean, final_window_return

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
NETWORKS = {"minatar_cnn": [], "mlp": ["network=mlp", "activation=relu"], "random": []}
# Published PPO figures in gymnax's README (MLP, 10M steps).
GYMNAX_PPO = {"Asterix": 15, "Breakout": 28, "Freeway": 58, "SpaceInvaders": 131}
RANDOM_STEPS = 51_200  # per seed: the random policy's figure needs episodes, not learning


def train_job(game: str, network: str, steps: int, seeds: int, runs: Path) -> dict[str, Any]:
    out = runs / f"{game}-{network}-{steps if network != 'random' else RANDOM_STEPS}"
    args = ["--set", *NETWORKS[network]] if NETWORKS[network] else []
    if network == "random":
        args = ["--set", "learning_rate=0"]
        steps = RANDOM_STEPS
    args = ["--config", "minatar-paper", *args]
    job = train_cli(out, f"{game}-MinAtar", args, steps, seeds, f"{game} {network}")
    return {"game": game, "network": network, **job}


def train_cli(
    out: Path, env: str, args: list[str], steps: int, seeds: int, label: str
) -> dict[str, Any]:
    """`purejaxppo train` into `out`, as a user runs it, unless a finished run is already there;
    returns {out, summary, metrics} of the run."""
    if (out / "summary.json").exists():
        print(f"{label}: reusing {out}", flush=True)
    else:
        cmd = [sys.executable, "-m", "purejaxppo.cli", "train", "--env", env,
               "--num-seeds", str(seeds), "--total-timesteps", str(steps), "--out", str(out),
               *args]  # fmt: skip
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        print(f"{label}: {time.time() - t0:.0f} s", flush=True)
    summary = json.loads((out / "summary.json").read_text())
    metrics = dict(np.load(out / "metrics.npz"))
    return {"out": str(out), "summary": summary, "metrics": metrics}


# benchmarks/tune.py imports the final score under this name.
final_window = final_window_return


def summarize(jobs: list[dict[str, Any]], steps: dict[str, int], seeds: int) -> dict[str, Any]:
    rows = {}
    for job in jobs:
        m = job["metrics"]
        finals, window = final_window(m)
        finals = finals[0]  # the one setting's seeds
        s = job["summary"]
        row = rows.setdefault(job["game"], {})
        row[job["network"]] = {
            "final_mean": round(float(np.mean(finals)), 3),
            "final_std": round(float(np.std(finals)), 3),
            "final_per_seed": np.round(finals, 3).tolist(),
            "final_window_updates": window,
            "all_training_mean": round(
                float(np.mean(episode_mean(m["episode_return"][0], m["episodes"][0]))), 3
            ),  # fmt: skip
            "steps_per_second": s.get("steps_per_second"),
            "compile_seconds": s.get("compile_seconds"),
            "run_seconds": s.get("run_seconds"),
            "total_timesteps": int(m["env_steps"][-1]),
        }
    return {"steps": {g: steps[g] for g in rows}, "seeds": seeds, "games": rows}


def plot(jobs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = sorted({j["game"] for j in jobs})
    fig, axes = plt.subplots(1, len(games), figsize=(3.6 * len(games), 3.2), squeeze=False)
    colors = {"minatar_cnn": "C0", "mlp": "C1", "random": "0.5"}
    for ax, game in zip(axes[0], games, strict=True):
        for job in (j for j in jobs if j["game"] == game):
            m = job["metrics"]
            x = m["env_steps"]
            if job["network"] == "random":
                level = np.nanmean(episode_mean(m["episode_return"][0], m["episodes"][0]))
                ax.axhline(level, color=colors["random"], ls=":", lw=1, label="random")
                continue
            r = m["episode_return"][0]
            # Forward-fill updates in which no episode ended (NaN), per seed.
            filled = stats.forward_fill(r)
            q25, med, q75 = np.nanpercentile(filled, [25, 50, 75], axis=0)
            c = colors[job["network"]]
            ax.plot(x, med, color=c, lw=1.2, label=job["network"])
            ax.fill_between(x, q25, q75, color=c, alpha=0.25, lw=0)
        ax.set_title(f"{game}-MinAtar")
        ax.set_xlabel("env steps per seed")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    axes[0][0].set_ylabel("episode return (median, IQR over seeds)")
    axes[0][-1].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    steps, seeds = result["steps"], result["seeds"]  # steps: per game
    lines = [
        f"## MinAtar: the paper's Atari settings, {seeds} seeds per game",
        "",
        "`python benchmarks/minatar.py` (the minatar-paper preset: PPO paper Table 5, 8 actors; "
        "the MLP row changes only `network=mlp activation=relu`, 64x64). Final = mean return of "
        "episodes ending in the last 5% of updates per seed (widened until every seed has one), "
        "mean ± std over seeds; random = the same code with learning rate 0 (the initial, "
        f"near-uniform policy) over {RANDOM_STEPS:,} steps. Steps/s over all seeds, one trainer "
        "per core. P(CNN > MLP): the chance that a CNN seed's final return is above an MLP "
        "seed's, with its 95% bootstrap interval (`purejaxppo.stats`).",
        "",
        "| game | steps per seed | minatar_cnn final | mlp final | P(CNN > MLP) | random "
        "| gymnax README PPO (MLP, 10M) | cnn steps/s | mlp steps/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for game, row in sorted(result["games"].items()):
        cells = []
        for net in ("minatar_cnn", "mlp"):
            r = row.get(net)
            cells.append(f"{r['final_mean']:.2f} ± {r['final_std']:.2f}" if r else "-")
        speeds = []
        for net in ("minatar_cnn", "mlp"):
            r = row.get(net)
            speeds.append(f"{r['steps_per_second']:,.0f}" if r and r["steps_per_second"] else "-")
        rand = row.get("random")
        rand_cell = f"{rand['all_training_mean']:.2f}" if rand else "-"
        both = row.get("minatar_cnn") and row.get("mlp")
        poi = "-"
        if both:
            est = stats.probability_of_improvement(
                row["minatar_cnn"]["final_per_seed"], row["mlp"]["final_per_seed"]
            )
            poi = f"{est.point:.2f} [{est.low:.2f}, {est.high:.2f}]"
        lines.append(
            f"| {game} | {steps[game]:,} | {cells[0]} | {cells[1]} | {poi} | {rand_cell} | "
            f"{GYMNAX_PPO.get(game, '-')} | {speeds[0]} | {speeds[1]} |"
        )
    lines += ["", "![MinAtar learning curves](benchmarks/results/minatar.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1_500_000, help="env steps per seed")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--games", nargs="*", default=list(GAMES), choices=GAMES)
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument(
        "--steps-for", nargs="*", default=[], metavar="GAME=STEPS", help="per-game --steps"
    )
    parser.add_argument("--jobs", type=int, default=2, help="trainers run side by side")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "minatar"), help="run folders")
    parser.add_argument("--out", default=str(RESULTS), help="where minatar.{json,md,png} go")
    args = parser.parse_args()
    steps = {g: args.steps for g in args.games}
    for item in args.steps_for:
        game, _, n = item.partition("=")
        if game not in steps or not n.isdigit():
            parser.error(f"--steps-for expects GAME=STEPS with GAME in {list(steps)}, got {item}")
        steps[game] = int(n)
    runs = Path(args.runs) / f"seeds{args.seeds}"
    runs.mkdir(parents=True, exist_ok=True)
    # Longest first, so the side-by-side trainers finish close together.
    order = {"minatar_cnn": 0, "mlp": 1, "random": 2}
    todo = sorted(((g, n) for g in args.games for n in args.networks), key=lambda gn: order[gn[1]])
    t0 = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = list(pool.map(lambda gn: train_job(*gn, steps[gn[0]], args.seeds, runs), todo))
    print(f"all trained in {time.time() - t0:.0f} s")
    result = summarize(jobs, steps, args.seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "minatar.json").write_text(json.dumps(result, indent=2))
    (out / "minatar.md").write_text(markdown(result))
    plot(jobs, out / "minatar.png")
    print(markdown(result))


if __name__ == "__main__":
    main()
