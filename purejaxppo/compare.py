"""`purejaxppo compare`: interval estimates across finished run folders.

Each setting of each folder is one entry (a folder with a grid gives one entry per setting);
folders given the same LABEL on different environments make one entry over several tasks,
scored on normalized returns. For every entry: IQM, mean and median of the chosen metric with
stratified-bootstrap intervals (see stats.py); for every pair, the probability that one entry's
run beats the other's; a performance profile and aggregate learning curves with interval bands.

Refused, in one line each: a folder that is not a finished run, runs of different lengths,
several environments without --normalize for each, labels that do not cover the same
environments, and an entry with no finite runs on a task.
"""

from __future__ import annotations

import io
import json
import math
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from purejaxppo import pbt, stats
from purejaxppo.files import write_together
from purejaxppo.record import (
    RecordError,
    is_static_sweep,
    read_record_file,
    static_sweep_variants,
    stopped_at,
)

METRICS = ("final", "auc")
CURVE_POINTS = 50
MATRIX_MAX = 8  # entries up to which the console prints the whole improvement matrix


class CompareError(Exception):
    """Runs that cannot be compared as asked: one line, exit code 2."""


class TaskRuns(NamedTuple):
    """One setting's runs on one environment, diverged runs already left out."""

    folder: Path
    env: str
    total_timesteps: int
    final: np.ndarray  # [S] the summary's final_return (last 5% of training)
    auc: np.ndarray  # [S] mean episodic return over the whole of training
    steps: np.ndarray  # [U] env steps per run at each update
    returns: np.ndarray  # [S, U] episodic return per update, carried forward
    diverged: int
    pbt: dict[str, Any] | None = None  # summary.json's "pbt" of a population-based run


class Entry(NamedTuple):
    label: str
    tasks: dict[str, TaskRuns]  # env -> runs


# ---------------------------------------------------------------------------------------------
# Reading run folders.
# ---------------------------------------------------------------------------------------------


def parse_run_arg(text: str) -> tuple[str | None, Path]:
    """'LABEL=DIR' or 'DIR' (a DIR that exists is taken whole, '=' and all)."""
    label, sep, rest = text.partition("=")
    if sep and label and not Path(text).exists():
        return label, Path(rest)
    return None, Path(text)


def read_json(path: Path, where: str) -> Any:
    if not path.is_file():
        raise CompareError(f"{where}: no {path.name} there (not a finished purejaxppo run)")
    try:
        return read_record_file(path)
    except RecordError as err:
        raise CompareError(f"{where}: {err}") from None


def run_folders(label: str | None, folder: Path) -> list[tuple[str, Path]]:
    """The run folders behind one argument: itself, or each variant of a static sweep."""
    where = str(folder)
    if not folder.is_dir():
        raise CompareError(f"{where}: no such folder")
    raw = read_json(folder / "config.json", where)
    base = label or folder.name
    if is_static_sweep(raw):
        try:
            variants = static_sweep_variants(raw)
        except RecordError:
            raise CompareError(f"{where}: config.json is not a sweep record") from None
        return [(f"{base}/{v}", folder / v) for v in variants]
    return [(base, folder)]


