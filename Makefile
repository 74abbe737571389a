# One place for the project's commands. `make serve` and `make test` set up
# everything they need on a fresh machine (a virtualenv in .venv, plus the
# system tools the tests use), so they are the README's two commands.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: serve test install tools protos lint bench clean

# The virtualenv, rebuilt when the project's dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	touch $@

install: $(STAMP)

# System tools some tests drive for real (see .ci/install-tools.sh).
tools:
	bash .ci/install-tools.sh

# Start the service on an embedded LocalCluster sized to this machine.
serve: $(STAMP)
	$(BIN)/dask-compute serve $(ARGS)

# The whole test suite, exactly as CI runs it.
test: $(STAMP) tools
	$(BIN)/pytest $(PYTEST_ARGS)

# Regenerate the checked-in stubs in client_sdk/_proto from protos/.
protos: $(STAMP)
	$(BIN)/python protos/gen_stubs.py

lint: $(STAMP)
	$(BIN)/buf lint

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
