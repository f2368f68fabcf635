"""One environment interface over gymnax (>=1.0) and brax.

Every adapter satisfies `ppo.Env`: the attributes `obs_shape`, `discrete`, `action_dim`,
`action_low`, `action_high`, `max_episode_steps` and the methods

    reset(key) -> (obs [*obs_shape], state)
    step(key, state, action) -> ppo.Step(obs, state, reward, terminated, truncated, final_obs)

for a single (unbatched) environment; the trainer vmaps them. Observations keep their shape
(gymnax's MinAtar games give [10, 10, C] images; brax gives vectors). `step` auto-resets: `obs`
is the first observation of the next episode when the step ended one, and `final_obs` is the
true next observation before that reset, which is what a time-limit truncation bootstraps from.

Names: a gymnax id (`"CartPole-v1"`), or `"brax:NAME"` / `"brax:NAME@BACKEND"` for brax (backend
one of generalized, positional, spring, mjx; default positional, which is fast on a CPU), or
`"ale:GAME"` / `"ale:GAME:sticky"` for a real Atari game through ale-py (purejaxppo/atari.py),
`"jumanji:NAME"`, `"craftax:NAME"`, `"xminigrid:NAME"` and `"playground:NAME"` for the suites of
purejaxppo/suites.py (each in its extra; jumanji's action masks).

Partially observable variants, for policies with memory (`core=gru`), are named `ID:VARIANT`:
`CartPole-v1:positions-only` (cart position and pole angle; the velocities hidden),
`Pendulum-v1:positions-only` (cos and sin of the angle; the angular velocity hidden), and
`MemoryChain-bsuite:memory-N` (bsuite's memory chain with N steps between the context, shown
in the first observations, and the query that asks for it; plain `MemoryChain-bsuite` is N 5).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.atari import ALE_PREFIX
from purejaxppo.ppo import Env, GymnaxEnv, Step, gymnax_env_names, is_gymnax_env
from purejaxppo.suites import SUITE_PREFIXES

BRAX_PREFIX = "brax:"
BRAX_BACKENDS = ("generalized", "positional", "spring", "mjx")
DEFAULT_BRAX_BACKEND = "positional"


def brax_envs() -> Any:
    """The module brax.envs, imported without the lines its import prints to stdout: mujoco's
    "Failed to import warp" and "Failed to import mujoco_warp" (its optional Warp backend, which
    no backend here uses) would otherwise come before a refusal's one line or a run's output."""
    with contextlib.redirect_stdout(io.StringIO()):
        from brax import envs
    return envs


def brax_env_names() -> list[str]:
    """brax's own environments, and the steering task built here on its humanoid."""
    return sorted([*brax_envs()._envs, STEER])


class BraxState(NamedTuple):
    env_state: Any  # brax.envs.State
    time: jax.Array  # int32 steps taken in the running episode


class BraxEnv:
    """A brax environment with a time limit, auto-reset, and terminated/truncated kept apart.

    brax signals a real termination through `State.done`; the time limit is ours, so a step that
    reaches `episode_length` without terminating is a truncation. Actions are in [-1, 1] (brax
    scales them to the actuator range itself).
    """

    def __init__(
        self, name: str, backend: str = DEFAULT_BRAX_BACKEND, episode_length: int = 1000
    ) -> None:
        envs = brax_envs()
        if name not in envs._envs:
            raise ValueError(
                f"unknown brax environment {name!r}; known: {', '.join(brax_env_names())}"
            )
        if backend not in BRAX_BACKENDS:
            raise ValueError(f"brax backend must be one of {BRAX_BACKENDS}, got {backend!r}")
        if episode_length <= 0:
            raise ValueError(f"episode_length must be positive, got {episode_length}")
        self.name = f"{BRAX_PREFIX}{name}@{backend}"
        with warnings.catch_warnings():
            # brax's notice that it is no longer maintained, on every system it loads: a fixed
            # notice, not about this run.
            warnings.filterwarnings(
                "ignore", "Brax System, piplines and environments are not actively"
            )
            self.env = envs.get_environment(name, backend=backend)
        # brax's `observation_size` runs a reset op by op (seconds for the humanoid, at every
        # construction); its shape alone needs only a trace.
        self.obs_shape = tuple(jax.eval_shape(self.env.reset, jax.random.key(0)).obs.shape)
        self.discrete = False
        self.action_dim = int(self.env.action_size)
        self.action_low = -np.ones(self.action_dim, np.float32)
        self.action_high = np.ones(self.action_dim, np.float32)
        self.max_episode_steps = int(episode_length)

    def reset(self, key: jax.Array) -> tuple[jax.Array, BraxState]:
        state = self.env.reset(key)
        return state.obs.astype(jnp.float32), BraxState(state, jnp.zeros((), jnp.int32))

    def step(self, key: jax.Array, state: BraxState, action: jax.Array) -> Step:
        nxt = self.env.step(state.env_state, action)
        time = state.time + 1
        terminated = nxt.done > 0.5
        truncated = (time >= self.max_episode_steps) & ~terminated
        done = terminated | truncated
        fresh = self.env.reset(key)
        merged = jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh, nxt)
        return Step(
            obs=merged.obs.astype(jnp.float32),
            state=BraxState(merged, jnp.where(done, 0, time)),
            reward=jnp.asarray(nxt.reward, jnp.float32).reshape(()),
            terminated=terminated.reshape(()),
            truncated=truncated.reshape(()),
            final_obs=nxt.obs.astype(jnp.float32),
        )


