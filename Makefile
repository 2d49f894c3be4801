# Two commands set up a fresh machine: `make demo` (the main job, offline) and `make test`.
# The venv's Python: >= 3.12, found by tools/find_python.sh (PYTHON=... to choose one).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SOURCES := tgic_jax tests configs benchmarks tools train.py eval.py

.PHONY: demo test install check lint format clean

$(STAMP): pyproject.toml requirements.lock
	@# A venv of an older Python (an earlier checkout's) is replaced, not patched.
	@if [ -x $(PY) ] && ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] < (3, 12))'; then \
		echo "replacing $(VENV) (Python < 3.12)"; rm -rf $(VENV); fi
	@test -x $(PY) || { python=$$(sh tools/find_python.sh) && echo "creating $(VENV) with $$python" \
		&& $$python -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[test,tfds]'
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
