"""Every command and Python block in README.md runs (small), and the settings tables are true.

Commands are the lines of the ```sh blocks (a trailing backslash continues a line; # starts a
comment) and inline code spans that start like a command (`make ...`, `purejaxppo ...`). Each
must be listed in COMMANDS, which says how the test runs it small; a command the README gains
without an entry here fails test_every_readme_command_is_known, and an entry whose command left
the README fails it too, so the two cannot drift apart. The `purejaxppo` commands run in the
test's process through the CLI's main() (the console script's own code; a process each cost ~5 s
of imports), but for those in OWN_PROCESS, which run the installed console script. The
```python blocks run in order in one interpreter, with the size substitutions of PYTHON_SMALL,
each of which must apply.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LANGUAGES = {"sh": "commands", "python": "run", "text": "not run", "yaml": "not run"}
COMMAND_STARTS = ("make ", "purejaxppo ", "python ", "pip ", "cp ")

# Appended to a training command: argparse keeps the last value of a repeated flag, so these
# win over the README's sizes. 2 envs x 64 steps divide into every preset's minibatch count.
SMALL_TRAIN = ["--num-seeds", "2", "--total-timesteps", "1024",
               "--set", "num_envs=2", "num_steps=64", "update_epochs=1"]  # fmt: skip

# README command (whitespace-normalized, comments dropped) -> how the test handles it:
#   ("run", [extra arguments]): run it, in README order, in a scratch folder, with the extra
#       arguments appended;
#   ("make", target): a make target, checked by test_make_targets (and make train is also run,
#       small, by test_make_train_runs);
#   ("extra", name): installs an optional extra of the package, checked against pyproject.toml.
COMMANDS = {
    "make train": ("make", "train"),
    "make test": ("make", "test"),
    "make train ARGS=--num-seeds 4": ("make", "train"),
    "make test-fast": ("make", "test-fast"),
    "make lint": ("make", "lint"),
    "make notebooks": ("make", "notebooks"),
    "pip install purejaxppo[render]": ("extra", "render"),
    "pip install purejaxppo[wandb]": ("extra", "wandb"),
    "pip install purejaxppo[atari]": ("extra", "atari"),
    "pip install purejaxppo[jumanji]": ("extra", "jumanji"),
    "pip install purejaxppo[craftax]": ("extra", "craftax"),
    "pip install purejaxppo[xminigrid]": ("extra", "xminigrid"),
    "pip install purejaxppo[playground]": ("extra", "playground"),
    "purejaxppo train --env CartPole-v1 --num-seeds 16 --total-timesteps 500000 "
    "--out runs/cartpole": ("run", SMALL_TRAIN),
    "purejaxppo train --config pendulum --num-seeds 8 --out runs/pendulum": ("run", SMALL_TRAIN),
    "purejaxppo train --env brax:inverted_pendulum --num-seeds 4 --out runs/ip": (
        "run",
        SMALL_TRAIN,
    ),
    "purejaxppo train --env Breakout-MinAtar --num-seeds 8 --out runs/breakout": (
        "run",
        SMALL_TRAIN,
    ),
    "purejaxppo train --env CartPole-v1 --num-seeds 32 --out runs/lr --sweep "
    "learning_rate=0.00025,0.001 ent_coef=0,0.01 --checkpoint-every 50": ("run", SMALL_TRAIN),
    "purejaxppo train --config trpo-cartpole --num-seeds 8 --out runs/trpo": ("run", SMALL_TRAIN),
    "purejaxppo train --env CartPole-v1 --sweep objective=clip,trpo --num-seeds 8 --out runs/cmp": (
        "run",
        SMALL_TRAIN,
    ),
    "purejaxppo train --config gru-cartpole --num-seeds 16 --out runs/gru-cartpole": (
        "run",
        [*SMALL_TRAIN, "num_minibatches=2"],  # a recurrent minibatch is whole environments
    ),
    "purejaxppo compare runs/cartpole runs/lr --metric auc --out runs/compare": ("run", []),
    "purejaxppo train --env CartPole-v1 --num-seeds 8 --total-timesteps 100000 --out runs/search "
    "--samples 32 --sweep learning_rate=loguniform:1e-4:1e-2 ent_coef=uniform:0:0.02": (
        "run",
        SMALL_TRAIN,
    ),
    "purejaxppo train --env Breakout-MinAtar --samples 16 --seed 500 --pbt-every 8 --out "
    "runs/pbt --sweep learning_rate=loguniform:0.0015:0.015 clip_coef=uniform:0.1:0.3 "
    "ent_coef=loguniform:0.003:0.03 gae_lambda=uniform:0.8:0.97 vf_coef=uniform:0.25:1.0": (
        "run",
        [*SMALL_TRAIN, "--samples", "4", "--num-seeds", "1", "--pbt-every", "2"],
    ),
    "purejaxppo train --resume runs/lr": ("run", []),
    "purejaxppo eval runs/lr --episodes 10": ("run", ["--episodes", "2"]),
    "purejaxppo eval runs/cartpole --render episode.gif": ("run", []),
    "purejaxppo eval runs/breakout --render breakout.gif": ("run", ["--episodes", "1"]),
    "purejaxppo eval runs/ip --render ip.gif": ("run", ["--episodes", "1"]),
    "cp purejaxppo/ppo.py my_ppo.py": ("run", []),
    "python my_ppo.py --env CartPole-v1 --num-seeds 16 --total-timesteps 500000": (
        "run",
        ["--num-seeds", "2", "--total-timesteps", "1024"],
    ),
}

# README commands run as the installed console script in a process of their own: one training
# command (the entry point itself), and brax's render (MuJoCo picks its OpenGL backend when first
# imported, and this process imports brax before it could choose).
OWN_PROCESS = {
    "purejaxppo train --config pendulum --num-seeds 8 --out runs/pendulum",
    "purejaxppo eval runs/ip --render ip.gif",
}

# (README text, replacement) applied to the Python blocks before they run; each must occur.
PYTHON_SMALL = [
    ("total_timesteps=500_000", "total_timesteps=1_024"),
    ("total_timesteps=200_000", "total_timesteps=2_048"),
    ("jax.random.key(0), 16)", "jax.random.key(0), 2)"),
    ("jax.random.key(0), 8)", "jax.random.key(0), 2)"),
    ("num_seeds=8", "num_seeds=2"),
    ("checkpoint_every=50", "checkpoint_every=2"),
    ("num_episodes=10", "num_episodes=2"),
    # The blocks run in one interpreter where JAX has started by then: the call must say so.
    (
        "purejaxppo.use_cpu_cores()  ",
        "try:\n    purejaxppo.use_cpu_cores(3)\nexcept RuntimeError as err:\n"
        "    assert 'came too late' in str(err), err\n"
        "else:\n    raise AssertionError('no error')\n",
    ),
]


# ---------------------------------------------------------------------------------------------
# Reading the README.
# ---------------------------------------------------------------------------------------------

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return [(lang.strip(), body) for lang, body in FENCE.findall(text)]


def normalize(line: str) -> str:
    return " ".join(shlex.split(line, comments=True))


def shell_commands(text: str) -> list[str]:
    """The commands of the ```sh blocks, continuation lines joined, comments dropped."""
    commands = []
    for lang, body in fenced_blocks(text):
        if lang != "sh":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            command = normalize(line)
            if command:
                commands.append(command)
    return commands


def inline_commands(text: str) -> list[str]:
    """Inline code spans outside fenced blocks that start like a shell command."""
    prose = FENCE.sub("", text)
    spans = re.findall(r"(?<!`)`([^`\n]+)`(?!`)", prose)
    return [normalize(s) for s in spans if s.startswith(COMMAND_STARTS)]


