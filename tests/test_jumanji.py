"""jumanji tasks through the adapter (purejaxppo/suites.py): the install hint without the
extra; the observation rule; auto-reset with the true final observation; terminations and
truncations kept apart; the task's action mask routed to Env.action_mask (the jumanji preset's
learning test is with the other suites' in tests/test_suites.py). Skipped only where the jumanji
extra is missing (make test installs it)."""

from __future__ import annotations

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


def test_without_the_extra_the_command_line_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "jumanji", None)  # import fails as if not installed
    out = tmp_path / "run"
    assert cli(["train", "--env", "jumanji:Snake-v1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'purejaxppo[jumanji]'" in err, err
    assert not out.exists()


jumanji = pytest.importorskip("jumanji")

from purejaxppo.suites import JumanjiEnv, flat_observation  # noqa: E402


def test_unknown_and_unsupported_tasks_are_refused_in_one_line(tmp_path, capsys):
    assert cli(["train", "--env", "jumanji:NoSuchTask-v0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown jumanji environment 'NoSuchTask-v0'" in err and err.count("\n") == 1, err
    assert "Snake-v1" in err  # the known ones listed
    # A task whose action is several numbers (BinPack: an empty space and an item).
    assert cli(["train", "--env", "jumanji:BinPack-v2", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "one discrete action per step" in err, err
    assert "MultiDiscreteArray of shape (2,)" in err
    assert not (tmp_path / "x").exists()


def test_observation_rule():
    # Several fields: flattened in declared order, the action mask left out.
    env = JumanjiEnv("Knapsack-v1")
    assert env.obs_shape == (150,) and env.action_dim == 50 and env.masked
    obs, state = env.reset(jax.random.key(0))
    _, first = env.env.reset(jax.random.key(0))
    o = first.observation
    np.testing.assert_array_equal(
        obs, np.concatenate([o.weights, o.values, np.asarray(o.packed_items, np.float32)])
    )
    np.testing.assert_array_equal(state.mask, o.action_mask)
    # Snake: the [12, 12, 5] grid and the step count, flattened (two fields).
    assert JumanjiEnv("Snake-v1").obs_shape == (12 * 12 * 5 + 1,)
    # One field keeps its shape; a nested field (a position) is flattened with the rest.
    single = type("Obs", (), {"_asdict": lambda self: {"grid": jnp.ones((3, 4, 2))}})()
    assert flat_observation(single).shape == (3, 4, 2)
    nested = {"pos": (jnp.int32(2), jnp.int32(5)), "walls": jnp.zeros((2, 2)), "action_mask": 0}
    np.testing.assert_array_equal(flat_observation(nested), [2, 5, 0, 0, 0, 0])


def play(env, actions, key=0):
    obs, state = env.reset(jax.random.key(key))
    step = jax.jit(env.step)
    outs = []
    for i, a in enumerate(actions):
        out = step(jax.random.key(100 + i), state, jnp.int32(a))
        outs.append(out)
        state = out.state
    return obs, outs


def test_knapsack_ends_by_termination_and_resets():
    # Pack items 0, 1, 2, ... until one does not fit (jumanji ends the episode there, the item
    # left out): a termination (discount 0), its final_obs the packed knapsack, its obs the next
    # episode's.
    env = JumanjiEnv("Knapsack-v1")
    _, outs = play(env, range(50))
    ends = [i for i, o in enumerate(outs) if o.terminated | o.truncated]
    first = ends[0]
    assert bool(outs[first].terminated) and not bool(outs[first].truncated)
    assert not any(bool(o.truncated) for o in outs)
    packed = np.asarray(outs[first].final_obs[100:])
    assert packed[:first].all() and not packed[first:].any()
    fresh_obs, _ = env.reset(jax.random.key(100 + first))  # the adapter resets with the step key
    np.testing.assert_array_equal(outs[first].obs, fresh_obs)
    assert not np.asarray(outs[first].obs[100:]).any()  # nothing packed after the reset
    # Before the end, an item once packed is masked out.
    assert not bool(outs[0].state.mask[0]) and bool(outs[0].state.mask[1])
    assert int(outs[first].state.time) == 0 and int(outs[first - 1].state.time) == first


def test_the_adapters_time_limit_is_a_truncation():
    env = JumanjiEnv("Knapsack-v1", max_episode_steps=3)
    _, outs = play(env, range(6))
    flags = [(bool(o.terminated), bool(o.truncated)) for o in outs]
    assert flags[:3] == [(False, False), (False, False), (False, True)]
    # The truncated step's final observation is the third packing, the obs a fresh episode.
    assert np.asarray(outs[2].final_obs[100:103]).all()
    assert not np.asarray(outs[2].obs[100:]).any()
