# Bootstraps .venv from a fresh clone; `make run` serves, `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= data
# the browser tests drive Debian's chromium (Playwright cannot download its own here)
CHROMIUM := /usr/bin/chromium

.PHONY: install install-test run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,spark,bench]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(CHROMIUM):
	apt-get update && apt-get install -y chromium

run: install
	$(BIN)/trace-usage serve --data-dir $(DATA_DIR) --seed-sample

test: install-test $(CHROMIUM)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

lint: install-test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install-test
	$(BIN)/trace-usage bench

clean:
	rm -rf $(VENV) .pytest_cache