def python_blocks(text: str) -> list[str]:
    return [body for lang, body in fenced_blocks(text) if lang == "python"]


def unknown_and_stale(text: str) -> tuple[list[str], list[str]]:
    """Commands of `text` that COMMANDS lacks, and COMMANDS entries that `text` lacks."""
    found = shell_commands(text) + inline_commands(text)
    unknown = [c for c in found if c not in COMMANDS]
    stale = [c for c in COMMANDS if c not in found]
    return unknown, stale


def small_python(text: str) -> list[str]:
    blocks = python_blocks(text)
    for old, new in PYTHON_SMALL:
        assert any(old in b for b in blocks), f"README's Python no longer contains {old!r}"
        blocks = [b.replace(old, new) for b in blocks]
    return blocks


def make_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment without the variables of an enclosing make (make test runs us)."""
    inherited = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    return {k: v for k, v in (base or os.environ).items() if k not in inherited}


def make_dry_run(*args: str) -> str:
    """The recipe lines make would run (make -n), not remaking the venv."""
    proc = subprocess.run(
        ["make", "-n", "--no-print-directory", "-o", ".venv/.installed", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=make_env(),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def command_env() -> dict[str, str]:
    """The environment of the commands: XLA at optimization level 0 where a program does not
    choose its own (half the compile time; small runs do not notice the slower code)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0"
    return env


