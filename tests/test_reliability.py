"""Nothing lost, nothing silently wrong: one run per folder, damaged checkpoints, bad records."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from purejaxppo.runlock import LOCK_NAME, FolderInUse, FolderLock

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from purejaxppo.runlock import FolderLock
    FolderLock(Path(sys.argv[1])).acquire()
    print("held", flush=True)
    time.sleep(600)
    """
)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_held_folder_is_refused_and_sigkill_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(tmp_path)
        with pytest.raises(FolderInUse, match=f"process {holder.pid}"):
            FolderLock(tmp_path).check()
        with pytest.raises(FolderInUse):
            FolderLock(tmp_path).acquire()
        assert snapshot(tmp_path) == before  # refusing changed nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel dropped the dead holder's lock: the folder is free again.
    FolderLock(tmp_path).check()
    lock = FolderLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    lock.release()


def test_checking_an_unlocked_folder_creates_nothing(tmp_path):
    FolderLock(tmp_path).check()
    assert list(tmp_path.iterdir()) == []


def cli(*args: str, quiet: bool = False) -> subprocess.Popen:
    # quiet: a long run's progress lines would fill an unread pipe and block it.
    pipe = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen(
        [sys.executable, "-m", "purejaxppo.cli", *args], stdout=pipe, stderr=pipe, text=True
    )


