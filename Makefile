# Common commands. `make setup` is idempotent: it reinstalls only when pyproject.toml or
# constraints.txt changed since the last install.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rayline-installed

.PHONY: setup bytecode demo test test-unit lint format clean docs

setup: $(STAMP)

# rayline's own modules compiled once: every Ray worker of a run imports them, and where
# PYTHONDONTWRITEBYTECODE is set (CI, many containers) Python would otherwise compile them
# from source in each of those processes (~0.7 s of CPU each on 2 cores). compileall
# rewrites only what changed; a wheel install gets the same from pip.
bytecode: setup
	$(BIN)/python -m compileall -q src

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# constraints.txt pins the CPU build of torch (and the rest) so CI never pulls CUDA wheels.
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: bytecode
	$(BIN)/rayline demo-data --out data/breast_cancer
	$(BIN)/rayline run jobs/configs/demo.yaml

test: bytecode
	$(BIN)/pytest -q

test-unit: bytecode
	$(BIN)/pytest -q tests/unit

lint: setup
	$(BIN)/ruff check src jobs tests benchmarks
	$(BIN)/ruff format --check src jobs tests benchmarks

format: setup
	$(BIN)/ruff format src jobs tests benchmarks
	$(BIN)/ruff check --fix src jobs tests benchmarks

clean:
	rm -rf rayline-runs data/breast_cancer .pytest_cache

docs: setup
	$(BIN)/python docs/update_reference.py README.md
