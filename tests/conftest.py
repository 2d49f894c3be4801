"""Shared test fixtures: the repo root, the reference fixture (skips when ../shared is absent)."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

REPO = Path(__file__).resolve().parents[1]
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
