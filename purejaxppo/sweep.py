"""Seeds x hyperparameter grids as one flat axis of runs, sharded over devices, run in chunks.

A sweep is a grid over traced HParams fields times S seeds. Every (setting, seed) pair is one
*run*; runs are laid out setting-major (run r = h * S + s) and trained by one compiled program,
vmapped over runs, so a grid of 8 learning rates x 32 seeds compiles once. The run axis is
sharded over a 1-D device mesh, padded to a multiple of the device count. The driver advances
all runs `chunk` updates per call, so a caller can report progress and checkpoint between calls;
chunking does not change any result (the update is the same pure function of the state).

Here too: the grid and the random search that make the settings; memory planning (one run's
footprint estimated, then read from the compiled program's buffers, the process's own memory
measured, and the runs per program that fit a budget); and the split of the runs among the
processes of a multi-host job (`process_share`, `gather_runs`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from purejaxppo.ppo import (
    Config,
    Env,
    HParams,
    Trainer,
    TrainState,
    check_hparams,
    compiler_options,
    initial_hidden,
    make_trainer,
    obs_size,
    padded_index,
)

HPARAM_NAMES = tuple(f.name for f in dataclasses.fields(HParams))


# ---------------------------------------------------------------------------------------------
# The grid.
# ---------------------------------------------------------------------------------------------


class Grid(NamedTuple):
    """A full grid over traced hyperparameters: settings[h] maps each swept field to a value."""

    fields: tuple[str, ...]
    settings: tuple[dict[str, float], ...]

    @property
    def size(self) -> int:
        return len(self.settings)


def make_grid(sweep: dict[str, Sequence[float]]) -> Grid:
    """The Cartesian product of the swept values, in the order given (last field fastest)."""
    for name, values in sweep.items():
        if name not in HPARAM_NAMES:
            raise ValueError(
                f"cannot sweep {name!r} in one program: only traced HParams fields "
                f"({', '.join(HPARAM_NAMES)}) can be grid axes"
            )
        if len(values) == 0:
            raise ValueError(f"sweep over {name!r} has no values")
    fields = tuple(sweep)
    combos = itertools.product(*(sweep[f] for f in fields)) if fields else [()]
    return Grid(fields, tuple(dict(zip(fields, map(float, c), strict=True)) for c in combos))


class Draw(NamedTuple):
    """How a random search draws one traced field: uniform or log-uniform on [low, high]."""

    kind: str  # "uniform" | "loguniform"
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.low:g}:{self.high:g}"


DRAW_KINDS = ("uniform", "loguniform")


def random_search(space: dict[str, Draw | Sequence[float]], samples: int, seed: int) -> Grid:
    """`samples` settings drawn independently (a list of values is a uniform choice among
    them), as a Grid whose settings are the draws, in draw order: one compiled program trains
    them all, like a grid. The same space, samples and seed always give the same settings."""
    for name in space:
        if name not in HPARAM_NAMES:
            raise ValueError(
                f"a random search draws traced fields only ({', '.join(HPARAM_NAMES)}); "
                f"{name!r} changes the compiled program"
            )
    rng = np.random.default_rng(seed)
    columns = {}
    for name, spec in space.items():
        if isinstance(spec, Draw):
            if spec.kind == "uniform":
                columns[name] = rng.uniform(spec.low, spec.high, samples)
            else:
                columns[name] = np.exp(rng.uniform(np.log(spec.low), np.log(spec.high), samples))
        else:
            columns[name] = np.asarray(spec, np.float64)[rng.integers(0, len(spec), samples)]
    fields = tuple(space)
    settings = tuple({name: float(columns[name][i]) for name in fields} for i in range(samples))
    return Grid(fields, settings)


def grid_hparams(base: HParams, grid: Grid) -> HParams:
    """Stack base updated by each grid setting: an HParams whose leaves are [H] arrays."""
    rows = [check_hparams(base.replace(**s)) for s in grid.settings]
    return jax.tree.map(lambda *xs: jnp.asarray(np.asarray(xs, np.float32)), *rows)


# ---------------------------------------------------------------------------------------------
# Devices, memory, and how many runs go into one program.
# ---------------------------------------------------------------------------------------------


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices), ("runs",))


def _proc_kib_field(path: str, field: str) -> int | None:
    """The `field:` line of a /proc file given in kB, as bytes; None where it is not there."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else physical memory from sysconf."""
    available = _proc_kib_field("/proc/meminfo", "MemAvailable")
    if available is not None:
        return available
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _nbytes(tree: Any) -> int:
    return sum(
        math.prod(x.shape) * np.dtype(x.dtype).itemsize
        for x in jax.tree.leaves(tree)
        if hasattr(x, "dtype") and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    ) + sum(
        math.prod(x.shape) * 8
        for x in jax.tree.leaves(tree)
        if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    )


