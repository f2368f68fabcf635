"""Training throughput of purejaxppo against the rollout-only limit and against peer PPOs.

    python benchmarks/throughput.py              # everything: about 25 minutes on 2 CPU cores
    python benchmarks/throughput.py --quick      # scaling and profile only, short runs
    python benchmarks/throughput.py --only peers # one section: scaling, profile, peers, sweep

Sections (each writes benchmarks/results/<section>.json; then BENCHMARKS.md is rebuilt):
- scaling: CartPole-v1 with the default config for 1, 4, 16, 64, 256 seeds and for num_envs 4, 64,
  512 at 16 seeds. Each point runs in a fresh process: the trainer (`jit(vmap(make_train))`) and,
  in the same process, a rollout-only reference with the same env, network forward, action
  sampling, vmap over seeds and nested scans (updates x steps), and no learning. Reported:
  compile and run seconds apart, steps/s over all seeds, efficiency = trainer / reference steps/s,
  peak RSS and XLA's buffer sizes.
- profile: at 16 seeds, where the time of one update goes (rollout, critic bootstrap + GAE, the
  epochs of minibatch updates), a "learning floor" (the same forward and backward passes with
  nothing else), and the hottest XLA ops from a profiler trace.
- peers: Stable-Baselines3 PPO on CartPole and brax's own PPO on inverted_pendulum, each in its
  own virtualenv (benchmarks/peers), beside our trainer on the same task and hyperparameters.
- sweep: a 1024-seed CartPole sweep through the `purejaxppo train` command, its peak RSS.
- pixels: Breakout-MinAtar with the minatar-paper preset (the paper's Atari settings) at 8 and
  16 seeds, the minatar_cnn torso and the MLP, each against its rollout-only reference in the
  same process, compile apart from run.
- recurrent: the gru-cartpole preset (CartPole with positions only) with its GRU core against
  the same settings without a core, 16 seeds, fresh processes alternated; compile apart.
- accelerator: on a GPU or TPU (refused on the CPU), the scaling, pixels and recurrent points at
  the sizes an accelerator is for (up to 4096 CartPole seeds, 256 MinAtar seeds), all in one
  process so that one short lease measures them: writes benchmarks/results/accelerator.json.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SEEDS = (1, 4, 16, 64, 256)
NUM_ENVS = (4, 64, 512)


def run_updates(num_seeds: int, num_envs: int, quick: bool) -> int:
    """Updates per timed run: long enough to time (several seconds), short enough to sweep."""
    full = {4: 200, 64: 30, 512: 6}[num_envs]
    if num_seeds >= 64:
        full = full * 16 // num_seeds * 4  # the same order of total steps as 16 seeds x 200
    return max(2, full // 4) if quick else full


# ---------------------------------------------------------------------------------------------
# Worker side: runs inside a fresh process, imports JAX, prints one JSON line.
# ---------------------------------------------------------------------------------------------


def make_reference(config: Any, trainer: Any):
    """Rollout-only: the trainer's init, then updates x steps of forward, sample, env step."""
    import jax

    from purejaxppo.ppo import HParams, dist_log_prob, dist_sample

    env, network = trainer.env, trainer.network
    hparams = HParams()

    def run(key: jax.Array) -> jax.Array:
        state = trainer.init(key, hparams)

        def one_update(c, _):
            env_state, obs, key, total = c
            key, rollout_key = jax.random.split(key)

            def step(c, step_key):
                env_state, obs, total = c
                act_key, env_key = jax.random.split(step_key)
                dist, value, _ = network.apply(state.params, obs)
                action = dist_sample(env.discrete, dist, act_key)
                log_prob = dist_log_prob(env.discrete, dist, action)
                out = jax.vmap(env.step)(
                    jax.random.split(env_key, config.num_envs), env_state, action
                )
                # Keep every output alive, as the trainer stores them for learning.
                total = total + log_prob.sum() + value.sum() + out.reward.sum()
                return (out.state, out.obs, total), None

            (env_state, obs, total), _ = jax.lax.scan(
                step, (env_state, obs, total), jax.random.split(rollout_key, config.num_steps)
            )
            return (env_state, obs, key, total), None

        init = (state.env.state, state.env.obs, state.key, jax.numpy.zeros(()))
        return jax.lax.scan(one_update, init, None, length=config.num_updates)[0][3]

    return run


