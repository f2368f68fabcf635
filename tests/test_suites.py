"""Craftax, XLand-MiniGrid and MuJoCo Playground through their adapters (purejaxppo/suites.py),
and the command line over every suite prefix: the install hint without an extra; unknown names;
episode ends (terminations and truncations kept apart, auto-reset with the true final
observation); XLand ruleset benchmarks from a file and a failed download. At the end (slow),
one run per suite through `purejaxppo train` with the suite's preset: it learns, resumes bit
for bit from its checkpoint, and `purejaxppo eval` plays it. Skipped only where an extra is
missing (make test installs them all)."""

from __future__ import annotations

import json
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.cli import main


def cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


@pytest.mark.parametrize(
    "env, module, extra",
    [
        ("craftax:Craftax-Classic-Symbolic-v1", "craftax.craftax_env", "craftax"),
        ("xminigrid:MiniGrid-Empty-8x8", "xminigrid", "xminigrid"),
        ("playground:CartpoleBalance", "mujoco_playground", "playground"),
    ],
)
def test_without_the_extra_the_command_line_says_how_to_install_it(
    env, module, extra, tmp_path, capsys, monkeypatch
):
    from purejaxppo.suites import make_suite_env

    make_suite_env.cache_clear()
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    out = tmp_path / "run"
    assert cli(["train", "--env", env, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pip install 'purejaxppo[{extra}]'" in err, err
    assert not out.exists()


@pytest.mark.integration
@pytest.mark.parametrize(
    "env, says",
    [
        ("craftax:Craftax-Nope-v1", "unknown craftax environment 'Craftax-Nope-v1'"),
        ("xminigrid:MiniGrid-Nope", "unknown xminigrid environment 'MiniGrid-Nope'"),
        ("xminigrid:MiniGrid-Empty-8x8@trivial-21k", "only XLand-* grids take a ruleset"),
        ("xminigrid:XLand-MiniGrid-R1-9x9@nope", "unknown ruleset benchmark 'nope'"),
        ("playground:Nope", "unknown playground environment 'Nope'"),
        ("playground:CartpoleBalance@cuda", "must be one of ('jax', 'warp')"),
        ("jumanji:Snake-v1:unmasked-please", "unknown jumanji environment"),
    ],
)
def test_unknown_names_are_refused_in_one_line(env, says, tmp_path, capsys):
    pytest.importorskip({"cr": "craftax", "xm": "xminigrid", "pl": "mujoco_playground",
                         "ju": "jumanji"}[env[:2]])  # fmt: skip
    assert cli(["train", "--env", env, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()


def steps(env, actions, state):
    outs = []
    for i, a in enumerate(actions):
        out = env.step(jax.random.key(100 + i), state, jnp.asarray(a))
        outs.append(out)
        state = out.state
    return outs


@pytest.mark.integration
def test_craftax_death_terminates_and_its_time_limit_truncates():
    pytest.importorskip("craftax")
    from purejaxppo.suites import CraftaxEnv

    env = CraftaxEnv("Craftax-Classic-Symbolic-v1")
    assert (env.obs_shape, env.action_dim, env.max_episode_steps) == ((1345,), 17, 10_000)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    _, state = reset(jax.random.key(0))
    noop = jnp.int32(0)
    out = step(jax.random.key(1), state, noop)
    assert not bool(out.terminated | out.truncated) and int(out.state.timestep) == 1
    dead = state.replace(player_health=jnp.asarray(-1, state.player_health.dtype))
    out = step(jax.random.key(1), dead, noop)
    assert bool(out.terminated) and not bool(out.truncated)
    fresh_obs, _ = reset(jax.random.split(jax.random.key(1))[1])  # the step's reset key
    np.testing.assert_array_equal(out.obs, fresh_obs)
    assert int(out.state.timestep) == 0 and int(out.state.player_health) == 9
    # The game's own time limit ends an episode as a truncation.
    late = state.replace(timestep=jnp.asarray(9_999, jnp.int32))
    out = step(jax.random.key(2), late, noop)
    assert bool(out.truncated) and not bool(out.terminated) and int(out.state.timestep) == 0
    assert not np.array_equal(out.obs, out.final_obs)

    # A batch of 4 with 2 fresh worlds per step: env 0 plays on, envs 1-3 die; the k-th env to
    # die starts world k mod 2, made from the reset key of env k.
    env.reset_ratio = 2
    keys = jax.random.split(jax.random.key(3), 4)
    batch = jax.tree.map(lambda *x: jnp.stack(x), state, dead, dead, dead)
    out = jax.jit(env.step_batch)(keys, batch, jnp.zeros(4, jnp.int32))
    assert out.terminated.tolist() == [False, True, True, True] and not out.truncated.any()
    alone = step(keys[0], state, noop)  # the env that plays on: as `step` gives it
    first = jax.tree.map(lambda x: x[0], out)
    for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(first), strict=True):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):  # the game's own key
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
    worlds = [reset(jax.random.split(k)[1]) for k in keys[:2]]
    for i, world in [(1, 0), (2, 1), (3, 0)]:
        fresh_obs, fresh = worlds[world]
        np.testing.assert_array_equal(out.obs[i], fresh_obs)
        np.testing.assert_array_equal(out.state.map[i], fresh.map)
        assert int(out.state.timestep[i]) == 0 and int(out.state.player_health[i]) == 9
        died = step(keys[i], dead, noop)  # the same final observation as `step`'s
        np.testing.assert_array_equal(out.final_obs[i], died.final_obs)
    assert not np.array_equal(worlds[0][1].map, worlds[1][1].map)


@pytest.mark.integration
def test_xminigrid_goal_terminates_time_limit_truncates_and_rulesets_come_from_a_file(
    tmp_path, monkeypatch
):
    pytest.importorskip("xminigrid")
    from xminigrid import benchmarks

    from purejaxppo.suites import XMiniGridEnv

    env = XMiniGridEnv("MiniGrid-Empty-5x5")
    assert (env.obs_shape, env.action_dim, env.max_episode_steps) == ((7, 7, 2), 6, 100)
    _, state = env.reset(jax.random.key(0))
    # forward, forward, turn right, forward, forward: onto the goal in the far corner.
    outs = steps(env, [0, 0, 1, 0, 0], state)
    assert [bool(o.terminated) for o in outs] == [False] * 4 + [True]
    assert not any(bool(o.truncated) for o in outs)
    assert float(outs[-1].reward) == pytest.approx(1 - 0.9 * 5 / 100)  # xminigrid's reward
    np.testing.assert_array_equal(outs[-1].state.timestep.state.agent.position, [1, 1])
    env.params = env.params.replace(max_steps=3)  # its own limit is a truncation
    outs = steps(env, [1, 1, 1], state)
    assert [(bool(o.terminated), bool(o.truncated)) for o in outs][-1] == (False, True)

    # A ruleset benchmark saved to a file: every reset draws one of its rulesets.
    grid = XMiniGridEnv("XLand-MiniGrid-R1-9x9")
    base = grid.params.ruleset
    goals = np.stack([np.asarray(base.goal), np.asarray(base.goal)])
    goals[1, 0] = 3  # a second, different goal
    path = tmp_path / "two.pkl"
    benchmarks.save_bz2_pickle(
        {"goals": goals, "rules": np.stack([base.rules] * 2),
         "init_tiles": np.stack([base.init_tiles] * 2), "num_rules": np.ones(2, np.int32)},
        str(path),
    )  # fmt: skip
    env = XMiniGridEnv(f"XLand-MiniGrid-R1-9x9@{path}")
    drawn = {int(env.reset(jax.random.key(k))[1].ruleset.goal[0]) for k in range(12)}
    assert drawn == {int(goals[0, 0]), 3}
    out = jax.jit(env.step)(jax.random.key(1), env.reset(jax.random.key(2))[1], jnp.int32(2))
    assert out.state.ruleset.goal.shape == goals[0].shape

    # A registered benchmark that cannot be downloaded: one line naming it and where it goes.
    def offline(*args, **kwargs):
        raise OSError("no network here")

    monkeypatch.setattr(benchmarks, "DATA_PATH", str(tmp_path / "data"))
    monkeypatch.setattr(benchmarks.urllib.request, "urlretrieve", offline)
    with pytest.raises(ValueError, match=r"cannot load the ruleset benchmark 'trivial-21k' \("):
        XMiniGridEnv("XLand-MiniGrid-R1-9x9@trivial-21k")


@pytest.mark.integration
def test_playground_time_limit_truncates_and_dict_observations_give_the_policys_state():
    pytest.importorskip("mujoco_playground")
    from purejaxppo.suites import PlaygroundEnv

    env = PlaygroundEnv("CartpoleBalance")
    assert (env.obs_shape, env.action_dim, env.max_episode_steps) == ((5,), 1, 1000)
    assert not env.discrete and env.action_low.tolist() == [-1.0]
    _, state = env.reset(jax.random.key(0))
    env.max_episode_steps = 3
    step = jax.jit(env.step)
    outs, s = [], state
    for i in range(4):
        outs.append(step(jax.random.key(i), s, jnp.zeros(1)))
        s = outs[-1].state
    flags = [(bool(o.terminated), bool(o.truncated)) for o in outs]
    assert flags == [(False, False), (False, False), (False, True), (False, False)]
    assert int(outs[2].state.time) == 0 and float(outs[0].reward) > 0
    # The task's reset after the truncation, from the step's key.
    fresh_obs, _ = jax.jit(env.reset)(jax.random.key(2))
    np.testing.assert_allclose(outs[2].obs, fresh_obs, rtol=1e-6)
    # The observation rule: a dict's `state` entry is the policy's observation.
    obs = {"privileged_state": jnp.ones(7), "state": jnp.arange(3.0)}
    np.testing.assert_array_equal(PlaygroundEnv._obs(obs), [0, 1, 2])
    np.testing.assert_array_equal(PlaygroundEnv._obs({"a": jnp.ones((2, 2)), "b": 1}), [1] * 5)


@pytest.mark.integration
def test_jumanji_unmasked_withholds_the_mask():
    pytest.importorskip("jumanji")
    from purejaxppo.suites import JumanjiEnv

    env = JumanjiEnv("Knapsack-v1:unmasked")
    assert not env.masked and not hasattr(env, "action_mask")
    assert env.name == "jumanji:Knapsack-v1:unmasked" and env.obs_shape == (150,)


# A run of each prefix through the command line, tiny: 4 envs x 8 steps x 4 updates.
# The random policy's mean return over whole episodes (benchmarks/suites.py random_return,
# results/suites.json, 2026-12-06) and each suite's lean learning run: the suite's preset
# through `purejaxppo train`, the fewest steps at which the last quarter of the updates is
# clearly above both the random policy and the run's own first quarter.
LEARNING = {
    # env: (seeds, steps, random policy's return, margin, --set overrides)
    # Knapsack: the random legal policy. Measured 2026-12-06 on one device: first quarter of
    # the updates 13.56, last quarter 14.07; at 300k steps 14.7-14.8.
    "jumanji:Knapsack-v1": (2, 150_000, 13.488, 0.3, []),
    "xminigrid:MiniGrid-Empty-8x8": (2, 120_000, 0.106, 0.3, []),
    "playground:CartpoleBalance": (2, 600_000, 355.963, 200.0, []),
    # Craftax trains at about 1k env steps/s here: 16 envs, for 16 updates in 16k steps.
    "craftax:Craftax-Classic-Symbolic-v1": (1, 16_384, 1.381, 0.5, ["num_envs=16"]),
}
# Each one's seconds in make test (2-core CPU, 2026-12-07), for the order of the learning tests.
LEARNING_SECONDS = [
    ("jumanji:Knapsack-v1", 22),
    ("xminigrid:MiniGrid-Empty-8x8", 30),
    ("playground:CartpoleBalance", 125),
    ("craftax:Craftax-Classic-Symbolic-v1", 60),
]
assert [env for env, _ in LEARNING_SECONDS] == list(LEARNING)


@pytest.mark.slow
@pytest.mark.parametrize(
    "env", [pytest.param(env, marks=pytest.mark.slow(seconds=s)) for env, s in LEARNING_SECONDS]
)
def test_each_suite_learns_resumes_bit_for_bit_and_evaluates_from_the_command_line(
    env, tmp_path, capsys
):
    """One run per suite (each suite's compile is the larger part of its cost): the preset
    learns; the same run stopped at its checkpoint one update before the end resumes to the
    same metrics, every array equal; `purejaxppo eval` plays the trained policy."""
    pytest.importorskip({"cr": "craftax", "xm": "xminigrid", "pl": "mujoco_playground",
                         "ju": "jumanji"}[env[:2]])  # fmt: skip
    from purejaxppo.presets import defaults_for

    seeds, total, random, margin, sets = LEARNING[env]
    config, _ = defaults_for(env)
    num_envs = int(dict(s.split("=") for s in sets).get("num_envs", config.num_envs))
    updates = total // (num_envs * config.num_steps)
    every = updates - 1  # checkpoints one update before the end, and at the end
    full, part = tmp_path / "full", tmp_path / "part"
    # One update per compiled call: one program for the run and its resume (chunks of other
    # lengths around the checkpoint would each compile the suite's step again).
    argv = ["train", "--env", env, "--num-seeds", str(seeds), "--total-timesteps", str(total),
            "--checkpoint-every", str(every), "--chunk", "1", "--out", str(full)]  # fmt: skip
    assert cli(argv + (["--set", *sets] if sets else [])) == 0
    metrics = np.load(full / "metrics.npz")
    r, c = metrics["episode_return"][0], metrics["episodes"][0]  # [seed, update]
    assert metrics["finite"].all() and r.shape[1] == updates

    def episode_mean(window: slice) -> float:  # episode-weighted, over the seeds
        w = c[:, window]
        return float(np.where(w > 0, np.nan_to_num(r[:, window]) * w, 0.0).sum() / w.sum())

    first, last = episode_mean(slice(0, updates // 4)), episode_mean(slice(-updates // 4, None))
    said = f"{env} {seeds} seeds x {total}: first quarter {first:.3f}, last quarter {last:.3f}"
    assert last >= random + margin and last >= first + margin, said

    # The same run killed after update `every`: its last checkpoint and summary gone.
    shutil.copytree(full, part)
    assert sorted(int(p.name) for p in (part / "checkpoints").iterdir())[-2:] == [every, updates]
    shutil.rmtree(part / "checkpoints" / str(updates))
    (part / "summary.json").unlink()
    assert cli(["train", "--resume", str(part)]) == 0
    b = np.load(part / "metrics.npz")
    for k in metrics.files:
        np.testing.assert_array_equal(metrics[k], b[k], err_msg=k)
    assert json.loads((part / "summary.json").read_text())["env"] == env
    capsys.readouterr()
    assert cli(["eval", str(full), "--episodes", "1"]) == 0
    assert "return" in capsys.readouterr().out
