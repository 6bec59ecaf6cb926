# The two commands a newcomer needs:
#   make run    install (first time, and again when pyproject.toml changes) and run the bot, configured by .env
#   make test   install with the test extras (likewise) and run the test suite
# and what CI checks besides the tests:
#   make lint   ruff (lint, then formatting) and mypy, configured in pyproject.toml
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stamps: pip runs only when pyproject.toml is newer than the last install of that kind.
INSTALLED := $(VENV)/.installed
INSTALLED_TEST := $(VENV)/.installed-test

.PHONY: run test lint migrate bench install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(INSTALLED_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(INSTALLED)

install: $(INSTALLED_TEST)

run: $(INSTALLED)
	$(BIN)/python -m bot

migrate: $(INSTALLED)
	$(BIN)/python -m bot migrate

test: $(INSTALLED_TEST)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(INSTALLED_TEST)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(INSTALLED_TEST)
	$(BIN)/python -m bench
