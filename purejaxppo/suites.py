"""Adapters for the JAX environment suites of recent RL papers, behind the one `ppo.Env`
interface, each in its own extra: `jumanji:NAME` (pip install 'purejaxppo[jumanji]').

Observations. A suite's structured observation (a NamedTuple or dict of arrays) becomes one
float32 array by one rule: the `action_mask` field is taken out (it becomes the env's
`action_mask`, see below); if one field is left, it keeps its shape (an image stays [H, W, C]
for the convolutional torsos); otherwise every field is flattened and the fields are
concatenated in their declared order into one vector [D] (booleans and integers as 0/1 and
their values).

Episode ends. jumanji marks the last step of an episode with discount 0 for a termination and
discount 1 for a truncation; the adapter keeps them apart by that discount (a task that counts
its own time limit as an end, as Snake does, stays as the task defines it). Tasks without a time
limit of their own are truncated by the adapter at `max_episode_steps` (1000 unless given).

Action masks. A task whose observation has an `action_mask` of one entry per action gets an
`action_mask(state)` method: the trainer then never samples, or argmaxes to, an illegal action.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.ppo import Step

JUMANJI_PREFIX = "jumanji:"
DEFAULT_TIME_LIMIT = 1000


class MissingExtra(ValueError):
    """A suite's package is not installed: one line naming the extra that installs it."""


def import_suite(module: str, extra: str, name: str) -> Any:
    """import `module`, or raise MissingExtra naming the env and the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(
            f"{name} needs the {extra} extra: pip install 'purejaxppo[{extra}]'"
        ) from None


def observation_fields(obs: Any) -> list[tuple[str, Any]]:
    """(name, array) of a structured observation in declared order, the action mask left out."""
    if hasattr(obs, "_asdict"):
        items = list(obs._asdict().items())
    elif isinstance(obs, dict):
        items = list(obs.items())
    else:
        items = [("obs", obs)]
    return [(k, v) for k, v in items if k != "action_mask"]


def flat_observation(obs: Any) -> jax.Array:
    """The module docstring's rule: one field keeps its shape, several are concatenated flat."""
    fields = observation_fields(obs)
    if len(fields) == 1 and len(jax.tree.leaves(fields[0][1])) == 1:
        return jnp.asarray(jax.tree.leaves(fields[0][1])[0], jnp.float32)
    leaves = [x for _, v in fields for x in jax.tree.leaves(v)]  # a field may nest (a position)
    return jnp.concatenate([jnp.asarray(x, jnp.float32).reshape(-1) for x in leaves])


class JumanjiState(NamedTuple):
    env_state: Any  # the task's own state
    mask: jax.Array  # bool [A]: the legal actions at the observation the policy sees next
    time: jax.Array  # int32 steps into the running episode (the adapter's time limit)


class JumanjiEnv:
    """A jumanji task (one discrete action per step) as an Env: auto-reset, terminated and
    truncated kept apart, observations by the module's rule."""

    def __init__(self, name: str, max_episode_steps: int | None = None) -> None:
        full = JUMANJI_PREFIX + name
        jumanji = import_suite("jumanji", "jumanji", full)
        known = sorted(jumanji.registered_environments())
        if name not in known:
            raise ValueError(f"unknown jumanji environment {name!r}; known: {', '.join(known)}")
        self.name = full
        self.env = jumanji.make(name)
        spec = self.env.action_spec
        if not hasattr(spec, "num_values") or np.shape(spec.num_values) != ():
            raise ValueError(
                f"{full}: the adapter takes tasks with one discrete action per step; "
                f"{name}'s action is a {type(spec).__name__} of shape {tuple(spec.shape)}"
            )
        self.discrete = True
        self.action_dim = int(spec.num_values)
        self.action_low = self.action_high = None
        _, first = jax.eval_shape(self.env.reset, jax.random.key(0))
        self.obs_shape = tuple(jax.eval_shape(flat_observation, first.observation).shape)
        mask = getattr(first.observation, "action_mask", None)
        self.masked = mask is not None and tuple(mask.shape) == (self.action_dim,)
        if self.masked:  # Env.action_mask, only where the task has one
            self.action_mask = self.legal
        own = getattr(self.env, "time_limit", None)
        self.max_episode_steps = int(max_episode_steps or own or DEFAULT_TIME_LIMIT)
        if self.max_episode_steps <= 0:
            raise ValueError(f"max_episode_steps must be positive, got {self.max_episode_steps}")

    def _mask(self, timestep: Any) -> jax.Array:
        if not self.masked:
            return jnp.ones(self.action_dim, jnp.bool_)
        return jnp.asarray(timestep.observation.action_mask, jnp.bool_)

    def reset(self, key: jax.Array) -> tuple[jax.Array, JumanjiState]:
        state, timestep = self.env.reset(key)
        obs = flat_observation(timestep.observation)
        return obs, JumanjiState(state, self._mask(timestep), jnp.zeros((), jnp.int32))

    def step(self, key: jax.Array, state: JumanjiState, action: jax.Array) -> Step:
        env_state, timestep = self.env.step(state.env_state, action)
        time = state.time + 1
        last = timestep.step_type == 2  # dm_env's StepType.LAST
        terminated = last & (timestep.discount == 0)
        truncated = ((last & ~terminated) | (time >= self.max_episode_steps)) & ~terminated
        done = terminated | truncated
        fresh_state, fresh = self.env.reset(key)
        pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(done, x, y), a, b)  # noqa: E731
        final_obs = flat_observation(timestep.observation)
        return Step(
            obs=jnp.where(done, flat_observation(fresh.observation), final_obs),
            state=JumanjiState(
                pick(fresh_state, env_state),
                jnp.where(done, self._mask(fresh), self._mask(timestep)),
                jnp.where(done, 0, time),
            ),
            reward=jnp.asarray(timestep.reward, jnp.float32).reshape(()),
            terminated=terminated.reshape(()),
            truncated=truncated.reshape(()),
            final_obs=final_obs,
        )

    def legal(self, state: JumanjiState) -> jax.Array:
        """The legal actions at the observation the policy sees next, bool [A]."""
        return state.mask
