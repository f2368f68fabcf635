"""Nothing lost, round two: the environment and the multi-process flags are inputs like any flag,
and a resumed run is the same run (its cadence, its results, its record, its leftovers)."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from purejaxppo.runlock import LOCK_NAME

TINY = ["--env", "CartPole-v1", "--num-seeds", "2", "--total-timesteps", str(16 * 10),
        "--checkpoint-every", "2", "--keep", "10", "--chunk", "2", "--set", "num_envs=2",
        "num_steps=8", "update_epochs=1", "num_minibatches=2", "hidden_sizes=8"]  # fmt: skip


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_main(capsys, *argv):
    from purejaxppo.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def steps_in(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run with checkpoints at updates 2, 4, 6, 8 and 10."""
    from purejaxppo.cli import main

    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    assert steps_in(out / "checkpoints") == [2, 4, 6, 8, 10]
    return out


def copy_run(src: Path, dst: Path, keep_upto: int | None = None) -> Path:
    """A copy of a run folder; keep_upto drops later checkpoints and the results (a run killed
    after that checkpoint)."""
    shutil.copytree(src, dst)
    if keep_upto is not None:
        for step in (dst / "checkpoints").iterdir():
            if int(step.name) > keep_upto:
                shutil.rmtree(step)
        for name in ("metrics.npz", "summary.json", "curves.png"):
            (dst / name).unlink()
    (dst / LOCK_NAME).unlink(missing_ok=True)
    return dst


def assert_same_metrics(a_dir: Path, b_dir: Path) -> None:
    a, b = np.load(a_dir / "metrics.npz"), np.load(b_dir / "metrics.npz")
    assert set(a.files) == set(b.files)
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# ------------------------------------------------------------------------------------------
# 1. Environment variables and multi-process flags: checked like any flag, whatever the
#    process count; one line naming the variable or flag, exit 2, nothing written.
# ------------------------------------------------------------------------------------------

# (environment, extra flags, words the one line must hold)
PROCESS_CASES = {
    "id -1 (the issue's example)": ({"PUREJAXPPO_PROCESS_ID": "-1"}, [], "PUREJAXPPO_PROCESS_ID"),
    "id 1 of one process": ({"PUREJAXPPO_PROCESS_ID": "1"}, [], "must be 0 in a job of one"),
    "id empty": ({"PUREJAXPPO_PROCESS_ID": ""}, [], "PUREJAXPPO_PROCESS_ID is empty"),
    "id spaces": ({"PUREJAXPPO_PROCESS_ID": "  "}, [], "PUREJAXPPO_PROCESS_ID is empty"),
    "id text": ({"PUREJAXPPO_PROCESS_ID": "zero"}, [], "'zero'"),
    "id fraction": ({"PUREJAXPPO_PROCESS_ID": "0.0"}, [], "'0.0'"),
    "id huge": ({"PUREJAXPPO_PROCESS_ID": "9" * 30}, [], "PUREJAXPPO_PROCESS_ID must be"),
    "id non-ascii digit": ({"PUREJAXPPO_PROCESS_ID": "\u0660"}, [], "PUREJAXPPO_PROCESS_ID"),
    "count 0": ({"PUREJAXPPO_NUM_PROCESSES": "0"}, [], "PUREJAXPPO_NUM_PROCESSES must be"),
    "count -2": ({"PUREJAXPPO_NUM_PROCESSES": "-2"}, [], "'-2'"),
    "count 1e3": ({"PUREJAXPPO_NUM_PROCESSES": "1e3"}, [], "'1e3'"),
    "count huge": ({"PUREJAXPPO_NUM_PROCESSES": "9" * 30}, [], "1..2147483647"),
    "count empty": ({"PUREJAXPPO_NUM_PROCESSES": ""}, [], "PUREJAXPPO_NUM_PROCESSES is empty"),
    "count 2, no coordinator": (
        {"PUREJAXPPO_NUM_PROCESSES": " 2 "},
        [],
        "PUREJAXPPO_NUM_PROCESSES=2 needs --coordinator",
    ),
    "junk coordinator (the issue's)": ({"PUREJAXPPO_COORDINATOR": "junk"}, [], "HOST:PORT"),
    "empty coordinator": ({"PUREJAXPPO_COORDINATOR": ""}, [], "PUREJAXPPO_COORDINATOR is empty"),
    "coordinator without host": ({"PUREJAXPPO_COORDINATOR": ":1234"}, [], "HOST:PORT"),
    "coordinator port 0": ({"PUREJAXPPO_COORDINATOR": "h:0"}, [], "1..65535"),
    "coordinator port 70000": ({"PUREJAXPPO_COORDINATOR": "h:70000"}, [], "1..65535"),
    "coordinator bare IPv6": ({"PUREJAXPPO_COORDINATOR": "::1:1234"}, [], "in brackets"),
    "coordinator bad IPv6": ({"PUREJAXPPO_COORDINATOR": "[zz]:1234"}, [], "not an IPv6"),
    "coordinator with a space": ({"PUREJAXPPO_COORDINATOR": "a b:1234"}, [], "the host must be"),
    "misspelt variable": ({"PUREJAXPPO_NUMPROCESSES": "2"}, [], "PUREJAXPPO_NUMPROCESSES is set"),
    "junk variable under a flag": (
        {"PUREJAXPPO_PROCESS_ID": "x"},
        ["--process-id", "0"],
        "PUREJAXPPO_PROCESS_ID must be",
    ),
    "flag id -1": ({}, ["--process-id", "-1"], "--process-id must be 0"),
    "flag id past the count": (
        {},
        ["--num-processes", "2", "--process-id", "2", "--coordinator", "127.0.0.1:1"],
        "--process-id must be an integer in 0..1",
    ),
    "flag count 0": ({}, ["--num-processes", "0"], "--num-processes must be"),
    "flag junk coordinator, one process": ({}, ["--coordinator", "junk"], "--coordinator must"),
    "more processes than runs": (
        {},
        ["--num-processes", "3", "--coordinator", "127.0.0.1:1"],
        "--num-processes 3: the 2 runs of this sweep",
    ),
    "a host that does not resolve": (
        {"PUREJAXPPO_NUM_PROCESSES": "2", "PUREJAXPPO_COORDINATOR": "no-such-host.invalid:1234"},
        [],
        "cannot resolve no-such-host.invalid",
    ),
}


