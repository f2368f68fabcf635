"""PPO end to end in JAX, in one file you can copy out and change.

Proximal Policy Optimization (Schulman et al. 2017, arXiv:1707.06347), with the implementation
details practitioners rely on, and the PPO paper's comparison algorithms as settings of the same
trainer. The file holds two parts.

PPO, first, readable alone from top to bottom in the order data flows:

    settings (Config, HParams)  ->  env interface  ->  normalizers  ->  distributions
    ->  MLP torso and actor-critic  ->  carries  ->  rollout  ->  GAE  ->  losses
    ->  the update (epochs of minibatch steps)  ->  make_train, final scores  ->  evaluate

Then one section per extension, each opening with what it adds and where it hooks in:
convolutional torsos; the recurrent core (GRU, replay, sequence minibatches); the KL penalty and
the A2C / vanilla PG step rules; TRPO; validation of settings; the standalone command line and
its devices. The update changes between them only through three hooks (`Hooks`), chosen once
from the config: how minibatches are cut, a policy step before the epochs, a rule after them.

`make_train(config)` returns a pure `train(key, hparams)` that is safe under `jax.jit` and
`jax.vmap`: vmap it over keys to train many seeds at once, and over an `HParams` batch to train a
population of hyperparameters in the same compiled program.

This file imports nothing from the purejaxppo package; it needs jax, flax, optax and gymnax:

    python ppo.py --env CartPole-v1 --num-seeds 16 --total-timesteps 500000
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct, traverse_util
from jax.flatten_util import ravel_pytree

# ---------------------------------------------------------------------------------------------
# PPO, read top to bottom. Settings: static fields (shapes, loop counts, graph branches) apart
# from traced ones (learning rate, gamma, lambda, epsilon, coefficients).
# ---------------------------------------------------------------------------------------------


OBJECTIVES = ("clip", "none", "kl_fixed", "kl_adaptive", "trpo")


OPTIMIZERS = ("adam", "rmsprop")


ACTIVATIONS = ("tanh", "relu")


NETWORKS = ("mlp", "cnn", "nature_cnn", "minatar_cnn")


CORES = ("none", "gru", "lstm")


def _field(default: Any, doc: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": doc})


@dataclasses.dataclass(frozen=True)
class Config:
    """Static settings: changing one of these recompiles. Names follow CleanRL where it has one."""

    env: str = _field("CartPole-v1", "environment id (gymnax, or 'brax:NAME' via purejaxppo.envs)")
    num_envs: int = _field(4, "parallel environments per seed (N in the paper)")
    num_steps: int = _field(128, "steps per environment per rollout (T in the paper)")
    total_timesteps: int = _field(500_000, "environment steps per seed over the whole run")
    update_epochs: int = _field(4, "epochs over each rollout (K in the paper)")
    num_minibatches: int = _field(4, "minibatches per epoch")
    network: str = _field(
        "mlp",
        "torso: mlp (separate actor and critic), cnn (Mnih et al. 2016, 84x84 frames), "
        "nature_cnn (Mnih et al. 2015), minatar_cnn (one 3x3 conv, MinAtar grids); the "
        "convolutional torsos are shared by policy and value",
    )
    hidden_sizes: tuple[int, ...] = _field((64, 64), "hidden layer widths of the mlp torsos")
    activation: str = _field("tanh", "mlp hidden activation: tanh or relu (conv torsos: relu)")
    objective: str = _field(
        "clip",
        "policy objective: clip, none (unclipped surrogate; A2C and vanilla PG), kl_fixed, "
        "kl_adaptive (penalty), or trpo (natural-gradient step under a KL constraint)",
    )
    optimizer: str = _field("adam", "adam, or rmsprop (A2C; rmsprop_decay, rmsprop_eps)")
    norm_adv: bool = _field(True, "normalize advantages per minibatch")
    clip_vloss: bool = _field(True, "clip the value loss around the rollout's values")
    anneal_lr: bool = _field(True, "anneal the learning rate linearly to zero")
    anneal_clip: bool = _field(False, "anneal clip_coef linearly to zero (paper's Atari alpha)")
    normalize_obs: bool | None = _field(None, "running observation normalization (None: auto)")
    normalize_reward: bool | None = _field(None, "scale rewards by running return std (None: auto)")
    # Extension fields, read by the sections after PPO's: the minatar_cnn torso's width, the
    # recurrent core, vanilla PG's adaptive step size, TRPO's solver.
    conv_channels: int = _field(16, "output channels of the minatar_cnn convolution")
    core: str = _field(
        "none",
        "recurrent core between torso and heads: none, gru or lstm (a policy with memory: the "
        "hidden state is carried per environment and reset where an episode ends; minibatches "
        "become groups of sequences of seq_len steps, so num_minibatches must divide "
        "num_envs * num_steps / seq_len)",
    )
    core_size: int = _field(
        64, "gru, lstm: hidden state width (the mlp's separate actor and critic each get a core)"
    )
    seq_len: int = _field(
        0,
        "gru, lstm: the steps of one training sequence; 0 = the whole rollout (num_steps). A "
        "shorter length cuts each environment's rollout into chunks that start from the hidden "
        "state the rollout had there; gradients stop at chunk starts (truncated backpropagation "
        "through time). Must divide num_steps",
    )
    adaptive_lr: bool = _field(
        False, "scale the step size from the measured KL vs kl_target (vanilla PG's adaptive step)"
    )
    log_std_schedule: tuple[float, ...] = _field(
        (),
        "continuous actions: () = the state-independent log-std is learned; (START, END) = it "
        "is not learned but set before each update u to START + (END - START) * u / "
        "(num_updates - 1): START at the first update, END at the last (the PPO paper's "
        "humanoid, Table 4: -0.7 to -1.6)",
    )
    cg_iters: int = _field(10, "trpo: conjugate-gradient iterations for F^-1 g")
    backtracks: int = _field(10, "trpo: line-search step fractions tried (1, 1/2, 1/4, ...)")

    def __post_init__(self) -> None:
        check_config(self)
        # A list from YAML or JSON becomes a tuple, so the config stays hashable.
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        object.__setattr__(self, "log_std_schedule", tuple(self.log_std_schedule))

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size

    @property
    def sequence_length(self) -> int:
        """A recurrent core's training sequence: seq_len steps, or the whole rollout."""
        return self.seq_len or self.num_steps

    @property
    def num_sequences(self) -> int:
        """A recurrent core's training sequences per rollout: num_envs * num_steps / seq_len."""
        return self.batch_size // self.sequence_length

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


@struct.dataclass
class HParams:
    """Traced hyperparameters: a pytree, so a batch of them is one more vmap axis."""

    learning_rate: float = _field(2.5e-4, "Adam step size (annealed to 0 if anneal_lr)")
    gamma: float = _field(0.99, "discount factor")
    gae_lambda: float = _field(0.95, "GAE lambda")
    clip_coef: float = _field(0.2, "surrogate clip epsilon, also the value-clip range")
    ent_coef: float = _field(0.01, "entropy bonus coefficient (c2 in the paper)")
    vf_coef: float = _field(0.5, "value loss coefficient (c1 in the paper)")
    max_grad_norm: float = _field(0.5, "global-norm gradient clipping threshold")
    # Extension fields: the KL penalties and adaptive step size, A2C's RMSProp, TRPO.
    kl_beta: float = _field(1.0, "KL penalty coefficient (initial value for kl_adaptive)")
    kl_target: float = _field(0.01, "d_targ of the adaptive KL penalty (and of adaptive_lr)")
    rmsprop_decay: float = _field(0.99, "rmsprop: decay of the squared-gradient average")
    rmsprop_eps: float = _field(1e-5, "rmsprop: epsilon inside the square root")
    max_kl: float = _field(0.01, "trpo: KL constraint delta of one policy step")
    cg_damping: float = _field(0.1, "trpo: damping added to the Fisher-vector product")

    def replace(self, **changes: Any) -> HParams:
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# Environments. The trainer talks to any object of the Env protocol; the package adds brax behind
# the same interface.
# ---------------------------------------------------------------------------------------------


def gymnax_env_names() -> list[str]:
    import gymnax

    return list(gymnax.registered_envs)


# gymnax 1.0's registered environments: a name among them is known without importing gymnax
# (~1.5 s, most of it the plotting libraries gymnax's Pong imports), so a refusal of a bad flag
# comes that much sooner. Any other name is looked up in the installed gymnax.
GYMNAX_ENVS = frozenset(
    {"CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0",
     "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar",
     "SpaceInvaders-MinAtar", "Catch-bsuite", "DeepSea-bsuite", "MemoryChain-bsuite",
     "UmbrellaChain-bsuite", "DiscountingChain-bsuite", "MNISTBandit-bsuite",
     "SimpleBandit-bsuite", "FourRooms-misc", "MetaMaze-misc", "PointRobot-misc",
     "BernoulliBandit-misc", "GaussianBandit-misc", "Reacher-misc", "Swimmer-misc", "Pong-misc",
     "FrozenLake-misc"}
)  # fmt: skip


def is_gymnax_env(name: str) -> bool:
    return name in GYMNAX_ENVS or name in gymnax_env_names()


class Step(NamedTuple):
    """One auto-resetting transition. `final_obs` is the true next observation (before reset).

    Three optional fields, for emulators that cannot reset in the step that ends an episode
    (the ALE's "next-step" auto-reset) and for games scored over several lives; None means the
    usual case, and the trainer then computes exactly what it did without them:
      valid:       0.0 where this step only reset the env (the action was ignored, no reward):
                   the step is left out of GAE, every loss and every statistic;
      episode_end: where the game ended for the episode statistics (a lost life is `terminated`
                   for learning but not the end of the game's score);
      score:       the raw reward the statistics sum (`reward` is what learning sees, e.g.
                   clipped to its sign).
    """

    obs: jax.Array
    state: Any
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array
    valid: Any = None
    episode_end: Any = None
    score: Any = None


class Env(Protocol):
    """What the trainer needs of an environment: one unbatched env (the trainer vmaps it).

    Observations keep their shape: [obs_shape] float32, a vector ([D]) or an image ([H, W, C]).
    `step` auto-resets: `obs` is the first observation of the next episode when the step ended
    one, `final_obs` the true next observation before that reset (a time limit bootstraps from
    it). Discrete actions are int32 scalars in [0, action_dim); continuous ones [action_dim]
    floats, clipped by the trainer to [action_low, action_high] before `step`.

    An env whose legal actions change (a board game, a packing task) also defines
    `action_mask(state) -> bool [action_dim]`, True where an action is legal in `state` (after
    `reset`, and after `step`'s auto-reset: the actions legal at the `obs` the policy sees next).
    The trainer then gives the other actions zero probability everywhere the policy is used
    (see `legal_actions`); without the method every action is always legal.
    """

    obs_shape: tuple[int, ...]
    discrete: bool
    action_dim: int
    action_low: np.ndarray | None
    action_high: np.ndarray | None
    max_episode_steps: int

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]: ...

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> Step: ...


def step_envs(env: Env, keys: jax.Array, states: Any, actions: jax.Array) -> Step:
    """One step of a batch of envs ([N] keys, states and actions): `step` vmapped, or the env's
    own `step_batch(keys, states, actions)` where it defines one (an env whose reset is costly
    shares a few fresh episodes among the batch: suites.CraftaxEnv)."""
    step_batch = getattr(env, "step_batch", None)
    if step_batch is None:
        return jax.vmap(env.step)(keys, states, actions)
    return step_batch(keys, states, actions)


def obs_size(env: Env) -> int:
    """Number of floats in one observation (the MLP's input width)."""
    return math.prod(env.obs_shape)


class GymnaxEnv:
    """A gymnax (>=1.0) environment as an Env: float32 observations of the env's own shape
    (MinAtar's [10, 10, C] 0/1 channel maps stay images), terminated and truncated kept apart."""

    def __init__(self, name: str, **env_kwargs: Any) -> None:
        import gymnax

        if name not in gymnax.registered_envs:
            raise ValueError(
                f"unknown gymnax environment {name!r}; known: {', '.join(gymnax.registered_envs)}"
            )
        self.name = name
        self.env, self.params = gymnax.make(name, **env_kwargs)
        self.obs_shape = tuple(int(d) for d in self.env.observation_space(self.params).shape)
        space = self.env.action_space(self.params)
        self.discrete = not hasattr(space, "low")
        if self.discrete:
            self.action_dim = int(space.n)
            self.action_low = self.action_high = None
        else:
            self.action_dim = int(np.prod(space.shape))
            self.action_low = np.broadcast_to(np.asarray(space.low, np.float32), (self.action_dim,))
            self.action_high = np.broadcast_to(
                np.asarray(space.high, np.float32), (self.action_dim,)
            )
        self.max_episode_steps = int(self.params.max_steps_in_episode)

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]:
        obs, state = self.env.reset(key, self.params)
        return self._obs(obs), state

    def _obs(self, obs: jax.Array) -> jax.Array:
        return jnp.asarray(obs, jnp.float32).reshape(self.obs_shape)

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> Step:
        if not self.discrete:
            action = action.reshape(self.env.action_space(self.params).shape)
        obs, state, reward, terminated, truncated, info = self.env.step(
            key, state, action, self.params
        )
        # gymnax reports a time limit even on the step that also terminates; termination wins.
        terminated = jnp.asarray(terminated, jnp.bool_)
        truncated = jnp.logical_and(jnp.asarray(truncated, jnp.bool_), ~terminated)
        return Step(
            obs=self._obs(obs),
            state=state,
            reward=jnp.asarray(reward, jnp.float32).reshape(()),
            terminated=terminated.reshape(()),
            truncated=truncated.reshape(()),
            final_obs=self._obs(info["final_observation"]),
        )


def resolve_normalization(config: Config, env: Env) -> tuple[bool, bool]:
    """Observation and reward normalization. By default on for continuous actions with vector
    observations, off otherwise: image observations are fed as the env gives them (MinAtar's are
    0/1 maps, already in [0, 1]); a per-pixel running mean/std would divide rarely lit pixels by
    a variance near zero and blow them up to the clip bound."""
    auto = not env.discrete
    obs = config.normalize_obs
    if obs is None:
        obs = auto and len(env.obs_shape) == 1
    rew = auto if config.normalize_reward is None else config.normalize_reward
    return obs, rew


# ---------------------------------------------------------------------------------------------
# Running statistics for observation normalization and reward scaling.
# ---------------------------------------------------------------------------------------------


OBS_CLIP = 10.0


REWARD_CLIP = 10.0


NORM_EPS = 1e-8


