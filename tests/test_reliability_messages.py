"""Messages that say what they mean (issue 25, items 5 and 6): a refusal is one whole line, a
--config file is held to the same fields as --set, brax's import noise stays off the console,
and the standalone ppo.py refuses bad flags in one line and names the seeds that diverged."""

import importlib.util
import itertools
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import purejaxppo.ppo
from purejaxppo.ppo import (
    CORES,
    FIELD_SCOPES,
    OBJECTIVES,
    OPTIMIZERS,
    Config,
    check_fields_apply,
    field_applies,
)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "purejaxppo.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def console(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def every_config() -> list[Config]:
    """One Config per valid combination of the fields that decide which fields a run reads."""
    configs = []
    for objective, optimizer, core, clip_vloss, adaptive_lr in itertools.product(
        OBJECTIVES, OPTIMIZERS, CORES, (True, False), (True, False)
    ):
        if objective == "trpo" and adaptive_lr:
            continue  # refused by Config itself
        configs.append(
            Config(
                objective=objective,
                optimizer=optimizer,
                core=core,
                clip_vloss=clip_vloss,
                adaptive_lr=adaptive_lr,
            )
        )
    return configs


def test_a_refused_field_says_what_the_run_has_for_every_combination():
    # The example: ent_coef on a TRPO run ended "...; this run has " (nothing after).
    with pytest.raises(ValueError) as err:
        check_fields_apply(Config(objective="trpo"), ["ent_coef"])
    assert str(err.value).endswith("; this run has objective=trpo"), str(err.value)

    refusals = 0
    for config in every_config():
        for name, scope in FIELD_SCOPES.items():
            if field_applies(config, name):
                check_fields_apply(config, [name])  # a field the run reads passes
                continue
            with pytest.raises(ValueError) as err:
                check_fields_apply(config, [name])
            refusals += 1
            text = str(err.value)
            match = re.fullmatch(rf"{name} applies only with (.+); this run has (.+)", text)
            assert match, text
            # The run's own value of every field the condition names, and nothing else.
            have = dict(pair.split("=") for pair in match[2].split(", "))
            assert set(have) == set(scope.on), text
            assert have == {f: str(getattr(config, f)).lower() for f in scope.on}, text
            assert set(re.findall(r"([a-z_]+)=", match[1])) == set(scope.on), text
    assert refusals > 100  # every scoped field is refused somewhere


@pytest.mark.parametrize("field", ["objective", "optimizer", "core"])
def test_a_scope_on_one_field_names_exactly_the_values_that_read_it(field):
    # "applies only with objective=clip, none, kl_fixed or kl_adaptive" must list the very
    # objectives whose runs read the field, no more, no fewer.
    values = {"objective": OBJECTIVES, "optimizer": OPTIMIZERS, "core": CORES}[field]
    scopes = {n: s for n, s in FIELD_SCOPES.items() if s.on == (field,)}
    assert scopes
    for name, scope in scopes.items():
        listed = scope.needs.removeprefix(f"{field}=").split(" (")[0]
        named = set(re.split(r", | or ", listed))
        reads = {v for v in values if scope.reads(Config(**{field: v}))}
        assert named == reads, (name, scope.needs)


def write_yaml(folder: Path, text: str) -> Path:
    path = folder / "mine.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def settings(*argv: str):
    from purejaxppo.cli import build_parser, settings_from_args

    return settings_from_args(build_parser().parse_args(["train", *argv]))


def test_a_yaml_field_the_run_would_not_read_is_refused_like_a_set_one(tmp_path):
    from purejaxppo.cli import UsageError

    trpo_field = write_yaml(tmp_path, "env: CartPole-v1\nhparams:\n  max_kl: 0.02\n")
    with pytest.raises(UsageError, match="max_kl applies only with objective=trpo; this run has"):
        settings("--config", str(trpo_field))
    # The same file is fine where the run reads the field: a --set makes it TRPO.
    config, hparams, _, _ = settings("--config", str(trpo_field), "--set", "objective=trpo")
    assert config.objective == "trpo" and hparams.max_kl == 0.02
    # ... or one variant of a static sweep is TRPO.
    settings("--config", str(trpo_field), "--sweep", "objective=clip,trpo")

    rmsprop_field = tmp_path / "adam.yaml"
    rmsprop_field.write_text("env: Pendulum-v1\nhparams:\n  rmsprop_eps: 0.001\n")
    with pytest.raises(UsageError, match="rmsprop_eps applies only with optimizer=rmsprop"):
        settings("--config", str(rmsprop_field))
    gru_field = tmp_path / "gru.yaml"
    gru_field.write_text("config:\n  core_size: 32\n")
    with pytest.raises(UsageError, match=r"--config .*gru.yaml: core_size applies only with"):
        settings("--config", str(gru_field), "--env", "CartPole-v1")


