"""Sound comparisons of sweeps: summary.json's intervals and ranking, `purejaxppo compare`, and
random search. Folders are written by the driver's own write_results from made-up histories, so
every figure is known; one integration test trains a real random search through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from purejaxppo import compare, stats
from purejaxppo.cli import main
from purejaxppo.driver import interval_lines, write_results
from purejaxppo.files import write_atomic
from purejaxppo.ppo import Config, HParams
from purejaxppo.record import Options, Sweep
from purejaxppo.sweep import Draw, Grid, make_grid, random_search


def cli(argv: list[str]) -> int:
    """main's exit code, argparse's own refusals (SystemExit 2) included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def fake_run(
    out: Path,
    returns: np.ndarray,
    env: str = "CartPole-v1",
    grid: Grid | None = None,
    diverged: dict[int, int] | None = None,
    num_steps: int = 8,
) -> dict:
    """A finished run folder whose [setting, seed, update] episode returns are `returns`, one
    episode ending per update."""
    grid = grid or make_grid({})
    h, s, u = returns.shape
    config = Config(env=env, num_envs=2, num_steps=num_steps, total_timesteps=u * 2 * num_steps)
    flat = returns.reshape(h * s, u)
    history = {
        "episode_return": flat.astype(np.float32),
        "episodes": np.isfinite(flat).astype(np.float32),
        "finite": np.ones((h * s, u), bool),
    }
    sweep = Sweep(config, HParams(), grid, s)
    out.mkdir(parents=True)
    write_atomic(out / "config.json", json.dumps(sweep.record(1, Options())).encode())
    timing = {"compile": 1.0, "run": 1.0, "steps": 64}
    return write_results(out, sweep, history, diverged or {}, timing)


def flat_returns(finals: list[list[float]], updates: int = 20) -> np.ndarray:
    """[H, S, U] returns rising linearly to each run's final value (NaN in update 0)."""
    finals = np.asarray(finals, np.float64)
    ramp = np.linspace(0.0, 1.0, updates)
    out = finals[..., None] * ramp
    out[..., 0] = np.nan
    return out


def test_summary_has_intervals_ranking_and_console_lines(tmp_path):
    grid = make_grid({"learning_rate": [1e-3, 3e-3]})
    finals = [[10.0, 20, 30, 40, 50, 60, 70, 80], [100.0, 100, 90, 95, 300, 1, 98, 97]]
    summary = fake_run(tmp_path / "r", flat_returns(finals), grid=grid, diverged={15: 3})
    lo, hi = summary["per_setting"]
    assert lo["runs"] == 8 and hi["runs"] == 7 and hi["diverged_excluded"] == 1
    assert lo["final_return_iqm"] == 45.0  # the mean of 30..60
    expect = stats.interval_estimates(np.array(finals[0]), seed=0)
    assert lo["final_return_iqm_ci"] == [round(expect["iqm"].low, 3), round(expect["iqm"].high, 3)]
    assert lo["final_return_median"] == 45.0 and lo["final_return_mean"] == 45.0
    # The run that diverged (setting 1, seed 7: 97) is left out of every statistic.
    kept = np.array(finals[1][:7])
    assert hi["final_return_mean"] == pytest.approx(kept.mean(), abs=1e-3)
    assert hi["final_return_iqm"] == pytest.approx(stats.iqm(kept), abs=1e-3)
    for s in (lo, hi):
        for name in stats.AGGREGATES:
            low, high = s[f"final_return_{name}_ci"]
            assert low <= s[f"final_return_{name}"] <= high
    assert summary["ranking"] == [1, 0]
    assert summary["intervals"]["confidence"] == 0.95
    on_disk = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert on_disk["per_setting"] == summary["per_setting"]
    lines = interval_lines(summary)
    assert lines[0].startswith(f"final return IQM {hi['final_return_iqm']:g} [")
    assert "over 7 runs (1 diverged, left out): learning_rate=0.003" in lines[0]
    assert lines[1].endswith("over 8 runs: learning_rate=0.001")
    assert len(interval_lines(summary, most=1)) == 2  # and a line saying how many more