def read_folder(label: str, folder: Path) -> list[tuple[str, TaskRuns]]:
    """One (entry label, runs) per setting of a finished run folder."""
    where = str(folder)
    summary = read_json(folder / "summary.json", where)
    try:
        if stopped_at(summary) is not None:
            raise CompareError(
                f"{where}: training stopped at update {stopped_at(summary)}; "
                f"finish it first: purejaxppo train --resume {folder}"
            )
        env = str(summary["env"])
        total = int(summary["total_timesteps"])
        fields = list(summary["grid"]["fields"])
        settings = list(summary["grid"]["settings"])
        finals = np.array(
            [[np.nan if x is None else x for x in row] for row in summary["final_return"]],
            np.float64,
        )
        diverged = {(int(d["setting"]), int(d["seed"])) for d in summary["diverged"]}
        if finals.ndim != 2 or len(settings) != finals.shape[0]:
            raise ValueError(f"final_return is {finals.shape}, for {len(settings)} settings")
        labels = stats.setting_labels(fields, settings)
        population = summary.get("pbt")
        if population is not None:
            # One population: its runs are one entry (a run's setting is only where it began).
            diverged = {(0, h * finals.shape[1] + s) for h, s in diverged}
            finals, fields, settings, labels = finals.reshape(1, -1), [], [{}], [""]
    except CompareError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CompareError(f"{where}: summary.json is not a run summary ({err})") from None
    returns, steps = read_metrics(folder / "metrics.npz", where)
    if population is not None and returns.ndim == 3:
        returns = returns.reshape(1, -1, returns.shape[-1])
    if returns.ndim != 3 or returns.shape[:2] != finals.shape or returns.shape[2] != steps.size:
        raise CompareError(f"{where}: metrics.npz and summary.json disagree in shape")
    curves = stats.forward_fill(returns)
    with warnings.catch_warnings():  # a run in which no episode ever ended: all NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        auc = np.nanmean(curves, axis=-1)
    out = []
    for h in range(len(settings)):
        # A run scores on both metrics or is left out (an AUC of NaN: no episode ever ended,
        # possible only where summary.json and metrics.npz disagree).
        keep = np.array(
            [
                (h, s) not in diverged and np.isfinite(finals[h, s]) and np.isfinite(auc[h, s])
                for s in range(finals.shape[1])
            ]
        )
        name = label
        if len(settings) > 1:
            name += " " + labels[h]
        out.append(
            (
                name,
                TaskRuns(
                    folder,
                    env,
                    total,
                    finals[h, keep],
                    auc[h, keep],
                    steps,
                    curves[h, keep],
                    int((~keep).sum()),
                    population,
                ),  # fmt: skip
            )
        )
    return out


