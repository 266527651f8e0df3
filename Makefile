# Development tasks. `make help` lists them.
#
# Everything runs in a local virtualenv `.venv` created with $(PYTHON). The package is installed
# editable without build isolation: maturin comes from `.venv` and cargo builds incrementally
# into `target/`.

.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
PY := $(BIN)/python
PIP := $(PY) -m pip install --disable-pip-version-check --quiet

BUILD_DEPS := "maturin>=1.9,<2"
TEST_DEPS := pytest==8.4.2 pytest-timeout hypothesis gevent ruff mypy

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

$(VENV)/.build-deps: $(BIN)/python Makefile
	$(PIP) $(BUILD_DEPS)
	@touch $@

$(VENV)/.test-deps: $(VENV)/.build-deps
	$(PIP) $(TEST_DEPS)
	@touch $@

.PHONY: install
install: $(VENV)/.build-deps ## Create .venv with maturin and build + install the package (editable)
	$(PIP) --no-build-isolation -e .

.PHONY: dev
dev: $(VENV)/.test-deps install ## Like install, plus everything the tests and linters need

.PHONY: demo
demo: install ## Run examples/demo.py (popen gateways, remote_exec, data both ways)
	$(PY) examples/demo.py

.PHONY: test
test: dev ## Run the Rust engine tests and the whole pytest suite (incl. the conformance suites)
	cargo test --no-default-features
	$(MAKE) --no-print-directory pytest

.PHONY: pytest
pytest: ## Run pytest over tests/ (without rebuilding); exit 5 (no tests) is an error
	@rc=0; $(PY) -m pytest tests $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests (exit 5)" >&2; exit 1; fi; \
	exit $$rc

.PHONY: test-quick
test-quick: dev ## Like test, without the conformance suites
	cargo test --no-default-features
	$(MAKE) --no-print-directory pytest PYTEST_ARGS='-m "not conformance"'

.PHONY: conformance
conformance: dev ## Run execnet's and pytest-xdist's own suites against this package
	$(PY) tests/conformance/run.py

.PHONY: conformance-upstream
conformance-upstream: dev ## The same suites against upstream execnet 2.1.2 (the baseline)
	$(PY) tests/conformance/run.py --against-upstream

.PHONY: bench
bench: install ## Benchmarks side by side with upstream execnet 2.1.2 (~10 min; BENCH_ARGS=--quick)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

.PHONY: lint
lint: lint-rustfmt lint-clippy lint-clippy-engine lint-ruff lint-ruff-format lint-mypy lint-stubtest ## All quality gates

.PHONY: lint-rustfmt
lint-rustfmt: ## cargo fmt --check
	cargo fmt --check

.PHONY: lint-clippy
lint-clippy: ## clippy with default features (bindings included)
	cargo clippy --all-targets -- -D warnings

.PHONY: lint-clippy-engine
lint-clippy-engine: ## clippy without default features (pure-Rust engine)
	cargo clippy --all-targets --no-default-features -- -D warnings

.PHONY: lint-ruff
lint-ruff: $(VENV)/.test-deps ## ruff check
	$(BIN)/ruff check

.PHONY: lint-ruff-format
lint-ruff-format: $(VENV)/.test-deps ## ruff format --check
	$(BIN)/ruff format --check

.PHONY: lint-mypy
lint-mypy: $(VENV)/.test-deps ## mypy on python/execnet
	$(PY) -m mypy python/execnet

.PHONY: lint-stubtest
lint-stubtest: dev ## Check python/execnet/_core.pyi against the built module
	$(PY) -m mypy.stubtest execnet._core --allowlist .ci/stubtest-allowlist

.PHONY: format
format: $(VENV)/.test-deps ## Format Rust and Python sources, apply ruff's safe fixes
	cargo fmt
	$(BIN)/ruff check --fix
	$(BIN)/ruff format

.PHONY: clean
clean: ## Remove build outputs, .venv and the side folder (.side)
	rm -rf $(VENV) target build dist .side .hypothesis .mypy_cache .ruff_cache
	find python -name '*.so' -delete
