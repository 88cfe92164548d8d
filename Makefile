# Two commands on a fresh machine: `make demo` and `make test`.  Each installs what it needs:
# a virtual environment with the package and its development tools (dev/: stand-ins, demo,
# benchmarks), and Debian's rabbitmq-server when it is missing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
GRIDBUS := $(VENV)/bin/gridbus
RABBITMQ_SERVER := /usr/lib/rabbitmq/bin/rabbitmq-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: setup rabbitmq postgresql openssl venv demo test test-fast bench dev-up dev-down clean

setup: rabbitmq venv

rabbitmq:
	@if [ ! -x $(RABBITMQ_SERVER) ]; then \
	  echo "installing rabbitmq-server from the system packages"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq rabbitmq-server >/dev/null; \
	fi
	@# Debian's package may start a system-wide node; gridbus never uses it (own node, own ports).

# the PostgreSQL trace-store tests start a throw-away server from Debian's binaries
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
	  echo "installing postgresql (server binaries) from the system packages"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql >/dev/null; \
	fi

# docker/make-secrets (its CA and certificates) runs in tests/unit/test_compose.py
openssl:
	@if ! command -v openssl >/dev/null; then \
	  echo "installing openssl from the system packages"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openssl >/dev/null; \
	fi

venv: $(VENV)/.installed

# the runtime (gridbus) and the development tools (gridbus-dev, dev/), both editable, in one
# resolution so gridbus-dev's `gridbus` requirement is this checkout's
$(VENV)/.installed: setup.cfg pyproject.toml dev/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' -e ./dev
	touch $@

demo: setup
	$(GRIDBUS) dev up
	$(GRIDBUS) demo

test: setup postgresql openssl
	$(GRIDBUS) routes test routes/
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup postgresql openssl
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(GRIDBUS) dev up
	$(GRIDBUS) bench ingest --reads 2000000

dev-up: setup
	$(GRIDBUS) dev up

dev-down:
	-$(GRIDBUS) dev down

clean: dev-down
	rm -rf $(VENV) .gridbus *.egg-info
