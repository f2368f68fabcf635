"""Shipped defaults per environment: the standalone trainer's gymnax presets plus brax ones."""

from __future__ import annotations

from typing import Any

from purejaxppo.ppo import PRESETS as GYMNAX_PRESETS
from purejaxppo.ppo import Config, HParams

# Continuous-control defaults for brax tasks: 10 epochs, Adam 3e-4, no entropy bonus, running
# observation and reward normalization (on by default for continuous actions).
BRAX_DEFAULT: tuple[dict[str, Any], dict[str, Any]] = (
    dict(
        num_envs=16, num_steps=128, total_timesteps=1_000_000, update_epochs=10, num_minibatches=8
    ),
    dict(learning_rate=3e-4, ent_coef=0.0),
)


def defaults_for(env: str) -> tuple[Config, HParams]:
    """The Config and HParams a run of `env` starts from before the user's overrides."""
    if env.startswith("brax:"):
        cfg, hp = BRAX_DEFAULT
    else:
        cfg, hp = GYMNAX_PRESETS.get(env, ({}, {}))
    return Config(env=env, **cfg), HParams(**hp)
