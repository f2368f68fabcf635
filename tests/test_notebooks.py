"""The notebooks run top to bottom, and the committed copies carry the outputs of a full run.

Each notebook's first code cell (right after its title, tagged `parameters`) assigns every size
that costs time. The execution test injects a cell after it with the small values in SMALL and
runs the notebook in a temporary folder, so whatever it writes stays out of the repository.

Run this file as a script to execute notebooks at their full sizes and save them with outputs
(what is committed):

    python tests/test_notebooks.py                        # every notebook
    python tests/test_notebooks.py walkthrough.ipynb      # one of them
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
CELL_TIMEOUT_S = 600  # a hung cell fails the test instead of stalling CI
FULL_RUN_CELL_TIMEOUT_S = 3600

# Python source of a small value for every name each parameters cell assigns.
SMALL = {
    "walkthrough.ipynb": {
        "NUM_SEEDS": "2",
        "TOTAL_TIMESTEPS": "2_048",  # 4 updates of 512 steps
        "SWEEP_SEEDS": "2",
        "SWEEP_TIMESTEPS": "1_024",
        "LEARNING_RATES": "(1e-3, 3e-3)",
        "ENT_COEFS": "(0.0, 0.01)",
        "EVAL_EPISODES": "2",
        "RENDER_STEPS": "4",
        "CKPT_SEEDS": "2",
        "CKPT_TIMESTEPS": "4_096",  # 8 updates: stopped half way, then resumed
    },
    "fork_the_trainer.ipynb": {
        "NUM_SEEDS": "2",
        "TOTAL_TIMESTEPS": "2_048",
        "LEARNING_RATES": "(2.5e-4, 1e-2)",
        "CLI_SEEDS": "2",
        "CLI_TIMESTEPS": "1_024",
    },
    "memory.ipynb": {
        "NUM_SEEDS": "2",
        "MEMORY_TIMESTEPS": "2_048",  # 2 updates of 8 envs x 128 steps
        "CARTPOLE_TIMESTEPS": "2_048",
    },
    "continuous_control.ipynb": {
        "NUM_SEEDS": "2",
        "TOTAL_TIMESTEPS": "8_192",  # 2 updates of 64 envs x 64 steps
        "EVAL_EPISODES": "2",
    },
}
NOTEBOOKS = sorted(SMALL)


def read(name: str):
    import nbformat

    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def parameters_index(nb) -> int:
    """Index of the parameters cell: the first code cell, right after the title, tagged."""
    first_code = next(i for i, cell in enumerate(nb.cells) if cell.cell_type == "code")
    assert first_code == 1, "the parameters cell must follow the title directly"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "parameters" in nb.cells[1].metadata.get("tags", []), "tag the cell 'parameters'"
    return first_code


def assigned_names(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def with_values(nb, values: dict[str, str]):
    """A copy of nb with a cell after the parameters cell assigning `values`, and checking that
    the kernel runs this checkout of purejaxppo (not some other installed copy)."""
    import nbformat

    nb = copy.deepcopy(nb)
    index = parameters_index(nb)
    lines = [f"{name} = {value}" for name, value in values.items()]
    lines += [
        "import pathlib as _pathlib, purejaxppo as _purejaxppo",
        f"assert _pathlib.Path(_purejaxppo.__file__).resolve().parent.parent == "
        f"_pathlib.Path({str(ROOT)!r}), _purejaxppo.__file__",
    ]
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": ["injected"]})
    cell["id"] = "injected-parameters"
    nb.cells.insert(index + 1, cell)
    return nb


def execute(nb, workdir: Path, fast_compile: bool = False, timeout: int = CELL_TIMEOUT_S):
    """Run every cell in order in a fresh kernel with workdir as the current folder.

    fast_compile: XLA's CPU backend at optimization level 0, which halves the compile time of
    a trainer and costs run time that small sizes do not notice. The programs are the same.
    """
    from nbclient import NotebookClient

    env = dict(os.environ)
    if fast_compile:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0"
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        record_timing=False,
    )
    client.execute(env=env)
    return nb


# ---------------------------------------------------------------------------------------------
# Fast checks of the committed files.
# ---------------------------------------------------------------------------------------------


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_small_values_cover_every_parameter(name):
    nb = read(name)
    params = assigned_names(nb.cells[parameters_index(nb)].source)
    # A parameter without a small value would run at full size under test.
    assert params == set(SMALL[name])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_carries_a_full_run(name):
    nb = read(name)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    # Run once, top to bottom, in one kernel: execution counts 1, 2, 3, ...
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    outputs = [out for cell in code for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert not any(cell.metadata.get("tags") == ["injected"] for cell in code)
    assert any("image/png" in out.get("data", {}) for out in outputs), "no plot saved"
    text = (NOTEBOOK_DIR / name).read_text()
    assert str(ROOT) not in text and "/tmp/" not in text, "a local path leaked into the outputs"
    assert (NOTEBOOK_DIR / name).stat().st_size < 1_000_000


def markdown_commands(nb) -> list[list[str]]:
    """argv of each line of the ```sh blocks in markdown cells (continuations joined)."""
    commands = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for body in re.findall(r"```sh\n(.*?)```", cell.source, re.S):
            for line in body.replace("\\\n", " ").splitlines():
                argv = shlex.split(line, comments=True)
                if argv:
                    commands.append(argv)
    return commands


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_commands_shown_in_notebooks_parse(name):
    from purejaxppo.cli import build_parser
    from purejaxppo.presets import preset_names

    for argv in markdown_commands(read(name)):
        assert argv[0] == "purejaxppo", argv
        args = build_parser().parse_args(argv[1:])  # exits (fails) on an unknown flag
        assert args.command in ("train", "eval")
        assert getattr(args, "config", None) in (None, *preset_names()), argv


def test_command_check_can_fail():
    import nbformat

    from purejaxppo.cli import build_parser

    nb = nbformat.v4.new_notebook()
    text = "Run:\n\n```sh\npurejaxppo train --env CartPole-v1 \\\n    --bogus 1  # note\n```\n"
    nb.cells = [nbformat.v4.new_markdown_cell(text)]
    (argv,) = markdown_commands(nb)
    assert argv == ["purejaxppo", "train", "--env", "CartPole-v1", "--bogus", "1"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv[1:])


