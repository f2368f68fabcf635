"""GAE against hand arithmetic and a NumPy loop, run under jit."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.ppo import compute_gae


def numpy_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Reference: the textbook backward loop, one environment column at a time."""
    T, B = rewards.shape
    adv = np.zeros((T, B))
    for b in range(B):
        running = 0.0
        for t in reversed(range(T)):
            nonterminal = 1.0 - float(terminated[t, b])
            delta = rewards[t, b] + gamma * nonterminal * next_values[t, b] - values[t, b]
            if terminated[t, b] or truncated[t, b]:
                running = 0.0  # step t+1 belongs to a new episode
            running = delta + gamma * lam * running
            adv[t, b] = running
    return adv, adv + values


def test_gae_golden_values_with_truncation_and_termination():
    # gamma = lambda = 0.5, so gamma * lambda = 0.25.
    # Column 0: step 1 is truncated (bootstraps from V(final obs) = 10, not V(s_2) = 3),
    #           step 2 terminates (bootstraps from 0).
    #   delta_0 = 1 + 0.5*2  - 1 =  1
    #   delta_1 = 1 + 0.5*10 - 2 =  4
    #   delta_2 = 1 + 0      - 3 = -2
    #   delta_3 = 1 + 0.5*5  - 4 = -0.5
    #   A_3 = -0.5; A_2 = -2 (done cuts); A_1 = 4 (done cuts); A_0 = 1 + 0.25*4 = 2
    #   returns = A + V = [3, 6, 1, 3.5]
    # Column 1: no episode ends; only the last reward is 1 and every value is 0:
    #   A = [0.25^3, 0.25^2, 0.25, 1]
    rewards = jnp.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    values = jnp.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    next_values = jnp.array([[2.0, 0.0], [10.0, 0.0], [4.0, 0.0], [5.0, 0.0]])
    terminated = jnp.array([[0, 0], [0, 0], [1, 0], [0, 0]], bool)
    truncated = jnp.array([[0, 0], [1, 0], [0, 0], [0, 0]], bool)
    adv, ret = jax.jit(compute_gae)(rewards, values, next_values, terminated, truncated, 0.5, 0.5)
    chex.assert_shape((adv, ret), (4, 2))
    np.testing.assert_allclose(adv[:, 0], [2.0, 4.0, -2.0, -0.5])
    np.testing.assert_allclose(ret[:, 0], [3.0, 6.0, 1.0, 3.5])
    np.testing.assert_allclose(adv[:, 1], [0.015625, 0.0625, 0.25, 1.0])


def test_truncation_differs_from_termination():
    # The same step marked truncated instead of terminated must bootstrap from V(final obs).
    rewards = jnp.ones((1, 1))
    values = jnp.zeros((1, 1))
    next_values = jnp.full((1, 1), 7.0)
    yes, no = jnp.ones((1, 1), bool), jnp.zeros((1, 1), bool)
    adv_trunc, _ = compute_gae(rewards, values, next_values, no, yes, 0.9, 0.95)
    adv_term, _ = compute_gae(rewards, values, next_values, yes, no, 0.9, 0.95)
    np.testing.assert_allclose(adv_trunc, [[1.0 + 0.9 * 7.0]], rtol=1e-6)
    np.testing.assert_allclose(adv_term, [[1.0]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_numpy_loop(seed):
    rng = np.random.default_rng(seed)
    T, B = 33, 5
    rewards = rng.normal(size=(T, B)).astype(np.float32)
    values = rng.normal(size=(T, B)).astype(np.float32)
    next_values = rng.normal(size=(T, B)).astype(np.float32)
    terminated = rng.random((T, B)) < 0.1
    truncated = (rng.random((T, B)) < 0.1) & ~terminated
    gamma, lam = 0.97, 0.9
    adv, ret = jax.jit(compute_gae)(rewards, values, next_values, terminated, truncated, gamma, lam)
    ref_adv, ref_ret = numpy_gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-5)


def test_lambda_one_gives_discounted_return_minus_value():
    # With lambda = 1 and no episode end, A_t + V_t is the discounted reward-to-go plus the
    # discounted bootstrap at the cut: for T = 3, gamma = 0.5, r = 1, V(s_T) = 8:
    #   R_0 = 1 + 0.5 + 0.25 + 0.125*8 = 2.75
    rewards = jnp.ones((3, 1))
    values = jnp.zeros((3, 1))
    next_values = jnp.array([[0.0], [0.0], [8.0]])
    no = jnp.zeros((3, 1), bool)
    # next_values of steps 0, 1 equal V(s_1), V(s_2); set them consistently to 0 with values = 0.
    _, ret = compute_gae(rewards, values, next_values, no, no, 0.5, 1.0)
    np.testing.assert_allclose(ret[:, 0], [2.75, 3.5, 5.0])
