"""The purejaxppo command line: results on disk, and bad input refused before compiling."""

import json

import numpy as np
import pytest

from purejaxppo.cli import main

TINY = ["--set", "num_envs=2", "num_steps=16", "hidden_sizes=8", "update_epochs=1"]


@pytest.mark.integration
def test_train_writes_results(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--env", "CartPole-v1", "--num-seeds", "3", "--total-timesteps", "320",
                 "--out", str(out), *TINY])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    # final_return is [setting][seed]; without --sweep there is one setting.
    assert summary["num_seeds"] == 3 and len(summary["final_return"]) == 1
    assert len(summary["final_return"][0]) == 3
    assert summary["total_timesteps"] == 320
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["num_envs"] == 2 and config["config"]["hidden_sizes"] == [8]
    metrics = np.load(out / "metrics.npz")
    assert metrics["episode_return"].shape == (1, 3, 10)
    np.testing.assert_array_equal(metrics["env_steps"], np.arange(1, 11) * 32)
    assert str(out.resolve()) in capsys.readouterr().err
    assert (out / "curves.png").stat().st_size > 0
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["10"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env", "CartPole-v9"], "unknown environment"),
        (["--env", "CartPole-v1", "--set", "num_minibatches=5"], "Config.num_minibatches"),
        (["--env", "CartPole-v1", "--set", "gamma=2"], "HParams.gamma"),
        (["--env", "CartPole-v1", "--set", "learning_rat=1"], "unknown field 'learning_rat'"),
        (["--env", "CartPole-v1", "--set", "num_envs=two"], "num_envs"),
        (["--env", "CartPole-v1", "--set", "norm_adv"], "field=value"),
        (["--env", "CartPole-v1", "--num-seeds", "0"], "--num-seeds"),
        (["--env", "CartPole-v1", "--set", "network=cnn"], "needs image observations [H, W, C]"),
        (["--env", "Breakout-MinAtar", "--set", "network=cnn"], "at least 20x20"),
        (["--env", "Breakout-MinAtar", "--set", "network=nature_cnn"], "at least 36x36"),
        (["--env", "Breakout-MinAtar", "--set", "network=vit"], "Config.network must be one"),
        (["--env", "Breakout-MinAtar", "--set", "conv_channels=0"], "Config.conv_channels"),
        (["--env", "CartPole-v1", "--sweep", "network=mlp,minatar_cnn"], "(4,)"),
        (["--env", "CartPole-v1", "--set", "num_envs=2.5e0"], "num_envs: cannot read '2.5e0'"),
        (["--env", "CartPole-v1", "--set", "total_timesteps=1e400"], "total_timesteps"),
        (["--env", "CartPole-v1", "--set", "learning_rate=1e400"], "HParams.learning_rate"),
        (["--env", "CartPole-v1", "--set", "hidden_sizes=64,1.5"], "hidden_sizes"),
        (["--env", "CartPole-v1", "--devices", "0"], "--devices must be a positive integer"),
        (["--env", "CartPole-v1", "--devices", "3"], "--devices 3: use_cpu_cores(3) came too"),
        (
            ["--env", "CartPole-v1", "--num-seeds", "4", "--memory-budget-mb", "0.01"],
            "do not fit in 0 MiB even in batches",
        ),  # fmt: skip
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    code = main(["train", *argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_unwritable_output_folder_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["train", "--env", "CartPole-v1", "--out", str(blocker / "sub")])
    assert code == 2
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--env", "CartPole-v1", "--out", "x", "--bogus"], "unrecognized arguments"),
        (["train", "--num-seeds", "many"], "'many'"),
        (["train", "--env", "CartPole-v1", "--total-timesteps", "1e400"], "expected an integer"),
        (["train", "--env", "CartPole-v1", "--seed", "1e30"], "outside the 64-bit integer range"),
        (["train", "--env", "CartPole-v1", "--seed", "2.5"], "expected an integer"),
        (["train", "--env", "CartPole-v1", "--memory-budget-mb", "nan"], "positive number of MiB"),
        (["train", "--env", "CartPole-v1", "--memory-budget-mb", "lots"], "positive number"),
        (["eval", "x", "--episodes", "1.5"], "expected an integer"),
        (["fly"], "invalid choice"),
    ],
)
def test_argparse_errors_are_one_line_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
