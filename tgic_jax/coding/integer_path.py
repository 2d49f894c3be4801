"""The entropy path in integer arithmetic: the same table indices and means on every device.

Everything whose output decides a table index or a mean (h_s, the channel contexts, the
checkerboard contexts, the parameter networks, the scale-to-table rule) runs here on
int32 values, exact and identical on CPU, GPU and TPU (Balle et al., "Integer networks for
data compression", ICLR 2019, integerized after training). g_a and g_s stay float.

One layer (`apply_layer`), for a convolution of the float model with kernel w, bias b,
input scale s_in (per input channel) and output scale s_out (per output channel):

    x        int32 in [-8191, 8191]           real input = x * s_in
    hi, lo   x >> 7 in [-64, 63], x & 127     two int8 digits: x = 128 hi + lo
    acc      128 conv(hi, w_q) + conv(lo, w_q) + b_q        int8 x int8 -> int32, exact
    out      clamp(round(acc * m / 2^sh) << up, lo_c, hi_c) integer requantization
             w_q = round(w * s_in / s_w) int8 (|w_q| <= 127, s_w per output channel),
             b_q = round(b / s_w), m / 2^sh ~ s_w / s_out with m < 2^16

Widths, chosen so that no int32 can overflow for ANY input (`check_bounds`, asserted when
building and tested): per output channel, sum|w_q| * (64 * 128 + 127) + |b_q| < 2^30
(the digits' largest magnitudes), and the requantization's split product (`_requantize`)
stays below 2^31 after clamping acc to the range that can still move the output.
Two int8 digits give 14-bit activations at the cost of two int8 convolutions, which
XLA:CPU runs ~8x faster than one float32 convolution of the same shape (1.5 vs 24 ms at
the paper model's widest context layer; int16 or int32 operands: ~50x slower than
float32; docs/BENCHMARKS.md).

Rounding rules (all integer, half up: floor(v + 1/2)): z_in = clamp(z_sym * 2^e_z +
round(median * 2^e_z)); y_in = clamp(sym * 2^e_i + round(mean_q / 2^(F - e_i))); the
outputs of the last parameter layer are scale_q, mean_q in units of 2^-F (F = 12);
table index = #{k : scale_q > T_k}, T_k = round(t_k * 2^F) for the float thresholds
t_k of `tables.scale_thresholds`; y_hat = sym + mean_q * 2^-F, exact in integers (g_s
receives it as float32).

`integerize(config, params, z_medians, stats)` is a pure function of the float parameters
and the activation ranges `calibrate` measures on a few images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tgic_jax.model.layers import _phase_kernels
from tgic_jax.model.taco import ModelConfig, checkerboard_masks

__all__ = [
    "ACTIVATION_LIMIT",
    "FRACTION_BITS",
    "anchor",
    "apply_layer",
    "calibrate",
    "check_bounds",
    "combine",
    "dequantize",
    "hyper",
    "integerize",
    "layer_specs",
    "nonanchor",
    "y_input",
]

ACTIVATION_LIMIT = 2**13 - 1  # activations in [-8191, 8191]: two int8 digits
FRACTION_BITS = 12  # scales and means in units of 2^-12
OUTPUT_LIMIT = 2**23 - 1  # |scale_q|, |mean_q|: scales up to 2048 (the table ends at 256)
SYMBOL_LIMIT = 2**15  # symbols are clamped to this before entering a context network
WEIGHT_LIMIT = 127
_DIGIT = 128
_DIGIT_BOUND = 64 * _DIGIT + (_DIGIT - 1)  # max |128 hi + lo| weight multiplier
ACCUMULATOR_BOUND = 2**30  # sum|w_q| * 8319 + |b_q| stays below this (half of int32)
_MARGIN = 1.5  # activation range = 1.5 x the largest value seen in calibration
_DN = ("NHWC", "HWIO", "NHWC")


# ----------------------------------------------------------------------------------------
# The layer graph


def layer_specs(config: ModelConfig) -> dict[str, list[tuple]]:
    """{network: [(layer name or None, kind 'conv' | 'transposed', k, stride, relu)]}."""
    specs = {
        "h_s": [
            ("increase_0", "transposed", 5, 2, True),
            ("increase_2", "transposed", 5, 2, True),
            ("increase_4", "transposed", 3, 1, False),
        ]
    }
    for i, _ in enumerate(config.slices):
        if i:
            specs[f"channel_context_{i}"] = [
                (f"fushion_{j}", "conv", 5, 1, j < 4) for j in (0, 2, 4)
            ]
        specs[f"local_context_{i}"] = [(None, "conv", 5, 1, False)]
        for side in ("anchor", "nonanchor"):
            specs[f"entropy_parameters_{side}_{i}"] = [
                (f"fusion_{j}", "conv", 1, 1, j < 4) for j in (0, 2, 4)
            ]
    return specs


def _geometry(kind: str, k: int, stride: int) -> tuple[int, int, int]:
    """(pad_low, pad_high, depth-to-space factor) of the stride-1 correlation form."""
    p = k // 2
    if kind == "conv":
        return p, p, 1
    d = [
        (r + p - t) // stride for r in range(stride) for t in range(k) if (r + p - t) % stride == 0
    ]
    return -min(d), max(d), stride


def _correlation_kernel(kind, k, stride, kernel, bias):
    """The float layer as one stride-1 correlation (transposed: its sub-pixel phases)."""
    kernel = np.asarray(kernel, np.float32)
    bias = np.asarray(bias, np.float32)
    if kind == "conv":
        return kernel, bias
    phases, _, _ = _phase_kernels(jnp.asarray(kernel), stride, k // 2)
    return np.asarray(phases), np.tile(bias, stride * stride)


def _shuffle(y: jax.Array, s: int) -> jax.Array:
    if s == 1:
        return y
    b, h, w, c = y.shape
    f = c // (s * s)
    y = y.reshape(b, h, w, s, s, f).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, h * s, w * s, f)


def _layer_params(params, net: str, layer: str | None):
    return params[net] if layer is None else params[net][layer]


# ----------------------------------------------------------------------------------------
# Integer arithmetic (what the programs run)


def _rshift_round(v: jax.Array, bits) -> jax.Array:
    """round(v / 2^bits), half up, for bits >= 0 (array or int)."""
    bits = jnp.asarray(bits, jnp.int32)
    half = jnp.right_shift(jnp.left_shift(jnp.int32(1), bits), 1)
    return jnp.right_shift(v + half, bits)


def _requantize(acc: jax.Array, q: dict) -> jax.Array:
    """clamp(round(acc * m / 2^sh), lo, hi) per channel, in int32 without overflow.

    Where one accumulator step is a unit of the output or more (s_w >= s_out / 2), the ratio
    is m 2^up / 2^sh: the result is shifted up by `up` after rounding (the accumulator
    holds no finer digits to round by). acc is first clamped to +-limit, beyond which the
    output clamps anyway; then acc * m
    is split at 15 bits (acc = 2^15 a_h + a_l) so no partial product reaches 2^31:
    floor((2^15 a_h m + a_l m + 2^(sh-1)) / 2^sh) = (a_h m + (a_l m >> 15) + 2^(sh-16))
    >> (sh - 15), exactly, for sh >= 16.
    """
    a = jnp.clip(acc, -q["limit"], q["limit"])
    m, sh = q["multiplier"], q["shift"]
    x = jnp.right_shift(a, 15) * m
    y = jnp.right_shift(jnp.bitwise_and(a, 2**15 - 1) * m, 15)
    out = jnp.right_shift(x + y + jnp.left_shift(jnp.int32(1), sh - 16), sh - 15)
    return jnp.clip(jnp.left_shift(out, q["up"]), q["low"], q["high"])


def _int_conv(digits: jax.Array, kernel: jax.Array, pad: tuple[int, int]) -> jax.Array:
    return lax.conv_general_dilated(
        digits,
        kernel,
        (1, 1),
        (pad, pad),
        dimension_numbers=_DN,
        preferred_element_type=jnp.int32,
    )


def apply_layer(q: dict, x: jax.Array, geometry: tuple[int, int, int]) -> jax.Array:
    """One integer layer: int32 activations in, int32 activations out (see module doc)."""
    lo_pad, hi_pad, s = geometry
    hi = jnp.right_shift(x, 7).astype(jnp.int8)
    lo = jnp.bitwise_and(x, _DIGIT - 1).astype(jnp.int8)
    acc = _int_conv(hi, q["kernel"], (lo_pad, hi_pad)) * _DIGIT
    acc = acc + _int_conv(lo, q["kernel"], (lo_pad, hi_pad)) + q["bias"]
    return _shuffle(_requantize(acc, q), s)


def _chain(config: ModelConfig, ip: dict, net: str, x: jax.Array) -> jax.Array:
    for layer, kind, k, stride, _ in layer_specs(config)[net]:
        x = apply_layer(_layer_params(ip, net, layer), x, _geometry(kind, k, stride))
    return x


def _indexes(scale_q: jax.Array, thresholds: jax.Array) -> jax.Array:
    """#{k : scale_q > T_k}: the table index by integer comparison."""
    return jnp.sum(scale_q[..., None] > thresholds, axis=-1, dtype=jnp.int32)


