r"""The convolutions that dominate TACO, timed in XLA (JAX) or PyTorch on this machine.

    python benchmarks/conv_backends.py                 # JAX / XLA (the project's venv)
    python benchmarks/conv_backends.py --backend torch # any venv with torch (CPU build)

Forward, gradient with respect to the input (dX) and to the kernel (dW), each timed
alone (median of --runs after a warm-up), for the layer shapes that carry most of g_a's
and g_s's multiply-adds at the training crop (batch 2, 256 x 256): the ResidualBottleneck
3x3 conv at N/2 = 96 channels on 128 x 128, and the 5x5 stride-2 conv N -> N.
Prints GMAC/s so that the two backends can be compared shape by shape.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

# (name, batch, height, width, in, out, kernel, stride): output size = height / stride.
CASES = [
    ("3x3 96->96 @128x128", 2, 128, 128, 96, 96, 3, 1),
    ("5x5 s2 192->192 @128x128", 2, 128, 128, 192, 192, 5, 2),
    ("1x1 192->96 @128x128", 2, 128, 128, 192, 96, 1, 1),
]


def _median_time(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _jax_fns(b, h, w, cin, cout, k, s):
    import jax
    import jax.numpy as jnp
    from jax import lax

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(b, h, w, cin)).astype(np.float32))
    kern = jnp.asarray(rng.normal(size=(k, k, cin, cout)).astype(np.float32) * 0.05)
    pad = ((k // 2, k // 2), (k // 2, k // 2))
    dn = ("NHWC", "HWIO", "NHWC")

    def conv(kern, x):
        return lax.conv_general_dilated(x, kern, (s, s), pad, dimension_numbers=dn)

    fwd = jax.jit(conv)
    g = jnp.ones_like(fwd(kern, x))
    dx = jax.jit(lambda kern, g: jax.vjp(lambda x: conv(kern, x), x)[1](g)[0])
    dw = jax.jit(lambda x, g: jax.vjp(lambda kk: conv(kk, x), kern)[1](g)[0])
    return (
        lambda: fwd(kern, x).block_until_ready(),
        lambda: dx(kern, g).block_until_ready(),
        lambda: dw(x, g).block_until_ready(),
    )


def _torch_fns(b, h, w, cin, cout, k, s):
    import torch

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(b, cin, h, w)).astype(np.float32))
    kern = torch.from_numpy(rng.normal(size=(cout, cin, k, k)).astype(np.float32) * 0.05)
    g = torch.ones(b, cout, h // s, w // s)
    conv = torch.nn.grad

    def fwd():
        with torch.no_grad():
            torch.nn.functional.conv2d(x, kern, stride=s, padding=k // 2)

    def dx():
        conv.conv2d_input(x.shape, kern, g, stride=s, padding=k // 2)

    def dw():
        conv.conv2d_weight(x, kern.shape, g, stride=s, padding=k // 2)

    return fwd, dx, dw


def main() -> None:
    """Times forward, dX and dW of the dominant convolutions on one backend; prints GMAC/s."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("jax", "torch"), default="jax")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    make = _jax_fns if args.backend == "jax" else _torch_fns
    print(f"backend {args.backend}; median of {args.runs} runs; ms (GMAC/s)")
    for name, b, h, w, cin, cout, k, s in CASES:
        gmac = b * (h // s) * (w // s) * cin * cout * k * k / 1e9
        times = [_median_time(fn, args.runs) for fn in make(b, h, w, cin, cout, k, s)]
        cols = "  ".join(
            f"{label} {1e3 * t:6.1f} ms ({gmac / t:5.1f})"
            for label, t in zip(("fwd", "dX", "dW"), times, strict=True)
        )
        print(f"{name:>26} [{gmac:.2f} GMAC]: {cols}", flush=True)


if __name__ == "__main__":
    main()
