"""Learning tests with real bars. Slow (minutes each); CI runs them after the unit tests."""

import jax
import numpy as np
import pytest

from purejaxppo.envs import make_env
from purejaxppo.ppo import Config, HParams, evaluate, final_return, preset, train_seeds

pytestmark = pytest.mark.slow


@pytest.mark.slow(seconds=62)
def test_cartpole_purejaxrl_defaults_16_seeds():
    # PureJaxRL's CartPole settings (the purejaxrl-cartpole preset), which are also the Config()
    # and HParams() defaults.
    from purejaxppo.presets import preset_settings

    config, hparams = preset_settings("purejaxrl-cartpole")
    assert config == Config() and hparams == HParams()
    _, metrics, summary = train_seeds(config, hparams, 16)
    finals = final_return(metrics)
    print(f"CartPole-v1 final_return over 16 seeds: {np.mean(finals):.1f}; {summary}")
    assert np.mean(finals) >= 475


@pytest.mark.slow(seconds=47)
def test_classic_default_climbs_mountaincar_where_purejaxrls_settings_do_not_8_seeds():
    # The classic-control default (tuned by benchmarks/tune.py) against the settings it
    # replaced (PureJaxRL's CartPole ones), both at 300k of the default's 500k steps. Measured
    # 2026-12-06 on one device: the default's 8 seeds end at -144.1 on average (7 of 8 reach
    # the flag: -117 to -167); PureJaxRL's settings stay at -200 on every seed (the time limit:
    # the car never reaches the flag).
    from purejaxppo.presets import defaults_for, preset_settings

    finals = {}
    for name, (config, hparams) in (
        ("default", defaults_for("MountainCar-v0")),
        ("purejaxrl", preset_settings("purejaxrl-cartpole", "MountainCar-v0")),
    ):
        _, metrics, summary = train_seeds(config.replace(total_timesteps=300_000), hparams, 8)
        finals[name] = final_return(metrics)
        print(f"MountainCar-v0 {name}: final returns {np.round(finals[name], 1)}; {summary}")
    assert np.mean(finals["default"]) >= -170 and np.sum(finals["default"] > -199) >= 6
    assert np.mean(finals["purejaxrl"]) <= -195


@pytest.mark.slow(seconds=32)
def test_pendulum_shipped_defaults_8_seeds():
    # The shipped preset (1M steps) trained for half of them, for the suite's time: measured
    # 2026-12-02 on one device, 8 seeds reach -156.9 (every seed above -170) by 500k.
    config, hparams = preset("Pendulum-v1")
    assert config.total_timesteps <= 1_000_000
    _, metrics, summary = train_seeds(config.replace(total_timesteps=500_000), hparams, 8)
    finals = final_return(metrics)
    print(f"Pendulum-v1 final_return over 8 seeds: {np.mean(finals):.1f}; {summary}")
    assert np.mean(finals) >= -300


@pytest.mark.slow(seconds=40)
def test_brax_inverted_pendulum_deterministic_eval_4_seeds():
    from purejaxppo.presets import defaults_for

    # The shipped defaults (1M steps), trained for 150k of them for the suite's time: measured
    # 2026-12-08 on one device, every seed's deterministic return is 1000 after 150k, 200k and
    # 300k steps.
    config, hparams = defaults_for("brax:inverted_pendulum")
    assert config.total_timesteps <= 1_000_000
    config = config.replace(total_timesteps=150_000)
    env = make_env(config.env)
    state, _, summary = train_seeds(config, hparams, 4, env=env)
    eval_keys = jax.random.split(jax.random.key(1), 4)
    returns = jax.jit(jax.vmap(lambda p, n, k: evaluate(config, p, n, k, 10, env)))(
        state.params, state.norm, eval_keys
    )
    per_seed = np.asarray(returns).mean(axis=1)
    print(f"brax inverted_pendulum deterministic eval over 4 seeds: {per_seed.round(1)}; {summary}")
    assert per_seed.mean() >= 950


