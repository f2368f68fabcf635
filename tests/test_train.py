"""make_train: shapes, determinism, vmap equivalence, no recompiles, every field matters."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from purejaxppo.ppo import (
    METRIC_NAMES,
    Config,
    HParams,
    evaluate,
    make_train,
)

pytestmark = pytest.mark.integration


@functools.cache
def jitted(config):
    """One compiled train per Config, shared by the tests (HParams changes reuse it)."""
    return jax.jit(make_train(config))


def fingerprint(out):
    """Every leaf of (state.params, metrics) flattened into one float64 vector."""
    state, metrics = out
    leaves = jax.tree.leaves((state.params, metrics))
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in leaves])


def same(a, b):
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def test_shapes(tiny):
    state, metrics = jitted(tiny)(jax.random.key(0))
    assert tiny.num_updates == 4
    assert set(metrics) == set(METRIC_NAMES)
    for name, value in metrics.items():
        chex.assert_shape(value, (tiny.num_updates,), custom_message=name)
    chex.assert_shape(state.env.obs, (tiny.num_envs, 4))
    chex.assert_shape(state.params["params"]["policy_head"]["kernel"], (8, 2))
    assert int(state.update) == tiny.num_updates


def test_vmapped_shapes(tiny):
    train = jax.jit(jax.vmap(make_train(tiny), in_axes=(0, None)))
    _, metrics = train(jax.random.split(jax.random.key(0), 3), None)
    for value in metrics.values():
        chex.assert_shape(value, (3, tiny.num_updates))


def test_determinism_bitwise(tiny):
    train = jitted(tiny)
    a = fingerprint(train(jax.random.key(7)))
    b = fingerprint(jax.jit(make_train(tiny))(jax.random.key(7)))
    c = fingerprint(train(jax.random.key(8)))
    assert same(a, b)
    assert not same(a, c)


def test_seed_inside_vmap_equals_seed_alone(tiny):
    keys = jax.random.split(jax.random.key(3), 4)
    batched = jax.jit(jax.vmap(make_train(tiny), in_axes=(0, None)))(keys, None)
    single = jitted(tiny)
    for i in range(4):
        alone = fingerprint(single(keys[i]))
        inside = fingerprint(jax.tree.map(lambda x, i=i: x[i], batched))
        np.testing.assert_allclose(inside, alone, rtol=2e-5, atol=2e-6)


def test_hparam_population_equals_separate_runs(tiny):
    lrs = jnp.array([1e-4, 1e-3, 1e-2])
    hp = HParams(learning_rate=lrs)
    train = make_train(tiny)
    key = jax.random.key(0)
    axes = HParams(**{f.name: None for f in dataclasses.fields(HParams)}).replace(learning_rate=0)
    pop = jax.jit(jax.vmap(train, in_axes=(None, axes)))(key, hp)
    for i, lr in enumerate(lrs):
        alone = fingerprint(jax.jit(train)(key, HParams(learning_rate=lr)))
        inside = fingerprint(jax.tree.map(lambda x, i=i: x[i], pop))
        np.testing.assert_allclose(inside, alone, rtol=2e-5, atol=2e-6)


def test_no_recompile_when_only_hparams_change(tiny):
    train = make_train(tiny)
    counted = jax.jit(chex.assert_max_traces(train, n=1))
    key = jax.random.key(0)
    first = counted(key, HParams())
    second = counted(key, HParams(learning_rate=1e-3, gamma=0.9, clip_coef=0.1, ent_coef=0.0))
    assert not same(fingerprint(first), fingerprint(second))
    chex.clear_trace_counter()


# ------------------------------------------------------------------------------------------
# Every field of Config and HParams changes behaviour.
# ------------------------------------------------------------------------------------------

CONFIG_CHANGES = {
    "env": "Acrobot-v1",
    "num_envs": 4,
    "num_steps": 16,
    "total_timesteps": 128,
    "update_epochs": 1,
    "num_minibatches": 1,
    "hidden_sizes": (16,),
    "activation": "relu",
    "objective": "none",
    "norm_adv": False,
    "clip_vloss": False,
    "anneal_lr": False,
    "anneal_clip": True,
    "normalize_obs": True,
    "normalize_reward": True,
    "optimizer": "rmsprop",
    "adaptive_lr": True,
    "core": "gru",
}
# Fields that act only on image observations: changed against a MinAtar baseline.
IMAGE_BASE = dict(env="Breakout-MinAtar", network="minatar_cnn", conv_channels=4)
IMAGE_CHANGES = {"network": "mlp", "conv_channels": 2}
# Fields that act only on TRPO's step: changed against a TRPO baseline whose full steps the line
# search rejects at first (a large max_kl), so the number of halvings tried matters.
TRPO_CHANGES = {"cg_iters": 2, "backtracks": 1}
# Fields that act only on a recurrent core: changed against a GRU baseline.
GRU_CHANGES = {"core_size": 4, "seq_len": 4}
# Fields that act only on continuous actions: changed against a Pendulum baseline.
CONTINUOUS_CHANGES = {"log_std_schedule": (-0.7, -1.6)}


def test_config_changes_cover_every_field():
    changed = set(CONFIG_CHANGES) | set(IMAGE_CHANGES) | set(TRPO_CHANGES) | set(GRU_CHANGES)
    changed |= set(CONTINUOUS_CHANGES)
    assert changed == {f.name for f in dataclasses.fields(Config)}


@pytest.fixture(scope="module")
def baseline():
    cfg = tiny_config()
    # A small clip range so value clipping binds within a few updates.
    hp = HParams(clip_coef=0.05, learning_rate=1e-2)
    return cfg, hp, fingerprint(jitted(cfg)(jax.random.key(0), hp))


@pytest.mark.parametrize("field", sorted(CONFIG_CHANGES))
def test_each_config_field_changes_behaviour(baseline, field):
    cfg, hp, base = baseline
    changed = cfg.replace(**{field: CONFIG_CHANGES[field]})
    assert not same(fingerprint(jitted(changed)(jax.random.key(0), hp)), base)


@pytest.mark.parametrize("field", sorted(IMAGE_CHANGES))
def test_each_image_field_changes_behaviour(baseline, field):
    _, hp, _ = baseline
    base = tiny_config(**IMAGE_BASE)
    out = fingerprint(jitted(base)(jax.random.key(0), hp))
    changed = base.replace(**{field: IMAGE_CHANGES[field]})
    assert not same(out, fingerprint(jitted(changed)(jax.random.key(0), hp)))


@pytest.mark.parametrize("field", sorted(TRPO_CHANGES))
def test_each_trpo_field_changes_behaviour(baseline, field):
    _, hp, _ = baseline
    hp = hp.replace(max_kl=2.0)
    base = tiny_config(objective="trpo")
    out = fingerprint(jitted(base)(jax.random.key(0), hp))
    changed = base.replace(**{field: TRPO_CHANGES[field]})
    assert not same(out, fingerprint(jitted(changed)(jax.random.key(0), hp)))


@pytest.mark.parametrize("field", sorted(GRU_CHANGES))
def test_each_gru_field_changes_behaviour(baseline, field):
    _, hp, _ = baseline
    base = tiny_config(core="gru", core_size=8)
    out = fingerprint(jitted(base)(jax.random.key(0), hp))
    changed = base.replace(**{field: GRU_CHANGES[field]})
    assert not same(out, fingerprint(jitted(changed)(jax.random.key(0), hp)))


@pytest.mark.parametrize("field", sorted(CONTINUOUS_CHANGES))
def test_each_continuous_action_field_changes_behaviour(baseline, field):
    _, hp, _ = baseline
    base = tiny_config(env="Pendulum-v1")
    out = fingerprint(jitted(base)(jax.random.key(0), hp))
    changed = base.replace(**{field: CONTINUOUS_CHANGES[field]})
    assert not same(out, fingerprint(jitted(changed)(jax.random.key(0), hp)))


@pytest.mark.parametrize("objective", ["kl_fixed", "kl_adaptive", "clip", "trpo"])
def test_objectives_differ_from_each_other(baseline, objective):
    cfg, hp, _ = baseline
    out = {}
    for obj in ("none", objective):
        out[obj] = fingerprint(jitted(cfg.replace(objective=obj))(jax.random.key(0), hp))
    assert not same(out["none"], out[objective])


HPARAM_CHANGES = {
    # field: (Config changes under which it acts, changed value)
    "learning_rate": ({}, 3e-3),
    "gamma": ({}, 0.5),
    "gae_lambda": ({}, 0.5),
    "clip_coef": ({}, 0.3),
    "ent_coef": ({}, 0.5),
    "vf_coef": ({}, 2.0),
    "max_grad_norm": ({}, 1e-3),
    "kl_beta": ({"objective": "kl_fixed"}, 10.0),
    "kl_target": ({"objective": "kl_adaptive"}, 1e-8),
    "rmsprop_decay": ({"optimizer": "rmsprop"}, 0.5),
    "rmsprop_eps": ({"optimizer": "rmsprop"}, 1.0),
    "max_kl": ({"objective": "trpo"}, 0.1),
    "cg_damping": ({"objective": "trpo"}, 10.0),
}


def test_hparam_changes_cover_every_field():
    assert set(HPARAM_CHANGES) == {f.name for f in dataclasses.fields(HParams)}


@pytest.mark.parametrize("field", sorted(HPARAM_CHANGES))
def test_each_hparam_field_changes_behaviour(baseline, field):
    cfg, hp, _ = baseline
    changes, value = HPARAM_CHANGES[field]
    train = jitted(cfg.replace(**changes))
    a = train(jax.random.key(0), hp)
    b = train(jax.random.key(0), hp.replace(**{field: value}))
    assert not same(fingerprint(a), fingerprint(b))


def test_adaptive_beta_moves_and_fixed_beta_stays(baseline):
    cfg, hp, _ = baseline
    _, fixed = jitted(cfg.replace(objective="kl_fixed"))(jax.random.key(0), hp)
    np.testing.assert_array_equal(fixed["kl_beta"], np.full(cfg.num_updates, 1.0, np.float32))
    # d_targ tiny: every measured KL exceeds 1.5 d_targ, so beta doubles each update.
    _, adaptive = jitted(cfg.replace(objective="kl_adaptive"))(
        jax.random.key(0), hp.replace(kl_target=1e-9)
    )
    np.testing.assert_allclose(adaptive["kl_beta"], [1.0, 2.0, 4.0, 8.0])


def test_learning_rate_anneals_linearly(baseline):
    cfg, hp, _ = baseline
    _, metrics = jitted(cfg)(jax.random.key(0), hp)
    np.testing.assert_allclose(metrics["learning_rate"], 1e-2 * np.array([1, 0.75, 0.5, 0.25]))
    _, flat = jitted(cfg.replace(anneal_lr=False))(jax.random.key(0), hp)
    np.testing.assert_allclose(flat["learning_rate"], np.full(4, 1e-2))


def test_continuous_env_trains_and_normalizes_by_default():
    cfg = tiny_config(env="Pendulum-v1", update_epochs=1)
    state, metrics = jitted(cfg)(jax.random.key(0))
    assert "log_std" in state.params["params"]
    # Observation statistics moved away from their initial (0, 1): normalization is on.
    assert float(jnp.abs(state.norm.obs.mean).sum()) > 0
    assert float(state.norm.obs.count) > 64
    assert np.all(np.isfinite(metrics["policy_loss"]))
    off = jax.jit(make_train(cfg.replace(normalize_obs=False)))(jax.random.key(0))[0]
    np.testing.assert_array_equal(off.norm.obs.mean, np.zeros(3))


# ------------------------------------------------------------------------------------------
# Evaluation and the final-return summary.
# ------------------------------------------------------------------------------------------


def test_evaluate_returns_one_value_per_episode(tiny):
    state, _ = jitted(tiny)(jax.random.key(0))
    returns = jax.jit(lambda p, n, k: evaluate(tiny, p, n, k, 6))(
        state.params, state.norm, jax.random.key(1)
    )
    chex.assert_shape(returns, (6,))
    # Every CartPole episode lasts at least a few steps and at most 500.
    assert np.all((np.asarray(returns) >= 5) & (np.asarray(returns) <= 500))
