"""Building blocks with PyTorch's exact arithmetic, in NHWC.

Layers compute in the dtype of their input: parameters are stored in float32 and cast to
the input's dtype where they are used, so a bfloat16 input gives a bfloat16 layer (mixed
precision, see `transforms.py`) and a float32 input is bit-for-bit the float32 layer.

Parameter names and layouts are chosen so that the authors' state_dict converts by a
mechanical rule (see `checkpoints/authors.py`): a torch path `a.b.3.c.weight` becomes the Flax path
`a / b_3 / c / kernel`. Kernels are stored in Flax layout ([kh, kw, in, out]); the
transposed convolution keeps PyTorch's *un-flipped* taps ([kh, kw, in, out] of the
[in, out, kh, kw] tensor) and derives its phase kernels at trace time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")

# A parameter pytree (nested dicts of arrays, as Flax's `variables["params"]`): TACO's, the
# text encoder's, LPIPS's. The one alias for them all; the modules that take them import it.
Params = Any


def _torch_default_init(fan_in_axes: Sequence[int]):
    """Kaiming-uniform(a=sqrt(5)) as torch's default layer init: U(-1/sqrt(fan_in), ..)."""

    def init(key, shape, dtype=jnp.float32):
        fan_in = int(np.prod([shape[a] for a in fan_in_axes]))
        bound = 1.0 / np.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _torch_bias_init(fan_in: int):
    """torch's default bias init of Conv2d / ConvTranspose2d / Linear: U(-1/sqrt(fan_in), ..)."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _kaiming_normal_init(fan_in_axes: Sequence[int]):
    """torch.nn.init.kaiming_normal_ defaults (fan_in, leaky_relu a=0): N(0, 2 / fan_in)."""

    def init(key, shape, dtype=jnp.float32):
        fan_in = int(np.prod([shape[a] for a in fan_in_axes]))
        return np.sqrt(2.0 / fan_in) * jax.random.normal(key, shape, dtype)

    return init


class Conv(nn.Module):
    """Conv2d with PyTorch padding k // 2: `conv(i, o, k, s)` of the paper's code."""

    features: int
    kernel_size: int = 5
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Convolves x [B, H, W, C] into [B, H/s, W/s, features] with zero padding k // 2."""
        k, c = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", _torch_default_init((0, 1, 2)), (k, k, c, self.features))
        bias = self.param("bias", _torch_bias_init(k * k * c), (self.features,))
        p = k // 2
        y = lax.conv_general_dilated(
            x,
            kernel.astype(x.dtype),
            (self.stride, self.stride),
            ((p, p), (p, p)),
            dimension_numbers=_DN,
        )
        return y + bias.astype(x.dtype)


