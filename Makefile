# Two commands do everything: `make demo` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
NODE_STAMP := node_modules/.installed-$(shell cksum package-lock.json | cut -d' ' -f1)

.PHONY: demo test lint install system vendor dist clean

demo: install
	$(BIN)/edgeplane dev demo

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

install: system $(STAMP) $(NODE_STAMP)

system:
	@PYTHON=$(PYTHON) ./scripts/bootstrap-system.sh

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
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

# The Lambda bundle needs the wire contract: Chalice ships vendor/ as it is.
vendor:
	mkdir -p vendor/edgeplane
	cp edgeplane/__init__.py edgeplane/protocol.py vendor/edgeplane/

clean:
	rm -rf $(VENV) vendor build dist *.egg-info node_modules
