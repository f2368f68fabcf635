"""Shipped defaults per environment: the standalone trainer's gymnax presets plus brax ones."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

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


PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """A named preset (see preset_names()) or a YAML file -> (env, config fields, hparams).

    The YAML has optional keys `env`, `config` (Config fields) and `hparams` (HParams fields).
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(
            f"--config {name_or_path!r}: no such file or preset; "
            f"presets: {', '.join(preset_names())}"
        )
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"env", "config", "hparams"}
    if not isinstance(data, dict) or unknown:
        raise ValueError(
            f"{path}: top-level keys must be env, config, hparams; got {sorted(unknown)}"
        )
    config = dict(data.get("config") or {})
    if "hidden_sizes" in config:
        config["hidden_sizes"] = tuple(config["hidden_sizes"])
    cfg_names = {f.name for f in dataclasses.fields(Config)}
    hp_names = {f.name for f in dataclasses.fields(HParams)}
    for section, names, values in (
        ("config", cfg_names, config),
        ("hparams", hp_names, data.get("hparams") or {}),
    ):
        bad = set(values) - names
        if bad:
            raise ValueError(
                f"{path}: unknown {section} fields {sorted(bad)}; known: {sorted(names)}"
            )
    return data.get("env"), config, dict(data.get("hparams") or {})