@pytest.mark.parametrize("case", sorted(PROCESS_CASES))
def test_a_bad_process_setting_is_one_line_exit_2_and_touches_nothing(
    finished, tmp_path, capsys, monkeypatch, case
):
    env, flags, words = PROCESS_CASES[case]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = snapshot(finished)
    # Into a finished run (the example overwrote its results), into a new folder, and
    # as a resume of the finished run: the same one line each time.
    for argv in ([*TINY, "--out", str(finished)], [*TINY, "--out", str(tmp_path / "new")],
                 ["--resume", str(finished)]):  # fmt: skip
        code, out, err = run_main(capsys, "train", *argv, *flags)
        assert code == 2, (argv, err)
        assert words in one_line(err), err
        assert out == ""
    assert snapshot(finished) == before
    assert not (tmp_path / "new").exists()


def test_process_0_refuses_a_coordinator_port_in_use(tmp_path, capsys, monkeypatch):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("PUREJAXPPO_COORDINATOR", f"127.0.0.1:{port}")
        monkeypatch.setenv("PUREJAXPPO_NUM_PROCESSES", "2")
        code, _, err = run_main(capsys, "train", *TINY, "--out", str(tmp_path / "o"))
    assert code == 2 and f"port {port} is already in use" in one_line(err)
    assert "PUREJAXPPO_COORDINATOR=127.0.0.1" in err
    assert not (tmp_path / "o").exists()


