# The two commands of the README: `make run` and `make test`.
# Both create .venv on first use and install the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test venv clean proto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

$(VENV): $(STAMP)

run: $(STAMP)
	$(BIN)/coordinator demo

test: $(STAMP)
	$(BIN)/python -m pytest

# Regenerate client/grpc_gen from proto/coordinator.proto (a test checks it is current).
proto: $(STAMP)
	$(BIN)/python -m client.grpc_gen.regen

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
