"""Adapters for the JAX environment suites of recent RL papers, behind the one `ppo.Env`
interface, each in its own extra (pip install 'purejaxppo[EXTRA]'):

    jumanji:NAME            jumanji's tasks with one discrete action (extra jumanji)
    jumanji:NAME:unmasked   the same with its action mask withheld from the trainer
    craftax:NAME            Craftax-Classic and Craftax, symbolic and pixels (extra craftax)
    xminigrid:NAME[@BENCH]  XLand-MiniGrid; an XLand-* grid draws its rules from the ruleset
                            benchmark BENCH (a registered name or a file) at every reset
    playground:NAME[@IMPL]  MuJoCo Playground (extra playground); IMPL jax (default: MJX's JAX
                            pipeline, safe on a CPU) or warp

Observations. A suite's structured observation (a NamedTuple or dict of arrays) becomes one
float32 array by one rule: the `action_mask` field is taken out (it becomes the env's
`action_mask`, see below); if one field is left, it keeps its shape (an image stays [H, W, C]
for the convolutional torsos); otherwise every field is flattened and the fields are
concatenated in their declared order into one vector [D] (booleans and integers as 0/1 and
their values).

For MuJoCo Playground, whose observation is a vector or a dict whose `state` entry is the
policy's observation (its `privileged_state` is meant for an asymmetric critic, which this
trainer does not have): the `state` entry where there is one, else the same rule.

Episode ends. jumanji and XLand-MiniGrid mark the last step of an episode with discount 0 for
a termination and discount 1 for a truncation; the adapter keeps them apart by that discount
(a task that counts its own time limit as an end, as Snake does, stays as the task defines it).
Tasks without a time limit of their own are truncated by the adapter at `max_episode_steps`
(1000 unless given).
Craftax ends an episode on death, on beating the final boss (terminations) and at its own time
limit (10,000 steps for Classic, 100,000 for Craftax: a truncation). Playground tasks terminate
by their `done` (a fallen robot) and are truncated at their config's `episode_length` control
steps (its `action_repeat` steps per agent step, the rewards summed).

Action masks. A task whose observation has an `action_mask` of one entry per action gets an
`action_mask(state)` method: the trainer then never samples, or argmaxes to, an illegal action.
"""

from __future__ import annotations

import contextlib
import functools
import io
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.ppo import Step

JUMANJI_PREFIX = "jumanji:"
CRAFTAX_PREFIX = "craftax:"
XMINIGRID_PREFIX = "xminigrid:"
PLAYGROUND_PREFIX = "playground:"
SUITE_PREFIXES = (JUMANJI_PREFIX, CRAFTAX_PREFIX, XMINIGRID_PREFIX, PLAYGROUND_PREFIX)
DEFAULT_TIME_LIMIT = 1000
UNMASKED = ":unmasked"
CRAFTAX_NAMES = (
    "Craftax-Classic-Symbolic-v1",
    "Craftax-Classic-Pixels-v1",
    "Craftax-Symbolic-v1",
    "Craftax-Pixels-v1",
)
PLAYGROUND_IMPLS = ("jax", "warp")


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