def compile_program(fn: Any, keys: Any) -> tuple[Any, dict[str, Any]]:
    """Lower and compile fn(keys) with the trainer's compiler options, timing both."""
    import jax

    from purejaxppo.ppo import compiler_options

    t0 = time.perf_counter()
    lowered = jax.jit(fn, compiler_options=compiler_options()).lower(keys)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    mem = compiled.memory_analysis()
    return compiled, {
        "trace_lower_seconds": round(t1 - t0, 3),
        "xla_compile_seconds": round(t2 - t1, 3),
        "compile_seconds": round(t2 - t0, 3),
        "xla_temp_mb": round(getattr(mem, "temp_size_in_bytes", 0) / 2**20, 1),
        "run_seconds_all": [],
    }


def time_programs(fns: dict[str, Any], keys: Any, repeats: int) -> dict[str, dict[str, Any]]:
    """Compile every program, then run them round-robin `repeats` times: a load that comes and
    goes on a shared machine hits all of them alike. The fastest run of each counts."""
    import jax

    compiled = {name: compile_program(fn, keys) for name, fn in fns.items()}
    for _ in range(repeats):
        for program, info in compiled.values():
            t = time.perf_counter()
            jax.block_until_ready(program(keys))
            info["run_seconds_all"].append(round(time.perf_counter() - t, 3))
    return {
        name: {**info, "run_seconds": min(info["run_seconds_all"])}
        for name, (_, info) in compiled.items()
    }


def worker_scaling(num_seeds: int, num_envs: int, updates: int, repeats: int) -> dict[str, Any]:
    import jax
    import numpy as np

    from purejaxppo.driver import peak_rss_mb
    from purejaxppo.ppo import Config, final_return, make_train, make_trainer

    base = Config()
    config = base.replace(num_envs=num_envs, total_timesteps=updates * num_envs * base.num_steps)
    keys = jax.random.split(jax.random.key(0), num_seeds)
    steps = num_seeds * config.num_updates * config.batch_size

    times = time_programs(
        {
            "trainer": jax.vmap(make_train(config)),
            "reference": jax.vmap(make_reference(config, make_trainer(config))),
        },
        keys,
        repeats,
    )
    trainer_t, reference_t = times["trainer"], times["reference"]
    out = {
        "num_seeds": num_seeds,
        "num_envs": num_envs,
        "num_updates": config.num_updates,
        "steps": steps,
        "trainer": {**trainer_t, "steps_per_second": round(steps / trainer_t["run_seconds"])},
        "reference": {**reference_t, "steps_per_second": round(steps / reference_t["run_seconds"])},
        "peak_rss_mb": peak_rss_mb(),
    }
    out["efficiency"] = round(reference_t["run_seconds"] / trainer_t["run_seconds"], 4)
    if num_seeds == 16 and num_envs == 4 and updates >= 200:
        # A learning sanity check on the timed run (not the learning test): mean return of the
        # last 10 updates, which rises from ~20 (random policy).
        _, metrics = jax.jit(jax.vmap(make_train(config)))(keys)
        tail = np.asarray(metrics["episode_return"])[:, -10:]
        out["return_last_10_updates"] = round(float(np.nanmean(tail)), 1)
        out["final_return_mean"] = round(float(np.nanmean(final_return(metrics))), 1)
    return out


