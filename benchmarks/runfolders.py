"""Run folders for the benchmark scripts (pbt.py, humanoid.py): each arm is one
`purejaxppo train` into a folder, resumed where a session stopped it and reused once finished,
so a benchmark run again trains nothing twice; and the figure-writing end they share."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def cli(args: list[str]) -> None:
    """`purejaxppo ARGS` in a process of its own; its error output where it fails."""
    cmd = [sys.executable, "-m", "purejaxppo.cli", *args]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)  # fmt: skip
    if proc.returncode == 130:
        raise KeyboardInterrupt
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")


def train(folder: Path, argv: list[str], every: int) -> dict[str, Any]:
    """Train `argv` into `folder` with a checkpoint every `every` updates (or resume it, or
    reuse it when finished); returns its summary."""
    summary_path = folder / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if "interrupted_at_update" not in summary:
            log(f"{folder}: finished, reused")
            return summary
    if (folder / "config.json").is_file():
        args = ["train", "--resume", str(folder)]
    else:
        args = ["train", *argv, "--out", str(folder), "--checkpoint-every", str(every)]
    log(f"{folder}: training ({' '.join(args)})")
    t0 = time.time()
    cli(args)
    log(f"{folder}: done in {time.time() - t0:.0f} s")
    return json.loads(summary_path.read_text())


def load(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A finished folder's summary.json and metrics.npz."""
    summary = json.loads((folder / "summary.json").read_text())
    with np.load(folder / "metrics.npz") as m:
        metrics = {k: m[k] for k in m.files}
    return summary, metrics


def finish_figure(fig: Any, plt: Any) -> bytes:
    """Lay out, render to PNG bytes, close."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