@pytest.mark.integration
def test_second_run_into_a_folder_in_use_is_refused_and_touches_nothing(tmp_path):
    out = tmp_path / "run"
    first = cli("train", "--env", "CartPole-v1", "--num-seeds", "2", "--total-timesteps",
                "2000000", "--out", str(out), "--chunk", "1", quiet=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (out / "config.json").exists():
            time.sleep(0.1)
        assert (out / "config.json").exists(), "the first run did not start"
        before = snapshot(out)
        second = cli("train", "--env", "CartPole-v1", "--num-seeds", "3", "--seed", "2",
                     "--sweep", "learning_rate=0.001,0.0005", "--checkpoint-every", "5",
                     "--out", str(out))  # fmt: skip
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2
        assert len(err.strip().splitlines()) == 1, err
        assert f"process {first.pid} is training into this folder" in err
        after = snapshot(out)
        # The first run may have written meanwhile; the second wrote nothing of its own.
        assert set(after) <= set(before) | {"config.json"}
        # The first run's record is still there (the second would have written 3 seeds).
        assert json.loads((out / "config.json").read_text())["num_seeds"] == 2
        resumed = cli("train", "--resume", str(out))
        _, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 2 and "is training into this folder" in err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    FolderLock(out).check()  # no stale lock after SIGKILL


# ------------------------------------------------------------------------------------------
# Damaged checkpoints: named in one line, the previous good one used, never a damaged result.
# ------------------------------------------------------------------------------------------

TINY = ["--env", "CartPole-v1", "--num-seeds", "2", "--total-timesteps", str(16 * 10),
        "--checkpoint-every", "2", "--keep", "10", "--chunk", "2", "--set", "num_envs=2",
        "num_steps=8", "update_epochs=1", "num_minibatches=2", "hidden_sizes=8"]  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run with checkpoints at updates 2, 4, 6, 8 and 10."""
    from purejaxppo.cli import main

    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir()) == [2, 4, 6, 8, 10]
    return out


def copy_run(src: Path, dst: Path, keep_upto: int | None = None) -> Path:
    """A copy of a run folder; keep_upto drops later checkpoints and the results (a run that
    stopped at that update)."""
    import shutil

    shutil.copytree(src, dst)
    if keep_upto is not None:
        for step in (dst / "checkpoints").iterdir():
            if int(step.name) > keep_upto:
                shutil.rmtree(step)
        for name in ("metrics.npz", "summary.json", "curves.png"):
            (dst / name).unlink()
    (dst / LOCK_NAME).unlink(missing_ok=True)
    return dst


def largest_file(step: Path) -> Path:
    return max((p for p in step.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(255 - b for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))


DAMAGE = {
    "flipped bytes": lambda step: flip(largest_file(step)),
    "truncated file": lambda step: largest_file(step).write_bytes(
        largest_file(step).read_bytes()[:100]
    ),
    "deleted file": lambda step: largest_file(step).unlink(),
    "garbage metadata": lambda step: (step / "_CHECKPOINT_METADATA").write_text("{not json"),
    "no checksum": lambda step: (step / "purejaxppo.sha256").unlink(),
}


def run_main(capsys, *argv):
    from purejaxppo.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.integration
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_eval_skips_a_damaged_latest_checkpoint(finished, tmp_path, capsys, damage):
    run = copy_run(finished, tmp_path / "run")
    DAMAGE[damage](run / "checkpoints" / "10")
    code, out, err = run_main(capsys, "eval", str(run), "--episodes", "1")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["update"] == 8
    lines = [line for line in err.splitlines() if "damaged" in line]
    assert len(lines) == 1 and "checkpoint 10" in lines[0] and "checkpoint 8" in lines[0]


@pytest.mark.integration
def test_every_checkpoint_damaged_is_one_line_exit_2(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run", keep_upto=4)
    for step in (2, 4):
        flip(largest_file(run / "checkpoints" / str(step)))
    before = snapshot(run)
    for argv in (["eval", str(run)], ["train", "--resume", str(run)]):
        code, _, err = run_main(capsys, *argv)
        assert code == 2
        assert len(err.strip().splitlines()) == 1, err
        assert "no intact checkpoint" in err and "4: checksum mismatch" in err
    after = snapshot(run)
    assert {k: v for k, v in after.items() if LOCK_NAME not in k} == before


@pytest.mark.integration
def test_resume_falls_back_past_a_damaged_checkpoint_and_ends_identical(finished, tmp_path, capsys):
    import numpy as np

    run = copy_run(finished, tmp_path / "run", keep_upto=6)
    flip(largest_file(run / "checkpoints" / "6"))
    code, _, err = run_main(capsys, "train", "--resume", str(run))
    assert code == 0, err
    assert "checkpoint 6 is damaged: checksum mismatch" in err
    assert "resumed from checkpoint at update 4" in err
    assert (run / "checkpoints.damaged" / "6").is_dir()  # kept for inspection, out of the way
    a, b = np.load(finished / "metrics.npz"), np.load(run / "metrics.npz")
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# ------------------------------------------------------------------------------------------
# The run record: one reader, the same checks for --resume and eval.
# ------------------------------------------------------------------------------------------

EDITS = {
    "another activation": (lambda r: r["config"].update(activation="relu"), "activation"),
    "another env": (lambda r: r["config"].update(env="Acrobot-v1"), "env"),
    "another seed count": (lambda r: r.update(num_seeds=3), "num_seeds"),
}


@pytest.mark.integration
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_config_json_is_refused_by_eval_and_resume(finished, tmp_path, capsys, edit):
    run = copy_run(finished, tmp_path / "run")
    record = json.loads((run / "config.json").read_text())
    change, field = EDITS[edit]
    change(record)
    (run / "config.json").write_text(json.dumps(record))
    for argv in (["eval", str(run)], ["train", "--resume", str(run)]):
        code, _, err = run_main(capsys, *argv)
        assert code == 2
        assert len(err.strip().splitlines()) == 1, err
        assert "differs from checkpoint 10's own record" in err and field in err


@pytest.mark.integration
@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "config.json is unreadable"),
        ('{"config": 3}', "not a run record of this version"),
        ('{"config": {"env": "CartPole-v1", "hidden_sizes": [8], "bogus": 1}}', "bogus"),
    ],
)
def test_a_corrupt_config_json_is_one_line_exit_2(finished, tmp_path, capsys, text, message):
    run = copy_run(finished, tmp_path / "run")
    (run / "config.json").write_text(text)
    for argv in (["eval", str(run)], ["train", "--resume", str(run)]):
        code, _, err = run_main(capsys, *argv)
        assert code == 2 and message in err
        assert len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------------------
# Bad input from files and the environment: one line, exit 2, nothing written.
# ------------------------------------------------------------------------------------------

YAML_CASES = {
    "syntax error": ("env: [CartPole-v1\n", "not valid YAML (line 2"),
    "a list at the top": ("- env\n- config\n", "expected a mapping"),
    "env not a name": ("env: 123\n", "env must be an environment name"),
    "config a list": ("env: CartPole-v1\nconfig: [1, 2]\n", "config must be a mapping"),
    "hidden_sizes a number": (
        "env: CartPole-v1\nconfig:\n  hidden_sizes: 64\n",
        "hidden_sizes must be a list",
    ),
    "a list for a float": (
        "env: CartPole-v1\nhparams:\n  learning_rate: [0.1, 0.2]\n",
        "must be a number",
    ),
    "a string for an int": ("env: CartPole-v1\nconfig:\n  num_envs: four\n", "Config.num_envs"),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_bad_yaml_is_one_line_exit_2(tmp_path, capsys, case):
    text, message = YAML_CASES[case]
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    code, _, err = run_main(capsys, "train", "--config", str(path), "--out", str(tmp_path / "o"))
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("var", ["PUREJAXPPO_NUM_PROCESSES", "PUREJAXPPO_PROCESS_ID"])
def test_malformed_process_variables_are_one_line_exit_2(monkeypatch, capsys, var):
    from purejaxppo.cli import main

    monkeypatch.setenv(var, "two")
    assert main(["train", "--env", "CartPole-v1", "--out", "never"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{var} must be" in err and "'two'" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------------
# Static sweeps (one subfolder per value): recorded whole, resumable whole, never retrained.
# ------------------------------------------------------------------------------------------

STATIC = [*TINY, "--sweep", "num_minibatches=1,2"]


@pytest.fixture(scope="module")
def static_sweep(tmp_path_factory):
    from purejaxppo.cli import main

    out = tmp_path_factory.mktemp("static") / "sweep"
    assert main(["train", *STATIC, "--out", str(out)]) == 0
    record = json.loads((out / "config.json").read_text())["static_sweep"]
    assert sorted(record["variants"]) == ["num_minibatches=1", "num_minibatches=2"]
    return out


@pytest.mark.integration
def test_a_finished_static_sweep_is_refused_and_left_alone(static_sweep, capsys):
    before = snapshot(static_sweep)
    argv = ["train", *STATIC, "--num-seeds", "3", "--out", str(static_sweep)]
    code, _, err = run_main(capsys, *argv)
    assert code == 2 and "already holds a run" in err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(static_sweep) == before


@pytest.mark.integration
def test_eval_of_a_static_sweep_folder_names_its_variants(static_sweep, capsys):
    code, _, err = run_main(capsys, "eval", str(static_sweep))
    assert code == 2 and "num_minibatches=1, num_minibatches=2" in err


def test_duplicate_sweep_values_are_refused(tmp_path, capsys):
    for values in ("num_minibatches=4,4", "learning_rate=0.001,0.002,0.001"):
        code, _, err = run_main(capsys, "train", "--env", "CartPole-v1", "--sweep", values,
                                "--out", str(tmp_path / "o"))  # fmt: skip
        assert code == 2 and "more than once" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.integration
def test_resume_of_a_static_sweep_finishes_every_variant(static_sweep, tmp_path, capsys):
    import shutil

    import numpy as np

    run = tmp_path / "sweep"
    shutil.copytree(static_sweep, run)
    # Stopped in the first variant at update 4; the second never started.
    first, second = run / "num_minibatches=1", run / "num_minibatches=2"
    for step in (first / "checkpoints").iterdir():
        if int(step.name) > 4:
            shutil.rmtree(step)
    for name in ("metrics.npz", "summary.json", "curves.png"):
        (first / name).unlink()
    shutil.rmtree(second)
    (run / "summary.json").unlink()
    code, _, err = run_main(capsys, "train", "--resume", str(run))
    assert code == 0, err
    assert "num_minibatches=1: resuming" in err and "num_minibatches=2: starting" in err
    for variant in ("num_minibatches=1", "num_minibatches=2"):
        a = np.load(static_sweep / variant / "metrics.npz")
        b = np.load(run / variant / "metrics.npz")
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{variant} {name}")
    index = json.loads((run / "summary.json").read_text())["static_sweep"]
    assert sorted(index) == ["num_minibatches=1", "num_minibatches=2"]
    code, _, err = run_main(capsys, "train", "--resume", str(run))
    assert code == 0 and err.count("already complete") == 2


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KiB tmpfs (needs root, as on CI); unmounted afterwards. A first checkpoint
    takes 140-230 KiB here (orbax writes 29-52 files, more or fewer from run to run): 200 KiB
    sometimes held none."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.integration
def test_a_full_disk_names_what_was_not_written_and_keeps_the_last_checkpoint(small_disk):
    from purejaxppo.checkpoint import Checkpointer

    out = small_disk / "run"
    argv = [*TINY, "--total-timesteps", str(16 * 40), "--keep", "40"]
    proc = cli("train", *argv, "--out", str(out))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    lines = [line for line in err.splitlines() if line.startswith("purejaxppo: error:")]
    assert len(lines) == 1 and "disk full while writing checkpoint" in lines[0], err[-2000:]
    # Only our line and the progress lines: no tracebacks from orbax's writer threads.
    assert "Traceback" not in err and "Event loop is closed" not in err, err[-2000:]
    assert str(out / "checkpoints") in lines[0] and "is the last complete one" in lines[0]
    assert not (out / "summary.json").exists()  # no complete-looking result
    last = int(lines[0].split("checkpoint ")[2].split(" is")[0])
    ckpt = Checkpointer(out / "checkpoints")
    assert ckpt.damage(last) is None  # the last complete checkpoint is intact
    ckpt.close()
