"""What PPO's epochs of minibatch updates cost on top of the network's own forward and backward
passes (issue 12), one layer of the update at a time.

Every program runs the default CartPole config's update phase alone: 16 seeds (vmapped) x 100
updates x 4 epochs x 4 minibatches of 128 steps through the 64x64 actor and critic, on a fixed
batch of made-up data (the cost does not depend on it). They differ only in the minibatch step:

  floor_constant   gradient of the sum of the outputs (constant output weights), plain step
  floor            gradient of a loss linear in the outputs with per-sample weights, plain step:
                   the least any loss's gradient costs (a constant weight lets XLA fold much
                   of the backward pass away, so floor_constant is no floor for a real loss)
  ppo_sgd          the trainer's PPO loss (ppo_loss) and gradient, plain step, no shuffle
  ppo              + the trainer's optimizer (global-norm clip + Adam), no shuffle
  ppo_shuffled     + the trainer's per-epoch shuffle (random_permutations): the trainer's update
  ppo_old_shuffle  the same with jax.random.permutation, the shuffle before 2026-12-02

All are compiled with the trainer's compiler options, then run round-robin 3 times in this one
process (best of 3 counts). GFLOP/s count the matmuls of the update (forward, weight and input
gradients of every layer) from the layer shapes, as the throughput benchmark's profile does.

  python benchmarks/update_cost.py          # writes benchmarks/results/update_cost.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from purejaxppo.ppo import (
    Batch,
    Config,
    Dist,
    HParams,
    categorical_log_prob,
    compiler_options,
    make_optimizer,
    make_trainer,
    ppo_loss,
    random_permutations,
)

RESULTS = Path(__file__).resolve().parent / "results"
SEEDS, UPDATES, REPEATS = 16, 100, 3
STEPS = ("floor_constant", "floor", "ppo_sgd", "ppo", "ppo_shuffled", "ppo_old_shuffle")


def update_flops(config: Config, obs_dim: int, action_dim: int, seeds: int, updates: int) -> float:
    """Matmul FLOPs of `updates` updates' epochs of minibatch updates for `seeds` seeds, counted
    from the layer shapes: forward, weight gradients and input gradients (none for the
    observation input) of both torsos and the heads, for every row of every epoch. The
    throughput benchmark's profile counts its update phase with this too."""
    widths = [obs_dim, *config.hidden_sizes]
    torso = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    forward = 2 * torso + widths[-1] * (action_dim + 1)  # both torsos and the heads, per row
    backward = 2 * forward - 2 * obs_dim * widths[1]  # dW everywhere, dX above the input
    rows = seeds * updates * config.update_epochs * config.batch_size
    return 2.0 * (forward + backward) * rows


