"""What the statistics of a sweep cost: summary.json's intervals and ranking, and `compare`, for
sweeps of 1024 runs in three shapes (1 setting x 1024 seeds, 64 x 16, 1024 x 1).

The scores are made up (the cost does not depend on them); the folders are written by the
driver's own write_results, so compare reads exactly what a trained sweep leaves. Timings are
the best of 3, in seconds, on this process's CPU; plotting (matplotlib) is timed apart.

  python benchmarks/stats_cost.py            # writes benchmarks/results/stats_cost.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from purejaxppo import compare, stats
from purejaxppo.driver import ranking, setting_statistics, write_results
from purejaxppo.files import write_atomic
from purejaxppo.ppo import Config, HParams
from purejaxppo.record import Options, Sweep
from purejaxppo.sweep import Grid

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = ((1, 1024), (64, 16), (1024, 1))
UPDATES = 100


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_folder(out: Path, settings: int, seeds: int, rng: np.random.Generator) -> None:
    n = settings
    grid = Grid(("learning_rate",), tuple({"learning_rate": 1e-4 * (h + 1)} for h in range(n)))
    returns = rng.normal(200, 50, (settings * seeds, UPDATES)).astype(np.float32)
    history = {
        "episode_return": returns,
        "episodes": np.ones_like(returns),
        "finite": np.ones(returns.shape, bool),
    }
    config = Config(env="CartPole-v1", num_envs=4, num_steps=128, total_timesteps=UPDATES * 512)
    sweep = Sweep(config, HParams(), grid, seeds)
    out.mkdir(parents=True)
    write_atomic(out / "config.json", json.dumps(sweep.record(1, Options())).encode())
    write_results(out, sweep, history, {}, {"compile": 1.0, "run": 1.0, "steps": 1})


def measure(folder: Path, settings: int, seeds: int, rng: np.random.Generator) -> dict:
    make_folder(folder, settings, seeds, rng)
    finals = rng.normal(200, 50, (settings, seeds))

    def summary_stats() -> None:
        ranking([setting_statistics(finals[h], seed=h) for h in range(settings)])

    entries = compare.gather_entries([str(folder)])
    result = compare.compare(entries)
    return {
        "settings": settings,
        "seeds": seeds,
        "runs": settings * seeds,
        "summary_statistics_s": round(best_of(summary_stats), 4),
        "compare_read_s": round(best_of(lambda: compare.gather_entries([str(folder)])), 4),
        "compare_statistics_s": round(best_of(lambda: compare.compare(entries)), 4),
        "compare_plots_s": round(
            best_of(lambda: (compare.plot_profile(result), compare.plot_curves(result)), 1), 4
        ),
    }


def main() -> dict:
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for settings, seeds in SHAPES:
            rows.append(measure(Path(tmp) / f"{settings}x{seeds}", settings, seeds, rng))
            print(json.dumps(rows[-1]), file=sys.stderr)
    out = {
        "what": "seconds (best of 3) for the statistics of a 1024-run sweep, made-up scores",
        "replicates": stats.DEFAULT_REPS,
        "updates_per_run": UPDATES,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stats_cost.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
