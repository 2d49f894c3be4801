r"""Encode / decode time of the paper-size model on one 768 x 512 Kodak image.

    python benchmarks/codec.py [--image data/kodak/kodim01.png] [--runs 3] [--small]

Weights: random and well-scaled (He-normal kernels; the bottleneck at its Flax init
values), drawn from the shapes of `init_variables` via `jax.eval_shape` so the run does
not spend minutes compiling Flax's init. Timings do not depend on the weights' values,
except the entropy coding's share, which grows with the number of escaped (far-tail)
symbols: random weights escape far more than a trained model, so treat symbols/s as a
lower bound. Prints the median of `--runs` runs after one untimed warm-up (compiles).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax.traverse_util import flatten_dict, unflatten_dict  # noqa: E402

from tgic_jax import codec, image_io  # noqa: E402
from tgic_jax.coding_tables import build_tables  # noqa: E402
from tgic_jax.model import TACO, ModelConfig, init_variables  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def random_variables(model: TACO, seed: int = 0) -> dict:
    """Well-scaled random params with the model's tree, plus their coding tables."""
    shapes = flatten_dict(
        jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0)))["params"]
    )
    rng = np.random.default_rng(seed)
    params = {}
    for path, s in shapes.items():
        leaf, shape = path[-1], s.shape
        if leaf in ("kernel", "in_proj_weight"):
            fan_in = int(np.prod(shape[:-1])) if leaf == "kernel" else shape[-1]
            a = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif leaf in ("bias", "in_proj_bias", "factors_0", "factors_1", "factors_2", "factors_3"):
            a = np.zeros(shape)
        elif leaf == "scale":
            a = np.ones(shape)
        elif leaf == "gamma":
            a = np.full(shape, 0.5)
        elif leaf.startswith("matrices_"):
            a = np.full(shape, np.log(np.expm1(1.0 / 10.0**0.2 / shape[1])))
        elif leaf.startswith("biases_"):
            a = rng.uniform(-0.5, 0.5, shape)
        elif leaf == "quantiles":
            a = np.broadcast_to(np.array([-10.0, 0.0, 10.0]), shape)
        else:
            raise ValueError(f"unknown parameter {path}")
        params[path] = np.asarray(a, np.float32)
    params = unflatten_dict(params)
    return {"params": params, "tables": build_tables(params)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(REPO / "data" / "kodak" / "kodim01.png"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="tiny model (a smoke run)")
    args = ap.parse_args()

    cfg = (
        ModelConfig(N=16, M=24, slices=(2, 2, 4, 4, 12), text_dim=16)
        if args.small
        else ModelConfig()
    )
    model = TACO.from_config(cfg)
    variables = random_variables(model)
    image, _ = image_io.load_image(args.image)
    text = np.random.default_rng(1).normal(size=(38, cfg.text_dim)).astype(np.float32)
    h, w = image.shape[:2]
    print(f"model N={cfg.N} M={cfg.M} slices={list(cfg.slices)}; image {w} x {h}; "
          f"device {jax.devices()[0].platform}, {os.cpu_count()} CPUs")  # fmt: skip

    t0 = time.perf_counter()
    r = codec.encode(model, variables, [image], [text])[0]
    codec.decode(model, variables, r.data)
    print(f"warm-up (compile) encode + decode: {time.perf_counter() - t0:.1f} s")

    enc, dec = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        r = codec.encode(model, variables, [image], [text])[0]
        enc.append((time.perf_counter() - t0, r.timings))
        t0 = time.perf_counter()
        _, timings = codec.decode(model, variables, r.data)
        dec.append((time.perf_counter() - t0, timings))

    symbols = (h + (-h % 64)) * (w + (-w % 64)) // 256 * cfg.M
    symbols += (h + (-h % 64)) * (w + (-w % 64)) // 4096 * cfg.N
    print(f"file: {len(r.data)} bytes = {r.bpp:.4f} bpp (payload {r.payload_bytes}, "
          f"header {r.header_bytes} B); {symbols} symbols")  # fmt: skip
    for name, runs in (("encode", enc), ("decode", dec)):
        total = statistics.median(t for t, _ in runs)
        net = statistics.median(t["networks"] for _, t in runs)
        code = statistics.median(t["entropy_coding"] for _, t in runs)
        print(f"{name}: {1e3 * total:7.0f} ms  (networks {1e3 * net:6.0f} ms, entropy coding "
              f"{1e3 * code:5.0f} ms = {symbols / code / 1e6:5.2f} M symbols/s)")  # fmt: skip


if __name__ == "__main__":
    main()
