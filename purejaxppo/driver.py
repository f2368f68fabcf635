"""The sweep driver: train a grid x seeds into a folder in chunks, with progress, checkpoints,
divergence reports and resume, and write the results. The command line (cli.py) is a thin
layer over `train_sweep(out, Sweep, Options)` (record.py: what to train, and how; and how the
folder's records are read back).

Folder layout:
  config.json     resolved settings (Config, base HParams, grid, seeds): what --resume checks;
                  and the schedule (chunk, checkpoint cadence, kept count) a resume goes on with
  checkpoints/    orbax checkpoints at every multiple of --checkpoint-every updates and at the
                  end, the last few kept; each also holds the settings and the timings so far
  metrics.npz     every per-update metric as [setting, seed, update], plus env_steps [update]
  summary.json    speeds, final_return per run; per setting its IQM, mean and median with 95%
                  bootstrap intervals over seeds, and a ranking by IQM; diverged runs
  curves.png      learning curves: mean and interquartile band across seeds per setting
  tensorboard/    event files per setting, with --tensorboard
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from purejaxppo import pbt, stats
from purejaxppo.checkpoint import Checkpointer, remove_unfinished_checkpoints
from purejaxppo.files import write_atomic
from purejaxppo.ppo import Config, final_return, padded_index
from purejaxppo.record import STOPPED_AT, Options, Sweep

# Still imported from here by benchmarks/tune.py.
from purejaxppo.sweep import (
    Grid,
    Runner,
    Runs,
    aligned_chunks,
    estimate_run_bytes,
    gather_runs,
    host_bytes_per_run,
    make_mesh,
    plan_batches,
    process_peak_rss_bytes,
    process_rss_bytes,
    process_share,
    release_freed_memory,
    state_bytes,
)

RESULT_FILES = ("config.json", "metrics.npz", "curves.png", "pbt.png", "summary.json")


def remove_unfinished_writes(out: Path, log: Callable[[str], None]) -> None:
    """Delete the temporary files of result writes a kill cut short (write_atomic's
    `.NAME.XXXXXXXX`); called by a resume, which holds the folder."""
    removed = []
    for name in RESULT_FILES:
        for path in out.glob(f".{name}.*"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path.name)
    if removed:
        log(f"removed {len(removed)} unfinished write(s) left by a kill: {', '.join(removed)}")


def default_chunk(num_updates: int, checkpoint_every: int | None) -> int:
    """About 20 progress reports; a divisor of num_updates when one is near, so the last chunk
    needs no extra compile. Never longer than the checkpoint interval, and a divisor of it when
    one is near, so that each interval runs one compiled length (see aligned_chunks)."""
    target = max(1, math.ceil(num_updates / 20))
    # The first divisor at or above the target, among 2^20 candidates at most: a search over
    # all of [target, 2 target] took days for a run of 10^18 steps (before its refusal).
    near = range(target, min(2 * target, target + 2**20) + 1)
    chunk = next((d for d in near if num_updates % d == 0), target)
    if checkpoint_every:
        if chunk >= checkpoint_every:
            return checkpoint_every
        near = range(-(-target // 2), 2 * target + 1)
        fits = [d for d in near if checkpoint_every % d == 0]
        if fits:
            chunk = min(fits, key=lambda d: abs(d - target))
    return max(1, chunk)


@dataclasses.dataclass
class Timing:
    """Seconds compiling and training, and env steps trained, summed over a run's sessions:
    each checkpoint records the totals so far, and a resume adds its own to the newest totals
    it restored, so a resumed run reports the whole run's timings, not its last session's."""

    compile: float = 0.0
    run: float = 0.0
    steps: int = 0
    earlier: tuple[float, float, int] = (0.0, 0.0, 0)

    def carry_over(self, record: Any) -> None:
        """Take a restored checkpoint's totals as the earlier sessions' (the newest of several
        restored batches: each one's totals include the batches before it)."""
        try:
            earlier = (float(record["compile"]), float(record["run"]), int(record["steps"]))
        except (KeyError, TypeError, ValueError):
            return  # a checkpoint of an older version: its timings are not known
        if earlier[2] >= self.earlier[2]:
            self.earlier = earlier

    def totals(self) -> dict[str, Any]:
        compile_s, run_s, steps = self.earlier
        return {
            "compile": compile_s + self.compile,
            "run": run_s + self.run,
            "steps": steps + self.steps,
        }


class Interrupt:
    """SIGINT/SIGTERM set a flag; the driver checkpoints after the chunk in flight and stops."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: saving a checkpoint after this chunk...", file=sys.stderr)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[None]:
    """Ctrl-C (SIGINT) in the block raises KeyboardInterrupt, also one that came while Python ran
    a garbage-collection callback (JAX has one), which swallows any exception raised in it and
    prints a traceback: the handler sets a flag too, checked when the block ends, and that
    traceback is not printed."""
    requested = False
    report = sys.unraisablehook

    def handle(signum: int, frame: Any) -> None:
        nonlocal requested
        requested = True
        raise KeyboardInterrupt

    def unraisable(info: Any) -> None:
        if not (requested and info.exc_type is KeyboardInterrupt):
            report(info)

    old = signal.signal(signal.SIGINT, handle)
    sys.unraisablehook = unraisable
    try:
        yield
        if requested:
            raise KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, old)
        sys.unraisablehook = report


def progress_line(
    done: int, total: int, batch_size: int, sps: float, metrics: dict[str, np.ndarray]
) -> str:
    recent = metrics["episode_return"][:, -max(1, metrics["episode_return"].shape[1] // 10) :]
    ret = np.nanmean(recent) if np.isfinite(recent).any() else float("nan")
    return (
        f"[{100 * done / total:5.1f}%] update {done}/{total}  "
        f"env steps {done * batch_size:,} per run  {sps:,.0f} steps/s  return {ret:.1f}"
    )


class Sinks:
    """Optional per-update logging: TensorBoard event files and Weights & Biases.

    Each setting gets the mean over its seeds of every metric, at x = env steps per run.
    """

    def __init__(
        self, out: Path, sweep: Sweep, tensorboard: bool, wandb: bool, record: dict[str, Any]
    ) -> None:
        grid = sweep.grid
        self.grid, self.num_seeds, self.batch_size = grid, sweep.num_seeds, sweep.config.batch_size
        self.writers = []
        # Unique names, so that two settings never share an event folder or a key.
        self.labels = stats.setting_labels(grid.fields, grid.settings, sep=",")
        self.labels = [label or "default" for label in self.labels]
        if tensorboard:
            from tensorboardX import SummaryWriter

            for label in self.labels:
                self.writers.append(SummaryWriter(str(out / "tensorboard" / label)))
        self.wandb_run = None
        if wandb:
            import wandb as wandb_lib

            self.wandb_run = wandb_lib.init(project="purejaxppo", config=record, dir=str(out))

    def write(self, first: int, metrics: dict[str, np.ndarray]) -> None:
        if not self.writers and self.wandb_run is None:
            return
        length = metrics["finite"].shape[1]
        means = {
            k: np.nanmean(v.reshape(self.grid.size, self.num_seeds, length).astype(float), axis=1)
            for k, v in metrics.items()
            if k != pbt.PARENT  # a run index: its mean over seeds means nothing
        }
        for i in range(length):
            step = (first + i + 1) * self.batch_size
            for h, writer in enumerate(self.writers):
                for k, v in means.items():
                    if np.isfinite(v[h, i]):
                        writer.add_scalar(k, float(v[h, i]), step)
            if self.wandb_run is not None:
                row = {}
                for h, label in enumerate(self.labels):
                    row.update({f"{label}/{k}": float(v[h, i]) for k, v in means.items()})
                self.wandb_run.log(row, step=step)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def train_sweep(
    out: Path,
    sweep: Sweep,
    options: Options | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Train every (setting, seed) run of the sweep into `out` (options: Options() where None);
    returns the summary also written there."""
    from purejaxppo.envs import make_env
    from purejaxppo.sweep import available_memory_bytes

    options = options or Options()
    config, grid = sweep.config, sweep.grid
    pcount, pid = jax.process_count(), jax.process_index()
    if sweep.pbt is not None:
        check_pbt(sweep, options, pcount)
    env = make_env(config.env)
    # An emulator pool (ale:) lives in this process once: its runs stay on one device.
    devices = jax.local_devices()[: 1 if getattr(env, "needs_one_device", False) else None]
    runner = Runner(config, env, make_mesh(devices), make_advance=pbt_advance(sweep))
    record = sweep.record(runner.num_devices, options)
    if pcount > 1:
        quiet_log = log

        def log(text: str) -> None:
            quiet_log(f"[process {pid}/{pcount}] {text}")

    num_runs = sweep.num_runs
    first_run, end_run, share = process_share(num_runs)
    local_runs = end_run - first_run
    # Never longer than the run (the planner compiles a program of `chunk` updates), nor than
    # the checkpoint interval.
    chunk = min(
        options.chunk or default_chunk(config.num_updates, options.checkpoint_every),
        options.checkpoint_every or config.num_updates,
        config.num_updates,
    )
    if sweep.pbt is not None and chunk < config.num_updates:
        # Compiled calls start at multiples of --pbt-every (its steps fall inside them).
        chunk = max(sweep.pbt.every, chunk // sweep.pbt.every * sweep.pbt.every)
    options = dataclasses.replace(options, chunk=chunk)
    budget = options.memory_budget or available_memory_bytes() // 2
    # The planner first: it refuses a sweep too large for memory (a huge --num-seeds) in one
    # line, before anything holds an array per run. It compiles: Ctrl-C stops it at once.
    with stop_on_interrupt():
        per_block, block_bytes, compile_seconds = plan_memory(
            runner, config, local_runs, chunk, budget, num_runs
        )
    if per_block < local_runs and sweep.pbt is not None:
        raise MemoryError(
            f"population-based training keeps the whole population of {num_runs} runs in one "
            f"program, and {per_block} fit in {budget / 2**20:.0f} MiB; use fewer seeds or "
            "settings, or a larger --memory-budget-mb"
        )
    runs = sweep.runs()
    log(
        f"{config.env}: {grid.size} setting(s) x {sweep.num_seeds} seed(s) = {num_runs} runs"
        + (f" (runs {first_run}..{end_run - 1} here)" if pcount > 1 else "")
        + f" on {runner.num_devices} device(s); {config.num_updates} updates of "
        f"{config.batch_size} steps; a batch of {per_block} runs needs {block_bytes / 2**20:.0f} "
        f"MiB (measured) beside the {process_rss_bytes() / 2**20:.0f} MiB this process holds, "
        f"of {budget / 2**20:.0f} MiB"
    )
    log(
        (
            f"a checkpoint every {options.checkpoint_every} updates (at each multiple) and at "
            "the end"
            if options.checkpoint_every
            else "a checkpoint at the end only (--checkpoint-every N saves every N updates)"
        )
        + f", the newest {options.keep} kept; {chunk} updates per compiled call at most"
    )
    out.mkdir(parents=True, exist_ok=True)
    if pid == 0:
        if options.resume:
            remove_unfinished_writes(out, log)
        write_atomic(out / "config.json", json.dumps(record, indent=2).encode())
    blocks = [(lo, min(lo + per_block, end_run)) for lo in range(first_run, end_run, per_block)]
    if len(blocks) > 1:
        log(
            f"the sweep does not fit in memory at once: {len(blocks)} batches of {per_block} "
            "runs, one after another"
        )
    live = len(blocks) == 1 and pcount == 1
    sinks = Sinks(out, sweep, options.tensorboard and pid == 0, options.wandb and pid == 0, record)
    timing = Timing(compile=compile_seconds)
    histories = []
    interrupted = False
    ckpt_root = out / "checkpoints" / (f"process-{pid}" if pcount > 1 else "")
    with Interrupt() as interrupt:
        for b, (lo, hi) in enumerate(blocks):
            block = Block(
                runs=subset(runs, lo, hi, per_block),
                offset=lo,
                count=hi - lo,
                ckpt_dir=ckpt_root / (f"batch-{b}" if len(blocks) > 1 else ""),
                label=f"batch {b + 1}/{len(blocks)} " if len(blocks) > 1 else "",
            )
            release_freed_memory()  # the previous batch's buffers
            done = train_block(
                runner, block, sweep, options, record, timing, interrupt,
                sinks if live else None, log,
            )  # fmt: skip
            histories.append(done.history)
            timing, interrupted = done.timing, done.interrupted
            if interrupted:
                break
    if interrupted and (len(blocks) > 1 or pcount > 1):
        sinks.close()
        log(f"stopped in batch {len(histories)}/{len(blocks)}; continue with: "
            f"purejaxppo train --resume {out}")  # fmt: skip
        return {STOPPED_AT: int(histories[-1]["finite"].shape[1])}
    history = {k: np.concatenate([h[k] for h in histories], axis=0) for k in histories[0]}
    diverged = first_nonfinite(history)
    if sweep.pbt is not None:
        # A run that diverged and then copied a finite one trains on: diverged is its end.
        diverged = {r: u for r, u in diverged.items() if history["finite"][r, -1] == 0}
    totals = timing.totals()
    if pcount > 1:
        # One gather for everything: each collective needs its peers within gloo's deadline.
        per_run = np.tile(
            [totals["compile"], totals["run"], totals["steps"] / max(local_runs, 1)],
            (local_runs, 1),
        )
        history = gather_runs({**history, "_timing": per_run}, share, num_runs)
        times = history.pop("_timing")  # float32 (JAX without x64): plenty for timings
        totals = {
            "compile": float(times[:, 0].max()),
            "run": float(times[:, 1].max()),
            "steps": int(times[:, 2].astype(np.float64).sum()),
        }
    if not live:
        sinks.write(0, history)
    sinks.close()
    if pid != 0:
        log("done; process 0 writes the results")
        return {}

    summary = write_results(out, sweep, history, diverged, totals, runner.num_devices)
    if interrupted:
        summary[STOPPED_AT] = int(history["finite"].shape[1])
        write_atomic(out / "summary.json", json.dumps(summary, indent=2).encode())
        log(f"stopped at update {summary[STOPPED_AT]}; continue with: "
            f"purejaxppo train --resume {out}")  # fmt: skip
    return summary


def check_pbt(sweep: Sweep, options: Options, processes: int) -> None:
    """Refuse what population-based training cannot do, in one line (ValueError)."""
    every, updates = sweep.pbt.every, sweep.config.num_updates
    sweep.pbt.check_population(sweep.num_runs)
    if every >= updates:
        raise ValueError(
            f"--pbt-every {every} leaves no PBT step in a run of {updates} updates; "
            f"use --pbt-every below {updates}"
        )
    if options.checkpoint_every and options.checkpoint_every % every:
        raise ValueError(
            f"--checkpoint-every {options.checkpoint_every} must be a multiple of --pbt-every "
            f"{every} (a checkpoint falls between PBT steps, not inside one's interval)"
        )
    if processes > 1:
        raise ValueError(
            "population-based training runs in one process (its population is one program); "
            f"this job has {processes}"
        )


def pbt_advance(sweep: Sweep) -> Callable[[Callable[..., Any]], Callable[..., Any]] | None:
    """The Runner's advance builder for a PBT sweep (None otherwise)."""
    if sweep.pbt is None:
        return None
    return lambda update: pbt.make_advance(
        update, sweep.config.num_updates, sweep.num_runs, sweep.seed, sweep.pbt
    )


def evolved(hparams: Any, options: pbt.PBTOptions, metrics: dict[str, np.ndarray], n: int) -> Any:
    """hparams [R] with the first n runs' evolved fields as the metrics' last update left them
    (metrics [n, U]: a chunk's, or a resumed history's)."""
    changes = {}
    for name in options.fields:
        value = np.array(getattr(hparams, name), np.float32)
        value[:n] = metrics[pbt.PREFIX + name][:n, -1]
        changes[name] = value
    return hparams.replace(**changes)


def plan_memory(
    runner: Runner, config: Config, num_runs: int, chunk: int, budget: int, total_runs: int
) -> tuple[int, int, float]:
    """Runs per batch so that this process's peak memory stays within `budget`; compiles the
    batch's programs on the way. Returns (runs per batch, their bytes, compile seconds).

    The process's own memory (runtime, compiler, imports) is measured, not guessed; the static
    estimate only picks a first batch size, whose compiled programs then report their real
    footprint (XLA's buffer assignment), and the size is corrected from that until it fits (twice
    at most when the estimate was off by more than a third but the batch fits). Raises
    MemoryError, before anything is written, when not even one run per device fits.
    """
    host = host_bytes_per_run(config) * num_runs
    mib = 2**20

    def refuse(why: str) -> MemoryError:
        return MemoryError(
            f"{total_runs} runs do not fit in {budget / mib:.0f} MiB even in batches: {why}; "
            "use fewer seeds or settings, fewer updates, or a larger --memory-budget-mb"
        )

    room = budget - process_rss_bytes() - host
    floor = state_bytes(runner.trainer)  # a run needs at least its training state
    if room < floor * runner.num_devices:
        raise refuse(
            f"this process already holds {process_rss_bytes() / mib:.0f} MiB and the runs' "
            f"metrics need {host / mib:.0f} MiB"
        )
    per_block = plan_batches(
        num_runs, estimate_run_bytes(runner.trainer, chunk), runner.num_devices, room
    )
    t0 = time.perf_counter()
    attempt = 0
    while True:  # ends: from the third attempt on, a batch that does not fit only shrinks
        size = runner.padded_size(per_block)
        # The programs' buffers, and the host copy of the state a checkpoint save makes.
        block_bytes = runner.compile(size, chunk) + size * floor
        # Measured untrimmed: the compiler's leftover heap stands in for what the runtime adds
        # once the programs run (~150 MB here), which a trimmed reading misses.
        room = budget - process_rss_bytes() - host
        fits = block_bytes <= 0.92 * room  # for what the buffer assignment does not see
        if fits and (per_block == num_runs or block_bytes >= 0.6 * room or attempt >= 2):
            break
        # The estimate was far off either way: re-plan from the measured footprint.
        per_run = max(1, block_bytes // size)
        if per_run * runner.num_devices > 0.92 * room:
            raise refuse(
                f"one run takes {per_run / mib:.1f} MiB on each of {runner.num_devices} "
                f"device(s) and this process already holds {process_rss_bytes() / mib:.0f} MiB"
            )
        fit = plan_batches(num_runs, per_run, runner.num_devices, int(0.85 * room))
        if fit == per_block:
            break
        # The batch size returned is always one whose programs were compiled and measured
        # here: compiling it later, during training, would add the compiler's heap on top of
        # the running batch's buffers.
        runner.forget(size)  # this size's programs are not used
        release_freed_memory()  # nor their compiler's heap: the next reading starts clean
        per_block = fit
        attempt += 1
    return per_block, block_bytes, time.perf_counter() - t0


class Block(NamedTuple):
    """A batch of runs trained together: runs[offset : offset + count] of the sweep, padded."""

    runs: Runs
    offset: int
    count: int
    ckpt_dir: Path
    label: str


def subset(runs: Runs, lo: int, hi: int, size: int) -> Runs:
    """Runs lo..hi-1, padded to `size` (see padded_index)."""
    index = padded_index(lo, hi, size)
    return Runs(
        jax.tree.map(lambda x: x[index], runs.hparams),
        runs.keys[index],
        runs.setting[index],
        runs.seed[index],
    )


class BlockResult(NamedTuple):
    history: dict[str, np.ndarray]  # every metric [run, update] of the block's runs, unpadded
    interrupted: bool  # stopped by an interrupt before the last update
    timing: Timing  # the sweep's timings, this block's added


def train_block(
    runner: Runner,
    block: Block,
    sweep: Sweep,
    options: Options,
    record: dict[str, Any],
    timing: Timing,
    interrupt: Interrupt,
    sinks: Sinks | None,
    log: Callable[[str], None],
) -> BlockResult:
    """Train one block to the end (or to an interrupt), checkpointing as it goes. `record` is
    config.json's, kept in each checkpoint; `timing` the sweep's so far (left as it was)."""
    config, checkpoint_every = sweep.config, options.checkpoint_every
    timing = dataclasses.replace(timing)
    n = block.count
    hp = runner.place(block.runs.hparams)
    if options.resume:
        removed = remove_unfinished_checkpoints(block.ckpt_dir)
        if removed:
            log(f"{block.label}removed {len(removed)} unfinished checkpoint write(s) left by a "
                f"kill in {block.ckpt_dir}: {', '.join(removed)}")  # fmt: skip
    ckpt = Checkpointer(
        block.ckpt_dir, max_to_keep=options.keep, process_local=jax.process_count() > 1
    )
    history: dict[str, np.ndarray] = {}
    start = 0
    if options.resume and ckpt.all_steps():
        state, history, meta, skipped = ckpt.restore_good(
            runner.abstract_state(block.runs.keys, block.runs.hparams)
        )
        start = int(meta["update"])
        timing.carry_over(meta.get("timing"))
        if skipped:
            aside = ckpt.set_aside([step for step, _ in skipped])
            for step, why in skipped:
                log(f"{block.label}checkpoint {step} is damaged: {why}; moved to {aside}")
        log(f"{block.label}resumed from checkpoint at update {start}")
        if sweep.pbt is not None and start:
            hp = runner.place(evolved(block.runs.hparams, sweep.pbt, history, n))
        if getattr(runner.trainer.env, "restarts_on_resume", False):
            # A checkpoint cannot hold emulators (ale:): the games restart from new resets; the
            # parameters, optimizer and statistics go on from the checkpoint.
            fresh = runner.init(block.runs.keys, block.runs.hparams)
            state = state._replace(env=fresh.env)
            log(f"{block.label}the emulators cannot be checkpointed: every game restarts")
    else:
        if options.resume:
            log(f"{block.label}no checkpoint in {block.ckpt_dir}: training starts at update 0")
        t0 = time.perf_counter()
        state = jax.block_until_ready(runner.init(block.runs.keys, block.runs.hparams))
        timing.compile += time.perf_counter() - t0
    # Runs reported as diverged already (before a resume): not reported again.
    reported = first_nonfinite(history) if history else {}

    interrupted = False
    for first, length in aligned_chunks(start, config.num_updates, options.chunk, checkpoint_every):
        t0 = time.perf_counter()
        runner.compile(block.runs.keys.shape[0], length)  # a shorter piece, if any
        timing.compile += time.perf_counter() - t0
        t0 = time.perf_counter()
        state, metrics = runner.advance(state, hp, length)
        elapsed = time.perf_counter() - t0
        if sweep.pbt is not None:
            hp = runner.place(evolved(hp, sweep.pbt, metrics, len(metrics["finite"])))
        timing.run += elapsed
        timing.steps += length * config.batch_size * n
        metrics = {k: v[:n] for k, v in metrics.items()}
        history = (
            metrics
            if not history
            else {k: np.concatenate([history[k], metrics[k]], axis=1) for k in metrics}
        )
        if sinks is not None:
            sinks.write(first, metrics)
        for r, update in first_nonfinite(metrics, first).items():
            if r not in reported:
                reported[r] = update
                who = _describe(r, block.runs, sweep.grid, block.offset)
                log(f"run {who} went non-finite at update {update}")
        done = first + length
        sps = length * config.batch_size * n / elapsed
        log(block.label + progress_line(done, config.num_updates, config.batch_size, sps, history))
        finished = done == config.num_updates
        on_cadence = checkpoint_every is not None and done % checkpoint_every == 0
        if on_cadence or finished or interrupt.requested:
            meta = {"update": done, "settings": record, "timing": timing.totals()}
            ckpt.save(done, state, history, meta)
        if interrupt.requested and not finished:
            interrupted = True
            break
    if start == config.num_updates:
        log(f"{block.label}already complete")
    ckpt.close()
    return BlockResult(history, interrupted, timing)


def first_nonfinite(metrics: dict[str, np.ndarray], first: int = 0) -> dict[int, int]:
    """The first update at which each run went non-finite, by run index (the metrics' row),
    for the runs that did; `first` is the update of the metrics' first column."""
    bad = metrics["finite"] == 0
    return {int(r): first + int(np.argmax(bad[r])) for r in np.flatnonzero(bad.any(axis=1))}


def _describe(r: int, runs: Any, grid: Grid, offset: int = 0) -> str:
    text = stats.setting_labels(grid.fields, grid.settings)[int(runs.setting[r])]
    return f"#{offset + r} (seed {int(runs.seed[r])}{', ' + text if text else ''})"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (its own, not a forking parent's)."""
    return round(process_peak_rss_bytes() / 2**20, 1)


def write_results(
    out: Path,
    sweep: Sweep,
    history: dict[str, np.ndarray],
    diverged: dict[int, int],
    timing: dict[str, Any],
    devices: int = 1,
) -> dict[str, Any]:
    """metrics.npz [setting, seed, update], summary.json and curves.png, each written atomically.
    history: every metric [run, update]; diverged: the first non-finite update by run;
    timing: the whole run's seconds compiling and running, and env steps run (Timing.totals)."""
    config, grid, num_seeds = sweep.config, sweep.grid, sweep.num_seeds
    compile_seconds, run_seconds, steps_run = timing["compile"], timing["run"], timing["steps"]
    updates = history["finite"].shape[1]
    shaped = {k: v.reshape(grid.size, num_seeds, updates) for k, v in history.items()}
    env_steps = (np.arange(updates, dtype=np.int64) + 1) * config.batch_size
    finals = final_return(shaped)  # [H, S]
    # A diverged run's returns say nothing about its setting: left out of every mean, counted.
    kept = np.ones(finals.shape, bool)
    for r in diverged:
        kept[divmod(r, num_seeds)] = False
    extra: dict[str, np.ndarray] = {}
    section = None
    if sweep.pbt is not None:
        fields = sweep.pbt.fields
        initial = np.stack([np.asarray(getattr(sweep.runs().hparams, f)) for f in fields], -1)
        section = pbt.summary_section(
            sweep.pbt, history, initial, finals.reshape(-1), kept.reshape(-1), num_seeds
        )
        flat = finals[kept]
        section["population"] = setting_statistics(flat[np.isfinite(flat)])
        lin = pbt.lineage(history, fields, sweep.pbt.every)
        extra = {
            "pbt_fields": np.array(fields),
            "pbt_step_updates": lin.updates,
            "pbt_lineage_parent": lin.parent.reshape(grid.size, num_seeds, -1),
            "pbt_lineage_hparams": lin.hparams.reshape(grid.size, num_seeds, -1, len(fields)),
        }
    buf = io.BytesIO()
    np.savez(buf, env_steps=env_steps, **shaped, **extra)
    write_atomic(out / "metrics.npz", buf.getvalue())
    per_setting = []
    for h, setting in enumerate(grid.settings):
        row = finals[h][kept[h]]
        ok = row[np.isfinite(row)]
        per_setting.append(
            {
                **setting,
                **setting_statistics(ok, seed=h),
                "diverged_excluded": int((~kept[h]).sum()),
            }
        )
    flat = finals[kept]
    summary = {
        "env": config.env,
        "num_seeds": num_seeds,
        "devices": devices,
        "total_timesteps": int(env_steps[-1]) if updates else 0,
        "compile_seconds": round(compile_seconds, 3),
        "run_seconds": round(run_seconds, 3),
        "steps_per_second": round(steps_run / run_seconds, 1) if run_seconds else None,
        "peak_rss_mb": peak_rss_mb(),
        "final_return": [
            [None if np.isnan(x) else round(float(x), 3) for x in row] for row in finals
        ],
        "final_return_mean": None if np.all(np.isnan(flat)) else round(float(np.nanmean(flat)), 3),
        "diverged_excluded": int((~kept).sum()),
        "grid": {"fields": list(grid.fields), "settings": list(grid.settings)},
        "intervals": INTERVALS,
        "per_setting": per_setting,
        "ranking": ranking(per_setting),
        "diverged": [
            {
                "run": r,
                "setting": r // num_seeds,
                "seed": r % num_seeds,
                "update": u,
                **grid.settings[r // num_seeds],
            }
            for r, u in sorted(diverged.items())
        ],
    }
    if section is not None:
        summary["pbt"] = section
        if "best" in section:
            figure = pbt.schedule_figure([(config.env, section, history, config.batch_size)])
            write_atomic(out / "pbt.png", figure)
    plot_curves(out / "curves.png", env_steps, shaped["episode_return"], grid, config.env)
    # Last: a summary.json means every result file before it is complete.
    write_atomic(out / "summary.json", json.dumps(summary, indent=2).encode())
    return summary


INTERVALS = {
    "confidence": stats.DEFAULT_CONFIDENCE,
    "method": "percentile interval of a bootstrap over the setting's seeds",
    "replicates": stats.DEFAULT_REPS,
    "statistics": "final_return over seeds: IQM (25% cut from each end), mean, median",
}


def setting_statistics(scores: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """One setting's final returns (finite, diverged runs left out) as summary.json fields:
    mean and std, and IQM, mean and median each with its 95% bootstrap interval."""
    if scores.size == 0:
        nothing: dict[str, Any] = {"runs": 0, "final_return_mean": None, "final_return_std": None}
        for name in stats.AGGREGATES:
            nothing.update({f"final_return_{name}": None, f"final_return_{name}_ci": None})
        return nothing
    est = stats.interval_estimates(scores, seed=seed)
    out: dict[str, Any] = {"runs": int(scores.size)}
    out["final_return_mean"] = round(float(scores.mean()), 3)
    out["final_return_std"] = round(float(scores.std()), 3)
    for name in stats.AGGREGATES:
        out[f"final_return_{name}"] = round(est[name].point, 3)
        out[f"final_return_{name}_ci"] = [round(est[name].low, 3), round(est[name].high, 3)]
    return out


def ranking(per_setting: list[dict[str, Any]]) -> list[int]:
    """Setting indices from the highest final-return IQM down; ties (common at a task's top
    score) broken by the mean, then by the interval's low end; settings with no runs last."""

    def key(h: int) -> tuple[float, ...]:
        s = per_setting[h]
        if s["final_return_iqm"] is None:
            return (-math.inf,) * 3
        return (s["final_return_iqm"], s["final_return_mean"], s["final_return_iqm_ci"][0])

    return sorted(range(len(per_setting)), key=key, reverse=True)


def interval_lines(summary: dict[str, Any], most: int = 10) -> list[str]:
    """The console's closing lines: each setting's final-return IQM [95% interval], best
    first (the first `most` of them)."""
    if "pbt" in summary:
        return pbt_lines(summary)
    settings = summary["per_setting"]
    labels = stats.setting_labels(summary["grid"]["fields"], summary["grid"]["settings"])
    lines = []
    for h in summary["ranking"][:most]:
        s, label = settings[h], labels[h]
        if s["final_return_iqm"] is None:
            text = "no finite runs"
        else:
            low, high = s["final_return_iqm_ci"]
            text = f"IQM {s['final_return_iqm']:g} [{low:g}, {high:g}]"
        diverged = s["diverged_excluded"]
        lines.append(
            f"final return {text} over {s['runs']} runs"
            + (f" ({diverged} diverged, left out)" if diverged else "")
            + (f": {label}" if label else "")
        )
    if len(settings) > most:
        lines.append(f"... and {len(settings) - most} more settings, ranked in summary.json")
    return lines


def pbt_lines(summary: dict[str, Any]) -> list[str]:
    """A population-based run's closing lines: the population's final return, its best run
    and the values that run ends with."""
    section, whole = summary["pbt"], summary["pbt"]["population"]
    if whole["final_return_iqm"] is None:
        return ["population: no finite runs"]
    low, high = whole["final_return_iqm_ci"]
    lines = [
        f"population: final return IQM {whole['final_return_iqm']:g} [{low:g}, {high:g}] over "
        f"{whole['runs']} runs, {len(section['step_updates'])} PBT steps"
    ]
    best = section["best"]
    values = ", ".join(f"{f}={v[-1]:.6g}" for f, v in best["schedule"].items())
    lines.append(
        f"best run {best['run']}: final return {best['final_return']:g}, ending at {values}"
    )
    return lines


def plot_curves(
    path: Path, env_steps: np.ndarray, returns: np.ndarray, grid: Grid, title: str
) -> None:
    """Mean across seeds per setting, with an interquartile band (25th-75th percentile of
    seeds: min-max bands of many seeds overlap into one blur); x in env steps per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5 if grid.size > 1 else 7, 4.2), dpi=110)
    labels = stats.setting_labels(grid.fields, grid.settings)
    for h, label in enumerate(labels):
        # Updates in which no episode ended carry NaN; fill forward so the curve is continuous.
        r = stats.forward_fill(returns[h])
        label = label or "default"
        with warnings.catch_warnings():  # updates before any episode ended are all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(r, axis=0)
            low, high = np.nanpercentile(r, [25, 75], axis=0)
        (line,) = ax.plot(env_steps, mean, label=label, lw=1.5)
        ax.fill_between(env_steps, low, high, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("environment steps per run")
    ax.set_ylabel("episodic return")
    ax.set_title(f"{title}: mean over seeds, 25-75% band")
    if grid.size > 1:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue())
