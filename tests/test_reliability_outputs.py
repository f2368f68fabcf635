"""Nothing lost, round two: `compare` and `eval` keep the one-line promise, and paths and sizes
past what the OS or memory allows are refused in one line, before anything is written.

Every refusal here is checked the same way: its exit code, at most two lines of output, the
flag (or file) named, and every folder involved unchanged (snapshot compared)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_compare import fake_run, flat_returns
from test_reliability import TINY, snapshot

from purejaxppo import stats
from purejaxppo.cli import MAX_REPS, MAX_SETTINGS, main, next_step
from purejaxppo.runlock import LOCK_NAME
from purejaxppo.sweep import Draw, Grid, random_search


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """main's exit code (argparse's own refusals included), stdout and stderr."""
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code)
    out, err = capsys.readouterr()
    return code, out, err


def refused(code: int, err: str, *words: str) -> None:
    """A refusal: exit 2, at most two lines, naming each of `words`."""
    assert code == 2, err
    assert len(err.strip().splitlines()) <= 2, err
    assert "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


def unlocked(folder: Path) -> dict:
    """snapshot() without the lock file a command may create and leave (it holds no data)."""
    return {k: v for k, v in snapshot(folder).items() if LOCK_NAME not in k}


# ------------------------------------------------------------------------------------------
# 3. compare and eval: one line, exit 2, for every input they cannot use.
# ------------------------------------------------------------------------------------------

DAMAGED_METRICS = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "zeroed inside the data": lambda p: p.write_bytes(
        p.read_bytes()[:600] + bytes(200) + p.read_bytes()[800:]
    ),
    "text": lambda p: p.write_text("not an archive"),
    "a folder": lambda p: (p.unlink(), p.mkdir()),
    "one-dimensional": lambda p: np.savez(p, episode_return=np.zeros(3), env_steps=np.arange(3)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGED_METRICS))
def test_a_damaged_metrics_npz_is_one_line_exit_2(tmp_path, capsys, damage):
    good, bad = tmp_path / "good", tmp_path / "bad"
    fake_run(good, flat_returns([[1.0, 2.0, 3.0]]))
    fake_run(bad, flat_returns([[4.0, 5.0, 6.0]]))
    DAMAGED_METRICS[damage](bad / "metrics.npz")
    before = snapshot(tmp_path)
    code, out, err = run_main(capsys, "compare", str(good), str(bad), "--out", str(tmp_path / "c"))
    refused(code, err, str(bad), "metrics.npz")
    assert out == "" and snapshot(tmp_path) == before  # no --out folder either
    code, out, _ = run_main(capsys, "compare", str(good))  # the good run is intact
    assert code == 0 and "| good |" in out


def test_setting_labels_are_unique_by_construction():
    # Ordinary values read as before: 6 significant digits.
    assert stats.setting_labels(["learning_rate"], [{"learning_rate": 0.00025}]) == [
        "learning_rate=0.00025"
    ]
    alike = [
        {"lr": 0.0010000003, "g": 0.99},
        {"lr": 0.0010000007, "g": 0.99},
        {"lr": 0.002, "g": 0.99},
    ]
    assert stats.setting_labels(["lr", "g"], alike) == [
        "lr=0.0010000003, g=0.99", "lr=0.0010000007, g=0.99", "lr=0.002, g=0.99",
    ]  # fmt: skip
    # Values apart only in the 17th digit print in full; equal settings get their index.
    close = [{"lr": 0.1 + 0.2}, {"lr": 0.3}, {"lr": 0.5}, {"lr": 0.5}]
    assert stats.setting_labels(["lr"], close, sep=",") == [
        "lr=0.30000000000000004", "lr=0.3", "lr=0.5 #2", "lr=0.5 #3",
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    for _ in range(200):
        draws = [{"lr": x} for x in 1e-3 + rng.uniform(0, 1e-12, 6)] + [{"lr": 1e-3}] * 2
        labels = stats.setting_labels(["lr"], draws)
        assert len(set(labels)) == len(labels)


def test_compare_takes_a_search_whose_draws_print_alike(tmp_path, capsys):
    # Three draws from [0.001, 0.001000001] read "0.001" at 6 digits; compare refused the
    # folder, advising labels (LABEL=DIR) that cannot tell settings of one folder apart.
    grid = random_search({"learning_rate": Draw("uniform", 0.001, 0.001000001)}, 3, seed=0)
    assert len({f"{s['learning_rate']:g}" for s in grid.settings}) == 1
    twice = Grid(("gamma",), ({"gamma": 0.99}, {"gamma": 0.99}, {"gamma": 0.999}))
    for name, g in (("search", grid), ("repeated", twice)):
        fake_run(tmp_path / name, flat_returns([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), grid=g)
        before = snapshot(tmp_path)
        code, out, err = run_main(capsys, "compare", str(tmp_path / name))
        assert code == 0, err
        labels = [r.split(" | ")[0] for r in out.splitlines() if r.startswith(f"| {name} ")]
        assert len(labels) == 3 + 3 and len(set(labels)) == 3  # each setting, by its own name
        assert snapshot(tmp_path) == before
    summary = json.loads((tmp_path / "search" / "summary.json").read_text())
    from purejaxppo.driver import interval_lines

    labels = [line.split(": ", 1)[1] for line in interval_lines(summary)]
    assert len(set(labels)) == 3  # the console names the same settings apart too


NORMALIZE_CASES = {
    "high below low": (["CartPole-v1=500:0"], "LOW must be below HIGH"),
    "equal": (["CartPole-v1=1:1"], "LOW and HIGH must differ"),
    "twice": (["CartPole-v1=0:500", "CartPole-v1=0:400"], "names CartPole-v1 twice"),
    "infinite": (["CartPole-v1=0:inf"], "--normalize expects ENV=LOW:HIGH"),
    "nan": (["CartPole-v1=nan:1"], "--normalize expects ENV=LOW:HIGH"),
    "no env": (["=0:1"], "--normalize expects ENV=LOW:HIGH"),
    "words": (["CartPole-v1=low:high"], "--normalize expects ENV=LOW:HIGH"),
}


@pytest.mark.parametrize("case", sorted(NORMALIZE_CASES))
def test_a_normalization_that_cannot_rank_is_refused(tmp_path, capsys, case):
    fake_run(tmp_path / "a", flat_returns([[1.0, 2.0]]))
    fake_run(tmp_path / "b", flat_returns([[3.0, 4.0]]))
    before = snapshot(tmp_path)
    spans, message = NORMALIZE_CASES[case]
    code, out, err = run_main(capsys, "compare", str(tmp_path / "a"), str(tmp_path / "b"),
                              "--normalize", *spans, "--out", str(tmp_path / "c"))  # fmt: skip
    refused(code, err, message)
    assert out == "" and snapshot(tmp_path) == before
    # The right way round ranks b (higher returns) first.
    code, out, _ = run_main(capsys, "compare", str(tmp_path / "a"), str(tmp_path / "b"),
                            "--normalize", "CartPole-v1=0:500")  # fmt: skip
    rows = [r for r in out.splitlines() if r.startswith("| a |") or r.startswith("| b |")]
    assert code == 0 and rows[0].startswith("| b |")


def fail_on(monkeypatch, path_fragment: str) -> None:
    """Writing a file whose name holds `path_fragment` fails as on a full disk."""
    from purejaxppo import files

    real = files._write_beside

    def write_beside(path: Path, data: bytes) -> Path:
        if path_fragment in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(files, "_write_beside", write_beside)


def test_compare_on_a_full_disk_changes_none_of_its_files(tmp_path, capsys, monkeypatch):
    fake_run(tmp_path / "a", flat_returns([[1.0, 2.0]]))
    fake_run(tmp_path / "b", flat_returns([[3.0, 4.0]]))
    out = tmp_path / "c"
    assert run_main(capsys, "compare", str(tmp_path / "a"), "--out", str(out))[0] == 0
    before = snapshot(out)
    fail_on(monkeypatch, "compare_curves.png")  # the last of the four
    code, table, err = run_main(capsys, "compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                "--out", str(out))  # fmt: skip
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "disk full" in err and "the table is printed above" in err and "--resume" not in err
    assert "| b |" in table  # the results are not lost
    assert snapshot(out) == before  # all four as they were, and no temporary file left


@pytest.mark.parametrize(
    "command, folder, advice",
    [
        ("train", "with config.json", "continue with: purejaxppo train --resume"),
        ("train", "empty", "run the command again"),
        ("eval", "with config.json", "run the command again"),
        ("compare", "with config.json", "run the command again"),
    ],
)
def test_advice_after_a_stop_fits_the_command(tmp_path, command, folder, advice):
    if folder == "with config.json":
        (tmp_path / "config.json").write_text("{}")
    from types import SimpleNamespace

    args = SimpleNamespace(command=command, resume=None, out=str(tmp_path), dir=str(tmp_path))
    assert next_step(args).startswith(advice)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run, checkpoints at updates 2, 4, 6, 8 and 10."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def forbid_evaluation(monkeypatch) -> None:
    import purejaxppo.ppo

    def evaluate(*args, **kwargs):
        raise AssertionError("evaluated before the outputs were checked")

    monkeypatch.setattr(purejaxppo.ppo, "evaluate", evaluate)


@pytest.mark.integration
def test_eval_checks_its_outputs_before_it_runs(finished, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (tmp_path / "afile").write_text("x")
    cases = [
        (["--render", str(tmp_path / "missing" / "x.gif")], "there is no folder"),
        (["--render", str(tmp_path / "afile" / "x.gif")], "there is no folder"),
        (["--render", str(tmp_path)], "ending in .gif"),
        (["--render", ""], "ending in .gif"),
        (["--render-run", "1"], "give --render OUT.gif"),
        (["--render", str(tmp_path / ("x" * 300 + ".gif"))], "path too long"),
    ]
    (tmp_path / "folder.gif").mkdir()
    cases.append((["--render", str(tmp_path / "folder.gif")], "is a folder"))
    forbid_evaluation(monkeypatch)
    before = unlocked(tmp_path)
    for flags, message in cases:
        code, out, err = run_main(capsys, "eval", str(run), "--episodes", "1", *flags)
        refused(code, err, message)
        assert out == "", flags
    assert unlocked(tmp_path) == before
    monkeypatch.undo()
    gif = tmp_path / "episode.gif"
    code, out, err = run_main(capsys, "eval", str(run), "--episodes", "1", "--render", str(gif))
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["render"]["frames"] > 1 and json.loads((run / "eval.json").read_text()) == result
    assert gif.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert not list(tmp_path.glob(".purejaxppo-render-*"))
    assert len(err.strip().splitlines()) == 1, err  # "rendered run 0: ...", no pygame noise


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.integration
def test_eval_on_a_full_disk_prints_its_results_and_gives_no_resume_advice(
    finished, tmp_path, capsys, monkeypatch
):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = unlocked(run)
    fail_on(monkeypatch, "eval.json")
    code, out, err = run_main(capsys, "eval", str(run), "--episodes", "1")
    assert code == 1 and "mean_return" in json.loads(out.strip().splitlines()[-1])
    assert len(err.strip().splitlines()) == 1 and "disk full" in err, err
    assert "the results are printed above" in err and "--resume" not in err
    assert unlocked(run) == before


# ------------------------------------------------------------------------------------------
# 4. Paths and sizes: one line, exit 2, nothing written.
# ------------------------------------------------------------------------------------------


def path_of_length(base: Path, total: int) -> Path:
    """base/ddd.../ddd, names of at most 200 bytes, whose absolute path is `total` bytes."""
    left, names = total - len(os.fsencode(base.absolute())), []
    while left > 201:
        names.append("d" * 100)
        left -= 101
    path = base.absolute().joinpath(*names, "d" * (left - 1))
    assert len(os.fsencode(path)) == total
    return path


def long_paths(tmp_path: Path) -> dict[str, Path]:
    return {
        "a 300-byte name": tmp_path / ("a" * 300),
        "a 5000-byte path": path_of_length(tmp_path, 5000),
    }


@pytest.mark.parametrize("kind", ["a 300-byte name", "a 5000-byte path"])
def test_a_path_over_the_os_limit_is_one_line_exit_2(tmp_path, capsys, kind):
    fake_run(tmp_path / "good", flat_returns([[1.0, 2.0]]))
    before = snapshot(tmp_path)
    long = long_paths(tmp_path)[kind]
    train = ["train", "--env", "CartPole-v1", "--total-timesteps", "64", "--set", "num_envs=2",
             "num_steps=8"]  # fmt: skip
    for argv in (
        [*train, "--out", str(long)],  # the example
        ["train", "--resume", str(long)],
        ["eval", str(long)],
        ["compare", str(long)],
        ["compare", str(tmp_path / "good"), "--out", str(long)],
        [*train, "--config", f"{long}.yaml", "--out", str(tmp_path / "o")],
        ["eval", str(tmp_path / "good"), "--render", f"{long}.gif"],
    ):
        code, out, err = run_main(capsys, *argv)
        refused(code, err, "path too long")
        assert out == ""
    assert snapshot(tmp_path) == before


def test_a_static_sweep_whose_variant_folders_would_pass_the_limit_is_refused(tmp_path, capsys):
    from purejaxppo.cli import RUN_ROOM

    # --out itself fits (with room for a run's files inside it), its variant folders do not.
    out = path_of_length(tmp_path, 4096 - RUN_ROOM - 8)
    argv = ["train", "--env", "CartPole-v1", "--total-timesteps", "64", "--set", "num_envs=2",
            "num_steps=8", "--sweep", "num_minibatches=1,2"]  # fmt: skip
    code, _, err = run_main(capsys, *argv, "--out", str(out))
    refused(code, err, "path too long", "num_minibatches=1")
    assert list(tmp_path.iterdir()) == []


SIZES = {
    "--samples 1e12": (["--samples", "1e12", "--sweep", "learning_rate=uniform:1e-4:1e-3"],
                       f"--samples must be in 1..{MAX_SETTINGS}"),
    "--samples past the bound": (
        ["--samples", str(MAX_SETTINGS + 1), "--sweep", "learning_rate=uniform:1e-4:1e-3"],
        f"--samples must be in 1..{MAX_SETTINGS}",
    ),
    "--samples 0": (["--samples", "0", "--sweep", "learning_rate=uniform:1e-4:1e-3"],
                    f"--samples must be in 1..{MAX_SETTINGS}"),
    "a grid of 300 x 300": (
        ["--sweep", "learning_rate=" + ",".join(f"{1e-4 * (i + 1):g}" for i in range(300)),
         "gamma=" + ",".join(f"{0.9 + 1e-4 * i:.4f}" for i in range(300))],
        f"300 x 300 = 90000 settings; at most {MAX_SETTINGS}",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(SIZES))
def test_a_huge_search_or_grid_is_refused_naming_the_flag(tmp_path, capsys, case):
    flags, message = SIZES[case]
    code, out, err = run_main(capsys, "train", "--env", "CartPole-v1", *flags,
                              "--out", str(tmp_path / "o"))  # fmt: skip
    refused(code, err, message)
    assert out == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("reps", ["1e12", str(MAX_REPS + 1), "0", "-5"])
def test_huge_bootstrap_replicates_are_refused_naming_the_flag(tmp_path, capsys, reps):
    fake_run(tmp_path / "a", flat_returns([[1.0, 2.0]]))
    before = snapshot(tmp_path)
    code, out, err = run_main(capsys, "compare", str(tmp_path / "a"), "--reps", reps,
                              "--out", str(tmp_path / "c"))  # fmt: skip
    refused(code, err, f"--reps must be in 1..{MAX_REPS}")
    assert out == "" and snapshot(tmp_path) == before


def cli(*argv: str, script: str | None = None, timeout: float = 300) -> tuple[int, str]:
    """Run the command line in a subprocess (or `script` with argv); (exit code, stderr)."""
    head = ["-c", script] if script else ["-m", "purejaxppo.cli"]
    proc = subprocess.run([sys.executable, *head, *argv], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    return proc.returncode, proc.stderr


@pytest.mark.integration
@pytest.mark.parametrize("seeds", ["1e18", "1e9"])
def test_a_huge_num_seeds_is_refused_by_the_memory_planner_first(tmp_path, seeds):
    # 1e18 seeds aborted inside XLA (a C++ stack trace) and 1e9 died allocating keys in the
    # run layout, both before the planner could refuse them in one line.
    out = tmp_path / "new" / "run"
    code, err = cli("train", "--env", "CartPole-v1", "--num-seeds", seeds, "--out", str(out))
    refused(code, err, f"{int(float(seeds))} runs do not fit", "--memory-budget-mb")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its parent was left


SIGINT_WHILE_COMPILING = textwrap.dedent(
    """
    import os, signal, sys, threading
    from purejaxppo import sweep
    from purejaxppo.cli import main

    compile_programs = sweep.Runner.compile

    def compile_interrupted(self, n, length):
        # Ctrl-C a moment into the first compilation (tracing and lowering run in Python).
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        sweep.Runner.compile = compile_programs
        return compile_programs(self, n, length)

    sweep.Runner.compile = compile_interrupted
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.integration
def test_ctrl_c_while_compiling_is_one_line_exit_130(finished, tmp_path):
    # A new run (and a static sweep): nothing was written, so the folder is gone.
    for extra, out in (([], tmp_path / "new" / "run"), (["--sweep", "num_minibatches=1,2"],
                                                        tmp_path / "sweep")):  # fmt: skip
        argv = ["train", *TINY, *extra, "--out", str(out)]
        code, err = cli(*argv, script=SIGINT_WHILE_COMPILING)
        assert code == 130 and len(err.strip().splitlines()) <= 2, err
        assert "interrupted; run the command again" in err and "Traceback" not in err
        assert list(tmp_path.iterdir()) == []  # a fresh run finds nothing in its way
    # A resumed run: the folder is as it was, and --resume (as advised) ends it as if it had
    # never stopped.
    stopped = tmp_path / "stopped"
    shutil.copytree(finished, stopped)
    for step in (stopped / "checkpoints").iterdir():
        if int(step.name) > 4:
            shutil.rmtree(step)
    for name in ("metrics.npz", "summary.json", "curves.png"):
        (stopped / name).unlink()
    before = unlocked(stopped)
    code, err = cli("train", "--resume", str(stopped), script=SIGINT_WHILE_COMPILING)
    assert code == 130 and len(err.strip().splitlines()) <= 2, err
    assert f"continue with: purejaxppo train --resume {stopped}" in err
    assert unlocked(stopped) == before
    code, err = cli("train", "--resume", str(stopped))
    assert code == 0, err[-2000:]
    a, b = np.load(finished / "metrics.npz"), np.load(stopped / "metrics.npz")
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
