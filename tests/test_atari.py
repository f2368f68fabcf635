"""Real Atari through ale-py (purejaxppo/atari.py): the install hint without the extra; the
preprocessing against a hand-made pipeline on the emulator's own screens; lost lives against
whole games; a Breakout run through the trainer; the same seed twice; a resume. Skipped only
where the atari extra is missing (make test installs it)."""

from __future__ import annotations

import json
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.cli import main


def cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def test_without_the_extra_the_command_line_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py.roms", None)  # import fails as if not installed
    out = tmp_path / "run"
    assert cli(["train", "--env", "ale:Breakout", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'purejaxppo[atari]'" in err
    assert not out.exists()


ale_py = pytest.importorskip("ale_py")


def test_unknown_games_and_variants_are_refused(tmp_path, capsys):
    for env, message in [
        ("ale:NoSuchGame", "ale-py has no game 'NoSuchGame'"),
        ("ale:Breakout:slippery", "unknown variant 'slippery'"),
    ]:
        assert cli(["train", "--env", env, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()


def test_names_map_to_rom_ids():
    from purejaxppo.atari import parse_name

    assert parse_name("ale:SpaceInvaders") == ("space_invaders", False)
    assert parse_name("ale:pong:sticky") == ("pong", True)


def hand_pipeline(seed: int, actions: list[int]) -> list[np.ndarray]:
    """Breakout stacks by hand from the emulator's grayscale screens: reset, FIRE (as ale-py
    does for games that need it), then per step 4 frames of the action, the max of the last two
    screens, INTER_AREA resize to 84x84, a stack of the last 4 (zeros before the first)."""
    import cv2

    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(ale_py.roms.get_rom_path("breakout"))
    ale.reset_game()
    minimal = ale.getMinimalActionSet()
    ale.act(minimal[1])  # FIRE
    resize = lambda f: cv2.resize(f, (84, 84), interpolation=cv2.INTER_AREA)  # noqa: E731
    frames = [np.zeros((84, 84), np.uint8)] * 3 + [resize(ale.getScreenGrayscale())]
    stacks = [np.stack(frames[-4:])]
    for a in actions:
        shots = []
        for _ in range(4):
            ale.act(minimal[a])
            shots.append(ale.getScreenGrayscale())
        frames.append(resize(np.maximum(shots[-2], shots[-1])))
        stacks.append(np.stack(frames[-4:]))
    return stacks


def test_preprocessing_matches_a_hand_pipeline_on_the_emulators_screens():
    from purejaxppo.atari import _frames, pool

    p = pool("breakout", False, 1, noop_max=0)  # no random no-ops: the hand pipeline can follow
    actions = [1, 2, 2, 3, 0, 3, 2, 1, 0, 0]
    handle, obs, _ = jax.jit(p.reset)(jnp.array([7], jnp.int32))
    got = [np.asarray(obs[0])]
    step = jax.jit(p.step)
    for a in actions:
        handle, obs, *_rest = step(handle, jnp.array([a], jnp.int32))
        got.append(np.asarray(obs[0]))
    want = hand_pipeline(7, actions)
    for t, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_array_equal(g, w, err_msg=f"step {t}")
    assert not np.array_equal(want[-1][-1], want[-1][-2])  # the frames move
    # The policy sees the stack channels-last in [0, 1], the newest frame last.
    seen = np.asarray(_frames(jnp.asarray(got[-1])))
    assert seen.shape == (84, 84, 4)
    np.testing.assert_allclose(seen[..., 3], want[-1][3] / 255.0, atol=1e-7)
    np.testing.assert_allclose(seen[..., 0], want[-1][0] / 255.0, atol=1e-7)


def play(env_name: str, num_envs: int, steps: int, seed: int = 0):
    from purejaxppo.atari import AleEnv, random_play

    env = AleEnv(env_name)
    return env, jax.tree.map(np.asarray, random_play(env, num_envs, steps)(jax.random.key(seed)))


def test_lost_lives_end_learning_episodes_not_games():
    # Random Breakout: 5 lives a game. A lost life is `terminated` (GAE bootstraps 0) but the
    # game goes on; the game's end brings one placeholder step (valid 0) that ends the episode
    # for the statistics. Learning sees the sign of each reward, the statistics the raw score.
    env, out = play("ale:Breakout", 2, 1500)
    assert env.action_dim == 4
    for n in range(2):
        term, valid, end = out.terminated[:, n], out.valid[:, n], out.episode_end[:, n]
        assert end.sum() >= 2
        np.testing.assert_array_equal(valid == 0, end)  # each game's end is its placeholder
        games = np.flatnonzero(end)
        for a, b in zip(games[:-1], games[1:], strict=True):
            # 5 lives lost within each whole game (the last one is the game over)
            assert term[a + 1 : b].sum() == 5, (n, a, b)
        assert (out.reward[valid == 0, n] == 0).all() and not term[valid == 0].any()
    np.testing.assert_array_equal(out.reward, np.sign(out.score))
    assert out.score.max() >= 1 and not out.truncated.any()


@pytest.mark.integration
def test_the_same_seed_twice_gives_the_same_run_and_resume_restarts_the_games(tmp_path, capsys):
    args = ["--env", "ale:Breakout", "--num-seeds", "2", "--total-timesteps", "512",
            "--checkpoint-every", "2", "--set", "num_envs=4", "num_steps=32",
            "update_epochs=1", "num_minibatches=2"]  # fmt: skip
    for name in ("a", "b"):
        assert main(["train", *args, "--out", str(tmp_path / name)]) == 0
    a, b = np.load(tmp_path / "a" / "metrics.npz"), np.load(tmp_path / "b" / "metrics.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert np.isfinite(a["episode_return"]).any()
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["devices"] == 1  # one emulator pool: the runs stay on one device
    # Stopped after update 2 (its checkpoint kept, the later one gone): --resume continues with
    # new games (a checkpoint cannot hold the emulators) and finishes.
    shutil.rmtree(tmp_path / "a" / "checkpoints" / "4")
    (tmp_path / "a" / "summary.json").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "a")]) == 0
    assert "the emulators cannot be checkpointed: every game restarts" in capsys.readouterr().err
    resumed = np.load(tmp_path / "a" / "metrics.npz")
    np.testing.assert_array_equal(resumed["finite"], 1)
    assert resumed["episode_return"].shape == a["episode_return"].shape


@pytest.mark.slow(seconds=67)
def test_breakout_20k_steps_through_the_trainer(tmp_path):
    # The atari preset (paper Table 5, Mnih et al. 2016 network), one seed, 20,480 steps.
    out = tmp_path / "breakout"
    assert main(["train", "--config", "atari", "--total-timesteps", "20480",
                 "--out", str(out)]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    metrics = np.load(out / "metrics.npz")
    assert summary["env"] == "ale:Breakout" and summary["total_timesteps"] == 20480
    assert metrics["episode_return"].shape == (1, 1, 20)
    assert (metrics["finite"] == 1).all() and metrics["episodes"].sum() >= 10
    # Raw Breakout scores of whole games (a random policy scores about 1-2 per game).
    finals = np.array(summary["final_return"])
    assert np.isfinite(finals).all() and (finals >= 0).all()
