# Set-up and the two main jobs. `make gallery` and `make test` each create .venv and install everything
# (Graphviz's `dot` too, where apt-get is usable) the first time, and again whenever a dependency file changes.
# `make test` fails when `dot` is missing and cannot be installed (the diagram tests need it), and the tests
# fail when a dev dependency is missing: SHAPETRACE_ALLOW_NO_DOT=1 / SHAPETRACE_ALLOW_MISSING=name,... opt out.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The venv is reused only while setup.cfg, pyproject.toml and constraints.txt are unchanged.
DEPKEY := $(shell cat setup.cfg pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)
STAMP  := $(VENV)/.installed-$(DEPKEY)

.PHONY: setup graphviz chromium gallery docs test test-all lint bench fuzz clean

setup: $(STAMP) graphviz chromium

$(STAMP):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "shapetrace needs Python 3.10 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

graphviz:
	@scripts/ensure-graphviz.sh

chromium:
	@scripts/ensure-chromium.sh

gallery: setup
	$(BIN)/shapetrace gallery build -o site

# The documentation site (furo, MyST, the shapetrace directive), warnings as errors; `make test` builds it too.
docs: setup
	$(BIN)/sphinx-build -W --keep-going -b html docs build/docs

# `make test` leaves out the tests marked slow (sweeps, a subprocess per variant, whole benchmark scripts: about a
# minute together) to stay under five minutes; `make test-all` runs every test.
test: $(STAMP) chromium
	@scripts/ensure-graphviz.sh --required
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP) chromium
	@scripts/ensure-graphviz.sh --required
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q

# Random models (tests/test_fuzz.py): `make test` runs 25 fixed examples, this runs 500 fresh ones.
fuzz: setup
	SHAPETRACE_FUZZ_EXAMPLES=$${SHAPETRACE_FUZZ_EXAMPLES:-500} SHAPETRACE_FUZZ_SEED=random \
		$(BIN)/python -m pytest -q tests/test_fuzz.py

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts

bench: setup
	$(BIN)/python benchmarks/overhead.py --rounds 10 --budget 150 --write docs/benchmarks.md
	$(BIN)/python benchmarks/render.py
	$(BIN)/python benchmarks/trace_json.py --write docs/benchmarks.md

clean:
	rm -rf $(VENV) site build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