def worker_pixels(num_seeds: int, network: str, updates: int, repeats: int) -> dict[str, Any]:
    """Breakout-MinAtar with the minatar-paper preset (8 actors) and the given torso: trainer vs
    rollout-only reference."""
    import jax

    from purejaxppo.driver import peak_rss_mb
    from purejaxppo.ppo import make_train, make_trainer
    from purejaxppo.presets import preset_settings

    config, hparams = preset_settings("minatar-paper", "Breakout-MinAtar")
    changes = (
        {"network": network}
        if network == "minatar_cnn"
        else {"network": network, "activation": "relu"}
    )
    config = config.replace(**changes, total_timesteps=updates * config.batch_size)
    keys = jax.random.split(jax.random.key(0), num_seeds)
    steps = num_seeds * config.num_updates * config.batch_size
    times = time_programs(
        {
            "trainer": jax.vmap(lambda k: make_train(config)(k, hparams)),
            "reference": jax.vmap(make_reference(config, make_trainer(config))),
        },
        keys,
        repeats,
    )
    t, ref = times["trainer"], times["reference"]
    return {
        "env": config.env,
        "network": network,
        "num_seeds": num_seeds,
        "num_envs": config.num_envs,
        "num_updates": config.num_updates,
        "trainer": {**t, "steps_per_second": round(steps / t["run_seconds"])},
        "reference": {**ref, "steps_per_second": round(steps / ref["run_seconds"])},
        "efficiency": round(ref["run_seconds"] / t["run_seconds"], 4),
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_profile(num_seeds: int, updates: int, repeats: int) -> dict[str, Any]:
    """Where one update's time goes, by differences of nested programs, plus hot XLA ops."""
    import jax
    import jax.numpy as jnp

    from purejaxppo.ppo import (
        ActorCritic,
        Config,
        HParams,
        compiler_options,
        compute_gae,
        make_trainer,
        rollout,
    )

    base = Config()
    config = base.replace(total_timesteps=updates * base.batch_size)
    trainer = make_trainer(config)
    env, network, hp = trainer.env, trainer.network, HParams()
    keys = jax.random.split(jax.random.key(0), num_seeds)

    def loop(body):
        def run(key):
            state = trainer.init(key, hp)
            state, _ = jax.lax.scan(lambda s, _: (body(s), None), state, None, config.num_updates)
            return state.params

        return jax.vmap(run)

    def keep(state, params, *arrays):
        # Fold every output into the parameters so nothing is dead code.
        total = sum(jnp.sum(a) for a in arrays)
        return jax.tree.map(lambda p: p + 1e-12 * total, params)

    def rollout_only(s):
        key, rk = jax.random.split(s.key)
        carry, norm, traj = rollout(config, env, network, s.params, s.env, s.norm, rk, hp)
        floats = [x for x in jax.tree.leaves(traj) if x.dtype == jnp.float32]
        return s._replace(key=key, env=carry, norm=norm, params=keep(s, s.params, *floats))

    def rollout_gae(s):
        key, rk = jax.random.split(s.key)
        carry, norm, traj = rollout(config, env, network, s.params, s.env, s.norm, rk, hp)
        next_values, _ = network.apply(s.params, traj.final_obs, method=ActorCritic.value)
        adv, ret = compute_gae(
            traj.reward, traj.value, next_values, traj.terminated, traj.truncated, 0.99, 0.95
        )
        floats = [x for x in jax.tree.leaves(traj) if x.dtype == jnp.float32]
        return s._replace(
            key=key, env=carry, norm=norm, params=keep(s, s.params, adv, ret, *floats)
        )

    def learning_floor(s):
        # The trainer's rollout, then the same number of forward+backward passes on minibatches
        # of the same shape with a plain gradient step: no loss terms, shuffling, GAE, Adam or
        # metrics. No PPO trainer with this network can do less work per update. The loss is
        # linear in the outputs with weights that differ per sample (the rollout's own logits
        # and rewards), as any loss's gradient does: with a constant weight (the sum of the
        # outputs, this floor until 2026-12-02) XLA folds much of the backward pass away.
        key, rk = jax.random.split(s.key)
        carry, norm, traj = rollout(config, env, network, s.params, s.env, s.norm, rk, hp)
        cut = lambda x: x.reshape((config.num_minibatches, -1) + x.shape[2:])  # noqa: E731
        data = (cut(traj.obs), cut(traj.dist.loc), cut(traj.reward))

        def minibatch(p, d):
            obs, w_pi, w_v = d

            def linear_loss(p):
                dist, value, _ = network.apply(p, obs)
                return jnp.sum(dist.loc * w_pi) + jnp.sum(value * w_v)

            g = jax.grad(linear_loss)(p)
            return jax.tree.map(lambda a, b: a - 1e-6 * b, p, g), None

        def epoch(p, _):
            return jax.lax.scan(minibatch, p, data)[0], None

        params = jax.lax.scan(epoch, s.params, None, config.update_epochs)[0]
        return s._replace(key=key, env=carry, norm=norm, params=params)

    def full(s):
        return trainer.update(s, hp)[0]

    def hot_loop(keys):
        # Two updates only: a profiler trace of the long run would drop events.
        def run(key):
            state = trainer.init(key, hp)
            state, _ = jax.lax.scan(lambda s, _: (full(s), None), state, None, 2)
            return state.params

        return jax.vmap(run)(keys)

    programs = {
        "reference": make_reference(config, trainer),
        "rollout": loop(rollout_only),
        "rollout_gae": loop(rollout_gae),
        "learning_floor": loop(learning_floor),
        "trainer": loop(full),
    }
    programs["reference"] = jax.vmap(programs["reference"])
    times = time_programs(programs, keys, repeats)
    run = {k: v["run_seconds"] for k, v in times.items()}
    split = {
        "rollout": run["rollout"],
        "bootstrap_and_gae": max(0.0, run["rollout_gae"] - run["rollout"]),
        "epochs_of_minibatch_updates": max(0.0, run["trainer"] - run["rollout_gae"]),
    }
    # Matmul arithmetic of the epochs of minibatch updates, counted from the network's shapes.
    from update_cost import update_flops as count_update_flops

    update_flops = count_update_flops(
        config, config_obs_dim(trainer), env.action_dim, num_seeds, config.num_updates
    )
    update_seconds = max(1e-9, run["trainer"] - run["rollout_gae"])
    floor_seconds = max(1e-9, run["learning_floor"] - run["rollout"])
    peak = matmul_peak(num_seeds, config, update_flops)
    return {
        "num_seeds": num_seeds,
        "num_updates": config.num_updates,
        "update_gflop": round(update_flops / 1e9, 2),
        "update_gflops": round(update_flops / update_seconds / 1e9, 2),
        "learning_floor_update_gflops": round(update_flops / floor_seconds / 1e9, 2),
        "matmul_peak": peak,
        "trainer_vs_learning_floor": round(run["learning_floor"] / run["trainer"], 4),
        "programs": times,
        "split_seconds": {k: round(v, 3) for k, v in split.items()},
        "split_fraction": {k: round(v / run["trainer"], 3) for k, v in split.items()},
        "efficiency_trainer": round(run["reference"] / run["trainer"], 4),
        "efficiency_learning_floor": round(run["reference"] / run["learning_floor"], 4),
        "hot_ops": hot_ops(jax.jit(hot_loop, compiler_options=compiler_options()), keys),
    }


def config_obs_dim(trainer: Any) -> int:
    import math

    return math.prod(trainer.env.obs_shape)


def matmul_peak(num_seeds: int, config: Any, flops: float) -> dict[str, Any]:
    """GFLOP/s of batched matmuls in this process, as the update's reference: [seeds, rows, 64]
    @ [seeds, 64, 64] (the widest layer of the default network), run back to back until they
    have done the update phase's arithmetic. Two sizes: one minibatch's rows (the size the
    update multiplies at) and every row of one update's epochs at once (one large matmul)."""
    import jax
    import jax.numpy as jnp

    width = max(config.hidden_sizes)
    out = {}
    for label, rows in (
        ("minibatch_rows", config.minibatch_size),
        ("all_rows_of_an_update", config.update_epochs * config.batch_size),
    ):
        per_call = 2 * num_seeds * rows * width * width
        calls = max(1, int(flops // per_call))
        a = jax.random.normal(jax.random.key(1), (num_seeds, rows, width))
        # Orthogonal: the chained products keep their scale.
        q = jnp.linalg.qr(jax.random.normal(jax.random.key(2), (width, width)))[0]
        w = jnp.broadcast_to(q, (num_seeds, width, width))

        def chain(a, w, calls=calls):
            # Each product feeds the next (as layers do), so none is skipped or batched away.
            return jax.lax.fori_loop(0, calls, lambda _, x: x @ w, a)

        fn = jax.jit(chain)
        jax.block_until_ready(fn(a, w))
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            jax.block_until_ready(fn(a, w))
            best = min(best, time.perf_counter() - t)
        out[label] = {
            "shape": f"[{num_seeds}, {rows}, {width}] @ [{num_seeds}, {width}, {width}]",
            "calls": calls,
            "seconds": round(best, 3),
            "gflops": round(per_call * calls / best / 1e9, 2),
        }
    return out


def hot_ops(fn: Any, keys: Any, top: int = 15) -> list[dict[str, Any]]:
    """Total time per XLA op over a short profiled run, with the source op each came from.

    The profiler adds a fixed cost to every op it records, so many tiny ops (the env step) look
    more expensive than they are; the ranking of the big ones holds.
    """
    import jax

    compiled = fn.lower(keys).compile()
    origin = {}
    for line in compiled.as_text().splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]+)\"", line)
        if m:
            origin[m.group(1)] = m.group(2)
    jax.block_until_ready(compiled(keys))
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            jax.block_until_ready(compiled(keys))
        path = glob.glob(f"{d}/**/perfetto_trace.json.gz", recursive=True)[0]
        trace = json.load(gzip.open(path))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or name not in origin or name.startswith(("while", "call")):
            continue
        total[name] += e.get("dur", 0)
        count[name] += 1
    all_us = sum(total.values())
    rows = []
    for name, us in total.most_common(top):
        src = re.sub(r"jit\([^)]*\)/|vmap\(\)/|while/body/|closed_call/", "", origin[name])
        rows.append(
            {
                "op": name,
                "source": src[-90:],
                "share": round(us / all_us, 4),
                "calls": count[name],
            }
        )
    return rows


