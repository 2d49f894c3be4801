"""Object-store URLs (gs://): which package reaches them, checked before a command does work.

etils.epath reaches gs:// through gcsfs (fsspec) when TensorFlow is absent, and nothing
else in the install brings gcsfs: without it a run fails deep in its first write with a
46-line traceback. `check_urls` turns that into one line naming the extra to install,
before anything is compiled or written.

Whatever else is installed, gs:// goes through gcsfs here: with TensorFlow present etils
would pick TensorFlow's GCS file system (~3 s to import, its own CUDA stack, and it does not
read STORAGE_EMULATOR_HOST, so an emulator test would reach the real service). Setting
EPATH_USE_TF=true keeps etils' own choice.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable

# scheme -> (module that serves it, what to install)
BACKENDS = {
    "gs": ("gcsfs", "pip install 'tgic_jax[gcs]'"),
    "s3": ("s3fs", "pip install s3fs"),
}


class MissingStorageBackend(OSError):
    """A URL whose file system package is not installed (one line: what to install)."""


def scheme_of(path: object) -> str | None:
    """'gs' of 'gs://bucket/run'; None for a local path or anything that is not a path."""
    if not isinstance(path, str | os.PathLike):
        return None
    text = os.fspath(path)
    if not isinstance(text, str) or "://" not in text:
        return None
    scheme = text.split("://", 1)[0].lower()
    return None if scheme == "file" else scheme


def check_url(path: object) -> None:
    """Raises MissingStorageBackend when `path` is a URL whose package is not installed."""
    scheme = scheme_of(path)
    if scheme not in BACKENDS:
        return
    module, install = BACKENDS[scheme]
    if os.environ.get("EPATH_USE_TF", "").lower() not in ("true", "yes", "t", "1"):
        # Before etils decides (it caches the choice): gcsfs, not TensorFlow's GCS.
        os.environ.setdefault("EPATH_USE_TF", "false")
    elif importlib.util.find_spec("tensorflow") is not None:
        return  # the user asked for TensorFlow's file system, which needs no gcsfs
    if importlib.util.find_spec(module) is None:
        raise MissingStorageBackend(
            f"{os.fspath(path)}: {scheme}:// paths need the {module} package: {install}"
        )


def check_urls(values: Iterable[object]) -> None:
    """`check_url` of each value (lists, tuples and dicts looked into): the first missing one
    raises."""
    for value in values:
        if isinstance(value, dict):
            check_urls(value.values())
        elif isinstance(value, list | tuple):
            check_urls(value)
        else:
            check_url(value)