# ---------------------------------------------------------------------------------------------
# Fast checks.
# ---------------------------------------------------------------------------------------------


def test_code_blocks_have_known_languages():
    langs = [lang for lang, _ in fenced_blocks(README.read_text())]
    assert langs, "no code blocks found: the parser or the README broke"
    # An unlabelled or ```bash block would hide its commands from these tests.
    assert set(langs) <= set(LANGUAGES), sorted(set(langs) - set(LANGUAGES))


def test_every_readme_command_is_known():
    unknown, stale = unknown_and_stale(README.read_text())
    assert not unknown, f"README commands this test does not know how to run: {unknown}"
    assert not stale, f"COMMANDS entries no longer in the README: {stale}"


def test_the_command_check_catches_drift():
    text = README.read_text()
    extra = "\n```sh\npurejaxppo train --env Acrobot-v1 --out runs/a   # new\n```\n"
    assert unknown_and_stale(text + extra)[0] == ["purejaxppo train --env Acrobot-v1 --out runs/a"]
    assert unknown_and_stale(text + "Run `make bench` first.")[0] == ["make bench"]
    without = text.replace("purejaxppo train --resume runs/lr", "")
    assert unknown_and_stale(without)[1] == ["purejaxppo train --resume runs/lr"]


def test_python_blocks_parse_and_shrink():
    blocks = small_python(README.read_text())
    assert len(blocks) >= 3
    for block in blocks:
        ast.parse(block)


def test_make_targets():
    # make test runs the whole suite in two runs whose markers cover every test (so notebooks
    # and README tests run in CI): all but the learning and shipped-level tests with XLA's
    # optimization level 0, then those at the shipped level. Three test processes by default (CI
    # has 2 cores, and a third process fills their waits), TEST_JOBS=N for another count.
    first, second = make_dry_run("test").strip().splitlines()
    head = 'XLA_FLAGS="$XLA_FLAGS --xla_backend_optimization_level=0" '
    run = "/python -m pytest -q --durations=10 -n 3 --dist worksteal -m "
    assert first.startswith(head) and first.endswith(run + '"not slow and not shipped_level"')
    assert second.endswith(run + '"slow or shipped_level"') and "XLA_FLAGS" not in second
    fast = make_dry_run("test-fast").strip()
    assert fast.startswith(head) and fast.endswith(
        "/python -m pytest -q -n 2 --dist loadfile "
        '-m "not slow and not integration and not shipped_level"'
    ), fast
    assert all(
        "-n 4 --dist worksteal -m" in line
        for line in make_dry_run("test", "TEST_JOBS=4").strip().splitlines()
    )
    train = make_dry_run("train").strip()
    assert re.fullmatch(
        r"\S+/purejaxppo train --env CartPole-v1 --num-seeds 16 --total-timesteps 500000 "
        r"--out runs/cartpole-\d{8}-\d{6}",
        train,
    ), train
    with_args = make_dry_run("train", "ARGS=--num-seeds 4").strip()
    assert with_args.startswith(train[: train.index(" --out ")])
    assert with_args.endswith(" --num-seeds 4")
    lint = make_dry_run("lint").splitlines()
    assert [line.split("/")[-1] for line in lint] == [
        "ruff check purejaxppo tests benchmarks notebooks",
        "ruff format --check purejaxppo tests benchmarks notebooks",
    ]
    assert make_dry_run("notebooks").strip().endswith("/python tests/test_notebooks.py")


