"""The paper's comparison algorithms as settings of the one trainer: A2C (RMSProp), vanilla PG
with an adaptive step size, TRPO (conjugate gradient, Fisher-vector products, line search)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config

from purejaxppo.ppo import (
    HParams,
    adapt_lr_scale,
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    make_optimizer,
    make_train,
)

# ------------------------------------------------------------------------------------------
# TRPO's pieces against hand values and direct solutions.
# ------------------------------------------------------------------------------------------


def spd(n, seed=0):
    a = np.random.default_rng(seed).normal(size=(n, n))
    return a @ a.T + n * np.eye(n)


def test_conjugate_gradient_matches_a_direct_solve():
    a, b = spd(6), np.arange(1.0, 7.0)
    x = conjugate_gradient(lambda v: jnp.asarray(a, jnp.float32) @ v, jnp.asarray(b), iters=6)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-4)
    # Fewer iterations than the dimension: an approximation whose residual still shrinks.
    res = [
        np.linalg.norm(a @ conjugate_gradient(lambda v: jnp.asarray(a) @ v, jnp.asarray(b), k) - b)
        for k in (1, 2, 4)
    ]
    assert res[0] > res[1] > res[2]


def test_conjugate_gradient_stops_moving_once_solved_and_vmaps():
    # A diagonal system is solved after as many iterations as distinct eigenvalues (2 here);
    # further iterations must not divide by a zero residual.
    a = jnp.diag(jnp.asarray([2.0, 2.0, 5.0]))
    x = conjugate_gradient(lambda v: a @ v, jnp.ones(3), iters=10)
    np.testing.assert_allclose(x, [0.5, 0.5, 0.2], rtol=1e-6)
    bs = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    xs = jax.vmap(lambda b: conjugate_gradient(lambda v: a @ v, b, iters=10))(bs)
    np.testing.assert_allclose(xs, [[0.5, 0, 0], [0, 0, 1.0]], atol=1e-6)


def test_fisher_vector_product_is_the_damped_hessian_of_the_kl():
    """Forward-over-reverse differentiation equals the explicit Hessian of the mean KL of a
    small softmax policy, plus damping."""
    obs = jax.random.normal(jax.random.key(0), (5, 3))
    theta0 = jax.random.normal(jax.random.key(1), (3 * 4,)) * 0.3
    old_logp = jax.nn.log_softmax(obs @ theta0.reshape(3, 4))

    def mean_kl(theta):
        logp = jax.nn.log_softmax(obs @ theta.reshape(3, 4))
        return jnp.mean(jnp.sum(jnp.exp(old_logp) * (old_logp - logp), axis=-1))

    v = jax.random.normal(jax.random.key(2), (12,))
    fvp = fisher_vector_product(mean_kl, theta0, 0.1)(v)
    expected = jax.hessian(mean_kl)(theta0) @ v + 0.1 * v
    np.testing.assert_allclose(fvp, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "improvement, kl, expected",
    [
        # largest step first: worse; then too far (0.02 > 1.5 x 0.01); then accepted.
        ([-0.1, 0.2, 0.3], [0.005, 0.02, 0.001], (2, True)),
        ([0.1, 0.05], [0.015, 0.001], (0, True)),  # exactly 1.5 max_kl is allowed
        ([0.1, 0.05], [0.0151, 0.001], (1, True)),
        ([0.0, -1.0], [0.0, 0.0], (0, False)),  # no improvement: keep the old policy
        ([np.nan, 0.01], [0.001, 0.001], (1, True)),  # a non-finite candidate is skipped
    ],
)
def test_line_search_acceptance_rule(improvement, kl, expected):
    # The search the trainer runs, on candidates given as tables: candidate k -> row k.
    gains, kls = jnp.asarray(improvement, jnp.float32), jnp.asarray(kl, jnp.float32)
    search = jax.jit(
        lambda: backtracking_line_search(lambda k: (gains[k], kls[k]), 0.01, len(improvement))
    )
    index, accepted, gain, kl_taken = search()
    assert bool(accepted) == expected[1]
    if expected[1]:
        assert int(index) == expected[0]
        assert float(gain) == pytest.approx(improvement[expected[0]])
        assert float(kl_taken) == pytest.approx(kl[expected[0]])


# ------------------------------------------------------------------------------------------
# Vanilla PG's adaptive step size and A2C's RMSProp.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kl, expected", [(0.03, 2.0 / 1.5), (0.021, 2.0 / 1.5), (0.02, 2.0), (0.01, 2.0), (0.004, 3.0)]
)
def test_adaptive_step_size_rule(kl, expected):
    # target 0.01: shrink by 1.5 above 0.02, grow by 1.5 below 0.005, else keep.
    np.testing.assert_allclose(adapt_lr_scale(jnp.float32(2.0), jnp.float32(kl), 0.01), expected)


def test_rmsprop_step_by_hand():
    """Mnih et al. 2016's RMSProp: g = decay g + (1 - decay) grad^2, p -= lr grad / sqrt(g + eps)
    (eps inside the root), after global-norm clipping (not reached here)."""
    config = tiny_config(optimizer="rmsprop", anneal_lr=False)
    hp = HParams(learning_rate=0.1, rmsprop_decay=0.9, rmsprop_eps=0.01, max_grad_norm=100.0)
    opt = make_optimizer(config, hp)
    params = {"w": jnp.asarray([1.0, -2.0])}
    grads = {"w": jnp.asarray([0.5, -0.1])}
    state = opt.init(params)
    g = np.zeros(2)
    p = np.asarray([1.0, -2.0])
    for _ in range(2):
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        g = 0.9 * g + 0.1 * np.asarray([0.5, -0.1]) ** 2
        p = p - 0.1 * np.asarray([0.5, -0.1]) / np.sqrt(g + 0.01)
        np.testing.assert_allclose(params["w"], p, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# In the compiled trainer: the TRPO step keeps its constraint and leaves the critic alone.
# ------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_trpo_update_respects_max_kl_and_moves_only_the_policy():
    from purejaxppo.ppo import make_trainer

    config = tiny_config(objective="trpo", num_envs=4, num_steps=32, total_timesteps=128 * 3)
    trainer = make_trainer(config)
    hp = HParams(max_kl=0.005, learning_rate=0.0)  # lr 0: the value fit does not move either
    state = trainer.init(jax.random.key(0), hp)
    new, metrics = jax.jit(trainer.update)(state, hp)
    p0, p1 = state.params["params"], new.params["params"]
    for name in ("critic_torso", "value_head"):
        for a, b in zip(jax.tree.leaves(p0[name]), jax.tree.leaves(p1[name]), strict=True):
            np.testing.assert_array_equal(a, b)
    moved = [
        float(jnp.abs(a - b).max())
        for name in ("actor_torso", "policy_head")
        for a, b in zip(jax.tree.leaves(p0[name]), jax.tree.leaves(p1[name]), strict=True)
    ]
    assert max(moved) > 0
    # The reported KL is the exact mean KL of the step taken, within the line search's bound.
    assert 0 < float(metrics["kl"]) <= 1.5 * 0.005


@pytest.mark.integration
@pytest.mark.parametrize(
    "changes",
    [
        dict(objective="trpo"),
        dict(objective="none", optimizer="rmsprop", update_epochs=1, num_minibatches=1),
        dict(objective="none", adaptive_lr=True, update_epochs=1, num_minibatches=1),
    ],
    ids=["trpo", "a2c", "vpg-adaptive"],
)
def test_each_algorithm_vmaps_over_seeds_and_hyperparameters(changes):
    """Seeds and a hyperparameter axis in one program, as PPO: every run finite, and the runs
    of different settings differ."""
    config = tiny_config(**changes)
    train = jax.jit(jax.vmap(jax.vmap(make_train(config), in_axes=(0, None)), in_axes=(None, 0)))
    keys = jax.random.split(jax.random.key(0), 2)
    hps = jax.tree.map(lambda *x: jnp.stack(x), HParams(gamma=0.9), HParams(gamma=0.99))
    _, metrics = train(keys, hps)
    assert metrics["finite"].shape == (2, 2, config.num_updates)
    assert np.all(np.asarray(metrics["finite"]) == 1)
    assert not np.allclose(metrics["value_loss"][0], metrics["value_loss"][1])


# ------------------------------------------------------------------------------------------
# Bad input: a field the run would not read is refused in one line, exit 2, nothing written.
# ------------------------------------------------------------------------------------------

REFUSED = {
    "trpo field on clip": (["--set", "max_kl=0.02"], "max_kl applies only with objective=trpo"),
    "cg_iters on clip": (["--set", "cg_iters=5"], "cg_iters applies only with objective=trpo"),
    "penalty field on trpo": (
        ["--set", "objective=trpo", "--set", "kl_beta=3"],
        "kl_beta applies only with objective=kl_fixed or kl_adaptive",
    ),
    "entropy on trpo": (["--set", "objective=trpo", "ent_coef=0.01"], "ent_coef applies only"),
    "rmsprop field with adam": (["--set", "rmsprop_eps=0.1"], "rmsprop_eps applies only"),
    "clip range on a2c": (
        ["--config", "a2c-cartpole", "--set", "clip_coef=0.1"],
        "clip_coef applies only with objective=clip or clip_vloss=true",
    ),
    "kl_target without a reader": (["--set", "kl_target=0.02"], "kl_target applies only"),
    "trpo on a shared torso": (
        ["--env", "Breakout-MinAtar", "--config", "minatar-paper", "--set", "objective=trpo"],
        "objective='trpo' needs network='mlp'",
    ),
    "adaptive step on trpo": (
        ["--set", "objective=trpo", "adaptive_lr=true"],
        "adaptive_lr applies to gradient steps",
    ),
    "unknown optimizer": (["--set", "optimizer=sgd"], "Config.optimizer must be one of"),
    "swept trpo field, no trpo variant": (
        ["--sweep", "max_kl=0.01,0.02"],
        "max_kl applies only with objective=trpo",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_field_the_run_would_not_read_is_refused(tmp_path, capsys, case):
    from purejaxppo.cli import main

    args, message = REFUSED[case]
    env = [] if "--env" in args or "--config" in args else ["--env", "CartPole-v1"]
    capsys.readouterr()
    code = main(["train", *env, *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_trpo_field_is_accepted_when_some_variant_of_a_sweep_reads_it():
    from purejaxppo.cli import build_parser, settings_from_args

    args = build_parser().parse_args(
        ["train", "--env", "CartPole-v1", "--sweep", "objective=clip,trpo", "--set", "max_kl=0.02"]
    )
    config, hparams, _, static = settings_from_args(args)
    assert static == {"objective": ["clip", "trpo"]} and float(hparams.max_kl) == 0.02


def test_every_repeated_set_counts():
    """`--set a=1 --set b=2` keeps both (argparse's default kept only the last list)."""
    from purejaxppo.cli import build_parser, settings_from_args

    args = build_parser().parse_args(
        ["train", "--env", "CartPole-v1", "--set", "objective=trpo", "--set", "max_kl=0.02",
         "--sweep", "gamma=0.9,0.99", "--sweep", "cg_iters=5,10"]
    )  # fmt: skip
    config, hparams, traced, static = settings_from_args(args)
    assert config.objective == "trpo" and float(hparams.max_kl) == 0.02
    assert traced == {"gamma": [0.9, 0.99]} and static == {"cg_iters": [5, 10]}
