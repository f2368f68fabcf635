"""Shipped presets: readable YAML, valid fields, and the same values as the trainer's own."""

import pytest

from purejaxppo.ppo import Config, HParams, check_fields_apply, preset
from purejaxppo.presets import defaults_for, load_preset, preset_names


def test_every_preset_loads_into_valid_settings():
    assert {"cartpole", "pendulum", "brax-inverted-pendulum", "brax-ant"} <= set(preset_names())
    for name in preset_names():
        env, cfg, hp = load_preset(name)
        # A preset without an env (a2c-brax, ...) is used with --env; any valid id checks it.
        config = Config(env=env or "CartPole-v1", **cfg)
        HParams(**hp)
        check_fields_apply(config, [*cfg, *hp])  # sets nothing the run would not read


def test_yaml_presets_agree_with_the_code_defaults():
    env, cfg, hp = load_preset("cartpole")
    assert Config(env=env, **cfg) == Config() and HParams(**hp) == HParams()
    env, cfg, hp = load_preset("pendulum")
    assert (Config(env=env, **cfg), HParams(**hp)) == preset("Pendulum-v1")
    env, cfg, hp = load_preset("brax-inverted-pendulum")
    assert (Config(env=env, **cfg), HParams(**hp)) == defaults_for(env)


def test_bad_preset_files_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="presets: "):
        load_preset("no-such-preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: CartPole-v1\nconfig:\n  num_env: 4\n")
    with pytest.raises(ValueError, match="num_env"):
        load_preset(str(bad))


def test_the_paper_mujoco_preset_is_table_1s_base_setting():
    # One definition of the paper's MuJoCo PPO (Table 3): the preset the algorithm comparison
    # runs and the base of the Table 1 benchmark agree field by field.
    from benchmarks.objectives import BASE_CONFIG, BASE_HPARAMS

    _, cfg, hp = load_preset("ppo-mujoco")
    base = Config(env="brax:hopper", total_timesteps=1_000_000, **BASE_CONFIG)
    assert Config(env="brax:hopper", **cfg) == base
    assert HParams(**{**hp, "kl_beta": 1.0, "kl_target": 0.01}) == BASE_HPARAMS
