"""The command line: `train`, `eval` and `compare`, and every check made before they run.

  purejaxppo train --env CartPole-v1 --num-seeds 16 --out runs/cartpole
  purejaxppo train --env CartPole-v1 --num-seeds 32 --out runs/lr \
      --sweep learning_rate=0.00025,0.001 ent_coef=0,0.01
  purejaxppo train --resume runs/lr
  purejaxppo eval runs/lr
  purejaxppo compare runs/lr runs/cartpole --out runs/compare

Beside parsing, this module holds the checks: of flags, fields, sweeps and presets; of a
multi-process job's variables and its coordinator; of the output folder (a path the OS takes,
writable, not held by a live run, not already a run); and, for --resume and eval, that a run
folder's records agree (config.json as record.py reads it, its checkpoints' own copies, the
device count it was trained on). Every problem with the input is reported in one line with
exit code 2, before anything compiles and before anything is written. See driver.py for what
the output folder holds.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from purejaxppo import presets
from purejaxppo.errors import DiskFull, NoGoodCheckpoint, is_disk_full, path_problem, shown
from purejaxppo.files import write_atomic, written_into_place
from purejaxppo.pbt import PREFIX as PBT_PREFIX
from purejaxppo.pbt import PBTOptions
from purejaxppo.ppo import (
    Config,
    Env,
    HParams,
    check_fields_apply,
    check_hparams,
    field_applies,
    parse_field_value,
    parse_int,
)
from purejaxppo.record import (
    STATIC_SWEEP,
    Options,
    RecordError,
    RunRecord,
    Sweep,
    check_network_fits,
    first_run_record,
    is_static_sweep,
    read_record_file,
    settings_only,
    static_sweep_record,
    static_sweep_variants,
    stopped_at,
)
from purejaxppo.runlock import LOCK_NAME, FolderInUse, FolderLock

CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
HPARAM_FIELDS = {f.name: f for f in dataclasses.fields(HParams)}


class UsageError(Exception):
    """A problem with the command line: reported in one line, exit code 2."""


# Bytes a run folder's path leaves for what training writes inside it, the deepest being an
# orbax checkpoint being written (checkpoints/process-N/batch-N/STEP.orbax-checkpoint-tmp-TIME/
# history/ocdbt.process_0/d/HASH, about 150) and TensorBoard's events (tensorboard/LABEL/...).
RUN_ROOM = 512


def check_path(path: str | Path, flag: str, room: int = 0) -> None:
    """Refuse, in one line, a path the OS would refuse (see errors.path_problem)."""
    problem = path_problem(path, room)
    if problem:
        raise UsageError(f"{flag} {shown(path)}: path too long: {problem}")


def parse_assignment(text: str) -> tuple[str, Any]:
    """'field=value' -> (field, typed value), for any Config or HParams field."""
    name, sep, raw = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep:
        raise UsageError(f"--set expects field=value, got {text!r}")
    field = CONFIG_FIELDS.get(name) or HPARAM_FIELDS.get(name)
    if field is None:
        known = ", ".join(sorted(CONFIG_FIELDS) + sorted(HPARAM_FIELDS))
        raise UsageError(f"unknown field {name!r}; known fields: {known}")
    try:
        return name, parse_field_value(field.type, raw.strip())
    except (ValueError, argparse.ArgumentTypeError):
        raise UsageError(f"{name}: cannot read {raw!r} as {field.type}") from None


def resolve(env: str, overrides: dict[str, Any]) -> tuple[Config, HParams]:
    """Preset for the env, then the user's overrides; raises ValueError naming a bad field."""
    from purejaxppo.envs import is_known_env

    cfg = {k: v for k, v in overrides.items() if k in CONFIG_FIELDS}
    hp = {k: v for k, v in overrides.items() if k in HPARAM_FIELDS}
    if not is_known_env(env):
        from purejaxppo.envs import make_env

        make_env(env)  # raises with the list of known environments
    config, hparams = presets.defaults_for(env)
    config = config.replace(**cfg)
    check_network_fits(config)
    return config, check_hparams(hparams.replace(**hp))


def hold_folder(out: Path, flag: str, new_run: bool) -> FolderLock:
    """Take `out` for this run, or refuse it in one line: when another live run is writing
    there, and (new_run) when it already holds a finished or stopped run. Nothing is created
    or written before these checks pass."""
    lock = FolderLock(out)
    try:
        lock.check()
        if new_run and holds_run(out):
            raise UsageError(
                f"{flag} {out} already holds a run; use --resume {out} or a new folder"
            )
        check_layout(out, flag)
        check_output_dir(out)
        return lock.acquire()
    except FolderInUse as err:
        raise held_by_another(out, flag, err) from None


def held_by_another(out: Path, flag: str, err: FolderInUse) -> UsageError:
    """The refusal of a folder that a live run holds (`err` names the run)."""
    return UsageError(
        f"{flag} {out}: {err} is training into this folder; wait for it to finish or use "
        "another folder"
    )


def holds_run(out: Path) -> bool:
    """A run (finished, stopped or still starting) has recorded itself in `out`."""
    checkpoints = out / "checkpoints"
    return (out / "config.json").exists() or (checkpoints.is_dir() and any(checkpoints.iterdir()))


def check_layout(out: Path, flag: str) -> None:
    """Refuse a folder where a run's files would land on something else (a file named
    checkpoints, a folder named summary.json): training would end in a traceback there."""
    for name, folder in (("checkpoints", True), ("config.json", False), ("metrics.npz", False),
                         ("curves.png", False), ("summary.json", False)):  # fmt: skip
        path = out / name
        if (path.exists() or path.is_symlink()) and path.is_dir() != folder:
            what = "a folder" if folder else "a file"
            raise UsageError(f"{flag} {out}: {path} is not {what}; move it out of the way")


def check_not_held(out: Path, flag: str) -> None:
    """Refuse `out` while a live run holds it; reads only."""
    try:
        FolderLock(out).check()
    except FolderInUse as err:
        raise held_by_another(out, flag, err) from None


@contextlib.contextmanager
def hold_variant(folder: Path | None) -> Iterator[None]:
    """Hold a static sweep's variant folder too, so `--resume OUT/VARIANT` cannot run into it
    while the sweep trains it."""
    if folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    try:
        lock = FolderLock(folder).acquire()
    except FolderInUse as err:
        raise UsageError(f"{folder}: {err} is training into this folder") from None
    try:
        yield
    finally:
        lock.release()


def check_output_dir(out: Path) -> None:
    """Refuse an output folder that cannot be written, before anything compiles."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        # A uniquely named probe: the processes of a multi-process job check the same folder.
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UsageError(f"--out {out}: cannot write there ({err.strerror or err})") from None


def parse_draw(name: str, raw: str) -> Any:
    """'loguniform:1e-4:1e-2' -> Draw, with numbers LOW < HIGH (and 0 < LOW for loguniform)."""
    from purejaxppo.sweep import Draw

    kind, _, span = raw.partition(":")
    low, sep, high = span.partition(":")
    try:
        draw = Draw(kind, float(low), float(high))
    except ValueError:
        draw = None
    if draw is None or not sep or not (math.isfinite(draw.low) and math.isfinite(draw.high)):
        raise UsageError(f"--sweep {name}={raw}: expected {kind}:LOW:HIGH with numbers")
    if not draw.low < draw.high:
        raise UsageError(f"--sweep {name}={raw}: LOW must be below HIGH")
    if kind == "loguniform" and draw.low <= 0:
        raise UsageError(f"--sweep {name}={raw}: loguniform needs 0 < LOW")
    return draw


def parse_sweep(items: Sequence[str]) -> dict[str, Any]:
    """['learning_rate=1e-3,1e-2', 'num_envs=4,8'] -> {field: [typed values]}; a random
    search's 'field=uniform:LOW:HIGH' (or loguniform) -> {field: Draw}."""
    from purejaxppo.sweep import DRAW_KINDS

    sweep: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not raw.strip():
            raise UsageError(f"--sweep expects field=v1,v2,..., got {item!r}")
        key = name.strip().replace("-", "_")
        head = raw.strip().split(":")[0]
        if ":" in raw and head not in DRAW_KINDS:
            raise UsageError(
                f"--sweep {key}={raw}: a distribution is one of "
                f"{', '.join(k + ':LOW:HIGH' for k in DRAW_KINDS)}"
            )
        if head in DRAW_KINDS:
            parse_assignment(f"{name}=0")  # an unknown field is named as for a list
            if key in sweep:
                raise UsageError(f"--sweep names {key!r} twice")
            sweep[key] = parse_draw(key, raw.strip())
            continue
        values = []
        for text in raw.split(","):
            values.append(parse_assignment(f"{name}={text}")[1])
        if key in sweep:
            raise UsageError(f"--sweep names {key!r} twice")
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise UsageError(f"--sweep {key} lists {', '.join(repeated)} more than once")
        if key == "env":
            raise UsageError("--sweep cannot vary env; run one command per environment")
        sweep[key] = values
    return sweep


