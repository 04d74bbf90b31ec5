# The two commands of the README: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What is installed comes from the locks (exact versions with their hashes), never from pyproject's
# ranges: requirements/service.lock is what the service needs (`make demo`, the container),
# requirements/dev.lock adds the test toolchain (`make test`, CI). `make lock` writes both.
SERVICE_LOCK := requirements/service.lock
DEV_LOCK := requirements/dev.lock
SERVICE_STAMP := $(VENV)/.installed-service
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check
# The lock tool, in a venv of its own so that it never enters the locks it writes.
UV_VERSION := 0.13.8
LOCK_TOOL := .lock-tool

CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint typecheck unit clean bench browser strace postgresql lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The project itself goes in last, editable and without dependencies: every dependency is the lock's.
$(SERVICE_STAMP): $(SERVICE_LOCK) pyproject.toml | $(BIN)/python
	$(PIP) install --quiet --require-hashes -r $(SERVICE_LOCK)
	$(PIP) install --quiet --no-deps -e .
	@touch $@

# The dev lock holds every package of the service lock at the same version, so it installs both.
$(STAMP): $(DEV_LOCK) pyproject.toml | $(BIN)/python
	$(PIP) install --quiet --require-hashes -r $(DEV_LOCK)
	$(PIP) install --quiet --no-deps -e .
	@touch $@ $(SERVICE_STAMP)

# Resolve pyproject's ranges again into both locks. A pin already in a lock is kept while it still
# satisfies the ranges (so a new dependency changes only what it must); `make lock UPGRADE=1` moves
# every package to its newest allowed version. --universal writes environment markers rather than
# resolving for this machine alone, so that the locks serve any OS and Python ≥ 3.11.
lock:
	@test -x $(LOCK_TOOL)/bin/uv || { $(PYTHON) -m venv $(LOCK_TOOL) && $(LOCK_TOOL)/bin/pip install --quiet uv==$(UV_VERSION); }
	$(LOCK_TOOL)/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	  --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade) pyproject.toml --extra dev -o $(DEV_LOCK)
	$(LOCK_TOOL)/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	  --custom-compile-command 'make lock' -c $(DEV_LOCK) pyproject.toml -o $(SERVICE_LOCK)

demo: $(SERVICE_STAMP)
	$(BIN)/jobhook demo

# The dashboard's tests drive Debian's chromium (never a downloaded browser build).
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the dashboard tests…"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "NOTE: $(CHROMIUM) is missing and cannot be installed here (needs root and apt-get):"; \
	    echo "      the dashboard's browser tests will be skipped. Install Debian's chromium to run them."; \
	  fi; \
	fi

# The read-only storage fault is injected with strace (tests/acceptance/test_storage_faults.py).
strace:
	@if ! command -v strace >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's strace for the storage fault tests…"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null; \
	  else \
	    echo "NOTE: strace is missing and cannot be installed here (needs root and apt-get):"; \
	    echo "      the read-only storage fault test will be skipped. Install strace to run it."; \
	  fi; \
	fi

# The suite runs on both engines: the PostgreSQL half starts Debian's server in a temporary directory.
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's postgresql for the PostgreSQL half of the suite…"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else \
	    echo "NOTE: PostgreSQL is missing and cannot be installed here (needs root and apt-get):"; \
	    echo "      the suite runs on SQLite only. Install Debian's postgresql to run it on both engines."; \
	  fi; \
	fi

# Most tests wait (on sockets, timers, child processes) rather than compute: more workers than cores
# pay off. worksteal: a worker that is done takes tests queued for one still busy with a long test.
TEST_WORKERS ?= 4

test: $(STAMP) browser strace postgresql
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

# Performance is measured, never asserted: the service against a bare Starlette app, same run, same load.
# `make bench PART=openloop` (or PART=callbacks,api, QUICK=1) runs some phases only.
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { echo "installing Debian's wrk for the load…"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }; } || \
	  echo "NOTE: wrk is missing: the bench uses its own asyncio load generator"
	$(BIN)/python bench/run.py $(if $(PART),--only $(PART)) $(if $(QUICK),--quick)

unit: $(STAMP)
	$(BIN)/pytest tests/unit

clean:
	rm -rf $(VENV) $(LOCK_TOOL) .pytest_cache .mypy_cache .ruff_cache jobhook-demo
