"""Rebuild BENCHMARKS.md from benchmarks/results/*.json (and objectives.md when present).

python benchmarks/report.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from purejaxppo import stats
from purejaxppo.compare import interval_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, "
        f"{m['backend']} backend, jax {m['jax']}, Python {m['python']}."
    )


def scaling_section(data: dict[str, Any]) -> list[str]:
    out = [
        "## Throughput and efficiency (CartPole-v1, default config)",
        "",
        machine_line(data["machine"]),
        "Each row is a fresh process: our trainer, then in the same process the rollout-only",
        "reference (same env, network forward, sampling, vmap over seeds and nested scans, no",
        "learning). Steps/s count every seed's steps; efficiency = trainer / reference steps/s.",
        "Compile = tracing + XLA compilation; run = the fastest of the timed runs.",
        "",
        "| seeds | num_envs | updates | trainer steps/s | rollout-only steps/s | efficiency "
        "| compile s (trainer) | run s | peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["points"]:
        t, ref = r["trainer"], r["reference"]
        out.append(
            f"| {r['num_seeds']} | {r['num_envs']} | {r['num_updates']} | "
            f"{t['steps_per_second']:,} | {ref['steps_per_second']:,} | {r['efficiency']:.3f} | "
            f"{t['compile_seconds']:.2f} | {t['run_seconds']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    out += ["", "![throughput](benchmarks/results/throughput.png)", ""]
    return out


def profile_section(data: dict[str, Any]) -> list[str]:
    p = data["programs"]
    out = [
        "## Where the time goes (16 seeds, default config)",
        "",
        machine_line(data["machine"]),
        f"Run seconds of nested programs over {data['num_updates']} updates, same process:",
        "",
        "| program | run s | compile s |",
        "|---|---:|---:|",
    ]
    names = {
        "reference": "rollout-only reference",
        "rollout": "trainer's rollout (stores the transitions)",
        "rollout_gae": "+ critic bootstrap pass and GAE",
        "learning_floor": "rollout + bare forward/backward passes (learning floor)",
        "trainer": "full trainer",
    }
    for k, label in names.items():
        out.append(f"| {label} | {p[k]['run_seconds']:.2f} | {p[k]['compile_seconds']:.2f} |")
    f = data["split_fraction"]
    out += [
        "",
        f"Split of the trainer's time: rollout {f['rollout']:.0%}, bootstrap + GAE "
        f"{f['bootstrap_and_gae']:.0%}, epochs of minibatch updates "
        f"{f['epochs_of_minibatch_updates']:.0%}. Efficiency of the trainer "
        f"{data['efficiency_trainer']:.3f}; of the learning floor "
        f"{data['efficiency_learning_floor']:.3f}.",
        "",
        *matmul_lines(data),
        "Hottest XLA ops in a profiled two-update run (share of all op time; the profiler's",
        "per-op cost inflates the many tiny env-step ops):",
        "",
        "| op | share | calls | from |",
        "|---|---:|---:|---|",
    ]
    for h in data["hot_ops"]:
        out.append(f"| {h['op']} | {h['share']:.1%} | {h['calls']} | `{h['source']}` |")
    return out + [""]


def update_cost_section(data: dict[str, Any]) -> list[str]:
    labels = {
        "floor_constant": "gradient of the sum of the outputs (constant weights), plain step",
        "floor": "gradient of a loss linear in the outputs, per-sample weights (floor)",
        "ppo_sgd": "PPO loss and its gradient, plain step, no shuffle",
        "ppo": "+ global-norm clip and Adam",
        "ppo_shuffled": "+ the per-epoch shuffle (random_permutations): the trainer's update",
        "ppo_old_shuffle": "the same with jax.random.permutation (before 2026-12-02)",
    }
    m = data["machine"]
    out = [
        "## What PPO's update costs over the network's own passes (16 seeds, default config)",
        "",
        f"Measured {m['date']}, {m['cpu_count']} cores, {m['devices']} {m['backend']} device, "
        f"jax {m['jax']}. The update phase alone ({data['updates']} updates of 4 epochs x 4 "
        f"minibatches, {data['update_gflop']:,.0f} GFLOP of matmuls) on made-up data, one "
        "program per row, run round-robin in one process (`benchmarks/update_cost.py`):",
        "",
        "| minibatch step | run s | GFLOP/s | ms per minibatch step | floor / this |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, label in labels.items():
        r = data["programs"][k]
        out.append(
            f"| {label} | {r['run_seconds']:.3f} | {r['gflops']:.1f} | "
            f"{r['ms_per_minibatch_step']:.3f} | {r['floor_over_this']:.3f} |"
        )
    return out + [""]


def matmul_lines(data: dict[str, Any]) -> list[str]:
    """The update phase's achieved matmul GFLOP/s against batched matmuls in the same process."""
    if "update_gflops" not in data:
        return []
    out = [
        f"Trainer vs learning floor (floor run s / trainer run s): "
        f"{data['trainer_vs_learning_floor']:.3f}. The epochs of minibatch updates do "
        f"{data['update_gflop']:,.0f} GFLOP of matmuls (forward, weight and input gradients, "
        f"counted from the layer shapes): {data['update_gflops']:.1f} GFLOP/s in the trainer, "
        f"{data['learning_floor_update_gflops']:.1f} in the learning floor. The same arithmetic "
        "as chained batched matmuls of the widest layer, same process:",
        "",
        "| matmul | calls | run s | GFLOP/s | update's share of it |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, m in data["matmul_peak"].items():
        out.append(
            f"| {m['shape']} ({label.replace('_', ' ')}) | {m['calls']:,} | {m['seconds']:.2f} | "
            f"{m['gflops']:.1f} | {data['update_gflops'] / m['gflops']:.0%} |"
        )
    return out + [""]


def peers_section(data: dict[str, Any]) -> list[str]:
    out = [
        "## Against other PPO implementations (one seed each, same hyperparameters)",
        "",
        machine_line(data["machine"]),
        "",
        "| task | implementation | steps | compile s | run s | steps/s | final return | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["rows"]:
        ours, peer = row["ours"], row["peer"]
        ours_ret = ours.get("eval_return", ours.get("final_return_mean"))
        ratio = ours["steps_per_second"] / peer["steps_per_second"]
        out.append(
            f"| {row['task']} | purejaxppo | {ours['total_timesteps']:,} | "
            f"{ours['compile_seconds']:.1f} | {ours['run_seconds']:.1f} | "
            f"{ours['steps_per_second']:,.0f} | {ours_ret} | {ratio:.2f}x |"
        )
        out.append(
            f"| | {peer['peer']} | {peer['total_timesteps']:,} | "
            f"{peer.get('compile_seconds', peer.get('setup_seconds', 0)):.1f} | "
            f"{peer['run_seconds']:.1f} | {peer['steps_per_second']:,.0f} | "
            f"{peer['final_return']} | 1 |"
        )
    out += ["", "Differences in setup that remain (from each peer's JSON):", ""]
    for row in data["rows"]:
        out.append(f"- {row['peer']['peer']}: " + "; ".join(row["peer"].get("differences", [])))
    return out + [""]


def sweep_section(data: dict[str, Any]) -> list[str]:
    return [
        "## A 1024-seed sweep in one process",
        "",
        machine_line(data["machine"]),
        "",
        f"`{data['command']}`"
        + (f" ({data['devices']} XLA CPU devices, the default)" if "devices" in data else "")
        + f": {data['total_timesteps']:,} steps per seed, compile "
        f"{data['compile_seconds']} s, run {data['run_seconds']} s"
        + (f" ({data['wall_seconds'] / 60:.1f} min wall)" if "wall_seconds" in data else "")
        + " "
        f"({data['steps_per_second']:,.0f} steps/s), peak RSS {data['peak_rss_mb']:,.0f} MB, "
        f"final return mean {data['final_return_mean']}.",
        "",
    ]


def pixels_section(data: dict[str, Any]) -> list[str]:
    out = [
        "## Pixel observations (Breakout-MinAtar preset: the paper's Atari settings)",
        "",
        machine_line(data["machine"]),
        "Each row is a fresh process: the trainer with the preset (8 actors x T 128, 3 epochs x",
        "4 minibatches) and the given torso, then its rollout-only reference in the same process.",
        "The MLP row is the same preset with `network=mlp activation=relu` (64x64).",
        "",
        "| torso | seeds | updates | trainer steps/s | rollout-only steps/s | efficiency "
        "| compile s (trainer) | compile s (reference) | run s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["points"]:
        t, ref = r["trainer"], r["reference"]
        out.append(
            f"| {r['network']} | {r['num_seeds']} | {r['num_updates']} | "
            f"{t['steps_per_second']:,} | {ref['steps_per_second']:,} | {r['efficiency']:.3f} | "
            f"{t['compile_seconds']:.2f} | {ref['compile_seconds']:.2f} | "
            f"{t['run_seconds']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    return out + [""]


def recurrent_section(data: dict[str, Any]) -> list[str]:
    r = data["row"]
    none = r["none"]
    out = [
        "## A recurrent core against none (the gru-cartpole preset)",
        "",
        machine_line(data["machine"]),
        f"`python benchmarks/throughput.py --only recurrent`: {r['env']}, {r['num_seeds']} "
        f"seeds, {r['num_envs']} actors x T {r['num_steps']}, {r['num_updates']} updates; the "
        f"preset with its {r['core_size']}-wide GRU after each torso at each `seq_len` and the "
        "same settings with `core=none`, all compiled in one process and run alternately "
        f"(fastest of {len(none['run_seconds_all'])} runs each).",
        "",
        "| core | seq_len | trainer steps/s | of none's speed | compile s | run s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in r["seq_len_rows"]:
        shipped = " (shipped)" if row["seq_len"] == r["seq_len"] else ""
        out.append(
            f"| {r['core']} | {row['seq_len']}{shipped} | {row['steps_per_second']:,} | "
            f"{row['over_none']:.3f} | {row['compile_seconds']:.2f} | {row['run_seconds']:.2f} |"
        )
    b, w = r["backward"], r["twice_as_wide"]
    return out + [
        f"| {r['core']}, {w['core_size']} wide | {r['seq_len']} | {w['steps_per_second']:,} | "
        f"{w['over_none']:.3f} | {w['compile_seconds']:.2f} | {w['run_seconds']:.2f} |",
        f"| none | - | {none['steps_per_second']:,} | 1 | {none['compile_seconds']:.2f} | "
        f"{none['run_seconds']:.2f} |",
        "",
        f"The shipped preset trains at {r['gru_over_none']:.3f} of the speed without a core "
        f"(peak RSS {r['peak_rss_mb']:.0f} MB). The replay's gradient alone ({b['shape']}, "
        f"best of round-robin runs): {b['scan_core_ms']} ms with scan_core (input gates "
        f"before the loop, its own backward pass), {b['scan_core_autodiff_ms']} ms for the same "
        f"forward loop through JAX's scan transpose ({b['vjp_speedup']:.2f}x), "
        f"{b['plain_scan_ms']} ms for a plain scan of the cell ({b['speedup']:.2f}x).",
        "",
    ]


def accelerator_section(data: dict[str, Any]) -> list[str]:
    m = data["machine"]
    out = [
        f"## On a GPU ({data['device']})",
        "",
        f"Measured {m['date']} on one {data['device']} ({m['cores']} CPU cores), {m['backend']} "
        f"backend, jax {m['jax']}, Python {m['python']}. `python benchmarks/throughput.py --only "
        "accelerator`: every point in one process; in each, the trainer and its rollout-only "
        "reference compiled, then run alternately (fastest of "
        f"{len(data['points'][0]['trainer']['run_seconds_all'])} runs each). CartPole-v1 rows use "
        "the default config (T 128, 4 epochs x 4 minibatches); Breakout-MinAtar rows its preset "
        "(8 actors); gru-cartpole against the same settings without a core. Short runs: "
        "the figures are for speed, not learning. That machine's image ships jax "
        f"{m['jax']} with its CUDA plugin, newer than pyproject's pin (< 0.11); the package ran "
        "on it unchanged (gymnax installed from wheels; brax not installed there).",
        "",
        "| env | torso / core | seeds | envs per seed | updates | trainer steps/s "
        "| rollout-only steps/s | efficiency | compile s | run s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["points"]:
        if r["section"] == "recurrent":
            for core in ("gru", "none"):
                t = r[core]
                out.append(
                    f"| {r['env']} | {core} | {r['num_seeds']} | {r['num_envs']} | "
                    f"{r['num_updates']} | {t['steps_per_second']:,} | - | - | "
                    f"{t['compile_seconds']:.1f} | {t['run_seconds']:.3f} |"
                )
            continue
        t, ref = r["trainer"], r["reference"]
        env = r.get("env", "CartPole-v1")
        torso = r.get("network", "mlp")
        out.append(
            f"| {env} | {torso} | {r['num_seeds']} | {r['num_envs']} | {r['num_updates']} | "
            f"{t['steps_per_second']:,} | {ref['steps_per_second']:,} | {r['efficiency']:.3f} | "
            f"{t['compile_seconds']:.1f} | {t['run_seconds']:.3f} |"
        )
    rec = next(r for r in data["points"] if r["section"] == "recurrent")
    # Rows measured before seq_len existed replayed whole rollouts (seq_len absent).
    length = rec.get("seq_len") or f"{rec['num_steps']} (whole rollouts)"
    out += [
        "",
        f"The GRU core ({rec['core_size']} wide, sequences of {length} steps) trains at "
        f"{rec['gru_over_none']:.3f} of the speed without one.",
    ]
    sweep = data.get("sweep")
    if sweep:
        out += [
            "",
            f"**A {sweep['num_seeds']}-seed sweep through the command line** "
            f"(`{sweep['command']}`): compile {sweep['compile_seconds']:.1f} s, train "
            f"{sweep['run_seconds']:.1f} s, {sweep['steps_per_second']:,.0f} env steps/s over "
            f"all seeds; {sweep['seeds_at_500']} of {sweep['num_seeds']} seeds end at 500 "
            f"(final-return IQM {sweep['final_return_iqm']:g} {sweep['final_return_iqm_ci']}, "
            f"mean {sweep['final_return_mean']:.1f}, lowest {sweep['final_return_min']:.1f}).",
        ]
    tests = data.get("learning_tests")
    if tests:
        out += [
            "",
            f"**Learning tests on the GPU** (`{tests['command']}`): passed "
            f"{', '.join(tests['passed'])}; not finished: {', '.join(tests['not_finished'])}.",
        ]
    return out + [""]


def stats_cost_section(data: dict[str, Any]) -> list[str]:
    out = [
        "## What the statistics of a 1024-run sweep cost",
        "",
        "`python benchmarks/stats_cost.py`: made-up final returns and "
        f"{data['updates_per_run']}-update curves for 1024 runs in three shapes, folders written "
        "by the driver's own `write_results`; best of 3, seconds. Summary: the IQM, mean and "
        "median intervals of every setting and the ranking (what `summary.json` adds); compare: "
        "`purejaxppo compare` on the folder (tables, probability of improvement, profile, IQM "
        f"curves), with {data['replicates']} bootstrap replicates; its plots apart.",
        "",
        "| settings x seeds | summary statistics s | compare: read s | compare: statistics s "
        "| compare: plots s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        out.append(
            f"| {r['settings']} x {r['seeds']} | {r['summary_statistics_s']:.3f} | "
            f"{r['compare_read_s']:.3f} | {r['compare_statistics_s']:.3f} | "
            f"{r['compare_plots_s']:.3f} |"
        )
    return out + [""]


def atari_section(data: dict[str, Any]) -> list[str]:
    t = data["training"]
    out = [
        "## Real Atari through ale-py (`ale:GAME`)",
        "",
        machine_line(data["machine"]),
        "`python benchmarks/atari.py --part speed`: env steps/s (4 frames each) of the adapter "
        "alone, random actions in a jitted scan through the same vmapped one-environment "
        "interface the trainer uses (best of 3), and of training Breakout with the `atari` "
        "preset (one seed, 8 actors, 3 epochs, the `cnn` torso) through `purejaxppo train`.",
        "",
        "| what | emulators | env steps/s | compile s |",
        "|---|---:|---:|---:|",
    ]
    for r in data["adapter"]:
        out.append(
            f"| adapter alone | {r['num_envs']} | {r['env_steps_per_second']:,} | "
            f"{r['compile_and_first_run_seconds']:.1f} (with a first run) |"
        )
    out.append(
        f"| training, atari preset, 1 seed | 8 | {t['steps_per_second']:,.0f} | "
        f"{t['compile_seconds']:.1f} |"
    )
    games = {g: load(f"atari_{g}") for g in ("Breakout", "Pong")}
    games = {g: d for g, d in games.items() if d is not None}
    if games:
        out += [
            "",
            "`python benchmarks/atari.py --part learn --games GAME --steps N`: the `atari` preset "
            "(the paper's Table 5) through `purejaxppo train`, one seed, the two games side by "
            "side (one per core), 1M steps each. Final: mean raw game "
            "score of the games ending in the last 5% of updates.",
            "",
            "| game | steps | wall min | steps/s | first 2% of updates | final score "
            "| paper PPO at 10M steps |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for g, d in games.items():
            s = d["summary"]
            final = s["final_return"][0][0]
            curve = np.asarray(d["episode_return"][0], np.float64)
            first = np.nanmean(curve[: max(1, curve.size // 50)])
            out.append(
                f"| {g} | {s['total_timesteps']:,} | {d['wall_seconds'] / 60:.0f} | "
                f"{s['steps_per_second']:,.0f} | {first:.1f} | {final:.1f} | "
                f"{d['paper_ppo_10M']} |"
            )
        longest = max(d["wall_seconds"] for d in games.values()) / 60
        rate = min(d["summary"]["steps_per_second"] for d in games.values())
        out += [
            "",
            f"Both runs together took {longest:.0f} min; at {rate:.0f} steps/s each, the full "
            f"hour would have allowed about {rate * 3600 / 1e6:.1f}M steps per game (not run). "
            "These are 1/10 of the paper's budget, with the learning rate and clip annealed over "
            "the shorter run.",
            "",
            "![Atari learning curves](benchmarks/results/atari.png)",
        ]
    return out + [
        "",
        "What the paper's full protocol (49 games x 3 seeds x 10M steps = 1.47B steps) would "
        "need, estimated from these figures, not measured on a GPU: the emulators run on CPU "
        "cores whatever the accelerator (the ALE is a CPU emulator), at about "
        f"{data['adapter'][0]['env_steps_per_second'] // 2:,} steps/s per core here, so about "
        f"{1.47e9 / (data['adapter'][0]['env_steps_per_second'] / 2) / 3600:.0f} core-hours "
        "of emulation; the network's updates, which hold this CPU to "
        f"{t['steps_per_second']:,.0f} steps/s (about 4 h per 10M-step run on 2 cores), move "
        "to the GPU. A GPU machine with 32 cores would be bound by emulation at roughly 50k "
        "steps/s: about 8 hours for the protocol.",
        "",
    ]


def suites_section(data: dict[str, Any]) -> list[str]:
    """benchmarks/suites.py: the newer suites' adapters, speed and a short learning run."""
    tasks = [k for k in data if ":" in k]  # suite:NAME
    lines = [
        "## The newer suites through their adapters (jumanji, Craftax, XLand-MiniGrid, "
        "MuJoCo Playground)",
        "",
        *([machine_line(data["machine"])] if "machine" in data else []),
        "`python benchmarks/suites.py --part speed`: env steps/s of the adapter alone (64 "
        "environments, a uniformly random legal action each step, in a jitted scan through the "
        "vmapped one-environment interface the trainer uses; best of 3; continuous actions "
        "uniform in their bounds) and of training with the suite's preset (one seed) through "
        "`purejaxppo train`, in one process per task, compile apart (65,536 steps; Craftax "
        "16,384 and CheetahRun 8,192, which run at hundreds of steps/s here).",
        "",
        "| task | adapter alone, env steps/s | compile + first run s | training, env steps/s "
        "| training compile s |",
        "|---|---:|---:|---:|---:|",
    ]
    for task in tasks:
        row = data[task]
        if "adapter" not in row:
            continue
        a, t = row["adapter"], row["training_one_seed"]
        lines.append(
            f"| `{task}` | {a['env_steps_per_second']:,} | {a['compile_and_first_run_seconds']} "
            f"| {t['steps_per_second']:,.0f} | {t['compile_seconds']:.1f} |"
        )
    learned = [t for t in tasks if "learning" in data[t]]
    if learned:
        lines += [
            "",
            "`python benchmarks/suites.py --part learn`: each suite's preset through "
            "`purejaxppo train` on fresh seeds (1000 on); final return = mean return of the "
            "episodes ending in the last 5% of updates, IQM over seeds with a 95% bootstrap "
            "interval; the random (legal) policy's mean return over whole episodes (the first "
            "episode of each of 1024 environments, 64 for Craftax). `:unmasked` is the same task "
            "with its action mask withheld: its random policy picks among all actions.",
            "",
            "| task | seeds x steps | random legal policy | final return IQM [95% CI] | "
            "per seed | wall min |",
            "|---|---|---:|---|---|---:|",
        ]
        for task in learned:
            r = data[task]["learning"]
            ps = r["per_setting"][0]
            ci = "no episode ended in the window"
            if ps["final_return_iqm"] is not None:
                lo, hi = ps["final_return_iqm_ci"]
                ci = f"{ps['final_return_iqm']:.2f} [{lo:.2f}, {hi:.2f}]"
            seeds = ", ".join("-" if v is None else f"{v:.2f}" for v in r["final_return"][0])
            lines.append(
                f"| `{task}` | {r['num_seeds']} x {r['total_timesteps']:,} | "
                f"{data[task]['random_policy_return']} | {ci} | {seeds} | "
                f"{r['wall_seconds'] / 60:.1f} |"
            )
    published = data.get("published", [])
    if published:
        lines += ["", "Published figures beside these (their budgets, not ours):", ""]
        lines += [f"- {line}" for line in published]
    for line in data.get("reading", []):
        lines += ["", line]
    choice = data.get("learning_rate_choice")
    if choice:
        lines += ["", choice["how"], "", "| learning rate | final return IQM [95% CI] |",
                  "|---:|---|"]  # fmt: skip
        for row in choice["per_setting"]:
            lo, hi = row["final_return_iqm_ci"]
            lines.append(
                f"| {row['learning_rate']} | {row['final_return_iqm']:.2f} [{lo:.2f}, {hi:.2f}] |"
            )
    return lines + [""]


def devices_section(data: dict[str, Any]) -> list[str]:
    out = [
        "## Every core by default (default command vs `--devices 1`)",
        "",
        machine_line(data["machine"]),
        "`python benchmarks/devices.py`: each row is a pair of fresh processes running what a user",
        "types (the standalone `python purejaxppo/ppo.py ...` for CartPole, `purejaxppo train ...`",
        "for brax), once as is (one XLA CPU device per core) and once with `--devices 1`, back to",
        "back; the ratio is taken within the pair. Steps/s of the run alone, all seeds counted.",
        "",
        "| case | steps per seed | devices | steps/s | steps/s, --devices 1 | ratio "
        "| compile s (default / 1) | final return (default / 1) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["rows"]:
        for pair in row["pairs"]:
            d, one = pair["default"], pair["one"]
            out.append(
                f"| {row['case']} | {row['steps']:,} | {d['devices']} | "
                f"{d['steps_per_second']:,.0f} | {one['steps_per_second']:,.0f} | "
                f"**{pair['ratio']:.2f}x** | {d['compile_seconds']:.1f} / "
                f"{one['compile_seconds']:.1f} | {d['final_return_mean']} / "
                f"{one['final_return_mean']} |"
            )
    out.append("")
    return out


def brax_step_section(data: dict[str, Any]) -> list[str]:
    out = [
        "## The auto-reset's share of a brax step",
        "",
        machine_line(data["machine"]),
        "`python benchmarks/brax_step.py`: `BraxEnv.step` (computes a fresh `env.reset` every",
        "step and selects it where an episode ended) against the same vmapped, scanned brax step",
        "without the reset, same process, alternated, best of 5; env steps/s of stepping alone.",
        "",
        "| env | envs x steps | with reset | without | reset's share |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        out.append(
            f"| {r['env']} | {r['num_envs']} x {r['steps']} | "
            f"{r['with_reset_steps_per_second']:,} | {r['without_reset_steps_per_second']:,} | "
            f"{100 * r['reset_share']:.0f}% |"
        )
    out.append("")
    return out


# The paper's own figures beside ours: Table 2 (Atari, 49 games) wins per metric.
PAPER_ATARI_WINS = {
    "all_training_mean": "A2C 1, ACER 18, PPO 30 (of 49 games)",
    "last_100_mean": "A2C 1, ACER 28, PPO 19",
}


def run_minutes(data: dict[str, Any]) -> float:
    """Compile + run minutes of every run of an algorithms.py result, from the runs' summaries."""
    return (
        sum(
            (r["compile_seconds"] or 0) + (r["run_seconds"] or 0)
            for row in data["rows"].values()
            for r in row.values()
        )
        / 60
    )


def algorithms_section(data: dict[str, Any]) -> list[str]:
    """Tables 2 and 6 (atari) or Figure 3's final scores (mujoco) from algorithms.py."""
    atari = data["part"] == "atari"
    rows = data["rows"]
    algos = list(next(iter(rows.values())))
    head = "game" if atari else "task"
    out = [
        "## PPO vs "
        + ", ".join(a.upper() for a in algos if not a.startswith("ppo"))
        + (
            " on MinAtar (the paper's Tables 2 and 6)"
            if atari
            else " on brax (the paper's Figure 3)"
        ),
        "",
        f"`python benchmarks/algorithms.py --part {data['part']}`: {data['seeds']} seeds per "
        "algorithm, the env steps per seed of each row, every run through "
        f"`purejaxppo train` with its preset; {run_minutes(data):.0f} min of compiling and "
        "training in all (one run after another). "
        "Scores are means over seeds: all training = the mean return of every episode of "
        "training; last 100 = the mean of each seed's last 100 episodes (whole updates from the "
        "end, at least 100 episodes).",
        "",
    ]
    if atari:
        out += [
            f"| {head} | steps | "
            + " | ".join(f"{a} all training" for a in algos)
            + " | "
            + " | ".join(f"{a} last 100" for a in algos)
            + " |",
            "|---|---:|" + "---:|" * (2 * len(algos)),
        ]
    else:
        out += [
            f"| {head} | steps | " + " | ".join(f"{a} last 100" for a in algos) + " |",
            "|---|---:|" + "---:|" * len(algos),
        ]
    for name, row in rows.items():
        steps = next(iter(row.values()))["total_timesteps"]
        cells = []
        metrics = ("all_training_mean", "last_100_mean") if atari else ("last_100_mean",)
        for metric in metrics:
            best = max(row, key=lambda a: row[a][metric])
            for a in algos:
                text = f"**{row[a][metric]:.2f}**" if a == best else f"{row[a][metric]:.2f}"
                if metric == "last_100_mean":
                    est = stats.interval_estimates(row[a]["last_100_per_seed"])["mean"]
                    text += f" [{est.low:.4g}, {est.high:.4g}]"
                cells.append(text)
        out.append(f"| {name} | {steps:,} | " + " | ".join(cells) + " |")
    out += ["", *improvement_lines(rows, algos)]
    if atari:
        for metric, wins in data["wins"].items():
            label = "all training" if metric == "all_training_mean" else "last 100 episodes"
            out.append("")
            out.append(
                f"Games won ({label}): "
                + ", ".join(f"{a.upper()} {n}" for a, n in wins.items())
                + f". The paper (Atari, 40M frames): {PAPER_ATARI_WINS[metric]}."
            )
    return out + ["", f"![curves](benchmarks/results/algorithms_{data['part']}.png)", ""]


def improvement_lines(rows: dict[str, dict[str, Any]], algos: list[str]) -> list[str]:
    """P(PPO > each other algorithm) on the last-100 score, over the tasks of the table: the
    chance that a PPO seed beats a seed of the other on the same task, with its interval."""
    per_algo = {
        a: [np.asarray(row[a]["last_100_per_seed"], np.float64) for row in rows.values()]
        for a in algos
    }
    ppo = algos[0]
    parts = [
        f"P({ppo} > {a}) = {stats.probability_of_improvement(per_algo[ppo], per_algo[a])}"
        for a in algos[1:]
    ]
    return [
        "In brackets: 95% bootstrap intervals of the last-100 mean over seeds. Probability of "
        f"improvement on the last-100 score, over the {len(rows)} tasks (the chance that a "
        f"seed of {ppo} beats a seed of the other on the same task, averaged over tasks; "
        f"`purejaxppo.stats`): " + "; ".join(parts) + ".",
    ]


def pbt_section(data: dict[str, Any]) -> list[str]:
    """benchmarks/pbt.py: PBT against a random search of equal compute and the default."""
    p = data["protocol"]

    def iv(e: list[float]) -> str:
        return interval_text(e, ".2f")

    lines = [
        "## Population-based training against a random search and the default (MinAtar)",
        "",
        machine_line(data["machine"]),
        "`python benchmarks/pbt.py`: per game, the same "
        f"{p['population']} draws (--seed {p['search_seed']}) of `{' '.join(p['space'])}` "
        f"(fixed: `{' '.join(p['fixed'])}`; the shipped default's program otherwise) train "
        f"{p['steps_per_run']:,} steps each, once as one PBT population (`--pbt-every "
        f"{p['pbt_every_updates']}`, fraction 0.25, factors 0.8/1.25, resample 0.25) and once "
        "as a plain random search: equal compute. The search's best draw (its one run's final "
        f"return) and the shipped default then train on {p['fresh_seeds'][1]} fresh seeds "
        f"(--seed {p['fresh_seeds'][0]}). Final return = the mean over the episodes of the last "
        "5% of updates; IQM with 95% bootstrap intervals over runs; P(PBT > X) = the chance a "
        "PBT run scores above a run of X. The PBT population is scored on its members' own "
        "final returns (as PBT reports them; it was selected on training returns along the "
        "way), the search's best on fresh seeds.",
        "",
        "| game | PBT population | search, all draws | search's best, fresh seeds | default, "
        "fresh seeds | P(PBT > search's best) | P(PBT > default) | minutes on 2 cores (PBT / "
        "search / best / default / PBT's final values) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for game, row in data["games"].items():
        minutes = " / ".join(f"{row['seconds'][a] / 60:.0f}" for a in ARMS_PBT)
        lines.append(
            f"| {game} | {iv(row['pbt']['iqm'])} | {iv(row['search']['iqm'])} | "
            f"{iv(row['search-best']['iqm'])} | {iv(row['default']['iqm'])} | "
            f"{iv(row['P(pbt > search-best)'])} | {iv(row['P(pbt > default)'])} | {minutes} |"
        )
    lines += [
        "",
        "Whether PBT found a better point or a better schedule: the best PBT run's final values, "
        "fixed from the start, on the same fresh seeds:",
        "",
        "| game | PBT's final values, fixed, fresh seeds | P(PBT > them) |",
        "|---|---:|---:|",
    ]
    for game, row in data["games"].items():
        lines.append(
            f"| {game} | {iv(row['pbt-final']['iqm'])} | {iv(row['P(pbt > pbt-final)'])} |"
        )
    lines.append("")
    for game, row in data["games"].items():
        best = row["pbt_section"]["best"]
        ends = ", ".join(f"{f} {v[0]:.3g} -> {v[-1]:.3g}" for f, v in best["schedule"].items())
        lines.append(
            f"- {game}: the best PBT run ({best['final_return']:g}) was trained with {ends} "
            f"(start -> end along its ancestry, {len(best['schedule']['learning_rate']) - 1} "
            f"steps); the search's best draw: "
            + ", ".join(f"{k} {v:.3g}" for k, v in row["search_best_setting"].items())
            + "."
        )
    lines += [
        "",
        "![PBT schedules](benchmarks/results/pbt_schedules.png)",
        "![PBT curves](benchmarks/results/pbt_curves.png)",
        "",
    ]
    return lines


def humanoid_section(data: dict[str, Any]) -> list[str]:
    """benchmarks/humanoid.py: the paper's section 6.3, reduced to what this machine allows."""

    def iv(e: list[float]) -> str:
        return interval_text(e, ".0f")

    lines = [
        "## Humanoid running and steering (the paper's section 6.3, reduced)",
        "",
        machine_line(data["machine"]),
        "`python benchmarks/humanoid.py --render`: each task with its Table 4 preset "
        "(`humanoid-paper`: 32 actors; `humanoid-steer-paper`: 128 actors; horizon 512, 15 "
        "epochs of minibatch 4096, KL-adapted step size, log-std annealed -0.7 -> -1.6), on "
        "brax's positional backend, against the preset's untrained policy (learning rate 0: "
        "mean 0, the scheduled log-std; every episode of 4 updates). Final return = the episodes "
        "of the last 5% of updates; IQM with 95% bootstrap intervals over seeds (with 2 seeds an "
        "interval spans little more than the seeds themselves). The paper's protocol (Figure 4's "
        "budgets as we read its axes, 50M steps running and 100M steering): `python "
        "benchmarks/humanoid.py --seeds 3 --steps-run 50000000 --steps-steer 100000000`, for a "
        "machine with an accelerator.",
        "",
        "| task | steps x seeds | PPO final return | random policy | P(PPO > random) | "
        "minutes on 2 cores | steps/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    beside = []
    for task in data["tasks"].values():
        lines.append(
            f"| `{task['env']}` ({task['preset']}) | {task['steps']:,} x {task['seeds']} | "
            f"{iv(task['ppo_iqm'])} | {iv(task['random_iqm'])} | "
            f"{task['P(ppo > random)'][0]:.2f} | {task['minutes']} | "
            f"{task['steps_per_second']:,.0f} |"
        )
        if "default_iqm" in task:  # the brax default (benchmarks/tune.py's winner) as a third arm
            lines.append(
                f"| `{task['env']}` (the brax default) | {task['default_steps']:,} x "
                f"{task['seeds']} | {iv(task['default_iqm'])} | {iv(task['random_iqm'])} | "
                f"{task['P(default > random)'][0]:.2f} | {task['default_minutes']} | "
                f"{task['default_steps_per_second']:,.0f} |"
            )
            p = task["P(default > ppo)"]
            beside.append(f"`{task['env']}`: P(brax default > {task['preset']}) = "
                          f"{p[0]:.2f} [{p[1]:.2f}, {p[2]:.2f}]")  # fmt: skip
    lines += ["", "; ".join(beside) + "."] if beside else []
    lines += ["", data["note"]] if data.get("note") else []
    lines += [
        "",
        "The paper's Figure 4 reports Roboschool's tasks, whose rewards (an electricity cost, "
        "a potential-based progress term, a different body and simulator) are not brax's: its "
        "numbers are not on this scale, so none is set beside these.",
        "",
        "![humanoid curves](benchmarks/results/humanoid_curves.png)",
        "![humanoid running](benchmarks/results/humanoid_run.gif)",
        "![humanoid steering](benchmarks/results/humanoid_steer.gif)",
        "",
    ]
    return lines


ARMS_PBT = ("pbt", "search", "search-best", "default", "pbt-final")


def write_report() -> Path:
    lines = [
        "# Benchmarks",
        "",
        "Regenerate: `python benchmarks/throughput.py` (throughput, profile, peers, sweep),",
        "`python benchmarks/devices.py` (every core vs one), `python benchmarks/brax_step.py`,",
        "`python benchmarks/objectives.py --protocol reduced` (PPO paper Table 1),",
        "`python benchmarks/minatar.py` (MinAtar games, CNN vs MLP),",
        "`python benchmarks/algorithms.py --part atari|mujoco` (PPO vs A2C, VPG, TRPO),",
        "`python benchmarks/stats_cost.py` (what the interval statistics cost),",
        "`python benchmarks/update_cost.py` (what PPO's update costs over the bare passes),",
        "`python benchmarks/tune.py` (each family's defaults chosen by our own sweeps),",
        "`python benchmarks/atari.py --part speed|learn` (real Atari through ale-py),",
        "`python benchmarks/suites.py --part speed|learn` (jumanji, Craftax, XLand-MiniGrid, "
        "Playground; action masks), `python benchmarks/pbt.py` (population-based training) and",
        "`python benchmarks/humanoid.py` (the paper's humanoid running and steering);",
        "each rebuilds this file from `benchmarks/results/`. Absolute figures drift on shared",
        "machines; the ratios are measured within one process.",
        "",
    ]
    for name, fn in [
        ("devices", devices_section),
        ("scaling", scaling_section),
        ("profile", profile_section),
        ("update_cost", update_cost_section),
        ("peers", peers_section),
        ("sweep", sweep_section),
        ("pixels", pixels_section),
        ("recurrent", recurrent_section),
        ("accelerator", accelerator_section),
        ("brax_step", brax_step_section),
        ("algorithms_atari", algorithms_section),
        ("algorithms_mujoco", algorithms_section),
        ("stats_cost", stats_cost_section),
        ("atari_speed", atari_section),
        ("suites", suites_section),
        ("pbt", pbt_section),
        ("humanoid", humanoid_section),
    ]:
        data = load(name)
        if data is not None:
            lines += fn(data)
    notes = RESULTS / "notes.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    for name in ("minatar", "objectives"):
        part = RESULTS / f"{name}.md"
        if part.exists():
            lines += [part.read_text().rstrip(), ""]
    # benchmarks/tune.py's record of each family, then what was written about it by hand (the
    # reading, the 5x runs) in tune_FAMILY_notes.md, which no script writes over.
    for part in sorted(RESULTS.glob("tune_*.md")):
        if part.stem.endswith("_notes"):
            continue
        lines += [part.read_text().rstrip(), ""]
        notes = part.with_name(f"{part.stem}_notes.md")
        if notes.exists():
            lines += [notes.read_text().rstrip(), ""]
    path = ROOT / "BENCHMARKS.md"
    path.write_text("\n".join(lines))
    print(f"wrote {path.relative_to(ROOT)}")
    return path


if __name__ == "__main__":
    write_report()
