"""Run a peer benchmark (another PPO implementation) in its own venv and return its JSON line.

    from benchmarks.peers.runner import run_peer
    run_peer("sb3", ["--total-timesteps", "50000"])     # Stable-Baselines3 on CartPole-v1
    run_peer("brax", ["--total-timesteps", "100000"])   # brax's PPO on inverted_pendulum

or from a shell in the repository root (prints the same dict as one JSON line):

    python -m benchmarks.peers.runner sb3 --total-timesteps 50000

Each peer gets the venv ROOT/.venvs/NAME (ROOT defaults to the benchmarks folder), built with
`python3 -m venv` from requirements-NAME.txt beside this file. The venv is built again from
scratch only when that file changes (its hash is stored in the venv).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCRIPTS = {"sb3": "sb3_cartpole.py", "brax": "brax_ppo.py"}
STAMP = "requirements.sha256"
TAIL_CHARS = 3000


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
    # The peer's own venv only: nothing from the caller's Python may leak in.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what} failed with exit code {proc.returncode}: {' '.join(cmd)}\n"
            f"--- stderr (tail) ---\n{proc.stderr[-TAIL_CHARS:]}"
        )
    return proc


def ensure_venv(name: str, root: Path) -> Path:
    """Create or refresh ROOT/.venvs/NAME for requirements-NAME.txt; return its python."""
    requirements = HERE / f"requirements-{name}.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    venv = root / ".venvs" / name
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    if venv.exists():
        shutil.rmtree(venv)  # a changed requirements file: start clean, leave nothing stale
    venv.parent.mkdir(parents=True, exist_ok=True)
    _run(["python3", "-m", "venv", str(venv)], f"creating the {name} venv")
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
        f"installing {requirements.name}",
    )
    stamp.write_text(digest + "\n")
    return python


def run_peer(name: str, args: list[str], root: Path = HERE.parent) -> dict[str, Any]:
    """Run peer NAME ("sb3" or "brax") with command-line ARGS; return its parsed JSON line."""
    if name not in SCRIPTS:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(SCRIPTS)}")
    python = ensure_venv(name, Path(root))
    proc = _run([str(python), str(HERE / SCRIPTS[name]), *args], f"peer {name}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(
        f"peer {name} printed no JSON line\n--- stdout (tail) ---\n{proc.stdout[-TAIL_CHARS:]}"
        f"\n--- stderr (tail) ---\n{proc.stderr[-TAIL_CHARS:]}"
    )


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in SCRIPTS:
        raise SystemExit(f"usage: python -m benchmarks.peers.runner {{{','.join(SCRIPTS)}}} ARGS")
    print(json.dumps(run_peer(sys.argv[1], sys.argv[2:])))
