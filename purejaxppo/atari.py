"""Real Atari games through the Arcade Learning Environment (ale-py's XLA interface), stepped
inside the compiled trainer: `--env ale:Breakout` (any game of the installed ale-py; CamelCase
or its snake_case id), `ale:Breakout:sticky` for sticky actions (repeat probability 0.25,
Machado et al. 2018). Needs the `atari` extra: pip install 'purejaxppo[atari]'.

Preprocessing, all in the emulator's C++ (ale-py's AtariVectorEnv): up to 30 no-op starts, frame
skip 4 with the max over the last two frames, 84x84 grayscale, a stack of the last 4 frames
(channels last here, scaled to [0, 1]); a lost life ends the episode for learning (terminated;
the game goes on), the game's end ends it for the statistics; rewards are clipped to their sign
for learning while every metric sums the raw game score; the 108,000-frame limit (30 minutes of
play) is a truncation, bootstrapped.

The emulators cannot be vmapped, so the adapter keeps the trainer's one-environment interface
and batches by hand: `reset` and `step` are custom_vmap functions whose batching rule folds
every vmapped axis (the trainer's environments, then its runs) into one flat pool of emulators
stepped by a single XLA custom call. A pool is made for each flat size a program uses; its
handle is threaded through the env state, which orders the calls.

ale-py's XLA interface resets an emulator on the step *after* its game ended ("next-step"
auto-reset): that step ignores the action, scores nothing, and returns the new game's first
frames. The adapter marks it with Step.valid = 0, and the trainer leaves it out of GAE, every
loss and every statistic (tests/test_masking.py).
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.ppo import Step

ALE_PREFIX = "ale:"  # the names of real Atari games (envs.make_env sends them here)
VARIANTS = ("sticky",)
STICKY_PROBABILITY = 0.25
FRAME_SKIP = 4
MAX_FRAMES = 108_000
NOOP_MAX = 30
INSTALL_HINT = "pip install 'purejaxppo[atari]' (ale-py with its XLA interface)"


class MissingAtari(ValueError):
    """ale-py is not installed: one line saying how to install it."""


def snake_case(game: str) -> str:
    """'SpaceInvaders' -> 'space_invaders' (ale-py's ROM ids); snake_case stays as it is."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", game).lower()


def parse_name(name: str) -> tuple[str, bool]:
    """'ale:Breakout[:sticky]' -> ('breakout', sticky), checked against the installed ROMs."""
    game, _, variant = name[len(ALE_PREFIX) :].partition(":")
    if variant and variant not in VARIANTS:
        raise ValueError(
            f"{name}: unknown variant {variant!r}; the ale: variants are {', '.join(VARIANTS)}"
        )
    try:
        from ale_py.roms import get_all_rom_ids
    except ImportError:
        raise MissingAtari(f"{name} needs the atari extra: {INSTALL_HINT}") from None
    rom = snake_case(game)
    known = get_all_rom_ids()
    if rom not in known:
        raise ValueError(f"{name}: ale-py has no game {game!r}; its games: {', '.join(known)}")
    return rom, variant == "sticky"


class Pool(NamedTuple):
    """One AtariVectorEnv of `size` emulators, called through ale-py's XLA targets."""

    env: Any  # kept alive: its emulators live as long as the process
    handle: np.ndarray  # uint8 [8]: the pool's handle (numpy, so programs embed it)
    size: int
    actions: int

    def reset(self, seeds: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """All emulators reset with their seeds [size]: (handle, obs [size, 4, 84, 84] uint8,
        episode frame numbers)."""
        handle, obs, _ids, _lives, _frames_, episode_frames = jax.ffi.ffi_call(
            "atari_vector_xla_reset",
            (
                jax.ShapeDtypeStruct((8,), jnp.uint8),
                jax.ShapeDtypeStruct((self.size, 4, 84, 84), jnp.uint8),
                *[jax.ShapeDtypeStruct((self.size,), jnp.int32)] * 4,
            ),
            has_side_effect=True,
        )(self.handle, np.arange(self.size, dtype=np.int32), seeds.astype(jnp.int32))
        return handle, obs, episode_frames

    def step(self, handle: jax.Array, actions: jax.Array) -> tuple[jax.Array, ...]:
        """(handle, obs, reward, terminated, truncated, lives, episode frame numbers)."""
        out = jax.ffi.ffi_call(
            "atari_vector_xla_step",
            (
                jax.ShapeDtypeStruct((8,), jnp.uint8),
                jax.ShapeDtypeStruct((self.size, 4, 84, 84), jnp.uint8),
                jax.ShapeDtypeStruct((self.size,), jnp.int32),
                jax.ShapeDtypeStruct((self.size,), jnp.bool_),
                jax.ShapeDtypeStruct((self.size,), jnp.bool_),
                *[jax.ShapeDtypeStruct((self.size,), jnp.int32)] * 4,
            ),
            has_side_effect=True,
        )(handle, actions.astype(jnp.int32), np.ones(self.size, np.float32))
        handle, obs, reward, terminated, truncated, _ids, lives, _frames_, episode_frames = out
        return handle, obs, reward, terminated, truncated, lives, episode_frames


@functools.cache
def pool(rom: str, sticky: bool, size: int, noop_max: int = NOOP_MAX) -> Pool:
    """The pool of `size` emulators of a game (made once per process and size: the programs of
    one size share it, and each program's first step resets it). The XLA calls are made here
    rather than through ale-py's own wrappers, whose jax-array constants the ahead-of-time
    compiled programs of the driver cannot take."""
    from ale_py.vector_env import AtariVectorEnv

    env = AtariVectorEnv(
        rom,
        num_envs=size,
        batch_size=size,  # all at once: deterministic (a smaller batch depends on thread timing)
        num_threads=min(size, _cores()),
        frameskip=FRAME_SKIP,
        maxpool=True,
        img_height=84,
        img_width=84,
        grayscale=True,
        stack_num=4,
        noop_max=noop_max,
        repeat_action_probability=STICKY_PROBABILITY if sticky else 0.0,
        max_num_frames_per_episode=MAX_FRAMES,
        episodic_life=False,  # (ale-py's resets the whole game at a lost life)
        life_loss_info=True,  # terminated at a lost life, the game goes on
        reward_clipping=False,  # raw scores; the sign is taken for learning
        full_action_space=False,
    )
    env.xla()  # registers the XLA targets (once per process)
    handle = np.frombuffer(env.ale.handle(), dtype=np.uint8).copy()
    return Pool(env, handle, size, int(env.single_action_space.n))


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class AleState(NamedTuple):
    handle: jax.Array  # uint8 [8]: the pool's handle (the same for every env of the pool)
    pending: jax.Array  # bool: the last step ended the game, so the next one only resets
    frame: jax.Array  # int32 frames into the game (ale-py's episode_frame_number)


def _frames(obs: jax.Array) -> jax.Array:
    """[..., 4, 84, 84] uint8 -> [..., 84, 84, 4] float32 in [0, 1]."""
    return jnp.moveaxis(obs, -3, -1).astype(jnp.float32) / 255.0


def _fold(x: jax.Array, batched: bool, size: int) -> jax.Array:
    return x.reshape((-1,) + x.shape[2:]) if batched else jnp.tile(x, (size,) + (1,) * (x.ndim - 1))


class AleEnv:
    """An ALE game as a ppo.Env (see the module docstring)."""

    discrete = True
    action_low = action_high = None
    obs_shape = (84, 84, 4)
    max_episode_steps = MAX_FRAMES // FRAME_SKIP
    needs_one_device = True  # one pool per process: the runs cannot be sharded over devices
    restarts_on_resume = True  # a checkpoint cannot hold the emulators: resume starts new games

    def __init__(self, name: str) -> None:
        self.name = name
        self.rom, self.sticky = parse_name(name)
        self.action_dim = pool(self.rom, self.sticky, 1).actions
        self._reset = self._make_reset()
        self._step = self._make_step()

    # Flat functions over k emulators, folded by custom_vmap from any number of vmapped axes.

    def _make_reset(self) -> Any:
        rom, sticky = self.rom, self.sticky

        @jax.custom_batching.custom_vmap
        def reset(seeds: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
            handle, obs, frame = pool(rom, sticky, seeds.shape[0]).reset(seeds)
            # Every env of the pool carries the pool's handle.
            return jnp.tile(handle, (seeds.shape[0], 1)), _frames(obs), frame

        @reset.def_vmap
        def rule(axis_size: int, in_batched: list[bool], seeds: jax.Array):
            (batched,) = in_batched
            outs = reset(_fold(seeds, batched, axis_size))
            return tuple(o.reshape((axis_size, -1) + o.shape[1:]) for o in outs), (True,) * 3

        return reset

    def _make_step(self) -> Any:
        rom, sticky = self.rom, self.sticky

        @jax.custom_batching.custom_vmap
        def step(handles: jax.Array, actions: jax.Array) -> tuple[jax.Array, ...]:
            k = actions.shape[0]
            out = pool(rom, sticky, k).step(handles[0], actions)
            handle, obs, reward, terminated, truncated, lives, frame = out
            return (
                jnp.tile(handle, (k, 1)),
                _frames(obs),
                reward.astype(jnp.float32),
                terminated,
                truncated,
                lives,
                frame,
            )

        @step.def_vmap
        def rule(axis_size: int, in_batched: list[bool], handles: jax.Array, actions: jax.Array):
            hb, ab = in_batched
            outs = step(_fold(handles, hb, axis_size), _fold(actions, ab, axis_size))
            return tuple(o.reshape((axis_size, -1) + o.shape[1:]) for o in outs), (True,) * 7

        return step

    # The one-environment interface (the trainer vmaps it).

    def reset(self, key: jax.Array) -> tuple[jax.Array, AleState]:
        seed = jax.random.randint(key, (1,), 0, 2**30, dtype=jnp.int32)
        handles, obs, frame = self._reset(seed)
        return obs[0], AleState(handles[0], jnp.zeros((), bool), frame[0])

    def step(self, key: jax.Array, state: AleState, action: jax.Array) -> Step:
        handles, obs, raw, terminated, truncated, lives, frame = self._step(
            state.handle[None], jnp.asarray(action, jnp.int32)[None]
        )
        obs, raw, lives, frame = obs[0], raw[0], lives[0], frame[0]
        terminated, truncated = terminated[0], truncated[0]
        # This step only reset the emulator if the last one ended the game (a truncation, or a
        # termination with no life left), or, for games that end with lives on the counter,
        # if the game's frame count went back (a new game started).
        placeholder = state.pending | (frame < state.frame)
        game_over = (terminated & (lives == 0)) | truncated
        return Step(
            obs=obs,
            state=AleState(handles[0], game_over & ~placeholder, frame),
            reward=jnp.sign(raw),
            terminated=terminated & ~placeholder,
            truncated=truncated & ~terminated & ~placeholder,
            final_obs=obs,  # next-step reset: this step's frames are the true next ones
            valid=jnp.where(placeholder, 0.0, 1.0),
            # The game's score is complete when its placeholder comes: the statistics count
            # the game there (the placeholder itself adds no score and no step).
            episode_end=placeholder,
            score=raw,
        )


def random_play(env: AleEnv, num_envs: int, steps: int) -> Any:
    """A jitted key -> Step [steps, num_envs] of uniformly random actions through the vmapped
    one-environment interface the trainer uses (each observation reduced to its mean)."""

    @jax.jit
    def play(key: jax.Array) -> Step:
        _, state = jax.vmap(env.reset)(jax.random.split(key, num_envs))

        def body(st: AleState, k: jax.Array) -> tuple[AleState, Step]:
            a = jax.random.randint(k, (num_envs,), 0, env.action_dim)
            out = jax.vmap(env.step)(jax.random.split(k, num_envs), st, a)
            return out.state, out._replace(obs=out.obs.mean((1, 2, 3)), final_obs=0.0, state=0)

        return jax.lax.scan(body, state, jax.random.split(key, steps))[1]

    return play