def _phase_kernels(kernel: jax.Array, stride: int, padding: int):
    """Split a transposed-conv kernel into `stride**2` correlation kernels (sub-pixel form).

    out[s*m + r] = sum_k x[m + (r + p - k) / s] * w[k] over taps k with (r + p - k) % s == 0.
    Returns the stacked kernel [K', K', in, s*s*out] and the input offsets (d_min, d_max).
    """
    k = kernel.shape[0]
    offsets = {
        r: [(t, (r + padding - t) // stride) for t in range(k) if (r + padding - t) % stride == 0]
        for r in range(stride)
    }
    d_all = [d for taps in offsets.values() for _, d in taps]
    d_min, d_max = min(d_all), max(d_all)
    size = d_max - d_min + 1
    # index[r][j] = tap used at window position j for phase r, or -1 (zero).
    index = np.full((stride, size), -1, dtype=np.int64)
    for r, taps in offsets.items():
        for t, d in taps:
            index[r, d - d_min] = t
    cin, cout = kernel.shape[2], kernel.shape[3]
    padded = jnp.concatenate([kernel, jnp.zeros((1, k, cin, cout), kernel.dtype)], axis=0)
    padded = jnp.concatenate([padded, jnp.zeros((k + 1, 1, cin, cout), kernel.dtype)], axis=1)
    idx = np.where(index < 0, k, index)  # row/col k of `padded` is zero
    # [rh, j_h, rw, j_w, in, out]
    phases = padded[idx[:, :, None, None], idx[None, None, :, :]]
    phases = phases.transpose(1, 3, 4, 0, 2, 5).reshape(size, size, cin, stride * stride * cout)
    return phases, d_min, d_max


class ConvTranspose(nn.Module):
    """ConvTranspose2d(k, s, padding k // 2, output_padding s - 1): output is s x input.

    Computed in sub-pixel form: one stride-1 convolution producing s*s phases, then a
    depth-to-space shuffle, so no multiplication by inserted zeros (same numbers as the
    input-dilated form up to float32 summation order, a quarter of the work at s = 2).
    """

    features: int
    kernel_size: int = 5
    stride: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Upsamples x [B, H, W, C] into [B, s*H, s*W, features]."""
        k, s, c = self.kernel_size, self.stride, x.shape[-1]
        # torch's fan_in for ConvTranspose2d weight [in, out, kh, kw] is out * kh * kw.
        kernel = self.param("kernel", _torch_default_init((0, 1, 3)), (k, k, c, self.features))
        bias = self.param("bias", _torch_bias_init(k * k * self.features), (self.features,))
        p = k // 2
        phases, d_min, d_max = _phase_kernels(kernel.astype(x.dtype), s, p)
        y = lax.conv_general_dilated(
            x, phases, (1, 1), ((-d_min, d_max), (-d_min, d_max)), dimension_numbers=_DN
        )
        b, h, w, _ = y.shape
        y = y.reshape(b, h, w, s, s, self.features).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(b, h * s, w * s, self.features) + bias.astype(x.dtype)


class ResidualBottleneck(nn.Module):
    """x + [1x1 C->C/2, ReLU, 3x3, ReLU, 1x1 C/2->C](x), no activation after the sum."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Adds the bottleneck branch to x [B, H, W, C] (C even); same shape out."""
        c = x.shape[-1]
        h = nn.relu(Conv(c // 2, 1, name="branch_0")(x))
        h = nn.relu(Conv(c // 2, 3, name="branch_2")(h))
        return x + Conv(c, 1, name="branch_4")(h)


class ResidualUnit(nn.Module):
    """ReLU(u + [1x1 C->C/2, ReLU, 3x3, ReLU, 1x1 C/2->C](u)) (CompressAI's attention unit)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Adds the bottleneck branch to x [B, H, W, C] and applies ReLU; same shape out."""
        c = x.shape[-1]
        h = nn.relu(Conv(c // 2, 1, name="conv_0")(x))
        h = nn.relu(Conv(c // 2, 3, name="conv_2")(h))
        return nn.relu(x + Conv(c, 1, name="conv_4")(h))


class AttentionBlock(nn.Module):
    """Simplified Cheng 2020 attention: x + a(x) * sigmoid(b(x))."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Gates the residual trunk of x [B, H, W, C] by the sigmoid mask; same shape out."""
        a = x
        for i in range(3):
            a = ResidualUnit(name=f"conv_a_{i}")(a)
        b = x
        for i in range(3):
            b = ResidualUnit(name=f"conv_b_{i}")(b)
        b = Conv(x.shape[-1], 1, name="conv_b_3")(b)
        return x + a * jax.nn.sigmoid(b)


class Dense(nn.Module):
    """torch.nn.Linear with a [in, out] kernel.

    Initialized as torch does by default, or with `kaiming_normal=True` as the authors'
    Injector/Extractor projections (`nn.init.kaiming_normal_`); `zero_bias` is
    MultiheadAttention's out_proj (torch zeroes that bias in `_reset_parameters`).
    """

    features: int
    kaiming_normal: bool = False
    zero_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps the last axis of x [..., in] to [..., features]."""
        fan_in = x.shape[-1]
        kernel_init = (
            _kaiming_normal_init((0,)) if self.kaiming_normal else _torch_default_init((0,))
        )
        kernel = self.param("kernel", kernel_init, (fan_in, self.features))
        bias_init = nn.initializers.zeros if self.zero_bias else _torch_bias_init(fan_in)
        bias = self.param("bias", bias_init, (self.features,))
        return x @ kernel.astype(x.dtype) + bias.astype(x.dtype)


class LayerNorm(nn.Module):
    """torch.nn.LayerNorm over the last axis, eps 1e-5."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalizes the last axis of x to zero mean and unit variance, then scales and shifts."""
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        # Statistics in float32 whatever the input: bfloat16 means and variances of 192
        # channels lose the digits that the normalization divides by.
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        return ((x32 - mean) * lax.rsqrt(var + self.epsilon) * scale + bias).astype(x.dtype)


class MultiheadAttention(nn.Module):
    """torch.nn.MultiheadAttention(batch_first=True) with its parameter layout.

    `in_proj_weight` [3E, E] stacks the q, k, v projections; heads split E contiguously.
    """

    num_heads: int

    @nn.compact
    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        """Attends queries q [B, Lq, E] to keys k and values v [B, Lk, E]; returns [B, Lq, E]."""
        e = q.shape[-1]
        bound = np.sqrt(6.0 / (e + 3 * e))  # xavier_uniform on [3E, E], as torch does
        w_in = self.param(
            "in_proj_weight",
            lambda key, s: jax.random.uniform(key, s, jnp.float32, -bound, bound),
            (3 * e, e),
        )
        b_in = self.param("in_proj_bias", nn.initializers.zeros, (3 * e,))
        w_in, b_in = w_in.astype(q.dtype), b_in.astype(q.dtype)
        qp = q @ w_in[:e].T + b_in[:e]
        kp = k @ w_in[e : 2 * e].T + b_in[e : 2 * e]
        vp = v @ w_in[2 * e :].T + b_in[2 * e :]
        h, d = self.num_heads, e // self.num_heads

        def split(t):
            return t.reshape(t.shape[0], t.shape[1], h, d)

        logits = jnp.einsum("bqhd,bkhd->bhqk", split(qp) / np.sqrt(d), split(kp))
        attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(logits.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", attn, split(vp)).reshape(qp.shape)
        return Dense(e, zero_bias=True, name="out_proj")(out)
