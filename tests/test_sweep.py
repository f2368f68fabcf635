"""The sweep driver: grids, chunking, devices, divergence, checkpoints and resume."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from purejaxppo.checkpoint import read_saved_state
from purejaxppo.cli import main
from purejaxppo.ppo import Config, HParams
from purejaxppo.sweep import layout_runs, make_grid, train_runs

pytestmark = pytest.mark.integration

TINY = Config(
    num_envs=2, num_steps=8, total_timesteps=16 * 12, update_epochs=1, num_minibatches=2,
    hidden_sizes=(8,),
)  # fmt: skip
TINY_SET = ["num_envs=2", "num_steps=8", "update_epochs=1", "num_minibatches=2", "hidden_sizes=8"]


def test_grid_is_the_cartesian_product_last_field_fastest():
    grid = make_grid({"learning_rate": [1e-3, 1e-2], "ent_coef": [0.0, 0.1, 0.2]})
    assert grid.size == 6
    assert grid.settings[1] == {"learning_rate": 1e-3, "ent_coef": 0.1}
    assert grid.settings[3] == {"learning_rate": 1e-2, "ent_coef": 0.0}
    with pytest.raises(ValueError, match="only traced HParams"):
        make_grid({"num_envs": [1, 2]})


def test_runs_share_seeds_across_settings():
    runs = layout_runs(HParams(), make_grid({"gamma": [0.9, 0.99]}), 3, 0)
    np.testing.assert_array_equal(runs.setting, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(runs.seed, [0, 1, 2, 0, 1, 2])
    data = np.asarray(jax.random.key_data(runs.keys))
    np.testing.assert_array_equal(data[:3], data[3:])
    np.testing.assert_allclose(runs.hparams.gamma, [0.9] * 3 + [0.99] * 3)


def test_chunked_equals_one_call_bitwise():
    runs = layout_runs(HParams(), make_grid({"learning_rate": [1e-3, 3e-3]}), 2, 0)
    _, whole = train_runs(TINY, runs, chunk=TINY.num_updates)
    _, chunked = train_runs(TINY, runs, chunk=5)
    for name in whole:
        np.testing.assert_array_equal(whole[name], chunked[name], err_msg=name)


def test_sweep_run_equals_the_run_alone():
    # Run (setting 1, seed 2) inside a 2 x 3 sweep equals that setting and seed trained alone.
    grid = make_grid({"learning_rate": [1e-3, 5e-3]})
    _, sweep = train_runs(TINY, layout_runs(HParams(), grid, 3, 0))
    alone_runs = layout_runs(HParams(learning_rate=5e-3), make_grid({}), 3, 0)
    _, alone = train_runs(TINY, alone_runs)
    for name in sweep:
        np.testing.assert_allclose(sweep[name][5], alone[name][2], rtol=1e-5, atol=1e-6)


def words(text):
    return text.split()


def test_diverged_run_is_named_and_the_others_are_untouched(tmp_path, capsys):
    out = tmp_path / "div"
    run = words("train --env CartPole-v1 --num-seeds 2 --total-timesteps 192")
    argv = [*run, "--out", str(out), "--sweep", "learning_rate=0.001,1e30", "--set", *TINY_SET]
    assert main(argv) == 0
    err = capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    diverged = summary["diverged"]
    assert {d["setting"] for d in diverged} == {1} and len(diverged) == 2
    assert "learning_rate=1e+30" in err and "went non-finite at update" in err
    metrics = np.load(out / "metrics.npz")
    assert metrics["finite"][0].all() and not metrics["finite"][1].all()
    # The healthy setting trained exactly as it would alone.
    alone = tmp_path / "alone"
    assert main(["train", "--env", "CartPole-v1", "--num-seeds", "2", "--total-timesteps", "192",
                 "--out", str(alone), "--set", "learning_rate=0.001", *TINY_SET]) == 0  # fmt: skip
    ref = np.load(alone / "metrics.npz")
    for name in ("episode_return", "policy_loss", "value_loss"):
        np.testing.assert_allclose(metrics[name][0], ref[name][0], rtol=1e-5, atol=1e-6)


FOUR_DEVICES = textwrap.dedent(
    """
    import jax, numpy as np
    from purejaxppo.ppo import Config, HParams
    from purejaxppo.sweep import layout_runs, make_grid, make_mesh, train_runs
    assert len(jax.devices()) == 4
    cfg = Config(num_envs=2, num_steps=8, total_timesteps=192, update_epochs=1,
                 num_minibatches=2, hidden_sizes=(8,))
    runs = layout_runs(HParams(), make_grid({"learning_rate": [1e-3, 3e-3, 1e-2]}), 2, 0)
    s4, m4 = train_runs(cfg, runs, chunk=4)
    s1, m1 = train_runs(cfg, runs, chunk=4, mesh=make_mesh(jax.devices()[:1]))
    assert m4["episode_return"].shape == (6, 12)
    worst = max(float(np.nanmax(np.abs(m4[k].astype(float) - m1[k].astype(float))))
                for k in m4)
    exact = all(np.array_equal(m4[k], m1[k], equal_nan=True) for k in m4)
    print("RESULT", exact, worst)
    """
)


def test_four_fake_devices_equal_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run(
        [sys.executable, "-c", FOUR_DEVICES], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    exact, worst = proc.stdout.split("RESULT")[1].split()
    print("4 devices vs 1: bitwise", exact, "max abs diff", worst)
    assert exact == "True" or float(worst) < 1e-5


def run_cli(args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "purejaxppo.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )  # fmt: skip


COMMON = ["--env", "CartPole-v1", "--num-seeds", "2", "--total-timesteps", str(16 * 120),
          "--sweep", "learning_rate=0.001,0.003", "--chunk", "2", "--checkpoint-every", "2",
          "--set", *TINY_SET]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    ref = run_cli(["train", *COMMON, "--out", str(out)])
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-3000:]
    return out


def newest_checkpoint(out):
    ckpts = out / "checkpoints"
    steps = [int(p.name) for p in ckpts.iterdir() if p.name.isdigit()] if ckpts.is_dir() else []
    return max(steps, default=-1)


def interrupt_after_checkpoint(out, sig):
    """Start the run, send `sig` once a mid-run checkpoint exists; return the finished process."""
    proc = run_cli(["train", *COMMON, "--out", str(out)])
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if 20 <= newest_checkpoint(out) < 100:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc, err


def assert_same_run(a_dir, b_dir):
    a, b = np.load(a_dir / "metrics.npz"), np.load(b_dir / "metrics.npz")
    assert set(a.files) == set(b.files)
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    sa, sb = read_saved_state(a_dir / "checkpoints"), read_saved_state(b_dir / "checkpoints")
    for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def resume(out):
    proc = run_cli(["train", "--resume", str(out)])
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "resumed from checkpoint at update" in err


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, uninterrupted):
    out = tmp_path / "killed"
    proc, _ = interrupt_after_checkpoint(out, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "summary.json").exists()
    resume(out)
    assert_same_run(out, uninterrupted)


@pytest.mark.integration
def test_killed_at_random_points_and_resumed_ends_bit_identical(tmp_path, uninterrupted):
    """SIGKILL at times drawn from a fixed seed: during start-up, compile, training or a
    checkpoint write (one every 2 updates). Each time, continue as a user would (resume if the
    run recorded itself, else start it again); the end must equal the uninterrupted run.

    A kill comes at its drawn time or once the run has checkpointed 25 more updates, whichever
    is first, so four kills always happen before the run's 120 updates end, however fast the
    machine (with times alone, a faster trainer finished the run before the fourth kill)."""
    import random

    rng = random.Random(20261125)
    out = tmp_path / "killed"
    kills, launches = 0, 0
    while launches < 12:
        launches += 1
        started = (out / "config.json").exists()
        args = ["train", "--resume", str(out)] if started else ["train", *COMMON, "--out", str(out)]
        log = tmp_path / f"launch{launches}.log"
        with open(log, "w") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "purejaxppo.cli", *args], stdout=sink, stderr=sink
            )
            if kills < 4:
                delay = rng.uniform(2.0, 12.0)
                deadline, cap = time.time() + delay, 25 * (kills + 1)
                while proc.poll() is None and time.time() < deadline:
                    if newest_checkpoint(out) >= cap:
                        break
                    time.sleep(0.02)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                    kills += 1
                    print(
                        f"killed after at most {delay:.1f} s at checkpoint {newest_checkpoint(out)}"
                    )
                    continue
            proc.wait(timeout=600)
        assert proc.returncode == 0, f"launch {launches} failed: {log.read_text()[-3000:]}"
        break
    assert kills == 4 and (out / "summary.json").exists()
    assert_same_run(out, uninterrupted)


def test_ctrl_c_checkpoints_exits_130_and_resume_loses_nothing(tmp_path, uninterrupted):
    out = tmp_path / "interrupted"
    proc, err = interrupt_after_checkpoint(out, signal.SIGINT)
    assert proc.returncode == 130, err[-3000:]
    assert f"purejaxppo train --resume {out}" in err
    stopped = json.loads((out / "summary.json").read_text())["interrupted_at_update"]
    assert 20 <= stopped < 120
    saved = [int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()]
    assert max(saved) == stopped  # the interrupt itself wrote a checkpoint
    resume(out)
    assert_same_run(out, uninterrupted)


def test_resume_refuses_other_settings_and_foreign_folders(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--env", "CartPole-v1", "--total-timesteps", "64", "--out", str(out),
                 "--set", *TINY_SET]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--env", "Acrobot-v1"]) == 2
    assert "--resume takes its settings" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    # A config.json edited after the checkpoint was written no longer matches it.
    record = json.loads((out / "config.json").read_text())
    record["hparams"]["gamma"] = 0.5
    (out / "config.json").write_text(json.dumps(record))
    assert main(["train", "--resume", str(out)]) == 2
    assert "differ" in capsys.readouterr().err
    assert main(["train", "--env", "CartPole-v1", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_eval_restores_and_scores_every_run(tmp_path, capsys):
    out = tmp_path / "run"
    run = words("train --env CartPole-v1 --num-seeds 2 --total-timesteps 64 --sweep gamma=0.9,0.99")
    assert main([*run, "--out", str(out), "--set", *TINY_SET]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--episodes", "3"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(result["runs"]) == 4 and result["update"] == 4
    assert {r["gamma"] for r in result["runs"]} == {0.9, 0.99}
    assert all(8 <= r["mean_return"] <= 500 for r in result["runs"])
    assert Path(out / "eval.json").is_file()


def test_static_sweep_compiles_once_per_value(tmp_path, capsys):
    out = tmp_path / "static"
    assert main(["train", "--env", "CartPole-v1", "--total-timesteps", "64", "--out", str(out),
                 "--sweep", "num_envs=2,4", "--set", *TINY_SET]) == 0  # fmt: skip
    index = json.loads((out / "summary.json").read_text())["static_sweep"]
    assert set(index) == {"num_envs=2", "num_envs=4"}
    assert np.load(out / "num_envs=4" / "metrics.npz")["episode_return"].shape == (1, 1, 2)


def read_events(folder):
    """Scalars from TensorBoard event files, parsed with tensorboardX's own protobuf."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in folder.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def test_tensorboard_events_per_setting(tmp_path, capsys):
    out = tmp_path / "tb"
    assert main(["train", "--env", "CartPole-v1", "--num-seeds", "2", "--total-timesteps", "64",
                 "--out", str(out), "--sweep", "learning_rate=0.001,0.01", "--tensorboard",
                 "--set", *TINY_SET]) == 0  # fmt: skip
    folders = sorted(p.name for p in (out / "tensorboard").iterdir())
    assert folders == ["learning_rate=0.001", "learning_rate=0.01"]
    scalars = read_events(out / "tensorboard" / "learning_rate=0.01")
    assert sorted(scalars["learning_rate"]) == [16, 32, 48, 64]
    assert scalars["learning_rate"][16] == pytest.approx(0.01)
    assert scalars["learning_rate"][64] == pytest.approx(0.0025)


