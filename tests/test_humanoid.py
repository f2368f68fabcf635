"""The PPO paper's section 6.3: the scheduled log-std, the humanoid steering task, the presets."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_same_run, cut_back, tiny_config

from purejaxppo.ppo import Config, HParams, make_trainer


def schedule_config(**changes):
    # Pendulum: one continuous action. 4 updates of 2 envs x 8 steps.
    return tiny_config(env="Pendulum-v1", log_std_schedule=(-0.7, -1.6), **changes)


@pytest.mark.integration  # compiles a trainer
def test_a_scheduled_log_std_takes_its_values_by_hand_and_is_not_learned():
    config = schedule_config()
    assert config.num_updates == 4
    trainer = make_trainer(config)
    update = jax.jit(trainer.update)
    state = trainer.init(jax.random.key(0), HParams())
    # START + (END - START) * u / (num_updates - 1): -0.7, -1.0, -1.3, -1.6.
    expected = [-0.7, -1.0, -1.3, -1.6]
    for value in expected:
        state, metrics = update(state, HParams())
        # Set before the update's rollout and left there by its epochs (a zero gradient).
        np.testing.assert_allclose(np.asarray(state.params["params"]["log_std"]), [value], 1e-6)
        # The loss's entropy is that Gaussian's: log_std + (1 + log 2 pi) / 2 per dimension.
        np.testing.assert_allclose(
            float(metrics["entropy"]), value + 0.5 * (1 + math.log(2 * math.pi)), rtol=1e-5
        )
    # The same run with a learned log-std moves it away from its initial 0.
    learned = make_trainer(tiny_config(env="Pendulum-v1"))
    s = learned.init(jax.random.key(0), HParams())
    s, _ = jax.jit(learned.update)(s, HParams())
    assert float(np.abs(np.asarray(s.params["params"]["log_std"])).max()) > 0


def test_log_std_schedule_refusals():
    with pytest.raises(ValueError, match="two numbers START,END"):
        tiny_config(env="Pendulum-v1", log_std_schedule=(-0.7,))
    with pytest.raises(ValueError, match="continuous actions; CartPole-v1 has discrete ones"):
        make_trainer(tiny_config(log_std_schedule=(-0.7, -1.6)))
    from purejaxppo.ppo import check_fields_apply

    with pytest.raises(ValueError, match="log_std_schedule applies only with objective=clip"):
        check_fields_apply(Config(env="Pendulum-v1", objective="trpo"), ["log_std_schedule"])


@pytest.fixture(scope="module")
def steer():
    from purejaxppo.envs import make_env

    env = make_env("brax:humanoid_steer")
    env.centre_of_mass = jax.jit(env.centre_of_mass)
    return env, jax.jit(env.reset), jax.jit(env.step)


@pytest.mark.integration  # compiles brax's humanoid step
def test_the_steering_target_moves_at_200_steps_and_when_reached(steer):
    env, reset, step = steer
    obs, state = reset(jax.random.key(0))
    assert obs.shape == env.obs_shape == (env.env.observation_size + 2,)
    com = np.asarray(state.com)
    d = np.asarray(state.target) - com
    assert 2.0 <= np.linalg.norm(d) <= 6.0
    # At reset the torso faces +x (reset noise 0.01): the last two entries are the target
    # relative to the centre of mass, nearly unrotated.
    np.testing.assert_allclose(np.asarray(obs[-2:]), d, atol=0.05 * np.linalg.norm(d))
    zero = jnp.zeros(env.action_dim)
    # Neither reached nor 200 steps old: the target stays, its age counts up.
    out = step(jax.random.key(1), state, zero)
    np.testing.assert_array_equal(np.asarray(out.state.target), np.asarray(state.target))
    assert int(out.state.target_time) == 1
    # 199 steps old: this step makes 200, the target moves and its age restarts.
    old = state._replace(target_time=jnp.asarray(199, jnp.int32))
    out = step(jax.random.key(1), old, zero)
    assert not np.array_equal(np.asarray(out.state.target), np.asarray(state.target))
    assert int(out.state.target_time) == 0
    # A target 0.5 m ahead is reached by the step's end (within 1 m): it moves.
    near = state._replace(target=state.com + jnp.array([0.5, 0.0]))
    out = step(jax.random.key(1), near, zero)
    assert not np.array_equal(np.asarray(out.state.target), np.asarray(near.target))
    assert int(out.state.target_time) == 0
    new_d = np.linalg.norm(np.asarray(out.state.target) - np.asarray(out.state.com))
    assert 2.0 - 0.1 <= new_d <= 6.0 + 0.1  # placed around the new centre of mass


@pytest.mark.integration  # compiles brax's humanoid step
def test_the_steering_reward_is_progress_plus_the_alive_and_control_terms(steer):
    env, reset, step = steer
    _, state = reset(jax.random.key(2))
    dt = float(env.env.dt)
    for action, seed in ((jnp.zeros(env.action_dim), 3), (jnp.full(env.action_dim, 0.3), 4)):
        out = step(jax.random.key(seed), state, action)
        assert not bool(out.terminated)  # one step from standing: alive
        com = np.asarray(env.centre_of_mass(out.state.env_state))
        target = np.asarray(state.target)
        progress = (
            np.linalg.norm(target - np.asarray(state.com)) - np.linalg.norm(target - com)
        ) / dt
        # brax humanoid: alive 5.0, control cost 0.1 x sum of the squared actuator controls
        # (actions in [-1, 1] scaled to the actuators' range, symmetric here).
        low, high = np.asarray(env.env.sys.actuator.ctrl_range).T
        ctrl = (np.asarray(action) + 1) * (high - low) / 2 + low
        expected = 1.25 * progress + 5.0 - 0.1 * np.sum(ctrl**2)
        np.testing.assert_allclose(float(out.reward), expected, rtol=1e-4, atol=1e-4)
        state = out.state


@pytest.mark.integration  # compiles brax's humanoid step
def test_the_steering_task_terminates_on_a_fall_and_truncates_at_its_limit(steer):
    env, reset, step = steer
    _, state = reset(jax.random.key(5))
    # Without control the body falls: a termination (brax humanoid's healthy range), not a
    # truncation, and the next state is a fresh episode.
    for i in range(200):
        out = step(jax.random.key(100 + i), state, jnp.zeros(env.action_dim))
        if bool(out.terminated):
            break
        state = out.state
    assert bool(out.terminated) and not bool(out.truncated)
    assert int(out.state.time) == 0 and int(out.state.target_time) == 0
    # At the time limit without a fall: a truncation.
    _, state = reset(jax.random.key(6))
    last = state._replace(time=jnp.asarray(env.max_episode_steps - 1, jnp.int32))
    out = step(jax.random.key(7), last, jnp.zeros(env.action_dim))
    assert bool(out.truncated) and not bool(out.terminated)


@pytest.mark.integration  # compiles a humanoid trainer (~30 s)
def test_the_humanoid_preset_trains_and_resumes_bit_for_bit(tmp_path, capsys):
    # eval --render of a brax run (MuJoCo's renderer) is the README test's, on runs/ip.
    import json

    from purejaxppo.checkpoint import read_saved_state
    from purejaxppo.cli import main

    def run(*argv):
        capsys.readouterr()
        code = main(list(argv))
        return code, capsys.readouterr().err

    # The preset at the README test's small sizes (their compiled program is shared).
    done = tmp_path / "done"
    small = ["--num-seeds", "2", "--total-timesteps", "1024", "--set", "num_envs=2",
             "num_steps=64", "update_epochs=1"]  # fmt: skip
    code, err = run("train", "--config", "humanoid-paper", *small, "--out", str(done),
                    "--checkpoint-every", "4", "--keep", "10", "--chunk", "4")  # fmt: skip
    assert code == 0, err
    record = json.loads((done / "config.json").read_text())
    assert record["config"]["log_std_schedule"] == [-0.7, -1.6]
    assert record["config"]["adaptive_lr"] and record["config"]["update_epochs"] == 1
    cut = tmp_path / "cut"
    cut_back(done, cut, 4)
    code, err = run("train", "--resume", str(cut))
    assert code == 0 and "resumed from checkpoint at update 4" in err, err
    assert_same_run(done, cut)
    sa = read_saved_state(done / "checkpoints")
    # The last update ran with the schedule's end, untouched by the epochs.
    found = {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(sa)
        if "log_std" in jax.tree_util.keystr(path)
    }
    moments = [v for k, v in found.items() if "opt_state" in k]
    params = [v for k, v in found.items() if "opt_state" not in k]
    assert len(params) == 1 and len(moments) == 2, list(found)  # the value, Adam's mu and nu
    np.testing.assert_allclose(params[0], -1.6, rtol=1e-6)
    assert all(not m.any() for m in moments)  # never a gradient: Adam's moments stay zero


def test_the_humanoid_benchmark_scores_the_default_arm_beside_the_papers(tmp_path):
    # benchmarks/humanoid.py's report on hand-made run folders: the default arm (the brax
    # default) is scored beside the paper's preset and the random policy, and a task whose
    # default arm is missing is reported without it.
    import argparse
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import humanoid

    def folder(path, finals, returns):
        path.mkdir(parents=True)
        returns = np.asarray(returns, np.float32)  # [settings, seeds, updates]
        summary = {"final_return": finals, "total_timesteps": 4096, "run_seconds": 60.0,
                   "compile_seconds": 30.0, "steps_per_second": 68.3}  # fmt: skip
        (path / "summary.json").write_text(json.dumps(summary))
        np.savez(path / "metrics.npz", episode_return=returns, episodes=np.ones_like(returns),
                 env_steps=np.arange(1, returns.shape[-1] + 1) * 1024)  # fmt: skip

    runs = tmp_path / "runs"
    for task in ("run", "steer"):
        folder(runs / task / "ppo", [[100.0, 300.0]], [[[50, 100, 150, 200]] * 2])
        folder(runs / task / "random", [[10.0, 10.0]], [[[10, 10, 10, 10]] * 2])
    folder(runs / "run" / "default", [[400.0, 500.0]], [[[60, 200, 300, 450]] * 2])
    args = argparse.Namespace(runs=str(runs), out=str(tmp_path / "out"), render=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "humanoid.json").write_text(json.dumps({"note": "written by hand"}))
    result = humanoid.report(args)
    tasks = result["tasks"]
    assert result["note"] == "written by hand"  # kept when the figures are rewritten
    from benchmarks.report import humanoid_section

    section = "\n".join(humanoid_section(result))
    assert "`brax:humanoid` (the brax default) | 4,096 x 2 |" in section
    assert "P(brax default > humanoid-paper) = 1.00" in section
    run, steer = tasks["run"], tasks["steer"]
    assert run["default_final"] == [400.0, 500.0] and run["default_steps"] == 4096
    assert run["P(default > ppo)"][0] == 1.0 and run["P(default > random)"][0] == 1.0
    assert run["P(ppo > random)"][0] == 1.0 and run["random"] == [10.0, 10.0]
    assert "default_final" not in steer and steer["ppo_final"] == [100.0, 300.0]
    assert (tmp_path / "out" / "humanoid.json").is_file()
    assert (tmp_path / "out" / "humanoid_curves.png").stat().st_size > 0