def worker_recurrent(
    num_seeds: int, updates: int, repeats: int, seq_lens: tuple[int, ...] = ()
) -> dict[str, Any]:
    """The gru-cartpole preset (CartPole-v1:positions-only) with its GRU core and with core
    none (the same torso, heads and hyperparameters without memory), and the core at each of
    `seq_lens` (0: the whole rollout), compiled in one process and run round-robin. Then the
    replay's gradient alone at the whole-rollout minibatch shape, scan_core against a plain
    scan of the whole cell (the replay before scan_core)."""
    import jax

    from purejaxppo.cli import resolve
    from purejaxppo.driver import peak_rss_mb
    from purejaxppo.envs import make_env
    from purejaxppo.ppo import make_train
    from purejaxppo.presets import load_preset

    env_name, config_fields, hparam_fields = load_preset("gru-cartpole")
    config, hparams = resolve(env_name, {**config_fields, **hparam_fields})
    config = config.replace(total_timesteps=updates * config.batch_size)
    env = make_env(config.env)
    keys = jax.random.split(jax.random.key(0), num_seeds)
    steps = num_seeds * config.num_updates * config.batch_size
    lengths = sorted({config.sequence_length, *(x or config.num_steps for x in seq_lens)})[::-1]
    programs = {}
    wide = {"core_size": 2 * config.core_size}  # the previous preset's width
    for name, changes in [("none", {"core": "none", "seq_len": 0}), ("twice as wide", wide)] + [
        (f"seq_len {n}", {"seq_len": 0 if n == config.num_steps else n}) for n in lengths
    ]:
        train = make_train(config.replace(**changes), env)
        programs[name] = jax.vmap(lambda k, train=train: train(k, hparams))
    times = time_programs(programs, keys, repeats)
    for t in times.values():
        t["steps_per_second"] = round(steps / t["run_seconds"])
    shipped = times[f"seq_len {config.sequence_length}"]
    return {
        "env": config.env,
        "core": config.core,
        "core_size": config.core_size,
        "seq_len": config.sequence_length,
        "num_seeds": num_seeds,
        "num_envs": config.num_envs,
        "num_steps": config.num_steps,
        "num_updates": config.num_updates,
        "none": times["none"],
        "gru": shipped,
        "gru_over_none": round(times["none"]["run_seconds"] / shipped["run_seconds"], 4),
        "seq_len_rows": [
            {
                "seq_len": n,
                **times[f"seq_len {n}"],
                "over_none": round(
                    times["none"]["run_seconds"] / times[f"seq_len {n}"]["run_seconds"], 4
                ),
            }
            for n in lengths
        ],
        "twice_as_wide": {
            "core_size": 2 * config.core_size,
            **times["twice as wide"],
            "over_none": round(
                times["none"]["run_seconds"] / times["twice as wide"]["run_seconds"], 4
            ),
        },
        "backward": replay_gradient_cost(config, env, num_seeds, repeats),
        "peak_rss_mb": peak_rss_mb(),
    }