def y_input(sym: jax.Array, mean_q: jax.Array, shift: jax.Array) -> jax.Array:
    """A slice's y_hat as context input: clamp(sym 2^e + round(mean_q / 2^(F - e)))."""
    s = jnp.left_shift(jnp.clip(sym, -SYMBOL_LIMIT, SYMBOL_LIMIT), shift)
    v = s + _rshift_round(mean_q, FRACTION_BITS - shift)
    return jnp.clip(v, -ACTIVATION_LIMIT, ACTIVATION_LIMIT)


def hyper(config: ModelConfig, ip: dict, z_sym: jax.Array) -> jax.Array:
    """h_s on z_hat = z_sym + median, in integers: the hyper activations (int32)."""
    io = ip["io"]
    z = jnp.left_shift(jnp.clip(z_sym, -SYMBOL_LIMIT, SYMBOL_LIMIT), io["z_shift"])
    z = jnp.clip(z + io["z_medians"], -ACTIVATION_LIMIT, ACTIVATION_LIMIT)
    return _chain(config, ip, "h_s", z)


def _masks(shape) -> tuple[jax.Array, jax.Array]:
    anchor_mask, non_anchor_mask = checkerboard_masks(shape[1], shape[2])
    return jnp.asarray(anchor_mask, jnp.int32), jnp.asarray(non_anchor_mask, jnp.int32)


