# Every target installs what it needs and is safe to run again.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/continue-orchestrator
PYTEST_ARGS ?=
E2E_ARGS ?=
BENCH ?=

.PHONY: help venv lint test test-deps sandbox-deps cn attest-tools demo bench crds \
	k8s-tools forge-tools cluster-up cluster-down node-tools images e2e

help:
	@echo "make demo   one real AgentRun end to end on this machine"
	@echo "make test   lint and the whole test suite (the e2e on the real node included)"
	@echo "make e2e    the deployed path on a real node (KUBECONFIG=... for a cluster of yours)"
	@echo "make lint   ruff and mypy --strict on operator/"
	@echo "make bench  benchmarks, one JSON object per line (BENCH=name for one)"
	@echo "make crds   regenerate crds/ from the API models"
	@echo "make cluster-up / cluster-down   a local test control plane (prints export KUBECONFIG=...)"

# The ledger's native core (operator/native) is built by this install too, so its sources
# are prerequisites: a change to them rebuilds it.
NATIVE_SOURCES := $(wildcard operator/native/Cargo.toml operator/native/Cargo.lock operator/native/src/*.rs)

$(BIN)/.installed: pyproject.toml $(NATIVE_SOURCES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check operator tests bench
	$(BIN)/mypy --strict

# System packages the tests need: PostgreSQL server binaries for the ledger tests, and
# promtool (Debian's prometheus package) for the chart's alerting-rule tests.
test-deps:
	hack/install-postgres.sh
	hack/install-promtool.sh

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

# The test control plane (etcd, kube-apiserver, kube-controller-manager, kubectl) and
# helm, built from Go modules into $(CACHE_DIR)/bin (docs/testing.md); cluster-up/down
# run it in the background for people.
k8s-tools:
	@hack/build-k8s.sh >/dev/null

# Gitea, the forge the publishing tests push to, built from Go modules into $(CACHE_DIR)/bin
# (docs/testing.md, "A real forge"); Stoplight Prism and GitHub's OpenAPI description
# (npm) for checking the GitHub backend's requests (docs/forges.md).
forge-tools:
	@hack/build-gitea.sh >/dev/null
	@hack/install-prism.sh >/dev/null

# A real node for the test control plane (docs/testing.md, "A real node"): kubelet,
# kube-proxy, kube-scheduler and containerd v2 from Go modules into $(CACHE_DIR)/bin, runc,
# runsc, CNI plugins and busybox from Debian.
node-tools:
	@hack/build-node.sh >/dev/null

# The runner image and the operator/gateway image, built without Docker (mmdebstrap +
# buildah; docs/images.md) into $(CACHE_DIR)/images as OCI archives for `ctr images import`.
# Prints "name archive digest" per image.
images:
	@hack/build-images.sh

cluster-up: venv k8s-tools
	@$(BIN)/python -m tests.kube up

cluster-down: venv
	@$(BIN)/python -m tests.kube down

test: lint test-deps sandbox-deps cn attest-tools k8s-tools forge-tools
	cd operator/native && cargo test --quiet --locked --no-default-features --lib
	$(BIN)/pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory e2e

# The deployed path end to end (docs/testing.md, "The deployed path on a real node"): the
# chart from the built images on a real node (containerd, kubelet, gVisor), the demo's
# AgentRun applied, attacker probes; the node's own tests and the images' (reproducible
# builds). Its own pytest session: the real node's scheduler would bind the pod executor's
# pods. `make e2e KUBECONFIG=<file>` (on the command line; an exported KUBECONFIG is not
# used) runs the node and deployed tests on a cluster of yours with a RuntimeClass
# `gvisor` instead, e.g. kind made with hack/kind-config.yaml: E2E_HOST_ADDRESS is the
# address its pods reach this machine at, KIND_CLUSTER the kind cluster to load images into.
E2E_PATHS := tests/integration/node tests/integration/deployed
ifeq ($(origin KUBECONFIG),command line)
E2E_HOST_ADDRESS ?=
KIND_CLUSTER ?= kind
e2e: venv
	@hack/build-images.sh >/dev/null
	CO_E2E_KUBECONFIG=$(abspath $(KUBECONFIG)) CO_E2E_HOST_ADDRESS=$(E2E_HOST_ADDRESS) \
		CO_E2E_KIND_CLUSTER=$(KIND_CLUSTER) $(BIN)/pytest -m node $(E2E_PATHS) $(E2E_ARGS)
else
e2e: venv test-deps sandbox-deps cn k8s-tools forge-tools node-tools images
	$(BIN)/pytest -m 'node or images' -o session_timeout=1500 $(E2E_PATHS) \
		tests/integration/images $(E2E_ARGS)
endif

crds: venv
	$(BIN)/orchestrator crds --write crds --reference docs/crd-reference.md
	cp crds/*.yaml charts/continue-orchestrator/crds/  # Helm reads only the chart's own files

# One real AgentRun end to end on this machine (examples/demo): the runner in gVisor behind
# the gateway, a SQLite ledger, the record store, a development-key attestation; then the
# ledger and the attestation are verified as a third party would. DEMO_APPROVALS= (empty)
# makes the run wait for `orchestrator approve` from another terminal; DEMO_SANDBOX=none
# runs without isolation (loudly). The scripted model ignores the placeholder key.
DEMO_STATE ?= .orchestrator
DEMO_SANDBOX ?= gvisor
DEMO_APPROVALS ?= --approve-all
DEMO_RUN = $(BIN)/orchestrator run examples/demo/agentrun.yaml \
	--config-map demo-agent=examples/demo/continue/config.yaml \
	--secret OPENAI_API_KEY=env:DEMO_OPENAI_API_KEY \
	--model-script examples/demo/model-script.yaml \
	--sandbox $(DEMO_SANDBOX) --state-dir $(DEMO_STATE) $(DEMO_APPROVALS)

demo: venv cn $(if $(filter none,$(DEMO_SANDBOX)),,sandbox-deps)
	@hack/demo-origin.sh >/dev/null
	DEMO_OPENAI_API_KEY=sk-demo-placeholder-not-a-real-key $(DEMO_RUN)
	$(BIN)/orchestrator ledger verify sqlite:///$(abspath $(DEMO_STATE))/ledger.db \
		--public-key $(DEMO_STATE)/keys/DEVELOPMENT-ONLY-attestation.pub
	$(BIN)/orchestrator verify "$$(ls -t $(DEMO_STATE)/attestations/*.sigstore.json | head -1)" \
		--key $(DEMO_STATE)/keys/DEVELOPMENT-ONLY-attestation.pub

bench: venv
	$(BIN)/python -m bench $(if $(BENCH),--only $(BENCH))
