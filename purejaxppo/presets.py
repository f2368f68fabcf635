"""Shipped settings: each environment's defaults and the named presets of `--config NAME`.

One definition each. An environment's defaults live in code (the standalone trainer's gymnax
presets in ppo.py, the brax ones here, real Atari's in `atari.yaml`, playground's in
`brax-16x128.yaml`); a named preset that stands for an environment's defaults (`cartpole`,
`pendulum`, `brax-inverted-pendulum`) is read from that code. Every other named preset is one
YAML file in purejaxppo/presets/.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from purejaxppo.atari import ALE_PREFIX
from purejaxppo.ppo import PRESETS as GYMNAX_PRESETS
from purejaxppo.ppo import Config, HParams
from purejaxppo.suites import CRAFTAX_PREFIX, JUMANJI_PREFIX, PLAYGROUND_PREFIX, XMINIGRID_PREFIX

# brax tasks (one setting for all of them): benchmarks/tune.py's confirmed winner (e64-4) for the
# PPO paper's Table-1 tasks at 1M steps: 64 actors x 64 steps, 4 epochs x 8 minibatches, a 64x64
# tanh MLP, Adam 2.74e-3 annealed, clip 0.226, no entropy bonus, lambda 0.978, c1 0.456, gamma
# 0.995, no gradient clipping (a norm of 1e9 never binds); running observation and reward
# normalization (on by default for continuous actions). On 8 fresh seeds x 1M of each task:
# normalized IQM 0.953 [0.891, 1.01] against the previous default's 0.858 (`brax-16x128`) and the
# paper's settings' 0.888 (`ppo-mujoco`): ahead of both on hopper and walker2d, of the previous
# default on halfcheetah (level with the paper's), level on the pendulums, behind on reacher
# (BENCHMARKS.md, "Tuning the brax defaults"). playground: tasks keep `brax-16x128`: they were
# not part of that search.
BRAX_DEFAULT: tuple[dict[str, Any], dict[str, Any]] = (
    dict(
        network="mlp", hidden_sizes=(64, 64), activation="tanh", num_envs=64, num_steps=64,
        total_timesteps=1_000_000, update_epochs=4, num_minibatches=8,
    ),
    dict(
        learning_rate=0.00274, gamma=0.995, gae_lambda=0.978, clip_coef=0.226, ent_coef=0.0,
        vf_coef=0.456, max_grad_norm=1e9,
    ),
)  # fmt: skip

# jumanji tasks (one setting for all of them): the MinAtar default's shape (64 envs, a 64x64
# ReLU MLP, 4 epochs x 8 minibatches) with 64-step rollouts, Adam 3e-3 annealed, no entropy
# bonus. The learning rate was picked from 1e-3, 3e-3, 1e-2 on Knapsack-v1 (2 seeds x 300k
# steps, 2026-12-06); not tuned further (BENCHMARKS.md, "jumanji").
JUMANJI_DEFAULT: tuple[dict[str, Any], dict[str, Any]] = (
    dict(
        network="mlp", hidden_sizes=(64, 64), activation="relu", num_envs=64, num_steps=64,
        total_timesteps=1_000_000, update_epochs=4, num_minibatches=8,
    ),
    dict(learning_rate=3e-3, ent_coef=0.0),
)  # fmt: skip

# Craftax games: the Craftax paper's PPO baseline (a 3 x 512 tanh MLP, Adam 2e-4 annealed,
# lambda 0.8, entropy 0.01, clip 0.2, gradient norm 1.0, 4 epochs x 8 minibatches of 64-step
# rollouts) on 64 environments instead of its 1024, so that a 1M-step run on a small machine
# makes 244 updates rather than 15. Pixel games put DQN's conv torso (nature_cnn) before it.
CRAFTAX_DEFAULT: tuple[dict[str, Any], dict[str, Any]] = (
    dict(
        network="mlp", hidden_sizes=(512, 512, 512), activation="tanh", num_envs=64,
        num_steps=64, total_timesteps=1_000_000, update_epochs=4, num_minibatches=8,
    ),
    dict(learning_rate=2e-4, gae_lambda=0.8, ent_coef=0.01, max_grad_norm=1.0),
)  # fmt: skip

# XLand-MiniGrid: the jumanji preset's shape on the [V, V, 2] view flattened (64 envs x 64
# steps, a 64x64 ReLU MLP, 4 x 8), Adam 1e-3 as xminigrid's own PPO baseline, entropy 0.03: the
# one of lr {3e-4, 1e-3, 3e-3} x entropy {0.01, 0.03} that solved all 8 runs of Empty-8x8 and
# DoorKey-5x5 (seeds 0-3 x 500k steps, 2026-12-06; BENCHMARKS.md) with the most entropy.
XMINIGRID_DEFAULT: tuple[dict[str, Any], dict[str, Any]] = (
    JUMANJI_DEFAULT[0],
    dict(learning_rate=1e-3, ent_coef=0.03),
)

# Named presets that are an environment's shipped defaults: name -> env.
ENV_DEFAULT_PRESETS = {
    "cartpole": "CartPole-v1",
    "pendulum": "Pendulum-v1",
    "brax-inverted-pendulum": "brax:inverted_pendulum",
    "brax-humanoid": "brax:humanoid",  # the brax family default on the humanoid tasks
    "brax-humanoid-steer": "brax:humanoid_steer",
    "jumanji": "jumanji:Knapsack-v1",  # every jumanji: task starts from it
    "craftax": "craftax:Craftax-Classic-Symbolic-v1",  # every craftax: game
    "xminigrid": "xminigrid:MiniGrid-Empty-8x8",  # every xminigrid: task
    "playground": "playground:CartpoleBalance",  # every playground: task (brax-16x128)
}


def default_fields(env: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Config fields, HParams fields) the shipped defaults of `env` set; copies."""
    if env.startswith("brax:"):
        cfg, hp = BRAX_DEFAULT
    elif env.startswith(PLAYGROUND_PREFIX):
        _, cfg, hp = load_preset("brax-16x128")  # the brax default until 2026-12
    elif env.startswith(CRAFTAX_PREFIX):
        cfg, hp = CRAFTAX_DEFAULT
        if "-Pixels-" in env:  # the images go through DQN's torso, then the same heads
            cfg = {**cfg, "network": "nature_cnn"}
    elif env.startswith(XMINIGRID_PREFIX):
        cfg, hp = XMINIGRID_DEFAULT
    elif env.startswith(JUMANJI_PREFIX):
        cfg, hp = JUMANJI_DEFAULT
    elif env.startswith(ALE_PREFIX):
        _, cfg, hp = load_preset("atari")  # the paper's Atari settings, for every game
    else:
        cfg, hp = GYMNAX_PRESETS.get(env, ({}, {}))
    return dict(cfg), dict(hp)


