"""Checkpoints of the whole training state with orbax: save, keep the last few, restore.

A checkpoint holds, for every run, the TrainState (params, optimizer state, normalizer
statistics, env state, PRNG key, update counter, KL beta), the metrics recorded so far, and a
JSON record of the resolved settings. Orbax writes each step into a temporary folder and renames
it when complete, so a crash (even SIGKILL) mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


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

    def read_meta(self, update: int | None = None) -> dict[str, Any]:
        update = self.latest() if update is None else update
        return self.manager.restore(update, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

    def restore(
        self, abstract_state: Any, update: int | None = None
    ) -> tuple[Any, dict[str, np.ndarray], dict[str, Any]]:
        """Restore (state, metrics, meta). abstract_state: ShapeDtypeStructs (with shardings)
        of the state to rebuild, typed keys included; from jax.eval_shape of the init."""
        update = self.latest() if update is None else update
        if update is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")

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


def read_saved_state(directory: str | Path, update: int | None = None) -> Any:
    """The saved state of a checkpoint folder as plain arrays (keys as uint32 data), for
    comparing two runs without rebuilding their structure."""
    ckpt = Checkpointer(directory)
    try:
        update = ckpt.latest() if update is None else update
        return ckpt.manager.restore(
            update, args=ocp.args.Composite(state=ocp.args.StandardRestore())
        )["state"]
    finally:
        ckpt.close()
