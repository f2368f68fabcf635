"""Population-based training against a random search and the shipped default, at equal compute
(issue 29).

    python benchmarks/pbt.py                                  # Breakout, SpaceInvaders; 16 x 1M
    python benchmarks/pbt.py --games Breakout --population 8 --steps 200000   # a quick look
    python benchmarks/pbt.py --report                         # no training: tables and plots

Per MinAtar game, four run folders under RUNS/GAME/, each one `purejaxppo train` (checkpointed
a tenth of the way; a stopped folder is resumed, a finished one reused):

  pbt           --samples P --seed 500 over SPACE with --pbt-every K: a population of P runs
  search        the same P draws (the same --seed draws the same settings), without PBT: a
                random search of the same compute (P runs x steps)
  search-best   the search's best setting (its run's final return) on 8 fresh seeds (600)
  default       the shipped MinAtar default on the same 8 fresh seeds
  pbt-final     the best PBT run's final values as a fixed setting from the start, on the same
                8 fresh seeds: whether PBT found a better point or a better schedule

Every arm is the shipped default's program (64 envs x 128 steps, 4 epochs x 8 minibatches, a
64x64 ReLU MLP, gamma 0.99, gradient norm 0.5); SPACE is the MinAtar tuning's continuous traced
fields (benchmarks/tune.py). Scored on each run's final return (the last 5% of updates): IQM with
95% bootstrap intervals over runs, and P(PBT > other) for a run of each. The PBT population's
scores are its members' own final returns, as PBT reports them: the population was selected on
its training returns along the way, while the search's best setting is scored on fresh seeds.

Writes OUT/pbt.json, OUT/pbt.md, OUT/pbt_curves.png and OUT/pbt_schedules.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.runfolders import finish_figure, load, log, train  # noqa: E402
from purejaxppo import pbt, stats  # noqa: E402
from purejaxppo.compare import interval_text  # noqa: E402
from purejaxppo.files import write_atomic  # noqa: E402

SPACE = (
    "learning_rate=loguniform:0.0015:0.015",
    "clip_coef=uniform:0.1:0.3",
    "ent_coef=loguniform:0.003:0.03",
    "gae_lambda=uniform:0.8:0.97",
    "vf_coef=uniform:0.25:1.0",
)
FIXED = ("gamma=0.99", "max_grad_norm=0.5")  # the default's; the space leaves them out
SEARCH_SEED, FRESH_SEED, FRESH_SEEDS = 500, 600, 8
ARMS = ("pbt", "search", "search-best", "default", "pbt-final")


def cadence(updates: int, multiple: int = 1) -> int:
    """Checkpoints about a tenth of the way, at a multiple of `multiple` updates (PBT's)."""
    return max(multiple, updates // 10 // multiple * multiple)


def best_setting(summary: dict[str, Any]) -> dict[str, float]:
    """The search's best draw by its run's final return (one seed per draw)."""
    h = summary["ranking"][0]
    return summary["grid"]["settings"][h]


def run_game(game: str, args: argparse.Namespace) -> None:
    env = f"{game}-MinAtar"
    base = ["--env", env, "--total-timesteps", str(args.steps), "--set", *FIXED]
    updates = args.steps // (64 * 128)
    folder = Path(args.runs) / game
    population = ["--sweep", *SPACE, "--samples", str(args.population), "--seed", str(SEARCH_SEED)]
    pbt_flags = ["--pbt-every", str(args.every)]
    evolved = train(folder / "pbt", [*base, *population, *pbt_flags], cadence(updates, args.every))
    search = train(folder / "search", [*base, *population], cadence(updates))
    best = [f"{k}={v!r}" for k, v in best_setting(search).items()]
    fresh = ["--num-seeds", str(FRESH_SEEDS), "--seed", str(FRESH_SEED)]
    train(folder / "search-best", [*base, "--set", *best, *fresh], cadence(updates))
    train(folder / "default", [*base, *fresh], cadence(updates))
    final = [f"{k}={v[-1]!r}" for k, v in evolved["pbt"]["best"]["schedule"].items()]
    train(folder / "pbt-final", [*base, "--set", *final, *fresh], cadence(updates))


def finals(summary: dict[str, Any]) -> np.ndarray:
    x = np.array([[np.nan if v is None else v for v in row] for row in summary["final_return"]])
    return x.reshape(-1)[np.isfinite(x.reshape(-1))]


def report(args: argparse.Namespace) -> dict[str, Any]:
    games = {}
    for g, game in enumerate(args.games):
        folder = Path(args.runs) / game
        arms = {arm: load(folder / arm) for arm in ARMS if (folder / arm / "summary.json").exists()}
        if set(arms) != set(ARMS):
            log(f"{game}: {sorted(set(ARMS) - set(arms))} not finished; left out of the report")
            continue
        scores = {arm: finals(s) for arm, (s, _) in arms.items()}
        row: dict[str, Any] = {}
        for a, arm in enumerate(ARMS):
            est = stats.interval_estimates(scores[arm], seed=g * 10 + a)
            row[arm] = {"runs": int(scores[arm].size), **{k: est[k].rounded() for k in est}}
        for other in ("search-best", "default", "search", "pbt-final"):
            p = stats.probability_of_improvement(scores["pbt"], scores[other], seed=g)
            row[f"P(pbt > {other})"] = p.rounded()
        pbt_summary = arms["pbt"][0]
        row["pbt_section"] = pbt_summary["pbt"]
        row["search_best_setting"] = best_setting(arms["search"][0])
        row["seconds"] = {
            arm: s["run_seconds"] + s["compile_seconds"] for arm, (s, _) in arms.items()
        }
        row["env_steps"] = {
            arm: int(s["total_timesteps"]) * scores_size(s) for arm, (s, _) in arms.items()
        }
        games[game] = row
    from benchmarks.throughput import machine

    result = {
        "machine": machine(),
        "protocol": {
            "steps_per_run": args.steps,
            "population": args.population,
            "pbt_every_updates": args.every,
            "space": list(SPACE),
            "fixed": list(FIXED),
            "search_seed": SEARCH_SEED,
            "fresh_seeds": [FRESH_SEED, FRESH_SEEDS],
            "score": "final return: mean over the episodes of the last 5% of updates",
        },
        "games": games,
    }
    out = Path(args.out)
    write_atomic(out / "pbt.json", json.dumps(result, indent=1).encode())
    write_atomic(out / "pbt.md", markdown(result).encode())
    if games:
        write_atomic(out / "pbt_curves.png", curves_figure(args))
        runs = []
        for game in games:
            summary, metrics = load(Path(args.runs) / game / "pbt")
            history = {
                k: v.reshape(-1, v.shape[-1])
                for k, v in metrics.items()
                if k.startswith("pbt_") and v.ndim == 3
            }
            runs.append((game, summary["pbt"], history, 64 * 128))
        write_atomic(out / "pbt_schedules.png", pbt.schedule_figure(runs))
    return result


def scores_size(summary: dict[str, Any]) -> int:
    return sum(len(row) for row in summary["final_return"])


def markdown(result: dict[str, Any]) -> str:
    p = result["protocol"]
    lines = [
        f"PBT vs a random search of equal compute and the shipped default: {p['population']} "
        f"runs x {p['steps_per_run']:,} steps per arm (search-best and default: "
        f"{p['fresh_seeds'][1]} fresh seeds), PBT every {p['pbt_every_updates']} updates.",
        "",
        "| game | PBT population | search (all draws) | search's best, fresh seeds | default, "
        "fresh seeds | P(PBT > search's best) | P(PBT > default) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for game, row in result["games"].items():
        cells = [row[arm]["iqm"] for arm in ("pbt", "search", "search-best", "default")]
        cells += [row["P(pbt > search-best)"], row["P(pbt > default)"]]
        lines.append(f"| {game} | " + " | ".join(interval_text(c, ".2f") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def curves_figure(args: argparse.Namespace) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.games), figsize=(5.5 * len(args.games), 3.8), dpi=110)
    for ax, game in zip(np.atleast_1d(axes), args.games, strict=True):
        for arm in ARMS:
            folder = Path(args.runs) / game / arm
            if not (folder / "metrics.npz").exists():
                continue
            _, m = load(folder)
            r = stats.forward_fill(m["episode_return"].reshape(-1, m["episode_return"].shape[-1]))
            q1, med, q3 = np.nanpercentile(r, [25, 50, 75], axis=0)
            (line,) = ax.plot(m["env_steps"], med, label=arm, lw=1.4)
            ax.fill_between(m["env_steps"], q1, q3, color=line.get_color(), alpha=0.18, lw=0)
        ax.set_title(f"{game}-MinAtar: median over runs, 25-75% band")
        ax.set_xlabel("environment steps per run")
        ax.set_ylabel("episodic return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return finish_figure(fig, plt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--games", nargs="+", default=["Breakout", "SpaceInvaders"])
    parser.add_argument("--steps", type=int, default=1_000_000, help="env steps per run")
    parser.add_argument("--population", type=int, default=16, help="runs of PBT and the search")
    parser.add_argument("--every", type=int, default=8, help="--pbt-every (updates)")
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "results" / "pbt-runs"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--report", action="store_true", help="no training: read and write")
    args = parser.parse_args(argv)
    if not args.report:
        for game in args.games:
            run_game(game, args)
    result = report(args)
    print(markdown(result))
    if Path(args.out).resolve() == (ROOT / "benchmarks" / "results").resolve():
        from benchmarks.report import write_report

        write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