def settings_from_args(args: argparse.Namespace) -> tuple[Config, HParams, dict, dict]:
    """Resolve preset/--config, --set and --sweep into (Config, HParams, traced, static)."""
    cfg_over: dict[str, Any] = {}
    hp_over: dict[str, Any] = {}
    env = args.env
    if args.config:
        check_path(args.config, "--config")
        try:
            preset_env, cfg_over, hp_over = presets.load_preset(args.config)
        except ValueError as err:
            raise UsageError(str(err)) from None
        env = env or preset_env
    if not env:
        raise UsageError("--env is required (or a --config that names one)")
    user_set = dict(parse_assignment(a) for a in args.set)
    overrides = {**cfg_over, **hp_over, **user_set}
    if args.total_timesteps is not None:
        overrides["total_timesteps"] = args.total_timesteps
    sweep = parse_sweep(args.sweep)
    check_random_search(sweep, args.samples)
    try:
        config, hparams = resolve(env, overrides)
        traced = {k: v for k, v in sweep.items() if k in HPARAM_FIELDS}
        static = {k: v for k, v in sweep.items() if k in CONFIG_FIELDS}
        for name, values in traced.items():
            ends = [values.low, values.high] if hasattr(values, "kind") else values
            for v in ends:
                check_hparams(hparams.replace(**{name: v}))
        for name, values in static.items():
            for v in values:
                check_network_fits(config.replace(**{name: v}))
        # A field the user set must be read by the run (by some variant of a static sweep):
        # a TRPO field on a PPO objective, say, is refused rather than ignored.
        variants = [c for _, c in static_variants(config, static)]
        given = [*user_set, *(["total_timesteps"] if args.total_timesteps is not None else [])]
        for name in [*given, *traced, *static]:
            if not any(field_applies(v, name) for v in variants):
                check_fields_apply(variants[0], [name])  # raises, naming the field
    except ValueError as err:
        raise UsageError(str(err)) from None
    check_yaml_fields_read(args.config, env, {**cfg_over, **hp_over}, variants)
    return config, hparams, traced, static


PBT_FLAGS = ("pbt_every", "pbt_fraction", "pbt_perturb", "pbt_resample")
PBT_DEFAULTS = PBTOptions(every=1)


def parse_unit(flag: str, text: str, low: float, high: float, low_open: bool) -> float:
    """A number in [low, high] (low excluded where low_open); one line naming the flag if not."""
    bracket = "(" if low_open else "["
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (low < value <= high if low_open else low <= value <= high):
        raise UsageError(f"{flag} must be a number in {bracket}{low:g}, {high:g}], got {text!r}")
    return value


def pbt_options(
    args: argparse.Namespace, traced: dict[str, Any], static: dict[str, Any], config: Config
) -> PBTOptions | None:
    """The --pbt-* flags as PBTOptions (None without --pbt-every), checked against the sweep
    they evolve; every refusal is one line naming the flag."""
    if args.pbt_every is None:
        extra = [f"--{n.replace('_', '-')}" for n in PBT_FLAGS[1:] if getattr(args, n) is not None]
        if extra:
            raise UsageError(
                f"{', '.join(extra)} tune population-based training: add --pbt-every N"
            )
        return None
    if static:
        names = ", ".join(static)
        raise UsageError(
            f"--pbt-every evolves traced fields only; --sweep {names} changes the compiled "
            "program (each value would be a population of its own): set it with --set"
        )
    fraction, resample = PBT_DEFAULTS.fraction, PBT_DEFAULTS.resample
    if args.pbt_fraction is not None:
        fraction = parse_unit("--pbt-fraction", args.pbt_fraction, 0.0, 0.5, low_open=True)
    if args.pbt_resample is not None:
        resample = parse_unit("--pbt-resample", args.pbt_resample, 0.0, 1.0, low_open=False)
    factors = PBT_DEFAULTS.factors
    if args.pbt_perturb is not None:
        try:
            factors = tuple(float(x) for x in args.pbt_perturb.split(","))
        except ValueError:
            factors = ()
        if not factors or not all(math.isfinite(f) and f > 0 for f in factors):
            raise UsageError(
                f"--pbt-perturb must be positive factors separated by commas (e.g. 0.8,1.25), "
                f"got {args.pbt_perturb!r}"
            )
    space = tuple(
        (name, spec if hasattr(spec, "kind") else tuple(float(v) for v in spec))
        for name, spec in traced.items()
    )
    options = PBTOptions(args.pbt_every, fraction, factors, resample, space)
    population = (
        args.samples if args.samples is not None else math.prod(len(v) for v in traced.values())
    ) * args.num_seeds
    try:
        options.check_population(population)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.pbt_every >= config.num_updates:
        raise UsageError(
            f"--pbt-every {args.pbt_every} leaves no PBT step in a run of {config.num_updates} "
            f"updates; use --pbt-every below {config.num_updates}"
        )
    if args.checkpoint_every is not None and args.checkpoint_every % args.pbt_every:
        raise UsageError(
            f"--checkpoint-every {args.checkpoint_every} must be a multiple of --pbt-every "
            f"{args.pbt_every} (checkpoints fall between PBT steps)"
        )
    if args.num_processes > 1:
        raise UsageError(
            "--pbt-every runs its population in one process: drop --num-processes "
            f"(or {args.process_source['num_processes']})"
        )
    if config.env.startswith("ale:"):
        raise UsageError(
            "--pbt-every copies a run's environments inside the compiled program, and ale: "
            "emulators live outside it; use a MinAtar or gymnax game"
        )
    return options


def check_yaml_fields_read(
    source: str | None, env: str, fields: dict[str, Any], variants: list[Config]
) -> None:
    """A field of a --config preset or YAML file is refused like a --set one when no run reads
    it. Except one that the file's own settings read and a --set or --sweep turned off
    (core=none on a GRU preset, objective=clip on a TRPO one): that was asked for."""
    if source is None:
        return
    # The file's settings over the env's defaults, unchecked: the predicates read only the
    # fields they name, and the file alone need not be a valid Config (a --set may complete it).
    own = argparse.Namespace(**{**dataclasses.asdict(presets.defaults_for(env)[0]), **fields})
    for name in fields:
        if not field_applies(own, name) and not any(field_applies(v, name) for v in variants):
            try:
                check_fields_apply(variants[0], [name])
            except ValueError as err:
                raise UsageError(f"--config {source}: {err}") from None


# Settings in one run (a grid's or a random search's): each is a row of summary.json with its
# own bootstrap intervals, and an entry of `compare`.
MAX_SETTINGS = 65536


def check_random_search(sweep: dict[str, Any], samples: int | None) -> None:
    """A random search (--samples N with a distribution in --sweep) draws traced fields only;
    a grid or a search has at most MAX_SETTINGS settings (refused before any is made)."""
    from purejaxppo.sweep import Draw

    draws = [k for k, v in sweep.items() if isinstance(v, Draw)]
    if samples is None:
        if draws:
            raise UsageError(
                f"--sweep {draws[0]}={sweep[draws[0]]} is a random search: give --samples N "
                "(how many settings to draw)"
            )
        for kind, fields in (("settings", HPARAM_FIELDS), ("static variants", CONFIG_FIELDS)):
            sizes = [len(v) for k, v in sweep.items() if k in fields]
            if math.prod(sizes) > MAX_SETTINGS:
                raise UsageError(
                    f"--sweep makes {' x '.join(map(str, sizes))} = {math.prod(sizes)} {kind}; "
                    f"at most {MAX_SETTINGS} in one run"
                )
        return
    if not 1 <= samples <= MAX_SETTINGS:
        raise UsageError(f"--samples must be in 1..{MAX_SETTINGS}, got {samples}")
    if not draws:
        raise UsageError(
            "--samples draws settings from a --sweep FIELD=uniform:LOW:HIGH (or loguniform); "
            "none was given"
        )
    for name in sweep:
        if name in CONFIG_FIELDS:
            raise UsageError(
                f"--sweep {name}: a random search draws traced fields only "
                f"({', '.join(HPARAM_FIELDS)}); {name} changes the compiled program, so sweep "
                "it in a separate command"
            )


