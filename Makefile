# make train: create .venv if absent, install, train CartPole-v1 over 16 seeds.
# make test:  same venv, the whole test suite (fast unit tests first, then learning tests).
# make train ARGS='--num-seeds 4': extra flags for the training command (the last of a repeated
# flag wins).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/cartpole-$(shell date +%Y%m%d-%H%M%S)
ARGS ?=
# Test processes (pytest-xdist): CI's machine has 2 cores; each process holds 1-2 GiB.
TEST_JOBS ?= 2

.PHONY: install train test test-fast lint notebooks clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,atari,jumanji,craftax,xminigrid,playground]"
	touch $@

train: install
	$(BIN)/purejaxppo train --env CartPole-v1 --num-seeds 16 --total-timesteps 500000 --out $(OUT) $(ARGS)

# One run over TEST_JOBS processes, each taking tests in the order unit -> integration -> slow
# (learning) and stealing from the other when idle; see tests/conftest.py.
test: install
	$(BIN)/python -m pytest -q --durations=10 -n $(TEST_JOBS) --dist worksteal

# Pure-function unit tests only (no trainer compiles), for a quick loop while editing; a test
# file stays in one process (its module fixtures are built once).
test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile -m "not slow and not integration"

lint: install
	$(BIN)/ruff check purejaxppo tests benchmarks notebooks
	$(BIN)/ruff format --check purejaxppo tests benchmarks notebooks

# Run every notebook at full size and save it with its outputs (what is committed).
notebooks: install
	$(BIN)/python tests/test_notebooks.py

clean:
	rm -rf $(VENV) runs
