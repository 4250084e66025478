# The two commands a newcomer needs: `make up` and `make test`; `make test-fast` is the
# inner loop.
SHELL := /bin/bash
VENV := .venv/bin
PY_SOURCES := operator tests $(wildcard bench)
# The tiers that start nothing real: no control plane, libvirtd, network namespace, vcsim
# or built images (tests/conftest.py marks every test that uses one of their fixtures).
FAST := not (apiserver or libvirtd or netns or e2e or vcsim or images)

.PHONY: setup up down test test-fast lint

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
	KUBEVISOR_QUANTITY_BIN=$$(hack/quantity/build.sh) \
	KUBEVISOR_IMAGES=$$(hack/images/build.sh) $(VENV)/pytest

# The pure, handler and fake-driven tests only, without lint: about 70 s of CPU.
test-fast: setup
	$(VENV)/pytest -q -m "$(FAST)"