class RunningStat(NamedTuple):
    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, shape: Sequence[int]) -> RunningStat:
        # count starts at a tiny value so the first merge takes the batch statistics.
        return cls(jnp.zeros(shape), jnp.ones(shape), jnp.asarray(1e-4, jnp.float32))

    def update(self, batch: jax.Array) -> RunningStat:
        """Merge a batch [B, ...] by the parallel-variance formula (Chan et al.)."""
        b_mean = batch.mean(axis=0)
        b_var = batch.var(axis=0)
        b_count = jnp.asarray(batch.shape[0], jnp.float32)
        total = self.count + b_count
        delta = b_mean - self.mean
        mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        return RunningStat(mean, m2 / total, total)


def normalize_obs(stat: RunningStat, obs: jax.Array) -> jax.Array:
    return jnp.clip((obs - stat.mean) / jnp.sqrt(stat.var + NORM_EPS), -OBS_CLIP, OBS_CLIP)


class Normalizer(NamedTuple):
    """Per-seed normalization state; identity when the config turns normalization off."""

    obs: RunningStat
    ret: RunningStat  # variance of the discounted return, for reward scaling
    ret_acc: jax.Array  # [N] running discounted return per environment


def scale_reward(
    norm: Normalizer, reward: jax.Array, done: jax.Array, gamma: jax.Array | float
) -> tuple[jax.Array, RunningStat, jax.Array]:
    """Reward scaling: reward [N] divided by the running std of the discounted return, clipped
    to +-REWARD_CLIP. Returns (scaled reward, updated return statistics, the per-env discounted
    return, restarted where an episode ended)."""
    ret_acc = norm.ret_acc * gamma + reward
    ret_stat = norm.ret.update(ret_acc)
    scaled = jnp.clip(reward / jnp.sqrt(ret_stat.var + NORM_EPS), -REWARD_CLIP, REWARD_CLIP)
    return scaled, ret_stat, jnp.where(done, 0.0, ret_acc)


# ---------------------------------------------------------------------------------------------
# Action distributions (categorical and diagonal Gaussian), written out so they can be tested.
# ---------------------------------------------------------------------------------------------


LOG_2PI = math.log(2.0 * math.pi)


def categorical_log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
    """logits [..., A], integer action [...] -> log pi(a) [...]."""
    logp = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(logp, action[..., None].astype(jnp.int32), axis=-1)[..., 0]