def state_bytes(trainer: Trainer) -> int:
    """Bytes of one run's training state."""
    return _nbytes(jax.eval_shape(trainer.init, jax.random.key(0), HParams()))


def estimate_run_bytes(trainer: Trainer, chunk: int) -> int:
    """Memory one run needs inside the compiled program, estimated without compiling.

    The training state, plus one rollout's transitions held several times over (the rollout,
    the flattened batch, one shuffled copy, gradients of a minibatch), the network's activations
    for the whole batch (the bootstrap pass runs the critic on every step at once; a conv torso's
    feature maps dominate) and the chunk's metrics.
    """
    state = jax.eval_shape(trainer.init, jax.random.key(0), HParams())
    env = trainer.env
    cfg = trainer.config
    per_step = 4 * (3 * obs_size(env) + 4 * env.action_dim + 12)
    rollout = cfg.batch_size * per_step
    activations = (
        cfg.batch_size * 4 * 2 * activation_floats(trainer.network, state.params, env, cfg)
    )
    metrics = chunk * 16 * 4
    return _nbytes(state) + 4 * rollout + activations + 2 * _nbytes(state.params) + metrics


def activation_floats(network: Any, params: Any, env: Env, config: Config) -> int:
    """Floats of every layer output for one observation, found by tracing (no compile)."""
    obs = jax.ShapeDtypeStruct((1, *env.obs_shape), np.float32)
    _, captured = jax.eval_shape(
        lambda p, o, h: network.apply(
            p, o, h, capture_intermediates=True, mutable=["intermediates"]
        ),
        params,
        obs,
        initial_hidden(config, (1,)),
    )
    return sum(math.prod(x.shape) for x in jax.tree.leaves(captured))


