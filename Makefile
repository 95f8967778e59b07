# brainmatch: every target sets up .venv from the lock file first (only when it is
# missing or older than requirements.lock / pyproject.toml), then acts.
PYTHON ?= python3.11
VENV   := .venv
STAMP  := $(VENV)/.installed
KERNEL := $(VENV)/.kernel
BIN    := $(VENV)/bin
DEMO_OUT ?= brainmatch-demo
PYTEST_ARGS ?=

.PHONY: all setup demo test test-web serve bench lint clean

all: test

setup: $(KERNEL)

$(STAMP): requirements.lock pyproject.toml setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (brainmatch needs Python 3.11)"; exit 1; }
	@rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==26.3
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@touch $(STAMP)

# the C kernel (src/brainmatch/features/_regionsum.c) is built in place by the editable
# install; rebuild it when its source changes
$(KERNEL): $(STAMP) src/brainmatch/features/_regionsum.c
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(KERNEL)

demo: $(KERNEL)
	$(BIN)/brainmatch demo --out $(DEMO_OUT)

# two workers (2-core machines); work stealing balances tests from 0.01 s to a minute
test: $(KERNEL)
	$(BIN)/python -m pytest -n 2 --dist worksteal -m "not bench" $(PYTEST_ARGS)

# the web service's tests only (browser, security, load, PostgreSQL); `make test` runs them too
test-web: $(KERNEL)
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests/test_web.py tests/test_web_security.py \
		tests/test_web_server.py tests/test_web_load.py tests/test_web_e2e.py tests/test_web_postgres.py

# the web service on http://127.0.0.1:8000/ (SQLite in ~/.local/share/brainmatch/web)
serve: $(KERNEL)
	$(BIN)/brainmatch serve

bench: $(KERNEL)
	$(BIN)/python benchmarks/run.py
	$(BIN)/python -m pytest -n 2 -m bench $(PYTEST_ARGS)

lint: $(KERNEL)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache build src/brainmatch/features/*.so
