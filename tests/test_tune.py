"""benchmarks/tune.py: its scores by hand, its seeds, its folders, and the whole pipeline tiny."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def load_tune():
    sys.path.insert(0, str(REPO))
    spec = importlib.util.spec_from_file_location("tune_benchmark", REPO / "benchmarks" / "tune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tune = load_tune()


def fake_result(static, task, names, finals, folder=Path("/nowhere")):
    """A finished folder's Result without training: one grid setting per name."""
    from purejaxppo.sweep import Grid

    grid = Grid(
        ("learning_rate",), tuple({"learning_rate": 1e-3 * (i + 1)} for i in range(len(names)))
    )
    job = tune.Job(
        folder / static / task,
        "coarse",
        task,
        static,
        tuple(names),
        (),
        (None, None, grid),
        2,
        100,
        1000,
        grid.settings,
    )
    finals = np.asarray(finals, np.float64)
    return tune.Result(job, finals, 1, np.arange(1), np.zeros((*finals.shape, 1)), finals)


def test_normalized_score_is_zero_at_random_and_one_at_the_reference():
    # random 0.5, reference 10.5: (x - 0.5) / 10.
    got = tune.normalize([0.5, 5.5, 10.5, 20.5, -9.5], 0.5, 10.5)
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 2.0, -1.0])
    with pytest.raises(tune.TuneError, match="not above the random-policy score"):
        tune.normalize([1.0], 3.0, 3.0)


def test_final_window_widens_until_every_run_has_an_episode():
    # 2 settings x 2 seeds x 20 updates; 5% of 20 = 1 update. Run (1, 1) ends episodes only at
    # update 9 (0-based), so the window must widen to the last 11 updates for every run.
    returns = np.full((2, 2, 20), np.nan)
    counts = np.zeros((2, 2, 20))
    returns[:, :, :] = np.arange(20.0)  # return u at update u
    counts[:, :, :] = 1
    counts[1, 1, :] = 0
    counts[1, 1, 9] = 2
    returns[1, 1, :] = np.nan
    returns[1, 1, 9] = 7.0
    finals, window = tune.run_finals({"episode_return": returns, "episodes": counts})
    assert window == 11
    # Updates 9..19 each with one episode of return u: mean (9 + ... + 19) / 11 = 14.
    np.testing.assert_allclose(finals, [[14.0, 14.0], [14.0, 7.0]])
    # Every run with an episode in the last update: the plain 5% window of 1 update.
    counts[1, 1, 19] = 1
    returns[1, 1, 19] = 3.0
    finals, window = tune.run_finals({"episode_return": returns, "episodes": counts})
    assert window == 1
    np.testing.assert_allclose(finals, [[19.0, 19.0], [19.0, 3.0]])


def test_ranking_is_by_iqm_then_mean_and_unscored_rows_last():
    rows = [
        {"name": "a", "normalized": {"iqm": [0.5, 0.4, 0.6], "mean": [0.5, 0.4, 0.6]}},
        {"name": "b"},  # not finished on every task
        {"name": "c", "normalized": {"iqm": [0.9, 0.1, 1.0], "mean": [0.4, 0.3, 0.5]}},
        {"name": "d", "normalized": {"iqm": [0.9, 0.2, 1.0], "mean": [0.7, 0.6, 0.8]}},
    ]
    assert [rows[i]["name"] for i in tune.rank(rows)] == ["d", "c", "a", "b"]


def test_stage_seeds_never_overlap():
    keys = {
        stage: {tuple(k) for k in tune.stage_keys(stage, n)}
        for stage, n in tune.STAGE_NUM_SEEDS.items()
    }
    assert len(set(tune.STAGE_SEEDS.values())) == len(tune.STAGE_SEEDS)
    stages = list(keys)
    for i, a in enumerate(stages):
        assert len(keys[a]) == tune.STAGE_NUM_SEEDS[a]
        for b in stages[i + 1 :]:
            assert not keys[a] & keys[b], (a, b)
    # The confirmation's 8 seeds are fresh against larger draws of every earlier stage too.
    earlier = set()
    for stage in ("coarse", "finalists", "random"):
        earlier |= {tuple(k) for k in tune.stage_keys(stage, 64)}
    assert not keys["confirm"] & earlier


