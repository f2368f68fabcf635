"""Command line: `purejaxppo train --env CartPole-v1 --num-seeds 16 --out runs/cartpole`.

Trains all seeds in one jit(vmap(train)) call and writes into the output folder:
  config.json   the resolved Config and HParams
  metrics.npz   every per-update metric as [seed, update] arrays, plus env_steps [update]
  summary.json  the standalone trainer's JSON fields (final_return per seed, speeds, ...)
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from purejaxppo import presets
from purejaxppo.ppo import Config, HParams, check_hparams, parse_field_value

CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
HPARAM_FIELDS = {f.name: f for f in dataclasses.fields(HParams)}


class UsageError(Exception):
    """A problem with the command line: reported in one line, exit code 2."""


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
    return config.replace(**cfg), check_hparams(hparams.replace(**hp))


def check_output_dir(out: Path) -> None:
    """Refuse an output folder that cannot be written, before anything compiles."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"--out {out}: cannot write there ({err.strerror or err})") from None


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: a crash leaves the old file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return list(obj)
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    return obj


def cmd_train(args: argparse.Namespace) -> int:
    overrides = dict(parse_assignment(a) for a in args.set)
    if args.total_timesteps is not None:
        overrides["total_timesteps"] = args.total_timesteps
    if args.num_seeds <= 0:
        raise UsageError(f"--num-seeds must be a positive integer, got {args.num_seeds}")
    try:
        config, hparams = resolve(args.env, overrides)
    except ValueError as err:
        raise UsageError(str(err)) from None
    out = Path(args.out)
    check_output_dir(out)

    from purejaxppo.envs import make_env
    from purejaxppo.ppo import final_return, train_seeds

    env = make_env(config.env)
    print(f"training {config.env}: {args.num_seeds} seeds x {config.num_updates} updates "
          f"x {config.batch_size} steps", file=sys.stderr)  # fmt: skip
    _, metrics, summary = train_seeds(config, hparams, args.num_seeds, args.seed, env)
    finals = final_return(metrics)
    summary["final_return_std"] = (
        None if np.all(np.isnan(finals)) else round(float(np.nanstd(finals)), 3)
    )
    resolved = {"config": to_jsonable(config), "hparams": to_jsonable(hparams), "seed": args.seed}
    write_atomic(out / "config.json", json.dumps(resolved, indent=2).encode())
    env_steps = (np.arange(config.num_updates, dtype=np.int64) + 1) * config.batch_size
    buf = io.BytesIO()
    np.savez(buf, env_steps=env_steps, **metrics)
    write_atomic(out / "metrics.npz", buf.getvalue())
    write_atomic(out / "summary.json", json.dumps(summary, indent=2).encode())
    print(json.dumps(summary))
    print(f"results in {out.resolve()} (summary.json, metrics.npz, config.json)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="purejaxppo", description="PPO end to end in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one config over many seeds in one call")
    train.add_argument("--env", required=True, help="gymnax id or brax:NAME[@BACKEND]")
    train.add_argument("--num-seeds", type=int, default=1, help="seeds trained in parallel")
    train.add_argument("--total-timesteps", type=int, default=None, help="env steps per seed")
    train.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    train.add_argument("--out", required=True, help="output folder")
    train.add_argument(
        "--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override any field"
    )
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except UsageError as err:
        print(f"purejaxppo: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
