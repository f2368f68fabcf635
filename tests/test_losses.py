"""Each PPO objective, the value loss and the adaptive KL rule against hand arithmetic."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.ppo import adapt_kl_beta, policy_loss, value_loss

# Two samples: ratio 1.5 with advantage 2, ratio 0.5 with advantage -1.
LOGP = jnp.array([math.log(1.5), math.log(0.5)])
OLD = jnp.zeros(2)
ADV = jnp.array([2.0, -1.0])
KL = jnp.array([0.1, 0.3])


def loss(objective, clip=0.2, beta=2.0):
    fn = jax.jit(policy_loss, static_argnums=0)
    return float(fn(objective, LOGP, OLD, ADV, KL, clip, beta))


def test_clipped_surrogate():
    # sample 0: min(1.5*2, clip(1.5, 0.8, 1.2)*2) = min(3, 2.4) = 2.4
    # sample 1: min(0.5*-1, clip(0.5, 0.8, 1.2)*-1) = min(-0.5, -0.8) = -0.8
    # loss = -(2.4 - 0.8) / 2 = -0.8
    assert loss("clip") == pytest.approx(-0.8, rel=1e-6)


def test_clip_epsilon_matters():
    # eps = 0.6: sample 0 unclipped min(3, 1.6*2=3.2) = 3; sample 1 min(-0.5, 0.5*-1) = -0.5
    # loss = -(3 - 0.5) / 2 = -1.25
    assert loss("clip", clip=0.6) == pytest.approx(-1.25, rel=1e-6)


def test_no_clipping():
    # -(1.5*2 + 0.5*-1) / 2 = -1.25, whatever eps is
    assert loss("none") == pytest.approx(-1.25, rel=1e-6)
    assert loss("none", clip=0.01) == pytest.approx(-1.25, rel=1e-6)


@pytest.mark.parametrize("objective", ["kl_fixed", "kl_adaptive"])
def test_kl_penalty(objective):
    # beta = 2: -((3 - 2*0.1) + (-0.5 - 2*0.3)) / 2 = -(2.8 - 1.1) / 2 = -0.85
    assert loss(objective) == pytest.approx(-0.85, rel=1e-6)
    # beta = 0 is the unclipped surrogate
    assert loss(objective, beta=0.0) == pytest.approx(-1.25, rel=1e-6)


def test_unknown_objective_raises():
    with pytest.raises(ValueError, match="objective"):
        policy_loss("trust_region", LOGP, OLD, ADV, KL, 0.2, 1.0)


def test_value_loss_plain_and_clipped():
    values = jnp.array([1.0, 3.0])
    old = jnp.array([2.0, 2.0])
    returns = jnp.array([0.0, 4.0])
    # plain: 0.5 * mean((1-0)^2, (3-4)^2) = 0.5
    assert float(value_loss(values, old, returns, 0.5, False)) == pytest.approx(0.5)
    # clipped with eps 0.5: V_clip = [2 - 0.5, 2 + 0.5] = [1.5, 2.5]
    #   errors (1.5-0)^2 = 2.25 and (2.5-4)^2 = 2.25 exceed the plain ones (1, 1)
    #   0.5 * mean(2.25, 2.25) = 1.125
    assert float(jax.jit(value_loss, static_argnums=4)(values, old, returns, 0.5, True)) == (
        pytest.approx(1.125)
    )


def test_value_clipping_never_lowers_the_loss():
    rng = np.random.default_rng(0)
    v, old, ret = (jnp.asarray(rng.normal(size=64)) for _ in range(3))
    assert float(value_loss(v, old, ret, 0.2, True)) >= float(value_loss(v, old, ret, 0.2, False))


@pytest.mark.parametrize(
    "kl, expected",
    [
        (0.001, 0.5),  # below d_targ / 1.5 = 0.00667: halve
        (0.006, 0.5),
        (0.007, 1.0),  # inside the band: keep
        (0.01, 1.0),
        (0.0149, 1.0),
        (0.0151, 2.0),  # above 1.5 * d_targ = 0.015: double
        (1.0, 2.0),
    ],
)
def test_adaptive_kl_rule(kl, expected):
    beta = jax.jit(adapt_kl_beta)(jnp.asarray(1.0), jnp.asarray(kl), 0.01)
    assert float(beta) == pytest.approx(expected)