def pick(done: jax.Array, fresh: Any, current: Any) -> Any:
    """Auto-reset: the fresh episode's pytree where `done`, else the running one's (`done` of
    one env, or [N] of a batch whose leaves are [N, ...])."""

    def where(x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.where(
            jnp.reshape(done, jnp.shape(done) + (1,) * (jnp.ndim(x) - jnp.ndim(done))), x, y
        )

    return jax.tree.map(where, fresh, current)


def unknown(suite: str, name: str, known: Any) -> ValueError:
    return ValueError(f"unknown {suite} environment {name!r}; known: {', '.join(known)}")


class JumanjiState(NamedTuple):
    env_state: Any  # the task's own state
    mask: jax.Array  # bool [A]: the legal actions at the observation the policy sees next
    time: jax.Array  # int32 steps into the running episode (the adapter's time limit)


class JumanjiEnv:
    """A jumanji task (one discrete action per step) as an Env: auto-reset, terminated and
    truncated kept apart, observations by the module's rule."""

    def __init__(self, name: str, max_episode_steps: int | None = None) -> None:
        full = JUMANJI_PREFIX + name
        name, unmasked = name.removesuffix(UNMASKED), name.endswith(UNMASKED)
        jumanji = import_suite("jumanji", "jumanji", full)
        known = sorted(jumanji.registered_environments())
        if name not in known:
            raise unknown("jumanji", name, known)
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
        if unmasked and not self.masked:
            raise ValueError(f"{full}: {name} has no action mask to withhold")
        self.masked = self.masked and not unmasked
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
        final_obs = flat_observation(timestep.observation)
        return Step(
            obs=jnp.where(done, flat_observation(fresh.observation), final_obs),
            state=JumanjiState(
                pick(done, fresh_state, env_state),
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


class CraftaxEnv:
    """A Craftax game (craftax 1.6's gymnax-style API, its no-auto-reset variant) as an Env:
    auto-reset with the true final observation, death and the boss terminations, the game's
    own time limit a truncation. Symbolic games give a vector, pixel games an [H, W, 3] image
    in [0, 1]."""

    reset_ratio = 16  # envs per fresh world generated at each step of a batch (step_batch)

    def __init__(self, name: str) -> None:
        full = CRAFTAX_PREFIX + name
        craftax_env = import_suite("craftax.craftax_env", "craftax", full)
        if name not in CRAFTAX_NAMES:
            raise unknown("craftax", name, CRAFTAX_NAMES)
        self.name = full
        self.env = craftax_env.make_craftax_env_from_name(name, auto_reset=False)
        self.params = self.env.default_params
        self.discrete = True
        self.action_dim = int(self.env.num_actions)
        self.action_low = self.action_high = None
        obs, _ = jax.eval_shape(self.env.reset_env, jax.random.key(0), self.params)
        self.obs_shape = tuple(obs.shape)
        self.max_episode_steps = int(self.params.max_timesteps)

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]:
        obs, state = self.env.reset_env(key, self.params)
        return jnp.asarray(obs, jnp.float32), state

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> Step:
        step_key, reset_key = jax.random.split(key)
        obs, nxt, reward, done, _ = self.env.step_env(step_key, state, action, self.params)
        fresh_obs, fresh = self.env.reset_env(reset_key, self.params)
        return self._ended(obs, nxt, reward, done, fresh_obs, fresh)

    def step_batch(self, keys: jax.Array, states: Any, actions: jax.Array) -> Step:
        """`step` over a batch of envs [N], generating ceil(N / reset_ratio) fresh worlds per
        step instead of N: the k-th env (in batch order) to end an episode in this step starts
        fresh world k mod that number. A world costs ~12 steps to generate (64 envs on the
        2-core CPU, 2026-12-07: 111 ms against 9.4 ms a step), and a vmapped auto-reset makes
        one for every env at every step. Two envs start the same world only when more envs
        than worlds end in one step; then they part at their first step (their own keys).
        Craftax's own PPO shares fresh worlds the same way (its optimistic resets)."""
        n = keys.shape[0]
        worlds = -(-n // self.reset_ratio)
        split = jax.vmap(jax.random.split)(keys)  # [N, 2]: the keys `step` splits
        params = self.params
        obs, nxt, reward, done, _ = jax.vmap(self.env.step_env, (0, 0, 0, None))(
            split[:, 0], states, actions, params
        )
        made = jax.vmap(self.env.reset_env, (0, None))(split[:worlds, 1], params)
        world = (jnp.cumsum(done) - 1) % worlds  # the k-th ended env's world (k from 0)
        fresh_obs, fresh = jax.tree.map(lambda x: x[world], made)
        return self._ended(obs, nxt, reward, done, fresh_obs, fresh)

    def _ended(self, obs, nxt, reward, done, fresh_obs, fresh) -> Step:
        """The Step of a stepped state `nxt`: its episode's end kept apart (death and the boss
        terminate, the time limit truncates) and the fresh episode where it ended."""
        time_up = nxt.timestep >= self.params.max_timesteps
        terminated = done & ((nxt.player_health <= 0) | ~time_up)
        final_obs = jnp.asarray(obs, jnp.float32)
        return Step(
            obs=pick(done, jnp.asarray(fresh_obs, jnp.float32), final_obs),
            state=pick(done, fresh, nxt),
            reward=jnp.asarray(reward, jnp.float32).reshape(done.shape),
            terminated=jnp.asarray(terminated).reshape(done.shape),
            truncated=jnp.asarray(done & ~terminated).reshape(done.shape),
            final_obs=final_obs,
        )


class XMiniGridState(NamedTuple):
    timestep: Any  # xminigrid's TimeStep: the grid world's state and its last observation
    ruleset: Any  # the rules and goal of the running episode (XLand grids), else None


class XMiniGridEnv:
    """An XLand-MiniGrid environment as an Env. MiniGrid-* tasks are single tasks; an XLand-*
    grid with a ruleset benchmark (`NAME@trivial-21k`, or `NAME@/path/to/file` saved with
    xminigrid.benchmarks.save_bz2_pickle) draws one ruleset uniformly at every reset (one task
    per episode; the policy sees the grid, not the goal, as in xminigrid's own baselines without
    their goal encoding). Observations: the [V, V, 2] view of tile and colour ids, as numbers."""

    def __init__(self, name: str) -> None:
        full = XMINIGRID_PREFIX + name
        xminigrid = import_suite("xminigrid", "xminigrid", full)
        name, _, bench = name.partition("@")
        known = xminigrid.registered_environments()
        if name not in known:
            raise unknown("xminigrid", name, known)
        self.name = full
        self.env, self.params = xminigrid.make(name)
        self.benchmark = None
        if bench:
            if not name.startswith("XLand-"):
                raise ValueError(f"{full}: only XLand-* grids take a ruleset benchmark")
            self.benchmark = load_rulesets(xminigrid, full, bench)
        self.discrete = True
        self.action_dim = int(self.env.num_actions(self.params))
        self.action_low = self.action_high = None
        self.obs_shape = tuple(int(d) for d in self.env.observation_shape(self.params))
        self.max_episode_steps = int(self.params.max_steps)

    def _reset(self, key: jax.Array) -> XMiniGridState:
        params, ruleset = self.params, None
        if self.benchmark is not None:
            rules_key, key = jax.random.split(key)
            ruleset = self.benchmark.sample_ruleset(rules_key)
            params = params.replace(ruleset=ruleset)
        return XMiniGridState(self.env.reset(params, key), ruleset)

    def reset(self, key: jax.Array) -> tuple[jax.Array, XMiniGridState]:
        state = self._reset(key)
        return jnp.asarray(state.timestep.observation, jnp.float32), state

    def step(self, key: jax.Array, state: XMiniGridState, action: jax.Array) -> Step:
        params = self.params
        if state.ruleset is not None:
            params = params.replace(ruleset=state.ruleset)
        timestep = self.env.step(params, state.timestep, action)
        last = timestep.step_type == 2  # dm_env's StepType.LAST
        terminated = last & (timestep.discount == 0)
        truncated = last & ~terminated
        fresh = self._reset(key)
        final_obs = jnp.asarray(timestep.observation, jnp.float32)
        done = terminated | truncated
        return Step(
            obs=jnp.where(done, jnp.asarray(fresh.timestep.observation, jnp.float32), final_obs),
            state=pick(done, fresh, XMiniGridState(timestep, state.ruleset)),
            reward=jnp.asarray(timestep.reward, jnp.float32).reshape(()),
            terminated=terminated.reshape(()),
            truncated=truncated.reshape(()),
            final_obs=final_obs,
        )


def load_rulesets(xminigrid: Any, full: str, bench: str) -> Any:
    """A ruleset benchmark by registered name (xminigrid downloads it once into its data
    folder) or by file path; a ValueError in one line when it cannot be had."""
    from xminigrid import benchmarks

    names = benchmarks.registered_benchmarks()
    try:
        if bench in names:
            with contextlib.redirect_stdout(io.StringIO()):  # its download progress
                return xminigrid.load_benchmark(bench)
        if "/" in bench or bench.endswith((".pkl", ".bz2", ".pbz2")):
            return benchmarks.load_benchmark_from_path(bench)
    except Exception as err:  # a failed download or an unreadable file: say which
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        where = benchmarks.DATA_PATH if bench in names else bench
        raise ValueError(
            f"{full}: cannot load the ruleset benchmark {bench!r} ({where}): {first}"
        ) from None
    raise ValueError(
        f"{full}: unknown ruleset benchmark {bench!r}; registered: {', '.join(names)} "
        "(or a file path)"
    )


class BraxLikeState(NamedTuple):
    env_state: Any  # the task's own State (obs, reward, done, info ...), its arrays packed
    time: jax.Array  # int32 agent steps into the running episode


class PlaygroundEnv:
    """A MuJoCo Playground task as an Env: actions in [-1, 1], `action_repeat` agent-step
    repeats with the rewards summed, the task's `done` a termination and its `episode_length`
    a truncation, auto-reset with the true final observation."""

    def __init__(self, name: str) -> None:
        full = PLAYGROUND_PREFIX + name
        name, _, impl = name.partition("@")
        impl = impl or PLAYGROUND_IMPLS[0]
        with contextlib.redirect_stdout(io.StringIO()):  # warp's start-up lines
            registry = import_suite("mujoco_playground", "playground", full).registry
        known = registry.ALL_ENVS
        if name not in known:
            raise unknown("playground", name, known)
        if impl not in PLAYGROUND_IMPLS:
            raise ValueError(f"{full}: the implementation must be one of {PLAYGROUND_IMPLS}")
        self.name = full
        config = registry.get_default_config(name)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.env = registry.load(name, config_overrides={"impl": impl})
        except Exception as err:  # e.g. a robot whose model files must be downloaded
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{full}: playground cannot load it here: {first}") from None
        self.repeat = int(config.get("action_repeat", 1))
        self.discrete = False
        self.action_dim = int(self.env.action_size)
        self.action_low = -np.ones(self.action_dim, np.float32)
        self.action_high = np.ones(self.action_dim, np.float32)
        # The task's State, kept as its non-empty arrays: MJX leaves some empty (no actuator
        # activations), and a checkpoint cannot hold an array of size zero.
        leaves, self._treedef = jax.tree.flatten(jax.eval_shape(self.env.reset, jax.random.key(0)))
        self._empty = {i: (x.shape, x.dtype) for i, x in enumerate(leaves) if x.size == 0}
        self.obs_shape = tuple(jax.eval_shape(self.reset, jax.random.key(0))[0].shape)
        self.max_episode_steps = -(-int(config.episode_length) // self.repeat)

    def _pack(self, state: Any) -> tuple[jax.Array, ...]:
        return tuple(x for i, x in enumerate(jax.tree.leaves(state)) if i not in self._empty)

    def _unpack(self, packed: tuple[jax.Array, ...]) -> Any:
        rest = iter(packed)
        leaves = [
            jnp.zeros(*self._empty[i]) if i in self._empty else next(rest)
            for i in range(self._treedef.num_leaves)
        ]
        return jax.tree.unflatten(self._treedef, leaves)

    @staticmethod
    def _obs(obs: Any) -> jax.Array:
        if isinstance(obs, dict) and "state" in obs:
            return jnp.asarray(obs["state"], jnp.float32)
        return flat_observation(obs)

    def reset(self, key: jax.Array) -> tuple[jax.Array, BraxLikeState]:
        state = self.env.reset(key)
        return self._obs(state.obs), BraxLikeState(self._pack(state), jnp.zeros((), jnp.int32))

    def step(self, key: jax.Array, state: BraxLikeState, action: jax.Array) -> Step:
        nxt, reward = self._unpack(state.env_state), jnp.zeros((), jnp.float32)
        for _ in range(self.repeat):  # the task's own repeat, stopped by a termination
            moved = self.env.step(nxt, action)
            reward = reward + jnp.where(nxt.done > 0.5, 0.0, moved.reward)
            nxt = pick(nxt.done > 0.5, nxt, moved)
        time = state.time + 1
        terminated = nxt.done > 0.5
        truncated = (time >= self.max_episode_steps) & ~terminated
        done = terminated | truncated
        fresh = self.env.reset(key)
        final_obs = self._obs(nxt.obs)
        return Step(
            obs=jnp.where(done, self._obs(fresh.obs), final_obs),
            state=BraxLikeState(self._pack(pick(done, fresh, nxt)), jnp.where(done, 0, time)),
            reward=jnp.asarray(reward, jnp.float32).reshape(()),
            terminated=terminated.reshape(()),
            truncated=truncated.reshape(()),
            final_obs=final_obs,
        )


@functools.lru_cache(maxsize=16)
def make_suite_env(env: str, **kwargs: Any) -> Any:
    """The adapter for a suite-prefixed name (SUITE_PREFIXES); kwargs go to its class. Kept
    per name: the command line's check of the name and the run share one (an adapter holds no
    state between calls, and building some takes seconds)."""
    for prefix, cls in (
        (JUMANJI_PREFIX, JumanjiEnv),
        (CRAFTAX_PREFIX, CraftaxEnv),
        (XMINIGRID_PREFIX, XMiniGridEnv),
        (PLAYGROUND_PREFIX, PlaygroundEnv),
    ):
        if env.startswith(prefix):
            return cls(env[len(prefix) :], **kwargs)
    raise ValueError(f"{env!r} names no suite; prefixes: {', '.join(SUITE_PREFIXES)}")