def test_pip_extras_exist():
    # What pip reads for `pip install 'purejaxppo[NAME]'`: the installed package's metadata.
    requires = importlib.metadata.requires("purejaxppo") or []
    wanted = {name for kind, name in COMMANDS.values() if kind == "extra"}
    for name in wanted:
        deps = [r.split(";")[0] for r in requires if re.search(rf"extra == .{name}.", r)]
        assert deps, f"README installs the extra {name!r}; the package declares none"
    assert wanted == {"render", "wandb", "atari", "jumanji", "craftax", "xminigrid", "playground"}
    assert any(re.search(r"craftax.*extra == .craftax.", r) for r in requires)
    assert any(re.search(r"xminigrid.*extra == .xminigrid.", r) for r in requires)
    assert any(re.search(r"playground.*extra == .playground.", r) for r in requires)
    assert any(re.search(r"ale-py\[xla\].*extra == .atari.", r) for r in requires)
    assert any(re.search(r"pygame.*extra == .render.", r) for r in requires)
    assert any(re.search(r"wandb.*extra == .wandb.", r) for r in requires)


def table_rows(text: str, header: str) -> dict[str, list[str]]:
    """Rows of the markdown table whose header row starts with `| header |`, by first cell."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def same_default(text: str, value: object) -> bool:
    text = text.strip("`")
    if value is None:
        return text == "auto"
    if isinstance(value, bool):
        return text == str(value).lower()
    if isinstance(value, (int, float)):
        return float(text) == value
    if isinstance(value, tuple):
        return text == str(value)
    return text == value


@pytest.mark.parametrize("cls_name", ["Config", "HParams"])
def test_settings_tables_match_the_dataclasses(cls_name):
    import purejaxppo.ppo

    cls = getattr(purejaxppo.ppo, cls_name)
    rows = table_rows(README.read_text(), f"{cls_name} field")
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    assert list(rows) == list(fields), "one row per field, in the dataclass's order"
    for name, default in fields.items():
        default_cell, meaning, cleanrl, brax = rows[name]
        assert same_default(default_cell, default), (name, default_cell, default)
        assert meaning and cleanrl and brax, f"{name}: every column filled ('—' for none)"


def test_default_check_can_fail():
    assert not same_default("0.99", 0.9)
    assert not same_default("false", True)
    assert not same_default("(64,)", (64, 64))
    assert same_default("auto", None) and same_default("2.5e-4", 2.5e-4)


# ---------------------------------------------------------------------------------------------
# Running the commands and the Python blocks.
# ---------------------------------------------------------------------------------------------


def resolve(argv: list[str]) -> list[str]:
    """The README's program names as this environment runs them."""
    if argv[0] == "purejaxppo":
        script = Path(sys.executable).with_name("purejaxppo")
        return [str(script) if script.exists() else shutil.which("purejaxppo"), *argv[1:]]
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    return argv


