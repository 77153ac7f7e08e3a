# Common commands. `make setup` is idempotent: it reinstalls only when pyproject.toml or
# constraints.txt changed since the last install.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rayline-installed

.PHONY: setup demo test test-unit lint format clean docs

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# constraints.txt pins the CPU build of torch (and the rest) so CI never pulls CUDA wheels.
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/rayline demo-data --out data/breast_cancer
	$(BIN)/rayline run jobs/configs/demo.yaml

test: setup
	$(BIN)/pytest -q

test-unit: setup
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