def categorical_entropy(logits: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def categorical_kl(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
    """KL(p || q) for categoricals given by logits [..., A]."""
    logp = jax.nn.log_softmax(p_logits)
    logq = jax.nn.log_softmax(q_logits)
    return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, action: jax.Array) -> jax.Array:
    """Diagonal Gaussian: mean, log_std, action [..., D] -> log density [...]."""
    z = (action - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * LOG_2PI, axis=-1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    return jnp.sum(log_std + 0.5 * (1.0 + LOG_2PI), axis=-1)


def gaussian_kl(
    mean_p: jax.Array, log_std_p: jax.Array, mean_q: jax.Array, log_std_q: jax.Array
) -> jax.Array:
    """KL(p || q) for diagonal Gaussians [..., D] -> [...]."""
    var_ratio = jnp.exp(2.0 * (log_std_p - log_std_q))
    mean_term = ((mean_p - mean_q) * jnp.exp(-log_std_q)) ** 2
    return 0.5 * jnp.sum(var_ratio + mean_term - 1.0 - 2.0 * (log_std_p - log_std_q), axis=-1)


class Dist(NamedTuple):
    """Policy output. Discrete: loc holds logits [..., A], scale is unused. Continuous: loc is
    the mean and scale the log-std, both [..., D]."""

    loc: jax.Array
    scale: jax.Array


# The logit an illegal action gets: the most negative finite float32, so its probability is
# exactly 0 (exp underflows), it never wins a sample or an argmax, and log-probabilities,
# entropy and KL stay finite (0 * finite = 0) instead of the 0 * inf = nan of -inf.
MASKED_LOGIT = float(np.finfo(np.float32).min)


def legal_actions(env: Env, state: Any) -> jax.Array | None:
    """Env.action_mask of a batch of states ([N] -> bool [N, A]); None for an env without one."""
    if not hasattr(env, "action_mask"):
        return None
    return jax.vmap(env.action_mask)(state)


def mask_policy(dist: Dist, mask: jax.Array | None) -> Dist:
    """The categorical restricted to legal actions (mask [..., A], True = legal): illegal
    logits replaced by MASKED_LOGIT, which also stops their gradient. None: unchanged."""
    if mask is None:
        return dist
    return dist._replace(loc=jnp.where(mask, dist.loc, MASKED_LOGIT))


def dist_log_prob(discrete: bool, dist: Dist, action: jax.Array) -> jax.Array:
    if discrete:
        return categorical_log_prob(dist.loc, action)
    return gaussian_log_prob(dist.loc, dist.scale, action)


def dist_entropy(discrete: bool, dist: Dist) -> jax.Array:
    if discrete:
        return categorical_entropy(dist.loc)
    return gaussian_entropy(dist.scale)


def dist_kl(discrete: bool, p: Dist, q: Dist) -> jax.Array:
    if discrete:
        return categorical_kl(p.loc, q.loc)
    return gaussian_kl(p.loc, p.scale, q.loc, q.scale)


def dist_sample(discrete: bool, dist: Dist, key: jax.Array) -> jax.Array:
    if discrete:
        return jax.random.categorical(key, dist.loc)
    return dist.loc + jnp.exp(dist.scale) * jax.random.normal(key, dist.loc.shape)


def dist_mode(discrete: bool, dist: Dist) -> jax.Array:
    return jnp.argmax(dist.loc, axis=-1) if discrete else dist.loc


# ---------------------------------------------------------------------------------------------
# Networks: the MLP torsos and the actor-critic; orthogonal init (sqrt 2 hidden, 0.01 policy
# head, 1.0 value head).
# ---------------------------------------------------------------------------------------------


def orthogonal_stack(
    key: jax.Array, shapes: Sequence[tuple[int, int]], gains: Sequence[float]
) -> list[jax.Array]:
    """Orthogonal matrices (Saxe et al. 2014) of the given [fan_in, fan_out] shapes, times gains.

    The shorter side of each is orthonormal. All are drawn as one zero-padded [L, n, m] Gaussian
    stack and orthonormalized by one batched Gram-Schmidt loop: one loop instead of one per
    layer keeps the compiled train program small (the per-layer version cost ~1.4 s of compile).
    Gram-Schmidt instead of LAPACK QR on purpose: under vmap a batched QR is a LAPACK custom call
    that splits the batch over XLA's CPU thread pool and waits for it; when every pool thread is
    inside such a call (two threads on a 2-core machine), none is left and the program hangs.
    """
    sides = [(max(r, c), min(r, c)) for r, c in shapes]
    n, m = max(s[0] for s in sides), max(s[1] for s in sides)
    a = jax.random.normal(key, (len(shapes), n, m), jnp.float32)
    # Rows past a matrix's own long side are zero, so its columns stay in its own R^n_i.
    rows = jnp.asarray([s[0] for s in sides])[:, None, None]
    a = jnp.where(jnp.arange(n)[None, :, None] < rows, a, 0.0)

    def column(q: jax.Array, i: jax.Array) -> tuple[jax.Array, None]:
        v = a[:, :, i]
        for _ in range(2):  # classical Gram-Schmidt twice keeps float32 columns orthogonal
            v = v - jnp.einsum("lnm,lm->ln", q, jnp.einsum("lnm,ln->lm", q, v))
        # Columns past a matrix's own short side may vanish; they are never used.
        norm = jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-30)
        return q.at[:, :, i].set(v / norm), None

    q, _ = jax.lax.scan(column, jnp.zeros_like(a), jnp.arange(m))
    out = []
    for i, ((r, c), (long, short), gain) in enumerate(zip(shapes, sides, gains, strict=True)):
        w = q[i, :long, :short]
        out.append(gain * (w if r >= c else w.T))
    return out


HIDDEN_GAIN = math.sqrt(2.0)


# A small policy-head gain starts the policy near uniform / near zero mean; the GRU's kernels
# start orthogonal with gain 1, so its gates start unsaturated.
KERNEL_GAINS = {"policy_head": 0.01, "value_head": 1.0, "core_input": 1.0, "core_recurrent": 1.0}


class MLPTorso(nn.Module):
    """Flattens the trailing obs_ndim axes, then dense layers. Kernels start at zero here:
    ActorCritic.init draws every kernel orthogonal at once."""

    sizes: Sequence[int]
    activation: str
    obs_ndim: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        act = {"tanh": nn.tanh, "relu": nn.relu}[self.activation]
        x = obs.reshape(obs.shape[: obs.ndim - self.obs_ndim] + (-1,))
        for i, width in enumerate(self.sizes):
            x = act(nn.Dense(width, kernel_init=nn.initializers.zeros, name=f"hidden_{i}")(x))
        return x


class ActorCritic(nn.Module):
    """torso -> core -> heads. `mlp`: separate actor and critic torsos; the conv torsos are
    shared by the policy and value heads (PPO paper, section 5: a shared network trained on the
    combined loss). The core is the identity (`none`) or a GRU after each torso (one per
    torso: the mlp's actor and critic keep their own memory). A state-independent log-std for
    continuous actions.

    Every call takes and returns the hidden state: a tuple of [..., core_size] arrays, one per
    core, empty for core `none` (initial_hidden makes it)."""

    action_dim: int
    discrete: bool
    obs_shape: Sequence[int]
    network: str = "mlp"
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    conv_layers: Sequence[tuple[int, int, int]] = ()
    core: str = "none"
    core_size: int = 64

    def setup(self) -> None:
        if self.network == "mlp":
            ndim = len(self.obs_shape)
            self.actor_torso = MLPTorso(self.hidden_sizes, self.activation, ndim)
            self.critic_torso = MLPTorso(self.hidden_sizes, self.activation, ndim)
        else:
            self.torso = ConvTorso(self.conv_layers, CONV_TORSOS[self.network][1])
        if self.core != "none":
            cell = CORE_CELLS[self.core]
            if self.network == "mlp":
                self.actor_core, self.critic_core = cell(self.core_size), cell(self.core_size)
            else:
                self.shared_core = cell(self.core_size)
        zeros = nn.initializers.zeros
        self.policy_head = nn.Dense(self.action_dim, kernel_init=zeros)
        self.value_head = nn.Dense(1, kernel_init=zeros)
        if not self.discrete:
            self.log_std = self.param("log_std", zeros, (self.action_dim,))

    def init(self, rngs: Any, *args: Any, **kwargs: Any) -> Any:
        """flax's init, then every kernel replaced by orthogonal_stack in one draw (a conv kernel
        [kh, kw, in, out] as the matrix [kh * kw * in, out])."""
        variables = super().init(rngs, *args, **kwargs)
        key = rngs["params"] if isinstance(rngs, dict) else rngs
        flat = traverse_util.flatten_dict(variables)
        paths = [p for p in flat if p[-1] == "kernel"]
        shapes = [flat[p].shape for p in paths]
        gains = [KERNEL_GAINS.get(p[-2], HIDDEN_GAIN) for p in paths]
        kernels = orthogonal_stack(key, [(math.prod(sh[:-1]), sh[-1]) for sh in shapes], gains)
        flat.update({p: k.reshape(sh) for p, k, sh in zip(paths, kernels, shapes, strict=True)})
        return traverse_util.unflatten_dict(flat)

    def features(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """obs [..., *obs_shape] -> (policy features, value features), each [..., F]."""
        if self.network == "mlp":
            return self.actor_torso(obs), self.critic_torso(obs)
        x = self.torso(obs)
        return x, x

    def remember(
        self, feats: tuple[jax.Array, jax.Array], hidden: tuple[jax.Array, ...]
    ) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, ...]]:
        """One core step: (features, hidden) -> (features for the heads, new hidden)."""
        if self.core == "none":
            return feats, hidden
        if self.network == "mlp":
            f_pi, h_pi = self.actor_core(hidden[0], feats[0])
            f_v, h_v = self.critic_core(hidden[1], feats[1])
            return (f_pi, f_v), (h_pi, h_v)
        f, h = self.shared_core(hidden[0], feats[0])
        return (f, f), (h,)

    def remember_sequence(
        self, feats: tuple[jax.Array, jax.Array], hidden: tuple[jax.Array, ...], done: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """The core over sequences (replay): features [T, B, F] from the state `hidden` before
        step 0 (leaves [B, S]), the state reset after each step that ended an episode (done
        [T, B]) -> the features for the heads [T, B, H]."""
        if self.network == "mlp":
            return (
                self.actor_core.sequence(hidden[0], feats[0], done),
                self.critic_core.sequence(hidden[1], feats[1], done),
            )
        f = self.shared_core.sequence(hidden[0], feats[0], done)
        return f, f

    def heads(self, feats: tuple[jax.Array, jax.Array]) -> tuple[Dist, jax.Array]:
        """(policy features, value features) [..., F] -> (Dist [..., A], value [...])."""
        return self._dist(self.policy_head(feats[0])), self.value_head(feats[1])[..., 0]

    def __call__(
        self, obs: jax.Array, hidden: tuple[jax.Array, ...] = ()
    ) -> tuple[Dist, jax.Array, tuple[jax.Array, ...]]:
        """obs [..., *obs_shape], hidden -> (Dist with [..., A] leaves, value [...], new
        hidden); a shared torso runs once."""
        feats, hidden = self.remember(self.features(obs), hidden)
        return *self.heads(feats), hidden

    def policy(
        self, obs: jax.Array, hidden: tuple[jax.Array, ...] = ()
    ) -> tuple[Dist, tuple[jax.Array, ...]]:
        """The policy alone (the mlp's critic torso and core do not run; its hidden state is
        passed through as it was)."""
        if self.network != "mlp":
            dist, _, hidden = self(obs, hidden)
            return dist, hidden
        x = self.actor_torso(obs)
        if self.core != "none":
            x, h = self.actor_core(hidden[0], x)
            hidden = (h, hidden[1])
        return self._dist(self.policy_head(x)), hidden

    def value(
        self, obs: jax.Array, hidden: tuple[jax.Array, ...] = ()
    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """The value alone (for the mlp, the actor's half of the hidden state passes through)."""
        if self.network != "mlp":
            _, value, hidden = self(obs, hidden)
            return value, hidden
        x = self.critic_torso(obs)
        if self.core != "none":
            x, h = self.critic_core(hidden[1], x)
            hidden = (hidden[0], h)
        return self.value_head(x)[..., 0], hidden

    def _dist(self, loc: jax.Array) -> Dist:
        if self.discrete:
            return Dist(loc, jnp.zeros_like(loc[..., :1]))
        return Dist(loc, jnp.broadcast_to(self.log_std, loc.shape))


def make_network(config: Config, env: Env) -> ActorCritic:
    check_obs_shape(config, env.obs_shape)
    check_action_space(config, env)
    return ActorCritic(
        action_dim=env.action_dim,
        discrete=env.discrete,
        obs_shape=tuple(env.obs_shape),
        network=config.network,
        hidden_sizes=config.hidden_sizes,
        activation=config.activation,
        conv_layers=conv_layers(config) if config.network != "mlp" else (),
        core=config.core,
        core_size=config.core_size,
    )


# ---------------------------------------------------------------------------------------------
# Training state. Every scan carry is a named structure.
# ---------------------------------------------------------------------------------------------


class EnvCarry(NamedTuple):
    state: Any  # batched env state [N, ...]
    obs: jax.Array  # [N, *obs_shape], raw (unnormalized)
    ep_return: jax.Array  # [N] undiscounted raw return of the running episode
    ep_length: jax.Array  # [N] int32
    hidden: Any  # the core's state per environment (leaves [N, H]; () without a core)


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    env: EnvCarry
    norm: Normalizer
    kl_beta: jax.Array  # current KL penalty coefficient (adapted by kl_adaptive)
    lr_scale: jax.Array  # step-size multiplier (adapted by adaptive_lr, else 1)
    key: jax.Array
    update: jax.Array  # int32 number of completed updates


class Transition(NamedTuple):
    """One rollout step for all environments; the rollout stacks these to [T, N, ...]."""

    obs: jax.Array  # normalized observation the policy saw
    action: jax.Array
    log_prob: jax.Array
    dist: Dist  # the acting policy's distribution, for the exact KL of the penalty objectives
    value: jax.Array
    reward: jax.Array  # scaled reward used for learning
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array  # normalized true next observation, to bootstrap from
    raw_reward: jax.Array
    ep_return: jax.Array  # return of the episode that ended here (meaningful where done)
    ep_length: jax.Array
    next_hidden: Any  # the core's state after this step, before an episode-end reset: the
    # state the true next observation is seen from (the bootstrap); () without a core
    valid: Any = None  # 1.0 for a real step, 0.0 for an auto-reset placeholder (Step.valid)
    episode_end: Any = None  # where the game ended, if the env tells it apart from done
    action_mask: Any = None  # bool [..., A]: the legal actions at obs (Env.action_mask)


# ---------------------------------------------------------------------------------------------
# Rollout: T steps of N auto-resetting environments.
# ---------------------------------------------------------------------------------------------


def rollout(
    config: Config,
    env: Env,
    network: ActorCritic,
    params: Any,
    carry: EnvCarry,
    norm: Normalizer,
    key: jax.Array,
    hparams: HParams,
) -> tuple[EnvCarry, Normalizer, Transition]:
    """Collect config.num_steps steps; returns the stacked Transition [T, N, ...]."""
    use_obs_norm, use_rew_norm = resolve_normalization(config, env)
    low = None if env.discrete else jnp.asarray(env.action_low)
    high = None if env.discrete else jnp.asarray(env.action_high)

    def step(c: tuple[EnvCarry, Normalizer], step_key: jax.Array):
        carry, norm = c
        act_key, env_key = jax.random.split(step_key)
        obs_stat = norm.obs.update(carry.obs) if use_obs_norm else norm.obs
        obs = normalize_obs(obs_stat, carry.obs) if use_obs_norm else carry.obs
        dist, value, hidden = network.apply(params, obs, carry.hidden)
        mask = legal_actions(env, carry.state)
        dist = mask_policy(dist, mask)
        action = dist_sample(env.discrete, dist, act_key)
        # The Gaussian sample is kept unclipped for the log-prob; only the env sees the clip.
        env_action = action if env.discrete else jnp.clip(action, low, high)
        out = step_envs(env, jax.random.split(env_key, config.num_envs), carry.state, env_action)
        done = out.terminated | out.truncated
        ep_return, ep_length = count_episode_step(carry, out)
        if use_rew_norm:
            reward, ret_stat, ret_acc = scale_reward(norm, out.reward, done, hparams.gamma)
        else:
            reward, ret_stat, ret_acc = out.reward, norm.ret, norm.ret_acc
        final_obs = normalize_obs(obs_stat, out.final_obs) if use_obs_norm else out.final_obs
        transition = Transition(
            obs=obs,
            action=action,
            log_prob=dist_log_prob(env.discrete, dist, action),
            dist=dist,
            value=value,
            reward=reward,
            terminated=out.terminated,
            truncated=out.truncated,
            final_obs=final_obs,
            raw_reward=out.reward,
            ep_return=ep_return,
            ep_length=ep_length,
            next_hidden=hidden,
            valid=out.valid,
            episode_end=out.episode_end,
            action_mask=mask,
        )
        new_carry = next_env_carry(out, ep_return, ep_length, hidden)
        return (new_carry, Normalizer(obs_stat, ret_stat, ret_acc)), transition

    keys = jax.random.split(key, config.num_steps)
    (carry, norm), traj = jax.lax.scan(step, (carry, norm), keys)
    return carry, norm, traj


def count_episode_step(carry: EnvCarry, out: Step) -> tuple[jax.Array, jax.Array]:
    """The running episodes' raw score and length [N] after this step, counting real steps
    only (Step.valid) and the game's score (Step.score), not the reward learning sees."""
    score = out.reward if out.score is None else out.score
    if out.valid is None:
        return carry.ep_return + score, carry.ep_length + 1
    return carry.ep_return + score * out.valid, carry.ep_length + out.valid.astype(jnp.int32)


def next_env_carry(out: Step, ep_return: jax.Array, ep_length: jax.Array, hidden: Any) -> EnvCarry:
    """The carry into the next step: the episode statistics restart where the game ended, the
    core's memory where any episode (a lost life too) did."""
    done = out.terminated | out.truncated
    ended = done if out.episode_end is None else out.episode_end
    return EnvCarry(
        state=out.state,
        obs=out.obs,
        ep_return=jnp.where(ended, 0.0, ep_return),
        ep_length=jnp.where(ended, 0, ep_length),
        hidden=reset_hidden(hidden, done),
    )


# ---------------------------------------------------------------------------------------------
# Generalized advantage estimation (Schulman et al. 2016; PPO paper eq. 11-12).
# ---------------------------------------------------------------------------------------------


def compute_gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: jax.Array | float,
    gae_lambda: jax.Array | float,
    valid: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Truncated GAE over a rollout, all inputs [T, B].

    next_values[t] is V of the true next state of step t (the observation before any auto-reset).
      delta_t = r_t + gamma * (1 - terminated_t) * next_values[t] - values[t]
      A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1},  done = terminated | truncated
    A terminated step bootstraps from zero; a truncated one from the value of its final
    observation, and in both cases the recursion stops, because step t+1 starts a new episode.
    The last step of the rollout bootstraps from next_values[T-1] (the cut of truncated GAE).
    Returns (advantages, returns = advantages + values), both [T, B].
    `valid` (Step.valid) marks auto-reset placeholder steps with 0: their advantage is 0 (and
    the losses leave them out); nothing leaks from them into real steps, since the step before
    one always ended its episode (done), which stops the recursion.
    """
    term = terminated.astype(values.dtype)
    done = jnp.logical_or(terminated, truncated).astype(values.dtype)
    deltas = rewards + gamma * (1.0 - term) * next_values - values

    def back(adv_next: jax.Array, x: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        delta, d = x
        adv = delta + gamma * gae_lambda * (1.0 - d) * adv_next
        return adv, adv

    _, advantages = jax.lax.scan(back, jnp.zeros_like(values[0]), (deltas, done), reverse=True)
    if valid is not None:
        advantages = advantages * valid
    return advantages, advantages + values


def masked_mean(x: jax.Array, weight: jax.Array | None = None) -> jax.Array:
    """Mean of x; with a weight (Step.valid: 0 on placeholder steps), over the real steps."""
    if weight is None:
        return jnp.mean(x)
    weight = jnp.broadcast_to(weight, x.shape)
    return jnp.sum(x * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def masked_var(x: jax.Array, weight: jax.Array | None = None) -> jax.Array:
    if weight is None:
        return jnp.var(x)
    return masked_mean((x - masked_mean(x, weight)) ** 2, weight)


def standardize(adv: jax.Array, weight: jax.Array | None = None) -> jax.Array:
    """Advantage normalization, (A - mean) / (std + 1e-8), over the real steps."""
    if weight is None:
        return (adv - adv.mean()) / (adv.std() + 1e-8)
    mean = masked_mean(adv, weight)
    return (adv - mean) / (jnp.sqrt(masked_mean((adv - mean) ** 2, weight)) + 1e-8)


# ---------------------------------------------------------------------------------------------
# Losses (PPO paper, section 3-5).
# ---------------------------------------------------------------------------------------------


def policy_loss(
    objective: str,
    log_prob: jax.Array,
    old_log_prob: jax.Array,
    advantages: jax.Array,
    kl: jax.Array,
    clip_coef: jax.Array | float,
    kl_beta: jax.Array | float,
    weight: jax.Array | None = None,
) -> jax.Array:
    """Negative surrogate objective to minimize, averaged over a minibatch [B] (over its real
    steps, given Step.valid as `weight`).

    ratio r = pi(a|s) / pi_old(a|s).
      clip:        -E[min(r A, clip(r, 1-eps, 1+eps) A)]          (paper eq. 7)
      none:        -E[r A]                                         (paper eq. 6)
      kl_fixed /
      kl_adaptive: -E[r A - beta KL[pi_old(.|s), pi(.|s)]]          (paper eq. 8)
    `kl` is the per-sample exact KL [B] (used only by the penalty objectives).
    """
    ratio = jnp.exp(log_prob - old_log_prob)
    if objective == "clip":
        surrogate = jnp.minimum(
            ratio * advantages, jnp.clip(ratio, 1.0 - clip_coef, 1.0 + clip_coef) * advantages
        )
    elif objective == "none":
        surrogate = ratio * advantages
    elif objective in ("kl_fixed", "kl_adaptive"):
        surrogate = ratio * advantages - kl_beta * kl
    else:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return -masked_mean(surrogate, weight)


def value_loss(
    values: jax.Array,
    old_values: jax.Array,
    returns: jax.Array,
    clip_coef: jax.Array | float,
    clip: bool,
    weight: jax.Array | None = None,
) -> jax.Array:
    """0.5 E[(V - V_targ)^2]; with clip, the max of the plain and the clipped error
    (V_clip = V_old + clip(V - V_old, -eps, eps)), as in the PPO reference implementation."""
    err = (values - returns) ** 2
    if clip:
        clipped = old_values + jnp.clip(values - old_values, -clip_coef, clip_coef)
        err = jnp.maximum(err, (clipped - returns) ** 2)
    return 0.5 * masked_mean(err, weight)


class Batch(NamedTuple):
    """Update data: fields [B] (shuffled steps), or for a recurrent core [L, S] sequences with
    `done` [L, S] and `hidden`, the core's state before each sequence's first step."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    dist: Dist
    value: jax.Array
    advantages: jax.Array
    returns: jax.Array
    done: jax.Array | None = None
    hidden: Any = None
    valid: jax.Array | None = None  # Step.valid (None: every step is real)
    action_mask: jax.Array | None = None  # legal actions (Env.action_mask; None: all legal)


def update_batch(
    config: Config, traj: Transition, advantages: jax.Array, returns: jax.Array, hidden: Any
) -> Batch:
    """The learning data of one rollout (fields [T, N, ...]): without a core, the T * N steps
    flattened to [B] (the epochs shuffle steps); with one, sequences with their episode ends
    and the core's state before each (chunk_sequences; whole [T, N] sequences from `hidden`,
    the state the rollout started from, unless seq_len is shorter)."""
    data = Batch(
        traj.obs, traj.action, traj.log_prob, traj.dist, traj.value, advantages, returns,
        valid=traj.valid, action_mask=traj.action_mask,
    )  # fmt: skip
    if config.core == "none":
        return jax.tree.map(lambda x: x.reshape((config.batch_size,) + x.shape[2:]), data)
    data = data._replace(done=traj.terminated | traj.truncated, hidden=hidden)
    if config.sequence_length == config.num_steps:
        return data
    return chunk_sequences(data, traj.next_hidden, config.sequence_length)


def batch_outputs(network: ActorCritic, params: Any, batch: Batch) -> tuple[Dist, jax.Array]:
    """(Dist, value) of the network on a Batch's observations: all at once for steps, by
    replay from the stored hidden state for sequences; the policy restricted to the legal
    actions the rollout saw (every objective, its entropy and KL read the policy here)."""
    if batch.hidden is None:
        dist, value, _ = network.apply(params, batch.obs)
    else:
        dist, value = replay(network, params, batch.obs, batch.done, batch.hidden)
    return mask_policy(dist, batch.action_mask), value


def batch_policy(network: ActorCritic, params: Any, batch: Batch) -> Dist:
    """batch_outputs' policy alone (a replay runs both halves)."""
    if batch.hidden is None:
        dist = network.apply(params, batch.obs, method=ActorCritic.policy)[0]
        return mask_policy(dist, batch.action_mask)
    return batch_outputs(network, params, batch)[0]


def batch_value(network: ActorCritic, params: Any, batch: Batch) -> jax.Array:
    """batch_outputs' value alone (a replay runs both halves)."""
    if batch.hidden is None:
        return network.apply(params, batch.obs, method=ActorCritic.value)[0]
    return batch_outputs(network, params, batch)[1]


def ppo_loss(
    params: Any,
    network: ActorCritic,
    config: Config,
    discrete: bool,
    batch: Batch,
    hparams: HParams,
    kl_beta: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L = policy_loss + vf_coef * value_loss - ent_coef * entropy, on a minibatch ([B] steps
    or [T, B] sequences)."""
    dist, value = batch_outputs(network, params, batch)
    log_prob = dist_log_prob(discrete, dist, batch.action)
    adv, w = batch.advantages, batch.valid
    if config.norm_adv:
        adv = standardize(adv, w)
    kl = dist_kl(discrete, batch.dist, dist) if config.objective.startswith("kl") else 0.0
    pg = policy_loss(
        config.objective, log_prob, batch.log_prob, adv, kl, hparams.clip_coef, kl_beta, w
    )
    vf = value_loss(value, batch.value, batch.returns, hparams.clip_coef, config.clip_vloss, w)
    entropy = masked_mean(dist_entropy(discrete, dist), w)
    loss = pg + hparams.vf_coef * vf - hparams.ent_coef * entropy
    log_ratio = log_prob - batch.log_prob
    ratio = jnp.exp(log_ratio)
    clipped = (jnp.abs(ratio - 1.0) > hparams.clip_coef).astype(jnp.float32)
    stats = {
        "policy_loss": pg,
        "value_loss": vf,
        "entropy": entropy,
        # k3 estimator of KL[pi_old, pi] (Schulman, "Approximating KL divergence").
        "approx_kl": masked_mean((ratio - 1.0) - log_ratio, w),
        "clip_fraction": masked_mean(clipped, w),
    }
    return loss, stats


# ---------------------------------------------------------------------------------------------
# Optimizer: global-norm clipping then Adam (or RMSProp), with a linear LR schedule over
# gradient steps.
# ---------------------------------------------------------------------------------------------


def make_optimizer(config: Config, hparams: HParams) -> optax.GradientTransformation:
    steps_per_update = config.update_epochs * config.num_minibatches

    def schedule(count: jax.Array) -> jax.Array:
        if not config.anneal_lr:
            return jnp.asarray(hparams.learning_rate, jnp.float32)
        return hparams.learning_rate * anneal_fraction(config, count // steps_per_update)

    if config.optimizer == "rmsprop":
        # Mnih et al. 2016's RMSProp: g = decay g + (1 - decay) grad^2, step lr grad /
        # sqrt(g + eps), no momentum (their eps was 0.1; 1e-5 is OpenAI baselines' A2C default).
        step = optax.rmsprop(
            learning_rate=schedule, decay=hparams.rmsprop_decay, eps=hparams.rmsprop_eps
        )
    else:
        step = optax.adam(learning_rate=schedule, eps=1e-5)
    return optax.chain(optax.clip_by_global_norm(hparams.max_grad_norm), step)


def anneal_fraction(config: Config, update: jax.Array) -> jax.Array:
    """The paper's alpha (Table 5): 1 at the first update, falling linearly to 1/num_updates."""
    return 1.0 - update / config.num_updates


def current_lr(config: Config, hparams: HParams, update: jax.Array) -> jax.Array:
    if not config.anneal_lr:
        return jnp.asarray(hparams.learning_rate, jnp.float32)
    return hparams.learning_rate * anneal_fraction(config, update)


def with_log_std(params: Any, log_std: jax.Array) -> Any:
    """params (or a gradient of them) with the policy's log-std [A] replaced."""
    inner = {**params["params"], "log_std": log_std}
    return {**params, "params": inner}


def scheduled_log_std(config: Config, params: Any, update: jax.Array) -> Any:
    """With Config.log_std_schedule (START, END), params whose log-std is START + (END - START)
    * update / (num_updates - 1) for every action dimension (END at the last update); otherwise
    params as they are."""
    if not config.log_std_schedule:
        return params
    start, end = config.log_std_schedule
    value = start + (end - start) * update / max(config.num_updates - 1, 1)
    log_std = params["params"]["log_std"]
    return with_log_std(params, jnp.full_like(log_std, value))


def current_clip(config: Config, hparams: HParams, update: jax.Array) -> jax.Array:
    """Clip range epsilon * alpha with anneal_clip (also the value-clip range), else epsilon."""
    if not config.anneal_clip:
        return jnp.asarray(hparams.clip_coef, jnp.float32)
    return hparams.clip_coef * anneal_fraction(config, update)


# ---------------------------------------------------------------------------------------------
# The update: rollout -> bootstrap -> advantages -> epochs of minibatch steps -> metrics. An
# extension changes it only through the three Hooks, chosen once from the config.
# ---------------------------------------------------------------------------------------------


METRIC_NAMES = (
    "episode_return",
    "episode_length",
    "episodes",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "explained_variance",
    "learning_rate",
    "clip_coef",
    "kl_beta",
    "kl",
    "finite",
)


class Hooks(NamedTuple):
    """Where an update differs between objectives and cores; choose_hooks picks each once.

    minibatches(batch, perm, M) -> [M, ...]: PPO shuffles steps (step_minibatches); a recurrent
      core shuffles sequences (sequence_minibatches). `shuffle_size` is what perm permutes: B
      steps, or the rollout's sequences (N whole ones, or N * T / seq_len chunks).
    policy_step(params, network, discrete, batch, hparams, config) -> (params, stats): a policy
      step on the whole batch before the epochs; PPO's does nothing, TRPO's is its natural step.
    loss(params, network, config, discrete, minibatch, hparams, kl_beta) -> (loss, stats): what
      the epochs' gradient steps minimize: ppo_loss, or TRPO's value_fit_loss.
    after_epochs(parts, params, batch, stats, kl_beta, lr_scale, hparams) -> (kl, kl_beta,
      lr_scale): the KL reported for the update and the coefficients the next update uses.
    """

    shuffle_size: int
    minibatches: Callable[[Batch, jax.Array, int], Batch]
    policy_step: Callable[..., tuple[Any, dict[str, jax.Array]]]
    loss: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
    after_epochs: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]


def choose_hooks(config: Config) -> Hooks:
    """PPO's hooks, or an extension's (the sections after make_train) where the config asks."""
    if config.core == "none":
        shuffle_size, minibatches = config.batch_size, step_minibatches
    else:
        shuffle_size, minibatches = config.num_sequences, sequence_minibatches
    if config.objective == "trpo":
        policy_step, loss = trpo_policy_step, value_fit_loss
    else:
        policy_step, loss = no_policy_step, ppo_loss
    adapts = config.objective in ("kl_adaptive", "kl_fixed") or config.adaptive_lr
    after_epochs = measure_kl_and_adapt if adapts else keep_coefficients
    return Hooks(shuffle_size, minibatches, policy_step, loss, after_epochs)


def step_minibatches(batch: Batch, perm: jax.Array, num_minibatches: int) -> Batch:
    """A Batch of [B] steps in the order of perm [B], cut into minibatches: [M, B / M, ...]."""
    return jax.tree.map(lambda x: x[perm].reshape((num_minibatches, -1) + x.shape[1:]), batch)


def no_policy_step(
    params: Any,
    network: ActorCritic,
    discrete: bool,
    batch: Batch,
    hparams: HParams,
    config: Config,
) -> tuple[Any, dict[str, jax.Array]]:
    """PPO's policy learns inside the epochs, with the value: nothing happens before them."""
    return params, {}


def keep_coefficients(
    parts: Parts,
    params: Any,
    batch: Batch,
    stats: dict[str, jax.Array],
    kl_beta: jax.Array,
    lr_scale: jax.Array,
    hparams: HParams,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """clip, none and trpo adapt nothing after the epochs; the update's KL is stats' approx_kl
    (the epochs' mean k3 estimate, or TRPO's exact KL of its policy step)."""
    return stats["approx_kl"], kl_beta, lr_scale


class Parts(NamedTuple):
    """What every update reads besides its state and hyperparameters: fixed for a trainer."""

    config: Config
    env: Env
    network: ActorCritic
    hooks: Hooks


def init_state(parts: Parts, key: jax.Array, hparams: HParams) -> TrainState:
    """A fresh TrainState: orthogonal network, optimizer state, N reset envs, empty statistics."""
    config, env, network, _ = parts
    net_key, env_key, run_key = jax.random.split(key, 3)
    params = network.init(
        net_key, jnp.zeros((1, *env.obs_shape), jnp.float32), initial_hidden(config, (1,))
    )
    opt_state = make_optimizer(config, hparams).init(params)
    obs, env_state = jax.vmap(env.reset)(jax.random.split(env_key, config.num_envs))
    carry = EnvCarry(
        state=env_state,
        obs=obs,
        ep_return=jnp.zeros(config.num_envs, jnp.float32),
        ep_length=jnp.zeros(config.num_envs, jnp.int32),
        hidden=initial_hidden(config, (config.num_envs,)),
    )
    norm = Normalizer(
        obs=RunningStat.create(env.obs_shape),
        ret=RunningStat.create(()),
        ret_acc=jnp.zeros(config.num_envs, jnp.float32),
    )
    return TrainState(
        params=params,
        opt_state=opt_state,
        env=carry,
        norm=norm,
        kl_beta=jnp.asarray(hparams.kl_beta, jnp.float32),
        lr_scale=jnp.ones((), jnp.float32),
        key=run_key,
        update=jnp.zeros((), jnp.int32),
    )


def bootstrap_values(network: ActorCritic, params: Any, traj: Transition) -> jax.Array:
    """V of every step's true next state [T, N], in one batched pass: V(obs_{t+1}) unless the
    episode ended at t, where it is V of the final observation (what a time limit bootstraps
    from), seen by a core from its state after step t, before the episode-end reset."""
    next_values, _ = network.apply(
        params, traj.final_obs, traj.next_hidden, method=ActorCritic.value
    )
    return next_values


def estimate_advantages(
    traj: Transition, next_values: jax.Array, hparams: HParams
) -> tuple[jax.Array, jax.Array]:
    """The rollout's (advantages, value targets), both [T, N]: GAE (PPO paper eq. 11-12)."""
    return compute_gae(
        traj.reward,
        traj.value,
        next_values,
        traj.terminated,
        traj.truncated,
        hparams.gamma,
        hparams.gae_lambda,
        traj.valid,
    )


def random_permutations(key: jax.Array, count: int, n: int) -> jax.Array:
    """`count` independent uniformly random permutations of range(n), as [count, n] int32.

    Each round sorts one uint32 array whose high bits are random and whose low bits hold the
    position, then reads the positions back. On XLA's CPU backend such a one-array sort costs a
    quarter of the key-value sort jax.random.permutation runs (BENCHMARKS.md). A tie in the
    random bits keeps the original order, so, as jax.random.permutation does, it runs enough
    rounds, each reordering the last, that rounds * random bits >= 3 log2(n): at n = 512, two
    rounds of 23 random bits, half the cost of jax.random.permutation's one 32-bit round.
    """
    pos_bits = max(1, (n - 1).bit_length())
    free_bits = 32 - pos_bits
    rounds = max(1, math.ceil(3 * math.log2(max(n, 2)) / free_bits))
    position = jnp.arange(n, dtype=jnp.uint32)
    high = jnp.uint32((0xFFFFFFFF << pos_bits) & 0xFFFFFFFF)
    low = jnp.uint32((1 << pos_bits) - 1)
    perms = None
    for round_key in jax.random.split(key, rounds):
        bits = jax.random.bits(round_key, (count, n), jnp.uint32)
        order = (jax.lax.sort((bits & high) | position) & low).astype(jnp.int32)
        perms = order if perms is None else jnp.take_along_axis(perms, order, axis=1)
    return perms


def learn(
    parts: Parts,
    params: Any,
    opt_state: Any,
    data: Batch,
    hparams: HParams,
    kl_beta: jax.Array,
    lr_scale: jax.Array,
    key: jax.Array,
) -> tuple[Any, Any, dict[str, jax.Array]]:
    """K = update_epochs epochs of num_minibatches gradient steps each on one rollout's Batch
    (PPO paper, Algorithm 1). Returns (params, opt_state, stats averaged over every step)."""
    config, env, network, hooks = parts
    optimizer = make_optimizer(config, hparams)
    grad_fn = jax.grad(hooks.loss, has_aux=True)

    def minibatch_step(c: tuple[Any, Any], mb: Batch):
        params, opt_state = c
        grads, stats = grad_fn(params, network, config, env.discrete, mb, hparams, kl_beta)
        if config.log_std_schedule:  # scheduled, not learned: Adam sees a zero gradient
            grads = with_log_std(grads, jnp.zeros_like(grads["params"]["log_std"]))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        if config.adaptive_lr:
            updates = jax.tree.map(lambda u: u * lr_scale, updates)
        return (optax.apply_updates(params, updates), opt_state), stats

    def epoch(c: tuple[Any, Any], perm: jax.Array):
        return jax.lax.scan(
            minibatch_step, c, hooks.minibatches(data, perm, config.num_minibatches)
        )

    # Every epoch's shuffle drawn at once.
    perms = random_permutations(key, config.update_epochs, hooks.shuffle_size)
    (params, opt_state), stats = jax.lax.scan(epoch, (params, opt_state), perms)
    return params, opt_state, jax.tree.map(jnp.mean, stats)


def update(
    parts: Parts, state: TrainState, hparams: HParams
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One PPO iteration: collect T steps of N envs, estimate advantages, then K epochs of
    minibatch steps. Returns the next TrainState and this update's metrics (scalars)."""
    config, env, network, hooks = parts
    key, rollout_key, epoch_key = jax.random.split(state.key, 3)
    state = state._replace(params=scheduled_log_std(config, state.params, state.update))
    carry, norm, traj = rollout(
        config, env, network, state.params, state.env, state.norm, rollout_key, hparams
    )
    next_values = bootstrap_values(network, state.params, traj)
    advantages, returns = estimate_advantages(traj, next_values, hparams)
    data = update_batch(config, traj, advantages, returns, state.env.hidden)
    # The clip range in force for this update (annealed with the paper's alpha if asked).
    clip_hparams = hparams.replace(clip_coef=current_clip(config, hparams, state.update))
    params, policy_stats = hooks.policy_step(
        state.params, network, env.discrete, data, hparams, config
    )
    params, opt_state, stats = learn(
        parts, params, state.opt_state, data, clip_hparams, state.kl_beta, state.lr_scale, epoch_key
    )
    stats = {**stats, **policy_stats}
    kl, kl_beta, lr_scale = hooks.after_epochs(
        parts, params, data, stats, state.kl_beta, state.lr_scale, hparams
    )
    new_state = TrainState(
        params=params,
        opt_state=opt_state,
        env=carry,
        norm=norm,
        kl_beta=kl_beta,
        lr_scale=lr_scale,
        key=key,
        update=state.update + 1,
    )
    metrics = update_metrics(
        config, hparams, state, new_state, traj, returns, stats, kl, clip_hparams.clip_coef
    )
    return new_state, metrics


def episode_metrics(traj: Transition) -> dict[str, jax.Array]:
    """Mean return and length of the episodes that ended in this rollout (NaN if none did),
    and their count. An env that tells the game's end apart (Step.episode_end) counts games,
    not lost lives."""
    done = traj.terminated | traj.truncated
    if traj.episode_end is not None:
        done = traj.episode_end
    episodes = done.sum()
    denom = jnp.maximum(episodes, 1)
    nan = jnp.asarray(jnp.nan, jnp.float32)
    return {
        "episode_return": jnp.where(
            episodes > 0, jnp.sum(jnp.where(done, traj.ep_return, 0.0)) / denom, nan
        ),
        "episode_length": jnp.where(
            episodes > 0, jnp.sum(jnp.where(done, traj.ep_length, 0)) / denom, nan
        ),
        "episodes": episodes.astype(jnp.int32),
    }


def update_metrics(
    config: Config,
    hparams: HParams,
    state: TrainState,
    new_state: TrainState,
    traj: Transition,
    returns: jax.Array,
    stats: dict[str, jax.Array],
    kl: jax.Array,
    clip_coef: jax.Array,
) -> dict[str, jax.Array]:
    """The METRIC_NAMES of one update, each a scalar (reduced here, inside the scan)."""
    resid_var = masked_var(returns - traj.value, traj.valid)
    returns_var = masked_var(returns, traj.valid)
    checked = (new_state.params, stats, new_state.kl_beta)
    return {
        **episode_metrics(traj),
        **stats,
        "explained_variance": 1.0 - resid_var / (returns_var + 1e-8),
        "learning_rate": current_lr(config, hparams, state.update) * state.lr_scale,
        "clip_coef": clip_coef,
        "kl_beta": state.kl_beta,
        "kl": kl,
        # 1 while every parameter and loss of this run is finite; a diverged run shows 0.
        "finite": jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(checked)])
        ).astype(jnp.int32),
    }