def anchor(config: ModelConfig, i: int, ip: dict, hyper_q, y_in_previous: Sequence):
    """Slice i's anchors: (table indices, mean_q, channel context), zero at non-anchors."""
    if i == 0:
        ctx, x = None, hyper_q
    else:
        ctx = _chain(config, ip, f"channel_context_{i}", jnp.concatenate(list(y_in_previous), -1))
        x = jnp.concatenate([ctx, hyper_q], -1)
    out = _chain(config, ip, f"entropy_parameters_anchor_{i}", x)
    c = out.shape[-1] // 2
    mask = _masks(hyper_q.shape)[0]
    idx = _indexes(out[..., :c], ip["io"]["thresholds"])
    return idx * mask, out[..., c:] * mask, ctx


def nonanchor(config: ModelConfig, i: int, ip: dict, hyper_q, ctx, sym_a, mean_a):
    """Slice i's non-anchors from its decoded anchors: (table indices, mean_q)."""
    anchor_mask, non_anchor_mask = _masks(hyper_q.shape)
    y_a = y_input(sym_a, mean_a, ip["io"]["y_shift"][i]) * anchor_mask
    local = _chain(config, ip, f"local_context_{i}", y_a)
    parts = [local, hyper_q] if ctx is None else [local, ctx, hyper_q]
    out = _chain(config, ip, f"entropy_parameters_nonanchor_{i}", jnp.concatenate(parts, -1))
    c = out.shape[-1] // 2
    idx = _indexes(out[..., :c], ip["io"]["thresholds"])
    return idx * non_anchor_mask, out[..., c:] * non_anchor_mask


