"""Networks: orthogonal init without LAPACK, output shapes, state-independent log-std."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.ppo import ActorCritic, Config, GymnaxEnv, make_network, orthogonal_stack

SHAPES = [(64, 64), (4, 64), (64, 2), (376, 64), (64, 17), (3, 5)]


@pytest.mark.parametrize("gain", [1.0, 0.01, 2.0**0.5])
def test_orthogonal_stack_short_side_orthonormal(gain):
    # One padded batch of mixed shapes: every matrix keeps its own shape and orthonormal side.
    ws = jax.jit(orthogonal_stack, static_argnums=(1, 2))(
        jax.random.key(0), tuple(SHAPES), tuple([gain] * len(SHAPES))
    )
    for w, shape in zip(ws, SHAPES, strict=True):
        w = np.asarray(w)
        assert w.shape == shape
        gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
        np.testing.assert_allclose(
            gram, gain**2 * np.eye(gram.shape[0]), atol=2e-5 * max(1, gain**2)
        )


def test_network_init_gains():
    # Hidden kernels orthogonal times sqrt 2; the policy head 0.01; the value head 1.
    net = ActorCritic(action_dim=2, discrete=True, obs_shape=(4,))
    p = net.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
    for torso in ("actor_torso", "critic_torso"):
        for layer in ("hidden_0", "hidden_1"):
            assert_orthogonal(p[torso][layer]["kernel"], 2.0**0.5)
            np.testing.assert_array_equal(p[torso][layer]["bias"], 0.0)
    assert_orthogonal(p["policy_head"]["kernel"], 0.01)
    assert_orthogonal(p["value_head"]["kernel"], 1.0)
    # Actor and critic draw different matrices.
    assert not np.allclose(
        p["actor_torso"]["hidden_1"]["kernel"], p["critic_torso"]["hidden_1"]["kernel"]
    )


def assert_orthogonal(w, gain):
    """A kernel (dense [in, out] or conv [k, k, in, out]) is gain times an orthogonal matrix."""
    w = np.asarray(w).reshape(-1, np.shape(w)[-1])
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram, gain**2 * np.eye(len(gram)), atol=2e-5)


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
    # Batched LAPACK calls (QR) can deadlock XLA's CPU pool on small machines; see
    # orthogonal_stack().
    net = ActorCritic(action_dim=2, discrete=True, obs_shape=(4,))
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
    a = orthogonal_stack(jax.random.key(0), [(8, 8)], [1.0])[0]
    b = orthogonal_stack(jax.random.key(1), [(8, 8)], [1.0])[0]
    assert not np.allclose(a, b)


@pytest.mark.integration
def test_discrete_and_continuous_heads():
    cfg = Config(env="CartPole-v1", hidden_sizes=(16, 16))
    env = GymnaxEnv("CartPole-v1")
    net = make_network(cfg, env)
    params = net.init(jax.random.key(0), jnp.zeros((1, 4)))
    dist, value, _ = net.apply(params, jnp.zeros((5, 4)))
    chex.assert_shape(dist.loc, (5, 2))
    chex.assert_shape(value, (5,))
    # Policy head gain 0.01: the initial policy is close to uniform.
    assert float(jnp.abs(dist.loc).max()) < 0.1

    cont = make_network(Config(env="Pendulum-v1"), GymnaxEnv("Pendulum-v1"))
    params = cont.init(jax.random.key(0), jnp.zeros((1, 3)))
    obs = jax.random.normal(jax.random.key(1), (6, 3))
    dist, _, _ = cont.apply(params, obs)
    chex.assert_shape((dist.loc, dist.scale), (6, 1))
    # The log-std is a parameter, the same for every state, starting at 0.
    np.testing.assert_array_equal(dist.scale, np.zeros((6, 1)))
    assert params["params"]["log_std"].shape == (1,)
