"""The throughput benchmark's worker runs and measures what it claims (tiny sizes)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_worker(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "benchmarks/throughput.py", "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.integration
def test_scaling_worker_reports_both_programs():
    row = run_worker({"kind": "scaling", "num_seeds": 2, "num_envs": 4, "updates": 3, "repeats": 1})
    assert row["steps"] == 2 * 3 * 4 * 128
    for side in ("trainer", "reference"):
        assert row[side]["compile_seconds"] > 0 and row[side]["run_seconds"] > 0
        assert row[side]["steps_per_second"] == round(row["steps"] / row[side]["run_seconds"])
    # Learning costs something: the rollout-only reference is faster than the trainer.
    assert 0 < row["efficiency"] < 1
    assert row["peak_rss_mb"] > 0
