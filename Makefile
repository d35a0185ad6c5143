# The two commands of the README: `make run` and `make test`.
# Both create .venv on first use and install the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test venv clean proto etcd

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

$(VENV): $(STAMP)

run: $(STAMP)
	$(BIN)/coordinator demo

test: $(STAMP) etcd
	PATH="$(CURDIR)/$(VENV)/etcd/usr/bin:$$PATH" $(BIN)/python -m pytest

# The etcd baseline of `coordinator bench` (and its test) needs Debian's
# etcd-server. Where it is not installed, unpack the package into the venv -
# from the apt cache, else downloaded from the mirror - without root and
# without touching the system. Best effort: without it that test skips.
ETCD := $(VENV)/etcd/usr/bin/etcd
etcd: $(STAMP)
	@if ! command -v etcd >/dev/null && [ ! -x /usr/bin/etcd ] && [ ! -x $(ETCD) ]; then \
	  deb=$$(ls /var/cache/apt/archives/etcd-server_*.deb 2>/dev/null | head -n 1); \
	  if [ -z "$$deb" ]; then \
	    (cd $(VENV) && timeout 120 apt-get download etcd-server >/dev/null 2>&1); \
	    deb=$$(ls $(VENV)/etcd-server_*.deb 2>/dev/null | head -n 1); \
	  fi; \
	  if [ -n "$$deb" ] && dpkg -x "$$deb" $(VENV)/etcd; then echo "etcd baseline: unpacked $$deb into $(VENV)/etcd"; \
	  else echo "etcd baseline: Debian etcd-server not available here; its test will skip"; fi; \
	fi

# Regenerate client/grpc_gen from proto/coordinator.proto (a test checks it is current).
proto: $(STAMP)
	$(BIN)/python -m client.grpc_gen.regen

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
