"""Placeholder steps of a next-step auto-reset (the ALE's XLA interface: the step after a game
ends only resets, ignoring the action) are masked out of GAE, every loss and the episode
statistics; a lost life ends the episode for learning but not the game's score. Checked by hand
on a scripted environment and on hand-made batches."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.ppo import (
    Batch,
    Config,
    Dist,
    HParams,
    Step,
    compute_gae,
    make_network,
    make_trainer,
    ppo_loss,
    trpo_policy_step,
    value_fit_loss,
)


class GameState(NamedTuple):
    t: jax.Array  # steps into the game
    lives: jax.Array
    pending: jax.Array  # the game ended: the next step is a placeholder that resets


class ScriptedGame:
    """Two lives of two steps each, every step scoring 3 (the learner sees its sign, 1); after
    the game ends, one placeholder step that resets (reward `placeholder_reward`, valid 0).
    Period: 4 real steps + 1 placeholder; a game's score is 12."""

    obs_shape = (2,)
    discrete = True
    action_dim = 2
    action_low = action_high = None
    max_episode_steps = 100

    def __init__(self, placeholder_reward: float = 0.0) -> None:
        self.placeholder_reward = placeholder_reward

    def reset(self, key: jax.Array) -> tuple[jax.Array, GameState]:
        state = GameState(jnp.int32(0), jnp.int32(2), jnp.bool_(False))
        return jnp.zeros(2, jnp.float32), state

    def step(self, key: jax.Array, state: GameState, action: jax.Array) -> Step:
        pending = state.pending
        t = jnp.where(pending, 0, state.t + 1)
        life_lost = ~pending & (t % 2 == 0)
        lives = jnp.where(pending, 2, state.lives - life_lost.astype(jnp.int32))
        game_over = life_lost & (lives == 0)
        obs = jnp.stack([t, lives]).astype(jnp.float32)
        score = jnp.where(pending, self.placeholder_reward, 3.0)
        return Step(
            obs=obs,
            state=GameState(t, lives, game_over),
            reward=jnp.where(pending, self.placeholder_reward, jnp.sign(score)),
            terminated=life_lost,
            truncated=jnp.bool_(False),
            final_obs=obs,
            valid=jnp.where(pending, 0.0, 1.0),
            episode_end=game_over,
            score=score,
        )


def config(**changes) -> Config:
    base = dict(
        env="test:scripted", num_envs=2, num_steps=10, total_timesteps=40, update_epochs=2,
        num_minibatches=2, hidden_sizes=(8,), normalize_obs=False, normalize_reward=False,
    )  # fmt: skip
    return Config(**{**base, **changes})


def train(env: ScriptedGame, cfg: Config) -> tuple[object, dict]:
    trainer = make_trainer(cfg, env)
    state = trainer.init(jax.random.key(0), HParams())
    update = jax.jit(trainer.update)
    metrics = []
    for _ in range(cfg.num_updates):
        state, m = update(state, HParams())
        metrics.append(m)
    return state, jax.tree.map(lambda *x: np.stack(x), *metrics)


@pytest.mark.integration
def test_placeholder_steps_leave_learning_and_statistics_untouched():
    # If a placeholder step leaked into GAE or a loss, its reward of 1000 would change the
    # parameters; it must not, bit for bit.
    cfg = config()
    (s0, m0), (s1, m1) = train(ScriptedGame(0.0), cfg), train(ScriptedGame(1000.0), cfg)
    for a, b in zip(jax.tree.leaves(s0.params), jax.tree.leaves(s1.params), strict=True):
        np.testing.assert_array_equal(a, b)
    for name in m0:
        np.testing.assert_array_equal(m0[name], m1[name], err_msg=name)
    # Each env plays 2 games per 10-step rollout: every game scores 12 (raw, not the learned
    # sign) over 4 real steps; a lost life ends no game, a placeholder adds no step.
    np.testing.assert_array_equal(m0["episodes"], [4, 4])
    np.testing.assert_array_equal(m0["episode_return"], [12.0, 12.0])
    np.testing.assert_array_equal(m0["episode_length"], [4.0, 4.0])


