# Every target installs what it needs and is safe to run again.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/continue-orchestrator
PYTEST_ARGS ?=
BENCH ?=

.PHONY: help venv lint test test-deps sandbox-deps cn attest-tools demo bench crds

help:
	@echo "make demo   one real AgentRun end to end on this machine"
	@echo "make test   lint and the whole test suite"
	@echo "make lint   ruff and mypy --strict on operator/"
	@echo "make bench  benchmarks, one JSON object per line (BENCH=name for one)"
	@echo "make crds   regenerate crds/ from the API models"

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check operator tests bench
	$(BIN)/mypy --strict

# System packages the tests need (PostgreSQL server binaries for the ledger tests).
test-deps:
	hack/install-postgres.sh

# The local sandbox (gVisor runsc, iproute2, nftables) and the pinned Continue CLI.
sandbox-deps:
	hack/install-sandbox-deps.sh

cn:
	@hack/install-cn.sh >/dev/null

# Independent verifiers of our attestation bundles: cosign v3 (from Go modules) and
# sigstore-js's @sigstore/verify (npm), both into $(CACHE_DIR), never the tree.
attest-tools:
	@hack/build-cosign.sh >/dev/null
	@hack/install-sigstore-js.sh >/dev/null

test: lint sandbox-deps cn attest-tools
	$(BIN)/pytest $(PYTEST_ARGS)

crds: venv
	$(BIN)/orchestrator crds --write crds --reference docs/crd-reference.md

demo: venv
	$(BIN)/orchestrator validate examples/*.yaml
	@echo "make demo: the examples validate. The end-to-end run arrives with 'orchestrator run'."

bench: venv
	$(BIN)/python -m bench $(if $(BENCH),--only $(BENCH))