def static_variants(config: Config, static: dict[str, list[Any]]) -> list[tuple[str, Config]]:
    """One (subfolder name, Config) per combination of swept static values."""
    import itertools

    if not static:
        return [("", config)]
    names = list(static)
    out = []
    for combo in itertools.product(*(static[n] for n in names)):
        label = "_".join(
            f"{n}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
            for n, v in zip(names, combo, strict=True)
        )
        out.append((label, config.replace(**dict(zip(names, combo, strict=True)))))
    return out


def check_loggers(args: argparse.Namespace) -> None:
    import importlib.util

    if args.wandb and importlib.util.find_spec("wandb") is None:
        raise UsageError("--wandb needs the wandb package: pip install wandb (then wandb login)")
    if args.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise UsageError("--tensorboard needs the tensorboardX package: pip install tensorboardX")


# The multi-process settings: args attribute -> (its flag, the variable the flag overrides).
PROCESS_SETTINGS = {
    "coordinator": ("--coordinator", "PUREJAXPPO_COORDINATOR"),
    "num_processes": ("--num-processes", "PUREJAXPPO_NUM_PROCESSES"),
    "process_id": ("--process-id", "PUREJAXPPO_PROCESS_ID"),
}
MAX_PROCESSES = 2**31 - 1  # JAX keeps process counts and ids as 32-bit integers


def resolve_process_settings(
    args: argparse.Namespace, environ: dict[str, str] | None = None
) -> None:
    """Set args.coordinator (str or None), args.num_processes and args.process_id (ints) from
    the flags, else from their PUREJAXPPO_* variables, else one process. Every value given
    either way is checked like a flag, whatever the process count (a variable that a flag
    overrides too); so is any other PUREJAXPPO_* name (a misspelt variable would otherwise
    silently train one process alone). args.process_source names where each value came from,
    as a message shows it ("--process-id 3", "PUREJAXPPO_PROCESS_ID=3")."""
    environ = dict(os.environ if environ is None else environ)
    known = sorted(var for _, var in PROCESS_SETTINGS.values())
    for name in sorted(environ):
        if name.startswith("PUREJAXPPO_") and name not in known:
            raise UsageError(
                f"{name} is set, but purejaxppo reads only {', '.join(known)}; unset it or "
                "correct its name"
            )
    # (name, text) of each value in force, and of each variable a flag overrides.
    given: dict[str, tuple[str, str] | None] = {}
    overridden: dict[str, tuple[str, str]] = {}
    for attr, (flag, var) in PROCESS_SETTINGS.items():
        flag_text = getattr(args, attr)
        env = (var, environ[var]) if var in environ else None
        given[attr] = (flag, flag_text) if flag_text is not None else env
        if flag_text is not None and env is not None:
            overridden[attr] = env
    coordinator = given["coordinator"] and parse_coordinator(*given["coordinator"])
    count = parse_process_count(*given["num_processes"]) if given["num_processes"] else 1
    index = parse_process_index(*given["process_id"], count) if given["process_id"] else 0
    parsers = {"coordinator": parse_coordinator, "num_processes": parse_process_count,
               "process_id": parse_process_index}  # fmt: skip
    for attr, (name, text) in overridden.items():  # not in force, but no less an input
        parsers[attr](name, text)
    args.coordinator, args.num_processes, args.process_id = coordinator, count, index
    args.process_source = {
        attr: shown_setting(*pair) if pair else PROCESS_SETTINGS[attr][0]
        for attr, pair in given.items()
    }
    if count > 1 and coordinator is None:
        raise UsageError(
            f"{args.process_source['num_processes']} needs --coordinator HOST:PORT (process 0's "
            "address), or PUREJAXPPO_COORDINATOR"
        )


def check_process_environment(command: str, environ: dict[str, str] | None = None) -> None:
    """The PUREJAXPPO_* variables for a command that runs in one process (eval, compare): each
    is checked as train checks it, and one asking for more than one process is refused (these
    commands would otherwise ignore it silently)."""
    args = argparse.Namespace(**dict.fromkeys(PROCESS_SETTINGS))
    env = dict(os.environ if environ is None else environ)
    count_var = PROCESS_SETTINGS["num_processes"][1]
    if count_var in env:
        count = parse_process_count(count_var, env[count_var])
        if count > 1:
            raise UsageError(
                f"{shown_setting(count_var, env[count_var])}: {command} runs in one process; "
                f"unset {count_var} or set it to 1"
            )
    resolve_process_settings(args, env)


def shown_setting(name: str, text: str) -> str:
    """A value as the user gave it: '--process-id 3' or 'PUREJAXPPO_PROCESS_ID=3'."""
    return f"{name}={text.strip()}" if name.startswith("PUREJAXPPO_") else f"{name} {text.strip()}"


def parse_process_count(name: str, text: str) -> int:
    allowed = f"an integer in 1..{MAX_PROCESSES} (the number of processes in the job)"
    value = _digits(name, text, allowed)
    if not 1 <= value <= MAX_PROCESSES:
        raise UsageError(f"{name} must be {allowed}, got {text!r}")
    return value


def parse_process_index(name: str, text: str, count: int | None = None) -> int:
    """This process's index in a job of `count` processes (0..count-1; None: any from 0)."""
    if count is None:
        allowed = "an integer from 0 (this process's index in the job)"
    elif count == 1:
        allowed = (
            "0 in a job of one process (a multi-process job gives --num-processes N and "
            "--coordinator HOST:PORT too)"
        )
    else:
        allowed = f"an integer in 0..{count - 1} (this process's index in a job of {count})"
    value = _digits(name, text, allowed)
    if value >= (MAX_PROCESSES if count is None else count):
        raise UsageError(f"{name} must be {allowed}, got {text!r}")
    return value


def _digits(name: str, text: str, allowed: str) -> int:
    """A whole number written in ASCII digits (spaces around it allowed), else UsageError."""
    word = text.strip()
    if not word:
        raise UsageError(f"{name} is empty; give {allowed}, or unset it")
    if not (word.isascii() and word.isdigit()):
        raise UsageError(f"{name} must be {allowed}, got {text!r}")
    return int(word)


