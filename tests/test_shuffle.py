"""The epochs' minibatch shuffle (random_permutations): permutations, independent, uniform."""

import collections
import itertools

import jax
import numpy as np
import pytest

from purejaxppo.ppo import random_permutations

draw = jax.jit(random_permutations, static_argnums=(1, 2))


@pytest.mark.parametrize("n", [1, 2, 7, 512, 2048, 3000])
def test_rows_are_permutations(n):
    perms = np.asarray(draw(jax.random.key(0), 4, n))
    assert perms.shape == (4, n) and perms.dtype == np.int32
    for row in perms:
        assert sorted(row.tolist()) == list(range(n))
    if n >= 7:
        assert len({tuple(r) for r in perms}) == 4  # each epoch its own order


def test_uniform_over_the_24_orders_of_4():
    # 48,000 draws of a permutation of 4: each of the 24 orders about 2,000 times. The chi-square
    # statistic (23 degrees of freedom) stays under its 99.9% point, 49.73, for a uniform
    # shuffle. Ties kept in order bias it: one sort on 6 random bits scores 130 here.
    perms = np.asarray(draw(jax.random.key(1), 48_000, 4))
    counts = collections.Counter(map(tuple, perms.tolist()))
    assert set(counts) == set(itertools.permutations(range(4)))
    observed = np.array(list(counts.values()), float)
    expected = len(perms) / 24
    assert ((observed - expected) ** 2 / expected).sum() < 49.73


def test_where_an_element_lands_is_uniform_at_512():
    # Two rounds at n = 512 (23 random bits each). Where the first and the last element land,
    # over 8 equal bins of positions and 16,000 permutations: chi-square (7 df) under 24.32,
    # its 99.9% point (a partial shuffle that leaves elements near home fails it).
    perms = np.asarray(draw(jax.random.key(2), 16_000, 512))
    for element in (0, 511):
        where = np.argmax(perms == element, axis=1)
        observed = np.bincount(where // 64, minlength=8).astype(float)
        expected = len(perms) / 8
        assert ((observed - expected) ** 2 / expected).sum() < 24.32