def test_minatar_coarse_jobs_run_the_cheapest_program_first(tmp_path):
    jobs = tune.coarse_jobs(tune.MINATAR, tmp_path, 1.0)
    assert [(j.static, j.folder.relative_to(tmp_path).as_posix()) for j in jobs[:3]] == [
        ("mlp", "minatar/coarse/mlp/Breakout"),
        ("mlp", "minatar/coarse/mlp/SpaceInvaders"),
        ("mlp", "minatar/coarse/mlp/Asterix"),
    ]
    argv = " ".join(jobs[0].argv)
    assert "--num-seeds 2 --total-timesteps 1000000 --seed 100" in argv
    assert (
        "--samples 192 --sweep learning_rate=loguniform:0.0015:0.015 clip_coef=uniform:0.1:0.3 "
        "ent_coef=loguniform:0.003:0.03 gae_lambda=uniform:0.8:0.97 vf_coef=uniform:0.25:1.0 "
        "gamma=0.99,0.995 max_grad_norm=0.5,1.0" in argv
    )
    assert [j.static for j in jobs[3::3]] == ["mlp256", "cnn"]
    assert len(jobs) == 9 and len(jobs[0].names) == 192
    assert len(tune.coarse_jobs(tune.MINATAR, tmp_path, 0.5)[0].names) == 96


def test_records_match_across_a_last_bit_difference_only():
    a = {"grid": {"settings": [{"learning_rate": 0.0015593492945269337}]}, "seed": 100}
    b = {"grid": {"settings": [{"learning_rate": 0.001559349294526934}]}, "seed": 100}
    assert tune.same_record(a, b)
    b["grid"]["settings"][0]["learning_rate"] = 0.00156
    assert not tune.same_record(a, b)
    assert not tune.same_record({"seed": 100}, {"seed": 101})


def test_a_run_recorded_before_a_field_existed_is_the_same_run(tmp_path):
    # A search outlives a version: a folder written before Config.seq_len existed ran with its
    # default, so it is the job's run (resumed, not refused); another value is refused.
    job = tune.random_job(tune.CLASSIC, "CartPole-v1", tmp_path)
    record = tune.expected_record(job)
    del record["config"]["seq_len"]
    job.folder.mkdir(parents=True)
    (job.folder / "config.json").write_text(json.dumps({**record, "devices": 2}))
    assert tune.job_state(job) == "stopped"
    record["config"]["num_envs"] += 1
    (job.folder / "config.json").write_text(json.dumps(record))
    with pytest.raises(tune.TuneError, match="it differs in config"):
        tune.job_state(job)


def test_incomplete_static_is_reported_apart_and_references_are_fixed_once(tmp_path):
    family = tune.Family(
        name="fam",
        tasks=("A", "B"),
        coarse_tasks=("A", "B"),
        steps=1000,
        base=(),
        statics={"full": (), "half": ()},
        space=("learning_rate=loguniform:1e-4:1e-2",),
        draws=2,
        anchors={},
        random={"A": 0.0, "B": 10.0},
        random_source="",
        reference={"B": 20.0},
        reference_source="",
        peers={},
    )
    results = [
        fake_result("full", "A", ["full-0", "full-1"], [[1.0, 3.0], [4.0, 4.0]]),
        fake_result("full", "B", ["full-0", "full-1"], [[20.0, 20.0], [10.0, 12.0]]),
        fake_result("half", "A", ["half-0", "half-1"], [[8.0, 8.0], [0.0, 0.0]]),
    ]
    refs = tune.references(family, tmp_path, {"coarse": results})
    # A: the best setting's mean final in the coarse stage (half-0: 8); B: the stated 20.
    assert refs["A"][0] == 8.0 and "half-0" in refs["A"][1]
    assert refs["B"] == (20.0, "")
    # Fixed once: a later, better result does not move it.
    better = [fake_result("full", "A", ["full-0"], [[80.0, 80.0]])]
    assert tune.references(family, tmp_path, {"coarse": better})["A"][0] == 8.0

    scale = tune.Scale({t: (v, "") for t, v in family.random.items()}, refs)
    ranking = tune.coarse_ranking(family, [], results, scale)
    assert ranking["statics"]["half"]["complete"] is False
    assert ranking["statics"]["half"]["tasks_missing"] == ["B"]
    # Only the complete program is ranked: full-0 has A (1, 3)/8, B 1, 1; full-1 A 0.5, B 0, 0.2.
    assert ranking["ranking"] == ["full-0", "full-1"]
    row = ranking["rows"]["full-0"]
    # IQM of 4 runs cuts 1 from each end: (0.375 + 1) / 2 of [0.125, 0.375, 1, 1].
    assert row["normalized"]["iqm"][0] == pytest.approx(0.6875)
    # The half program is still scored on what it has (task A alone).
    half = ranking["statics"]["half"]["settings"]
    assert [r["name"] for r in half] == ["half-0", "half-1"]
    assert ranking["static_comparison"]["A"]["programs"]["half"]["best_setting_mean"] == 8.0


