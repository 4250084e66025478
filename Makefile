# The two commands a newcomer needs: `make up` and `make test`.
SHELL := /bin/bash
VENV := .venv/bin
PY_SOURCES := operator tests $(wildcard bench)

.PHONY: setup up down test lint

setup:
	@hack/setup.sh >/dev/null

up: setup
	@$(VENV)/kubevisor dev up

down:
	@$(VENV)/kubevisor dev down

lint: setup
	$(VENV)/ruff check $(PY_SOURCES)
	$(VENV)/ruff format --check $(PY_SOURCES)
	$(VENV)/mypy
	$(VENV)/lint-imports

test: lint
	KUBEVISOR_CONTROLPLANE_BIN=$$(hack/controlplane/build.sh) \
	KUBEVISOR_VCSIM_BIN=$$(hack/vcsim/build.sh) \
	KUBEVISOR_QUANTITY_BIN=$$(hack/quantity/build.sh) $(VENV)/pytest