def parse_coordinator(name: str, text: str) -> str:
    """'HOST:PORT' (HOST a name or IPv4 address, or an IPv6 address in brackets; PORT in
    1..65535) -> the address, stripped of spaces around it; else UsageError naming `name`."""
    import ipaddress
    import re

    word = text.strip()
    form = "HOST:PORT (process 0's address, e.g. 10.0.0.1:1234)"
    if not word:
        raise UsageError(f"{name} is empty; give {form}, or unset it")
    host, sep, port = word.rpartition(":")
    if not sep or not host:
        raise UsageError(f"{name} must be {form}, got {text!r}")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise UsageError(f"{name}: the port must be an integer in 1..65535, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise UsageError(f"{name}: {host} is not an IPv6 address, in {text!r}") from None
    elif ":" in host:
        raise UsageError(f"{name}: an IPv6 address goes in brackets ([::1]:1234), got {text!r}")
    elif not re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?", host):
        raise UsageError(
            f"{name}: the host must be a name or an IP address (letters, digits, '.', '-'), "
            f"got {text!r}"
        )
    return word


def planned_runs(args: argparse.Namespace) -> int | None:
    """Runs per program (a static sweep's variants each train this many): seeds x settings,
    from the flags or, for --resume, from config.json; None where that cannot be told yet
    (the full checks report why later)."""
    if args.resume:
        try:
            raw = first_run_record(json.loads((Path(args.resume) / "config.json").read_text()))
            runs = int(raw["num_seeds"]) * len(raw["grid"]["settings"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError, StopIteration):
            return None
        return runs if runs > 0 else None
    sweep = parse_sweep(args.sweep)
    if args.samples is not None:
        settings = args.samples
    else:
        settings = math.prod(len(v) for k, v in sweep.items() if k in HPARAM_FIELDS)
    seeds = 1 if args.num_seeds is None else args.num_seeds
    return seeds * settings if seeds > 0 and settings > 0 else None


def check_process_shares(args: argparse.Namespace) -> None:
    """Each process of a job must get at least one run: a process without one cannot train,
    and the others would wait for it at the gather."""
    count = args.num_processes
    runs = planned_runs(args)
    if count == 1 or runs is None:
        return

    def busy(n: int) -> int:
        """How many of n processes get runs (in shares of ceil(runs / n), as sweep.share_of)."""
        return -(-runs // -(-runs // n))

    if busy(count) < count:
        most = next(n for n in range(min(count, runs), 0, -1) if busy(n) == n)
        raise UsageError(
            f"{args.process_source['num_processes']}: the {runs} runs of this sweep, in shares "
            f"of {-(-runs // count)}, leave processes {busy(count)}..{count - 1} without one; use "
            f"at most {most} processes"
        )


def resolve_coordinator(args: argparse.Namespace) -> None:
    """The coordinator's host must resolve."""
    import socket

    host, _, port = args.coordinator.rpartition(":")
    try:
        socket.getaddrinfo(host.strip("[]"), int(port))
    except (OSError, UnicodeError) as err:
        raise UsageError(
            f"{args.process_source['coordinator']}: cannot resolve {host} "
            f"({getattr(err, 'strerror', None) or err})"
        ) from None


def reach_coordinator(args: argparse.Namespace) -> None:
    """Process 0 must be able to serve on the coordinator's port; the others wait for it."""
    import errno
    import socket

    name = args.process_source["coordinator"]
    host, _, port = args.coordinator.rpartition(":")
    if args.process_id != 0:
        wait_for_coordinator(name, host.strip("[]"), int(port))
        return
    # JAX's coordination service listens on [::]:PORT; a taken port crashes the process later.
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 here: try IPv4
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, int(port)))
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    raise UsageError(
                        f"{name}: port {port} is already in use here, and process 0 serves the "
                        "job on it; choose another port"
                    ) from None
                continue
        return


COORDINATOR_WAIT_S = 300.0  # as long as JAX's own rendezvous waits


def wait_for_coordinator(name: str, host: str, port: int) -> None:
    """Wait up to COORDINATOR_WAIT_S until process 0's coordinator accepts connections (the
    processes of a job may start in any order). JAX's client, left to find no coordinator,
    aborts the process with a C++ stack trace; this says what is missing in one line instead."""
    import socket
    import time

    timeout_s = COORDINATOR_WAIT_S
    deadline = time.monotonic() + timeout_s
    said = False
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise UsageError(
                f"{name}: nothing answered there for {timeout_s:.0f} s; start process 0 "
                "(--process-id 0) with the same --coordinator"
            )
        if not said:
            print(f"waiting for process 0 at {host}:{port}...", file=sys.stderr, flush=True)
            said = True
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def check_folder_before_joining(args: argparse.Namespace) -> None:
    """Every process of a job checks the folder, read-only, before the job starts: once it has,
    process 0 may already hold the folder and write there."""
    folder = args.resume or args.out
    if not folder:
        return
    check_not_held(Path(folder), "--resume" if args.resume else "--out")
    check_layout(Path(folder), "--resume" if args.resume else "--out")
    if not args.resume and holds_run(Path(folder)):
        raise UsageError(
            f"--out {folder} already holds a run; use --resume {folder} or a new folder"
        )


def join_job(args: argparse.Namespace) -> None:
    """Join a multi-process job when asked to; checked before anything compiles."""
    if args.num_processes == 1 and args.coordinator is None:
        return
    resolve_coordinator(args)
    check_process_shares(args)
    check_folder_before_joining(args)
    reach_coordinator(args)  # last: the processes other than 0 wait there for process 0
    from purejaxppo.sweep import init_distributed

    try:
        init_distributed(args.coordinator, args.num_processes, args.process_id)
    except Exception as err:  # JAX reports a failed rendezvous in several types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise UsageError(
            f"{args.process_source['coordinator']}: could not join the job ({first})"
        ) from None


