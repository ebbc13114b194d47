# The two commands a fresh machine needs are `make run` and `make test`; each sets itself up.
VENV ?= .venv
BIN := $(VENV)/bin
STATE_DIR ?= ./state
CONFIG ?= config/hwpoisond.toml

.PHONY: run test lint unit e2e bench setup setup-test

setup:
	scripts/bootstrap.sh run

setup-test:
	scripts/bootstrap.sh test

## Run the daemon on this machine with the shipped config; state in ./state.
run: setup
	$(BIN)/hwpoisond run --config $(CONFIG) --state-dir $(STATE_DIR)

## The whole suite: lint, types, unit, integration, promtool, real-kernel e2e.
test: setup-test lint
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: setup-test
	$(BIN)/python -m pytest -q tests/unit

e2e: setup-test
	$(BIN)/python -m pytest -q -m e2e tests/e2e

bench: setup
	$(BIN)/python -m bench