# ---------------------------------------------------------------------------------------------
# make_train: the update scanned num_updates times from a fresh state; the final score.
# ---------------------------------------------------------------------------------------------


class Trainer(NamedTuple):
    """The pieces of make_train, for drivers that run updates in chunks."""

    config: Config
    env: Env
    network: ActorCritic
    init: Callable[[jax.Array, HParams], TrainState]
    update: Callable[[TrainState, HParams], tuple[TrainState, dict[str, jax.Array]]]


def make_trainer(config: Config, env: Env | None = None) -> Trainer:
    """Build init(key, hparams) -> TrainState and update(state, hparams) -> (state, metrics)."""
    if env is None:
        if ":" in config.env:
            raise ValueError(
                f"Config.env={config.env!r} is not a gymnax environment; pass env= "
                "(for example purejaxppo.envs.make_env(config.env))"
            )
        env = GymnaxEnv(config.env)
    network = make_network(config, env)
    parts = Parts(config, env, network, choose_hooks(config))
    return Trainer(
        config=config,
        env=env,
        network=network,
        init=functools.partial(init_state, parts),
        update=functools.partial(update, parts),
    )


def make_train(
    config: Config, env: Env | None = None
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Return a pure train(key, hparams=None) -> (final TrainState, metrics [num_updates]).

    Each metric is one value per update (reduced inside the scan). jit it, and vmap it over keys
    (seeds) and over HParams batches (a population) as you like.
    """
    trainer = make_trainer(config, env)

    def train(
        key: jax.Array, hparams: HParams | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        hparams = HParams() if hparams is None else hparams
        state = trainer.init(key, hparams)
        return jax.lax.scan(
            lambda s, _: trainer.update(s, hparams), state, None, length=config.num_updates
        )

    return train


def episode_mean(returns: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Episode-weighted mean return over the given updates: `returns` (each update's mean
    return, NaN where none ended) and `counts` (episodes that ended in it), both [..., U] ->
    [...]; NaN where no episode ended. Computes in the inputs' dtype."""
    total = np.where(counts > 0, np.nan_to_num(returns) * counts, 0.0).sum(-1)
    n = counts.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


# The final score, four ways, each named by its window. The trainer's metrics keep one mean
# return and one episode count per update, so a window is whole updates unless it says otherwise.


def final_return(metrics: dict[str, Any], fraction: float = 0.05) -> np.ndarray:
    """The command line's final score: the episode-weighted mean return of the last `fraction`
    of updates (at least one), in float64. Metrics [..., num_updates] -> [...]; NaN where no
    episode ended in the window."""
    returns = np.asarray(metrics["episode_return"], np.float64)
    counts = np.asarray(metrics["episodes"], np.float64)
    window = max(1, int(math.ceil(fraction * returns.shape[-1])))
    return episode_mean(returns[..., -window:], counts[..., -window:])


def final_window_return(
    metrics: dict[str, np.ndarray], fraction: float = 0.05
) -> tuple[np.ndarray, int]:
    """final_return's window of the last `fraction` of updates, widened one update at a time
    until every run has an episode in it (Freeway's 2500-step episodes all end together, so a
    short window can hold none); one window for all runs. Metrics [..., U] (a run folder's
    [setting, seed, update]) -> ([...] scores, the window in updates)."""
    r, c = metrics["episode_return"], metrics["episodes"]
    window = max(1, int(np.ceil(fraction * r.shape[-1])))
    while window < r.shape[-1] and np.any(c[..., -window:].sum(-1) == 0):
        window += 1
    return episode_mean(r[..., -window:], c[..., -window:]), window


def last_episodes_return(
    returns: np.ndarray, counts: np.ndarray, n: int = 100
) -> tuple[float, int, int]:
    """The PPO paper's score of a run (section 6.1): the mean return of its last n episodes,
    from one run's per-update returns and counts [U]. Walks back from the last update until n
    episodes are covered; the oldest update counts in part (its episodes all carry its mean). A
    run with fewer than n episodes uses all it has (NaN if none). Returns (score, episodes used,
    updates the window reaches back)."""
    total, covered, reached = 0.0, 0, 0
    for u in range(len(counts) - 1, -1, -1):
        if covered >= n:
            break
        c = int(counts[u])
        reached += 1
        if c <= 0:
            continue
        take = min(c, n - covered)
        total += take * float(returns[u])
        covered += take
    return (total / covered if covered else math.nan), covered, reached


def last_updates_return(returns: np.ndarray, counts: np.ndarray, n: int = 100) -> np.ndarray:
    """last_episodes_return's window in whole updates: per run, the episode-weighted mean of
    the fewest last updates that hold at least n episodes (all updates if the run has fewer).
    returns, counts [runs, U] -> [runs]."""
    out = []
    for r, c in zip(returns, counts, strict=True):
        held = np.cumsum(c[::-1])
        k = int(np.searchsorted(held, n) + 1) if held[-1] >= n else len(c)
        out.append(float(episode_mean(r[None, -k:], c[None, -k:])[0]))
    return np.asarray(out)


# ---------------------------------------------------------------------------------------------
# Evaluation with the deterministic policy (argmax / mean action).
# ---------------------------------------------------------------------------------------------


def deterministic_action(
    network: ActorCritic,
    env: Env,
    params: Any,
    obs_stat: RunningStat | None,
    obs: jax.Array,
    hidden: tuple[jax.Array, ...],
    mask: jax.Array | None = None,
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """The trained policy's deterministic step: obs [..., *obs_shape], normalized with the frozen
    training statistics obs_stat (None: the run did not normalize), -> (the argmax / mean action
    clipped to the action bounds [...] or [..., D], the core's next hidden state). `mask`
    [..., A]: the legal actions (Env.action_mask), the argmax taken among them."""
    o = obs if obs_stat is None else normalize_obs(obs_stat, obs)
    dist, hidden = network.apply(params, o, hidden, method=ActorCritic.policy)
    action = dist_mode(env.discrete, mask_policy(dist, mask))
    if not env.discrete:
        action = jnp.clip(action, env.action_low, env.action_high)
    return action, hidden


def evaluate(
    config: Config,
    params: Any,
    norm: Normalizer,
    key: jax.Array,
    num_episodes: int = 10,
    env: Env | None = None,
) -> jax.Array:
    """Run num_episodes episodes in parallel with the mean/argmax action; returns [num_episodes]
    undiscounted returns. Observations are normalized with the trained statistics, frozen. The
    loop stops once every episode has ended (at most env.max_episode_steps steps): a game with a
    long time limit costs what its episodes last."""
    env = GymnaxEnv(config.env) if env is None else env
    network = make_network(config, env)
    use_obs_norm, _ = resolve_normalization(config, env)
    obs_stat = norm.obs if use_obs_norm else None

    def step(c, step_key):
        state, obs, hidden, total, alive = c
        mask = legal_actions(env, state)
        action, hidden = deterministic_action(network, env, params, obs_stat, obs, hidden, mask)
        out = step_envs(env, jax.random.split(step_key, num_episodes), state, action)
        # The game's raw score until the game ends (not a lost life; Step.score, episode_end).
        total = total + jnp.where(alive, out.reward if out.score is None else out.score, 0.0)
        ended = out.terminated | out.truncated if out.episode_end is None else out.episode_end
        alive = alive & ~ended
        return (out.state, out.obs, hidden, total, alive), None

    reset_key, run_key = jax.random.split(key)
    obs, state = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes))
    hidden = initial_hidden(config, (num_episodes,))  # carried through the episode
    init = (state, obs, hidden, jnp.zeros(num_episodes), jnp.ones(num_episodes, jnp.bool_))
    keys = jax.random.split(run_key, env.max_episode_steps)

    def more(c):
        i, (*_, alive) = c
        return (i < env.max_episode_steps) & alive.any()

    def body(c):
        i, carry = c
        return i + 1, step(carry, keys[i])[0]

    _, (_, _, _, total, _) = jax.lax.while_loop(more, body, (jnp.int32(0), init))
    return total


