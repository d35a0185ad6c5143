# The commands of the README: `make run`, `make test` and `make soak`.
# Both create .venv on first use and install the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint soak venv clean proto etcd browser

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

$(VENV): $(STAMP)

run: $(STAMP)
	$(BIN)/coordinator demo

test: lint etcd browser
	PATH="$(CURDIR)/$(VENV)/etcd/usr/bin:$$PATH" $(BIN)/python -m pytest

# ruff (lint, then the format check), then the import layers of pyproject.toml.
# import-linter reads the package from disk, and in this checkout the folders
# become coordinator.* only through the install's mapping (setup.py), so it
# reads a copy laid out as an installed wheel would be.
LAYOUT := $(VENV)/layout
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@rm -rf $(LAYOUT) && $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --no-compile --target $(LAYOUT) . && rm -rf build
	cd $(LAYOUT) && PYTHONPATH=$(CURDIR)/$(LAYOUT) $(CURDIR)/$(BIN)/lint-imports --no-cache $(CURDIR)/pyproject.toml

# `make soak`: SOAK_SEEDS simulated seeds on every core (coordinator simulate
# --jobs defaults to one worker per core), then SOAK_CHAOS_S seconds of
# `coordinator chaos` with every fault (partitions need root), then a table:
# part, what ran, failures, time, time per seed. Both parts always run; it
# fails if either failed. Everything lands in $(SOAK_DIR)/ (the simulate
# summary in $(SOAK_DIR)/simulate.txt, the table in $(SOAK_DIR)/soak.txt).
SOAK_SEEDS ?= 0-9999
SOAK_CHAOS_S ?= 600
SOAK_DIR := .soak
soak: $(STAMP)
	@rm -rf $(SOAK_DIR); mkdir -p $(SOAK_DIR); \
	started=$$(date +%s); \
	$(BIN)/coordinator simulate --seeds $(SOAK_SEEDS) --summary $(SOAK_DIR)/simulate.txt; sim_rc=$$?; \
	sim_s=$$(( $$(date +%s) - started )); \
	faults=$$($(BIN)/python -c 'from coordinator.chaos.nemesis import FAULTS; print(",".join(FAULTS))'); \
	started=$$(date +%s); \
	{ $(BIN)/coordinator chaos --duration $(SOAK_CHAOS_S) --faults $$faults --report $(SOAK_DIR)/chaos.json; \
	  echo $$? > $(SOAK_DIR)/chaos.rc; } 2>&1 | tee $(SOAK_DIR)/chaos.txt; \
	chaos_rc=$$(cat $(SOAK_DIR)/chaos.rc 2>/dev/null || echo 1); chaos_s=$$(( $$(date +%s) - started )); \
	summary() { sed -n "s/^$$1   *//p" $(SOAK_DIR)/simulate.txt 2>/dev/null; }; \
	sim_failures=$$(summary failed); [ $$sim_rc -le 1 ] || sim_failures="$${sim_failures:-?} (exit $$sim_rc)"; \
	sim_ran="coordinator simulate --seeds $(SOAK_SEEDS)$$(summary 'seeds run' | sed -n 's/.*, \([0-9]* jobs\)$$/ (\1)/p')"; \
	sim_per_seed=$$(summary 'per seed' | sed 's/ (mean real time of a run)/ real/; s/ of wall time/ wall/'); \
	chaos_failures=$$(grep -cE '^[a-z_]+ +FAIL ' $(SOAK_DIR)/chaos.txt); \
	[ $$chaos_rc -eq 0 ] || [ $$chaos_failures -gt 0 ] || chaos_failures="exit $$chaos_rc"; \
	chaos_ran="coordinator chaos --duration $(SOAK_CHAOS_S) --faults $$faults (seed $$(sed -n 's/^chaos: seed \([0-9]*\),.*/\1/p' $(SOAK_DIR)/chaos.txt))"; \
	width=$$(( $${#sim_ran} > $${#chaos_ran} ? $${#sim_ran} : $${#chaos_ran} )); \
	row() { printf "%-8s  %-$${width}s  %-10s  %-6s  %s\n" "$$@"; }; \
	{ echo; row part "what ran" failures time "time per seed"; \
	  row simulate "$$sim_ran" "$$sim_failures" "$${sim_s} s" "$$sim_per_seed"; \
	  row chaos "$$chaos_ran" "$$chaos_failures" "$${chaos_s} s" "-"; } | tee $(SOAK_DIR)/soak.txt; \
	[ $$sim_rc -eq 0 ] && [ $$chaos_rc -eq 0 ]

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
	$(BIN)/python -m coordinator.client.grpc_gen.regen

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# The dashboard's browser tests (tests/integration/test_dashboard.py) drive
# Debian's headless Chromium through chromedriver. Where they are missing and
# this runs as root, install them (apt-get update first only if the plain
# install fails); otherwise say so: those tests then skip, saying why.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    timeout 900 apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	      { timeout 300 apt-get update -q >/dev/null 2>&1; \
	        timeout 900 apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } || \
	      echo "could not install chromium: the browser tests will skip"; \
	  else \
	    echo "chromium or chromedriver is missing and make test is not root: the browser tests will skip"; \
	  fi; \
	fi