# ---------------------------------------------------------------------------------------------
# Steering: brax's humanoid runs toward a target that moves (the PPO paper's section 6.3, in the
# spirit of Roboschool's HumanoidFlagrun).
# ---------------------------------------------------------------------------------------------

STEER = "humanoid_steer"


class SteerState(NamedTuple):
    env_state: Any  # brax.envs.State of the humanoid
    time: jax.Array  # int32 steps taken in the running episode
    target: jax.Array  # [2] the target's ground position (x, y)
    target_time: jax.Array  # int32 steps since the target was placed
    com: jax.Array  # [2] the body's centre of mass on the ground (x, y), after the last step


class HumanoidSteer(BraxEnv):
    """brax's humanoid steering toward a target on the ground.

    The target is placed at a uniformly random heading, RADIUS[0]..RADIUS[1] metres (uniform)
    from the body's centre of mass, and placed again so whenever the centre of mass comes within
    REACH metres of it or MOVE_EVERY steps after it was placed. Observation: brax humanoid's,
    then the target relative to the centre of mass, rotated into the torso's heading (x ahead,
    y to the left) [2]. Reward: PROGRESS_WEIGHT x the decrease of the distance to the target per
    second (the target of the step's start: the step that reaches it or moves it still counts
    its progress), plus brax humanoid's alive bonus and minus its control cost (its own
    forward-velocity term is left out). Termination (falling) and the time limit as brax:humanoid.
    """

    RADIUS = (2.0, 6.0)
    REACH = 1.0
    MOVE_EVERY = 200
    PROGRESS_WEIGHT = 1.25  # brax humanoid's forward_reward_weight: running at it scores as before

    def __init__(self, backend: str = DEFAULT_BRAX_BACKEND, episode_length: int = 1000) -> None:
        super().__init__("humanoid", backend=backend, episode_length=episode_length)
        self.name = f"{BRAX_PREFIX}{STEER}@{backend}"
        self.obs_shape = (self.obs_shape[0] + 2,)

    def centre_of_mass(self, env_state: Any) -> jax.Array:
        return self.env._com(env_state.pipeline_state)[0][:2]

    def place_target(self, key: jax.Array, com: jax.Array) -> jax.Array:
        k_angle, k_radius = jax.random.split(key)
        angle = jax.random.uniform(k_angle, (), minval=0.0, maxval=2 * np.pi)
        radius = jax.random.uniform(k_radius, (), minval=self.RADIUS[0], maxval=self.RADIUS[1])
        return com + radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)])

    def observe(self, env_state: Any, target: jax.Array, com: jax.Array) -> jax.Array:
        w, x, y, z = env_state.pipeline_state.x.rot[0]
        yaw = jnp.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        d = target - com
        ahead = jnp.cos(yaw) * d[0] + jnp.sin(yaw) * d[1]
        left = -jnp.sin(yaw) * d[0] + jnp.cos(yaw) * d[1]
        return jnp.concatenate([env_state.obs, jnp.stack([ahead, left])]).astype(jnp.float32)

    def fresh(self, key: jax.Array) -> SteerState:
        k_env, k_target = jax.random.split(key)
        env_state = self.env.reset(k_env)
        com = self.centre_of_mass(env_state)
        target = self.place_target(k_target, com)
        zero = jnp.zeros((), jnp.int32)
        return SteerState(env_state, zero, target, zero, com)

    def reset(self, key: jax.Array) -> tuple[jax.Array, SteerState]:
        state = self.fresh(key)
        return self.observe(state.env_state, state.target, state.com), state

    def step(self, key: jax.Array, state: SteerState, action: jax.Array) -> Step:
        k_target, k_reset = jax.random.split(key)
        nxt = self.env.step(state.env_state, action)
        com = self.centre_of_mass(nxt)
        before = jnp.linalg.norm(state.target - state.com)
        after = jnp.linalg.norm(state.target - com)
        progress = (before - after) / self.env.dt
        metrics = nxt.metrics
        reward = (
            self.PROGRESS_WEIGHT * progress + metrics["reward_alive"] + metrics["reward_quadctrl"]
        )
        target_time = state.target_time + 1
        moved = (after < self.REACH) | (target_time >= self.MOVE_EVERY)
        target = jnp.where(moved, self.place_target(k_target, com), state.target)
        target_time = jnp.where(moved, 0, target_time)
        time = state.time + 1
        terminated = nxt.done > 0.5
        truncated = (time >= self.max_episode_steps) & ~terminated
        done = terminated | truncated
        going = SteerState(nxt, time, target, target_time, com)
        merged = jax.tree.map(lambda a, b: jnp.where(done, a, b), self.fresh(k_reset), going)
        return Step(
            obs=self.observe(merged.env_state, merged.target, merged.com),
            state=merged,
            reward=jnp.asarray(reward, jnp.float32).reshape(()),
            terminated=terminated.reshape(()),
            truncated=truncated.reshape(()),
            final_obs=self.observe(nxt, target, com),
        )