# ---------------------------------------------------------------------------------------------
# Extension: convolutional torsos (the PPO paper's Atari policy, DQN's, MinAtar's). Adds
# network=cnn, nature_cnn, minatar_cnn; hooks in at ActorCritic.setup (one torso shared by the
# policy and value heads) and make_network (check_obs_shape).
# ---------------------------------------------------------------------------------------------


# Convolutional torsos: (features, kernel, stride) per VALID-padded conv layer, then one dense
# layer; ReLU throughout. minatar_cnn's features come from Config.conv_channels.
CONV_TORSOS: dict[str, tuple[tuple[tuple[int | None, int, int], ...], int]] = {
    # Mnih et al. 2016 (A3C), the PPO paper's Atari policy: 84x84 -> 20x20x16 -> 9x9x32 -> 256.
    "cnn": (((16, 8, 4), (32, 4, 2)), 256),
    # Mnih et al. 2015 (DQN, "Nature"): 84x84 -> 20x20x32 -> 9x9x64 -> 7x7x64 -> 512.
    "nature_cnn": (((32, 8, 4), (64, 4, 2), (64, 3, 1)), 512),
    # Young & Tian 2019 (MinAtar): 10x10 -> 8x8xC -> 128.
    "minatar_cnn": (((None, 3, 1),), 128),
}


def conv_layers(config: Config) -> tuple[tuple[int, int, int], ...]:
    layers, _ = CONV_TORSOS[config.network]
    return tuple((config.conv_channels if f is None else f, k, st) for f, k, st in layers)


def check_action_space(config: Config, env: Env) -> None:
    """A log-std schedule needs continuous actions; raises a ValueError naming the field."""
    if config.log_std_schedule and env.discrete:
        raise ValueError(
            f"Config.log_std_schedule applies to continuous actions; {config.env} has discrete ones"
        )


def check_obs_shape(config: Config, obs_shape: Sequence[int]) -> None:
    """Raise a ValueError naming Config.network if its torso cannot take these observations:
    conv torsos need [H, W, C] images large enough for every VALID conv layer."""
    if config.network == "mlp":
        return
    layers = conv_layers(config)
    need = 1
    for _, kernel, stride in reversed(layers):
        need = (need - 1) * stride + kernel  # smallest input that leaves `need` outputs
    if len(obs_shape) != 3:
        raise ValueError(
            f"Config.network={config.network!r} needs image observations [H, W, C]; "
            f"{config.env} gives shape {tuple(obs_shape)} (use network=mlp)"
        )
    if min(obs_shape[:2]) < need:
        raise ValueError(
            f"Config.network={config.network!r} needs images of at least {need}x{need} (conv "
            f"layers {', '.join(f'{k}x{k}/{st}' for _, k, st in layers)}); {config.env} gives "
            f"{'x'.join(map(str, obs_shape))} (minatar_cnn fits 10x10 grids)"
        )


def patch_indices(height: int, width: int, channels: int, kernel: int, stride: int) -> np.ndarray:
    """Flat indices [out_h, out_w, kernel * kernel * channels] of every VALID conv patch of an
    [height, width, channels] image, ordered (row, column, channel) like a [k, k, C, F] kernel."""
    out_h, out_w = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    r = np.arange(out_h)[:, None, None, None, None] * stride + np.arange(kernel)[:, None, None]
    c = np.arange(out_w)[None, :, None, None, None] * stride + np.arange(kernel)[:, None]
    flat = (r * width + c) * channels + np.arange(channels)
    return flat.reshape(out_h, out_w, kernel * kernel * channels)


