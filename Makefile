# Two commands set up a fresh machine: `make demo` (the main job, offline) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SOURCES := tgic_jax tests configs benchmarks tools train.py eval.py

.PHONY: demo test install check lint format clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[test]'
	$(PY) tools/fetch_minilm.py
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m tgic_jax.cli.demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow" tests
	$(PY) -m pytest -q -m slow tests

# What CI checks before the tests: the formatter would change nothing, the linter finds nothing.
check: $(STAMP)
	$(PY) -m ruff format --check $(SOURCES)
	$(PY) -m ruff check $(SOURCES)

lint: $(STAMP)
	$(PY) -m ruff check $(SOURCES)

format: $(STAMP)
	$(PY) -m ruff format $(SOURCES)

clean:
	rm -rf $(VENV) .pytest_cache
