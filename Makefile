# Two commands: `make run` (the portal, embedded default) and `make test` (the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
# Tests run on PostgreSQL with a Redis broker, as in CI; override either on the command line. The worker
# tests purge their broker, so the suite keeps to Redis databases of its own (14, and 15 for the cache),
# never the 0 a local stack uses.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/smartpass
TEST_BROKER_URL ?= redis://127.0.0.1:6379/14

.PHONY: run test lint install bench

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# --no-compile: Python compiles the modules a run imports, on first import; compiling every installed module
	# up front took 41 of the install's 67 s, most of it for modules nothing imports.
	$(PY) -m pip install -q --no-compile -r requirements-dev.txt
	touch $@

run: install
	bash scripts/run-dev.sh

# The quick tests on two pytest-xdist processes, then the slow ones in one (scripts/test.sh says why).
test: install
	$(if $(findstring not browser,$(PYTEST_ARGS))$(findstring not slow,$(PYTEST_ARGS)),,bash scripts/ensure-chromium.sh)
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$(TEST_BROKER_URL)} \
		PYTHON=$(PY) bash scripts/test.sh $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PY) bench/sync.py
