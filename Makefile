# OpenHA: `make setup`, `make run`, `make test`, `make fuzz`, `make lint`, `make conformance`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
APT_PACKAGES := haproxy keepalived nftables rsyslog rsyslog-openssl iproute2 iputils-arping procps psmisc socat curl wrk postgresql prometheus python3-venv python3-dev
STAMP := $(VENV)/.installed

OCTAVIA_VENV ?= .venv-octavia
OCTAVIA_STAMP := $(OCTAVIA_VENV)/.installed
# Keystone, tempest and octavia-tempest-plugin pin their own dependencies: a venv of their own.
KEYSTONE_VENV ?= .venv-keystone
# barbican-tempest-plugin declares `[service_available] barbican`, without which the
# octavia plugin skips its TERMINATED_HTTPS tests (OpenHA's certificate store is the Barbican).
KEYSTONE_PACKAGES := 'keystone>=27,<31' 'tempest>=40,<48' 'octavia-tempest-plugin>=2.8,<4' \
  'python-openstackclient>=6,<11' 'python-octaviaclient>=3,<4' 'barbican-tempest-plugin>=4,<5'
# Named after the package list: a venv made from an older list is completed.
KEYSTONE_STAMP := $(KEYSTONE_VENV)/.installed-$(shell echo "$(KEYSTONE_PACKAGES)" | md5sum | cut -c1-8)
# A real Barbican (simple_crypto, SQLite) for the key_manager = barbican test.
BARBICAN_VENV ?= .venv-barbican
BARBICAN_STAMP := $(BARBICAN_VENV)/.installed

.PHONY: setup run test test-unit fuzz lint format bench clean migration conformance conformance-octavia keystone-venv barbican-venv soak

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi; \
	  id openha-lb >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent \
	    --shell /usr/sbin/nologin --user-group openha-lb; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: setup
	$(VENV)/bin/openha up

# Two workers, one per core: each runs one lane of the data-plane tests in order, then
# joins the unit and API tests (tests/conftest.py groups them). A third worker would
# overcommit the cores and stretch the tests that measure time on the wire.
test: setup $(KEYSTONE_STAMP) $(BARBICAN_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=30 tests

test-unit: setup
	$(PY) -m pytest -q -n 2 tests/unit tests/api

# The fuzz of every operation, longer than in `make test` (FUZZ_EXAMPLES cases each, and
# schemathesis' coverage phase for reads too).
FUZZ_EXAMPLES ?= 200
fuzz: setup
	OPENHA_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) OPENHA_FUZZ_COVERAGE=all $(PY) -m pytest -q -m fuzz tests/api/test_fuzz.py

lint: setup
	$(VENV)/bin/ruff check src tests bench conformance
	$(VENV)/bin/ruff format --check src tests bench conformance
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format src tests bench conformance
	$(VENV)/bin/ruff check --fix src tests bench conformance

# The real Octavia 19 in a virtualenv of its own, for the differential check only.
$(OCTAVIA_STAMP):
	test -x $(OCTAVIA_VENV)/bin/python || $(PYTHON) -m venv $(OCTAVIA_VENV)
	$(OCTAVIA_VENV)/bin/python -m pip install -q -U pip
	$(OCTAVIA_VENV)/bin/python -m pip install -q 'octavia>=19,<20'
	touch $(OCTAVIA_STAMP)

keystone-venv: $(KEYSTONE_STAMP)
$(KEYSTONE_STAMP):
	test -x $(KEYSTONE_VENV)/bin/python || $(PYTHON) -m venv $(KEYSTONE_VENV)
	$(KEYSTONE_VENV)/bin/python -m pip install -q -U pip
	$(KEYSTONE_VENV)/bin/python -m pip install -q $(KEYSTONE_PACKAGES)
	touch $(KEYSTONE_STAMP)

barbican-venv: $(BARBICAN_STAMP)
$(BARBICAN_STAMP):
	test -x $(BARBICAN_VENV)/bin/python || $(PYTHON) -m venv $(BARBICAN_VENV)
	$(BARBICAN_VENV)/bin/python -m pip install -q -U pip
	$(BARBICAN_VENV)/bin/python -m pip install -q 'barbican>=20,<24'
	touch $(BARBICAN_STAMP)

# Not part of `make test`: octavia-tempest-plugin's API tests against OpenHA in Keystone
# mode behind a real Keystone (conformance/tempest.py), then the request-by-request
# comparison with Octavia 19 (conformance-octavia).
TEMPEST_REGEX ?= octavia_tempest_plugin.tests.api.v2
conformance: setup $(KEYSTONE_STAMP) conformance-octavia
	$(PY) -m conformance.tempest --regex '$(TEMPEST_REGEX)'

# Sends one scenario to Octavia and to OpenHA, compares.
conformance-octavia: setup $(OCTAVIA_STAMP)
	$(PY) -m conformance.run

# Not part of `make test` (which runs a 25 s version): random SIGKILLs of every process
# under a random workload for SOAK_SECONDS, then the convergence checks (tests/integration/chaos.py).
SOAK_SECONDS ?= 600
SOAK_AGENTS ?= 3
soak: setup
	cd tests/integration && $(abspath $(PY)) chaos.py --duration $(SOAK_SECONDS) --agents $(SOAK_AGENTS) \
	  $(if $(SEED),--seed $(SEED))

bench: setup
	$(PY) bench/run_all.py

# Regenerate the schema migration from the models (before the first release only).
migration: setup
	rm -f /tmp/openha-migration.db
	$(PY) -c "from openha.db import alembic_config; from alembic import command; \
	  command.revision(alembic_config('sqlite:////tmp/openha-migration.db'), \
	  message='$(or $(MSG),schema change)', autogenerate=True)"

clean:
	rm -rf $(VENV) $(OCTAVIA_VENV) $(KEYSTONE_VENV) $(BARBICAN_VENV) var .pytest_cache .ruff_cache
