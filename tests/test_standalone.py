"""ppo.py copied alone into an empty folder still runs, importing nothing from the package."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import purejaxppo.ppo

# Run ppo.py as a script with imports of the package and of the dependencies that the
# standalone file must not need refused outright.
RUNNER = r"""
import importlib.abc, runpy, sys
BANNED = ("purejaxppo", "chex", "brax", "orbax")
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BANNED:
            raise ImportError(f"standalone ppo.py imported {name}")
        return None
sys.meta_path.insert(0, Refuse())
sys.argv = ["ppo.py"] + sys.argv[1:]
runpy.run_path("ppo.py", run_name="__main__")
"""

pytestmark = pytest.mark.integration


def test_copied_ppo_py_runs_alone(tmp_path):
    shutil.copy(Path(purejaxppo.ppo.__file__), tmp_path / "ppo.py")
    args = [
        "--env", "CartPole-v1", "--num-seeds", "2", "--total-timesteps", "256",
        "--num-envs", "2", "--num-steps", "16", "--hidden-sizes", "8,8",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-I", "-c", RUNNER, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == {
        "env", "num_seeds", "total_timesteps", "compile_seconds", "run_seconds",
        "steps_per_second", "final_return", "final_return_mean",
    }  # fmt: skip
    assert result["env"] == "CartPole-v1"
    assert result["num_seeds"] == 2 and len(result["final_return"]) == 2
    assert result["total_timesteps"] == 256
    assert result["steps_per_second"] > 0 and result["compile_seconds"] > 0


def test_standalone_cli_rejects_bad_values_with_the_field_name(tmp_path):
    shutil.copy(Path(purejaxppo.ppo.__file__), tmp_path / "ppo.py")
    proc = subprocess.run(
        [sys.executable, "ppo.py", "--num-minibatches", "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Config.num_minibatches" in proc.stderr
    assert "Traceback" not in proc.stderr
