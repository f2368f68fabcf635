"""Shared fixtures and test order: unit, then integration, then learning (slow) tests."""

import pytest


def pytest_collection_modifyitems(config, items):
    # Unit tests first, then integration, then learning tests: a broken unit shows up in seconds.
    # The learning tests longest first (the seconds their slow marker states, measured on the
    # 2-core CPU), so that the test processes finish together, then the short shipped-level
    # checks, which fill the gaps (make test's second run: 8:04 with the longest test last).
    def tier(item):
        if item.get_closest_marker("slow"):
            return 2
        if item.get_closest_marker("shipped_level"):
            return 3
        return 1 if item.get_closest_marker("integration") else 0

    def seconds(item):
        return max((m.kwargs.get("seconds", 0) for m in item.iter_markers("slow")), default=0)

    items.sort(key=lambda item: (tier(item), -seconds(item)))


def tiny_config(**changes):
    """A trainer small enough to compile and run in seconds: 4 updates of 2 envs x 8 steps."""
    from purejaxppo.ppo import Config

    base = dict(
        env="CartPole-v1",
        num_envs=2,
        num_steps=8,
        total_timesteps=64,
        update_epochs=2,
        num_minibatches=2,
        hidden_sizes=(8,),
    )
    return Config(**{**base, **changes})


@pytest.fixture
def tiny():
    return tiny_config()


def pytest_configure(config):
    # Tests that call the command line in this process run on one XLA CPU device, whichever
    # test starts JAX first (the command line would otherwise take one device per core).
    # Several devices are tested in subprocesses.
    import os
    from pathlib import Path

    # A persistent XLA compilation cache for the session: many tests compile the same program
    # again (a run and its resume, the README's commands, the same tiny trainer), and loading
    # one is a fraction of compiling it. One folder for every xdist process and the
    # command-line subprocesses (set in the environment), so a program compiled by one is
    # loaded by the others. A size limit turns on JAX's file lock around each read and write
    # (jax/_src/lru_cache.py), so no process reads an entry another is still writing.
    # JAX_COMPILATION_CACHE_DIR set by the caller wins (an empty value turns it off).
    cache = Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax-cache" / "shared"
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache))
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(32 << 30))
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"] or None)
    jax.config.update(
        "jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"])
    )

    from purejaxppo.ppo import chosen_cpu_devices

    if chosen_cpu_devices() is None:
        jax.config.update("jax_num_cpu_devices", 1)


def cut_back(done, cut, update):
    """A copy of the finished run folder `done` at `cut` as a run stopped at checkpoint
    `update` leaves it: later checkpoints, the result files and the lock gone."""
    import shutil

    shutil.copytree(done, cut)
    for step in (cut / "checkpoints").iterdir():
        if int(step.name) > update:
            shutil.rmtree(step)
    for name in ("metrics.npz", "summary.json", "curves.png"):
        (cut / name).unlink()
    (cut / "pbt.png").unlink(missing_ok=True)  # a population-based run's
    for lock in cut.glob("*.lock"):
        lock.unlink()


def assert_same_run(done, cut):
    """Two run folders hold the same run to the bit: every metrics.npz array and the latest
    checkpoint's state."""
    import jax
    import numpy as np

    from purejaxppo.checkpoint import read_saved_state

    a, b = np.load(done / "metrics.npz"), np.load(cut / "metrics.npz")
    assert a.files == b.files
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    sa, sb = read_saved_state(done / "checkpoints"), read_saved_state(cut / "checkpoints")
    for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