def test_a_finalist_keeps_every_traced_field_its_program_shares(tmp_path):
    # Two finalists with the same gamma: the program's grid varies only what differs, but each
    # finalist's setting (what a winner is taken from) keeps gamma.
    space = dict(
        learning_rate=1e-3,
        clip_coef=0.2,
        ent_coef=0.01,
        gae_lambda=0.9,
        vf_coef=0.5,
        gamma=0.995,
        max_grad_norm=1.0,
    )
    finalists = [
        {"name": "e4-1", "static": "e4", "setting": space},
        {"name": "e4-2", "static": "e4", "setting": {**space, "learning_rate": 2e-3}},
    ]
    jobs = tune.finalist_jobs(tune.CLASSIC, finalists, tmp_path)
    assert len(jobs) == 3 and {j.static for j in jobs} == {"e4"}
    config, hparams, grid = jobs[0].sweep
    assert grid.fields == ("learning_rate",) and float(hparams.gamma) == 0.995
    assert tune.candidate_settings(jobs[0]) == [f["setting"] for f in finalists]


def test_brax_family_has_table_1_tasks_on_the_objectives_backends():
    from benchmarks.objectives import PROTOCOLS

    # Every Table-1 task of the objectives protocol on its backend, but swimmer (brax's fails
    # at the first step on jax 0.10, see tune.BRAX_TASKS; the objectives' stand-in is MJX's).
    full = {t: b.backend for t, b in PROTOCOLS["full"].items()}
    assert full.pop("swimmer") == "mjx" and full == tune.BRAX_TASKS
    assert set(tune.BRAX.coarse_tasks) <= set(tune.BRAX.tasks)


@pytest.mark.integration
def test_brax_family_resolves_every_static_and_anchor(tmp_path):
    # The plumbing, without training: each coarse program and confirmation candidate resolves
    # to a Config the command line accepts, grouped into programs per task.
    for job in tune.coarse_jobs(tune.BRAX, tmp_path, 1 / 64):
        config, _, grid = tune.resolve_argv(job.argv)
        assert config.total_timesteps == 1_000_000 and grid.size == 1
    winner = {"static": "e16", "setting": {"learning_rate": 1e-3}}
    cands = tune.confirm_candidates(tune.BRAX, winner, list(tune.BRAX.anchors))
    jobs = tune.confirm_jobs(tune.BRAX, cands, tmp_path, tune.BRAX.steps)
    # The winner shares the e16 program with today's default; ppo-mujoco is its own program.
    assert {j.static for j in jobs} == {"winner+previous", "ppo-mujoco"}
    assert len(jobs) == 2 * len(tune.BRAX.tasks)


TINY = dict(
    name="tiny",
    tasks=("CartPole-v1",),
    coarse_tasks=("CartPole-v1",),
    steps=2048,
    base=("num_steps=16", "update_epochs=1", "num_minibatches=2", "hidden_sizes=8"),
    statics={"e4": ("num_envs=4",)},
    space=("learning_rate=loguniform:1e-4:1e-2", "clip_coef=uniform:0.1:0.3"),
    draws=4,
    # An anchor of the winner's shape: it trains in the winner's program (one compile).
    anchors={
        "anchor": (
            "--set",
            "num_steps=16",
            "update_epochs=1",
            "num_minibatches=2",
            "hidden_sizes=8",
            "learning_rate=0.001",
        )
    },
    random={},
    random_source="measured",
    reference={"CartPole-v1": 500.0},
    reference_source="the maximum",
    peers={},
)


