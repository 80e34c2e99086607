# registry-operator developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The operator image `make bundle` writes into the install manifests.
IMAGE ?= ghcr.io/registry-operator/registry-operator:0.1.0
DIST ?= dist

.PHONY: help test unit e2e e2e-docker-auth lint fmt deps venv run manifests bench image kind-e2e bundle clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP) ## create .venv with the operator and dev tools

deps: ## build/cache the real control plane, registry, promtool and skopeo (~/.cache/registry-operator)
	hack/build-deps.sh

test: venv deps lint ## everything CI runs: lint, unit tests, e2e tests on a real control plane
	$(BIN)/python -m pytest unit e2e $(PYTEST_ARGS)

unit: venv ## fast tests, no cluster (needs busybox for the ext_auth tests, promtool for the alert tests)
	hack/build-deps.sh debian-tools promtool
	$(BIN)/python -m pytest unit $(PYTEST_ARGS)

e2e: venv deps ## tests against a real kube-apiserver + etcd (+ registry, skopeo)
	$(BIN)/python -m pytest e2e $(PYTEST_ARGS)

DOCKER_AUTH_BIN ?=
e2e-docker-auth: venv deps ## the real docker_auth lane + login bench (needs DOCKER_AUTH_BIN=/path/to/auth_server)
	@test -n "$(DOCKER_AUTH_BIN)" || { echo "set DOCKER_AUTH_BIN=/path/to/docker_auth-1.14/auth_server (see README)"; exit 2; }
	DOCKER_AUTH_BIN=$(abspath $(DOCKER_AUTH_BIN)) $(BIN)/python -m pytest e2e/docker_auth -m docker_auth -s $(PYTEST_ARGS)
	DOCKER_AUTH_BIN=$(abspath $(DOCKER_AUTH_BIN)) $(BIN)/python hack/bench/docker_auth_login.py

lint: venv ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: venv ## format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

run: venv deps ## local control plane + the operator; Ctrl-C stops everything
	$(BIN)/registry-operator dev

manifests: venv ## regenerate manifests/crds from the API types
	$(BIN)/registry-operator manifests --output-dir manifests/crds

bench: venv deps ## benchmarks (print figures, no pass/fail)
	@for b in hack/bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

bundle: ## dist/install.yaml (CRDs + cluster-wide) and dist/install-namespaced.yaml, image from IMAGE=
	IMAGE='$(IMAGE)' DIST='$(DIST)' $(if $(KUBECTL),KUBECTL='$(KUBECTL)') hack/bundle.sh

image: ## build the operator image (needs Docker; not available on the CI machines)
	docker build -t registry-operator:dev .

kind-e2e: ## install into a kind cluster and run the seed's examples (needs Docker + kind)
	hack/kind-e2e.sh

clean: ## remove the venv and caches in the clone (the binary cache stays)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .dev
