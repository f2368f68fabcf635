"""Learning tests with real bars. Slow (minutes each); CI runs them after the unit tests."""

import jax
import numpy as np
import pytest

from purejaxppo.envs import make_env
from purejaxppo.ppo import Config, HParams, evaluate, final_return, preset, train_seeds

pytestmark = pytest.mark.slow


def test_cartpole_purejaxrl_defaults_16_seeds():
    # PureJaxRL's CartPole defaults, which are also Config() and HParams() defaults.
    config = Config(
        env="CartPole-v1",
        num_envs=4,
        num_steps=128,
        total_timesteps=500_000,
        update_epochs=4,
        num_minibatches=4,
        hidden_sizes=(64, 64),
        activation="tanh",
        anneal_lr=True,
    )
    hparams = HParams(
        learning_rate=2.5e-4,
        gamma=0.99,
        gae_lambda=0.95,
        clip_coef=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
    )
    assert config == Config() and hparams == HParams()
    _, metrics, summary = train_seeds(config, hparams, 16)
    finals = final_return(metrics)
    print(f"CartPole-v1 final_return over 16 seeds: {np.mean(finals):.1f}; {summary}")
    assert np.mean(finals) >= 475


def test_pendulum_shipped_defaults_8_seeds():
    config, hparams = preset("Pendulum-v1")
    assert config.total_timesteps <= 1_000_000
    _, metrics, summary = train_seeds(config, hparams, 8)
    finals = final_return(metrics)
    print(f"Pendulum-v1 final_return over 8 seeds: {np.mean(finals):.1f}; {summary}")
    assert np.mean(finals) >= -300


def test_brax_inverted_pendulum_deterministic_eval_4_seeds():
    from purejaxppo.presets import defaults_for

    config, hparams = defaults_for("brax:inverted_pendulum")
    assert config.total_timesteps <= 1_000_000
    env = make_env(config.env)
    state, _, summary = train_seeds(config, hparams, 4, env=env)
    eval_keys = jax.random.split(jax.random.key(1), 4)
    returns = jax.jit(jax.vmap(lambda p, n, k: evaluate(config, p, n, k, 10, env)))(
        state.params, state.norm, eval_keys
    )
    per_seed = np.asarray(returns).mean(axis=1)
    print(f"brax inverted_pendulum deterministic eval over 4 seeds: {per_seed.round(1)}; {summary}")
    assert per_seed.mean() >= 950
