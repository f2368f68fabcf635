"""Config and HParams validation (before anything compiles) and the final-return summary."""

import numpy as np
import pytest

from purejaxppo.ppo import Config, HParams, check_hparams, final_return, make_train

# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"env": "CartPole-v2"}, "env"),
        ({"num_envs": 0}, "num_envs"),
        ({"num_steps": -1}, "num_steps"),
        ({"num_envs": 3, "num_steps": 5, "num_minibatches": 2}, "num_minibatches"),
        ({"total_timesteps": 10}, "total_timesteps"),
        ({"update_epochs": 2.5}, "update_epochs"),
        ({"hidden_sizes": ()}, "hidden_sizes"),
        ({"hidden_sizes": (64, 0)}, "hidden_sizes"),
        ({"activation": "gelu"}, "activation"),
        ({"objective": "ppo2"}, "objective"),
        ({"norm_adv": "yes"}, "norm_adv"),
        ({"normalize_obs": 1.5}, "normalize_obs"),
    ],
)
def test_config_errors_name_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"Config\.{field}"):
        Config(**changes)


def test_unknown_env_lists_known_ones():
    with pytest.raises(ValueError, match="CartPole-v1.*Pendulum-v1|Pendulum-v1.*CartPole-v1"):
        Config(env="Cartpole")


@pytest.mark.parametrize(
    "field, value",
    [("gamma", 1.5), ("gae_lambda", -0.1), ("learning_rate", float("nan")), ("clip_coef", -1.0)],
)
def test_hparam_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"HParams\.{field}"):
        check_hparams(HParams(**{field: value}))


def test_brax_name_without_adapter_is_refused_before_compiling():
    with pytest.raises(ValueError, match="pass env="):
        make_train(Config(env="brax:inverted_pendulum"))


def test_final_return_weights_by_episode_count():
    # 40 updates -> window of 2 (5%); returns 10 (1 episode) and 40 (3 episodes): (10+120)/4
    metrics = {
        "episode_return": np.array([0.0] * 38 + [10.0, 40.0]),
        "episodes": np.array([1] * 38 + [1, 3]),
    }
    assert final_return(metrics) == pytest.approx(32.5)
    metrics["episodes"] = np.array([1] * 38 + [0, 0])
    metrics["episode_return"] = np.array([0.0] * 38 + [np.nan, np.nan])
    assert np.isnan(final_return(metrics))


def test_compiler_options_defer_to_xla_flags(monkeypatch):
    from purejaxppo.ppo import compiler_options

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert compiler_options() == {"xla_backend_optimization_level": 2}
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    assert compiler_options() is None
