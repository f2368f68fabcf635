"""What a run folder records about itself, written and read back in one place: the sweep's
description (`Sweep`) and how it is trained (`Options`), config.json (`settings_record` writes
it, `RunRecord.from_record` reads it back checked), a static sweep's record of its variants,
and the mark of a stopped run in summary.json.

The driver writes these files; `train --resume`, `eval` and `compare` read them through here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple

from purejaxppo.pbt import PBTOptions
from purejaxppo.ppo import Config, HParams, check_hparams
from purejaxppo.sweep import Grid, Runs, layout_runs


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What a sweep trains: every setting of `grid` (over `hparams`) with `num_seeds` seeds
    drawn from `seed`, each run under `config`; with `pbt`, the runs are one population that
    evolves by population-based training. Equal sweeps train the same runs, bit for bit (on the
    same device count)."""

    config: Config
    hparams: HParams
    grid: Grid
    num_seeds: int
    seed: int = 0
    pbt: PBTOptions | None = None

    @property
    def num_runs(self) -> int:
        return self.grid.size * self.num_seeds

    def runs(self) -> Runs:
        return layout_runs(self.hparams, self.grid, self.num_seeds, self.seed)

    def record(self, devices: int, options: Options) -> dict[str, Any]:
        """config.json: the settings, then the schedule a resume goes on with."""
        record = settings_record(
            self.config, self.hparams, self.grid, self.num_seeds, self.seed, devices
        )
        if self.pbt is not None:  # absent otherwise: records of runs without it stay as they were
            record[PBT] = self.pbt.record()
        record[SCHEDULE] = options.schedule()
        return record


@dataclasses.dataclass(frozen=True)
class Options:
    """How a sweep is trained; none of these changes a result. `chunk`: updates per compiled
    call (None: about 20 calls); `checkpoint_every`: updates between checkpoints (None: at the
    end only); `keep`: checkpoints kept; `memory_budget`: bytes (None: half of what is free);
    `resume`: go on from the folder's checkpoints."""

    chunk: int | None = None
    checkpoint_every: int | None = None
    keep: int = 3
    resume: bool = False
    memory_budget: int | None = None
    tensorboard: bool = False
    wandb: bool = False

    def schedule(self) -> dict[str, Any]:
        """What a resume keeps unless told otherwise: the --chunk asked for (None: automatic),
        the checkpoint cadence and how many checkpoints are kept."""
        return {"chunk": self.chunk, "checkpoint_every": self.checkpoint_every, "keep": self.keep}


def settings_record(
    config: Config, hparams: HParams, grid: Grid, num_seeds: int, seed: int, devices: int
) -> dict[str, Any]:
    """The resolved settings as JSON; equal records mean a resume continues the same sweep.
    `devices` (per process) is part of it: a run's numbers depend on the per-device batch."""
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()}
    hp = {k: float(getattr(hparams, k)) for k in vars(hparams)}
    return {
        "config": cfg,
        "hparams": hp,
        "grid": {"fields": list(grid.fields), "settings": list(grid.settings)},
        "num_seeds": num_seeds,
        "seed": seed,
        "devices": devices,
    }


# config.json's population-based training options (pbt.PBTOptions.record), where it has any.
PBT = "pbt"

# config.json's record of how a run is cut and saved: not a setting (it changes no result, and
# --resume may change it), so records are compared without it (see settings_only).
SCHEDULE = "schedule"


def settings_only(record: dict[str, Any]) -> dict[str, Any]:
    """A run record without its schedule: equal ones mean the same run."""
    return {k: v for k, v in record.items() if k != SCHEDULE}


class RecordError(ValueError):
    """A record that is not one this version writes; its text says what is wrong."""