def expected_outputs(argv: list[str]) -> list[str]:
    """Files a command must leave behind (relative to its working folder)."""
    if argv[:2] == ["purejaxppo", "train"]:
        folder = argv[argv.index("--resume" if "--resume" in argv else "--out") + 1]
        static = [a for a in argv if a.startswith("objective=")]  # one subfolder per value
        subfolders = [f"objective={v}" for a in static for v in a.split("=")[1].split(",")]
        return [
            f"{folder}/{sub}{name}"
            for sub in ([f"{s}/" for s in subfolders] or [""])
            for name in ("summary.json", "metrics.npz", "curves.png")
        ]
    if argv[:2] == ["purejaxppo", "eval"]:
        return [f"{argv[2]}/eval.json"] + (
            [argv[argv.index("--render") + 1]] if "--render" in argv else []
        )
    if argv[0] == "cp":
        return [argv[-1]]
    return []


@pytest.mark.integration
def test_readme_commands_run(tmp_path, monkeypatch, capsys):
    from purejaxppo.cli import main

    # The README's paths are relative to the repository: give the scratch folder the package.
    (tmp_path / "purejaxppo").symlink_to(ROOT / "purejaxppo")
    monkeypatch.chdir(tmp_path)  # for the commands run in this process
    ran, own_process, no_opengl = 0, 0, None
    for command in shell_commands(README.read_text()):
        kind, extra = COMMANDS[command]
        if kind != "run":
            continue
        argv = shlex.split(command) + list(extra)
        if argv[0] == "purejaxppo" and command not in OWN_PROCESS:
            capsys.readouterr()
            code = main(argv[1:])
            assert code == 0, f"{command}\n{capsys.readouterr().err[-3000:]}"
        else:
            proc = subprocess.run(
                resolve(argv), cwd=tmp_path, capture_output=True, text=True, timeout=900,
                env=command_env(),
            )  # fmt: skip
            own_process += argv[0] == "purejaxppo"
            if "--render" in argv and "none could be made here" in proc.stderr:
                # A machine without EGL: brax's render is refused in one line, and skipped.
                assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
                no_opengl = proc.stderr.strip()
                continue
            assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
            if argv[0] == "python":
                assert json.loads(proc.stdout.splitlines()[-1])["num_seeds"] == 2
        for path in expected_outputs(argv):
            assert (tmp_path / path).is_file(), f"{command}: no {path}"
        ran += 1
    assert ran >= 8 and own_process == len(OWN_PROCESS)
    assert (tmp_path / "episode.gif").read_bytes()[:4] == b"GIF8"
    if no_opengl is None:
        from PIL import Image

        assert Image.open(tmp_path / "ip.gif").n_frames > 1  # drawn by MuJoCo through brax
    summary = json.loads((tmp_path / "runs/lr/summary.json").read_text())
    assert summary["num_seeds"] == 2 and len(summary["final_return"]) == 4  # the 2 x 2 grid


@pytest.mark.integration
def test_readme_python_runs(tmp_path):
    runner = (
        "import json, sys\n"
        "namespace = {'__name__': '__main__'}\n"
        "for i, block in enumerate(json.load(open(sys.argv[1]))):\n"
        "    exec(compile(block, f'README.md python block {i + 1}', 'exec'), namespace)\n"
    )
    (tmp_path / "blocks.json").write_text(json.dumps(small_python(README.read_text())))
    proc = subprocess.run(
        [sys.executable, "-c", runner, "blocks.json"], cwd=tmp_path, capture_output=True,
        text=True, timeout=900, env=command_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "runs/api/summary.json").read_text())
    assert summary["num_seeds"] == 2 and len(summary["per_setting"]) == 2


@pytest.mark.integration
def test_make_train_runs(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "train",
         f"BIN={Path(sys.executable).parent}", f"OUT={out}", f"ARGS={shlex.join(SMALL_TRAIN)}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env=make_env(command_env()),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"] == "CartPole-v1" and summary["num_seeds"] == 2