def test_a_process_without_its_coordinator_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    """Process 1 of a job whose process 0 never comes: JAX's client would abort with a C++
    stack trace; we wait, then say what is missing."""
    from purejaxppo import cli

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(cli, "COORDINATOR_WAIT_S", 1.5)
    flags = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1"]
    code, _, err = run_main(capsys, "train", *TINY, *flags, "--out", str(tmp_path / "o"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2, err
    assert lines[0] == f"waiting for process 0 at 127.0.0.1:{port}..."
    assert "nothing answered there for 2 s; start process 0" in lines[1]
    assert not (tmp_path / "o").exists()


def test_every_process_checks_the_folder_before_the_job_starts(finished, capsys):
    """Process 1 used to skip the 'already holds a run' check (only process 0 held the folder),
    so it trained into a finished run while process 0 refused it."""
    before = snapshot(finished)
    flags = ["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "1"]
    code, _, err = run_main(capsys, "train", *TINY, *flags, "--out", str(finished))
    assert code == 2 and "already holds a run" in one_line(err)
    assert snapshot(finished) == before


def test_the_process_variables_still_configure_a_job():
    """The variables are read when no flag is given; a flag overrides its variable."""
    from purejaxppo.cli import build_parser, resolve_process_settings

    args = build_parser().parse_args(["train", "--process-id", "1"])
    env = {"PUREJAXPPO_COORDINATOR": " 10.0.0.1:1234 ", "PUREJAXPPO_NUM_PROCESSES": "4",
           "PUREJAXPPO_PROCESS_ID": "3"}  # fmt: skip
    resolve_process_settings(args, env)
    assert (args.coordinator, args.num_processes, args.process_id) == ("10.0.0.1:1234", 4, 1)
    assert args.process_source["process_id"] == "--process-id 1"
    assert args.process_source["num_processes"] == "PUREJAXPPO_NUM_PROCESSES=4"
    args = build_parser().parse_args(["train"])
    resolve_process_settings(args, {"PUREJAXPPO_COORDINATOR": "[::1]:80"})
    assert (args.coordinator, args.num_processes, args.process_id) == ("[::1]:80", 1, 0)
    args = build_parser().parse_args(["train"])
    resolve_process_settings(args, {})
    assert (args.coordinator, args.num_processes, args.process_id) == (None, 1, 0)


def test_process_shares_match_the_driver_split():
    """The check refuses exactly the counts whose split (sweep.share_of) leaves a process idle."""
    import argparse

    from purejaxppo.cli import UsageError, check_process_shares
    from purejaxppo.sweep import share_of

    for runs in range(1, 30):
        for count in range(2, 35):
            source = {"num_processes": f"--num-processes {count}"}
            args = argparse.Namespace(resume=None, sweep=[], samples=None, num_seeds=runs,
                                      num_processes=count, process_source=source)  # fmt: skip
            shares = [share_of(runs, count, i) for i in range(count)]
            idle = any(lo >= hi for lo, hi, _ in shares)
            try:
                check_process_shares(args)
                refused = False
            except UsageError:
                refused = True
            assert refused == idle, (runs, count)


# ------------------------------------------------------------------------------------------
# 2. A resumed run is the same run.
# ------------------------------------------------------------------------------------------


def test_checkpoints_fall_on_every_multiple_of_the_interval():
    """--checkpoint-every N: the pieces of training end on every multiple of N (a checkpoint
    falls exactly there), whatever the chunk; few distinct lengths (one compile each)."""
    from purejaxppo.driver import default_chunk
    from purejaxppo.sweep import aligned_chunks

    cases = [(1960, 100, 98, 0), (1960, 100, None, 0), (10, 3, 2, 0), (121, 10, 4, 37),
             (50, 7, 10, 0), (9, None, 2, 3)]  # fmt: skip
    for total, every, chunk, start in cases:
        chunk = chunk or default_chunk(total, every)
        pieces = list(aligned_chunks(start, total, chunk, every))
        ends = [first + length for first, length in pieces]
        assert pieces[0][0] == start and ends[-1] == total
        assert [f for f, _ in pieces[1:]] == ends[:-1]  # no gap, no overlap
        assert all(0 < n <= chunk for _, n in pieces)
        if every:
            assert set(range(every * (start // every + 1), total, every)) <= set(ends)
        assert len({n for _, n in pieces[1:]}) <= 3
    # The example: a long run with --checkpoint-every 100 used to save every 196.
    chunk = default_chunk(1960, 100)
    assert 100 % chunk == 0
    assert [f + n for f, n in aligned_chunks(0, 1960, chunk, 100) if (f + n) % 100 == 0] == list(
        range(100, 1901, 100)
    )


@pytest.mark.integration
def test_resume_of_a_finished_run_changes_nothing_and_says_so(finished, tmp_path, capsys):
    """It used to recompile and rewrite summary.json with null timings."""
    run = copy_run(finished, tmp_path / "run")
    before = snapshot(run)
    summary = (run / "summary.json").read_text()
    for flags in ([], ["--checkpoint-every", "1", "--chunk", "1", "--keep", "1"]):
        code, out, err = run_main(capsys, "train", "--resume", str(run), *flags)
        assert code == 0, err
        assert "this run is already complete (10 updates)" in err.splitlines()[0]
        assert json.loads(out)["run_seconds"] == json.loads(summary)["run_seconds"]
        assert snapshot(run) == before  # not even the lock file was touched
    assert (run / "summary.json").read_text() == summary


@pytest.mark.integration
def test_a_resumed_run_keeps_its_recorded_cadence(finished, tmp_path, capsys):
    """The cadence was dropped by a resume: no checkpoint until the end, so a second kill lost
    everything since the first. The record keeps it; a flag given to the resume replaces it."""
    run = copy_run(finished, tmp_path / "run", keep_upto=4)
    assert json.loads((run / "config.json").read_text())["schedule"] == {
        "chunk": 2, "checkpoint_every": 2, "keep": 10,
    }  # fmt: skip
    code, _, err = run_main(capsys, "train", "--resume", str(run))
    assert code == 0, err
    assert "a checkpoint every 2 updates" in err and "the newest 10 kept" in err
    assert steps_in(run / "checkpoints") == [2, 4, 6, 8, 10]
    assert_same_metrics(run, finished)
    # Another cadence asked for at the resume: honoured exactly, and recorded.
    run = copy_run(finished, tmp_path / "other", keep_upto=2)
    code, _, err = run_main(capsys, "train", "--resume", str(run), "--checkpoint-every", "3")
    assert code == 0, err
    assert steps_in(run / "checkpoints") == [2, 3, 6, 9, 10]
    assert json.loads((run / "config.json").read_text())["schedule"]["checkpoint_every"] == 3
    assert_same_metrics(run, finished)


@pytest.mark.integration
def test_checkpoint_every_is_honoured_exactly_and_bit_identical(finished, tmp_path, capsys):
    """--chunk 4 --checkpoint-every 3 used to save at 4 and 8 (after the interval had passed);
    now at 3, 6, 9 and the end, with the same numbers as any other chunking."""
    out = tmp_path / "run"
    argv = [*TINY[: TINY.index("--checkpoint-every")], "--checkpoint-every", "3", "--chunk", "4",
            *TINY[TINY.index("--set"):], "--keep", "10"]  # fmt: skip
    code, _, err = run_main(capsys, "train", *argv, "--out", str(out))
    assert code == 0, err
    assert steps_in(out / "checkpoints") == [3, 6, 9, 10]
    assert_same_metrics(out, finished)


@pytest.mark.integration
def test_a_lost_config_json_is_rebuilt_from_the_checkpoints_own_record(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run", keep_upto=6)
    record = (run / "config.json").read_text()
    (run / "config.json").unlink()
    code, _, err = run_main(capsys, "train", "--resume", str(run))
    assert code == 0, err
    assert "config.json is missing; continuing with checkpoint 6's own record" in err
    assert "resumed from checkpoint at update 6" in err
    assert json.loads((run / "config.json").read_text()) == json.loads(record)
    assert_same_metrics(run, finished)
    # The newest checkpoint damaged as well: the next intact one's record and state are used.
    run = copy_run(finished, tmp_path / "damaged", keep_upto=6)
    (run / "config.json").unlink()
    (run / "checkpoints" / "6" / "purejaxppo.sha256").write_text("0" * 64 + "\n")
    code, _, err = run_main(capsys, "train", "--resume", str(run))
    assert code == 0, err
    assert "checkpoint 4's own record" in err and "resumed from checkpoint at update 4" in err
    assert_same_metrics(run, finished)


LOST = {
    "no config.json, no checkpoints": (
        lambda run: (run / "config.json").unlink() or shutil.rmtree(run / "checkpoints"),
        "no config.json there (not a purejaxppo run folder)",
    ),
    "no config.json, every checkpoint damaged": (
        lambda run: (
            (run / "config.json").unlink()
            or [(s / "purejaxppo.sha256").unlink() for s in (run / "checkpoints").iterdir()]
        ),
        "no intact checkpoint holds its settings",
    ),
    "checkpoints is a file": (
        lambda run: shutil.rmtree(run / "checkpoints") or (run / "checkpoints").write_text("x"),
        "checkpoints is not a folder",
    ),
    "summary.json is a folder": (
        lambda run: (run / "summary.json").mkdir(),
        "summary.json is not a file",
    ),
    "an edited setting (a lock file was written before the refusal)": (
        lambda run: (run / "config.json").write_text(
            (run / "config.json").read_text().replace('"tanh"', '"relu"')
        ),
        "differs from checkpoint 6's own record of its settings (activation)",
    ),
    "an edited schedule": (
        lambda run: (run / "config.json").write_text(
            (run / "config.json").read_text().replace('"keep": 10', '"keep": 0')
        ),
        "schedule.keep must be an integer >= 1, got 0",
    ),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(LOST))
def test_a_record_beyond_repair_is_one_line_exit_2(finished, tmp_path, capsys, case):
    damage, words = LOST[case]
    run = copy_run(finished, tmp_path / "run", keep_upto=6)
    damage(run)
    before = snapshot(run)
    code, out, err = run_main(capsys, "train", "--resume", str(run))
    assert code == 2 and words in one_line(err) and out == ""
    assert snapshot(run) == before


def test_a_new_run_into_a_folder_where_its_files_cannot_land_is_refused(tmp_path, capsys):
    for name, make in (("checkpoints", Path.write_text), ("summary.json", Path.mkdir)):
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        make(out / name, *(["x"] if make is Path.write_text else []))
        before = snapshot(out)
        code, _, err = run_main(capsys, "train", *TINY, "--out", str(out))
        assert code == 2 and f"{out / name} is not a" in one_line(err)
        assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == [name]


@pytest.mark.integration
def test_a_lost_static_sweep_record_says_how_to_recover(tmp_path, capsys):
    out = tmp_path / "sweep"
    for variant in ("num_minibatches=1", "num_minibatches=2"):
        (out / variant).mkdir(parents=True)
        (out / variant / "config.json").write_text("{}")
    code, _, err = run_main(capsys, "train", "--resume", str(out))
    assert code == 2
    assert f"resume each: --resume {out / 'num_minibatches=1'}" in one_line(err)


@pytest.mark.integration
def test_resume_cleans_what_a_kill_during_a_write_left(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run", keep_upto=6)
    unfinished = run / "checkpoints" / "8.orbax-checkpoint-tmp"
    (unfinished / "state").mkdir(parents=True)
    (unfinished / "state" / "half").write_bytes(b"\0" * 100)
    (run / ".summary.json.k3y9x2").write_text('{"env": "Cart')
    (run / ".metrics.npz.a1b2c3").write_bytes(b"PK")
    code, _, err = run_main(capsys, "train", "--resume", str(run))
    assert code == 0, err
    assert "removed 1 unfinished checkpoint write(s) left by a kill" in err
    assert "8.orbax-checkpoint-tmp" in err
    assert "removed 2 unfinished write(s) left by a kill" in err
    assert not unfinished.exists() and not list(run.glob(".summary.json.*"))
    assert not list(run.glob(".metrics.npz.*"))
    assert steps_in(run / "checkpoints") == [2, 4, 6, 8, 10]
    assert_same_metrics(run, finished)


@pytest.mark.integration
def test_a_resumed_run_reports_the_whole_runs_timings(finished, tmp_path, capsys):
    """Timings are summed over sessions from the checkpoint's record: the summary of a resumed
    run counts every env step once, and its speed is not null."""
    run = copy_run(finished, tmp_path / "run", keep_upto=4)
    saved = json.loads((run / "checkpoints" / "4" / "meta" / "metadata").read_text())["timing"]
    assert saved["steps"] == 4 * 16 * 2 and saved["run"] > 0
    code, _, err = run_main(capsys, "train", "--resume", str(run))
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["run_seconds"] >= round(saved["run"], 3) and summary["steps_per_second"]
    # Every update counted once: the speed is the whole run's steps over its summed seconds, up
    # to the rounding of both (seconds to 3 decimals, the speed to 1).
    seconds, speed = summary["run_seconds"], summary["steps_per_second"]
    assert (
        10 * 16 * 2 / (seconds + 5e-4) - 0.05
        <= speed
        <= 10 * 16 * 2 / max(seconds - 5e-4, 1e-9) + 0.05
    )


# ------------------------------------------------------------------------------------------
# Kill, resume, kill again, resume: the same run at the end, checkpoints at the recorded
# cadence after each resume.
# ------------------------------------------------------------------------------------------

LONG = ["--env", "CartPole-v1", "--num-seeds", "2", "--total-timesteps", str(16 * 120),
        "--sweep", "learning_rate=0.001,0.003", "--chunk", "4", "--checkpoint-every", "10",
        "--keep", "100", "--set", "num_envs=2", "num_steps=8", "update_epochs=1",
        "num_minibatches=2", "hidden_sizes=8"]  # fmt: skip


def launch(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as sink:
        return subprocess.Popen([sys.executable, "-m", "purejaxppo.cli", *args],
                                stdout=sink, stderr=sink)  # fmt: skip


def newest(out: Path) -> int:
    folder = out / "checkpoints"
    return max(steps_in(folder), default=-1) if folder.is_dir() else -1


def kill_once_past(proc: subprocess.Popen, out: Path, step: int) -> int:
    """SIGKILL the run once its checkpoint `step` (or a later one) exists; the newest step."""
    deadline = time.time() + 300
    while proc.poll() is None and newest(out) < step and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended (code {proc.returncode}) before checkpoint {step}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return newest(out)


@pytest.mark.integration
def test_kill_resume_kill_again_resume_is_the_same_run(tmp_path):
    from purejaxppo.checkpoint import read_saved_state

    whole = tmp_path / "whole"
    proc = launch(["train", *LONG, "--out", str(whole)], tmp_path / "whole.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "whole.log").read_text()[-3000:]

    out = tmp_path / "killed"
    first = kill_once_past(launch(["train", *LONG, "--out", str(out)], tmp_path / "1.log"), out, 30)
    assert first < 120 and not (out / "summary.json").exists()
    # The resumed run must go on saving every 10 updates: kill it two checkpoints later (before
    # the fix it saved nothing until the end, and this kill never came).
    second = kill_once_past(
        launch(["train", "--resume", str(out)], tmp_path / "2.log"), out, first + 20
    )
    assert "resumed from checkpoint" in (tmp_path / "2.log").read_text()
    assert second < 120, "the resumed run saved no checkpoint until its end"
    proc = launch(["train", "--resume", str(out)], tmp_path / "3.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "3.log").read_text()[-3000:]
    # Every multiple of 10, before and after each resume, and the end; nothing else.
    assert steps_in(out / "checkpoints") == list(range(10, 121, 10))
    assert_same_metrics(out, whole)
    for step in range(10, 121, 10):
        a = read_saved_state(out / "checkpoints", step)
        b = read_saved_state(whole / "checkpoints", step)
        for x, y in zip(jax_leaves(a), jax_leaves(b), strict=True):
            np.testing.assert_array_equal(x, y, err_msg=f"checkpoint {step}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps_per_second"] and summary["run_seconds"] > 0


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PUREJAXPPO_PROCESS_ID": "-1"}, "PUREJAXPPO_PROCESS_ID"),
        ({"PUREJAXPPO_NUM_PROCESSES": "2"}, "runs in one process"),
        ({"PUREJAXPPO_COORDINATOR": "junk"}, "PUREJAXPPO_COORDINATOR"),
        ({"PUREJAXPPO_PROCESSID": "0"}, "PUREJAXPPO_PROCESSID is set"),
    ],
)
@pytest.mark.parametrize("command", ["eval", "compare"])
def test_eval_and_compare_check_the_process_variables(
    tmp_path, monkeypatch, capsys, command, env, expected
):
    # eval and compare run in one process; a junk PUREJAXPPO_* value is refused, not ignored,
    # before any folder is read or written.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "cmp"
    argv = [command, str(tmp_path / "missing")]
    argv += ["--out", str(out)] if command == "compare" else []
    code, out_text, err = run_main(capsys, *argv)
    lines = (out_text + err).strip().splitlines()
    assert code == 2 and len(lines) == 1 and expected in lines[0], err
    assert not out.exists() and sorted(tmp_path.iterdir()) == []