@pytest.mark.integration
def test_the_whole_pipeline_then_a_second_run_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(tune, "RANDOM_STEPS", 1024)
    family = tune.Family(**TINY)
    opts = tune.Options(
        ("coarse", "finalists", "confirm"), tmp_path / "runs", tmp_path / "out", finalists=2
    )
    log: list[str] = []
    record = tune.tune_family(family, opts, log.append)

    saved = json.loads((tmp_path / "out" / "tune_tiny.json").read_text())
    assert saved["winner"] == record["winner"]
    assert (tmp_path / "out" / "tune_tiny.md").read_text().startswith("## Tuning the tiny")
    assert (tmp_path / "out" / "tune_tiny.png").is_file()
    # The curves' link is the file's own path (OUT outside the repository: absolute).
    assert saved["curves"] == str((tmp_path / "out" / "tune_tiny.png").resolve())
    assert f"]({saved['curves']})" in (tmp_path / "out" / "tune_tiny.md").read_text()
    assert record["budget"] == {
        "steps_per_run": 2048,
        "budget_scale": 1.0,
        "draws_per_static": 4,
        "finalists": 2,
    }
    assert record["seeds"]["confirm"] == {"prng_seed": 300, "seeds": 8}
    assert record["search_space"] == list(TINY["space"])
    random = record["random"]["CartPole-v1"]
    assert 8 < random["value"] < 60 and "measured" in random["source"]
    coarse = record["coarse"]["statics"]["e4"]
    assert coarse["complete"] and len(coarse["settings"]) == 4
    assert len(record["coarse"]["ranking"]) == 4
    chosen = [f["name"] for f in record["finalists"]["chosen"]]
    assert chosen == record["coarse"]["ranking"][:2]
    assert [r["name"] for r in record["finalists"]["rows"]][0] == record["winner"]["draw"]
    assert record["winner"]["set"].startswith("num_envs=4 num_steps=16")
    confirm = record["confirm"]
    assert confirm["tasks"] == ["CartPole-v1"] and confirm["tasks_missing"] == []
    assert set(confirm["candidates"]) == {"winner", "anchor"}
    assert confirm["folders"] == [str(tmp_path / "runs/tiny/confirm/winner+anchor/CartPole-v1")]
    for row in confirm["candidates"].values():
        assert row["per_task"]["CartPole-v1"]["runs"] == 8
        low, point, high = row["normalized"]["iqm"][1], *row["normalized"]["iqm"][::2]
        assert low <= point <= high
    p = confirm["p_winner_over"]["anchor"]
    assert 0 <= p[1] <= p[0] <= p[2] <= 1
    for stage in ("random", "coarse", "finalists", "confirm"):
        assert record["cost"][stage]["folders"] >= 1
        assert sum(record["cost"][stage]["device_seconds"].values()) > 0

    folders = sorted(p.parent for p in (tmp_path / "runs").rglob("metrics.npz"))
    assert len(folders) == 4  # random, coarse, finalists, confirm
    before = {f: (f / "metrics.npz").stat().st_mtime_ns for f in folders}
    log.clear()
    again = tune.tune_family(family, opts, log.append)
    assert {f: (f / "metrics.npz").stat().st_mtime_ns for f in folders} == before
    assert not any("training" in line or "resuming" in line for line in log), log
    assert sum("reused" in line for line in log) == len(folders)
    assert again["confirm"]["candidates"] == record["confirm"]["candidates"]


@pytest.mark.integration
def test_a_confirmation_in_a_fresh_runs_folder_measures_the_random_policy(tmp_path, monkeypatch):
    """The 5x report: only the winner is carried over (choices.json); the confirmation at the
    longer budget measures the random policy it normalizes by, in its own stage folder."""
    monkeypatch.setattr(tune, "RANDOM_STEPS", 1024)
    family = tune.Family(**TINY)
    runs = tmp_path / "runs"
    winner = {
        "name": "winner",
        "from": "finalists",
        "draw": "e4-0",
        "static": "e4",
        "setting": {"learning_rate": 0.003, "clip_coef": 0.2},
    }
    (runs / "tiny").mkdir(parents=True)
    (runs / "tiny" / "choices.json").write_text(json.dumps({"winner": winner}))
    opts = tune.Options(("confirm",), runs, tmp_path / "out", confirm_steps=4096)
    record = tune.tune_family(family, opts, lambda line: None)

    assert "measured" in record["random"]["CartPole-v1"]["source"]
    assert (runs / "tiny" / "random" / "CartPole-v1" / "metrics.npz").is_file()
    confirm = record["confirm"]
    assert confirm["steps_per_run"] == 4096
    assert confirm["folders"] == [str(runs / "tiny/confirm@4096/winner+anchor/CartPole-v1")]
    for row in confirm["candidates"].values():
        assert row["per_task"]["CartPole-v1"]["runs"] == 8
        assert np.isfinite(row["normalized"]["iqm"]).all()


