"""Every core by default: the default command against the same command with --devices 1.

    python benchmarks/devices.py [--rounds 2] [--quick]

Each measurement is a fresh process running exactly what a user types: the standalone
`python purejaxppo/ppo.py ...` for CartPole-v1 (16 and 64 seeds) and `purejaxppo train ...` for
brax inverted_pendulum (8 seeds; the standalone file is gymnax-only). The two commands of a pair
run back to back, pairs alternate which goes first, and each ratio is taken within its pair, so
load that drifts over minutes cancels. Steps/s are of the run alone; compile is reported apart.
Writes benchmarks/results/devices.json and rebuilds BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import write_report  # noqa: E402
from throughput import machine, save  # noqa: E402

CASES = {
    "CartPole-v1, 16 seeds": ("ppo.py", "CartPole-v1", 16, 500_000),
    "CartPole-v1, 64 seeds": ("ppo.py", "CartPole-v1", 64, 500_000),
    "brax inverted_pendulum, 8 seeds": ("cli", "brax:inverted_pendulum", 8, 204_800),
}


def run_one(kind: str, env: str, seeds: int, steps: int, devices: int | None) -> dict[str, Any]:
    """One fresh process; returns its steps/s, compile and run seconds and device count."""
    flag = [] if devices is None else ["--devices", str(devices)]
    clean = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    if kind == "ppo.py":
        cmd = [sys.executable, str(ROOT / "purejaxppo" / "ppo.py"), "--env", env,
               "--num-seeds", str(seeds), "--total-timesteps", str(steps), *flag]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=clean, check=True)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "purejaxppo.cli", "train", "--env", env,
                   "--num-seeds", str(seeds), "--total-timesteps", str(steps),
                   "--out", f"{tmp}/run", *flag]  # fmt: skip
            subprocess.run(cmd, capture_output=True, text=True, env=clean, check=True)
            result = json.loads(Path(f"{tmp}/run/summary.json").read_text())
    return {k: result[k] for k in ("devices", "steps_per_second", "compile_seconds",
                                   "run_seconds", "final_return_mean")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="pairs per case")
    parser.add_argument("--quick", action="store_true", help="1 round, 10x fewer steps")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    rows = []
    for label, (kind, env, seeds, steps) in CASES.items():
        steps = steps // 10 if args.quick else steps
        pairs = []
        for r in range(rounds):
            order = [None, 1] if r % 2 == 0 else [1, None]
            got = {d: run_one(kind, env, seeds, steps, d) for d in order}
            ratio = got[None]["steps_per_second"] / got[1]["steps_per_second"]
            pairs.append({"default": got[None], "one": got[1], "ratio": ratio})
            print(label, f"round {r + 1}: {pairs[-1]['ratio']:.2f}x", flush=True)
        rows.append({"case": label, "command": kind, "env": env, "seeds": seeds,
                     "steps": steps, "pairs": pairs})  # fmt: skip
    save("devices", {"machine": machine(), "quick": args.quick, "rows": rows})
    write_report()


if __name__ == "__main__":
    main()
