"""Categorical and diagonal-Gaussian log-prob, entropy and KL against closed forms in NumPy."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.ppo import (
    categorical_entropy,
    categorical_kl,
    categorical_log_prob,
    gaussian_entropy,
    gaussian_kl,
    gaussian_log_prob,
)


def test_categorical_uniform_by_hand():
    # Uniform over 4 actions: log pi = -log 4, entropy = log 4, KL to itself = 0.
    logits = jnp.zeros((3, 4))
    action = jnp.array([0, 2, 3])
    np.testing.assert_allclose(categorical_log_prob(logits, action), [-math.log(4)] * 3, rtol=1e-6)
    np.testing.assert_allclose(categorical_entropy(logits), [math.log(4)] * 3, rtol=1e-6)
    np.testing.assert_allclose(categorical_kl(logits, logits), [0.0] * 3, atol=1e-7)


def test_categorical_against_numpy():
    rng = np.random.default_rng(0)
    p_logits = rng.normal(size=(5, 6))
    q_logits = rng.normal(size=(5, 6))
    action = rng.integers(0, 6, size=5)
    p = np.exp(p_logits) / np.exp(p_logits).sum(-1, keepdims=True)
    q = np.exp(q_logits) / np.exp(q_logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(
        jax.jit(categorical_log_prob)(jnp.asarray(p_logits), jnp.asarray(action)),
        np.log(p[np.arange(5), action]),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        categorical_entropy(jnp.asarray(p_logits)), -(p * np.log(p)).sum(-1), rtol=1e-5
    )
    np.testing.assert_allclose(
        categorical_kl(jnp.asarray(p_logits), jnp.asarray(q_logits)),
        (p * (np.log(p) - np.log(q))).sum(-1),
        rtol=1e-5,
    )


def test_gaussian_standard_normal_by_hand():
    # N(0, 1) in 2 dims at x = (1, 0): log p = -0.5*1 - log(2 pi) = -0.5 - 1.837877 = -2.337877
    # entropy of N(0, I_2) = 1 + log(2 pi) = 2.837877
    mean = jnp.zeros(2)
    log_std = jnp.zeros(2)
    assert abs(float(gaussian_log_prob(mean, log_std, jnp.array([1.0, 0.0]))) + 2.337877) < 1e-5
    assert abs(float(gaussian_entropy(log_std)) - 2.837877) < 1e-5


def test_gaussian_against_numpy():
    rng = np.random.default_rng(1)
    mu_p, mu_q, x = (rng.normal(size=(4, 3)) for _ in range(3))
    ls_p, ls_q = (rng.normal(scale=0.5, size=(4, 3)) for _ in range(2))
    sp, sq = np.exp(ls_p), np.exp(ls_q)
    ref_logp = (-0.5 * ((x - mu_p) / sp) ** 2 - np.log(sp) - 0.5 * np.log(2 * np.pi)).sum(-1)
    ref_ent = (0.5 * np.log(2 * np.pi * np.e * sp**2)).sum(-1)
    ref_kl = (np.log(sq / sp) + (sp**2 + (mu_p - mu_q) ** 2) / (2 * sq**2) - 0.5).sum(-1)
    f = jnp.asarray
    np.testing.assert_allclose(
        jax.jit(gaussian_log_prob)(f(mu_p), f(ls_p), f(x)), ref_logp, rtol=1e-5
    )
    np.testing.assert_allclose(gaussian_entropy(f(ls_p)), ref_ent, rtol=1e-5)
    np.testing.assert_allclose(gaussian_kl(f(mu_p), f(ls_p), f(mu_q), f(ls_q)), ref_kl, rtol=1e-4)


def test_sampled_log_probs_match_empirical_frequencies():
    # A check that sampling and log-prob agree: the empirical frequency of each action.
    logits = jnp.log(jnp.array([0.1, 0.2, 0.7]))
    samples = jax.random.categorical(jax.random.key(0), logits, shape=(20000,))
    freq = np.bincount(np.asarray(samples), minlength=3) / 20000
    np.testing.assert_allclose(
        freq, np.exp(categorical_log_prob(jnp.tile(logits, (3, 1)), jnp.arange(3))), atol=0.01
    )
