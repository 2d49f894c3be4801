"""Shared test fixtures: the repo root, the reference fixture (skips when ../shared is absent)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Compiled XLA programs persist across every process of one `make test`: the two pytest
# workers and the train/CLI subprocesses they start (they inherit this environment).
# The tiny train step alone is compiled by a dozen processes, ~70 s each on 2 cores; a cache
# hit loads the same executable, so results are bit for bit those of a fresh compile.
# Only programs that took >= 1 s to compile are kept (JAX's default): caching every eager
# op too wrote ~3,600 entries for one test and doubled its time. A size limit turns on
# JAX's file lock around reads and writes (two workers share the folder).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax-tests"))
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))

SHARED = REPO.parent / "shared"
KODAK = REPO / "data" / "kodak"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    d = SHARED / "reference" / "parity"
    if not (d / "io.npz").is_file():
        pytest.skip("../shared/reference/parity is absent")
    return d


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
    if not (KODAK / "captions.json").is_file():
        pytest.skip("data/kodak is absent")
    return KODAK


def pytest_collection_modifyitems(config, items):
    """The slow tests first: two workers start the long ones early, the short ones fill in."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