def combine(i: int, ip: dict, sym_a, mean_a, sym_n, mean_n):
    """A decoded slice: (symbols, mean_q, context input y_in), all int32."""
    anchor_mask, non_anchor_mask = _masks(sym_a.shape)
    sym = sym_a * anchor_mask + sym_n * non_anchor_mask
    mean = mean_a * anchor_mask + mean_n * non_anchor_mask
    return sym, mean, y_input(sym, mean, ip["io"]["y_shift"][i])


def dequantize(sym: jax.Array, mean_q: jax.Array) -> jax.Array:
    """y_hat = sym + mean_q 2^-F as float32, what g_s reads (IEEE-exact operations)."""
    return sym.astype(jnp.float32) + mean_q.astype(jnp.float32) * np.float32(2.0**-FRACTION_BITS)


# ----------------------------------------------------------------------------------------
# Calibration (float, on a few images) and integerization (NumPy, float64)


def _float_chain(config, params, net, x, record: dict) -> jax.Array:
    for layer, kind, k, stride, relu in layer_specs(config)[net]:
        p = _layer_params(params, net, layer)
        kernel, bias = _correlation_kernel(kind, k, stride, p["kernel"], p["bias"])
        lo, hi, s = _geometry(kind, k, stride)
        y = lax.conv_general_dilated(
            x,
            jnp.asarray(kernel),
            (1, 1),
            ((lo, hi), (lo, hi)),
            dimension_numbers=_DN,
            precision=lax.Precision.HIGHEST,
        )
        y = _shuffle(y + bias, s)
        if relu:
            y = jnp.maximum(y, 0.0)
        key = (net, layer)
        record[key] = max(record.get(key, 0.0), float(jnp.max(jnp.abs(y))))
        x = y
    return x


# g_a jitted once per model config: every calibration (each export, each per-epoch best)
# reuses its compilation instead of tracing a new lambda.
_ANALYSES: dict[ModelConfig, object] = {}


def _analysis(model):
    if model.config not in _ANALYSES:
        _ANALYSES[model.config] = jax.jit(
            lambda p, x, t: model.apply({"params": p}, x, t, method="analysis")
        )
    return _ANALYSES[model.config]


def calibrate(model, params, z_medians, images: Sequence[np.ndarray], texts: Sequence) -> dict:
    """The largest |value| of z_hat, of each slice's y_hat and of every layer's output.

    Runs g_a on each image (padded to a multiple of the model's downsampling factor) and
    the float entropy path in the layer graph the integer path uses, with y rounded around
    the float means, as coding would. What the integer widths are scaled to (`integerize`).
    """
    config = model.config
    analysis = _analysis(model)
    record: dict = {}
    med = jnp.asarray(z_medians, jnp.float32)
    for image, text in zip(images, texts, strict=True):
        h, w = image.shape[:2]
        f = model.downsampling_factor
        x = np.pad(image, ((0, -h % f), (0, -w % f), (0, 0)))[None]
        y, z = analysis(params, jnp.asarray(x), jnp.asarray(text)[None])
        z_hat = jnp.round(z - med) + med
        record["z_hat"] = max(record.get("z_hat", 0.0), float(jnp.max(jnp.abs(z_hat))))
        hyper_f = _float_chain(config, params, "h_s", z_hat, record)
        anchor_mask, non_anchor_mask = (jnp.asarray(m) for m in checkerboard_masks(*y.shape[1:3]))
        y_hat_slices, start = [], 0
        for i, c in enumerate(config.slices):
            y_i = y[..., start : start + c]
            start += c
            ctx = None
            x_a = hyper_f
            if i:
                ctx = _float_chain(
                    config,
                    params,
                    f"channel_context_{i}",
                    jnp.concatenate(y_hat_slices, -1),
                    record,
                )
                x_a = jnp.concatenate([ctx, hyper_f], -1)
            p = _float_chain(config, params, f"entropy_parameters_anchor_{i}", x_a, record)
            mean_a = p[..., c:]
            y_hat_a = (jnp.round(y_i - mean_a) + mean_a) * anchor_mask
            local = _float_chain(config, params, f"local_context_{i}", y_hat_a, record)
            parts = [local, hyper_f] if ctx is None else [local, ctx, hyper_f]
            p = _float_chain(
                config,
                params,
                f"entropy_parameters_nonanchor_{i}",
                jnp.concatenate(parts, -1),
                record,
            )
            mean_n = p[..., c:]
            y_hat_i = y_hat_a + (jnp.round(y_i - mean_n) + mean_n) * non_anchor_mask
            key = ("y_hat", i)
            record[key] = max(record.get(key, 0.0), float(jnp.max(jnp.abs(y_hat_i))))
            y_hat_slices.append(y_hat_i)
    return record