def test_compare_one_environment(tmp_path, capsys):
    fake_run(tmp_path / "a", flat_returns([[400.0, 450, 500, 480, 470, 490]]))
    fake_run(tmp_path / "b", flat_returns([[100.0, 150, 120, 130, 480, 90, 110, 105]]))
    assert main(["compare", str(tmp_path / "a"), f"base={tmp_path / 'b'}",
                 "--out", str(tmp_path / "cmp")]) == 0  # fmt: skip
    table = capsys.readouterr().out
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert (tmp_path / "cmp" / "compare.md").read_text() == table
    for name in ("compare_profile.png", "compare_curves.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 10_000
    a, b = result["entries"]
    assert a["label"] == "a" and b["label"] == "base" and b["runs"] == [8]
    assert a["iqm"][0] == pytest.approx(stats.iqm(np.array([400.0, 450, 500, 480, 470, 490])))
    assert a["iqm"][1] <= a["iqm"][0] <= a["iqm"][2]
    matrix = result["probability_of_improvement"]["matrix"]
    # a's runs beat all of b's but the 480 (one win of 500, one tie at 480 ... by hand):
    wins = sum((x > y) + 0.5 * (x == y) for x in [400, 450, 500, 480, 470, 490]
               for y in [100, 150, 120, 130, 480, 90, 110, 105])  # fmt: skip
    assert matrix[0][1][0] == pytest.approx(wins / 48, abs=1e-4)
    assert matrix[1][0][0] == pytest.approx(1 - wins / 48, abs=1e-4)
    assert matrix[0][0] is None
    assert "| a | " in table and "| base | " in table and "P(row > column)" in table
    # The learning curve ends at the IQM of the last update's returns.
    curve = result["curves"]["iqm"][0][0]
    assert curve[-1] == pytest.approx(a["iqm"][0], abs=1e-3)
    # auc: the mean over updates 1..19 of a linear ramp to each final.
    auc = json.loads(json.dumps(compare.compare(compare.gather_entries([str(tmp_path / "b")]),
                                                "auc")))  # fmt: skip
    ramp = np.linspace(0, 1, 20)[1:].mean()
    finals_b = np.array([100.0, 150, 120, 130, 480, 90, 110, 105])
    assert auc["entries"][0]["mean"][0] == pytest.approx(finals_b.mean() * ramp, rel=1e-4)


def test_compare_several_environments_needs_normalization(tmp_path, capsys):
    for label, env, finals in [
        ("ppo", "CartPole-v1", [500.0, 480, 490, 470]),
        ("ppo", "Acrobot-v1", [-80.0, -90, -85, -100]),
        ("a2c", "CartPole-v1", [200.0, 300, 250, 100]),
        ("a2c", "Acrobot-v1", [-200.0, -150, -300, -120]),
    ]:
        fake_run(tmp_path / f"{label}-{env}", flat_returns([finals]), env=env)
    args = [f"{label}={tmp_path / f'{label}-{env}'}" for label in ("ppo", "a2c")
            for env in ("CartPole-v1", "Acrobot-v1")]  # fmt: skip
    assert main(["compare", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--normalize ENV=LOW:HIGH for CartPole-v1, Acrobot-v1" in err
    norm = ["--normalize", "CartPole-v1=0:500", "Acrobot-v1=-500:0"]
    assert main(["compare", *args, *norm, "--out", str(tmp_path / "cmp")]) == 0
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    ppo, a2c = result["entries"]
    assert ppo["runs"] == [4, 4] and result["envs"] == ["CartPole-v1", "Acrobot-v1"]
    cart = np.array([500.0, 480, 490, 470]) / 500
    acro = (np.array([-80.0, -90, -85, -100]) + 500) / 500
    assert ppo["mean"][0] == pytest.approx((cart.mean() + acro.mean()) / 2, abs=1e-4)
    assert ppo["iqm"][0] == pytest.approx(stats.iqm([cart, acro]), abs=1e-4)
    assert result["probability_of_improvement"]["matrix"][0][1][0] == 1.0


def test_compare_refuses_what_cannot_be_compared(tmp_path, capsys):
    fake_run(tmp_path / "a", flat_returns([[1.0, 2.0]]))
    fake_run(tmp_path / "long", flat_returns([[1.0, 2.0]], updates=30))
    fake_run(tmp_path / "acro", flat_returns([[1.0, 2.0]]), env="Acrobot-v1")
    fake_run(tmp_path / "dead", flat_returns([[1.0]]), diverged={0: 2})
    stopped = tmp_path / "stopped"
    fake_run(stopped, flat_returns([[1.0, 2.0]]))
    summary = json.loads((stopped / "summary.json").read_text())
    (stopped / "summary.json").write_text(json.dumps({**summary, "interrupted_at_update": 7}))
    (tmp_path / "empty").mkdir()
    a = str(tmp_path / "a")
    cases = [
        ([a, str(tmp_path / "long")], "runs of different lengths"),
        ([a, str(tmp_path / "acro")], "'acro' covers Acrobot-v1 but 'a' covers CartPole-v1"),
        ([a, str(tmp_path / "nowhere")], "no such folder"),
        ([a, str(tmp_path / "empty")], "no config.json there"),
        ([a, str(stopped)], "training stopped at update 7; finish it first"),
        ([a, str(tmp_path / "dead")], "no finite runs on CartPole-v1 (1 diverged)"),
        ([f"x={a}", f"x={a}"], "names two runs on CartPole-v1"),
        (
            [
                f"x={a}",
                f"x={tmp_path / 'acro'}",
                f"y={a}",
                "--normalize",
                "CartPole-v1=0:1",
                "Acrobot-v1=-1:0",
            ],
            "every label must cover the same environments",
        ),  # fmt: skip
        ([a, "--normalize", "CartPole-v1=1:1"], "LOW and HIGH must differ"),
        ([a, "--normalize", "CartPole-v1"], "--normalize expects ENV=LOW:HIGH"),
        ([a, "--metric", "best"], "invalid choice: 'best'"),
        ([a, "--reps", "0"], "--reps must be in 1..100000"),
    ]
    for argv, message in cases:
        assert cli(["compare", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)


def test_random_search_draws_are_deterministic_and_in_range():
    space = {"learning_rate": Draw("loguniform", 1e-4, 1e-2),
             "ent_coef": Draw("uniform", 0.0, 0.02), "gamma": [0.99, 0.999]}  # fmt: skip
    grid = random_search(space, 2000, seed=3)
    assert grid.fields == ("learning_rate", "ent_coef", "gamma") and grid.size == 2000
    assert grid == random_search(space, 2000, seed=3)
    assert grid != random_search(space, 2000, seed=4)
    lr = np.array([s["learning_rate"] for s in grid.settings])
    ent = np.array([s["ent_coef"] for s in grid.settings])
    gamma = np.array([s["gamma"] for s in grid.settings])
    assert lr.min() >= 1e-4 and lr.max() <= 1e-2 and ent.min() >= 0 and ent.max() <= 0.02
    # Log-uniform: each decade holds half of the draws (binomial sd 0.011 at 2000).
    assert abs((lr < 1e-3).mean() - 0.5) < 0.04 and abs((ent < 0.01).mean() - 0.5) < 0.04
    assert set(gamma) == {0.99, 0.999} and abs((gamma == 0.99).mean() - 0.5) < 0.04
    with pytest.raises(ValueError, match="traced fields only"):
        random_search({"num_envs": Draw("uniform", 1, 8)}, 4, 0)


@pytest.mark.integration
def test_random_search_trains_as_one_program_and_ranks(tmp_path, capsys):
    out = tmp_path / "rs"
    argv = ["train", "--env", "CartPole-v1", "--num-seeds", "3", "--total-timesteps", "2048",
            "--out", str(out), "--samples", "5", "--seed", "7",
            "--sweep", "learning_rate=loguniform:1e-4:1e-1", "ent_coef=uniform:0:0.02",
            "--set", "num_envs=4", "num_steps=32"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    record = json.loads((out / "config.json").read_text())
    expect = random_search(
        {"learning_rate": Draw("loguniform", 1e-4, 1e-1), "ent_coef": Draw("uniform", 0, 0.02)},
        5,
        7,
    )
    assert [dict(s) for s in record["grid"]["settings"]] == list(expect.settings)
    assert np.array(summary["final_return"]).shape == (5, 3)
    iqms = [summary["per_setting"][h]["final_return_iqm"] for h in summary["ranking"]]
    assert iqms == sorted(iqms, reverse=True) and sorted(summary["ranking"]) == list(range(5))
    lines = [line for line in err.splitlines() if line.startswith("final return IQM")]
    best = summary["per_setting"][summary["ranking"][0]]
    # Runs with no episode ended in the last updates have no final return and are not counted.
    assert 1 <= best["runs"] <= 3
    assert len(lines) == 5 and f"over {best['runs']} runs: learning_rate=" in lines[0]
    assert lines[0].startswith(f"final return IQM {best['final_return_iqm']:g} [")
    # The folder compares like any other: five entries, P(best > each) printed.
    assert main(["compare", str(out)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert sum(row.startswith("| rs learning_rate=") for row in rows) == 5 + 5  # two tables
    # --resume keeps the drawn settings; --samples with --resume is refused.
    assert main(["train", "--resume", str(out), "--samples", "5"]) == 2
    assert "drop --samples" in capsys.readouterr().err


def test_many_entries_compare_against_the_best_and_plot_the_best_eight(tmp_path, capsys):
    grid = make_grid({"learning_rate": [1e-4 * (h + 1) for h in range(10)]})
    finals = [[10.0 * h + s for s in range(3)] for h in range(10)]  # setting 9 best
    fake_run(tmp_path / "rs", flat_returns(finals), grid=grid)
    assert main(["compare", str(tmp_path / "rs"), "--out", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    matrix = result["probability_of_improvement"]["matrix"]
    assert [row is not None for row in matrix[9]] == [True] * 9 + [False]
    assert all(p is None for row in matrix[:9] for p in row)
    assert all(p[0] == 1.0 for p in matrix[9][:9])
    assert result["plotted"] == [f"rs learning_rate={1e-4 * (h + 1):g}" for h in range(2, 10)]
    assert len(result["curves"]["iqm"]) == len(result["profile"]["fraction_above"]) == 8
    assert "| Entry | P(rs learning_rate=0.001 > entry) |" in table


def test_ties_at_the_top_rank_by_mean_then_interval(tmp_path):
    grid = make_grid({"learning_rate": [1e-3, 2e-3, 3e-3]})
    finals = [[500.0, 500, 500, 500, 100], [500.0, 500, 500, 500, 500], [400.0] * 5]
    summary = fake_run(tmp_path / "r", flat_returns(finals), grid=grid)
    assert [summary["per_setting"][h]["final_return_iqm"] for h in range(3)] == [500, 500, 400]
    assert summary["ranking"] == [1, 0, 2]
    result = compare.compare(compare.gather_entries([str(tmp_path / "r")]))
    table = compare.table_markdown(result).splitlines()
    rows = [line for line in table if line.startswith("| r learning_rate=")]
    assert [r.split(" |")[0] for r in rows[:3]] == [
        "| r learning_rate=0.002",
        "| r learning_rate=0.001",
        "| r learning_rate=0.003",
    ]
