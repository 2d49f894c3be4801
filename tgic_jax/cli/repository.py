"""The source checkout's own files (data/kodak, configs/): repository features, not package data.

The package never reaches outside itself on its own; the commands that offer these defaults
look for them here, in the current folder first, then beside an editable install, and say
in one line what to pass instead when they are missing (a `pip install .` run elsewhere).
"""

from __future__ import annotations

from pathlib import Path

import tgic_jax


class NotInRepository(FileNotFoundError):
    """A repository feature was asked for outside a checkout of the repository."""


def repository_path(relative: str, instead: str) -> Path:
    """`relative` (e.g. "data/kodak") in the checkout; NotInRepository naming `instead` if not."""
    candidates = [Path.cwd(), Path(tgic_jax.__file__).resolve().parents[1]]
    for root in candidates:
        if (root / relative).exists():
            return root / relative
    raise NotInRepository(
        f"{relative} is part of the tgic_jax repository, not of the installed package, and is "
        f"not in {candidates[0]} or beside the package: run from a clone, or {instead}"
    )


def kodak_dir() -> Path:
    """The checkout's data/kodak (24 images + the authors' OFA captions)."""
    return repository_path("data/kodak/captions.json", "pass --images DIR").parent
