# celery-operator: the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## Install Debian packages and Rust components the tests need (apt-get, rustup)
	@e2e/deps.sh

.PHONY: tools
tools: ## Build (once, cached in ~/.cache/celery-operator) the Kubernetes, etcd, kwok, helm and CoreDNS binaries
	@e2e/cluster/build.sh node

.PHONY: images
images: deps tools ## Build the real node's images (pause, CoreDNS, Redis, the Celery app, the operator), cached by inputs
	@e2e/cluster/images.sh build

.PHONY: node-check
node-check: ## List anything of the real node left on this machine (fails if anything is)
	@e2e/cluster/node.sh check

.PHONY: cluster-up
cluster-up: deps ## Start the local control plane; writes .e2e/kubeconfig
	@e2e/cluster/up.sh

.PHONY: cluster-down
cluster-down: ## Stop the local control plane and remove its state
	@e2e/cluster/down.sh

.PHONY: build
build: ## Build the operator
	$(CARGO) build -p celery-operator

.PHONY: generate
generate: ## Regenerate crds/, the chart's CRDs and deploy/celery-operator.yaml
	@scripts/generate.sh

.PHONY: check-generated
check-generated: ## Fail if a generated file differs from its source (CRDs from the types, deploy/ from the chart)
	@scripts/generate.sh --check

.PHONY: lint
lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: unit
unit: ## Unit tests (no cluster needed)
	$(CARGO) test --workspace --exclude celery-operator-e2e

.PHONY: fuzz
fuzz: ## Run each parser property test for FUZZ_SECONDS (default 600) and print a table
	@scripts/fuzz.sh $(FUZZ_SECONDS)

.PHONY: harness-check
harness-check: ## Tests of the harness's shell helpers (ports, cleanup traps)
	@e2e/common-selftest.sh

.PHONY: standalone
standalone: ## Unit tests from a copy of the tree with nothing beside it (as a fresh clone sees it)
	@scripts/standalone.sh

.PHONY: e2e
e2e: deps tools ## End-to-end tests on a fresh local control plane (brought up and down)
	e2e/run-e2e.sh $(E2E_ARGS)

.PHONY: test
test: ## Everything CI runs: deps, lint, check-generated, harness-check, standalone (unit), e2e; ends with a total
	@e2e/test.sh

.PHONY: demo
demo: deps ## Local demo on a real node (EXAMPLE=django-site: the example Django site)
	EXAMPLE=$(EXAMPLE) e2e/demo.sh