def defaults_for(env: str) -> tuple[Config, HParams]:
    """The Config and HParams a run of `env` starts from before the user's overrides."""
    cfg, hp = default_fields(env)
    return Config(env=env, **cfg), HParams(**hp)


PRESET_DIR = Path(__file__).parent / "presets"


def preset_settings(name: str, env: str | None = None) -> tuple[Config, HParams]:
    """A named preset's Config and HParams on `env` (default: the preset's own env), over that
    env's shipped defaults as `train --config NAME --env ENV` starts from them."""
    preset_env, cfg, hp = load_preset(name)
    env = env or preset_env
    if env is None:
        raise ValueError(f"preset {name!r} names no environment: pass one")
    config, hparams = defaults_for(env)
    return config.replace(**cfg), hparams.replace(**hp)


def preset_names() -> list[str]:
    return sorted({*ENV_DEFAULT_PRESETS, *(p.stem for p in PRESET_DIR.glob("*.yaml"))})


def load_preset(name_or_path: str) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """A named preset (see preset_names()) or a YAML file -> (env, config fields, hparams).

    The YAML has optional keys `env`, `config` (Config fields) and `hparams` (HParams fields).
    """
    if name_or_path in ENV_DEFAULT_PRESETS:
        env = ENV_DEFAULT_PRESETS[name_or_path]
        return (env, *default_fields(env))
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(
            f"--config {name_or_path!r}: no such file or preset; "
            f"presets: {', '.join(preset_names())}"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or "cannot parse"
        raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read it ({err})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a mapping with keys env, config, hparams; got a "
            f"{type(data).__name__}"
        )
    unknown = set(data) - {"env", "config", "hparams"}
    if unknown:
        raise ValueError(
            f"{path}: top-level keys must be env, config, hparams; got {sorted(map(str, unknown))}"
        )
    if data.get("env") is not None and not isinstance(data["env"], str):
        raise ValueError(f"{path}: env must be an environment name, got {data['env']!r}")
    for section in ("config", "hparams"):
        if not isinstance(data.get(section) or {}, dict):
            raise ValueError(
                f"{path}: {section} must be a mapping of field: value, got {data[section]!r}"
            )
    config = dict(data.get("config") or {})
    cfg_names = {f.name for f in dataclasses.fields(Config)}
    hp_names = {f.name for f in dataclasses.fields(HParams)}
    for section, names, values in (
        ("config", cfg_names, config),
        ("hparams", hp_names, data.get("hparams") or {}),
    ):
        bad = set(values) - names
        if bad:
            raise ValueError(
                f"{path}: unknown {section} fields {sorted(map(str, bad))}; known: {sorted(names)}"
            )
    for name, example in (("hidden_sizes", "[64, 64]"), ("log_std_schedule", "[-0.7, -1.6]")):
        if name in config:
            values = config[name]
            if not isinstance(values, list):
                raise ValueError(
                    f"{path}: config.{name} must be a list like {example}, got {values!r}"
                )
            config[name] = tuple(values)
    for name, value in config.items():
        if isinstance(value, (list, dict)):
            raise ValueError(f"{path}: config.{name} must be a single value, got {value!r}")
    for name, value in (data.get("hparams") or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}: hparams.{name} must be a number, got {value!r}")
    return data.get("env"), config, dict(data.get("hparams") or {})
