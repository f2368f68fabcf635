"""Image observations: convolutional torsos, the shared-torso loss, MinAtar end to end."""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_networks import LAPACK, assert_orthogonal, primitives

from purejaxppo.ppo import (
    ActorCritic,
    Config,
    Conv,
    GymnaxEnv,
    HParams,
    check_obs_shape,
    conv_layers,
    current_clip,
    make_train,
    patch_indices,
    policy_loss,
    ppo_loss,
    resolve_normalization,
    value_loss,
)


def image_config(**changes):
    """A MinAtar trainer small enough to compile and run in seconds: 3 updates of 4 envs x 8."""
    base = dict(
        env="Breakout-MinAtar", network="minatar_cnn", conv_channels=4, num_envs=4, num_steps=8,
        total_timesteps=96, update_epochs=2, num_minibatches=2,
    )  # fmt: skip
    return Config(**{**base, **changes})


# ------------------------------------------------------------------------------------------
# The convolution: patches @ kernel, the same numbers as lax's convolution.
# ------------------------------------------------------------------------------------------


def test_patch_indices_by_hand():
    # A 3x3 one-channel image, flat indices 0..8 row by row; 2x2 patches, stride 1:
    #   (0,0): 0 1 / 3 4    (0,1): 1 2 / 4 5    (1,0): 3 4 / 6 7    (1,1): 4 5 / 7 8
    np.testing.assert_array_equal(
        patch_indices(3, 3, 1, 2, 1),
        [[[0, 1, 3, 4], [1, 2, 4, 5]], [[3, 4, 6, 7], [4, 5, 7, 8]]],
    )
    # Two channels, stride 2 on a 3x3 image: one patch; channel fastest, as in a [k, k, C] kernel.
    np.testing.assert_array_equal(patch_indices(3, 3, 2, 2, 2), [[[0, 1, 2, 3, 6, 7, 8, 9]]])


@pytest.mark.parametrize(
    "size, channels, features, kernel, stride",
    [(10, 4, 16, 3, 1), (84, 4, 16, 8, 4), (20, 16, 32, 4, 2), (9, 3, 64, 3, 1), (11, 2, 5, 3, 2)],
)
def test_conv_equals_lax_convolution(size, channels, features, kernel, stride):
    x = jax.random.normal(jax.random.key(0), (2, 3, size, size, channels))  # two batch axes
    conv = Conv(features, kernel, stride)
    params = conv.init(jax.random.key(1), x)
    params = jax.tree.map(lambda a: jax.random.normal(jax.random.key(2), a.shape), params)
    out = jax.jit(conv.apply)(params, x)
    expected = jax.lax.conv_general_dilated(
        x.reshape(-1, size, size, channels), params["params"]["kernel"], (stride, stride),
        "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
    ) + params["params"]["bias"]  # fmt: skip
    chex.assert_shape(out, (2, 3, *expected.shape[1:]))
    np.testing.assert_allclose(out, expected.reshape(out.shape), rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------------------
# Torsos: shapes, init scales, no LAPACK.
# ------------------------------------------------------------------------------------------

TORSOS = {
    # network: (obs shape, {layer: kernel shape}, features)
    "mlp": ((10, 10, 4), {"hidden_0": (400, 64), "hidden_1": (64, 64)}, 64),
    "minatar_cnn": ((10, 10, 7), {"conv_0": (3, 3, 7, 8), "dense": (8 * 8 * 8, 128)}, 128),
    "cnn": (
        (84, 84, 4),
        {"conv_0": (8, 8, 4, 16), "conv_1": (4, 4, 16, 32), "dense": (9 * 9 * 32, 256)},
        256,
    ),
    "nature_cnn": (
        (84, 84, 4),
        {
            "conv_0": (8, 8, 4, 32),
            "conv_1": (4, 4, 32, 64),
            "conv_2": (3, 3, 64, 64),
            "dense": (7 * 7 * 64, 512),
        },
        512,
    ),  # fmt: skip
}


def image_network(network, obs_shape, action_dim=5):
    cfg = Config(env="Breakout-MinAtar", network=network, conv_channels=8)
    layers = () if network == "mlp" else conv_layers(cfg)
    return ActorCritic(
        action_dim=action_dim, discrete=True, obs_shape=obs_shape, network=network,
        conv_layers=layers,
    )  # fmt: skip


@pytest.mark.integration  # compiles each network
@pytest.mark.parametrize("network", sorted(TORSOS))
def test_every_torso_shapes_and_init_scales(network):
    obs_shape, kernels, features = TORSOS[network]
    net = image_network(network, obs_shape)
    params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, *obs_shape)))["params"]
    torsos = ["actor_torso", "critic_torso"] if network == "mlp" else ["torso"]
    assert set(params) == {*torsos, "policy_head", "value_head"}
    for torso in torsos:
        assert set(params[torso]) == set(kernels)
        for layer, shape in kernels.items():
            assert params[torso][layer]["kernel"].shape == shape
            assert_orthogonal(params[torso][layer]["kernel"], 2.0**0.5)
            np.testing.assert_array_equal(params[torso][layer]["bias"], 0.0)
    assert params["policy_head"]["kernel"].shape == (features, 5)
    assert_orthogonal(params["policy_head"]["kernel"], 0.01)
    assert_orthogonal(params["value_head"]["kernel"], 1.0)
    # Any leading axes: [2, 3, *obs] -> logits [2, 3, A], value [2, 3].
    obs = jax.random.uniform(jax.random.key(1), (2, 3, *obs_shape))
    dist, value, _ = jax.jit(net.apply)({"params": params}, obs)
    chex.assert_shape(dist.loc, (2, 3, 5))
    chex.assert_shape(value, (2, 3))
    # Policy head gain 0.01: the first policy is close to uniform.
    assert float(jnp.abs(dist.loc).max()) < 0.5