def test_gae_masks_placeholders_and_cuts_at_lost_lives():
    # One env, 6 steps: real, lost life (terminated), real, game over (terminated),
    # placeholder, real. gamma 0.5, lambda 1, values 0 except the placeholder's garbage.
    rewards = jnp.array([1.0, 1.0, 1.0, 1.0, 1000.0, 1.0])[:, None]
    values = jnp.array([0.0, 0.0, 0.0, 0.0, 77.0, 0.0])[:, None]
    next_values = jnp.array([0.0, 0.0, 0.0, 77.0, 0.0, 0.0])[:, None]
    terminated = jnp.array([0, 1, 0, 1, 0, 0], bool)[:, None]
    valid = jnp.array([1, 1, 1, 1, 0, 1], jnp.float32)[:, None]
    adv, ret = compute_gae(
        rewards, values, next_values, terminated, jnp.zeros_like(terminated), 0.5, 1.0, valid
    )
    # Step 1 and 3 end lives: bootstrap 0, recursion stops; step 0 = 1 + 0.5 * 1.
    np.testing.assert_allclose(adv[:, 0], [1.5, 1.0, 1.5, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(ret[4, 0], 77.0)  # value + 0: the loss leaves it out


@pytest.mark.integration
def test_losses_over_real_steps_equal_the_losses_without_placeholders():
    network = make_network(config(), ScriptedGame())
    cfg = config(norm_adv=True, clip_vloss=True)
    params = network.init(jax.random.key(1), jnp.zeros((1, 2)), ())
    rng = np.random.default_rng(0)
    n = 12
    valid = np.ones(n, np.float32)
    valid[[3, 7, 8]] = 0.0

    def batch(garbage: float, keep: np.ndarray | None) -> Batch:
        obs = rng.normal(size=(n, 2)).astype(np.float32)
        b = Batch(
            obs=jnp.asarray(obs),
            action=jnp.asarray(np.arange(n) % 2, jnp.int32),
            log_prob=jnp.full(n, -0.7),
            dist=Dist(jnp.zeros((n, 2)), None),
            value=jnp.asarray(np.where(valid > 0, 0.3, garbage), jnp.float32),
            advantages=jnp.asarray(np.where(valid > 0, np.arange(n) - 5.0, garbage), jnp.float32),
            returns=jnp.asarray(np.where(valid > 0, np.arange(n) * 0.5, garbage), jnp.float32),
            valid=jnp.asarray(valid),
        )
        if keep is None:
            return b
        return jax.tree.map(lambda x: x[keep], b._replace(valid=None))

    rng = np.random.default_rng(0)
    masked = batch(1e6, None)
    rng = np.random.default_rng(0)
    real = batch(0.0, valid > 0)
    hp = HParams()
    loss_m, stats_m = ppo_loss(params, network, cfg, True, masked, hp, jnp.float32(1.0))
    loss_r, stats_r = ppo_loss(params, network, cfg, True, real, hp, jnp.float32(1.0))
    np.testing.assert_allclose(loss_m, loss_r, rtol=1e-6)
    for name in stats_r:
        np.testing.assert_allclose(stats_m[name], stats_r[name], rtol=1e-5, atol=1e-7)
    # TRPO's policy step (surrogate, KL, advantage normalization) and its value fit, too.
    trpo = cfg.replace(objective="trpo")
    new_m, tstats_m = trpo_policy_step(params, network, True, masked, hp, trpo)
    new_r, tstats_r = trpo_policy_step(params, network, True, real, hp, trpo)
    for a, b in zip(jax.tree.leaves(new_m), jax.tree.leaves(new_r), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for name in tstats_r:
        np.testing.assert_allclose(tstats_m[name], tstats_r[name], rtol=1e-4, atol=1e-6)
    fit_m = value_fit_loss(params, network, trpo, True, masked, hp, jnp.float32(1.0))[0]
    fit_r = value_fit_loss(params, network, trpo, True, real, hp, jnp.float32(1.0))[0]
    np.testing.assert_allclose(fit_m, fit_r, rtol=1e-6)
