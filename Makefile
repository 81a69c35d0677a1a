# Development tasks. `make test` is the same command CI runs (see README and .ci/run).
.PHONY: help install test unit integration lint format dev demo bench

PY ?= .venv/bin/python
TEST_FILE ?= tests/

help:
	@echo "install  create .venv and install the package with dev extras"
	@echo "test     run all tests (unit + integration)"
	@echo "unit     run the fast offline unit tests"
	@echo "integration  run the integration tests (servers, subprocess CLIs, PostgreSQL)"
	@echo "lint     ruff check, ruff format --diff, mypy"
	@echo "format   ruff format and fix imports"
	@echo "dev      serve the graph with langgraph dev (no browser)"
	@echo "demo     run the example batch on the offline emulator"
	@echo "bench    run the benchmarks against plain baselines (chat, start-up, fast paths, map, embeddings)"

.venv:
	python3 -m venv .venv

install: .venv
	$(PY) -m pip install -q -e ".[dev]"
	@# An editable install compiles nothing; without cached bytecode every run recompiles agent/.
	$(PY) -m compileall -q agent

test: install
	$(PY) -m pytest $(TEST_FILE)

unit: install
	$(PY) -m pytest tests/unit_tests

integration: install
	$(PY) -m pytest tests/integration_tests

lint:
	$(PY) -m ruff check agent graphs tests
	$(PY) -m ruff format --diff agent graphs tests
	$(PY) -m mypy

format:
	$(PY) -m ruff format agent graphs tests
	$(PY) -m ruff check --fix --select I agent graphs tests

dev:
	.venv/bin/langgraph dev --no-browser

demo: .venv
	$(PY) -m pip install -q -e .
	.venv/bin/batch-agent run examples/tickets.jsonl --wait --poll-interval 1 --out results.jsonl

bench: install
	$(PY) bench/run.py