def test_conv_network_init_uses_no_lapack_under_vmap():
    net = image_network("minatar_cnn", (10, 10, 4))
    closed = jax.make_jaxpr(jax.vmap(lambda k: net.init(k, jnp.zeros((1, 10, 10, 4)))))(
        jax.random.split(jax.random.key(0), 2)
    )
    used = primitives(closed.jaxpr)
    assert "scan" in used and not used & LAPACK


# ------------------------------------------------------------------------------------------
# The shared torso trains on the combined loss L^{CLIP+VF+S}.
# ------------------------------------------------------------------------------------------


def loss_parts(net, obs, actions):
    """Gradients of the policy loss alone, of the value loss alone, and of ppo_loss."""
    from purejaxppo.ppo import Batch, Dist

    n = obs.shape[0]
    adv = jnp.linspace(-1.0, 1.0, n)
    returns = jnp.linspace(2.0, -2.0, n)
    old_logp = jnp.full(n, -1.0)

    def pg(p):
        from purejaxppo.ppo import dist_log_prob

        logp = dist_log_prob(True, net.apply(p, obs, method=ActorCritic.policy)[0], actions)
        return policy_loss("clip", logp, old_logp, adv, 0.0, 0.2, 0.0)

    def vf(p):
        return value_loss(
            net.apply(p, obs, method=ActorCritic.value)[0], returns, returns, 0.2, False
        )

    params = net.init(jax.random.key(0), obs[:1])
    cfg = Config(env="Breakout-MinAtar", norm_adv=False, clip_vloss=False)
    batch = Batch(obs, actions, old_logp, Dist(jnp.zeros((n, 3)), jnp.zeros((n, 1))),
                  returns, adv, returns)  # fmt: skip
    hp = HParams(ent_coef=0.0, vf_coef=0.7)
    combined = jax.grad(lambda p: ppo_loss(p, net, cfg, True, batch, hp, 0.0)[0])(params)
    return jax.grad(pg)(params)["params"], jax.grad(vf)(params)["params"], combined["params"]


def norm(tree):
    return float(sum(jnp.sum(x**2) for x in jax.tree.leaves(tree)) ** 0.5)


