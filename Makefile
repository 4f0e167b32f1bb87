# One entry point for people and CI: every target sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# The dashboard's browser tests drive this binary (Debian's chromium, never a downloaded one).
CHROMIUM := $(or $(STEPSTONE_CHROMIUM),$(shell command -v chromium 2>/dev/null),/usr/bin/chromium)

.PHONY: install run run-cloudflare test test-prerequisites check lint format bench screenshots clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/stepstone serve --config examples/stepstone.toml --db sqlite:///data/stepstone.db

# A Cloudflare Python Workers project, served from its own folder as `wrangler dev` would be:
# REST API on :8787, the Worker's fetch on :8788. Its own database, so the two examples'
# workflows stay apart.
run-cloudflare: install
	cd examples/cloudflare && ../../$(BIN)/stepstone serve --db sqlite:///data/stepstone.db

# The gates, the same for people and CI (`make test` runs them first). The layer rules and
# their written-down exceptions are [tool.importlinter] in pyproject.toml.
check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict stepstone tools tests
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/python tools/module_size.py

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# `make test` runs every tier, so what a tier needs is checked first and its absence is an
# error naming the fix, never a silent skip (STEPSTONE_SKIP_BROWSER=1 skips on purpose).
test-prerequisites:
	@test -n "$(STEPSTONE_SKIP_BROWSER)" || test -x "$(CHROMIUM)" || { \
	  echo "make test: Debian's chromium is missing ($(CHROMIUM)); the dashboard's browser" \
	    "tests need it: apt-get install -y chromium (.ci/run does), or set" \
	    "STEPSTONE_CHROMIUM=/path/to/chromium, or STEPSTONE_SKIP_BROWSER=1 to skip them" >&2; \
	  exit 1; }

test: test-prerequisites check
	$(BIN)/pytest

screenshots: install
	STEPSTONE_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q tests/dashboard/test_browser.py

# Stepstone beside DBOS, Restate and Absurd; each peer's environment is built on first use under
# ~/.cache/stepstone-bench/ (never a Stepstone dependency). BENCH_ARGS=--quick: a ~3 min smoke.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
