# Two commands do all the set-up on a fresh machine:
#   make demo   - virtualenv + package, then `handshake-lab run half-close`
#   make test   - virtualenv + test tools, then lint, types and the test suite
# Both work as root and as a normal user. Root adds the tests marked `root` (netns, nft);
# as a normal user those skip with the reason printed.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck pytest bench matrix clean vm-check schema

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "handshake-lab needs Python 3.11 or newer (found: $$($(PYTHON) --version 2>&1))." >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) || \
	  { echo "Could not create a virtualenv: on Debian/Ubuntu run 'sudo apt install python3-venv'." >&2; exit 1; }

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	@touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	@command -v ss >/dev/null || echo "note: 'ss' is missing; install iproute2 (apt install iproute2)" >&2
	$(BIN)/handshake-lab run half-close

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

# Most of the suite's time is spent waiting for the kernel (retransmission timers, TIME_WAIT,
# namespaces), not computing: four workers on two cores take the run from ~21 to ~9 minutes.
# Tests sharing a module-scoped set-up stay on one worker (tests/conftest.py, loadgroup).
# PYTEST_ARGS= runs it on one process.
PYTEST_ARGS ?= -n 4 --dist loadgroup --durations=15

pytest: $(VENV)/.dev-installed
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# docs/schema.json is the package's schema, byte for byte (tests/unit/test_schema.py checks).
schema:
	cp handshake_lab/record/schema.json docs/schema.json

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/run.py

# Every built-in lab x loop x placement x IP version through the CLI, as a table (bench/matrix.py):
# ~15 minutes, two runs side by side; root for the namespace placements. MATRIX_ARGS narrows it.
MATRIX_ARGS ?=
matrix: $(VENV)/.installed
	$(BIN)/python bench/matrix.py $(MATRIX_ARGS)

# Two real VMs (vagrant/vm-check.sh): boots, runs every lab on both loops across them, destroys
# them. Minutes, root, a VM provider; never part of `make test`.
vm-check:
	vagrant/vm-check.sh

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis dist build