@pytest.mark.integration  # compiles the network's gradients
def test_shared_torso_gets_gradient_from_both_heads():
    net = image_network("minatar_cnn", (10, 10, 4), action_dim=3)
    obs = (jax.random.uniform(jax.random.key(1), (16, 10, 10, 4)) < 0.2).astype(jnp.float32)
    actions = jax.random.randint(jax.random.key(2), (16,), 0, 3)
    g_pi, g_v, g_all = loss_parts(net, obs, actions)
    assert norm(g_pi["torso"]) > 0 and norm(g_v["torso"]) > 0
    # Each head's own parameters get only their own loss's gradient.
    assert norm(g_pi["value_head"]) == 0 and norm(g_v["policy_head"]) == 0
    # The combined loss (no entropy here) is pg + c1 * vf, so its gradient is the sum.
    expected = jax.tree.map(lambda a, b: a + 0.7 * b, g_pi, g_v)
    for a, b in zip(jax.tree.leaves(g_all), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.integration  # compiles the network's gradients
def test_mlp_keeps_actor_and_critic_apart():
    net = image_network("mlp", (10, 10, 4), action_dim=3)
    obs = jax.random.uniform(jax.random.key(1), (16, 10, 10, 4))
    actions = jax.random.randint(jax.random.key(2), (16,), 0, 3)
    g_pi, g_v, _ = loss_parts(net, obs, actions)
    assert norm(g_pi["actor_torso"]) > 0 and norm(g_pi["critic_torso"]) == 0
    assert norm(g_v["critic_torso"]) > 0 and norm(g_v["actor_torso"]) == 0


# ------------------------------------------------------------------------------------------
# Settings: bad shapes refused, image normalization off by default, clip annealing.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, shape, message",
    [
        ({"network": "cnn"}, (4,), r"needs image observations \[H, W, C\]; .* gives shape \(4,\)"),
        ({"network": "cnn"}, (10, 10, 4), "needs images of at least 20x20"),
        ({"network": "nature_cnn"}, (30, 30, 4), "needs images of at least 36x36"),
        ({"network": "minatar_cnn"}, (2, 9, 3), "needs images of at least 3x3"),
    ],
)
def test_conv_torsos_refuse_observations_they_cannot_take(changes, shape, message):
    with pytest.raises(ValueError, match=rf"Config\.network=.*{message}"):
        check_obs_shape(Config(**changes), shape)
    check_obs_shape(Config(), shape)  # an MLP takes any shape


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"network": "resnet"}, "network"),
        ({"conv_channels": 0}, "conv_channels"),
        ({"anneal_clip": "yes"}, "anneal_clip"),
    ],  # fmt: skip
)
def test_new_config_fields_are_checked(changes, field):
    with pytest.raises(ValueError, match=rf"Config\.{field}"):
        Config(**changes)


def test_image_observations_are_not_normalized_by_default():
    env = GymnaxEnv("Freeway-MinAtar")
    assert env.obs_shape == (10, 10, 7)
    assert resolve_normalization(Config(env="Freeway-MinAtar"), env) == (False, False)
    assert resolve_normalization(Config(env="Pendulum-v1"), GymnaxEnv("Pendulum-v1")) == (
        True,
        True,
    )
    forced = Config(env="Freeway-MinAtar", normalize_obs=True)
    assert resolve_normalization(forced, env) == (True, False)


def test_clip_anneals_with_the_papers_alpha():
    # alpha = 1 - update / num_updates: 4 updates -> 1, 0.75, 0.5, 0.25 of epsilon.
    cfg = Config(num_envs=4, num_steps=8, total_timesteps=128, num_minibatches=2)
    hp = HParams(clip_coef=0.1)
    got = [float(current_clip(cfg.replace(anneal_clip=True), hp, jnp.int32(u))) for u in range(4)]
    np.testing.assert_allclose(got, [0.1, 0.075, 0.05, 0.025], rtol=1e-6)
    assert float(current_clip(cfg, hp, jnp.int32(3))) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------