def replay_gradient_cost(config: Any, env: Any, num_seeds: int, repeats: int) -> dict[str, Any]:
    """The gradient of a loss on the replayed outputs of one whole-rollout minibatch ([T, N / M]
    sequences, vmapped over the seeds, each with its own network): scan_core (the trainer's:
    the core's input gates for all steps in one matmul before the loop) against a plain scan
    that steps the whole cell, input matmul included. Best of `repeats` round-robin runs, in
    ms. A third program, scan_core_autodiff, differentiates scan_core's forward loop with JAX's
    own scan transpose instead of scan_core's backward pass (what the custom VJP saves)."""
    import contextlib

    import jax
    import jax.numpy as jnp

    from purejaxppo import ppo
    from purejaxppo.ppo import ActorCritic, HParams, initial_hidden, make_trainer, replay

    @contextlib.contextmanager
    def autodiff_backward():
        """While tracing: scan_core without its own VJP (the same forward, JAX's transpose)."""
        saved = ppo.scan_core
        ppo.scan_core = lambda cell, *args: ppo.scan_core_forward(cell, *args)[0]
        try:
            yield
        finally:
            ppo.scan_core = saved

    config = config.replace(seq_len=0)
    trainer = make_trainer(config, env)
    seeds = jax.random.split(jax.random.key(0), num_seeds)
    params = jax.vmap(lambda k: trainer.init(k, HParams()).params)(seeds)  # one net per seed
    width = config.num_envs // config.num_minibatches
    shape = (num_seeds, config.num_steps, width)
    obs = jax.random.normal(jax.random.key(1), (*shape, *env.obs_shape))
    done = jax.random.bernoulli(jax.random.key(2), 0.02, shape)
    hidden = initial_hidden(config, (num_seeds, width))

    def plain(network, params, obs, done, hidden):
        feats = network.apply(params, obs, method=ActorCritic.features)

        def step(h, x):
            out, h = network.apply(params, x[0], h, method=ActorCritic.remember)
            return jax.tree.map(lambda a: jnp.where(x[1][:, None], 0.0, a), h), out

        feats = jax.lax.scan(step, hidden, (feats, done))[1]
        return network.apply(params, feats, method=ActorCritic.heads)

    programs = {}
    for name, fn, tracing in (
        ("plain_scan", plain, contextlib.nullcontext),
        ("scan_core_autodiff", replay, autodiff_backward),
        ("scan_core", replay, contextlib.nullcontext),
    ):

        def loss(p, o, d, h, fn=fn):
            dist, value = fn(trainer.network, p, o, d, h)
            return dist.loc.sum() + (value**2).sum()

        grad = jax.jit(jax.vmap(jax.grad(loss)))
        with tracing():
            jax.block_until_ready(grad(params, obs, done, hidden))  # traced and compiled here
        programs[name] = grad
    best = {name: float("inf") for name in programs}
    for _ in range(max(repeats, 5)):
        for name, grad in programs.items():
            t = time.perf_counter()
            jax.block_until_ready(grad(params, obs, done, hidden))
            best[name] = min(best[name], time.perf_counter() - t)
    return {
        "shape": f"{num_seeds} seeds x T {config.num_steps} x {width} sequences",
        **{f"{name}_ms": round(1e3 * t, 2) for name, t in best.items()},
        "speedup": round(best["plain_scan"] / best["scan_core"], 3),
        "vjp_speedup": round(best["scan_core_autodiff"] / best["scan_core"], 3),
    }


