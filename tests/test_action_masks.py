"""Action masks (Env.action_mask): an illegal action has probability exactly 0 in the rollout,
the losses, entropy, KL and evaluation; it is never sampled, its logit gets no gradient, and
every objective's loss on a masked batch equals the loss of the same policy restricted to the
legal actions. Checked by hand on a scripted environment and on hand-made batches."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.ppo import (
    MASKED_LOGIT,
    OBJECTIVES,
    Batch,
    Config,
    Dist,
    HParams,
    Step,
    categorical_entropy,
    categorical_kl,
    categorical_log_prob,
    evaluate,
    make_network,
    make_trainer,
    mask_policy,
    ppo_loss,
    trpo_policy_step,
)


class PuzzleState(NamedTuple):
    t: jax.Array  # steps into the episode
    illegal: jax.Array  # illegal actions taken so far (never reset)


class Puzzle:
    """Four actions; action 3 is never legal and action 0 only on even steps, yet an illegal
    action pays 10 and a legal one 1: a policy that could take them would. Episodes of 5 steps;
    the state counts the illegal actions taken."""

    obs_shape = (3,)
    discrete = True
    action_dim = 4
    action_low = action_high = None
    max_episode_steps = 5

    def reset(self, key: jax.Array) -> tuple[jax.Array, PuzzleState]:
        return self.observe(jnp.int32(0)), PuzzleState(jnp.int32(0), jnp.int32(0))

    def observe(self, t: jax.Array) -> jax.Array:
        return jnp.stack([t, t % 2, 1.0]).astype(jnp.float32)

    def legal(self, t: jax.Array) -> jax.Array:
        return jnp.stack([t % 2 == 0, jnp.bool_(True), jnp.bool_(True), jnp.bool_(False)])

    def step(self, key: jax.Array, state: PuzzleState, action: jax.Array) -> Step:
        ok = self.legal(state.t)[action]
        t = state.t + 1
        done = t == self.max_episode_steps
        t_next = jnp.where(done, 0, t)
        return Step(
            obs=self.observe(t_next),
            state=PuzzleState(t_next, state.illegal + (~ok).astype(jnp.int32)),
            reward=jnp.where(ok, 1.0, 10.0),
            terminated=jnp.bool_(False),
            truncated=done,
            final_obs=self.observe(t),
        )


class MaskedPuzzle(Puzzle):
    def action_mask(self, state: PuzzleState) -> jax.Array:
        return self.legal(state.t)


def config(**changes) -> Config:
    base = dict(
        env="test:puzzle", num_envs=4, num_steps=10, total_timesteps=40 * 4, update_epochs=2,
        num_minibatches=2, hidden_sizes=(8,), normalize_obs=False, normalize_reward=False,
    )  # fmt: skip
    return Config(**{**base, **changes})


def favour_illegal(params):
    """Policy-head biases that put almost all probability on the illegal actions 3 and 0."""
    head = params["params"]["policy_head"]
    bias = jnp.array([15.0, 0.0, 0.0, 20.0])
    return {"params": {**params["params"], "policy_head": {**head, "bias": bias}}}


def train(env, cfg: Config):
    trainer = make_trainer(cfg, env)
    state = trainer.init(jax.random.key(0), HParams())
    state = state._replace(params=favour_illegal(state.params))
    update = jax.jit(trainer.update)
    for _ in range(cfg.num_updates):
        state, _ = update(state, HParams())
    return state


@pytest.mark.integration
def test_an_illegal_action_is_never_taken_in_training_or_evaluation():
    # The rollout is every objective's (the losses are checked below on batches).
    cfg = config()
    # Without the mask the favoured illegal actions are taken (the check can fail) ...
    unmasked = train(Puzzle(), cfg)
    assert int(unmasked.env.state.illegal.sum()) > 50
    # ... with it, none in 4 updates x 40 steps, though they pay 10 times more.
    state = train(MaskedPuzzle(), cfg)
    np.testing.assert_array_equal(state.env.state.illegal, 0)
    # The deterministic policy (argmax) picks among legal actions too: 5 steps paying 1 each.
    returns = evaluate(cfg, state.params, state.norm, jax.random.key(1), 4, MaskedPuzzle())
    np.testing.assert_array_equal(returns, 5.0)


def test_masked_categorical_math_by_hand():
    logits = jnp.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 0.0]])
    mask = jnp.array([[True, False, True, False], [False, True, True, True]])
    loc = mask_policy(Dist(logits, None), mask).loc
    for row in range(2):
        legal = np.asarray(logits[row])[np.asarray(mask[row])]
        p = np.exp(legal - legal.max())
        p /= p.sum()
        logp = np.log(p)
        np.testing.assert_allclose(categorical_entropy(loc[row]), -(p * logp).sum(), rtol=1e-6)
        for i, a in enumerate(np.flatnonzero(mask[row])):
            np.testing.assert_allclose(
                categorical_log_prob(loc[row], jnp.int32(a)), logp[i], rtol=1e-6
            )
        for a in np.flatnonzero(~np.asarray(mask[row])):
            assert np.exp(float(categorical_log_prob(loc[row], jnp.int32(a)))) == 0.0
    # KL between two masked policies sums over the legal actions only, and is finite.
    other = mask_policy(Dist(logits[::-1] * 0.5, None), mask).loc
    kl = categorical_kl(loc, other)
    assert np.isfinite(kl).all()
    for row in range(2):
        m = np.asarray(mask[row])
        lp = jax.nn.log_softmax(np.asarray(logits[row])[m])
        lq = jax.nn.log_softmax(np.asarray(logits[::-1][row] * 0.5)[m])
        np.testing.assert_allclose(kl[row], (np.exp(lp) * (lp - lq)).sum(), rtol=1e-5)
    # Sampling: 10,000 draws never give a masked action.
    draws = jax.random.categorical(jax.random.key(0), loc, shape=(10_000, 2))
    assert np.take_along_axis(np.asarray(mask), np.asarray(draws).T, axis=1).all()
    assert MASKED_LOGIT < -1e38 and np.isfinite(MASKED_LOGIT)


def test_masked_logits_get_zero_gradient():
    logits = jax.random.normal(jax.random.key(0), (6, 4))
    mask = jax.random.bernoulli(jax.random.key(1), 0.6, (6, 4)).at[:, 1].set(True)
    old = mask_policy(Dist(jax.random.normal(jax.random.key(2), (6, 4)), None), mask).loc
    action = jnp.ones(6, jnp.int32)

    def total(x):
        loc = mask_policy(Dist(x, None), mask).loc
        return (
            categorical_log_prob(loc, action).sum()
            + categorical_entropy(loc).sum()
            + categorical_kl(old, loc).sum()
        )

    grad = jax.grad(total)(logits)
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(np.where(mask, 0.0, grad), 0.0)
    assert np.abs(np.where(mask, grad, 0.0)).sum() > 0


def batches(n: int = 16):
    """The same minibatch twice: for the 4-action network with action 3 masked in every row,
    and for a 3-action network that only has the legal actions."""
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(n, 3)), jnp.float32)
    action = jnp.asarray(rng.integers(0, 3, n), jnp.int32)
    old = jnp.asarray(rng.normal(size=(n, 3)), jnp.float32)
    old_logp = jax.nn.log_softmax(old)[jnp.arange(n), action]
    common = dict(
        obs=obs, action=action, log_prob=old_logp,
        value=jnp.asarray(rng.normal(size=n), jnp.float32),
        advantages=jnp.asarray(rng.normal(size=n), jnp.float32),
        returns=jnp.asarray(rng.normal(size=n), jnp.float32),
    )  # fmt: skip
    mask = jnp.tile(jnp.array([True, True, True, False]), (n, 1))
    old4 = jnp.concatenate([old, jnp.full((n, 1), MASKED_LOGIT)], axis=1)
    masked = Batch(dist=Dist(old4, None), action_mask=mask, **common)
    legal = Batch(dist=Dist(old, None), **common)
    return masked, legal


def networks():
    """A 4-action network with its policy head scrambled, and the 3-action network that is the
    same network restricted to actions 0..2."""
    cfg = config()
    net4 = make_network(cfg, MaskedPuzzle())
    net3 = make_network(cfg, type("ThreeActions", (Puzzle,), {"action_dim": 3})())
    params = net4.init(jax.random.key(0), jnp.zeros((1, 3)), ())
    params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(3), x.shape), params)
    head = params["params"]["policy_head"]
    restricted = {"kernel": head["kernel"][:, :3], "bias": head["bias"][:3]}
    params3 = {"params": {**params["params"], "policy_head": restricted}}
    return net4, params, net3, params3


@pytest.mark.integration  # seconds each: the losses and their gradients run op by op
@pytest.mark.parametrize("objective", [o for o in OBJECTIVES if o != "trpo"])
def test_every_objective_on_a_masked_batch_equals_the_restricted_policy(objective):
    cfg = config(objective=objective, norm_adv=True, clip_vloss=True)
    net4, params4, net3, params3 = networks()
    masked, legal = batches()
    hp, beta = HParams(ent_coef=0.01), jnp.float32(0.7)
    loss4, stats4 = ppo_loss(params4, net4, cfg, True, masked, hp, beta)
    loss3, stats3 = ppo_loss(params3, net3, cfg, True, legal, hp, beta)
    np.testing.assert_allclose(loss4, loss3, rtol=1e-6)
    for name in stats3:
        np.testing.assert_allclose(stats4[name], stats3[name], rtol=1e-5, atol=1e-7)
    # The masked action's head column and bias get no gradient from any part of the loss.
    grad = jax.grad(ppo_loss, has_aux=True)(params4, net4, cfg, True, masked, hp, beta)[0]
    head = grad["params"]["policy_head"]
    np.testing.assert_array_equal(head["kernel"][:, 3], 0.0)
    np.testing.assert_array_equal(head["bias"][3], 0.0)
    assert np.abs(head["kernel"][:, :3]).sum() > 0


@pytest.mark.integration
def test_trpo_step_on_a_masked_batch_equals_the_restricted_policy():
    cfg = config(objective="trpo", norm_adv=True)
    net4, params4, net3, params3 = networks()
    masked, legal = batches()
    new4, stats4 = trpo_policy_step(params4, net4, True, masked, HParams(), cfg)
    new3, stats3 = trpo_policy_step(params3, net3, True, legal, HParams(), cfg)
    for name in stats3:
        np.testing.assert_allclose(stats4[name], stats3[name], rtol=1e-4, atol=1e-6)
    head4, head3 = new4["params"]["policy_head"], new3["params"]["policy_head"]
    np.testing.assert_allclose(head4["kernel"][:, :3], head3["kernel"], rtol=1e-4, atol=1e-6)
    # The step leaves the masked action's column where it was.
    np.testing.assert_array_equal(
        head4["kernel"][:, 3], params4["params"]["policy_head"]["kernel"][:, 3]
    )