# MinAtar end to end (compiles a trainer).
# ------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_minatar_cnn_trains_seeds_in_one_call_and_anneals_clip():
    # Image normalization is off by default; turned on, its statistics keep the image shape.
    cfg = image_config(anneal_clip=True, normalize_obs=True)
    train = jax.jit(jax.vmap(make_train(cfg), in_axes=(0, None)))
    keys = jax.random.split(jax.random.key(0), 3)
    state, metrics = train(keys, HParams(clip_coef=0.1))
    chex.assert_shape(state.env.obs, (3, 4, 10, 10, 4))
    chex.assert_shape((state.norm.obs.mean, state.norm.obs.var), (3, 10, 10, 4))
    assert np.all(np.asarray(state.norm.obs.count) > 3 * 4 * 8)  # every step was merged in
    chex.assert_shape(metrics["episode_return"], (3, 3))
    assert np.all(np.asarray(metrics["finite"]) == 1)
    np.testing.assert_allclose(metrics["clip_coef"][0], [0.1, 0.1 * 2 / 3, 0.1 / 3], rtol=1e-6)
    # Seed 1 inside the vmap is seed 1 alone (up to batched-matmul rounding).
    alone = jax.jit(make_train(cfg))(keys[1], HParams(clip_coef=0.1))[1]
    np.testing.assert_allclose(metrics["policy_loss"][1], alone["policy_loss"], rtol=1e-4,
                               atol=1e-6)  # fmt: skip


TWO_DEVICES = textwrap.dedent(
    """
    import jax, numpy as np
    from purejaxppo.ppo import Config, HParams
    from purejaxppo.sweep import layout_runs, make_grid, make_mesh, train_runs
    assert jax.device_count() == 2
    cfg = Config(env="Breakout-MinAtar", network="minatar_cnn", conv_channels=4, num_envs=4,
                 num_steps=8, total_timesteps=32 * 6, update_epochs=2, num_minibatches=2)
    runs = layout_runs(HParams(), make_grid({"learning_rate": [2.5e-4, 1e-3]}), 2, 0)
    _, m2 = train_runs(cfg, runs, chunk=3)
    _, m1 = train_runs(cfg, runs, chunk=3, mesh=make_mesh(jax.devices()[:1]))
    worst = max(float(np.nanmax(np.abs(m2[k].astype(float) - m1[k].astype(float))))
                for k in m2)
    print("RESULT", m2["episode_return"].shape, worst)
    """
)


@pytest.mark.integration
def test_cnn_on_two_devices_agrees_with_one_device_per_seed():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run(
        [sys.executable, "-c", TWO_DEVICES], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shape, worst = proc.stdout.split("RESULT")[1].rsplit(maxsplit=1)
    print("CNN, 2 devices vs 1: max abs diff", worst)
    assert shape.strip() == "(4, 6)"
    # Per-device batches round differently; over 6 updates the runs stay within float noise.
    assert float(worst) < 1e-4


@pytest.mark.integration
def test_minatar_from_the_command_line_checkpoint_eval_and_render(tmp_path, capsys):
    import json

    from PIL import Image

    from purejaxppo.cli import main

    out = tmp_path / "run"
    argv = ["train", "--env", "Breakout-MinAtar", "--config", "minatar-paper", "--num-seeds", "2",
            "--total-timesteps", "96", "--checkpoint-every", "2", "--out", str(out), "--set",
            "num_envs=4", "num_steps=8", "num_minibatches=2", "conv_channels=4"]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((out / "config.json").read_text())["config"]
    # The paper's Atari settings with the conv torso under the user's overrides.
    assert record["network"] == "minatar_cnn" and record["anneal_clip"] is True
    assert record["update_epochs"] == 3 and record["conv_channels"] == 4
    gif = tmp_path / "episode.gif"
    capsys.readouterr()
    assert main(["eval", str(out), "--episodes", "2", "--render", str(gif)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(result["runs"]) == 2 and result["update"] == 3
    frames = Image.open(gif)
    assert frames.n_frames == result["render"]["frames"] > 1
