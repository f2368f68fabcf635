"""Checkpoints of the whole training state with orbax: save, keep the last few, restore.

A checkpoint holds, for every run, the TrainState (params, optimizer state, normalizer
statistics, env state, PRNG key, update counter, KL beta), the metrics recorded so far, and a
JSON record of the resolved settings. Orbax writes each step into a temporary folder and renames
it when complete, so a crash (even SIGKILL) mid-write leaves the previous checkpoint intact.

After orbax has finished a step, a SHA-256 of every file in it is written beside the data
(`purejaxppo.sha256`, atomically). A restore checks it first and takes the newest step whose
checksum holds and that orbax can read; damaged steps (flipped bytes, truncated or missing
files, garbage metadata, or no checksum because the process died before writing it) are skipped
and reported, so no result is ever computed from damaged state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from purejaxppo.errors import DiskFull, NoGoodCheckpoint, is_disk_full
from purejaxppo.files import replace_file


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def keys_to_data(tree: Any) -> Any:
    """Typed PRNG keys -> their uint32 data, which any array store can hold."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def data_to_keys(tree: Any, like: Any) -> Any:
    """Inverse of keys_to_data, using `like` (the original structure) to find the keys."""
    return jax.tree.map(
        lambda x, ref: jax.random.wrap_key_data(x) if _is_key(ref) else x, tree, like
    )


DIGEST_NAME = "purejaxppo.sha256"