def test_parameter_checks_can_fail():
    assert assigned_names("A = 1\nB, C = 2, 3\nD: int = 4\nE = F = 5") == {"A", "E", "F"}
    nb = read(NOTEBOOKS[0])
    nb.cells[1].metadata["tags"] = []
    with pytest.raises(AssertionError, match="parameters"):
        parameters_index(nb)


# ---------------------------------------------------------------------------------------------
# Execution with small values.
# ---------------------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*")}


@pytest.mark.integration
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, tmp_path):
    before = snapshot(NOTEBOOK_DIR)
    nb = execute(with_values(read(name), SMALL[name]), tmp_path, fast_compile=True)
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors
    assert snapshot(NOTEBOOK_DIR) == before, "the notebook wrote into the repository"


@pytest.mark.integration
def test_a_failing_cell_fails_the_run(tmp_path):
    import nbformat
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# broken"),
        nbformat.v4.new_code_cell("X = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("assert X == 1\nraise RuntimeError('boom')"),
    ]
    with pytest.raises(CellExecutionError, match="boom"):
        execute(with_values(nb, {"X": "1"}), tmp_path)


# ---------------------------------------------------------------------------------------------
# Full runs: python tests/test_notebooks.py [NAME ...]
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    import nbformat

    parser = argparse.ArgumentParser(description="Execute notebooks at full size; save outputs.")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: {' '.join(NOTEBOOKS)}")
    names = parser.parse_args(argv).names or NOTEBOOKS
    unknown = sorted(set(names) - set(NOTEBOOKS))
    if unknown:
        parser.error(f"unknown notebooks {unknown}; known: {NOTEBOOKS}")
    for name in names:
        nb = read(name)
        parameters_index(nb)
        with tempfile.TemporaryDirectory(prefix="purejaxppo-notebook-") as workdir:
            t0 = time.perf_counter()
            execute(nb, Path(workdir), timeout=FULL_RUN_CELL_TIMEOUT_S)
            seconds = time.perf_counter() - t0
        nbformat.write(nb, NOTEBOOK_DIR / name)
        print(f"{name}: {seconds:.0f} s, {(NOTEBOOK_DIR / name).stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main(sys.argv[1:])