def _exponent(largest: float) -> int:
    """The power of two e <= F that puts `largest` x margin within the activation limit."""
    if largest <= 0:
        return FRACTION_BITS
    e = math.floor(math.log2(ACTIVATION_LIMIT / (_MARGIN * largest)))
    return int(min(max(e, 0), FRACTION_BITS))


def _activation_scale(largest: float) -> float:
    """The scale that maps 1.5x the largest value to the activation limit (1.0: no value)."""
    return (_MARGIN * largest if largest > 0 else 1.0) / ACTIVATION_LIMIT


def _quantize_layer(kernel, bias, s_in, s_out, low, high) -> dict:
    """One layer's integer parameters (float64 NumPy; see the module doc)."""
    k = np.asarray(kernel, np.float64) * np.asarray(s_in, np.float64)[None, None, :, None]
    b = np.asarray(bias, np.float64)
    amax = np.abs(k).max(axis=(0, 1, 2))
    amax = np.where(amax > 0, amax, 1.0)
    qmax = np.full(k.shape[-1], float(WEIGHT_LIMIT))
    for _ in range(200):  # narrow a channel's weights until its accumulator bound holds
        s_w = amax / qmax
        w_q = np.clip(np.round(k / s_w), -WEIGHT_LIMIT, WEIGHT_LIMIT)
        b_q = np.round(b / s_w)
        bad = _accumulator_bound(w_q, b_q) >= ACCUMULATOR_BOUND
        if not bad.any():
            break
        qmax = np.where(bad, np.floor(qmax * 0.9), qmax)
        if (qmax < 1).any():
            raise ValueError("a layer's bias is too large for the integer accumulator")
    r = s_w / np.asarray(s_out, np.float64)
    # An output finer than the accumulator (r >= 1/2): round at 2^up output units.
    up = np.clip(np.floor(np.log2(r)) + 2, 0, 30).astype(np.int64)
    r = r / 2.0**up
    shift = np.clip(13 - np.floor(np.log2(r)), 16, 45).astype(np.int64)
    multiplier = np.round(r * 2.0**shift).astype(np.int64)
    top = max(abs(low), abs(high)) // 2**up
    limit = np.minimum(np.floor((top + 1) / r) + 1, 2**31 - 1)
    shape = k.shape[-1]
    q = {
        "kernel": w_q.astype(np.int8),
        "bias": b_q.astype(np.int32),
        "multiplier": multiplier.astype(np.int32),
        "shift": shift.astype(np.int32),
        "limit": limit.astype(np.int64).astype(np.int32),
        "up": up.astype(np.int32),
        "low": np.full(shape, low, np.int32),
        "high": np.full(shape, high, np.int32),
    }
    _check_layer(q)
    return q


def _accumulator_bound(w_q: np.ndarray, b_q: np.ndarray) -> np.ndarray:
    """Per output channel: the largest |acc| any input in [-8191, 8191] can give."""
    return np.abs(w_q).astype(np.int64).sum(axis=(0, 1, 2)) * _DIGIT_BOUND + np.abs(
        b_q.astype(np.int64)
    )


def _check_layer(q: dict) -> None:
    acc = _accumulator_bound(q["kernel"], q["bias"])
    if (acc >= ACCUMULATOR_BOUND).any():
        raise AssertionError(f"integer accumulator bound {acc.max()} >= 2^30")
    m = q["multiplier"].astype(np.int64)
    x = ((q["limit"].astype(np.int64) >> 15) + 1) * m
    total = x + m + (1 << (q["shift"].astype(np.int64) - 16))
    if (total >= 2**31).any() or (m >= 2**16).any() or (q["shift"] < 16).any():
        raise AssertionError("integer requantization could overflow int32")


