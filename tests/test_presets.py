"""Shipped settings: one definition per preset, each loads into valid settings, the shipped
defaults are the tuned winners on record, and a named preset means the same whatever the
environments' shipped defaults become."""

import dataclasses
import json
from pathlib import Path

import pytest

from purejaxppo.ppo import (
    CLASSIC_PRESET,
    MINATAR_GAMES,
    MINATAR_PRESET,
    Config,
    HParams,
    check_fields_apply,
    field_applies,
    preset,
)
from purejaxppo.presets import (
    ENV_DEFAULT_PRESETS,
    PRESET_DIR,
    defaults_for,
    load_preset,
    preset_names,
)

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
MINATAR_ENVS = tuple(f"{g}-MinAtar" for g in MINATAR_GAMES)
CLASSIC_ENVS = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")
BRAX_ENVS = ("brax:hopper", "brax:halfcheetah", "brax:inverted_pendulum")


def used_with(name: str, env: str | None) -> tuple[str, ...]:
    """The environments a named preset is meant for: its own, or for an env-less preset (used
    with --env) the family its name says."""
    if name == "purejaxrl-cartpole":
        return CLASSIC_ENVS  # the classic-control family's previous default
    if env is not None:
        return (env,)
    if "minatar" in name:
        return MINATAR_ENVS
    assert "brax" in name or "mujoco" in name, name
    return BRAX_ENVS


def test_every_preset_loads_into_valid_settings():
    assert {"cartpole", "pendulum", "brax-inverted-pendulum", "brax-ant"} <= set(preset_names())
    assert {"minatar-paper", "atari", "ppo-mujoco", "purejaxrl-minatar"} <= set(preset_names())
    for name in preset_names():
        env, cfg, hp = load_preset(name)
        for task in used_with(name, env):
            config = Config(env=task, **cfg)
            HParams(**hp)
            check_fields_apply(config, [*cfg, *hp])  # sets nothing the run would not read


def test_one_definition_per_preset():
    # An environment's defaults are not copied into a YAML file beside the code that ships them.
    yaml_names = {p.stem for p in PRESET_DIR.glob("*.yaml")}
    assert not yaml_names & set(ENV_DEFAULT_PRESETS)
    for name, env in ENV_DEFAULT_PRESETS.items():
        got_env, cfg, hp = load_preset(name)
        assert got_env == env
        assert (Config(env=env, **cfg), HParams(**hp)) == defaults_for(env)
    # The families share one setting each, as the PPO paper used one setting for every game.
    for env in CLASSIC_ENVS:
        assert defaults_for(env) == (
            Config(env=env, **CLASSIC_PRESET[0]),
            HParams(**CLASSIC_PRESET[1]),
        )
    for env in MINATAR_ENVS:
        assert defaults_for(env) == (
            Config(env=env, **MINATAR_PRESET[0]),
            HParams(**MINATAR_PRESET[1]),
        )
        assert defaults_for(env) == preset(env)  # the standalone file ships the same


# Every named preset but the shipped defaults themselves (atari is every ale: game's default).
REPRODUCTIONS = [n for n in preset_names() if n not in ENV_DEFAULT_PRESETS and n != "atari"]


@pytest.mark.parametrize("name", REPRODUCTIONS)
def test_a_named_preset_does_not_depend_on_the_shipped_defaults(name):
    # A reproduction (minatar-paper, purejaxrl-cartpole, trpo-cartpole, ...) must mean what it
    # says after a family's defaults are retuned: every field the run reads is the same over
    # the environment's shipped defaults as over the plain Config and HParams defaults.
    env, cfg, hp = load_preset(name)
    for task in used_with(name, env):
        base_cfg, base_hp = defaults_for(task)
        over_shipped = (base_cfg.replace(**cfg), base_hp.replace(**hp))
        over_plain = (Config(env=task, **cfg), HParams(**hp))
        config = over_plain[0]
        differ = [
            f.name
            for obj in (0, 1)
            for f in dataclasses.fields(over_plain[obj])
            if field_applies(config, f.name)
            and getattr(over_plain[obj], f.name) != getattr(over_shipped[obj], f.name)
        ]
        assert not differ, f"{name} on {task} takes {differ} from the shipped defaults"


@pytest.mark.parametrize("family", ["classic", "pendulum", "minatar", "brax"])
def test_the_shipped_defaults_are_the_confirmed_winners(family):
    # The record benchmarks/tune.py wrote names the winner it confirmed on fresh seeds; the
    # shipped preset of every task of the family is that setting (traced values rounded to the
    # 3 significant digits that were confirmed, static fields as the winner's program).
    record = json.loads((RESULTS / f"tune_{family}.json").read_text())
    winner = record["winner"]
    assert winner is not None and record["confirm"] is not None
    assigned = dict(item.split("=", 1) for item in winner["set"].split())
    for task in record["tasks"]:
        config, hparams = defaults_for(task)
        for name, text in assigned.items():
            value = getattr(config if hasattr(config, name) else hparams, name)
            if isinstance(value, tuple):
                assert value == tuple(int(x) for x in text.split(",")), (task, name)
            elif isinstance(value, bool):
                assert value == (text == "true"), (task, name)
            elif isinstance(value, str):
                assert value == text, (task, name)
            else:
                assert value == pytest.approx(float(text), rel=1e-12), (task, name)


def test_bad_preset_files_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="presets: "):
        load_preset("no-such-preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: CartPole-v1\nconfig:\n  num_env: 4\n")
    with pytest.raises(ValueError, match="num_env"):
        load_preset(str(bad))


def test_the_paper_mujoco_preset_is_table_1s_base_setting():
    # One definition of the paper's MuJoCo PPO (Table 3): the Table 1 benchmark reads its base
    # setting from the preset.
    from benchmarks.objectives import BASE_CONFIG, BASE_HPARAMS

    _, cfg, hp = load_preset("ppo-mujoco")
    base = Config(env="brax:hopper", total_timesteps=1_000_000, **BASE_CONFIG)
    assert Config(env="brax:hopper", **cfg) == base
    assert HParams(**{**hp, "kl_beta": 1.0, "kl_target": 0.01}) == BASE_HPARAMS