# (section, worker arguments) of each point the accelerator section measures, in order.
ACCELERATOR_POINTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("scaling", {"num_seeds": 16, "num_envs": 4, "updates": 100}),
    ("scaling", {"num_seeds": 256, "num_envs": 4, "updates": 100}),
    ("scaling", {"num_seeds": 4096, "num_envs": 4, "updates": 50}),
    ("scaling", {"num_seeds": 16, "num_envs": 512, "updates": 20}),
    ("scaling", {"num_seeds": 256, "num_envs": 512, "updates": 10}),
    ("pixels", {"num_seeds": 16, "network": "minatar_cnn", "updates": 40}),
    ("pixels", {"num_seeds": 256, "network": "minatar_cnn", "updates": 40}),
    ("pixels", {"num_seeds": 256, "network": "mlp", "updates": 40}),
    ("recurrent", {"num_seeds": 16, "updates": 10}),
)


def worker_accelerator(repeats: int, quick: bool) -> dict[str, Any]:
    """Every accelerator point in this one process (a lease of minutes has no time for a JAX
    start per point); each point still times its own programs round-robin."""
    import jax

    if jax.default_backend() == "cpu":
        raise RuntimeError("the accelerator section needs a GPU or TPU; JAX found only the CPU")
    rows = []
    for kind, args in ACCELERATOR_POINTS:
        args = {**args, "repeats": repeats}
        if quick:
            args["updates"] = max(2, args["updates"] // 10)
        t = time.perf_counter()
        fn = {"scaling": worker_scaling, "pixels": worker_pixels, "recurrent": worker_recurrent}
        row = {"section": kind, **fn[kind](**args)}
        row["wall_seconds"] = round(time.perf_counter() - t, 1)
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    device = jax.devices()[0]
    return {"device": device.device_kind, "device_count": jax.device_count(), "points": rows}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.pop("kind")
    if kind == "accelerator":
        return worker_accelerator(**spec)
    if kind == "scaling":
        return worker_scaling(**spec)
    if kind == "profile":
        return worker_profile(**spec)
    if kind == "pixels":
        return worker_pixels(**spec)
    if kind == "recurrent":
        return worker_recurrent(**spec)
    if kind == "ours":
        return worker_ours(**spec)
    raise ValueError(f"unknown worker kind {kind!r}")


def worker_ours(preset: str, num_seeds: int, env: str | None = None) -> dict[str, Any]:
    """Our trainer on a named preset (on `env`, default the preset's own), for the peer
    comparison (one seed, like the peers)."""
    import jax
    import numpy as np

    from purejaxppo.envs import make_env
    from purejaxppo.ppo import evaluate, train_seeds
    from purejaxppo.presets import preset_settings

    config, hparams = preset_settings(preset, env)
    env = make_env(config.env)
    state, metrics, summary = train_seeds(config, hparams, num_seeds, 0, env)
    if config.env.startswith("brax:"):
        # brax reports a deterministic evaluation; do the same (16 episodes, mean action).
        evals = jax.jit(jax.vmap(lambda p, nm, k: evaluate(config, p, nm, k, 16, env)))(
            state.params, state.norm, jax.random.split(jax.random.key(1), num_seeds)
        )
        summary["eval_return"] = round(float(np.mean(np.asarray(evals))), 1)
    summary.pop("final_return", None)
    return summary


# ---------------------------------------------------------------------------------------------
# Driver side: launches workers, collects JSON, writes results and the report.
# ---------------------------------------------------------------------------------------------


def launch(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    import jax

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }


def save(name: str, data: Any) -> None:
    from purejaxppo.files import write_atomic

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    write_atomic(path, json.dumps(data, indent=2).encode())
    print(f"wrote {path.relative_to(ROOT)}", flush=True)


def section_scaling(quick: bool) -> None:
    points = [(s, 4) for s in SEEDS] + [(16, n) for n in NUM_ENVS if n != 4]
    rows = []
    for seeds, num_envs in points:
        spec = {
            "kind": "scaling",
            "num_seeds": seeds,
            "num_envs": num_envs,
            "updates": run_updates(seeds, num_envs, quick),
            "repeats": 1 if quick else 2,
        }
        row = launch(spec)
        print(
            f"seeds {seeds:4d} envs {num_envs:4d}: trainer {row['trainer']['steps_per_second']:>9}"
            f" steps/s, reference {row['reference']['steps_per_second']:>9}, efficiency "
            f"{row['efficiency']:.3f}, compile {row['trainer']['compile_seconds']} s",
            flush=True,
        )
        rows.append(row)
    save("scaling", {"machine": machine(), "quick": quick, "points": rows})
    plot_scaling(rows)


def section_pixels(quick: bool) -> None:
    rows = []
    for seeds in (8, 16):
        for network in ("minatar_cnn", "mlp"):
            spec = {"kind": "pixels", "num_seeds": seeds, "network": network,
                    "updates": 8 if quick else 40, "repeats": 1 if quick else 2}  # fmt: skip
            row = launch(spec)
            print(
                f"Breakout-MinAtar {network:11s} seeds {seeds:3d}: trainer "
                f"{row['trainer']['steps_per_second']:>8} steps/s, reference "
                f"{row['reference']['steps_per_second']:>9}, efficiency {row['efficiency']:.3f}, "
                f"compile {row['trainer']['compile_seconds']} s",
                flush=True,
            )
            rows.append(row)
    save("pixels", {"machine": machine(), "quick": quick, "points": rows})


def section_recurrent(quick: bool) -> None:
    """GRU against no core at 16 seeds: both programs in one process, run alternately."""
    spec = {"kind": "recurrent", "num_seeds": 16, "updates": 4 if quick else 10,
            "repeats": 1 if quick else 3, "seq_lens": [0, 32, 16, 8]}  # fmt: skip
    row = launch(spec)
    for r in row["seq_len_rows"]:
        print(
            f"gru-cartpole 16 seeds, seq_len {r['seq_len']}: {r['steps_per_second']} steps/s, "
            f"{r['over_none']} of none's {row['none']['steps_per_second']}",
            flush=True,
        )
    print(f"replay gradient: {row['backward']}", flush=True)
    save("recurrent", {"machine": machine(), "quick": quick, "row": row})


def section_accelerator(quick: bool) -> None:
    """The accelerator's points in one worker process (see ACCELERATOR_POINTS)."""
    spec = {"kind": "accelerator", "repeats": 1 if quick else 2, "quick": quick}
    # The worker's stderr is left on the console: each point's row shows as it is measured, so
    # a lease that ends early still shows what was measured.
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"accelerator worker failed with exit code {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for row in result["points"]:
        if row["section"] == "recurrent":
            speed = f"gru {row['gru']['steps_per_second']}, none {row['none']['steps_per_second']}"
        else:
            speed = (
                f"trainer {row['trainer']['steps_per_second']}, reference "
                f"{row['reference']['steps_per_second']}, efficiency {row['efficiency']}"
            )
        print(f"{row['section']} seeds {row['num_seeds']} envs {row['num_envs']}: {speed}")
    save("accelerator", {"machine": machine(), "quick": quick, **result})


def plot_scaling(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = [r for r in rows if r["num_envs"] == 4]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    x = [r["num_seeds"] for r in seeds]
    ax.plot(x, [r["trainer"]["steps_per_second"] for r in seeds], "o-", label="trainer")
    ax.plot(x, [r["reference"]["steps_per_second"] for r in seeds], "s--", label="rollout only")
    ax.set(xscale="log", yscale="log", xlabel="seeds (num_envs 4)", ylabel="env steps/s, all")
    ax.set_title("CartPole-v1, default config")
    ax.legend()
    envs = [r for r in rows if r["num_seeds"] == 16]
    bx.plot(x, [r["efficiency"] for r in seeds], "o-", label="vs seeds (num_envs 4)")
    bx.plot(
        [r["num_envs"] for r in envs],
        [r["efficiency"] for r in envs],
        "s-",
        label="vs num_envs (16 seeds)",
    )
    bx.axhline(0.35, color="grey", ls=":", label="issue target 0.35")
    bx.set(xscale="log", xlabel="seeds or num_envs", ylabel="trainer / rollout-only steps/s")
    bx.set_title("efficiency")
    bx.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "throughput.png", dpi=110)
    print(f"wrote {(RESULTS / 'throughput.png').relative_to(ROOT)}")


def section_profile(quick: bool) -> None:
    result = launch(
        {"kind": "profile", "num_seeds": 16, "updates": 40 if quick else 200, "repeats": 3}
    )
    save("profile", {"machine": machine(), **result})
    s = result["split_fraction"]
    print(
        f"profile: {s}; efficiency {result['efficiency_trainer']}, "
        f"learning floor {result['efficiency_learning_floor']}"
    )


def section_peers(sb3_steps: int, brax_steps: int) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.peers.runner import run_peer

    rows = []
    # PureJaxRL's CartPole settings: the hyperparameters the SB3 script mirrors.
    ours = launch({"kind": "ours", "preset": "purejaxrl-cartpole", "num_seeds": 1})
    sb3 = run_peer("sb3", ["--total-timesteps", str(sb3_steps)])
    rows.append({"task": "CartPole-v1", "ours": ours, "peer": sb3})
    print(f"CartPole: ours {ours['steps_per_second']} steps/s vs SB3 {sb3['steps_per_second']}")
    # The brax default until 2026-12 (16 x 128, 10 epochs of 8), which brax_ppo.py's matched
    # setting mirrors.
    ours = launch(
        {"kind": "ours", "preset": "brax-16x128", "env": "brax:inverted_pendulum", "num_seeds": 1}
    )
    brax = run_peer("brax", ["--total-timesteps", str(brax_steps)])
    rows.append({"task": "brax inverted_pendulum", "ours": ours, "peer": brax})
    print(f"inverted_pendulum: ours {ours['steps_per_second']} vs brax {brax['steps_per_second']}")
    save("peers", {"machine": machine(), "rows": rows})


def section_sweep(num_seeds: int, steps: int) -> None:
    out = Path(tempfile.mkdtemp(prefix="purejaxppo-sweep-"))
    cmd = [
        str(Path(sys.executable).parent / "purejaxppo"),
        "train",
        "--env",
        "CartPole-v1",
        "--num-seeds",
        str(num_seeds),
        "--total-timesteps",
        str(steps),
        "--out",
        str(out / "run"),
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"sweep failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "run" / "summary.json").read_text())
    result = {
        "command": " ".join(cmd[1:]),
        "num_seeds": num_seeds,
        "devices": summary["devices"],
        "total_timesteps": summary["total_timesteps"],
        "wall_seconds": round(wall, 1),
        "compile_seconds": summary["compile_seconds"],
        "run_seconds": summary["run_seconds"],
        "steps_per_second": summary["steps_per_second"],
        "peak_rss_mb": summary["peak_rss_mb"],
        "final_return_mean": summary["final_return_mean"],
    }
    save("sweep", {"machine": machine(), **result})
    print(f"sweep: {result}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="short runs, no peers or sweep")
    parser.add_argument(
        "--only",
        choices=[
            "scaling",
            "profile",
            "peers",
            "sweep",
            "pixels",
            "recurrent",
            "accelerator",
            "report",
        ],
        action="append",
    )
    parser.add_argument("--sb3-steps", type=int, default=500_000)
    parser.add_argument("--brax-steps", type=int, default=1_000_000)
    parser.add_argument("--sweep-seeds", type=int, default=1024)
    parser.add_argument("--sweep-steps", type=int, default=500_000)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    sections = args.only or (
        ["scaling", "profile", "pixels", "recurrent"]
        if args.quick
        else ["scaling", "profile", "peers", "sweep", "pixels", "recurrent"]
    )
    for name in sections:
        t = time.perf_counter()
        if name == "scaling":
            section_scaling(args.quick)
        elif name == "profile":
            section_profile(args.quick)
        elif name == "peers":
            section_peers(args.sb3_steps, args.brax_steps)
        elif name == "sweep":
            section_sweep(args.sweep_seeds, args.sweep_steps)
        elif name == "pixels":
            section_pixels(args.quick)
        elif name == "recurrent":
            section_recurrent(args.quick)
        elif name == "accelerator":
            section_accelerator(args.quick)
        print(f"[{name}: {time.perf_counter() - t:.0f} s]", flush=True)
    sys.path.insert(0, str(ROOT))
    from benchmarks.report import write_report

    write_report()


if __name__ == "__main__":
    main()