def read_metrics(path: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(episode_return [H, S, U], env_steps [U]) of a metrics.npz; a truncated or damaged file
    is refused in one line. An .npz is a zip archive, whose members carry a CRC-32 each: it is
    checked, so damage inside the data is found too, not only in the archive's directory."""
    if not path.is_file():
        raise CompareError(f"{where}: no metrics.npz there (not a finished purejaxppo run)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"{bad} fails its CRC check")
        with np.load(path) as metrics:
            returns = np.asarray(metrics["episode_return"], np.float64)
            steps = np.asarray(metrics["env_steps"], np.int64)
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise CompareError(
            f"{where}: metrics.npz is damaged or not a run's metrics ({err})"
        ) from None
    return returns, steps


def gather_entries(runs: Sequence[str]) -> list[Entry]:
    """The entries of the command's arguments, in the order given, checked to be comparable
    among themselves (not yet across environments)."""
    entries: dict[str, dict[str, TaskRuns]] = {}
    for text in runs:
        label, folder = parse_run_arg(text)
        for name, path in run_folders(label, folder):
            for entry, task in read_folder(name, path):
                tasks = entries.setdefault(entry, {})
                if task.env in tasks:
                    raise CompareError(
                        f"{entry!r} names two runs on {task.env} ({tasks[task.env].folder} and "
                        f"{path}); give them different labels (LABEL=DIR)"
                    )
                if task.final.size == 0:
                    raise CompareError(
                        f"{path}: {entry!r} has no finite runs on {task.env} "
                        f"({task.diverged} diverged)"
                    )
                tasks[task.env] = task
    return [Entry(label, tasks) for label, tasks in entries.items()]


def parse_normalize(items: Sequence[str]) -> dict[str, tuple[float, float]]:
    out = {}
    for item in items:
        env, sep, span = item.rpartition("=")
        low, sep2, high = span.partition(":")
        try:
            lo, hi = float(low), float(high)
        except ValueError:
            lo = hi = math.nan
        if not sep or not sep2 or not env or not (math.isfinite(lo) and math.isfinite(hi)):
            raise CompareError(f"--normalize expects ENV=LOW:HIGH (numbers), got {item!r}")
        if hi == lo:
            raise CompareError(f"--normalize {env}: LOW and HIGH must differ, got {item!r}")
        if hi < lo:  # a higher return would score lower: the ranking would silently invert
            raise CompareError(
                f"--normalize {env}: LOW must be below HIGH (LOW scores 0, e.g. a random "
                f"policy's return; HIGH scores 1, e.g. the task's top score), got {item!r}"
            )
        if env in out:
            raise CompareError(f"--normalize names {env} twice")
        out[env] = (lo, hi)
    return out


def check_comparable(entries: list[Entry], normalize: dict[str, tuple[float, float]]) -> list[str]:
    """The environments all entries cover, in order; refuses what cannot be compared."""
    if not entries:
        raise CompareError("give at least one run folder")
    lengths = {}
    for e in entries:
        for t in e.tasks.values():
            lengths.setdefault(t.total_timesteps, (e.label, t))
    if len(lengths) > 1:
        (n1, (l1, t1)), (n2, (l2, t2)) = list(lengths.items())[:2]
        raise CompareError(
            f"runs of different lengths: {t1.folder} trained {n1:,} steps per run, "
            f"{t2.folder} {n2:,}; compare runs of the same length"
        )
    envs = list(entries[0].tasks)
    for e in entries[1:]:
        if set(e.tasks) != set(envs):
            raise CompareError(
                f"{e.label!r} covers {', '.join(sorted(e.tasks))} but {entries[0].label!r} "
                f"covers {', '.join(sorted(envs))}; every label must cover the same environments"
            )
    missing = [env for env in envs if env not in normalize]
    if len(envs) > 1 and missing:
        raise CompareError(
            f"runs on {len(envs)} environments ({', '.join(envs)}) need a common scale: give "
            f"--normalize ENV=LOW:HIGH for {', '.join(missing)} (e.g. a random and a top score)"
        )
    unknown = sorted(set(normalize) - set(envs))
    if unknown:
        raise CompareError(
            f"--normalize names {', '.join(unknown)}, which no run trained on "
            f"(the runs' environments: {', '.join(envs)})"
        )
    return envs


# ---------------------------------------------------------------------------------------------
# The statistics.
# ---------------------------------------------------------------------------------------------


def scaled(x: np.ndarray, env: str, normalize: dict[str, tuple[float, float]]) -> np.ndarray:
    if env not in normalize:
        return x
    lo, hi = normalize[env]
    return (x - lo) / (hi - lo)


def scores(entry: Entry, envs: list[str], metric: str, normalize: dict) -> list[np.ndarray]:
    return [scaled(getattr(entry.tasks[env], metric), env, normalize) for env in envs]


def curve_grid(total: int, points: int = CURVE_POINTS) -> np.ndarray:
    return np.linspace(total / points, total, points)


def resampled_curves(task: TaskRuns, grid: np.ndarray) -> np.ndarray:
    """[S, len(grid)]: each run's return at the last update at or before each grid step."""
    idx = np.searchsorted(task.steps, grid, side="right") - 1
    return task.returns[:, np.clip(idx, 0, None)]


def compare(
    entries: list[Entry],
    metric: str = "final",
    normalize: dict[str, tuple[float, float]] | None = None,
    reps: int = stats.DEFAULT_REPS,
) -> dict[str, Any]:
    """Everything `compare` reports, as one JSON-ready dict."""
    normalize = normalize or {}
    if metric not in METRICS:
        raise CompareError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    envs = check_comparable(entries, normalize)
    per_entry = [scores(e, envs, metric, normalize) for e in entries]
    rows = []
    for i, (e, s) in enumerate(zip(entries, per_entry, strict=True)):
        est = stats.interval_estimates(s, reps=reps, seed=i)
        rows.append(
            {
                "label": e.label,
                "runs": [int(x.size) for x in s],
                "diverged_excluded": sum(t.diverged for t in e.tasks.values()),
                **{name: est[name].rounded() for name in stats.AGGREGATES},
            }
        )
    # Many entries (a random search): the improvement of the best over each, and the plots of
    # the best MATRIX_MAX; a full matrix of 1024 entries would be a million bootstraps.
    order = sorted(range(len(entries)), key=lambda i: rank_key(rows[i]), reverse=True)
    full = len(entries) <= MATRIX_MAX
    pairs = [(i, j) for i in range(len(entries)) for j in range(len(entries)) if i != j]
    if not full:
        pairs = [(order[0], j) for j in range(len(entries)) if j != order[0]]
    matrix: list[list[Any]] = [[None] * len(entries) for _ in entries]
    for i, j in pairs:
        p = stats.probability_of_improvement(
            per_entry[i], per_entry[j], reps=reps, seed=i * 7919 + j
        )
        matrix[i][j] = p.rounded()
    shown = sorted(order[:MATRIX_MAX])
    pooled = np.concatenate([np.concatenate(per_entry[i]) for i in shown])
    taus = np.linspace(pooled.min(), pooled.max(), 101)
    profiles = [stats.performance_profile(per_entry[i], taus, reps=reps, seed=i) for i in shown]
    total = next(iter(entries[0].tasks.values())).total_timesteps
    grid = curve_grid(total)
    curves = []
    for i in shown:
        runs = [scaled(resampled_curves(entries[i].tasks[env], grid), env, normalize)
                for env in envs]  # fmt: skip
        # Points before any run of every task has finished an episode have no curve.
        defined = np.all([np.isfinite(r).all(0) for r in runs], axis=0)
        point = np.full(grid.size, np.nan)
        low, high = point.copy(), point.copy()
        if defined.any():
            p, lo, hi = stats.curve_estimates([r[:, defined] for r in runs], reps=reps, seed=i)
            point[defined], low[defined], high[defined] = p, lo, hi
        curves.append((point, low, high))
    return {
        "metric": metric,
        "metric_means": {
            "final": "mean episodic return over the last 5% of training (summary.json's "
            "final_return)",
            "auc": "mean episodic return over the whole of training",
        }[metric],
        "envs": envs,
        "normalize": {env: list(normalize[env]) for env in envs if env in normalize},
        "total_timesteps": total,
        "intervals": {"confidence": stats.DEFAULT_CONFIDENCE, "replicates": reps,
                      "method": "percentile, bootstrap over runs stratified by environment"},
        "entries": rows,
        "probability_of_improvement": {
            "reads": "P(row > column): the chance that a run of the row's entry scores above "
            "a run of the column's on the same environment, ties counting half"
            + ("" if full else f"; with more than {MATRIX_MAX} entries, only the best's row"),
            "labels": [e.label for e in entries],
            "matrix": matrix,
        },
        "plotted": [entries[i].label for i in shown],
        "profile": {
            "taus": np.round(taus, 6).tolist(),
            "fraction_above": [[np.round(a, 4).tolist() for a in p] for p in profiles],
        },
        "curves": {
            "env_steps": np.round(grid).astype(int).tolist(),
            "iqm": [[_nan_list(a) for a in c] for c in curves],
        },
        # Each population-based entry's best run and its hyperparameters along its ancestry.
        "pbt": [
            {"label": e.label, "env": env, "batch_size": t.total_timesteps // t.steps.size,
             **t.pbt}
            for e in entries for env, t in e.tasks.items() if t.pbt is not None and "best" in t.pbt
        ],
    }  # fmt: skip


def rank_key(row: dict[str, Any]) -> tuple[float, float, float]:
    """Best first: the IQM, ties (common at a task's top score) broken by the mean, then by
    the IQM interval's low end."""
    return (row["iqm"][0], row["mean"][0], row["iqm"][1])


def _nan_list(a: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(x) else round(float(x), 4) for x in a]


# ---------------------------------------------------------------------------------------------
# Reporting.
# ---------------------------------------------------------------------------------------------


def interval_text(v: Sequence[float], fmt: str = ".4g") -> str:
    """[point, low, high] as 'point [low, high]', each number in `fmt`."""
    return f"{v[0]:{fmt}} [{v[1]:{fmt}}, {v[2]:{fmt}}]"


def table_markdown(result: dict[str, Any]) -> str:
    """The aggregates table (best IQM first) and the improvement table."""
    what = "normalized " if result["normalize"] else ""
    rows = sorted(result["entries"], key=rank_key, reverse=True)
    lines = [
        f"{what}{result['metric']} score ({result['metric_means']}), "
        f"{', '.join(result['envs'])}, {result['total_timesteps']:,} steps per run; "
        f"{int(result['intervals']['confidence'] * 100)}% bootstrap intervals",
        "",
        "| Entry | IQM | Mean | Median | Runs | Diverged |",
        "|---|---|---|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {interval_text(r['iqm'])} | {interval_text(r['mean'])} | "
            f"{interval_text(r['median'])} | {sum(r['runs'])} | {r['diverged_excluded']} |"
        )
    poi = result["probability_of_improvement"]
    labels, matrix = poi["labels"], poi["matrix"]
    lines += ["", "Probability of improvement, P(row > column):", ""]
    if len(labels) < 2:
        lines.append("(one entry: nothing to compare it with)")
    elif len(labels) <= MATRIX_MAX:
        lines += ["| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for label, row in zip(labels, matrix, strict=True):
            cells = ["-" if p is None else interval_text(p) for p in row]  # [p, low, high]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    else:
        best = labels.index(rows[0]["label"])
        lines += [f"| Entry | P({labels[best]} > entry) |", "|---|---|"]
        for j, label in enumerate(labels):
            if j != best:
                lines.append(f"| {label} | {interval_text(matrix[best][j])} |")
    return "\n".join(lines) + "\n"


def plot_profile(result: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = np.asarray(result["profile"]["taus"])
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, (point, low, high) in zip(
        result["plotted"], result["profile"]["fraction_above"], strict=True
    ):
        (line,) = ax.plot(taus, point, drawstyle="steps-post", label=label, lw=1.5)
        ax.fill_between(taus, low, high, step="post", color=line.get_color(), alpha=0.2, lw=0)
    what = "normalized " if result["normalize"] else ""
    return _finish(
        fig, ax, plt, f"{what}{result['metric']} score τ", "fraction of runs with score > τ",
        f"performance profile (95% bootstrap band){_best_of(result)}",
    )  # fmt: skip


def plot_curves(result: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.asarray(result["curves"]["env_steps"])
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, band in zip(result["plotted"], result["curves"]["iqm"], strict=True):
        point, low, high = (np.array([np.nan if x is None else x for x in a]) for a in band)
        (line,) = ax.plot(steps, point, label=label, lw=1.5)
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, lw=0)
    what = "normalized " if result["normalize"] else ""
    return _finish(
        fig, ax, plt, "environment steps per run", f"{what}episodic return, IQM over runs",
        f"{', '.join(result['envs'])}: IQM, 95% bootstrap band{_best_of(result)}",
    )  # fmt: skip


def _best_of(result: dict[str, Any]) -> str:
    shown, total = len(result["plotted"]), len(result["entries"])
    return "" if shown == total else f"; best {shown} of {total}"


def _finish(fig: Any, ax: Any, plt: Any, xlabel: str, ylabel: str, title: str) -> bytes:
    """Labels, legend and grid; the figure as PNG bytes."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_outputs(out: Path, result: dict[str, Any]) -> list[str]:
    """compare.json, compare.md, compare_profile.png and compare_curves.png (and, where an
    entry is population-based, compare_schedules.png), all replaced or none (a full disk leaves
    the previous ones); the names never clash with a run folder's."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "compare.json": json.dumps(result, indent=1).encode(),
        "compare.md": table_markdown(result).encode(),
        "compare_profile.png": plot_profile(result),
        "compare_curves.png": plot_curves(result),
    }
    if result["pbt"]:
        files["compare_schedules.png"] = pbt.schedule_figure(
            [(f"{p['label']} ({p['env']})", p, None, p["batch_size"]) for p in result["pbt"]]
        )
    write_together({out / name: data for name, data in files.items()})
    return list(files)
