# Two commands do everything: `make demo` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
NODE_STAMP := node_modules/.installed-$(shell cksum package-lock.json | cut -d' ' -f1)

.PHONY: demo test lint install system infra openapi vendor dist clean

demo: install
	$(BIN)/edgeplane dev demo

# tests/test_infra.py reads the stacks `make infra` just synthesized. Two workers, one test
# file each at a time: a file's tests share its module fixtures (a stack, a simulator).
test: install infra
	EDGEPLANE_CDK_OUT=$(CURDIR)/infra/cdk.out $(BIN)/pytest -n 2 --dist loadfile

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo
	$(BIN)/python -m chalicelib.api.openapi docs/openapi.json --check

# The API's OpenAPI document, written again from the route table and the models.
openapi: install
	$(BIN)/python -m chalicelib.api.openapi docs/openapi.json

install: system $(STAMP) $(NODE_STAMP)

system:
	@PYTHON=$(PYTHON) ./scripts/bootstrap-system.sh

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
	$(BIN)/edge-gateway lean-bytecode  # the site gateway's -OO bytecode (edge_gateway/bytecode.py)
	rm -f $(VENV)/.installed-*
	touch $@

# The local stack's store, dynalite (node), as package-lock.json pins it. `npm ci` starts
# from an empty node_modules/, so an older stamp goes with it.
$(NODE_STAMP): | system
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# dist/: the site gateway's wheel (the gateway and the wire contract only) and the
# workspace's wheel (everything, for operators and developers).
dist: install
	$(BIN)/python scripts/build_dists.py

# The AWS deployment (infra/): synthesize every stage into infra/cdk.out/ offline (the
# Lambda bundle is built on the way, wire contract included), then cdk-nag and cfn-lint.
infra: install
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 $(BIN)/python -m infra

# For `chalice deploy` by hand only: the CDK app builds its own bundle (infra/bundle.py).
vendor:
	mkdir -p vendor/edgeplane
	cp edgeplane/__init__.py edgeplane/protocol.py edgeplane/windows.py vendor/edgeplane/

clean:
	rm -rf $(VENV) vendor build dist *.egg-info node_modules infra/build infra/cdk.out
