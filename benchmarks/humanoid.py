"""The PPO paper's section 6.3 on brax's humanoid: running and steering (issue 30).

    python benchmarks/humanoid.py                       # the reduced protocol this CPU allows
    python benchmarks/humanoid.py --report              # no training: tables, curves, GIFs
    # The paper's protocol (Table 4's 32 and 128 actors; Figure 4's step budgets as we read its
    # axes: 50M steps running, 100M steering), for a machine with an accelerator:
    python benchmarks/humanoid.py --seeds 3 --steps-run 50000000 --steps-steer 100000000

Per task (`run`: brax:humanoid with the `humanoid-paper` preset; `steer`: brax:humanoid_steer
with `humanoid-steer-paper`), three run folders under RUNS/TASK/, each one `purejaxppo train`
(checkpointed a tenth of the way; a stopped folder is resumed, a finished one reused):

  ppo      the paper's preset, --seeds seeds x the task's steps
  default  the brax tasks' shipped default (benchmarks/tune.py's brax winner; the presets
           `brax-humanoid` and `brax-humanoid-steer`), the same seeds and steps
  random   the paper preset's untrained policy (learning_rate 0: mean 0, the scheduled log-std),
           the same seeds, 4 updates: the random-policy score

Scored on each run's final return (the episodes ending in the last 5% of updates; the random
policy: every episode of its 4 updates), IQM with 95% bootstrap intervals over seeds,
P(ppo > random), and where the default arm has finished P(default > random) and
P(default > ppo). Writes OUT/humanoid.json, OUT/humanoid_curves.png and, with --render, one
episode of each task's first seed as OUT/humanoid_TASK.gif (`purejaxppo eval --render`).
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

from benchmarks.runfolders import cli, finish_figure, load, log, train  # noqa: E402
from purejaxppo import stats  # noqa: E402
from purejaxppo.files import write_atomic  # noqa: E402
from purejaxppo.ppo import episode_mean  # noqa: E402

TASKS = {
    "run": ("brax:humanoid", "humanoid-paper"),
    "steer": ("brax:humanoid_steer", "humanoid-steer-paper"),
}
RANDOM_UPDATES = 4


def batch_of(task: str) -> int:
    from purejaxppo.presets import preset_settings

    env, preset = TASKS[task]
    return preset_settings(preset, env)[0].batch_size


def run_task(task: str, steps: int, args: argparse.Namespace) -> None:
    from purejaxppo.presets import defaults_for

    env, preset = TASKS[task]
    folder = Path(args.runs) / task
    batch = batch_of(task)
    seeds = ["--num-seeds", str(args.seeds), "--seed", "0"]
    base = ["--config", preset, "--env", env, *seeds]
    updates = steps // batch
    train(folder / "ppo", [*base, "--total-timesteps", str(steps)], max(1, updates // 10))
    default = ["--env", env, *seeds, "--total-timesteps", str(steps)]
    default_updates = steps // defaults_for(env)[0].batch_size
    train(folder / "default", default, max(1, default_updates // 10))
    random = [*base, "--total-timesteps", str(RANDOM_UPDATES * batch), "--set", "learning_rate=0"]
    train(folder / "random", random, RANDOM_UPDATES)


def report(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.throughput import machine

    tasks = {}
    for t, task in enumerate(TASKS):
        folder = Path(args.runs) / task
        if not all((folder / arm / "summary.json").exists() for arm in ("ppo", "random")):
            log(f"{task}: not finished; left out of the report")
            continue
        summary, _ = load(folder / "ppo")
        _, random_metrics = load(folder / "random")
        ppo = np.array([x for row in summary["final_return"] for x in row], np.float64)
        rnd = episode_mean(
            random_metrics["episode_return"].astype(np.float64).reshape(-1, RANDOM_UPDATES),
            random_metrics["episodes"].astype(np.float64).reshape(-1, RANDOM_UPDATES),
        )
        est_p, est_r = stats.interval_estimates(ppo, seed=t), stats.interval_estimates(rnd, seed=t)
        tasks[task] = {
            "env": TASKS[task][0],
            "preset": TASKS[task][1],
            "steps": int(summary["total_timesteps"]),
            "seeds": int(ppo.size),
            "ppo_final": ppo.round(2).tolist(),
            "random": rnd.round(2).tolist(),
            "ppo_iqm": est_p["iqm"].rounded(2),
            "random_iqm": est_r["iqm"].rounded(2),
            "P(ppo > random)": stats.probability_of_improvement(ppo, rnd, seed=t).rounded(),
            "minutes": round((summary["run_seconds"] + summary["compile_seconds"]) / 60, 1),
            "steps_per_second": summary["steps_per_second"],
        }
        if (folder / "default" / "summary.json").exists():
            d_summary, _ = load(folder / "default")
            if "interrupted_at_update" not in d_summary:
                dflt = np.array([x for row in d_summary["final_return"] for x in row], np.float64)
                tasks[task].update(
                    {
                        "default_steps": int(d_summary["total_timesteps"]),
                        "default_final": dflt.round(2).tolist(),
                        "default_iqm": stats.interval_estimates(dflt, seed=t)["iqm"].rounded(2),
                        "P(default > random)": stats.probability_of_improvement(
                            dflt, rnd, seed=t
                        ).rounded(),
                        "P(default > ppo)": stats.probability_of_improvement(
                            dflt, ppo, seed=t
                        ).rounded(),
                        "default_minutes": round(
                            (d_summary["run_seconds"] + d_summary["compile_seconds"]) / 60, 1
                        ),
                        "default_steps_per_second": d_summary["steps_per_second"],
                    }
                )
    result = {"machine": machine(), "tasks": tasks}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:  # a note written by hand beside the figures stays with them
        note = json.loads((out / "humanoid.json").read_text()).get("note")
    except (OSError, ValueError):
        note = None
    if note:
        result["note"] = note
    write_atomic(out / "humanoid.json", json.dumps(result, indent=1).encode())
    if tasks:
        write_atomic(out / "humanoid_curves.png", curves_figure(args, tasks))
    if args.render:
        for task in tasks:
            gif = out / f"humanoid_{task}.gif"
            cli(["eval", str(Path(args.runs) / task / "ppo"), "--episodes", "1", "--render",
                 str(gif)])  # fmt: skip
            log(f"rendered {gif}")
    return result


def curves_figure(args: argparse.Namespace, tasks: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def band(ax: Any, folder: Path, label: str) -> None:
        """A folder's mean return over its runs, with the min-max band."""
        _, m = load(folder)
        r = stats.forward_fill(m["episode_return"].reshape(-1, m["episode_return"].shape[-1]))
        with np.errstate(all="ignore"):
            mean, low, high = np.nanmean(r, 0), np.nanmin(r, 0), np.nanmax(r, 0)
        (line,) = ax.plot(m["env_steps"], mean, lw=1.5, label=label)
        ax.fill_between(m["env_steps"], low, high, color=line.get_color(), alpha=0.2, lw=0)

    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8), dpi=110)
    for ax, task in zip(np.atleast_1d(axes), tasks, strict=True):
        band(ax, Path(args.runs) / task / "ppo", f"PPO ({TASKS[task][1]})")
        if "default_iqm" in tasks[task]:
            band(ax, Path(args.runs) / task / "default", "PPO (the brax default)")
        rnd = float(np.median(tasks[task]["random"]))
        ax.axhline(rnd, color="0.4", ls="--", lw=1, label=f"random policy ({rnd:.0f})")
        ax.set_title(f"{TASKS[task][0]}: mean over {tasks[task]['seeds']} seeds, min-max band")
        ax.set_xlabel("environment steps per run")
        ax.set_ylabel("episodic return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return finish_figure(fig, plt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps-run", type=int, default=2_000_000)
    parser.add_argument("--steps-steer", type=int, default=2_000_000)
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "results" / "humanoid-runs"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--report", action="store_true", help="no training: read and write")
    parser.add_argument("--render", action="store_true", help="draw each task's first seed")
    args = parser.parse_args(argv)
    if not args.report:
        for task in args.tasks:
            run_task(task, args.steps_run if task == "run" else args.steps_steer, args)
    result = report(args)
    print(json.dumps(result["tasks"], indent=1))
    if Path(args.out).resolve() == (ROOT / "benchmarks" / "results").resolve():
        from benchmarks.report import write_report

        write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