def test_peer_runs_are_scored_by_our_window_and_set_beside_the_winner(tmp_path, monkeypatch):
    """A peer anchor (brax's own PPO for brax) is trained one JSON per seed, resumed by file,
    and scored by the same widened final window as our folders; checked with a fake peer."""
    family = tune.Family(**{**TINY, "trained_peers": ("fake",)})
    calls = []

    def fake(task, seed, steps):
        calls.append(seed)
        k = seed - 300
        returns = [10.0 * u + k for u in range(20)]
        episodes = [2] * 20
        if k == 0:  # seed 300 ends no episode in the last update: the window widens to 2
            returns[-1], episodes[-1] = None, 0
        return {
            "peer": "fake 1.0",
            "settings_from": task,
            "total_timesteps": 20 * 128,
            "env_steps": [128 * (u + 1) for u in range(20)],
            "episodes": episodes,
            "episode_return": returns,
            "eval_return": 1.5,
            "wall_seconds": 2.0,
        }

    monkeypatch.setitem(tune.PEER_RUNNERS, "fake", fake)
    runs = tmp_path / "runs"
    tune.run_peers(family, runs, 2048, lambda line: None)
    assert calls == list(range(300, 308))
    tune.run_peers(family, runs, 2048, lambda line: None)  # every run recorded: nothing trains
    assert calls == list(range(300, 308))

    result, recs = tune.load_peer_result(family, runs, 2048, "fake", "CartPole-v1")
    assert [r["env_steps"][-1] for r in recs] == [2560] * 8
    assert result.window == 2
    # window of 2 updates (18, 19): seed 300 has only update 18 (180); seed k: (180+k+190+k)/2
    expected = [180.0] + [185.0 + k for k in range(1, 8)]
    np.testing.assert_allclose(result.finals[0], expected)

    winner = fake_result("winner", "CartPole-v1", ["winner"], [[400.0 + k for k in range(8)]])
    scale = tune.Scale({"CartPole-v1": (0.0, "r")}, {"CartPole-v1": (500.0, "ref")})
    loaded = {"fake": [(result, recs)]}
    table = tune.peer_table(family, loaded, [winner], scale)["fake"]
    assert table["tasks"] == ["CartPole-v1"]
    assert table["p_winner_over"]["fake"][0] == 1.0
    info = table["runs"]["CartPole-v1"]
    assert info["final_window_updates"] == 2 and info["eval_return_mean"] == 1.5
    assert info["wall_seconds"] == 16.0 and info["training_steps"] == 20


def test_the_peers_stage_trains_the_asked_tasks_in_order(tmp_path, monkeypatch, capsys):
    # --peer-tasks lets a small machine record the cheap tasks' peer runs first.
    family = tune.Family(**{**TINY, "tasks": ("A-MinAtar", "B-MinAtar"), "trained_peers": ("f",)})
    calls = []

    def fake(task, seed, steps):
        calls.append((task, seed))
        return {"env_steps": [steps], "episodes": [1], "episode_return": [1.0]}

    monkeypatch.setitem(tune.PEER_RUNNERS, "f", fake)
    tune.run_peers(family, tmp_path, 2048, lambda line: None, ["B"])
    assert calls == [("B-MinAtar", s) for s in range(300, 308)]
    assert not (tmp_path / "tiny" / "peers" / "f" / "A").exists()
    # An unknown task is refused in one line naming the allowed ones, before anything runs.
    with pytest.raises(SystemExit) as exc:
        tune.main(["--families", "brax", "--stage", "peers", "--peer-tasks", "ant"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--peer-tasks ant" in err and "halfcheetah, hopper" in err
