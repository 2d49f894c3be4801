r"""Peak memory of decoding with the paper-size model, per pixel (sets `codec.MAX_PIXELS`).

    python benchmarks/decode_memory.py [--sizes 512 1024 2048]

For each size S, one process encodes an S x S synthetic image and another decodes the file;
the decoder's peak resident set size (ru_maxrss) is fitted as a + b x pixels. Random but
well-scaled weights (benchmarks/codec.py): memory does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {bench!r})
import numpy as np
from codec import random_variables
from tgic_jax.coding import codec
from tgic_jax.model.taco import TACO
model = TACO()
variables = random_variables(model)
mode, size, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "encode":
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.clip(0.5 + 0.3 * np.sin(9 * xx)[..., None] * np.cos(7 * yy)[..., None]
                    + 0.05 * rng.normal(size=(size, size, 3)), 0, 1).astype(np.float32)
    text = rng.normal(size=(38, 512)).astype(np.float32)
    open(path, "wb").write(codec.Coder(model, variables).encode([image], [text])[0].data)
else:
    data = open(path, "rb").read()
    coder = codec.Coder(model, variables)
    t0 = time.perf_counter()
    coder.decode(data, max_pixels=size * size)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({{"size": size, "peak_bytes": peak, "seconds": seconds}}))
"""


def main() -> None:
    """Fits the decoder's peak memory against pixels, one encode and one decode process per size."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    args = ap.parse_args()
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    child = _CHILD.format(bench=str(REPO / "benchmarks"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = str(Path(tmp) / f"{size}.tgic")
            for mode in ("encode", "decode"):
                cmd = [sys.executable, "-c", child, mode, str(size), path]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(
                f"{size} x {size}: peak RSS {r['peak_bytes'] / 2**30:.2f} GiB, "
                f"decode {r['seconds']:.1f} s (compile included)",
                flush=True,
            )
    pixels = np.array([r["size"] ** 2 for r in rows], np.float64)
    peak = np.array([r["peak_bytes"] for r in rows], np.float64)
    b, a = np.polyfit(pixels, peak, 1)
    print(f"fit: peak = {a / 2**30:.2f} GiB + {b:.0f} bytes/pixel x pixels")
    for budget in (8, 16, 24):
        print(f"  {budget} GiB holds {(budget * 2**30 - a) / b / 1e6:.1f} M pixels")


if __name__ == "__main__":
    main()