def test_every_shipped_preset_loads_and_a_set_may_turn_its_fields_off():
    from purejaxppo.presets import load_preset, preset_names

    for name in preset_names():
        env = load_preset(name)[0]
        if env is None:  # an env-less preset is used with --env
            env = "brax:ant" if "brax" in name else "CartPole-v1"
            env = "Breakout-MinAtar" if "minatar" in name else env
        if env.startswith("ale:") and importlib.util.find_spec("ale_py") is None:
            continue  # the atari extra is not installed
        settings("--config", name, "--env", env)
    # A preset's own field that a --set turns off was asked for (the README's core=none on a
    # GRU preset, a TRPO preset run with the clip objective).
    config, _, _, _ = settings("--config", "gru-cartpole", "--set", "core=none")
    assert config.core == "none"
    config, _, _, _ = settings("--config", "trpo-cartpole", "--set", "objective=clip")
    assert config.objective == "clip"


@pytest.mark.integration
@pytest.mark.parametrize(
    "argv, says",
    [
        # The example: the refusal ended mid-sentence.
        (["--env", "CartPole-v1", "--set", "objective=trpo", "ent_coef=0"],
         "ent_coef applies only with objective=clip, none, kl_fixed or kl_adaptive "
         "(trpo has no entropy bonus); this run has objective=trpo"),
        (["--env", "CartPole-v1", "--sweep", "objective=trpo", "--set", "ent_coef=0.1"],
         "this run has objective=trpo"),
        # The example of a field read from a file: accepted silently before.
        (["--config", "{yaml}"],
         "--config {yaml}: max_kl applies only with objective=trpo; this run has objective=clip"),
        (["--config", "{yaml}", "--env", "Breakout-MinAtar"],
         "--config {yaml}: max_kl applies only with objective=trpo"),
    ],
)  # fmt: skip
def test_refusals_are_one_whole_line_and_write_nothing(tmp_path, argv, says):
    yaml = write_yaml(tmp_path, "env: CartPole-v1\nhparams:\n  max_kl: 0.02\n")
    argv = [a.replace("{yaml}", str(yaml)) for a in argv]
    out = tmp_path / "run"
    proc = run_cli("train", *argv, "--out", str(out))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = console(proc)
    assert len(lines) == 1 and lines[0].startswith("purejaxppo: error: "), lines
    assert says.replace("{yaml}", str(yaml)) in lines[0], lines
    assert not out.exists()


@pytest.mark.integration
@pytest.mark.parametrize(
    "argv",
    [
        ["--env", "brax:inverted_pendulum", "--set", "max_kl=0.1"],  # the example
        ["--env", "brax:no_such_task"],
        ["--env", "brax:inverted_pendulum", "--set", "network=cnn"],  # builds the env first
    ],
)
def test_a_brax_refusal_is_exactly_one_line(tmp_path, argv):
    out = tmp_path / "run"
    proc = run_cli("train", *argv, "--out", str(out))
    assert proc.returncode == 2
    lines = console(proc)
    assert len(lines) == 1 and lines[0].startswith("purejaxppo: error: "), lines
    assert not out.exists()