# Observation entries kept by the positions-only variants (gymnax's observation layouts).
POSITIONS = {
    "CartPole-v1": (0, 2),  # [x, x_dot, theta, theta_dot] -> x, theta
    "Pendulum-v1": (0, 1),  # [cos theta, sin theta, theta_dot] -> cos theta, sin theta
}
MEMORY_CHAIN = "MemoryChain-bsuite"


class PositionsOnly(GymnaxEnv):
    """A gymnax control task that shows positions but not velocities: one observation no
    longer determines the state, so a memoryless policy must act on a guess."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = f"{name}:positions-only"
        self.keep = np.asarray(POSITIONS[name])
        self.obs_shape = (len(self.keep),)

    def _obs(self, obs: jax.Array) -> jax.Array:
        return jnp.asarray(obs, jnp.float32).reshape(-1)[self.keep]


def variants() -> list[str]:
    """The partially observable variant names (MemoryChain's N is any positive integer)."""
    return [f"{n}:positions-only" for n in POSITIONS] + [f"{MEMORY_CHAIN}:memory-N"]


def make_variant(env: str) -> GymnaxEnv:
    """The adapter for an `ID:VARIANT` name; a ValueError lists the variants otherwise."""
    base, _, variant = env.partition(":")
    if variant == "positions-only" and base in POSITIONS:
        return PositionsOnly(base)
    if base == MEMORY_CHAIN and variant.startswith("memory-"):
        length = variant[len("memory-") :]
        if length.isdigit() and int(length) > 0:
            chain = GymnaxEnv(base)
            chain.params = chain.params.replace(memory_length=int(length))
            chain.name = env
            return chain
    raise ValueError(
        f"unknown environment variant {env!r}; variants: {', '.join(variants())} "
        "(N a positive integer)"
    )


def parse_brax_name(env: str) -> tuple[str, str]:
    """'brax:NAME[@BACKEND]' -> (NAME, BACKEND)."""
    body = env[len(BRAX_PREFIX) :]
    name, _, backend = body.partition("@")
    return name, backend or DEFAULT_BRAX_BACKEND


def make_env(env: str, **kwargs: Any) -> Env:
    """The adapter for an environment name; unknown names raise a ValueError listing known ones."""
    if env.startswith(ALE_PREFIX):
        from purejaxppo.atari import AleEnv

        return AleEnv(env)
    if env.startswith(SUITE_PREFIXES):
        from purejaxppo.suites import make_suite_env

        return make_suite_env(env, **kwargs)
    if env.startswith(BRAX_PREFIX):
        name, backend = parse_brax_name(env)
        if name == STEER:
            return HumanoidSteer(backend=backend, **kwargs)
        return BraxEnv(name, backend=backend, **kwargs)
    if ":" in env:
        return make_variant(env)
    if env not in gymnax_env_names():
        raise ValueError(
            f"unknown environment {env!r}; gymnax: {', '.join(gymnax_env_names())}; "
            f"brax (as 'brax:NAME'): {', '.join(brax_env_names())}"
        )
    return GymnaxEnv(env, **kwargs)


def is_known_env(env: str) -> bool:
    """Whether `env` names an environment here (without the atari extra, an ale: name raises
    MissingAtari, a ValueError saying how to install it)."""
    if env.startswith(ALE_PREFIX):
        from purejaxppo.atari import MissingAtari, parse_name

        try:
            parse_name(env)
        except MissingAtari:
            raise
        except ValueError:
            return False
        return True
    if env.startswith(SUITE_PREFIXES):
        from purejaxppo.suites import MissingExtra, make_suite_env

        try:
            make_suite_env(env)  # a known task the adapter takes
        except MissingExtra:
            raise
        except ValueError:
            return False
        return True
    if env.startswith(BRAX_PREFIX):
        name, backend = parse_brax_name(env)
        return name in brax_env_names() and backend in BRAX_BACKENDS
    if ":" in env:
        try:
            make_variant(env)
        except ValueError:
            return False
        return True
    return is_gymnax_env(env)