def plan_batches(num_runs: int, run_bytes: int, num_devices: int, budget: int) -> int:
    """Runs per program: all of them if they fit in `budget`, else the largest multiple of the
    device count that does (at least one run per device)."""
    fit = max(1, budget // max(run_bytes, 1))
    if fit >= num_runs:
        return num_runs
    return max(num_devices, (fit // num_devices) * num_devices)


def process_rss_bytes() -> int:
    """This process's resident memory now (VmRSS); 0 where /proc is not there."""
    return _proc_kib_field("/proc/self/status", "VmRSS") or 0


def process_peak_rss_bytes() -> int:
    """This process's peak resident memory so far (VmHWM of its own address space).

    Not getrusage's ru_maxrss: Linux carries that over exec from the process that forked this
    one, so a CLI started by a 2 GB parent (pytest, a notebook) reported a 2 GB peak of its own.
    Falls back to ru_maxrss where /proc is not there.
    """
    peak = _proc_kib_field("/proc/self/status", "VmHWM")
    if peak is not None:
        return peak
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def release_freed_memory() -> None:
    """Hand freed heap back to the OS (glibc's malloc_trim) between batches of runs: without it
    the freed buffers of one batch stay resident in per-thread arenas, fragment, and the peak
    creeps up batch after batch (measured: +11% over six batches). A no-op off glibc."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def host_bytes_per_run(config: Config) -> int:
    """Host memory of one run's metrics: [num_updates] float32 per metric, held up to three
    times at once (the history, its concatenation over batches, the npz being written)."""
    from purejaxppo.ppo import METRIC_NAMES

    return 3 * config.num_updates * len(METRIC_NAMES) * 4


def program_bytes(compiled: Any) -> int:
    """Memory a compiled XLA program holds while it runs, from XLA's own buffer assignment:
    its arguments, outputs and temporaries, less the outputs that reuse donated arguments."""
    m = compiled.memory_analysis()
    if m is None:  # a backend without the analysis
        return 0
    return (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )


# ---------------------------------------------------------------------------------------------
# The runner.
# ---------------------------------------------------------------------------------------------


class Runs(NamedTuple):
    """The flat run axis: run r trains setting r // num_seeds with seed r % num_seeds."""

    hparams: HParams  # leaves [R]
    keys: jax.Array  # [R] PRNG keys
    setting: np.ndarray  # [R] grid index
    seed: np.ndarray  # [R] seed index


def layout_runs(base: HParams, grid: Grid, num_seeds: int, seed: int) -> Runs:
    """Seed s gets the same key in every setting, so settings are compared on equal seeds."""
    per_setting = grid_hparams(base, grid)
    keys = jax.random.split(jax.random.key(seed), num_seeds)
    hp = jax.tree.map(lambda x: jnp.repeat(x, num_seeds), per_setting)
    setting = np.repeat(np.arange(grid.size), num_seeds)
    seed_index = np.tile(np.arange(num_seeds), grid.size)
    return Runs(hp, keys[seed_index], setting, seed_index)


def _pad(tree: Any, size: int) -> Any:
    """Pad the leading axis to `size` (see padded_index)."""

    def pad(x: jax.Array) -> jax.Array:
        n = x.shape[0]
        return x if n == size else x[padded_index(0, n, size)]

    return jax.tree.map(pad, tree)


class Runner:
    """Compiled init and chunked update for a block of runs, sharded over a mesh."""

    def __init__(
        self,
        config: Config,
        env: Env | None = None,
        mesh: Mesh | None = None,
        make_advance: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    ) -> None:
        """`make_advance(update)`, where given, builds the advance program from the trainer's
        update in place of the plain one: advance(state, hparams, length) -> (state, metrics)
        over the whole run axis (population-based training's, pbt.make_advance)."""
        self.trainer = make_trainer(config, env)
        self.config = config
        self.mesh = make_mesh() if mesh is None else mesh
        self.num_devices = self.mesh.devices.size
        self.sharding = NamedSharding(self.mesh, PartitionSpec("runs"))
        self.compiled: dict[tuple[str, int, int], Any] = {}  # (program, runs, length) -> exe
        trainer = self.trainer

        def init(keys: jax.Array, hparams: HParams) -> TrainState:
            return jax.vmap(trainer.init)(keys, hparams)

        def advance(
            state: TrainState, hparams: HParams, length: int
        ) -> tuple[TrainState, dict[str, jax.Array]]:
            def one_run(s: TrainState, hp: HParams):
                return jax.lax.scan(lambda c, _: trainer.update(c, hp), s, None, length=length)

            state, metrics = jax.vmap(one_run)(state, hparams)
            return state, metrics  # metrics [R, length]

        if make_advance is not None:
            advance = make_advance(trainer.update)

        self._init = jax.jit(init, out_shardings=self.sharding, compiler_options=compiler_options())
        self._advance = jax.jit(
            advance,
            static_argnums=2,
            donate_argnums=0,
            out_shardings=(self.sharding, self.sharding),
            compiler_options=compiler_options(),
        )

    def padded_size(self, n: int) -> int:
        return -(-n // self.num_devices) * self.num_devices

    def place(self, tree: Any) -> Any:
        """Pad a [n, ...] pytree to the device multiple and shard it over the run axis."""
        n = jax.tree.leaves(tree)[0].shape[0]
        return jax.device_put(_pad(tree, self.padded_size(n)), self.sharding)

    def init(self, keys: jax.Array, hparams: HParams) -> TrainState:
        keys, hparams = self.place(keys), self.place(hparams)
        exe = self.compiled.get(("init", keys.shape[0], 0))
        return (self._init if exe is None else exe)(keys, hparams)

    def _specs(self, n: int) -> tuple[Any, Any]:
        """Abstract placed (keys, hparams) of a block of n runs (n a device multiple)."""
        keys = jax.ShapeDtypeStruct((n,), jax.random.key(0).dtype, sharding=self.sharding)
        hp = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct((n,), np.float32, sharding=self.sharding), HParams()
        )
        return keys, hp

    def compile(self, n: int, length: int) -> int:
        """Compile init and a `length`-update advance for blocks of n runs (padded to the device
        multiple), keep them for init/advance, and return the bytes the larger of the two
        holds while it runs on all devices together (XLA's buffer assignment: the block's real
        footprint; XLA reports one device's share of a partitioned program)."""
        n = self.padded_size(n)
        keys, hp = self._specs(n)
        sizes = []
        if ("init", n, 0) not in self.compiled:
            self.compiled["init", n, 0] = self._init.lower(keys, hp).compile()
        sizes.append(program_bytes(self.compiled["init", n, 0]))
        if ("advance", n, length) not in self.compiled:
            state = self.abstract_state_of(keys, hp)
            self.compiled["advance", n, length] = self._advance.lower(state, hp, length).compile()
        sizes.append(program_bytes(self.compiled["advance", n, length]))
        return max(sizes) * self.num_devices

    def forget(self, n: int) -> None:
        """Drop the compiled programs for blocks of n runs."""
        for key in [k for k in self.compiled if k[1] == self.padded_size(n)]:
            del self.compiled[key]

    def abstract_state(self, keys: jax.Array, hparams: HParams) -> TrainState:
        """Shapes, dtypes and shardings of init's state, without computing it (for restores)."""
        return self.abstract_state_of(self.place(keys), self.place(hparams))

    def abstract_state_of(self, keys: Any, hparams: Any) -> TrainState:
        abstract = jax.eval_shape(self._init, keys, hparams)
        return jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self.sharding), abstract
        )

    def advance(
        self, state: TrainState, hparams: HParams, length: int
    ) -> tuple[TrainState, dict[str, np.ndarray]]:
        """Run `length` updates of every run; hparams must already be placed."""
        exe = self.compiled.get(("advance", hparams.gamma.shape[0], length))
        if exe is None:
            state, metrics = self._advance(state, hparams, length)
        else:
            state, metrics = exe(state, hparams)
        return state, {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}


def chunks(start: int, total: int, chunk: int) -> Iterator[tuple[int, int]]:
    """(first update, length) pairs covering [start, total) in steps of `chunk`."""
    u = start
    while u < total:
        n = min(chunk, total - u)
        yield u, n
        u += n


def aligned_chunks(
    start: int, total: int, chunk: int, every: int | None = None
) -> Iterator[tuple[int, int]]:
    """(first update, length) pairs covering [start, total) in pieces of at most `chunk`, cut
    at every multiple of `every` (checkpoints fall exactly there) and laid from each multiple,
    so the lengths are few (chunk, the remainder of `every`, the end's): each is one compile.
    A start off that grid (a resume after an interrupt) first runs to its next point."""
    u = start
    while u < total:
        base = u // every * every if every else 0
        end = base + ((u - base) // chunk + 1) * chunk
        if every:
            end = min(end, base + every)
        end = min(end, total)
        yield u, end - u
        u = end


def train_runs(
    config: Config,
    runs: Runs,
    env: Env | None = None,
    chunk: int | None = None,
    mesh: Mesh | None = None,
) -> tuple[TrainState, dict[str, np.ndarray]]:
    """Train every run to the end, `chunk` updates per call; metrics are [R, num_updates]."""
    runner = Runner(config, env, mesh)
    chunk = config.num_updates if chunk is None else chunk
    n = runs.keys.shape[0]
    hp = runner.place(runs.hparams)
    state = runner.init(runs.keys, runs.hparams)
    parts: list[dict[str, np.ndarray]] = []
    for _, length in chunks(0, config.num_updates, chunk):
        state, metrics = runner.advance(state, hp, length)
        parts.append(metrics)
    metrics = {k: np.concatenate([p[k] for p in parts], axis=1)[:n] for k in parts[0]}
    return jax.tree.map(lambda x: x[:n], state), metrics


# ---------------------------------------------------------------------------------------------
# Several processes (hosts): each trains its share of the runs; process 0 gathers the results.
# ---------------------------------------------------------------------------------------------


def init_distributed(coordinator: str, num_processes: int, process_id: int) -> None:
    """Join a jax.distributed job. Must run before anything touches a JAX backend.

    On CPUs the cross-process gather runs over gloo, which jaxlib ships."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )


def process_share(num_runs: int) -> tuple[int, int, int]:
    """(first run, end, share) of this process: runs are split in equal contiguous shares."""
    return share_of(num_runs, jax.process_count(), jax.process_index())


def share_of(num_runs: int, count: int, index: int) -> tuple[int, int, int]:
    """(first run, end, share) of process `index` of `count`; the last ones may get fewer runs,
    or none (checked before a job starts: see cli.check_process_shares)."""
    share = -(-num_runs // count)
    lo = min(num_runs, index * share)
    return lo, min(num_runs, lo + share), share


_BARRIERS = itertools.count()


def wait_for_all(timeout_s: float = 7 * 24 * 3600.0) -> None:
    """Block until every process gets here, on the coordination service's barrier.

    Processes can finish their shares minutes apart; gloo gives a collective only 30 s to find
    its peers, so the gather waits here first, with a deadline measured in days."""
    from jax._src import distributed

    client = distributed.global_state.client
    if client is not None:
        client.wait_at_barrier(f"purejaxppo-{next(_BARRIERS)}", timeout_in_ms=int(timeout_s * 1e3))


def gather_runs(local: dict[str, np.ndarray], share: int, num_runs: int) -> dict[str, np.ndarray]:
    """Concatenate every process's [n_p, ...] arrays along the run axis, in process order."""
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    wait_for_all()
    padded = {}
    for name, value in local.items():
        block = np.zeros((share,) + value.shape[1:], value.dtype)
        block[: value.shape[0]] = value
        padded[name] = block
    gathered = multihost_utils.process_allgather(padded, tiled=True)
    out = {
        name: np.asarray(value).reshape((-1,) + local[name].shape[1:])[:num_runs]
        for name, value in gathered.items()
    }
    return out
