"""Networks: orthogonal init without LAPACK, output shapes, state-independent log-std."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.ppo import ActorCritic, Config, GymnaxEnv, make_network, orthogonal


@pytest.mark.parametrize("shape", [(64, 64), (4, 64), (64, 2), (3, 5, 7)])
@pytest.mark.parametrize("gain", [1.0, 0.01, 2.0**0.5])
def test_orthogonal_columns_or_rows(shape, gain):
    w = np.asarray(jax.jit(orthogonal(gain), static_argnums=1)(jax.random.key(0), shape))
    assert w.shape == shape
    flat = w.reshape(-1, shape[-1])
    # The shorter side is orthonormal (times the gain).
    gram = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
    np.testing.assert_allclose(gram, gain**2 * np.eye(gram.shape[0]), atol=2e-5 * max(1, gain**2))


def primitives(jaxpr) -> set[str]:
    """Every primitive name in a closed jaxpr, inner jaxprs (scan bodies, ...) included."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                names |= primitives(inner)
    return names


def test_network_init_uses_no_lapack_under_vmap():
    # Batched LAPACK calls (QR) can deadlock XLA's CPU pool on small machines; see orthogonal().
    net = ActorCritic(action_dim=2, discrete=True)
    closed = jax.make_jaxpr(jax.vmap(lambda k: net.init(k, jnp.zeros((1, 4)))))(
        jax.random.split(jax.random.key(0), 3)
    )
    used = primitives(closed.jaxpr)
    assert "scan" in used  # the Gram-Schmidt loop is there, so inner jaxprs were walked
    assert not used & LAPACK


LAPACK = {"geqrf", "householder_product", "qr", "lu", "cholesky", "eigh", "svd"}


def test_primitive_walk_sees_flax_lapack_orthogonal():
    # The check above can fail: flax's own orthogonal initializer shows up as QR.
    init = jax.nn.initializers.orthogonal()
    closed = jax.make_jaxpr(jax.vmap(lambda k: init(k, (4, 4))))(
        jax.random.split(jax.random.key(0), 2)
    )
    assert primitives(closed.jaxpr) & LAPACK


def test_distinct_seeds_give_distinct_weights():
    a = orthogonal(1.0)(jax.random.key(0), (8, 8))
    b = orthogonal(1.0)(jax.random.key(1), (8, 8))
    assert not np.allclose(a, b)


@pytest.mark.integration
def test_discrete_and_continuous_heads():
    cfg = Config(env="CartPole-v1", hidden_sizes=(16, 16))
    env = GymnaxEnv("CartPole-v1")
    net = make_network(cfg, env)
    params = net.init(jax.random.key(0), jnp.zeros((1, 4)))
    dist, value = net.apply(params, jnp.zeros((5, 4)))
    chex.assert_shape(dist.loc, (5, 2))
    chex.assert_shape(value, (5,))
    # Policy head gain 0.01: the initial policy is close to uniform.
    assert float(jnp.abs(dist.loc).max()) < 0.1

    cont = make_network(Config(env="Pendulum-v1"), GymnaxEnv("Pendulum-v1"))
    params = cont.init(jax.random.key(0), jnp.zeros((1, 3)))
    obs = jax.random.normal(jax.random.key(1), (6, 3))
    dist, _ = cont.apply(params, obs)
    chex.assert_shape((dist.loc, dist.scale), (6, 1))
    # The log-std is a parameter, the same for every state, starting at 0.
    np.testing.assert_array_equal(dist.scale, np.zeros((6, 1)))
    assert params["params"]["log_std"].shape == (1,)