def read_record_file(path: Path) -> Any:
    """A run folder's JSON file (config.json, summary.json) as written; raises RecordError
    saying why it cannot be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{path.name} is unreadable ({err})") from None


class RunRecord(NamedTuple):
    """A run folder's config.json, read and checked once: what --resume and eval both use."""

    raw: dict[str, Any]  # as written by the driver; compared with each checkpoint's own copy
    sweep: Sweep
    devices: int  # devices per process the run was trained on (its numbers depend on it)
    # How the run is cut and saved ({chunk, checkpoint_every, keep}; values None where not
    # given); empty in records written before it was kept. Not a setting: see settings_only.
    schedule: dict[str, Any]

    @classmethod
    def from_record(cls, raw: Any) -> RunRecord:
        """A run record (config.json's contents) checked as the command line checks its flags;
        raises RecordError saying what does not hold."""
        try:
            cfg = dict(raw["config"])
            cfg["hidden_sizes"] = tuple(cfg["hidden_sizes"])
            if "log_std_schedule" in cfg:
                cfg["log_std_schedule"] = tuple(cfg["log_std_schedule"])
            config = Config(**cfg)
            check_network_fits(config)
            hparams = check_hparams(HParams(**raw["hparams"]))
            fields = tuple(raw["grid"]["fields"])
            settings = tuple(dict(x) for x in raw["grid"]["settings"])
            if not settings or any(set(x) != set(fields) for x in settings):
                raise ValueError(
                    f"grid settings {list(settings)} do not match fields {list(fields)}"
                )
            for setting in settings:
                check_hparams(hparams.replace(**setting))
            num_seeds, seed = raw["num_seeds"], raw["seed"]
            devices = raw.get("devices", 1)  # records written before the device count was kept
            for name, value, low in (
                ("num_seeds", num_seeds, 1),
                ("seed", seed, 0),
                ("devices", devices, 1),
            ):
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
            schedule = check_schedule(raw.get(SCHEDULE, {}))
            pbt = PBTOptions.from_record(raw[PBT]) if PBT in raw else None
            if pbt is not None:
                pbt.check_population(len(settings) * num_seeds)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise RecordError(err) from None
        sweep = Sweep(config, hparams, Grid(fields, settings), num_seeds, seed, pbt)
        return cls(raw, sweep, devices, schedule)


def check_network_fits(config: Config) -> None:
    """A conv torso needs image observations large enough for it, a log-std schedule
    continuous actions; raises ValueError if not. Builds the env only where one of them is
    asked for (an MLP takes any shape)."""
    if config.network == "mlp" and not config.log_std_schedule:
        return
    from purejaxppo.envs import make_env
    from purejaxppo.ppo import check_action_space, check_obs_shape

    env = make_env(config.env)
    check_obs_shape(config, env.obs_shape)
    check_action_space(config, env)


def check_schedule(schedule: Any) -> dict[str, Any]:
    """A record's schedule: chunk and checkpoint_every None or an integer >= 1, keep an integer
    >= 1; raises ValueError naming the field."""
    if not isinstance(schedule, dict) or set(schedule) - {"chunk", "checkpoint_every", "keep"}:
        raise ValueError(f"schedule must hold chunk, checkpoint_every and keep, got {schedule!r}")
    for name, value in schedule.items():
        if value is None and name != "keep":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"schedule.{name} must be an integer >= 1, got {value!r}")
    return dict(schedule)


# ---------------------------------------------------------------------------------------------
# A sweep over static fields: one folder per variant, and a record of them all at the top.
# ---------------------------------------------------------------------------------------------

STATIC_SWEEP = "static_sweep"


def is_static_sweep(raw: Any) -> bool:
    """A top folder's config.json (or summary.json) that stands for a static sweep's variants."""
    return isinstance(raw, dict) and STATIC_SWEEP in raw


def static_sweep_record(fields: list[str], variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The top folder's config.json: each variant's run record under its folder's name."""
    return {STATIC_SWEEP: {"fields": fields, "variants": variants}}


def static_sweep_variants(raw: Any) -> dict[str, Any]:
    """A static sweep's run records by variant folder name, unchecked; raises RecordError where
    the record is not one (or names a folder outside its own)."""
    try:
        variants = {str(label): rec for label, rec in dict(raw[STATIC_SWEEP]["variants"]).items()}
        if not variants or any("/" in label or label in ("", ".", "..") for label in variants):
            raise ValueError(f"bad variant names {sorted(variants)}")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise RecordError(err) from None
    return variants


def first_run_record(raw: Any) -> Any:
    """The run record of a run folder's config.json, or of a static sweep's first variant;
    unchecked (raises what reading a malformed one raises)."""
    if is_static_sweep(raw):
        return next(iter(raw[STATIC_SWEEP]["variants"].values()))
    return raw


# ---------------------------------------------------------------------------------------------
# summary.json: written last, so its presence means every result file before it is complete.
# ---------------------------------------------------------------------------------------------

# The key of a summary written by a run stopped before its end (the update it stopped at).
STOPPED_AT = "interrupted_at_update"


def stopped_at(summary: Any) -> int | None:
    """The update at which a run's summary says it was stopped; None for a run that finished."""
    return summary[STOPPED_AT] if isinstance(summary, dict) and STOPPED_AT in summary else None