def test_wandb_without_the_package_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    code = main(["train", "--env", "CartPole-v1", "--out", str(tmp_path / "w"), "--wandb"])
    assert code == 2
    assert "pip install wandb" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_sweep_too_large_for_memory_runs_in_batches(tmp_path, capsys, monkeypatch):
    args = ["train", "--env", "CartPole-v1", "--num-seeds", "3", "--total-timesteps", "64",
            "--sweep", "learning_rate=0.001,0.01", "--set", *TINY_SET]  # fmt: skip
    from purejaxppo import driver
    from purejaxppo.sweep import Runner, host_bytes_per_run, state_bytes

    # The planner's own measure of one run (compiled programs + host copy of the state), with
    # this test process's memory taken as zero: room for one run at a time, not two.
    config = TINY.replace(total_timesteps=64)
    runner = Runner(config)
    one = runner.compile(1, 2) + state_bytes(runner.trainer) + 6 * host_bytes_per_run(config)
    monkeypatch.setattr(driver, "process_rss_bytes", lambda: 0)
    budget = str(1.5 * one / 2**20)
    assert main([*args, "--out", str(tmp_path / "batched"), "--memory-budget-mb", budget]) == 0
    err = capsys.readouterr().err
    assert "does not fit in memory at once: 6 batches of 1 runs" in err
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    a = np.load(tmp_path / "batched" / "metrics.npz")
    b = np.load(tmp_path / "whole" / "metrics.npz")
    for name in ("episode_return", "policy_loss", "value_loss", "finite"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert sorted(p.name for p in (tmp_path / "batched" / "checkpoints").iterdir()) == [
        f"batch-{b}" for b in range(6)
    ]


@pytest.mark.integration
def test_the_memory_budget_bounds_the_peak_memory_of_the_process(tmp_path):
    """The budget is the whole process's peak resident memory (runtime and compiler included):
    1000 CartPole runs that peak at ~1070 MiB at once, in 1000 MiB, peak within 10% of it."""
    out = tmp_path / "run"
    # Without the session's persistent compilation cache (conftest.py): reading and writing a
    # large cache adds ~300 MiB to the process (measured: 1028-1031 MiB held before training
    # with the suite's cache, 727 without), which is the cache's memory, not the run's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    # At the shipped XLA level, whatever make test chose for this process: its 1000 runs train
    # 3x slower at level 0 (16 s against 5 s measured) and compile no faster.
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if "xla_backend_optimization_level" not in f)
    proc = subprocess.run(
        [sys.executable, "-m", "purejaxppo.cli", "train", "--env", "CartPole-v1",
         "--num-seeds", "1000", "--total-timesteps", "1024", "--memory-budget-mb", "1000",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "does not fit in memory at once" in proc.stderr
    peak = json.loads((out / "summary.json").read_text())["peak_rss_mb"]
    assert peak <= 1.1 * 1000, peak


def test_the_peak_memory_is_the_processs_own_not_its_parents():
    """ru_maxrss survives exec on Linux: a CLI started by a 1.5 GB parent (pytest after many
    tests, a notebook) reported the parent's peak as its own. The peak read is the child's."""
    code = (
        "import subprocess, sys\n"
        "x = bytearray(1500 * 2**20)\n"
        "x[::4096] = b'\\x01' * len(x[::4096])\n"
        "subprocess.run([sys.executable, '-c', 'from purejaxppo.driver import peak_rss_mb; "
        "print(peak_rss_mb())'], check=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(proc.stdout) < 1000, proc.stdout


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_localhost_gather_the_single_process_result(tmp_path):
    args = ["train", "--env", "CartPole-v1", "--num-seeds", "3", "--total-timesteps", "192",
            "--sweep", "learning_rate=0.001,0.01", "--set", *TINY_SET]  # fmt: skip
    job = ["--out", str(tmp_path / "job"), "--coordinator", f"127.0.0.1:{free_port()}",
           "--num-processes", "2"]  # fmt: skip
    procs = [run_cli([*args, *job, "--process-id", str(i)]) for i in (1, 0)]
    # Hold process 1 for 45 s once both run: process 0 then waits at the gather longer than
    # gloo's 30 s peer deadline (this failed in CI before the driver waited on a barrier).
    time.sleep(5)
    procs[0].send_signal(signal.SIGSTOP)
    time.sleep(45)
    procs[0].send_signal(signal.SIGCONT)
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    logs = outputs[0][1] + outputs[1][1]
    assert "[process 1/2]" in logs and "runs 3..5 here" in logs and "runs 0..2 here" in logs
    single = run_cli([*args, "--out", str(tmp_path / "single")])
    _, err = single.communicate(timeout=600)
    assert single.returncode == 0, err[-3000:]
    a, b = np.load(tmp_path / "job" / "metrics.npz"), np.load(tmp_path / "single" / "metrics.npz")
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert sorted(p.name for p in (tmp_path / "job" / "checkpoints").iterdir()) == [
        "process-0", "process-1",
    ]  # fmt: skip


def test_eval_renders_one_episode_to_a_gif(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "run"
    assert main(["train", "--env", "CartPole-v1", "--total-timesteps", "32", "--out", str(out),
                 "--set", *TINY_SET]) == 0  # fmt: skip
    gif = tmp_path / "episode.gif"
    capsys.readouterr()
    assert main(["eval", str(out), "--episodes", "1", "--render", str(gif)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Image.open(gif).n_frames == result["render"]["frames"] > 1
    assert main(["eval", str(out), "--render", str(tmp_path / "x.mp4")]) == 2
    assert "ending in .gif" in capsys.readouterr().err
    assert main(["eval", str(out), "--render", str(gif), "--render-run", "5"]) == 2
    assert "--render-run must be in 0..0" in capsys.readouterr().err


@pytest.mark.integration
def test_runs_use_every_core_by_default_and_resume_keeps_the_count(tmp_path):
    out = tmp_path / "run"
    args = ["--env", "CartPole-v1", "--num-seeds", "3", "--total-timesteps", "64", "--set",
            *TINY_SET]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    proc = run_cli(["train", *args, "--out", str(out)], env=env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    cores = len(os.sched_getaffinity(0))
    assert json.loads((out / "config.json").read_text())["devices"] == cores
    assert json.loads((out / "summary.json").read_text())["devices"] == cores
    assert f"on {cores} device(s)" in err
    other = 1 if cores > 1 else 2
    before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*"))
    proc = run_cli(["train", "--resume", str(out), "--devices", str(other)], env=env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [
        f"purejaxppo: error: --devices {other}: {out} was trained on {cores} device(s), and a "
        f"run's numbers depend on the per-device batch; drop --devices (it uses {cores})"
    ]
    assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    proc = run_cli(["eval", str(out), "--episodes", "2"], env=env)  # takes the recorded count
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
