# One entry point for people and CI: every target sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run run-cloudflare test check lint format bench screenshots clean

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

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict stepstone

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: check
	$(BIN)/pytest

screenshots: install
	STEPSTONE_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q tests/dashboard/test_browser.py

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
