# The two commands of the README: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint typecheck unit clean bench browser strace postgresql

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
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

test: $(STAMP) browser strace postgresql
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy
	$(BIN)/pytest

# Performance is measured, never asserted: the service against a bare Starlette app, same run, same load.
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { echo "installing Debian's wrk for the load…"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }; } || \
	  echo "NOTE: wrk is missing: the bench uses its own asyncio load generator"
	$(BIN)/python bench/run.py

unit: $(STAMP)
	$(BIN)/pytest tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache jobhook-demo