def check_bounds(ip: dict) -> dict[str, int]:
    """Asserts every layer's overflow bounds; {network/layer: its accumulator bound}."""
    out = {}
    for net, layers in ip.items():
        if net == "io":
            continue
        flat = {None: layers} if "kernel" in layers else layers
        for layer, q in flat.items():
            _check_layer(q)
            out[f"{net}/{layer}"] = int(_accumulator_bound(q["kernel"], q["bias"]).max())
    return out


def integerize(config: ModelConfig, params, z_medians, stats: dict) -> dict:
    """The integer entropy path of float `params`, scaled to calibration `stats`.

    Pure: the same parameters and statistics give the same integers on every machine
    (float64 NumPy, no XLA). Returns a tree of int arrays, what `variables
    ["integer_entropy"]` holds: one {kernel int8, bias, multiplier, shift, limit, up, low,
    high int32} per layer, and "io" (z_shift, z_medians, y_shift, thresholds).
    """
    from tgic_jax.coding.tables import scale_table, scale_thresholds

    specs = layer_specs(config)
    a = ACTIVATION_LIMIT
    e_z = _exponent(stats["z_hat"])
    e_y = [_exponent(stats[("y_hat", i)]) for i in range(len(config.slices))]
    scale_of = {}  # a network's output scale (per tensor)

    def out_scale(net):
        return _activation_scale(stats[(net, specs[net][-1][0])])

    def build(net, s_in, final_scale=None):
        layers, s = {}, s_in
        for j, (layer, kind, k, stride, relu) in enumerate(specs[net]):
            p = _layer_params(params, net, layer)
            kernel, bias = _correlation_kernel(kind, k, stride, p["kernel"], p["bias"])
            last = j == len(specs[net]) - 1
            if last and final_scale is not None:
                s_out, low, high = final_scale, -OUTPUT_LIMIT, OUTPUT_LIMIT
            else:
                s_out = _activation_scale(stats[(net, layer)])
                low, high = (0 if relu else -a), a
            q = _quantize_layer(kernel, bias, s, np.full(kernel.shape[-1], s_out), low, high)
            if layer is None:
                layers = q
            else:
                layers[layer] = q
            s = np.full(kernel.shape[-1] // (stride * stride if kind == "transposed" else 1), s_out)
        return layers

    ip = {"h_s": build("h_s", np.full(config.N, 2.0**-e_z))}
    scale_of["hyper"] = np.full(2 * config.M, out_scale("h_s"))
    fixed = 2.0**-FRACTION_BITS
    for i, c in enumerate(config.slices):
        ctx = []
        if i:
            net = f"channel_context_{i}"
            s_in = np.concatenate([np.full(config.slices[j], 2.0 ** -e_y[j]) for j in range(i)])
            ip[net] = build(net, s_in)
            ctx = [np.full(2 * c, out_scale(net))]
        net = f"local_context_{i}"
        ip[net] = build(net, np.full(c, 2.0 ** -e_y[i]))
        local = [np.full(2 * c, out_scale(net))]
        ip[f"entropy_parameters_anchor_{i}"] = build(
            f"entropy_parameters_anchor_{i}", np.concatenate([*ctx, scale_of["hyper"]]), fixed
        )
        ip[f"entropy_parameters_nonanchor_{i}"] = build(
            f"entropy_parameters_nonanchor_{i}",
            np.concatenate([*local, *ctx, scale_of["hyper"]]),
            fixed,
        )
    thresholds = scale_thresholds(scale_table()).astype(np.float64)
    ip["io"] = {
        "z_shift": np.array(e_z, np.int32),
        "z_medians": np.floor(np.asarray(z_medians, np.float64) * 2.0**e_z + 0.5).astype(np.int32),
        "y_shift": np.array(e_y, np.int32),
        "thresholds": np.floor(thresholds * 2.0**FRACTION_BITS + 0.5).astype(np.int32),
    }
    return ip
