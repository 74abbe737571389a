# One place for the project's commands. `make serve` and `make test` set up
# everything they need on a fresh machine (a virtualenv in .venv, plus the
# system tools the tests use), so they are the README's two commands.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# One stamp per set of extras installed: `make serve` needs the server's
# dependencies only, `make test` the test tools as well (.[test] includes
# .[server,postgres]). Each is redone when pyproject.toml changes.
SERVE_STAMP := $(VENV)/.installed-server-stamp
TEST_STAMP := $(VENV)/.installed-test-stamp

.PHONY: serve test install tools protos lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# What serving needs: the SDK and the [server] extra, no test tools.
$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[server]'
	touch $@

# Everything the tests, benchmarks and stub generation use.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[test]'
	touch $@

install: $(TEST_STAMP)

# System tools some tests drive for real (see .ci/install-tools.sh).
tools:
	bash .ci/install-tools.sh

# Start the service on an embedded LocalCluster sized to this machine.
serve: $(SERVE_STAMP)
	$(BIN)/dask-compute serve $(ARGS)

# The whole test suite, exactly as CI runs it.
test: $(TEST_STAMP) tools
	$(BIN)/pytest $(PYTEST_ARGS)

# Regenerate the checked-in stubs in client_sdk/_proto from protos/.
protos: $(TEST_STAMP)
	$(BIN)/python protos/gen_stubs.py

lint: $(TEST_STAMP)
	$(BIN)/buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(TEST_STAMP)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