@pytest.mark.integration
def test_a_brax_environment_builds_and_steps_without_console_noise():
    # Where both kinds of noise came from: mujoco's "Failed to import warp" lines on importing
    # brax, and brax's "not actively being maintained" warning on loading a system.
    code = textwrap.dedent(
        """
        import jax
        from purejaxppo.envs import make_env
        env = make_env("brax:inverted_pendulum")
        obs, state = env.reset(jax.random.key(0))
        step = jax.jit(env.step)(jax.random.key(1), state, jax.numpy.zeros(env.action_dim))
        jax.block_until_ready(step.obs)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "" and proc.stderr == "", (proc.stdout, proc.stderr)


# --- The standalone ppo.py, copied out and run as a script -------------------------------------

# Imports of the package refused outright: the standalone file must not need it, on any path.
RUNNER = r"""
import importlib.abc, runpy, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "purejaxppo":
            raise ImportError(f"standalone ppo.py imported {name}")
        return None
sys.meta_path.insert(0, Refuse())
sys.argv = ["ppo.py"] + sys.argv[1:]
runpy.run_path("ppo.py", run_name="__main__")
"""

# PureJaxRL's CartPole settings pinned (the Config and HParams defaults): what these runs do must
# not move when CartPole's shipped defaults are retuned.
TINY = ["--devices", "1", "--num-envs", "2", "--num-steps", "16", "--total-timesteps", "256",
        "--hidden-sizes", "8", "--learning-rate", "0.00025", "--gamma", "0.99", "--gae-lambda",
        "0.95", "--clip-coef", "0.2", "--ent-coef", "0.01", "--vf-coef", "0.5"]  # fmt: skip


def standalone(folder: Path, *argv: str, code: str = RUNNER) -> subprocess.CompletedProcess:
    shutil.copy(Path(purejaxppo.ppo.__file__), folder / "ppo.py")
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=folder, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize(
    "argv, says",
    [
        # The example: a 22-line usage dump ending in "invalid <lambda> value: 'x'".
        (["--num-envs", "x"], "argument --num-envs: expected an integer in [1, 2^63), got 'x'"),
        (["--num-seeds", "2.5"], "argument --num-seeds: expected an integer in [1, 2^63)"),
        (["--seed", "1e30"], "argument --seed: expected an integer in [-2^63, 2^63)"),
        (["--hidden-sizes", "a,b"], "argument --hidden-sizes: expected positive integers"),
        (["--objective", "ppo"],
         "argument --objective: expected one of clip, none, kl_fixed, kl_adaptive, trpo, "
         "got 'ppo'"),
        (["--adaptive-lr", "auto"], "argument --adaptive-lr: expected true or false, got 'auto'"),
        (["--learning-rate", "nan"], "argument --learning-rate: expected a number >= 0"),
        (["--gamma", "1.5"], "argument --gamma: expected a number in [0, 1], got '1.5'"),
        (["--foo", "3"], "unrecognized arguments: --foo 3"),
        (["--env", "brax:ant"], "--env brax:ant: this file trains gymnax environments by id"),
        (["--objective", "trpo", "--ent-coef", "0"], "this run has objective=trpo"),
    ],
)  # fmt: skip
def test_standalone_refuses_a_bad_flag_in_one_line(tmp_path, argv, says):
    proc = standalone(tmp_path, *argv)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = console(proc)
    assert len(lines) == 1 and lines[0].startswith("ppo.py: error: "), lines
    assert says in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ppo.py"]  # nothing written


# One seed of three gets a learning rate of 1e38 (the others keep theirs): its parameters
# overflow in the first update. The command line is the file's own main().
POISON = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp
    import ppo
    real = ppo.make_train
    def make_train(config, env=None):
        train = real(config, env)
        doomed = jax.random.key_data(jax.random.split(jax.random.key(0), 3)[1])
        def poisoned(key, hparams):
            hit = jnp.all(jax.random.key_data(key) == doomed)
            lr = jnp.where(hit, 1e38, hparams.learning_rate)
            return train(key, hparams.replace(learning_rate=lr))
        return poisoned
    ppo.make_train = make_train
    args, sys.argv = sys.argv[1:], ["ppo.py"]
    ppo.main(["--num-seeds", "3", *args])
    """
)


@pytest.mark.integration
def test_standalone_names_a_diverged_seed_and_leaves_it_out_of_the_mean(tmp_path):
    proc = standalone(tmp_path, *TINY, code=POISON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [d["seed"] for d in result["diverged"]] == [1]
    update = result["diverged"][0]["update"]
    assert f"ppo.py: seed #1 went non-finite at update {update}; left out of final_return_mean" in (
        proc.stderr.splitlines()
    ), proc.stderr
    finals = result["final_return"]
    assert finals[1] is not None  # the diverged seed still ended episodes: it would count
    assert result["final_return_mean"] == pytest.approx((finals[0] + finals[2]) / 2, abs=1e-3)


@pytest.mark.integration
def test_standalone_with_every_seed_diverged_has_no_mean(tmp_path):
    proc = standalone(tmp_path, *TINY, "--num-seeds", "2", "--learning-rate", "1e38")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [d["seed"] for d in result["diverged"]] == [0, 1]
    named = [line for line in proc.stderr.splitlines() if "went non-finite" in line]
    assert len(named) == 2, proc.stderr
    assert result["final_return_mean"] is None
