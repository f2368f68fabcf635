"""The environment adapters keep terminated, truncated and the final observation apart."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.envs import BraxEnv, is_known_env, make_env
from purejaxppo.ppo import GymnaxEnv


def run(env, actions, key=0):
    obs, state = env.reset(jax.random.key(key))
    step = jax.jit(env.step)
    out = []
    for i, a in enumerate(actions):
        s = step(jax.random.key(100 + i), state, a)
        out.append(s)
        state = s.state
    return obs, out


def test_gymnax_time_limit_is_a_truncation_with_final_observation():
    env = GymnaxEnv("CartPole-v1")
    env.params = env.params.replace(max_steps_in_episode=3)
    _, steps = run(env, [jnp.int32(i % 2) for i in range(4)])
    assert [bool(s.truncated) for s in steps] == [False, False, True, False]
    assert not any(bool(s.terminated) for s in steps[:3])
    # On the truncated step obs is the reset observation and final_obs is where the pole was.
    assert not np.allclose(steps[2].obs, steps[2].final_obs)
    np.testing.assert_array_equal(steps[0].obs, steps[0].final_obs)


def test_gymnax_termination_is_not_a_truncation():
    env = GymnaxEnv("CartPole-v1")
    _, steps = run(env, [jnp.int32(1)] * 40)
    ended = [i for i, s in enumerate(steps) if bool(s.terminated)]
    assert ended, "pushing right for 40 steps should topple the pole"
    assert not bool(steps[ended[0]].truncated)
    # The final observation shows the failure: angle beyond 12 degrees or cart beyond 2.4.
    final = np.asarray(steps[ended[0]].final_obs)
    assert abs(final[2]) > 0.2094 or abs(final[0]) > 2.4


def test_gymnax_continuous_bounds():
    env = GymnaxEnv("Pendulum-v1")
    assert not env.discrete and env.action_dim == 1
    np.testing.assert_array_equal(env.action_low, [-2.0])
    np.testing.assert_array_equal(env.action_high, [2.0])


@pytest.mark.integration
def test_brax_truncation_and_termination():
    env = BraxEnv("inverted_pendulum", backend="spring", episode_length=5)
    assert env.obs_shape == (4,) and env.action_dim == 1 and not env.discrete
    _, steps = run(env, [jnp.zeros(1)] * 6)
    assert [bool(s.truncated) for s in steps] == [False] * 4 + [True, False]
    assert not any(bool(s.terminated) for s in steps)
    assert not np.allclose(steps[4].obs, steps[4].final_obs)
    assert int(steps[4].state.time) == 0 and int(steps[5].state.time) == 1

    long = BraxEnv("inverted_pendulum", backend="spring", episode_length=1000)
    _, steps = run(long, [jnp.ones(1)] * 60)
    ended = [i for i, s in enumerate(steps) if bool(s.terminated)]
    assert ended, "full force for 60 steps should drop the pole"
    assert not bool(steps[ended[0]].truncated)
    assert abs(float(steps[ended[0]].final_obs[1])) > 0.2


def test_make_env_names_and_errors():
    assert isinstance(make_env("CartPole-v1"), GymnaxEnv)
    assert make_env("brax:inverted_pendulum@spring").name == "brax:inverted_pendulum@spring"
    assert is_known_env("brax:hopper") and not is_known_env("brax:hopper@physx")
    with pytest.raises(ValueError, match="inverted_pendulum"):
        make_env("brax:pendulum")
    with pytest.raises(ValueError, match="backend"):
        make_env("brax:hopper@physx")
    with pytest.raises(ValueError, match="CartPole-v1"):
        make_env("Cartpole")


def test_the_gymnax_names_known_without_gymnax_are_its_registry():
    import gymnax

    from purejaxppo.ppo import GYMNAX_ENVS, is_gymnax_env

    assert set(gymnax.registered_envs) == GYMNAX_ENVS
    assert is_gymnax_env("Breakout-MinAtar") and not is_gymnax_env("Breakout")


@pytest.mark.integration
def test_a_refused_flag_does_not_wait_for_gymnax_to_import(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from purejaxppo.cli import main\n"
        f"code = main(['train', '--env', 'Breakout-MinAtar', '--out', {str(tmp_path / 'r')!r}, "
        "'--set', 'objective=trpo', 'ent_coef=0'])\n"
        "print(code, 'gymnax' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split() == ["2", "False"], proc.stderr[-2000:]
    assert "ent_coef applies only with" in proc.stderr and not (tmp_path / "r").exists()


def test_a_brax_environment_is_built_from_a_trace_not_an_eager_reset(monkeypatch):
    # brax's observation_size runs a reset op by op (seconds for the humanoid); the adapter
    # takes the observation's shape from a trace of the reset instead.
    from purejaxppo.envs import brax_envs

    envs = brax_envs()
    keys = []
    build = envs.get_environment

    def recording(*args, **kwargs):
        env = build(*args, **kwargs)
        reset = env.reset
        env.reset = lambda key: (keys.append(key), reset(key))[1]
        return env

    monkeypatch.setattr(envs, "get_environment", recording)
    env = BraxEnv("inverted_pendulum", backend="spring")
    assert env.obs_shape == (4,)
    assert keys and all(isinstance(k, jax.core.Tracer) for k in keys), keys