def make_program(config: Config, step: str):
    trainer = make_trainer(config)
    network, hparams = trainer.network, HParams()
    n, obs_dim = config.batch_size, trainer.env.obs_shape[0]

    def made_up_batch(key: jax.Array) -> Batch:
        k = jax.random.split(key, 6)
        action = jax.random.randint(k[1], (n,), 0, 2)
        logits = 0.1 * jax.random.normal(k[2], (n, 2))
        return Batch(
            jax.random.normal(k[0], (n, obs_dim)),
            action,
            categorical_log_prob(logits, action),
            Dist(logits, jnp.zeros((n, 1))),
            jax.random.normal(k[3], (n,)),
            jax.random.normal(k[4], (n,)),
            jax.random.normal(k[5], (n,)),
        )

    def plain_step(params, grads):
        return jax.tree.map(lambda p, g: p - 1e-6 * g, params, grads)

    def run(key: jax.Array):
        state = trainer.init(key, hparams)
        data = made_up_batch(key)
        optimizer = make_optimizer(config, hparams)

        def minibatch(c, mb: Batch):
            params, opt_state = c
            if step == "floor_constant":
                grads = jax.grad(
                    lambda p: sum(x.sum() for x in jax.tree.leaves(network.apply(p, mb.obs)[:2]))
                )(params)
                return (plain_step(params, grads), opt_state), None
            if step == "floor":

                def linear_loss(p):
                    dist, value, _ = network.apply(p, mb.obs)
                    return jnp.sum(dist.loc * mb.dist.loc) + jnp.sum(value * mb.advantages)

                return (plain_step(params, jax.grad(linear_loss)(params)), opt_state), None
            grads, _ = jax.grad(ppo_loss, has_aux=True)(
                params, network, config, True, mb, hparams, state.kl_beta
            )
            if step == "ppo_sgd":
                return (plain_step(params, grads), opt_state), None
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        def epoch(c, perm):
            order = (lambda x: x[perm]) if perm is not None else (lambda x: x)
            cut = jax.tree.map(
                lambda x: order(x).reshape((config.num_minibatches, -1) + x.shape[1:]), data
            )
            return jax.lax.scan(minibatch, c, cut)[0], None

        def update(c, k):
            if step == "ppo_shuffled":
                perms = random_permutations(k, config.update_epochs, n)
            elif step == "ppo_old_shuffle":
                perms = jax.vmap(jax.random.permutation, in_axes=(0, None))(
                    jax.random.split(k, config.update_epochs), n
                )
            else:
                return jax.lax.scan(lambda c, _: epoch(c, None), c, None, config.update_epochs)
            return jax.lax.scan(epoch, c, perms)

        c, _ = jax.lax.scan(update, (state.params, state.opt_state), jax.random.split(key, UPDATES))
        return c[0]

    return jax.jit(jax.vmap(run), compiler_options=compiler_options())


def main() -> None:
    config = Config()
    trainer = make_trainer(config)
    flops = update_flops(config, trainer.env.obs_shape[0], trainer.env.action_dim, SEEDS, UPDATES)
    keys = jax.random.split(jax.random.key(0), SEEDS)
    compiled, compile_s = {}, {}
    for step in STEPS:
        t = time.perf_counter()
        compiled[step] = make_program(config, step).lower(keys).compile()
        compile_s[step] = round(time.perf_counter() - t, 2)
    best = dict.fromkeys(STEPS, float("inf"))
    for _ in range(REPEATS):
        for step in STEPS:
            t = time.perf_counter()
            jax.block_until_ready(compiled[step](keys))
            best[step] = min(best[step], time.perf_counter() - t)
    minibatch_steps = UPDATES * config.update_epochs * config.num_minibatches  # each for every seed
    rows = {
        step: {
            "run_seconds": round(best[step], 3),
            "compile_seconds": compile_s[step],
            "gflops": round(flops / best[step] / 1e9, 1),
            "ms_per_minibatch_step": round(best[step] / minibatch_steps * 1e3, 3),
            "floor_over_this": round(best["floor"] / best[step], 3),
        }
        for step in STEPS
    }
    out = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "devices": len(jax.devices()),
            "backend": jax.default_backend(),
            "jax": jax.__version__,
            "date": time.strftime("%Y-%m-%d"),
        },
        "seeds": SEEDS,
        "updates": UPDATES,
        "update_gflop": round(flops / 1e9, 1),
        "programs": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "update_cost.json").write_text(json.dumps(out, indent=1) + "\n")
    header = ("program", "run s", "GFLOP/s", "ms/minibatch", "floor/this")
    print("{:16s} {:>7s} {:>8s} {:>13s} {:>10s}".format(*header))
    for step, r in rows.items():
        print(
            f"{step:16s} {r['run_seconds']:7.3f} {r['gflops']:8.1f} "
            f"{r['ms_per_minibatch_step']:13.3f} {r['floor_over_this']:10.3f}"
        )
    print("wrote benchmarks/results/update_cost.json", file=sys.stderr)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import write_report

    write_report()


if __name__ == "__main__":
    main()
