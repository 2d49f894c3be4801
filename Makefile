# Two commands set up a fresh machine: `make demo` (the main job, offline) and `make test`.
# The venv's Python: >= 3.12, found by tools/find_python.sh (PYTHON=... to choose one).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BASE := $(VENV)/.installed-base
SOURCES := tgic_jax tests configs benchmarks tools train.py eval.py

.PHONY: demo test test-fast install check lint format clean

# The demo needs the package alone; the tests add pytest, ruff, TensorFlow (TFDS input) and
# gcsfs with a GCS emulator (tests/test_gcs_emulator.py).
$(BASE): pyproject.toml requirements.lock
	@# A venv of an older Python (an earlier checkout's) is replaced, not patched.
	@if [ -x $(PY) ] && ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] < (3, 12))'; then \
		echo "replacing $(VENV) (Python < 3.12)"; rm -rf $(VENV); fi
	@test -x $(PY) || { python=$$(sh tools/find_python.sh) && echo "creating $(VENV) with $$python" \
		&& $$python -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e .
	$(PY) tools/fetch_minilm.py
	touch $(BASE)

$(STAMP): $(BASE)
	$(PY) -m pip install -q -c requirements.lock -e '.[test,tfds,gcs]'
	touch $(STAMP)

install: $(STAMP)

demo: $(BASE)
	$(PY) -m tgic_jax.cli.demo

# One run in two workers, the slow tests first (tests/conftest.py), handed out one at a time
# (xdist's default hands each worker a run of 40 at once: all the slow ones to one worker);
# `make test-fast` for a quick pass while working: the same, without the tests marked slow.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist load --maxschedchunk 1 --durations=15 tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist load --maxschedchunk 1 --durations=15 -m "not slow" tests

# What CI checks before the tests: the formatter would change nothing, the linter finds nothing,
# and no module imports from a layer above its own (tools/check_layers.py).
check: $(STAMP)
	$(PY) -m ruff format --check $(SOURCES)
	$(PY) -m ruff check $(SOURCES)
	$(PY) tools/check_layers.py

lint: $(STAMP)
	$(PY) -m ruff check $(SOURCES)

format: $(STAMP)
	$(PY) -m ruff format $(SOURCES)

clean:
	rm -rf $(VENV) .venv-transformers5 .pytest_cache .cache/jax-tests
