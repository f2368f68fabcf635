"""ppo.py copied alone into an empty folder still runs, importing nothing from the package."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
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
        "env", "num_seeds", "devices", "total_timesteps", "compile_seconds", "run_seconds",
        "steps_per_second", "final_return", "final_return_mean", "diverged",
    }  # fmt: skip
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        assert result["devices"] == len(os.sched_getaffinity(0))  # every core by default
    assert result["env"] == "CartPole-v1"
    assert result["num_seeds"] == 2 and len(result["final_return"]) == 2
    assert result["total_timesteps"] == 256
    assert result["steps_per_second"] > 0 and result["compile_seconds"] > 0
    assert result["diverged"] == []


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


SHARDED = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np
    import ppo
    devices = ppo.use_cpu_cores(int(sys.argv[1]))
    config = ppo.Config(env="CartPole-v1", num_envs=4, num_steps=16, total_timesteps=16 * 4 * 6,
                        hidden_sizes=(16,))
    _, metrics, summary = ppo.train_seeds(config, ppo.HParams(), 3, 0)
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(metrics[k]).tobytes()
                                     for k in sorted(metrics))).hexdigest()
    print(json.dumps({"devices": summary["devices"], "digest": digest,
                      "first": {k: metrics[k][:, 0].tolist() for k in
                                ("policy_loss", "value_loss", "entropy", "approx_kl")}}))
    """
)


@pytest.mark.integration
def test_seeds_sharded_over_two_devices_match_one_device_per_seed(tmp_path):
    """3 seeds on 2 devices (uneven: one padded copy, dropped) against 1 device: each seed's
    first update agrees to float rounding; on the same device count, runs are bitwise equal."""
    shutil.copy(Path(purejaxppo.ppo.__file__), tmp_path / "ppo.py")

    def run(devices):
        proc = subprocess.run([sys.executable, "-c", SHARDED, str(devices)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    one, two, again = run(1), run(2), run(2)
    assert (one["devices"], two["devices"]) == (1, 2)
    assert two["digest"] == again["digest"]  # same device count: bitwise the same
    for name, values in one["first"].items():
        assert len(values) == 3
        np.testing.assert_allclose(two["first"][name], values, rtol=1e-5, atol=1e-7, err_msg=name)


def test_use_cpu_cores_after_jax_started_says_so():
    code = "import jax, jax.numpy as jnp, ppo; jnp.zeros(1); ppo.use_cpu_cores(3)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(purejaxppo.ppo.__file__).parent,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode != 0
    assert "use_cpu_cores(3) came too late: JAX has already started with 1 CPU device" in (
        proc.stderr
    ), proc.stderr[-2000:]
