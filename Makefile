# Two commands set up a fresh machine: `make demo` (the main job, offline) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install lint format clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[test]'
	$(PY) tools/fetch_minilm.py
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m tgic_jax.demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow" tests
	$(PY) -m pytest -q -m slow tests

lint: $(STAMP)
	$(PY) -m ruff check tgic_jax tests configs benchmarks train.py eval.py

format: $(STAMP)
	$(PY) -m ruff format tgic_jax tests configs benchmarks train.py eval.py

clean:
	rm -rf $(VENV) .pytest_cache
