"""The surrogate-objective benchmark (PPO paper Table 1): its scoring, and the smoke protocol end
to end."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from purejaxppo.ppo import last_episodes_return

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "objectives.py"
# The test trains one task of the smoke protocol (its time is nearly all compiling); the merge
# of two parts is checked with a copy of that task's results under the protocol's other name.
SMOKE_TASKS = ("inverted_pendulum",)
COPIED_TASK = "reacher"
SETTINGS = (
    "none",
    "clip_0.1",
    "clip_0.2",
    "clip_0.3",
    "kl_adaptive_0.003",
    "kl_adaptive_0.01",
    "kl_adaptive_0.03",
    "kl_fixed_0.3",
    "kl_fixed_1",
    "kl_fixed_3",
    "kl_fixed_10",
)


def load_benchmark():
    spec = importlib.util.spec_from_file_location("objectives_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_last_episodes_return_walks_back_weighting_by_count():
    returns = np.array([1.0, np.nan, 2.0, 3.0, 4.0])
    counts = np.array([50, 0, 60, 30, 20])
    # 20 episodes at 4, 30 at 3, then 50 of the 60 at 2: 100 episodes over 3 updates.
    score, episodes, reached = last_episodes_return(returns, counts, n=100)
    assert episodes == 100 and reached == 3
    assert score == pytest.approx((20 * 4 + 30 * 3 + 50 * 2) / 100)
    # Fewer than n episodes in the whole run: all of them, skipping updates without any.
    score, episodes, reached = last_episodes_return(returns, counts, n=1000)
    assert episodes == 160 and reached == 5
    assert score == pytest.approx((50 * 1 + 60 * 2 + 30 * 3 + 20 * 4) / 160)
    assert math.isnan(last_episodes_return(returns[1:2], counts[1:2])[0])


def test_normalize_random_zero_best_one():
    bench = load_benchmark()
    raw = np.array([-50.0, 100.0, 250.0])
    np.testing.assert_allclose(bench.normalize(raw, -50.0, 250.0), [0.0, 0.5, 1.0])
    assert np.isnan(bench.normalize(raw, 1.0, 1.0)).all()


def test_table_intervals_and_probability_of_improvement():
    bench = load_benchmark()
    # Two tasks x 3 seeds; clipping at 0.2 beats "none" on every pair of runs of task a and
    # ties it on task b; one run of "none" diverged (NaN) and is left out.
    scores = {name: [[0.5, 0.6, 0.7], [0.2, 0.2, 0.2]] for name in SETTINGS}
    scores["clip_0.2"] = [[0.9, 1.0, 1.1], [0.2, 0.2, 0.2]]
    scores["none"] = [[0.1, 0.2, float("nan")], [0.2, 0.2, 0.2]]
    tasks = {
        task: {
            "settings": {
                name: {"normalized": scores[name][i], "normalized_mean": 0.0} for name in SETTINGS
            }
        }  # fmt: skip
        for i, task in enumerate(("a", "b"))
    }
    table = {row["setting"]: row for row in bench.final_table(tasks)}
    none, clip = table["none"], table["clip_0.2"]
    assert none["runs"] == 5 and none["score"] == pytest.approx(0.9 / 5)
    assert none["p_reference_better"][0] == pytest.approx((1.0 + 0.5) / 2)
    assert "p_reference_better" not in clip
    assert clip["iqm"][0] == pytest.approx(np.mean([0.2, 0.2, 0.9, 1.0]))  # middle 4 of 6
    assert clip["score_ci"][0] <= clip["score"] <= clip["score_ci"][1]
    assert table["clip_0.1"]["p_reference_better"][0] == pytest.approx((1.0 + 0.5) / 2)


@pytest.mark.integration
def test_objectives_smoke_protocol(tmp_path):
    # Compiling the 8 programs is nearly all of the smoke protocol's time; the subprocess shares
    # the session's persistent XLA cache (conftest.py: keyed by the program, options and
    # versions, so never stale), which makes reruns much faster.
    env = dict(os.environ)
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/objectives.py",
            "--protocol",
            "smoke",
            "--out",
            str(tmp_path),
            "--tasks",
            ",".join(SMOKE_TASKS),
        ],  # fmt: skip
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "objectives.json").read_text())
    assert result["protocol"] == "smoke"
    assert set(result["tasks"]) == set(SMOKE_TASKS)
    for task, t in result["tasks"].items():
        assert set(t["settings"]) == set(SETTINGS), task
        assert math.isfinite(t["random_score"]) and t["random_episodes"] >= 20
        assert set(t["programs"]) == {"none", "clip", "kl_adaptive", "kl_fixed"}
        for name, s in t["settings"].items():
            assert len(s["raw"]) == 3 and all(math.isfinite(x) for x in s["raw"]), (task, name)
            assert len(s["normalized"]) == 3 and all(math.isfinite(x) for x in s["normalized"])
            assert s["budget"] == t["budget"] and s["backend"] == t["backend"]
            assert s["compile_seconds"] > 0 and s["run_seconds"] > 0
        raw_means = {name: s["raw_mean"] for name, s in t["settings"].items()}
        best = t["best_setting"]
        assert raw_means[best] == max(raw_means.values())
        assert t["settings"][best]["normalized_mean"] == 1.0
        assert (tmp_path / f"objectives_{task}.png").stat().st_size > 0
    table = {row["setting"]: row for row in result["table"]}
    assert set(table) == set(SETTINGS)
    assert all(row["runs"] == 3 and math.isfinite(row["score"]) for row in table.values())
    for name, row in table.items():
        low, high = row["score_ci"]
        assert low <= row["score"] <= high and row["iqm"][1] <= row["iqm"][0] <= row["iqm"][2]
        assert ("p_reference_better" in row) == (name != "clip_0.2"), name
    assert table["clip_0.2"]["paper"] == 0.82 and table["none"]["paper"] == -0.39
    md = (tmp_path / "objectives.md").read_text()
    assert "| Setting | Score | Paper (1M steps) | Score 95% CI | IQM [95% CI] |" in md
    assert "| Clipping, eps = 0.2 |" in md and "| 0.82 |" in md
    assert md.strip() in proc.stdout

    # Runs over disjoint task subsets merge into the table of one run over all of them.
    (task,) = SMOKE_TASKS
    parts = {task: result["tasks"][task], COPIED_TASK: result["tasks"][task]}
    for name, t in parts.items():
        part = tmp_path / f"part-{name}"
        part.mkdir()
        (part / "objectives.json").write_text(json.dumps({**result, "tasks": {name: t}}))
    merged_dir = tmp_path / "merged"
    merge = subprocess.run(
        [sys.executable, "benchmarks/objectives.py", "--merge"]
        + [str(tmp_path / f"part-{name}") for name in parts]
        + ["--out", str(merged_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert merge.returncode == 0, merge.stderr[-3000:]
    merged = json.loads((merged_dir / "objectives.json").read_text())
    both = json.loads(json.dumps(parts))
    for t in both.values():
        for st in t["settings"].values():
            st["normalized"] = [float("nan") if x is None else x for x in st["normalized"]]
    expected = load_benchmark().final_table(both)
    assert json.loads(json.dumps(merged["table"])) == json.loads(json.dumps(expected))
    assert all(row["runs"] == 6 for row in merged["table"])
    merged_md = (merged_dir / "objectives.md").read_text()
    assert f"Ran as 2 processes side by side: {task} in" in merged_md
    assert f"| {COPIED_TASK} | " in merged_md and f"| {task} | " in merged_md


def test_full_protocol_swimmer_is_playgrounds_and_skipped_on_a_cpu(tmp_path, capsys):
    bench = load_benchmark()
    budget = bench.PROTOCOLS["full"]["swimmer"]
    assert budget.steps == bench.PAPER_STEPS
    assert bench.task_env_name("swimmer", budget.backend) == "playground:SwimmerSwimmer6"
    assert bench.task_env_name("hopper", "spring") == "brax:hopper@spring"
    if bench.jax.default_backend() != "cpu":
        pytest.skip("the skip applies on a CPU only")
    with pytest.raises(SystemExit, match="no task left"):
        bench.main(["--protocol", "full", "--tasks", "swimmer", "--out", str(tmp_path)])
    assert "[swimmer] skipped: MJX's swimmer runs about 130 env steps/s" in capsys.readouterr().err
    assert not (tmp_path / "objectives.json").exists()


@pytest.mark.integration
def test_swimmer_stand_in_is_a_continuous_swimmer_with_a_1000_step_limit():
    bench = load_benchmark()
    env = bench.task_env("swimmer", bench.SWIMMER_BACKEND)
    assert not env.discrete and env.action_dim == 5  # 6 links, 5 joints
    assert env.max_episode_steps == bench.EPISODE_LENGTH == 1000