def cmd_train(args: argparse.Namespace) -> int:
    resolve_process_settings(args)
    for name in ("num_seeds", "chunk", "checkpoint_every", "keep", "memory_budget_mb"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    check_loggers(args)
    if args.resume:
        check_resume_flags(args)
    elif not args.out:
        raise UsageError("--out is required (or --resume DIR)")
    # First: importing the environments (gymnax) already starts a JAX backend.
    join_job(args)
    if args.resume:
        return resume_train(args)
    args.num_seeds = 1 if args.num_seeds is None else args.num_seeds
    args.seed = 0 if args.seed is None else args.seed
    out = Path(args.out)
    check_path(out, "--out", RUN_ROOM)
    config, hparams, traced, static = settings_from_args(args)
    args.pbt = pbt_options(args, traced, static, config)
    for label, _ in static_variants(config, static):
        check_path(out / label, "--out", RUN_ROOM)  # a static sweep's variant folder
    if args.process_id != 0:
        # Process 0 holds the folder; the others only add their own checkpoints to it.
        check_output_dir(out)
        return train_into(args, out, config, hparams, traced, static)
    created = outermost_missing(out)
    lock = hold_folder(out, "--out", new_run=True)
    try:
        return train_into(args, out, config, hparams, traced, static)
    finally:
        lock.release()
        if created is not None:
            # Refused or stopped before writing anything (too large for memory, Ctrl-C while
            # compiling): leave no trace, the folders this command made included.
            remove_unused(out, created)


def memory_budget(args: argparse.Namespace) -> int | None:
    """--memory-budget-mb in bytes (at least one: a budget under a byte is refused by the
    planner, not read as no budget)."""
    if args.memory_budget_mb is None:
        return None
    return max(1, int(args.memory_budget_mb * 2**20))


def outermost_missing(folder: Path) -> Path | None:
    """The outermost folder of `folder`'s path that does not exist yet (None if it exists)."""
    missing = None
    for part in [folder, *folder.parents]:
        if part.exists():
            break
        missing = part
    return missing


def remove_unused(out: Path, created: Path) -> None:
    """Remove `out` if it holds only its lock, then each folder above it up to `created`
    while it is empty."""
    if not out.is_dir() or {p.name for p in out.iterdir()} - {LOCK_NAME}:
        return
    (out / LOCK_NAME).unlink(missing_ok=True)
    folder = out
    while True:
        with contextlib.suppress(OSError):
            folder.rmdir()
        if folder == created or folder.exists():
            return
        folder = folder.parent


def train_into(
    args: argparse.Namespace,
    out: Path,
    config: Config,
    hparams: HParams,
    traced: dict[str, list[Any]],
    static: dict[str, list[Any]],
) -> int:
    """Train the grid (one subfolder per static variant) into `out`, already checked."""
    import jax

    from purejaxppo.driver import interval_lines, train_sweep
    from purejaxppo.sweep import make_grid, random_search

    if args.samples is not None:
        grid = random_search(traced, args.samples, args.seed)
    else:
        grid = make_grid(traced)
    variants = [
        (label, Sweep(cfg, hparams, grid, args.num_seeds, args.seed, args.pbt))
        for label, cfg in static_variants(config, static)
    ]
    options = Options(
        chunk=args.chunk, checkpoint_every=args.checkpoint_every, keep=args.keep or 3,
        memory_budget=memory_budget(args), tensorboard=args.tensorboard, wandb=args.wandb,
    )  # fmt: skip
    if static and args.process_id == 0:
        # The whole sweep, recorded before any variant trains: --resume OUT finishes them all.
        devices = jax.local_device_count()
        records = {label: sweep.record(devices, options) for label, sweep in variants}
        record = static_sweep_record(list(static), records)
        write_atomic(out / "config.json", json.dumps(record, indent=2).encode())
    results = {}
    for label, sweep in variants:
        folder = out / label if label else out
        try:
            with hold_variant(folder if label and args.process_id == 0 else None):
                summary = train_sweep(folder, sweep, options)
        except BaseException:
            if label and not results and args.process_id == 0:
                # The first variant was refused or stopped before it wrote anything: the
                # sweep's record goes too, so that the same command can simply run again.
                remove_unused(folder, folder)
                if not folder.exists():
                    (out / "config.json").unlink(missing_ok=True)
            raise
        results[label] = summary
        if stopped_at(summary) is not None:
            return 130
    if not results[variants[-1][0]]:
        return 0  # a process other than 0: process 0 reports
    if static:
        write_index(out, results)
    last = results[variants[-1][0]]
    print(json.dumps({k: last[k] for k in SUMMARY_KEYS if k in last}))
    for label, _ in variants:
        for line in interval_lines(results[label]):
            print(f"{label}: {line}" if label else line, file=sys.stderr)
    print(f"results in {out.resolve()} (summary.json, metrics.npz, curves.png, config.json)",
          file=sys.stderr)  # fmt: skip
    return 0


SUMMARY_KEYS = (
    "env", "num_seeds", "total_timesteps", "compile_seconds", "run_seconds",
    "steps_per_second", "final_return", "final_return_mean",
)  # fmt: skip


def write_index(out: Path, results: dict[str, dict[str, Any]]) -> None:
    index = {
        label: {k: s[k] for k in ("final_return_mean", "per_setting")}
        for label, s in results.items()
    }
    write_atomic(out / "summary.json", json.dumps({STATIC_SWEEP: index}, indent=2).encode())


def read_run_record(out: Path, where: str) -> RunRecord:
    """Read and check out/config.json; every problem is one UsageError naming `where`."""
    path = out / "config.json"
    if not path.is_file():
        raise UsageError(f"{where}: no config.json there (not a purejaxppo run folder)")
    raw = read_json_record(path, where)
    if is_static_sweep(raw):
        raise UsageError(
            f"{where}: this folder holds a sweep over static fields; give one of its variant "
            f"folders ({', '.join(sorted(p.name for p in out.iterdir() if p.is_dir()))})"
        )
    return check_run_record(raw, where)


def read_json_record(path: Path, where: str) -> Any:
    try:
        return read_record_file(path)
    except RecordError as err:
        raise UsageError(f"{where}: {err}") from None


def check_run_record(raw: Any, where: str) -> RunRecord:
    """RunRecord.from_record, its refusal one UsageError naming `where`."""
    try:
        return RunRecord.from_record(raw)
    except RecordError as err:
        raise UsageError(
            f"{where}: config.json is not a run record of this version ({err})"
        ) from None


def check_checkpoint_record(ckpt: Any, record: RunRecord, where: str) -> None:
    """The newest intact checkpoint's own copy of the settings must equal config.json: an
    edited config.json would otherwise evaluate or continue a different network silently."""
    good, _ = ckpt.good_steps()
    for step in good:
        try:
            settings = ckpt.read_meta(step)["settings"]
        except Exception:  # unreadable: restore_good will skip it and say why
            continue
        check_same_settings(settings, record, f"checkpoint {step}", where)
        return


def check_same_settings(saved: Any, record: RunRecord, source: str, where: str) -> None:
    """Refuse a config.json whose settings differ from `saved`, the record kept in `source`
    (a checkpoint); the schedule may differ (a resume may change it)."""
    ours = settings_only(record.raw)
    theirs = settings_only(saved) if isinstance(saved, dict) else {}
    if theirs == ours:
        return
    config, other = theirs.get("config"), ours.get("config", {})
    changed = (
        sorted(k for k in set(config) | set(other) if config.get(k) != other.get(k))
        if isinstance(config, dict)
        else []
    ) or sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    raise UsageError(
        f"{where}: config.json differs from {source}'s own record of its settings "
        f"({', '.join(changed)}); was config.json edited?"
    )


def check_resume_flags(args: argparse.Namespace) -> None:
    """--resume takes the run's settings from its folder: a setting given beside it would
    silently train a different run, so it is refused."""
    out = Path(args.resume)
    given = [f"--{n.replace('_', '-')}" for n in ("env", "out", "config") if getattr(args, n)]
    given += ["--set"] * bool(args.set) + ["--sweep"] * bool(args.sweep)
    unset = ("samples", "num_seeds", "seed", "total_timesteps", *PBT_FLAGS)  # None unless given
    given += [f"--{n.replace('_', '-')}" for n in unset if getattr(args, n) is not None]
    if given:
        raise UsageError(
            f"--resume takes its settings from {out / 'config.json'}; drop {', '.join(given)}"
        )


def resume_train(args: argparse.Namespace) -> int:
    """Continue the sweep in --resume DIR with exactly its recorded settings."""
    out = Path(args.resume)
    where = f"--resume {out}"
    check_path(out, "--resume", RUN_ROOM)
    if (out / "config.json").is_file():
        raw = read_json_record(out / "config.json", where)
        if is_static_sweep(raw):
            return resume_static_sweep(args, out, raw)
        record = read_run_record(out, where)
    else:
        record = record_from_checkpoints(out, where)
    check_not_held(out, "--resume")
    summary = finished_summary(out, record)
    if summary is not None:
        from purejaxppo.checkpoint import newest_saved_record

        found = newest_saved_record(out / "checkpoints")
        if found is not None:
            check_same_settings(
                found[1].get("settings"), record, f"checkpoint {found[0].name}", where
            )
        # Nothing to train: the results stay as they are, timings and files untouched.
        print(f"{where}: this run is already complete ({record.sweep.config.num_updates} "
              "updates); its results are left as they were", file=sys.stderr)  # fmt: skip
        print_results(summary)
        return 0
    check_resumable(args, out, record)
    lock = hold_folder(out, "--resume", new_run=False) if args.process_id == 0 else None
    if lock is None:
        check_output_dir(out)
    try:
        return resume_into(args, out, record)
    finally:
        if lock is not None:
            lock.release()


def resume_static_sweep(args: argparse.Namespace, out: Path, raw: Any) -> int:
    """Finish every variant of a static sweep (`raw`: its config.json): resume the stopped
    ones, start the ones that never began, leave the finished ones as they are; then rewrite
    the sweep's index."""
    where = f"--resume {out}"
    try:
        variants = static_sweep_variants(raw)
    except RecordError as err:
        raise UsageError(
            f"{where}: config.json is not a sweep record of this version ({err})"
        ) from None
    records = {label: check_run_record(rec, f"{where}/{label}") for label, rec in variants.items()}
    for label in records:
        check_path(out / label, "--resume", RUN_ROOM)
    for label, record in records.items():
        folder = out / label
        if (folder / "config.json").is_file():
            on_disk = read_json_record(folder / "config.json", f"{where}/{label}")
            if not isinstance(on_disk, dict) or settings_only(on_disk) != settings_only(record.raw):
                raise UsageError(
                    f"{where}/{label}: its config.json differs from the sweep's record in "
                    f"{out / 'config.json'}; was one of them edited?"
                )
    check_not_held(out, "--resume")
    finished = {label: finished_summary(out / label, rec) for label, rec in records.items()}
    if all(finished.values()) and (out / "summary.json").is_file():
        for label in records:  # nothing to train, nothing to write
            print(f"{label}: already complete", file=sys.stderr)
        return 0
    for label, record in records.items():
        if finished[label] is None and (out / label).is_dir():
            check_resumable(args, out / label, record)
    lock = hold_folder(out, "--resume", new_run=False) if args.process_id == 0 else None
    try:
        results: dict[str, dict[str, Any]] = {}
        for label, record in records.items():
            folder = out / label
            if finished[label] is not None:
                print(f"{label}: already complete", file=sys.stderr)
                results[label] = finished[label]
                continue
            print(f"{label}: {'resuming' if folder.is_dir() else 'starting'}", file=sys.stderr)
            with hold_variant(folder):
                code = resume_into(args, folder, record, results, label)
            if code:
                return code
        if results and all(results.values()):
            write_index(out, results)
        return 0
    finally:
        if lock is not None:
            lock.release()


def finished_summary(folder: Path, record: RunRecord) -> dict[str, Any] | None:
    """The summary of a finished run, or None: its summary.json (written last) is complete, not
    marked interrupted, for the recorded env and length, with metrics.npz and curves.png (a
    result file the user deleted is written again by a resume, from the last checkpoint)."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    config = record.sweep.config
    complete = (
        isinstance(summary, dict)
        and stopped_at(summary) is None
        and summary.get("env") == config.env
        and summary.get("total_timesteps") == config.num_updates * config.batch_size
        and all((folder / name).is_file() for name in ("metrics.npz", "curves.png"))
    )
    return summary if complete else None


def print_results(summary: dict[str, Any], label: str = "") -> None:
    """The closing lines of a run: its summary's headline as JSON (stdout), then each
    setting's final-return interval (stderr)."""
    from purejaxppo.driver import interval_lines

    print(json.dumps({k: summary[k] for k in SUMMARY_KEYS if k in summary}))
    try:
        lines = interval_lines(summary)
    except (KeyError, TypeError, IndexError):
        lines = []  # a summary of an older version: its headline is all there is to show
    for line in lines:
        print(f"{label}: {line}" if label else line, file=sys.stderr)


def record_from_checkpoints(out: Path, where: str) -> RunRecord:
    """The run record of a folder whose config.json is missing, from the newest intact
    checkpoint's own copy (the driver writes config.json again when it resumes)."""
    from purejaxppo.checkpoint import newest_saved_record

    found = newest_saved_record(out / "checkpoints")
    if found is None or not isinstance(found[1].get("settings"), dict):
        children = sorted(out.iterdir()) if out.is_dir() else []
        variants = [p.name for p in children if (p / "config.json").is_file()]
        if variants:
            raise UsageError(
                f"{where}: no config.json there, but {', '.join(variants)} hold runs (the "
                f"variants of a static sweep?); resume each: --resume {out / variants[0]}"
            )
        raise UsageError(
            f"{where}: no config.json there (not a purejaxppo run folder)"
            + (", and no intact checkpoint holds its settings" * (out / "checkpoints").is_dir())
        )
    step, saved = found
    record = check_run_record(saved["settings"], f"{where}: checkpoint {step.name}'s record")
    print(f"{where}: config.json is missing; continuing with checkpoint {step.name}'s own record "
          "of the settings (written back to config.json)", file=sys.stderr)  # fmt: skip
    return record


def check_resumable(args: argparse.Namespace, out: Path, record: RunRecord) -> None:
    """What --resume checks before it holds the folder (reading only): the device count, and
    that the checkpoints are intact and hold the settings of config.json."""
    from purejaxppo.checkpoint import Checkpointer

    check_device_count(record, f"--resume {out}")
    if args.num_processes == 1 and (out / "checkpoints").is_dir():
        ckpt = Checkpointer(out / "checkpoints")
        try:
            ckpt.require_intact()
            check_checkpoint_record(ckpt, record, f"--resume {out}")
        finally:
            ckpt.close()


def resume_into(
    args: argparse.Namespace,
    out: Path,
    record: RunRecord,
    results: dict[str, dict[str, Any]] | None = None,
    label: str = "",
) -> int:
    """Continue the sweep recorded in `out` (already checked, see check_resumable, and held)."""
    from purejaxppo.driver import train_sweep

    # The run goes on as it was cut and saved, unless a flag says otherwise now.
    recorded = record.schedule
    options = Options(
        chunk=args.chunk or recorded.get("chunk"),
        checkpoint_every=args.checkpoint_every or recorded.get("checkpoint_every"),
        keep=args.keep or recorded.get("keep") or 3,
        resume=True, tensorboard=args.tensorboard, wandb=args.wandb,
        memory_budget=memory_budget(args),
    )  # fmt: skip
    summary = train_sweep(out, record.sweep, options)
    if stopped_at(summary) is not None:
        return 130
    if results is not None:
        results[label] = summary
    if summary:
        print_results(summary, label)
    return 0


def recorded_devices(folder: Path) -> int | None:
    """The device count in a run (or static sweep) folder's config.json, read without JAX;
    None if there is no readable record (the full reader reports that later)."""
    try:
        exists = (folder / "config.json").exists()
    except OSError:  # a path the OS refuses (too long): the path check names it, in one line
        return None
    if not exists:
        from purejaxppo.checkpoint import newest_saved_record

        found = newest_saved_record(folder / "checkpoints")  # a lost config.json: see resume
        raw = found[1].get("settings") if found else None
        devices = raw.get("devices", 1) if isinstance(raw, dict) else None
        return devices if isinstance(devices, int) and not isinstance(devices, bool) else None
    try:
        raw = first_run_record(json.loads((folder / "config.json").read_text()))
        devices = raw.get("devices", 1)
    except (OSError, ValueError, TypeError, AttributeError, KeyError, StopIteration):
        return None
    return devices if isinstance(devices, int) and not isinstance(devices, bool) else None


# XLA CPU devices: each costs start-up time and memory (4096 took 23 s and 640 MB to start
# here, a million would not start in hours).
MAX_CPU_DEVICES = 1024


def choose_devices(args: argparse.Namespace) -> None:
    """Set the XLA CPU device count before JAX starts: one per core by default (or the count
    XLA_FLAGS / JAX_NUM_CPU_DEVICES chose), --devices N to override; a resumed or evaluated run
    takes the count it was trained on, since its numbers depend on the per-device batch."""
    from purejaxppo.ppo import use_cpu_cores

    devices = args.devices
    if devices is not None and devices <= 0:
        raise UsageError(f"--devices must be a positive integer, got {devices}")
    if devices is not None and devices > MAX_CPU_DEVICES:
        raise UsageError(f"--devices must be in 1..{MAX_CPU_DEVICES}, got {devices}")
    folder = args.resume if args.command == "train" else args.dir
    recorded = recorded_devices(Path(folder)) if folder else None
    if recorded is not None and recorded > 0:
        if devices is not None and devices != recorded:
            raise UsageError(
                f"--devices {devices}: {folder} was trained on {recorded} device(s), and a run's "
                f"numbers depend on the per-device batch; drop --devices (it uses {recorded})"
            )
        devices = recorded
    try:
        use_cpu_cores(devices)
    except RuntimeError as err:
        # Called in a process where JAX already runs (a notebook, a test): keep its devices,
        # unless the user asked for another count (a recorded one is checked when restoring).
        import jax

        if args.devices is not None and args.devices != jax.local_device_count():
            raise UsageError(f"--devices {args.devices}: {err}") from None


def check_device_count(record: RunRecord, where: str) -> None:
    """The run must continue on the device count it was trained on (on a GPU machine, the
    same number of accelerators)."""
    import jax

    if jax.local_device_count() != record.devices:
        raise UsageError(
            f"{where}: trained on {record.devices} device(s), but {jax.local_device_count()} "
            f"{jax.default_backend().upper()} device(s) are here; a run's numbers depend on the "
            "per-device batch, so it continues only on the same count"
        )


def cmd_eval(args: argparse.Namespace) -> int:
    """Restore the latest checkpoint of a run folder and evaluate every run deterministically."""
    check_process_environment("eval")
    if args.render is not None:
        # MuJoCo (brax's renderer) picks its OpenGL backend when first imported: before any env.
        os.environ.setdefault("MUJOCO_GL", "egl")
    out = Path(args.dir)
    check_path(out, "eval", RUN_ROOM)
    if not 1 <= args.episodes <= MAX_EPISODES:
        raise UsageError(f"--episodes must be in 1..{MAX_EPISODES}, got {args.episodes}")
    if args.render is None and args.render_run is not None:
        raise UsageError("--render-run chooses the run --render draws; give --render OUT.gif")
    record = read_run_record(out, str(out))
    config, num_runs = record.sweep.config, record.sweep.num_runs
    gif = None if args.render is None else Path(args.render)
    if gif is not None:
        # A positions-only variant draws as its full task (the hiding is in the observation).
        drawn = config.env.removesuffix(":positions-only")
        brax = drawn.startswith("brax:")
        if not brax and drawn not in RENDERABLE:
            raise UsageError(
                f"--render draws brax:NAME and, of gymnax, {', '.join(RENDERABLE)}; "
                f"{config.env} is not one"
            )
        if not gif.name.lower().endswith(".gif"):
            raise UsageError(
                f"--render writes a GIF: give a path ending in .gif, not {args.render!r}"
            )
        check_path(gif, "--render", room=64)  # its temporary name beside it, .purejaxppo-...
        if not 0 <= (args.render_run or 0) < num_runs:
            raise UsageError(f"--render-run must be in 0..{num_runs - 1}, got {args.render_run}")
        import importlib.util

        if drawn in RENDERABLE[:5] and importlib.util.find_spec("pygame") is None:
            raise UsageError(
                f"--render of {config.env} needs pygame (gymnax draws it through gymnasium): "
                "pip install 'purejaxppo[render]'"
            )
        if brax:
            check_mujoco_renderer(config.env)
    check_eval_outputs(out, gif)

    import jax

    from purejaxppo.checkpoint import Checkpointer
    from purejaxppo.envs import make_env
    from purejaxppo.ppo import compiler_options, evaluate
    from purejaxppo.sweep import Runner

    if not (out / "checkpoints").is_dir():
        raise UsageError(f"{out}: no checkpoint to evaluate")
    check_device_count(record, str(out))
    ckpt = Checkpointer(out / "checkpoints")
    check_checkpoint_record(ckpt, record, str(out))
    env = make_env(config.env)
    grid = record.sweep.grid
    runs = record.sweep.runs()
    runner = Runner(config, env)
    abstract = runner.abstract_state(runs.keys, runs.hparams)
    state, history, meta, skipped = ckpt.restore_good(abstract)
    for step, why in skipped:
        print(f"checkpoint {step} in {ckpt.directory} is damaged: {why}; evaluating checkpoint "
              f"{meta['update']}", file=sys.stderr)  # fmt: skip
    n = runs.keys.shape[0]
    keys = jax.random.split(jax.random.key(args.seed), n)
    inputs = (
        jax.tree.map(lambda x: x[:n], state.params),
        jax.tree.map(lambda x: x[:n], state.norm),
        keys,
    )
    evaluate_runs = (
        jax.jit(
            jax.vmap(lambda p, nm, k: evaluate(config, p, nm, k, args.episodes, env)),
            compiler_options=compiler_options(),
        )
        .lower(*inputs)
        .compile()
    )
    check_eval_fits(evaluate_runs, n, args.episodes)
    returns = np.asarray(evaluate_runs(*inputs))
    # A run that went non-finite in training is evaluated and listed, but left out of the mean.
    diverged = np.asarray(history["finite"][:n] == 0).any(axis=1)
    values = [grid.settings[int(runs.setting[r])] for r in range(n)]
    if record.sweep.pbt is not None:
        # A population-based run has its own values now, and diverged only if it still is.
        diverged = np.asarray(history["finite"][:n, -1] == 0)
        values = [
            {f: float(history[PBT_PREFIX + f][r, -1]) for f in record.sweep.pbt.fields}
            for r in range(n)
        ]
    result = {
        "update": int(meta["update"]),
        "episodes": args.episodes,
        "runs": [
            {
                "setting": int(runs.setting[r]),
                "seed": int(runs.seed[r]),
                **values[r],
                "mean_return": round(float(returns[r].mean()), 3),
                "diverged": bool(diverged[r]),
            }
            for r in range(n)
        ],
        "mean_return": round(float(returns[~diverged].mean()), 3) if (~diverged).any() else None,
        "diverged_excluded": int(diverged.sum()),
    }
    # Both outputs were checked writable before anything ran; a disk that fills meanwhile
    # still loses no result: they are printed whatever is written.
    failed = []
    if gif is not None:
        run = args.render_run or 0
        try:
            frames = render_atomic(
                config, env, jax.tree.map(lambda x: x[run], state.params),
                jax.tree.map(lambda x: x[run], state.norm), jax.random.key(args.seed), gif,
            )  # fmt: skip
            result["render"] = {"path": str(gif), "run": run, "frames": frames}
            print(f"rendered run {run}: {frames} frames to {gif}", file=sys.stderr)
        except (OSError, DiskFull) as err:
            failed.append(f"{gif} not written ({why_not_written(err)})")
    print(json.dumps(result))
    try:
        write_atomic(out / "eval.json", json.dumps(result, indent=2).encode())
    except (OSError, DiskFull) as err:
        failed.append(f"{out / 'eval.json'} not written ({why_not_written(err)})")
    if failed:
        print(f"purejaxppo: error: {'; '.join(failed)}; the results are printed above",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


# Episodes per run: every episode of every run is played at once, in one compiled program.
MAX_EPISODES = 1_000_000


def check_eval_fits(compiled: Any, runs: int, episodes: int) -> None:
    """Refuse, before it runs, an evaluation whose program needs more memory than is free (all
    runs x episodes are played at once); XLA's own buffer assignment says how much."""
    from purejaxppo.sweep import available_memory_bytes, program_bytes

    need, free = program_bytes(compiled), available_memory_bytes()
    if need > free:
        raise UsageError(
            f"--episodes {episodes}: {runs} runs x {episodes} episodes are played at once and "
            f"need {need / 2**20:,.0f} MiB, more than the {free / 2**20:,.0f} MiB free; give "
            "fewer --episodes"
        )


def why_not_written(err: OSError | DiskFull) -> str:
    if isinstance(err, DiskFull) or is_disk_full(err):
        return "disk full"
    return str(err.strerror or err)


def check_eval_outputs(out: Path, gif: Path | None) -> None:
    """eval.json (beside the run's checkpoints) and the --render GIF must be writable: checked
    before anything runs, so that an evaluation never ends unable to keep what it found."""
    try:
        probe_write(out)
    except OSError as err:
        raise UsageError(
            f"{out}: cannot write eval.json there ({err.strerror or err}); evaluate a copy of "
            "the folder in a place you can write"
        ) from None
    if gif is None:
        return
    if gif.is_dir():
        raise UsageError(f"--render {gif} is a folder; give a file name ending in .gif")
    if not gif.parent.is_dir():
        raise UsageError(f"--render {gif}: there is no folder {gif.parent}; create it first")
    try:
        probe_write(gif.parent)
    except OSError as err:
        raise UsageError(
            f"--render {gif}: cannot write in {gif.parent} ({err.strerror or err})"
        ) from None


def probe_write(folder: Path) -> None:
    """Create and remove a uniquely named file in `folder`; raises OSError if it cannot."""
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
        pass


def check_mujoco_renderer(env: str) -> None:
    """brax draws through MuJoCo's renderer, which needs an OpenGL context (MUJOCO_GL: egl
    unless set, for a machine without a display); one line, exit 2, where none can be made."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        import mujoco

        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody/></mujoco>")
        mujoco.Renderer(model, 8, 8).close()
    except Exception as err:  # noqa: BLE001 - any failure to make a context means no drawing
        raise UsageError(
            f"--render of {env} needs an OpenGL context for MuJoCo's renderer "
            f"(MUJOCO_GL={os.environ['MUJOCO_GL']}); none could be made here: "
            f"{shown(str(err).splitlines()[0] if str(err) else type(err).__name__)}"
        ) from None


def render_atomic(config: Config, env: Env, params: Any, norm: Any, key: Any, gif: Path) -> int:
    """render_episode into a temporary file beside `gif`, renamed into place when complete:
    a failure leaves no partial GIF (and any earlier one as it was)."""
    with written_into_place(gif, prefix=".purejaxppo-render-", suffix=".gif") as tmp:
        return render_episode(config, env, params, norm, key, str(tmp))


RENDERABLE = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0",
              "MountainCarContinuous-v0", "Catch-bsuite", "Asterix-MinAtar", "Breakout-MinAtar",
              "Freeway-MinAtar", "SpaceInvaders-MinAtar")  # fmt: skip


def render_episode(config: Config, env: Any, params: Any, norm: Any, key: Any, path: str) -> int:
    """One deterministic episode drawn into a GIF: a gymnax env by gymnax's visualizer, a brax
    one by MuJoCo's renderer through brax (the steering task's target is not drawn)."""
    # Classic control draws each frame off screen through pygame, which otherwise opens the
    # sound card and the display once per frame, printing two errors each time on a server.
    for name in ("SDL_AUDIODRIVER", "SDL_VIDEODRIVER"):
        os.environ.setdefault(name, "dummy")
    import jax
    import jax.numpy as jnp

    from purejaxppo.ppo import deterministic_action, initial_hidden, make_network
    from purejaxppo.ppo import resolve_normalization as norm_flags

    network = make_network(config, env)
    use_obs_norm, _ = norm_flags(config, env)
    obs_stat = norm.obs if use_obs_norm else None

    @jax.jit
    def act(obs: Any, hidden: Any) -> Any:
        return deterministic_action(network, env, params, obs_stat, obs, hidden)

    step = jax.jit(env.step)
    key, reset_key = jax.random.split(key)
    obs, state = jax.jit(env.reset)(reset_key)  # one program, not op by op (brax: seconds)
    states, rewards, total = [state], [0.0], 0.0
    hidden = initial_hidden(config)  # the policy's memory, carried through the episode
    for _ in range(env.max_episode_steps):
        key, step_key = jax.random.split(key)
        action, hidden = act(obs, hidden)
        out = step(step_key, state, action)
        total += float(out.reward)
        if bool(out.terminated | out.truncated):
            break
        obs, state = out.obs, out.state
        states.append(state)
        rewards.append(total)
    if config.env.startswith("brax:"):
        from brax.io import image

        bodies = [s.env_state.pipeline_state for s in states]
        Path(path).write_bytes(image.render(env.env.sys, bodies, fmt="gif"))
        return len(states)
    from gymnax.visualize import Visualizer

    Visualizer(env.env, env.params, states, jnp.asarray(rewards)).animate(str(path))
    return len(states)


def integer(text: str) -> int:
    """argparse type: an integer in the 64-bit range ('1e6' allowed, '2.5' refused)."""
    try:
        return parse_int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def megabytes(text: str) -> float:
    """argparse type: a positive, finite number of MiB."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of MiB, got {text!r}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is reported in one line (no usage dump), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="purejaxppo", description="PPO end to end in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    train = sub.add_parser("train", help="train a grid of settings x seeds")
    train.add_argument("--env", help="gymnax id or brax:NAME[@BACKEND]")
    train.add_argument("--num-seeds", type=integer, default=None, help="seeds per setting (1)")
    train.add_argument("--total-timesteps", type=integer, default=None, help="env steps per run")
    train.add_argument("--seed", type=integer, default=None, help="base PRNG seed (0)")
    train.add_argument("--out", help="output folder")
    train.add_argument("--config", help=f"preset ({', '.join(presets.preset_names())}) or YAML")
    train.add_argument(
        "--set",
        nargs="*",
        action="extend",
        default=[],
        metavar="FIELD=VALUE",
        help="override any field (repeatable: every --set counts)",
    )
    train.add_argument(
        "--sweep",
        nargs="*",
        action="extend",
        default=[],
        metavar="FIELD=V1,V2",
        help="grid axes: traced fields share one program, static ones compile once per value; "
        "with --samples, FIELD=uniform:LOW:HIGH or loguniform:LOW:HIGH (a list is a choice)",
    )
    train.add_argument(
        "--samples",
        type=integer,
        default=None,
        help="random search: draw this many settings of the --sweep fields (from --seed) and "
        "train them all as one program",
    )
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    train.add_argument(
        "--chunk", type=integer, default=None, help="updates per compiled call, at most"
    )
    train.add_argument(
        "--checkpoint-every",
        type=integer,
        default=None,
        help="a checkpoint at every multiple of this many updates (and at the end); recorded, "
        "so --resume goes on with it",
    )
    train.add_argument("--keep", type=integer, default=None, help="checkpoints kept (default 3)")
    train.add_argument(
        "--memory-budget-mb",
        type=megabytes,
        default=None,
        help="memory the sweep may use (default: half of what is free); a larger sweep runs "
        "in batches of runs",
    )
    # Read as text and checked in cmd_train with their PUREJAXPPO_* variables.
    train.add_argument(
        "--coordinator",
        help="host:port of process 0 for a multi-process (multi-host) job "
        "[env PUREJAXPPO_COORDINATOR]",
    )
    train.add_argument(
        "--num-processes",
        help="processes in the job (1) [env PUREJAXPPO_NUM_PROCESSES]",
    )
    train.add_argument(
        "--process-id",
        help="this process's index, 0..num-processes-1 (0) [env PUREJAXPPO_PROCESS_ID]",
    )
    train.add_argument(
        "--devices",
        type=integer,
        default=None,
        help="XLA CPU devices to shard the runs over (default: one per core this process may "
        "use, unless XLA_FLAGS or JAX_NUM_CPU_DEVICES chose a count; --resume: the recorded "
        "count); 1 runs everything on one core",
    )
    train.add_argument(
        "--pbt-every",
        type=integer,
        default=None,
        help="population-based training: every this many updates, the worst runs of the "
        "population (--samples/--sweep x --num-seeds) copy better ones and perturb their "
        "--sweep fields, inside the compiled program",
    )
    train.add_argument(
        "--pbt-fraction",
        default=None,
        help="PBT: the bottom fraction replaced by copies of the top one "
        f"({PBT_DEFAULTS.fraction})",
    )
    train.add_argument(
        "--pbt-perturb",
        default=None,
        metavar="F1,F2",
        help="PBT: factors a copied run's --sweep fields are multiplied by, one drawn per field "
        f"({','.join(map(str, PBT_DEFAULTS.factors))})",
    )
    train.add_argument(
        "--pbt-resample",
        default=None,
        help="PBT: the probability that a field is drawn afresh from its --sweep distribution "
        f"instead ({PBT_DEFAULTS.resample})",
    )
    train.add_argument("--tensorboard", action="store_true", help="write TensorBoard events")
    train.add_argument("--wandb", action="store_true", help="log to Weights & Biases")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate the latest checkpoint of a run folder")
    ev.add_argument("dir", help="a folder written by purejaxppo train")
    ev.add_argument("--episodes", type=integer, default=10, help="episodes per run")
    ev.add_argument("--seed", type=integer, default=1, help="PRNG seed for the evaluation episodes")
    ev.add_argument(
        "--devices", type=integer, default=None, help="must equal the run's recorded count"
    )
    ev.add_argument("--render", metavar="OUT.gif", help="draw one episode (gymnax envs)")
    ev.add_argument(
        "--render-run", type=integer, default=None, help="which run --render draws (default 0)"
    )
    ev.set_defaults(func=cmd_eval)

    cmp = sub.add_parser(
        "compare",
        help="compare finished run folders: IQM, mean and median with 95%% bootstrap "
        "intervals, the probability of improvement, a performance profile, learning curves",
    )
    cmp.add_argument(
        "runs",
        nargs="+",
        metavar="[LABEL=]DIR",
        help="run folders (each setting of a grid is one entry); folders given the same LABEL "
        "on different environments form one entry over those tasks",
    )
    cmp.add_argument(
        "--metric",
        choices=("final", "auc"),
        default="final",
        help="final: mean return over the last 5%% of training; auc: over the whole of it",
    )
    cmp.add_argument(
        "--normalize",
        nargs="+",
        default=[],
        metavar="ENV=LOW:HIGH",
        help="score (return - LOW) / (HIGH - LOW) on ENV; needed for each env when the runs "
        "cover several",
    )
    cmp.add_argument("--out", help="write compare.json, compare.md and the two plots there")
    cmp.add_argument(
        "--reps", type=integer, default=2000, help="bootstrap replicates (default 2000)"
    )
    cmp.set_defaults(func=cmd_compare, devices=None, dir=None)
    return parser


def cmd_compare(args: argparse.Namespace) -> int:
    """Interval estimates across run folders; every refusal is one line before any writing."""
    from purejaxppo import compare

    check_process_environment("compare")
    if not 1 <= args.reps <= MAX_REPS:
        raise UsageError(f"--reps must be in 1..{MAX_REPS}, got {args.reps}")
    for text in args.runs:
        check_path(compare.parse_run_arg(text)[1], "compare", room=16)  # /summary.json
    if args.out:
        check_path(args.out, "--out", room=64)  # /.compare_profile.png.XXXXXXXX (written first)
    try:
        normalize = compare.parse_normalize(args.normalize)
        entries = compare.gather_entries(args.runs)
        compare.check_comparable(entries, normalize)
        if args.out:
            check_output_dir(Path(args.out))
        result = compare.compare(entries, args.metric, normalize, args.reps)
    except compare.CompareError as err:
        raise UsageError(str(err)) from None
    print(compare.table_markdown(result), end="")
    if not args.out:
        print("(--out DIR writes this with compare.json and the plots)", file=sys.stderr)
        return 0
    out = Path(args.out)
    try:
        names = compare.write_outputs(out, result)
    except (OSError, DiskFull) as err:
        print(f"purejaxppo: error: {out}: compare's files not written ({why_not_written(err)}); "
              "none of them changed, and the table is printed above", file=sys.stderr)  # fmt: skip
        return 1
    print(f"written to {out.resolve()}: {', '.join(names)}", file=sys.stderr)
    return 0


# Bootstrap replicates: the arrays are replicates x runs of an entry; at this bound an entry of
# 1024 runs peaks at 5.0 GB and 18 s for its interval and one improvement (measured here).
MAX_REPS = 100_000


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        choose_devices(args)  # first: JAX starts with the first env or array
        return args.func(args)
    except KeyboardInterrupt:
        # Ctrl-C outside training (which checkpoints and stops by itself): while compiling,
        # restoring or evaluating. A second Ctrl-C during training comes here too.
        print(f"purejaxppo: interrupted; {next_step(args)}", file=sys.stderr)
        return 130
    except (UsageError, MemoryError, NoGoodCheckpoint) as err:
        print(f"purejaxppo: error: {err}", file=sys.stderr)
        return 2
    except DiskFull as err:
        print(f"purejaxppo: error: {err}; free some space, then {next_step(args)}",
              file=sys.stderr)  # fmt: skip
        sys.stdout.flush()
        sys.stderr.flush()
        # Exit now: orbax's writer threads would print their own failures during teardown.
        os._exit(1)


def next_step(args: argparse.Namespace | None) -> str:
    """How to go on after a command stopped part way: a training folder that holds a run
    continues with --resume; anything else (eval, compare, a run that wrote nothing) runs again."""
    if args is not None and args.command == "train":
        folder = args.resume or args.out
        if folder and (Path(folder) / "config.json").is_file():
            return f"continue with: purejaxppo train --resume {folder}"
    return "run the command again"


if __name__ == "__main__":
    sys.exit(main())