class Conv(nn.Module):
    """A VALID, strided 2-D convolution on [..., H, W, C] as patches @ kernel.

    The same math as lax.conv_general_dilated, lowered as a gather of patches and a matmul:
    vmapped over seeds (one kernel per seed) lax's conv becomes a grouped convolution, which
    XLA's CPU backend ran ~20x slower than this (BENCHMARKS.md), while a batched matmul is fast
    on every backend. The kernel keeps the usual [k, k, C, F] layout."""

    features: int
    kernel: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h, w, c = x.shape[-3:]
        kernel = self.param(
            "kernel", nn.initializers.zeros, (self.kernel, self.kernel, c, self.features)
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        idx = patch_indices(h, w, c, self.kernel, self.stride)
        patches = x.reshape(x.shape[:-3] + (h * w * c,))[..., idx]
        return patches @ kernel.reshape(-1, self.features) + bias


class ConvTorso(nn.Module):
    """ReLU conv layers (VALID padding) on [..., H, W, C], flatten, one ReLU dense layer."""

    layers: Sequence[tuple[int, int, int]]
    dense: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs
        for i, (features, kernel, stride) in enumerate(self.layers):
            x = nn.relu(Conv(features, kernel, stride, name=f"conv_{i}")(x))
        x = x.reshape(x.shape[:-3] + (-1,))
        dense = nn.Dense(self.dense, kernel_init=nn.initializers.zeros, name="dense")
        return nn.relu(dense(x))


# ---------------------------------------------------------------------------------------------
# Extension: recurrent cores (core=gru, lstm). Adds a core between torso and heads with a hidden
# state carried per environment through the rollout (EnvCarry.hidden, reset where an episode
# ends); hooks in at ActorCritic.remember, at the minibatches hook (sequence_minibatches:
# sequences of seq_len steps, cut by update_batch) and at batch_outputs (replay from the
# stored state).
# ---------------------------------------------------------------------------------------------


class RecurrentWeights(nn.Module):
    """A core's recurrent kernel [H, G] and bias [G] (a Dense's parameters, not applied: the
    core multiplies them itself, inside scan_core's loop, where a flax module cannot run)."""

    features: int

    @nn.compact
    def __call__(self, width: int) -> tuple[jax.Array, jax.Array]:
        zeros = nn.initializers.zeros
        return self.param("kernel", zeros, (width, self.features)), self.param(
            "bias", zeros, (self.features,)
        )


class GRU(nn.Module):
    """A gated recurrent unit (Cho et al. 2014), state h [..., H], input x [..., F]:
      r = sigmoid(W_r x + U_r h + b_r),  z = sigmoid(W_z x + U_z h + b_z)
      n = tanh(W_n x + b_n + r * (U_n h + c_n)),  h' = (1 - z) n + z h
    The three gates' weights are one [F, 3H] (core_input) and one [H, 3H] (core_recurrent)
    matrix. The heads read h'."""

    size: int
    gates: ClassVar[int] = 3  # gate blocks of `size` in each weight matrix
    state_units: ClassVar[int] = 1  # the state's width in units of `size`

    def setup(self) -> None:
        self.core_input = nn.Dense(self.gates * self.size, kernel_init=nn.initializers.zeros)
        self.core_recurrent = RecurrentWeights(self.gates * self.size)

    @staticmethod
    def recurrent_input(state: jax.Array) -> jax.Array:
        return state

    @staticmethod
    def update(gx: jax.Array, gh: jax.Array, h: jax.Array) -> jax.Array:
        """The new state from the input's gates gx = W x + b and the state's gh = U h + c."""
        xr, xz, xn = jnp.split(gx, 3, axis=-1)
        hr, hz, hn = jnp.split(gh, 3, axis=-1)
        r, z = nn.sigmoid(xr + hr), nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        return (1.0 - z) * n + z * h

    @staticmethod
    def output(state: jax.Array) -> jax.Array:
        return state

    def __call__(self, state: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One step: (state [..., S], x [..., F]) -> (features for the heads, new state)."""
        gx = self.core_input(x)
        kernel, bias = self.core_recurrent(self.size)
        new = self.update(gx, self.recurrent_input(state) @ kernel + bias, state)
        return self.output(new), new

    def sequence(self, state: jax.Array, xs: jax.Array, done: jax.Array) -> jax.Array:
        """Every step of sequences: xs [T, B, F] from `state` [B, S], reset after each step
        that ended an episode (done [T, B]) -> the features for the heads [T, B, H]."""
        kernel, bias = self.core_recurrent(self.size)
        gx = self.core_input(xs)  # all T * B steps in one matmul, before the loop
        return self.output(scan_core(type(self), gx, state, done, kernel, bias))


class LSTM(GRU):
    """A long short-term memory cell (Hochreiter and Schmidhuber 1997, with a forget gate),
    state [c, h] [..., 2H], input x [..., F]:
      i, f, g, o = W x + b + U h (four [H] blocks)
      c' = sigmoid(f) c + sigmoid(i) tanh(g),  h' = sigmoid(o) tanh(c')
    core_input [F, 4H], core_recurrent [H, 4H], every bias starting at zero. The heads read h'."""

    gates: ClassVar[int] = 4
    state_units: ClassVar[int] = 2

    @staticmethod
    def recurrent_input(state: jax.Array) -> jax.Array:
        return state[..., state.shape[-1] // 2 :]

    @staticmethod
    def update(gx: jax.Array, gh: jax.Array, state: jax.Array) -> jax.Array:
        c = state[..., : state.shape[-1] // 2]
        i, f, g, o = jnp.split(gx + gh, 4, axis=-1)
        c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
        return jnp.concatenate([c, nn.sigmoid(o) * jnp.tanh(c)], axis=-1)

    @staticmethod
    def output(state: jax.Array) -> jax.Array:
        return state[..., state.shape[-1] // 2 :]


CORE_CELLS = {"gru": GRU, "lstm": LSTM}


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def scan_core(
    cell: type[GRU],
    gx: jax.Array,
    state: jax.Array,
    done: jax.Array,
    kernel: jax.Array,
    bias: jax.Array,
) -> jax.Array:
    """A core's states after every step of sequences [T, B, S]: `cell` the core's class (GRU,
    LSTM), gx [T, B, G] the input's gates of every step (computed before the loop, in one
    matmul over all T * B steps, so their gradient is one matmul after it), `state` [B, S]
    before step 0, the state reset to zeros after a step that ended an episode (done [T, B]).
    Only the recurrent matmul steps through time; the same values as stepping the cell (tested
    bit for bit). Its gradient (scan_core_backward) also sums the recurrent kernel's and bias's
    gradients in one matmul after the loop, where differentiating the scan would add one
    outer product to them at every step."""
    return scan_core_forward(cell, gx, state, done, kernel, bias)[0]


def scan_core_forward(cell, gx, state, done, kernel, bias):
    """(states [T, B, S], the recurrent gates gh = U h + c of every step [T, B, G])."""

    def step(s: jax.Array, x: tuple[jax.Array, jax.Array]):
        gx_t, d = x
        gh = cell.recurrent_input(s) @ kernel + bias
        new = cell.update(gx_t, gh, s)
        return jnp.where(d[..., None], 0.0, new), (new, gh)

    return jax.lax.scan(step, state, (gx, done))[1]


def scan_core_residuals(cell, gx, state, done, kernel, bias):
    states, gh = scan_core_forward(cell, gx, state, done, kernel, bias)
    # The state each step starts from: `state`, then the step before's, zeroed after an end.
    before = jnp.concatenate([state[None], jnp.where(done[:-1, ..., None], 0.0, states[:-1])])
    return states, (gx, gh, before, done, kernel)


def scan_core_backward(cell, residuals, d_states):
    """Back through time: per step only the cell's elementwise update and the state's share of
    the recurrent matmul (dgh U^T); the kernel's gradient sum_t h_t^T dgh_t and the bias's are
    one contraction over all steps after the loop."""
    gx, gh, before, done, kernel = residuals

    def step(d_carry: jax.Array, x):
        gx_t, gh_t, s, d, d_out = x
        d_new = d_out + jnp.where(d[..., None], 0.0, d_carry)  # the reset cuts the carry
        _, update_vjp = jax.vjp(cell.update, gx_t, gh_t, s)
        d_gx, d_gh, d_s = update_vjp(d_new)
        rin, rin_vjp = jax.vjp(cell.recurrent_input, s)
        return d_s + rin_vjp(d_gh @ kernel.T)[0], (d_gx, d_gh)

    zeros = jnp.zeros_like(before[0])
    xs = (gx, gh, before, done, d_states)
    d_state, (d_gx, d_gh) = jax.lax.scan(step, zeros, xs, reverse=True)
    rin = cell.recurrent_input(before)
    d_kernel = jnp.einsum("tbh,tbg->hg", rin, d_gh)
    return d_gx, d_state, None, d_kernel, d_gh.sum((0, 1))


scan_core.defvjp(scan_core_residuals, scan_core_backward)


def reset_hidden(hidden: Any, done: jax.Array) -> Any:
    """Zero each environment's hidden state where its episode ended: leaves [..., H], done [...]."""
    return jax.tree.map(lambda h: jnp.where(done[..., None], 0.0, h), hidden)


def initial_hidden(config: Config, batch_shape: Sequence[int] = ()) -> tuple[jax.Array, ...]:
    """The hidden state of fresh episodes: zeros [*batch_shape, core_size] per core (two for the
    mlp's separate actor and critic, one for a shared conv torso), () without a core."""
    if config.core == "none":
        return ()
    cores = 2 if config.network == "mlp" else 1
    width = config.core_size * CORE_CELLS[config.core].state_units
    return tuple(jnp.zeros((*batch_shape, width), jnp.float32) for _ in range(cores))


def replay(
    network: ActorCritic, params: Any, obs: jax.Array, done: jax.Array, hidden: Any
) -> tuple[Dist, jax.Array]:
    """A recurrent network over stored sequences: obs [T, B, *obs_shape], done [T, B] (step t
    ended an episode, so the state after it restarts at zeros), hidden the state before step 0
    (leaves [B, S]) -> (Dist with [T, B, A] leaves, value [T, B]). The torso, the core's input
    gates and the heads run on all T * B steps at once; the core steps through time exactly as
    the rollout did (scan_core)."""
    feats = network.apply(params, obs, method=ActorCritic.features)
    feats = network.apply(params, feats, hidden, done, method=ActorCritic.remember_sequence)
    return network.apply(params, feats, method=ActorCritic.heads)


def chunk_sequences(data: Batch, next_hidden: Any, length: int) -> Batch:
    """Whole [T, N] sequences cut into chunks of `length` steps: fields [T, N, ...] ->
    [length, T / length * N, ...] (chunk c of env n at column c * N + n), and `hidden` the state
    each chunk starts from, [T / length * N, S]: the rollout's starting state for the first
    chunk, then the state the rollout carried into the chunk's first step (next_hidden [T, N]
    after the step before it, reset where that step ended an episode). The replay starts each
    chunk exactly where the rollout was, so the first minibatch's ratio is still exactly 1."""
    steps, envs = data.done.shape
    chunks = steps // length

    def cut(x: jax.Array) -> jax.Array:
        x = x.reshape((chunks, length) + x.shape[1:])  # [C, L, N, ...]
        return jnp.moveaxis(x, 0, 1).reshape((length, chunks * envs) + x.shape[3:])

    before = jax.tree.map(lambda h: h[length - 1 : -1 : length], next_hidden)  # [C - 1, N, S]
    before = reset_hidden(before, data.done[length - 1 : -1 : length])
    starts = jax.tree.map(
        lambda h0, h: jnp.concatenate([h0[None], h]).reshape((chunks * envs,) + h.shape[2:]),
        data.hidden,
        before,
    )
    return jax.tree.map(cut, data._replace(hidden=None))._replace(hidden=starts)


def sequence_minibatches(batch: Batch, perm: jax.Array, num_minibatches: int) -> Batch:
    """A recurrent Batch cut into minibatches of sequences, in the order of perm [S]: fields
    [L, S, ...] -> [M, L, S / M, ...], hidden [S, H] -> [M, S / M, H]."""

    def cut(x: jax.Array) -> jax.Array:
        x = x[:, perm].reshape((x.shape[0], num_minibatches, -1) + x.shape[2:])
        return jnp.moveaxis(x, 1, 0)

    seqs = jax.tree.map(cut, batch._replace(hidden=None))
    hidden = jax.tree.map(
        lambda h: h[perm].reshape((num_minibatches, -1) + h.shape[1:]), batch.hidden
    )
    return seqs._replace(hidden=hidden)


def check_recurrent_config(config: Config) -> None:
    """A recurrent minibatch is a group of sequences of seq_len steps: seq_len divides the
    rollout, and M divides the number of sequences."""
    if not isinstance(config.seq_len, int) or isinstance(config.seq_len, bool):
        raise ValueError(f"Config.seq_len must be an integer, got {config.seq_len!r}")
    if (
        config.seq_len < 0
        or config.seq_len > config.num_steps
        or (config.seq_len and config.num_steps % config.seq_len)
    ):
        raise ValueError(
            f"Config.seq_len must be 0 (the whole rollout) or divide num_steps={config.num_steps}"
            f", got {config.seq_len}"
        )
    if config.core != "none" and config.num_sequences % config.num_minibatches:
        raise ValueError(
            f"Config.num_minibatches={config.num_minibatches} must divide the "
            f"{config.num_sequences} sequences of a rollout with core={config.core!r} (num_envs "
            f"{config.num_envs} x num_steps {config.num_steps} / seq_len "
            f"{config.sequence_length}: a recurrent minibatch is a group of sequences)"
        )


# ---------------------------------------------------------------------------------------------
# Extension: the PPO paper's other objectives and step rules. The KL penalties (section 4) and
# the unclipped surrogate are branches of policy_loss; A2C's RMSProp is make_optimizer's. This
# adds the coefficients that adapt after the epochs (the after_epochs hook): kl_adaptive's beta
# and vanilla PG's adaptive step size (adaptive_lr).
# ---------------------------------------------------------------------------------------------


def adapt_lr_scale(lr_scale: jax.Array, kl: jax.Array, kl_target: jax.Array | float) -> jax.Array:
    """Vanilla PG's adaptive step size: the step shrinks by 1.5 when the update moved the policy
    by more than twice the target KL and grows by 1.5 when it moved less than half of it."""
    lr_scale = jnp.where(kl > 2.0 * kl_target, lr_scale / 1.5, lr_scale)
    return jnp.where(kl < kl_target / 2.0, lr_scale * 1.5, lr_scale)


def adapt_kl_beta(kl_beta: jax.Array, kl: jax.Array, kl_target: jax.Array | float) -> jax.Array:
    """Adaptive KL penalty (paper section 4): halve beta when d < d_targ / 1.5, double it when
    d > 1.5 d_targ, otherwise keep it."""
    kl_beta = jnp.where(kl < kl_target / 1.5, kl_beta / 2.0, kl_beta)
    return jnp.where(kl > kl_target * 1.5, kl_beta * 2.0, kl_beta)


def measure_kl_and_adapt(
    parts: Parts,
    params: Any,
    batch: Batch,
    stats: dict[str, jax.Array],
    kl_beta: jax.Array,
    lr_scale: jax.Array,
    hparams: HParams,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The after_epochs hook of the KL penalties and of adaptive_lr: the exact mean KL[pi_old,
    pi] over the whole batch between the rollout's policy and the updated one, from which
    kl_adaptive sets the next beta (paper section 4) and adaptive_lr the next step size."""
    config, env, network, _ = parts
    new_dist = batch_policy(network, params, batch)
    kl = masked_mean(dist_kl(env.discrete, batch.dist, new_dist), batch.valid)
    if config.objective == "kl_adaptive":
        kl_beta = adapt_kl_beta(kl_beta, kl, hparams.kl_target)
    if config.adaptive_lr:
        lr_scale = adapt_lr_scale(lr_scale, kl, hparams.kl_target)
    return kl, kl_beta, lr_scale


# ---------------------------------------------------------------------------------------------
# Extension: TRPO (Schulman et al. 2015), the PPO paper's main baseline. Hooks in at the
# policy_step hook (a natural-gradient step under a KL constraint on the whole batch, before the
# epochs) and the loss hook (the epochs then fit the value alone).
# ---------------------------------------------------------------------------------------------


def conjugate_gradient(
    matvec: Callable[[jax.Array], jax.Array], b: jax.Array, iters: int, tol: float = 1e-10
) -> jax.Array:
    """x with matvec(x) ~= b for a symmetric positive definite matvec: `iters` steps of
    conjugate gradient from x = 0. A fixed count compiles to one loop and vmaps; once the
    squared residual falls below tol the iterate stops moving."""

    def step(_: int, c: tuple[jax.Array, jax.Array, jax.Array, jax.Array]):
        x, r, p, rr = c
        live = rr > tol
        ap = matvec(p)
        alpha = jnp.where(live, rr / jnp.maximum(jnp.vdot(p, ap), 1e-30), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = jnp.vdot(r, r)
        p = jnp.where(live, r + rr_new / jnp.maximum(rr, 1e-30) * p, p)
        return x, r, p, jnp.where(live, rr_new, rr)

    x, *_ = jax.lax.fori_loop(0, iters, step, (jnp.zeros_like(b), b, b, jnp.vdot(b, b)))
    return x


def fisher_vector_product(
    mean_kl: Callable[[jax.Array], jax.Array], theta: jax.Array, damping: jax.Array | float
) -> Callable[[jax.Array], jax.Array]:
    """v -> (H + damping I) v, H the Hessian of mean_kl at theta (the Fisher matrix when
    mean_kl is the KL from the policy at theta): forward-over-reverse differentiation of the
    KL's gradient, never a matrix."""
    kl_grad = jax.grad(mean_kl)
    return lambda v: jax.jvp(kl_grad, (theta,), (v,))[1] + damping * v


def step_acceptable(improvement: jax.Array, kl: jax.Array, max_kl: jax.Array | float) -> jax.Array:
    """The line search's test of one candidate step: the surrogate improves (> 0) and the mean
    KL from the old policy stays within 1.5 max_kl (the slack OpenAI baselines' TRPO allows over
    the quadratic model), both finite."""
    return (improvement > 0) & (kl <= 1.5 * max_kl) & jnp.isfinite(improvement) & jnp.isfinite(kl)


def backtracking_line_search(
    candidate: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    max_kl: jax.Array | float,
    backtracks: int,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Try candidate steps k = 0, 1, ..., backtracks - 1 (fractions 1, 1/2, 1/4, ... of the full
    step, largest first); candidate(k) -> (surrogate improvement, mean KL), float32 scalars. Stops
    at the first step_acceptable one, so the usual case evaluates one candidate. Returns (k,
    accepted, improvement, kl) of the last candidate tried; with none accepted the policy keeps
    its parameters."""

    def untried(c: tuple[jax.Array, jax.Array, jax.Array, jax.Array]) -> jax.Array:
        tried, accepted, _, _ = c
        return (tried < backtracks) & ~accepted

    def try_step(c: tuple[jax.Array, jax.Array, jax.Array, jax.Array]):
        tried, _, _, _ = c
        gain, kl = candidate(tried)
        return tried + 1, step_acceptable(gain, kl, max_kl), gain, kl

    zero = jnp.zeros((), jnp.float32)
    tried, accepted, gain, kl = jax.lax.while_loop(
        untried, try_step, (jnp.zeros((), jnp.int32), jnp.zeros((), bool), zero, zero)
    )
    return tried - 1, accepted, gain, kl


def trpo_policy_step(
    params: Any,
    network: ActorCritic,
    discrete: bool,
    batch: Batch,
    hparams: HParams,
    config: Config,
) -> tuple[Any, dict[str, jax.Array]]:
    """TRPO's policy_step hook: one step of the policy on the whole batch. g is the gradient of
    the surrogate E[r A] at the old policy; s ~= F^-1 g by conjugate gradient, F v computed as
    the Hessian-vector product of the mean KL[pi_old, pi] (forward-over-reverse, no matrix), plus
    cg_damping v; the step s sqrt(2 max_kl / s.F s) reaches KL = max_kl in the quadratic model;
    then the backtracking line search. The critic's parameters get a zero gradient and a zero
    Fisher block, so the step leaves them as they are."""
    flat, unravel = ravel_pytree(params)
    adv, w = batch.advantages, batch.valid
    if config.norm_adv:
        adv = standardize(adv, w)

    def dist(theta: jax.Array) -> Dist:
        return batch_policy(network, unravel(theta), batch)

    def surrogate(theta: jax.Array) -> jax.Array:
        log_prob = dist_log_prob(discrete, dist(theta), batch.action)
        return masked_mean(jnp.exp(log_prob - batch.log_prob) * adv, w)

    def mean_kl(theta: jax.Array) -> jax.Array:
        return masked_mean(dist_kl(discrete, batch.dist, dist(theta)), w)

    fisher_vector = fisher_vector_product(mean_kl, flat, hparams.cg_damping)
    old, g = jax.value_and_grad(surrogate)(flat)
    s = conjugate_gradient(fisher_vector, g, config.cg_iters)
    full_step = (
        jnp.sqrt(2.0 * hparams.max_kl / jnp.maximum(jnp.vdot(s, fisher_vector(s)), 1e-12)) * s
    )

    def candidate(k: jax.Array) -> tuple[jax.Array, jax.Array]:
        theta = flat + 0.5 ** k.astype(jnp.float32) * full_step
        return surrogate(theta) - old, mean_kl(theta)

    k, accepted, gain, kl = backtracking_line_search(candidate, hparams.max_kl, config.backtracks)
    new = jnp.where(accepted, flat + 0.5 ** k.astype(jnp.float32) * full_step, flat)
    stats = {
        "policy_loss": -(old + jnp.where(accepted, gain, 0.0)),
        "entropy": masked_mean(dist_entropy(discrete, dist(new)), w),
        # The exact mean KL of the step taken (0 when the line search rejected every step).
        "approx_kl": jnp.where(accepted, kl, 0.0),
        "clip_fraction": jnp.zeros((), jnp.float32),  # TRPO clips nothing
    }
    return unravel(new), stats


def value_fit_loss(
    params: Any,
    network: ActorCritic,
    config: Config,
    discrete: bool,
    batch: Batch,
    hparams: HParams,
    kl_beta: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """TRPO's value fit on a minibatch: the value loss alone (ppo_loss's signature)."""
    value = batch_value(network, params, batch)
    vf = value_loss(
        value, batch.value, batch.returns, hparams.clip_coef, config.clip_vloss, batch.valid
    )
    return vf, {"value_loss": vf}


def check_trpo_config(config: Config) -> None:
    """TRPO needs separate policy and value torsos and sizes its own step."""
    if config.objective == "trpo" and config.network != "mlp":
        raise ValueError(
            f"Config.objective='trpo' needs network='mlp' (separate policy and value "
            f"torsos: the value fit must not move the policy), got {config.network!r}"
        )
    if config.objective == "trpo" and config.adaptive_lr:
        raise ValueError(
            "Config.adaptive_lr applies to gradient steps on the policy; objective='trpo' "
            "sizes its own step from max_kl"
        )


# ---------------------------------------------------------------------------------------------
# Extension: validation. Refuses settings that cannot train before anything compiles: hooks in at
# Config.__post_init__ (check_config), at the command line (check_fields_apply: a field the run
# does not read) and wherever concrete HParams arrive (check_hparams).
# ---------------------------------------------------------------------------------------------


# The string fields that take one of a few names: check_config refuses any other value, and the
# command line refuses it while parsing.
FIELD_CHOICES = {
    "network": NETWORKS,
    "activation": ACTIVATIONS,
    "core": CORES,
    "objective": OBJECTIVES,
    "optimizer": OPTIMIZERS,
}


POSITIVE_INT_FIELDS = (
    "num_envs",
    "num_steps",
    "total_timesteps",
    "update_epochs",
    "num_minibatches",
    "conv_channels",
    "core_size",
    "cg_iters",
    "backtracks",
)


def check_config(config: Config) -> None:
    """Raise a ValueError naming the field if a Config cannot train (Config.__post_init__ calls
    it, so nothing compiles first): an unknown env, a size that is not positive or does not
    divide evenly, a name outside its choices, a non-boolean flag; then the extensions' checks."""
    if not isinstance(config.env, str) or not config.env:
        raise ValueError(f"Config.env must be a non-empty string, got {config.env!r}")
    if ":" not in config.env and not is_gymnax_env(config.env):
        raise ValueError(
            f"Config.env: unknown environment {config.env!r}; known gymnax environments: "
            f"{', '.join(gymnax_env_names())} (brax environments are named 'brax:NAME')"
        )
    check_sizes(config)
    for name, choices in FIELD_CHOICES.items():
        if getattr(config, name) not in choices:
            raise ValueError(
                f"Config.{name} must be one of {choices}, got {getattr(config, name)!r}"
            )
    for name in ("norm_adv", "clip_vloss", "anneal_lr", "anneal_clip", "adaptive_lr"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"Config.{name} must be true or false, got {getattr(config, name)!r}")
    for name in ("normalize_obs", "normalize_reward"):
        if getattr(config, name) not in (None, True, False):
            raise ValueError(
                f"Config.{name} must be true, false or null (auto), got {getattr(config, name)!r}"
            )
    check_recurrent_config(config)
    check_trpo_config(config)
    schedule = config.log_std_schedule
    if schedule and (
        len(schedule) != 2
        or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in schedule)
    ):
        raise ValueError(
            f"Config.log_std_schedule must be () or two numbers START,END, got {list(schedule)}"
        )


def check_sizes(config: Config) -> None:
    """The loop counts and widths: positive integers, minibatches that divide the rollout."""
    for name in POSITIVE_INT_FIELDS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"Config.{name} must be a positive integer, got {value!r}")
    if config.batch_size % config.num_minibatches:
        raise ValueError(
            f"Config.num_minibatches={config.num_minibatches} must divide the rollout batch "
            f"num_envs * num_steps = {config.batch_size}"
        )
    if config.total_timesteps < config.batch_size:
        raise ValueError(
            f"Config.total_timesteps={config.total_timesteps} is smaller than one rollout "
            f"(num_envs * num_steps = {config.batch_size})"
        )
    sizes = tuple(config.hidden_sizes)
    if not sizes or any(isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in sizes):
        raise ValueError(
            f"Config.hidden_sizes must be a non-empty tuple of positive integers, "
            f"got {config.hidden_sizes!r}"
        )


HPARAM_LIMITS = {
    "learning_rate": (0.0, math.inf),
    "gamma": (0.0, 1.0),
    "gae_lambda": (0.0, 1.0),
    "clip_coef": (0.0, math.inf),
    "ent_coef": (0.0, math.inf),
    "vf_coef": (0.0, math.inf),
    "max_grad_norm": (0.0, math.inf),
    "kl_beta": (0.0, math.inf),
    "kl_target": (0.0, math.inf),
    "rmsprop_decay": (0.0, 1.0),
    "rmsprop_eps": (0.0, math.inf),
    "max_kl": (0.0, math.inf),
    "cg_damping": (0.0, math.inf),
}


class FieldScope(NamedTuple):
    """Which runs read a field: those whose config passes `reads`. `needs` says which in words
    for a refusal, in terms of the Config fields `on`; the refusal shows the run's own values
    of exactly those fields."""

    reads: Callable[[Config], bool]
    needs: str
    on: tuple[str, ...]


# Fields that only one kind of run reads. A field the user sets where it is not read is refused
# (check_fields_apply), not silently ignored.
FIELD_SCOPES: dict[str, FieldScope] = {
    "max_kl": FieldScope(lambda c: c.objective == "trpo", "objective=trpo", ("objective",)),
    "cg_damping": FieldScope(lambda c: c.objective == "trpo", "objective=trpo", ("objective",)),
    "cg_iters": FieldScope(lambda c: c.objective == "trpo", "objective=trpo", ("objective",)),
    "backtracks": FieldScope(lambda c: c.objective == "trpo", "objective=trpo", ("objective",)),
    "kl_beta": FieldScope(
        lambda c: c.objective in ("kl_fixed", "kl_adaptive"),
        "objective=kl_fixed or kl_adaptive",
        ("objective",),
    ),
    "kl_target": FieldScope(
        lambda c: c.objective == "kl_adaptive" or c.adaptive_lr,
        "objective=kl_adaptive or adaptive_lr=true",
        ("objective", "adaptive_lr"),
    ),
    "clip_coef": FieldScope(
        lambda c: c.objective == "clip" or c.clip_vloss,
        "objective=clip or clip_vloss=true (the value-clip range)",
        ("objective", "clip_vloss"),
    ),
    "anneal_clip": FieldScope(
        lambda c: c.objective == "clip" or c.clip_vloss,
        "objective=clip or clip_vloss=true",
        ("objective", "clip_vloss"),
    ),
    "ent_coef": FieldScope(
        lambda c: c.objective != "trpo",
        "objective=clip, none, kl_fixed or kl_adaptive (trpo has no entropy bonus)",
        ("objective",),
    ),
    "rmsprop_decay": FieldScope(
        lambda c: c.optimizer == "rmsprop", "optimizer=rmsprop", ("optimizer",)
    ),
    "rmsprop_eps": FieldScope(
        lambda c: c.optimizer == "rmsprop", "optimizer=rmsprop", ("optimizer",)
    ),
    "core_size": FieldScope(lambda c: c.core != "none", "core=gru or lstm", ("core",)),
    # TRPO moves the policy by its own step, not through the optimizer that leaves it alone.
    "log_std_schedule": FieldScope(
        lambda c: c.objective != "trpo",
        "objective=clip, none, kl_fixed or kl_adaptive",
        ("objective",),
    ),
    "seq_len": FieldScope(lambda c: c.core != "none", "core=gru or lstm", ("core",)),
}


def field_applies(config: Config, name: str) -> bool:
    """Whether a run with this config reads the field `name` (fields outside FIELD_SCOPES are
    read by every run)."""
    scope = FIELD_SCOPES.get(name)
    return scope is None or scope.reads(config)


def check_fields_apply(config: Config, names: Iterable[str]) -> None:
    """Raise a ValueError naming the first of `names` (fields the user set) that this config
    does not read: a TRPO field on a PPO objective, a PPO field on TRPO, an RMSProp field with
    Adam."""
    for name in names:
        if not field_applies(config, name):
            scope = FIELD_SCOPES[name]
            have = ", ".join(f"{f}={str(getattr(config, f)).lower()}" for f in scope.on)
            raise ValueError(f"{name} applies only with {scope.needs}; this run has {have}")


def check_hparams(hparams: HParams) -> HParams:
    """Raise a ValueError naming the field if a concrete hyperparameter is out of range."""
    for name, (low, high) in HPARAM_LIMITS.items():
        value = np.asarray(getattr(hparams, name), dtype=np.float64)
        if not np.all(np.isfinite(value)) or np.any(value < low) or np.any(value > high):
            raise ValueError(f"HParams.{name} must lie in [{low}, {high}], got {value.tolist()}")
    return hparams


# ---------------------------------------------------------------------------------------------
# Command line: python ppo.py --env CartPole-v1 --num-seeds 16
# ---------------------------------------------------------------------------------------------

# Defaults shipped per environment (applied under any flag the user gives), each family's one
# setting chosen by this project's own sweeps (benchmarks/tune.py: a random search on a subset of
# the family's tasks, the finalists on all of them, the winner confirmed on fresh seeds; records
# in benchmarks/results/tune_FAMILY.md). The settings they replaced stay available by name as
# YAML presets (purejaxppo/presets/: purejaxrl-cartpole, minatar-paper).

# Classic control (CartPole, Acrobot, MountainCar share it): PureJaxRL's CartPole shape (4 actors
# x T 128, 4 epochs of 4 minibatches, 64x64 tanh) with the tuned step size, entropy, lambda and
# gamma. Normalized IQM 1.05 [1.04, 1.05] against 0.87 for PureJaxRL's settings, 8 fresh seeds x
# 500k steps (MountainCar -115 against -200).
CLASSIC_PRESET = (
    dict(
        num_envs=4,
        num_steps=128,
        total_timesteps=500_000,
        update_epochs=4,
        num_minibatches=4,
        hidden_sizes=(64, 64),
        activation="tanh",
    ),
    dict(
        learning_rate=0.00886,
        gamma=0.995,
        gae_lambda=0.874,
        clip_coef=0.226,
        ent_coef=0.0493,
        vf_coef=0.304,
        max_grad_norm=0.5,
    ),
)
# Pendulum: 16 actors x T 256, 4 epochs of 8 minibatches, no entropy bonus (Gaussian policy);
# as good as the 10-epoch setting it replaced (IQM -150 against -154, 8 fresh seeds x 1M steps)
# at 2.5 times fewer gradient steps.
PENDULUM_PRESET = (
    dict(
        num_envs=16,
        num_steps=256,
        total_timesteps=1_000_000,
        update_epochs=4,
        num_minibatches=8,
        anneal_lr=True,
    ),
    dict(
        learning_rate=0.00156,
        gamma=0.99,
        gae_lambda=0.836,
        clip_coef=0.219,
        ent_coef=0.0,
        vf_coef=0.686,
        max_grad_norm=2.0,
    ),
)
# MinAtar (all five games share it): 64 actors x T 128, 4 epochs of 8 minibatches, a 64x64 ReLU
# MLP (PureJaxRL's shape), with the tuned step size, clip, entropy, lambda and value weight; 1M
# steps, the budget it was tuned at. On 8 fresh seeds x 1M steps of four games: Breakout IQM 29.9,
# normalized IQM 0.96 against 0.69 for PureJaxRL's MinAtar settings (tune_minatar.md).
MINATAR_PRESET = (
    dict(
        network="mlp",
        hidden_sizes=(64, 64),
        activation="relu",
        num_envs=64,
        num_steps=128,
        total_timesteps=1_000_000,
        update_epochs=4,
        num_minibatches=8,
        anneal_lr=True,
        anneal_clip=False,
    ),
    dict(
        learning_rate=0.00597,
        gamma=0.99,
        gae_lambda=0.831,
        clip_coef=0.209,
        ent_coef=0.00878,
        vf_coef=0.932,
        max_grad_norm=0.5,
    ),
)
MINATAR_GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    **{env: CLASSIC_PRESET for env in ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")},
    "Pendulum-v1": PENDULUM_PRESET,
    **{f"{game}-MinAtar": MINATAR_PRESET for game in MINATAR_GAMES},
}


def preset(env: str) -> tuple[Config, HParams]:
    """The shipped defaults for an environment (plain defaults if none are shipped)."""
    cfg, hp = PRESETS.get(env, ({}, {}))
    return Config(env=env, **cfg), HParams(**hp)


def parse_field_value(kind: Any, text: str) -> Any:
    """Read a command-line value for a Config/HParams field of type `kind`."""
    kind = str(kind)
    if "tuple[float" in kind:
        return tuple(float(v) for v in text.split(",") if v)
    if "tuple" in kind:
        return tuple(parse_int(v) for v in text.split(",") if v)
    if "bool" in kind:
        lowered = text.lower()
        if lowered in ("none", "null", "auto"):
            return None
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expected true, false or auto, got {text!r}")
    if "int" in kind:
        return parse_int(text)
    if "float" in kind:
        return float(text)
    return text


def parse_int(text: str) -> int:
    """'2048', '1e6' or '1_000_000' -> int; a value with a fraction ('2.5e0') or out of the
    64-bit range is refused, not rounded."""
    try:
        value = int(text)
    except ValueError:
        number = float(text)  # raises ValueError for text that is no number
        if not math.isfinite(number) or not number.is_integer():
            raise ValueError(f"expected an integer, got {text!r}") from None
        value = int(number)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{text!r} is outside the 64-bit integer range")
    return value


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is reported in one line (no usage dump), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def field_flag_type(name: str, kind: Any) -> Callable[[str], Any]:
    """argparse type of the flag of the Config/HParams field `name`: its typed value, or an
    ArgumentTypeError saying what the flag takes (argparse names the flag). Checks each value
    alone; how fields fit together (num_minibatches dividing the batch, ...) is Config's."""
    kind = str(kind)
    takes: str
    fits: Callable[[Any], bool]
    if name in FIELD_CHOICES:
        takes, fits = f"one of {', '.join(FIELD_CHOICES[name])}", FIELD_CHOICES[name].__contains__
    elif "tuple" in kind:
        takes = "positive integers separated by commas, like 64,64"
        fits = lambda v: bool(v) and min(v) > 0
    elif "None" in kind:
        takes, fits = "true, false or auto", lambda v: True
    elif "bool" in kind:
        takes, fits = "true or false", lambda v: v is not None
    elif "int" in kind:
        takes, fits = "an integer in [1, 2^63)", lambda v: v > 0
    elif "float" in kind:
        low, high = HPARAM_LIMITS[name]
        takes = f"a number >= {low:g}" if high == math.inf else f"a number in [{low:g}, {high:g}]"
        fits = lambda v: math.isfinite(v) and low <= v <= high
    else:
        takes, fits = "a name", lambda v: True

    def parse(text: str) -> Any:
        try:
            value = parse_field_value(kind, text)
            if fits(value):
                return value
        except (ValueError, argparse.ArgumentTypeError):
            pass
        raise argparse.ArgumentTypeError(f"expected {takes}, got {text!r}")

    return parse


def integer_flag(low: int | None) -> Callable[[str], int]:
    """argparse type: an integer ('1e6' allowed, '2.5' refused) in the 64-bit range, at least
    `low` when given."""
    takes = "an integer in [-2^63, 2^63)" if low is None else f"an integer in [{low}, 2^63)"

    def parse(text: str) -> int:
        try:
            value = parse_int(text)
        except ValueError:
            value = None
        if value is None or (low is not None and value < low):
            raise argparse.ArgumentTypeError(f"expected {takes}, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        description="Train PPO on a gymnax environment; many seeds in one jit(vmap(train)) call.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--num-seeds", type=integer_flag(1), default=1, help="seeds trained in parallel"
    )
    parser.add_argument("--seed", type=integer_flag(None), default=0, help="base PRNG seed")
    parser.add_argument(
        "--devices",
        type=integer_flag(1),
        default=None,
        help="XLA CPU devices to shard the seeds over (default: one per core, unless XLA_FLAGS "
        "or JAX_NUM_CPU_DEVICES chose a count); 1 runs everything on one core",
    )
    for cls in (Config, HParams):
        for f in dataclasses.fields(cls):
            parser.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                type=field_flag_type(f.name, f.type),
                default=argparse.SUPPRESS,
                help=f"{f.metadata.get('help', '')} (default {f.default!r}, or the env preset)",
            )
    return parser


def cpu_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this OS
        return os.cpu_count() or 1


def chosen_cpu_devices() -> int | None:
    """The XLA CPU device count the user chose (JAX_NUM_CPU_DEVICES, jax's config, or XLA_FLAGS'
    --xla_force_host_platform_device_count), or None."""
    if jax.config.jax_num_cpu_devices >= 0:
        return int(jax.config.jax_num_cpu_devices)
    for flag in os.environ.get("XLA_FLAGS", "").split():
        name, _, value = flag.partition("=")
        if name == "--xla_force_host_platform_device_count" and value.isdigit():
            return int(value)
    return None


def use_cpu_cores(devices: int | None = None) -> int:
    """Run on every core: expose one XLA CPU device per core this process may use, so that
    the seeds and settings sharded over jax.devices() train in parallel. Call it before JAX
    starts (right after the imports: before any array is made or any env is built).

    devices=None keeps a count the user already chose (XLA_FLAGS or JAX_NUM_CPU_DEVICES) and
    otherwise takes the core count; an integer sets exactly that many. Only JAX's CPU client is
    affected: a GPU or TPU run still uses one device per accelerator. Returns the CPU device
    count in force. Raises RuntimeError if JAX has already started with another count.
    """
    if devices is not None and (isinstance(devices, bool) or devices <= 0):
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    count = devices or chosen_cpu_devices() or cpu_cores()
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:
        raise RuntimeError(
            f"use_cpu_cores({devices or ''}) came too late: JAX has already started with "
            f"{jax.local_device_count('cpu')} CPU device(s). Call it right after importing, "
            "before any JAX array, env or jax.devices() call."
        ) from None
    return count


def compiler_options() -> dict[str, Any] | None:
    """XLA options for the trainer's jits: on the CPU, LLVM optimization level 2 instead of 3.

    On the 16-seed CartPole program this cuts XLA's compile time by about a third and leaves the
    run time unchanged (BENCHMARKS.md). Other backends keep their defaults, and a level set in
    XLA_FLAGS wins (options passed to a jit override the flags).
    """
    if jax.default_backend() != "cpu" or "xla_backend_optimization_level" in os.environ.get(
        "XLA_FLAGS", ""
    ):
        return None
    return {"xla_backend_optimization_level": 2}


def padded_index(lo: int, hi: int, size: int) -> np.ndarray:
    """`size` indices: lo..hi-1, then hi-1 repeated, to pad a batch of runs to a size the
    devices divide (padding runs repeat the last real one and are dropped afterwards)."""
    return np.minimum(np.arange(lo, lo + size), hi - 1)


def train_seeds(
    config: Config,
    hparams: HParams,
    num_seeds: int,
    seed: int = 0,
    env: Env | None = None,
) -> tuple[TrainState, dict[str, np.ndarray], dict[str, Any]]:
    """Train num_seeds seeds in one jit(vmap(train)) call, timing compile and run apart.

    Returns (final states [S, ...], metrics {name: [S, num_updates]}, summary) where summary
    holds the fields of the command line's JSON line.
    """
    # Seeds sharded over every device. A count that does not divide evenly is padded with copies
    # of the last seed, dropped afterwards: a device runs ceil(S / D) seeds either way.
    devices = jax.devices()
    sharding = jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.asarray(devices), ("seeds",)), jax.sharding.PartitionSpec("seeds")
    )
    train = jax.jit(
        jax.vmap(make_train(config, env), in_axes=(0, None)),
        out_shardings=sharding,
        compiler_options=compiler_options(),
    )
    keys = jax.random.split(jax.random.key(seed), num_seeds)
    padded = -(-num_seeds // len(devices)) * len(devices)
    keys = jax.device_put(keys[padded_index(0, num_seeds, padded)], sharding)
    t0 = time.perf_counter()
    compiled = train.lower(keys, hparams).compile()
    compile_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, metrics = jax.block_until_ready(compiled(keys, hparams))
    run_seconds = time.perf_counter() - t0
    state = jax.tree.map(lambda x: x[:num_seeds], state)
    metrics = {k: np.asarray(v)[:num_seeds] for k, v in jax.device_get(metrics).items()}
    finals = final_return(metrics)
    # A seed whose parameters or losses went non-finite: its returns say nothing about the
    # settings, so it is named (with the first update where it happened) and left out of the mean.
    broken = metrics["finite"] == 0
    diverged = {int(s): int(np.argmax(broken[s])) for s in np.flatnonzero(broken.any(axis=1))}
    kept = np.isin(np.arange(num_seeds), list(diverged), invert=True)
    steps = config.num_updates * config.batch_size
    summary = {
        "env": config.env,
        "num_seeds": num_seeds,
        "devices": len(devices),
        "total_timesteps": steps,
        "compile_seconds": round(compile_seconds, 3),
        "run_seconds": round(run_seconds, 3),
        "steps_per_second": round(num_seeds * steps / run_seconds, 1),
        "final_return": [None if np.isnan(x) else round(float(x), 3) for x in finals],
        "final_return_mean": None
        if np.all(np.isnan(finals[kept]))
        else round(float(np.nanmean(finals[kept])), 3),
        "diverged": [{"seed": s, "update": u} for s, u in sorted(diverged.items())],
    }
    return state, metrics, summary


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = vars(build_parser().parse_args(argv))
    num_seeds, seed, devices = args.pop("num_seeds"), args.pop("seed"), args.pop("devices")
    env = args.get("env", Config.env)
    if ":" in env:
        raise ValueError(
            f"--env {env}: this file trains gymnax environments by id; brax:, ale: and variant "
            f"names run through the purejaxppo package (purejaxppo train --env {env})"
        )
    use_cpu_cores(devices)  # first: building the env (gymnax) starts JAX
    config, hparams = preset(env)
    config_names = {f.name for f in dataclasses.fields(Config)}
    config = config.replace(**{k: v for k, v in args.items() if k in config_names})
    hparams = check_hparams(
        hparams.replace(**{k: v for k, v in args.items() if k not in config_names})
    )
    check_fields_apply(config, args)  # the flags given, not the preset's values

    return train_seeds(config, hparams, num_seeds, seed)[2]


def main(argv: Sequence[str] | None = None) -> None:
    prog = os.path.basename(sys.argv[0])
    try:
        result = run(argv)
    except ValueError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    for bad in result["diverged"]:
        print(
            f"{prog}: seed #{bad['seed']} went non-finite at update {bad['update']}; "
            "left out of final_return_mean",
            file=sys.stderr,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
