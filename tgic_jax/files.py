"""Writing files and folders all or nothing: the one place that knows how.

A file goes to a temporary name in the destination's folder and is renamed over the final
name only when complete (after fsync), so a full disk, a file-size limit or a kill never
leaves a truncated file under the final name. A URL (gs://, s3://) is written as one
object, which those stores publish only when the upload completes. A folder is built
beside its final name and renamed into place, any older one moved aside first.

Downloaded or shipped artifacts (the LPIPS weights, the MiniLM folder) are checked against
a pinned sha256 before they are read (`check_sha256`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from etils import epath


def write_atomic(
    path: str | os.PathLike, write: bytes | Callable[[object], None], overwrite: bool = True
) -> None:
    """Writes `path` all or nothing: `write` (bytes, or a function of a binary file object)
    goes to a temporary file in the same folder, renamed into place when complete.

    With `overwrite=False` an existing `path` is kept and FileExistsError raised (also when
    another process creates it meanwhile). On any failure the temporary file is removed and
    `path` is as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(write, (bytes, bytearray, memoryview)):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())  # the rename must not land before the data
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _link_no_clobber(tmp: str, path: Path) -> None:
    """Moves `tmp` to `path` unless `path` exists (a hard link is atomic about that)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} exists (use --force to overwrite)") from None
    except OSError:  # no hard links on this file system: check, then rename
        if path.exists():
            raise FileExistsError(f"{path} exists (use --force to overwrite)") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """`write_atomic` of UTF-8 text, also to a URL (an object store's upload is atomic)."""
    if "://" in os.fspath(path):
        epath.Path(os.fspath(path)).write_text(text)
    else:
        write_atomic(path, text.encode())


def replace_dir(staging: str | os.PathLike, path: str | os.PathLike) -> None:
    """Renames the complete folder `staging` to `path` (a sibling), replacing an older one.

    The older folder is renamed aside before the new one takes its name and removed after,
    so `path` never holds a mix of the two; a reader sees the old folder or the new one.
    """
    staging, path = epath.Path(os.fspath(staging)), epath.Path(os.fspath(path))
    if path.exists():
        old = path.parent / f".{path.name}.old"
        old.rmtree(missing_ok=True)
        path.rename(old)
        staging.rename(path)
        old.rmtree(missing_ok=True)
    else:
        staging.rename(path)


class IntegrityError(ValueError):
    """A file whose sha256 is not the pinned one (corrupted, truncated or replaced)."""


def sha256_of(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: str | os.PathLike, expected: str, fix: str = "") -> Path:
    """Returns `path` if its sha256 is `expected`; else raises IntegrityError in one line
    naming the file, both hashes and `fix` (what to do about it)."""
    got = sha256_of(path)
    if got != expected:
        note = f"; {fix}" if fix else ""
        raise IntegrityError(f"{path}: sha256 {got}, expected {expected}{note}")
    return Path(path)