def folder_digest(folder: Path) -> str:
    """SHA-256 over every file below folder (its relative path, size and bytes), in sorted
    order; the digest file itself excluded."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.lstrip(".").startswith(DIGEST_NAME):
            continue
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        h.update(path.stat().st_size.to_bytes(8, "little"))
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _drop_closed_loop_callbacks(fallback: Callable[[Any], None]) -> Callable[[Any], None]:
    """An unraisable-exception hook that drops tensorstore's late write callbacks.

    When a write fails (a full disk), orbax closes its event loop while tensorstore's native
    threads still hold completion callbacks for the other files; each then fails with
    RuntimeError('Event loop is closed'), which Python reports as an unraisable exception: dozens
    of tracebacks around the one line that says what happened. Anything else goes to `fallback`.
    """

    def hook(unraisable: Any) -> None:
        err = unraisable.exc_value
        if isinstance(err, RuntimeError) and str(err) == "Event loop is closed":
            return
        fallback(unraisable)

    return hook


def step_damage(folder: Path) -> str | None:
    """Why the checkpoint in `folder` (one step) cannot be trusted, or None if its checksum
    holds."""
    try:
        expected = (folder / DIGEST_NAME).read_text().strip()
    except FileNotFoundError:
        return "no checksum (its save did not finish)"
    except OSError as err:
        return f"checksum unreadable ({err.strerror or err})"
    try:
        actual = folder_digest(folder)
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    return None if actual == expected else "checksum mismatch (its files changed after saving)"


def newest_saved_record(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """(step folder, its record) of the newest intact checkpoint anywhere under `root` (a run's
    checkpoints/, with its batch-B/ and process-P/ folders), read as plain files after the
    checksum: no orbax, no JAX, so it works before a multi-process job starts. The record is
    what the driver saved beside the state ({"update", "settings", ...}); None if no intact
    checkpoint has a readable one."""
    folders = [
        root,
        *root.glob("batch-*"),
        *root.glob("process-*"),
        *root.glob("process-*/batch-*"),
    ]
    steps = [
        step
        for folder in folders
        if folder.is_dir()
        for step in folder.iterdir()
        if step.name.isdigit() and step.is_dir()
    ]
    for step in sorted(steps, key=lambda p: int(p.name), reverse=True):
        if step_damage(step) is not None:
            continue
        try:
            record = json.loads((step / "meta" / "metadata").read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # orbax keeps its JSON there; elsewhere, another step may still do
        if isinstance(record, dict):
            return step, record
    return None


class Checkpointer:
    """Numbered checkpoints (the number is the count of completed updates) under `directory`."""

    def __init__(
        self, directory: str | Path, max_to_keep: int = 3, process_local: bool = False
    ) -> None:
        """process_local: in a multi-process job, this process saves its own runs alone (its
        own folder, no barriers with the other processes)."""
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        # orbax refuses process-local device arrays in a multi-process job: save host copies.
        self.process_local = process_local
        extra = {}
        if process_local:
            pid = jax.process_index()
            extra["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
                primary_host=pid, active_processes={pid}, barrier_sync_key_prefix=f"process-{pid}"
            )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=not process_local,
                enable_async_checkpointing=False,
                **extra,
            ),
        )

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(
        self, update: int, state: Any, metrics: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> None:
        """Save checkpoint `update`, then its checksum. A full disk raises DiskFull naming the
        checkpoint; the ones before it are untouched."""
        loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
        levels = [log.level for log in loggers]
        # orbax's writer threads log every failed write of a full disk at ERROR level.
        for log in loggers:
            log.setLevel(logging.CRITICAL)
        hook = sys.unraisablehook
        sys.unraisablehook = _drop_closed_loop_callbacks(hook)
        try:
            self._save(update, state, metrics, meta)
        except Exception as err:
            if not is_disk_full(err):
                sys.unraisablehook = hook
                raise
            # The filter stays: tensorstore's threads go on failing after the save gave up.
            good = [s for s in self.all_steps() if s != update]
            raise DiskFull(
                f"disk full while writing checkpoint {update} in {self.directory}; "
                + (
                    f"checkpoint {max(good)} is the last complete one"
                    if good
                    else "no checkpoint was completed"
                )  # fmt: skip
            ) from None
        else:
            sys.unraisablehook = hook
        finally:
            for log, level in zip(loggers, levels, strict=True):
                log.setLevel(level)

    def _save(
        self, update: int, state: Any, metrics: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> None:
        self.manager.save(
            update,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(
                    jax.device_get(keys_to_data(state))
                    if self.process_local
                    else keys_to_data(state)
                ),
                # "metrics" is reserved by orbax for its own best-checkpoint tracking.
                history=ocp.args.StandardSave({k: np.asarray(v) for k, v in metrics.items()}),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        self.manager.wait_until_finished()
        folder = self.step_dir(update)
        digest = folder_digest(folder)  # before the temporary file exists
        # A full disk stays an OSError: save() names the checkpoint it cost.
        replace_file(folder / DIGEST_NAME, (digest + "\n").encode())

    def step_dir(self, update: int) -> Path:
        return self.directory / str(update)

    def damage(self, update: int) -> str | None:
        """Why checkpoint `update` cannot be trusted, or None if its checksum holds."""
        return step_damage(self.step_dir(update))

    def good_steps(self) -> tuple[list[int], list[tuple[int, str]]]:
        """(steps whose checksum holds, newest first; [(step, why)] of the damaged ones)."""
        good, damaged = [], []
        for step in sorted(self.all_steps(), reverse=True):
            why = self.damage(step)
            if why is None:
                good.append(step)
            else:
                damaged.append((step, why))
        return good, damaged

    def set_aside(self, steps: list[int]) -> Path:
        """Move damaged steps out of the way (into <folder>.damaged/) before training on over
        them, keeping them for inspection; returns that folder."""
        aside = self.directory.with_name(self.directory.name + ".damaged")
        aside.mkdir(exist_ok=True)
        for step in steps:
            target = aside / str(step)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(self.step_dir(step)), target)
        self.manager.reload()
        return aside

    def read_meta(self, update: int) -> dict[str, Any]:
        return self.manager.restore(update, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

    def restore_good(
        self, abstract_state: Any
    ) -> tuple[Any, dict[str, np.ndarray], dict[str, Any], list[tuple[int, str]]]:
        """Restore the newest intact checkpoint: (state, metrics, meta, [(step, why)] of the
        newer ones skipped as damaged). Raises NoGoodCheckpoint if none is intact."""
        good, damaged = self.good_steps()
        for step in good:
            try:
                state, metrics, meta = self.restore(abstract_state, step)
            except Exception as err:  # orbax reports damage in many types; all mean the same
                damaged.append((step, f"unreadable ({type(err).__name__})"))
                continue
            skipped = sorted((d for d in damaged if d[0] > step), reverse=True)
            return state, metrics, meta, skipped
        self._refuse(damaged)

    def require_intact(self) -> None:
        """Raise NoGoodCheckpoint if there are checkpoints but none passes its checksum; a
        check to make before anything is written (restore_good makes it again)."""
        good, damaged = self.good_steps()
        if damaged and not good:
            self._refuse(damaged)

    def _refuse(self, damaged: list[tuple[int, str]]) -> None:
        if not damaged:
            raise NoGoodCheckpoint(f"no checkpoint in {self.directory}")
        reasons = "; ".join(f"{step}: {why}" for step, why in sorted(damaged, reverse=True))
        raise NoGoodCheckpoint(f"no intact checkpoint in {self.directory} ({reasons})")

    def restore(
        self, abstract_state: Any, update: int
    ) -> tuple[Any, dict[str, np.ndarray], dict[str, Any]]:
        """Restore (state, metrics, meta) of checkpoint `update`, unchecked (see restore_good).
        abstract_state: ShapeDtypeStructs (with shardings) of the state to rebuild, typed keys
        included; from jax.eval_shape of the init."""

        def spec(x: Any) -> Any:
            shape = x.shape + ((2,) if _is_key(x) else ())
            dtype = np.uint32 if _is_key(x) else x.dtype
            if self.process_local:  # restored to host, placed on the devices below
                return np.zeros(shape, dtype)
            return jax.ShapeDtypeStruct(shape, dtype, sharding=getattr(x, "sharding", None))

        target = jax.tree.map(spec, abstract_state)
        restored = self.manager.restore(
            update,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target),
                history=ocp.args.StandardRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        state = restored["state"]
        if self.process_local:
            state = jax.tree.map(
                lambda x, ref: jax.device_put(x, getattr(ref, "sharding", None)),
                state,
                abstract_state,
            )
        state = data_to_keys(state, abstract_state)
        metrics = {k: np.asarray(v) for k, v in restored["history"].items()}
        return state, metrics, restored["meta"]

    def close(self) -> None:
        self.manager.close()


UNFINISHED_SUFFIX = ".orbax-checkpoint-tmp"


def remove_unfinished_checkpoints(directory: str | Path) -> list[str]:
    """Delete the temporary folders of checkpoint writes a kill cut short (orbax writes a step
    into `<step>.orbax-checkpoint-tmp...` and renames it when complete, so such a folder is
    never a checkpoint); returns their names. For a resume, which holds the run's folder."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in sorted(directory.iterdir()):
        if UNFINISHED_SUFFIX in path.name and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(path.name)
    return removed


def read_saved_state(directory: str | Path, update: int | None = None) -> Any:
    """The saved state of a checkpoint folder as plain arrays (keys as uint32 data), for
    comparing two runs without rebuilding their structure."""
    ckpt = Checkpointer(directory)
    try:
        update = ckpt.latest() if update is None else update
        # Host arrays of the saved shapes: restorable whatever devices saved them.
        state_dir = ckpt.step_dir(update) / "state"
        saved = ocp.StandardCheckpointer().metadata(state_dir).item_metadata
        target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), saved)
        return ckpt.manager.restore(
            update, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        )["state"]
    finally:
        ckpt.close()