@pytest.mark.slow(seconds=45)
def test_brax_default_learns_past_the_previous_defaults_reach_2_seeds():
    # The brax default (tuned by benchmarks/tune.py) on walker2d at 300k of its 1M steps, where
    # the confirmation's curves part. The setting it replaced (brax-16x128) is not rerun here,
    # to keep the suite lean. Measured 2026-12-08 on one device with this test's steps, the last
    # quarter's mean return was 600.3 for the default on these 2 seeds (614.2 on 4 seeds, per
    # seed 505-987) and 346.0 for brax-16x128 on 4 seeds (per seed 328-355; on the
    # confirmation's 8 seeds at 1M steps, no seed of it passed 403 between 150k and 300k). The
    # bar sits above all of those.
    from purejaxppo.presets import defaults_for

    env = "brax:walker2d@spring"
    config, hparams = defaults_for(env)
    config = config.replace(total_timesteps=300_000)
    _, metrics, summary = train_seeds(config, hparams, 2, env=make_env(env))
    n = metrics["episodes"].shape[1]
    first = episode_mean(metrics, slice(0, n // 4))
    last = episode_mean(metrics, slice(-n // 4, None))
    print(f"{env} default, 2 seeds x 300k: first quarter {first:.1f}, last quarter {last:.1f}; "
          f"{summary}")  # fmt: skip
    assert last >= 450 and last >= first + 150


def episode_mean(metrics, updates=slice(None)):
    """Episode-weighted mean return over the given updates, over all seeds."""
    r, c = metrics["episode_return"][:, updates], metrics["episodes"][:, updates]
    return float(np.where(c > 0, np.nan_to_num(r) * c, 0.0).sum() / c.sum())


@pytest.mark.slow(seconds=100)
def test_minatar_default_learns_ahead_of_the_papers_settings_4_seeds():
    # The MinAtar default (tuned by benchmarks/tune.py) against the setting it replaced (the
    # paper's Atari Table 5 with the conv torso, preset minatar-paper), Breakout at 200k of the
    # default's 1M steps. Measured 2026-12-06 on one device: last quarter of the updates 7.44
    # against 3.24 (first quarter 0.90 and 0.70); the default also trains 3x faster here.
    from purejaxppo.presets import defaults_for, preset_settings

    env = "Breakout-MinAtar"
    last, first = {}, {}
    for name, (config, hparams) in (
        ("default", defaults_for(env)),
        ("paper", preset_settings("minatar-paper", env)),
    ):
        _, metrics, summary = train_seeds(config.replace(total_timesteps=200_000), hparams, 4)
        n = metrics["episodes"].shape[1]
        first[name] = episode_mean(metrics, slice(0, n // 4))
        last[name] = episode_mean(metrics, slice(-n // 4, None))
        print(f"{env} {name}, 4 seeds x 200k: first quarter {first[name]:.2f}, last quarter "
              f"{last[name]:.2f}; {summary}")  # fmt: skip
    assert last["default"] >= 5.0 and last["default"] >= first["default"] + 3.0
    assert last["default"] >= last["paper"] + 2.0


def shipped(name, **changes):
    """(Config, HParams) of a shipped YAML preset, with Config changes."""
    from purejaxppo.presets import preset_settings

    config, hparams = preset_settings(name)
    return config.replace(**changes), hparams


@pytest.mark.slow(seconds=58)
def test_trpo_cartpole_8_seeds():
    # Measured 2026-12-02 (one device): 8 seeds x 300k steps, final mean 482.7; the same
    # preset over 500k on two devices: 498.2 (the curve passes 460 by 150k steps).
    config, hparams = shipped("trpo-cartpole", total_timesteps=300_000)
    _, metrics, summary = train_seeds(config, hparams, 8)
    finals = final_return(metrics)
    print(f"TRPO CartPole-v1 final_return over 8 seeds: {np.mean(finals):.1f}; {summary}")
    assert np.mean(finals) >= 400


@pytest.mark.slow(seconds=16)
def test_a2c_cartpole_8_seeds():
    # Measured 2026-12-02 (one device): 8 seeds x 500k steps, final mean 420.8 (411.0 on two
    # devices); the bar leaves a margin for run-to-run spread across machines.
    config, hparams = shipped("a2c-cartpole")
    _, metrics, summary = train_seeds(config, hparams, 8)
    finals = final_return(metrics)
    print(f"A2C CartPole-v1 final_return over 8 seeds: {np.mean(finals):.1f}; {summary}")
    assert np.mean(finals) >= 300


@pytest.mark.slow(seconds=29)
def test_gru_remembers_what_a_memoryless_policy_cannot_8_seeds():
    # MemoryChain with 8 steps between the context bit and its query: +1 for the right answer,
    # -1 for the wrong one, so without memory the best is a guess (0 on average). Measured
    # 2026-12-02 (one device, 8 seeds, the gru-memorychain settings at memory-8 and 51k steps):
    # every GRU seed at 1.0 from about 15k steps on.
    config, hparams = shipped("gru-memorychain", total_timesteps=25_600)
    env_name = "MemoryChain-bsuite:memory-8"
    config = config.replace(env=env_name)
    finals = {}
    for core in ("gru", "none"):
        _, metrics, _ = train_seeds(config.replace(core=core), hparams, 8, env=make_env(env_name))
        finals[core] = final_return(metrics)
    print(f"MemoryChain memory-8 final return, 8 seeds: gru {np.round(finals['gru'], 2)}, "
          f"none {np.round(finals['none'], 2)}")  # fmt: skip
    assert np.mean(finals["gru"]) >= 0.8 and np.min(finals["gru"]) >= 0.5
    assert abs(np.mean(finals["none"])) <= 0.2
