"""CompressAI 1.2.8's coder buffers, as its `update(force=True)` writes them, from parameters.

The authors' checkpoints carry, beside the parameters, the range-coder state that
CompressAI's entropy models keep in buffers. A checkpoint we export must hold the same
buffers, or their `compress()` refuses to run ("Uninitialized CDFs"). The rules, read off
CompressAI 1.2.8 (`entropy_models.py` and `cpp_exts/ops/ops.cpp`):

- EntropyBottleneck (z): medians = quantiles[:, 0, 1]; minima = max(ceil(median - q0), 0),
  maxima = max(ceil(q2 - median), 0); offset = -minima; the pmf of the factorized density
  at the integers median - minima + 0 .. max_length - 1 (one max_length for all channels),
  pmf = sigmoid(upper) - sigmoid(lower) with no floor; tail = sigmoid(lower[first]) +
  sigmoid(-upper[last of max_length]) (the last sample of the longest channel, for every
  channel); cdf_length = length + 2.
- GaussianConditional (y): scale table exp(linspace(ln 0.11, ln 256, 64)); center =
  ceil(scale * 6.109) (the 1e-9 tail quantile); pmf over |k - center|, k < max_length;
  tail = 2 * lower[0]; offset = -center; cdf_length = 2 center + 3.
- pmf_to_quantized_cdf: each row is pmf[:length] + [tail], frequencies round(p * 2^16)
  (half away from zero), rescaled by 2^16 / total with integer division, summed, the last
  entry forced to 2^16, then every zero-width bin steals one count from the narrowest
  bin wider than one. Rows are zero-padded to max_length + 2.

Everything is float32 numpy op for op as torch 2.x computes it on a CPU (the matmul's
summation order, SLEEF's exp inside sigmoid and softplus, tanh rounded once): on the
parity fixture and on a model trained here this reproduces their `_quantized_cdf`,
`_offset` and `_cdf_length` bit for bit. SLEEF's log1p is approximated by the correctly
rounded one, so where a pmf entry sits on a rounding boundary a CDF entry can differ by
one count (on 768 randomly perturbed bottleneck channels: 33 of 24,576 entries, never
more than one). XLA's float32 functions, a few ulps off torch's, would be further off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import scipy.special

from tgic_jax.coding.tables import NUM_SCALES, SCALE_MAX, SCALE_MIN
from tgic_jax.model import entropy_models as em

PRECISION = 16
_F32 = np.float32


def pmf_to_quantized_cdf(pmf: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """CompressAI's quantized CDF (int64, len(pmf) + 1 entries, 0 .. 2**precision)."""
    pmf = np.asarray(pmf, _F32)
    if pmf.ndim != 1 or np.any(~np.isfinite(pmf)) or np.any(pmf < 0):
        raise ValueError("pmf must be a 1-D vector of finite non-negative probabilities")
    top = 1 << precision
    # p * 2^16 is exact in float32; floor(x + 0.5) in float64 is C's round() for x >= 0.
    freq = np.floor(pmf.astype(np.float64) * top + 0.5).astype(np.int64)
    total = int(freq.sum())
    if total == 0:
        raise ValueError("pmf: at least one element must have a non-zero probability")
    cdf = np.zeros(len(pmf) + 1, np.int64)
    np.cumsum((top * freq) // total, out=cdf[1:])
    cdf[-1] = top
    never = np.iinfo(np.int64).max
    for i in range(len(cdf) - 1):
        if cdf[i] != cdf[i + 1]:
            continue
        # A zero-width bin could never be coded: take one count from the narrowest bin
        # wider than one (the first such in order), shifting the entries in between.
        width = np.diff(cdf)
        j = int(np.argmin(np.where(width > 1, width, never)))
        if width[j] <= 1:
            raise ValueError("pmf: no bin to steal a count from (more symbols than 2**precision)")
        if j < i:
            cdf[j + 1 : i + 1] -= 1
        else:
            cdf[i + 1 : j + 1] += 1
    return cdf


def _quantized_cdfs(pmf: np.ndarray, tail: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[rows, max_length + 2] int32: row i is the CDF of pmf[i, :lengths[i]] + [tail[i]]."""
    out = np.zeros((len(lengths), pmf.shape[1] + 2), np.int32)
    for i, n in enumerate(lengths):
        cdf = pmf_to_quantized_cdf(np.concatenate([pmf[i, :n], tail[i : i + 1]]))
        out[i, : len(cdf)] = cdf
    return out


def _standardized_cumulative(x: np.ndarray) -> np.ndarray:
    # torch casts the Python scalars to float32 before the float32 multiply.
    return (_F32(0.5) * scipy.special.erfc(_F32(-(2**-0.5)) * x).astype(_F32)).astype(_F32)


def scale_table(
    minimum: float = SCALE_MIN, maximum: float = SCALE_MAX, levels: int = NUM_SCALES
) -> np.ndarray:
    """The authors' `get_scale_table()`: torch.exp(torch.linspace(ln min, ln max, levels)).

    torch's float32 linspace counts the first half up from `start` and the second half
    down from `end`; torch's vectorized exp can still land one ulp (at most 5e-7 here)
    from the correctly rounded exp taken below.
    """
    start, end = _F32(math.log(minimum)), _F32(math.log(maximum))
    step = (end - start) / _F32(levels - 1)
    idx = np.arange(levels)
    ramp = np.where(
        idx < levels // 2,
        start + step * idx.astype(_F32),
        end - step * (levels - 1 - idx).astype(_F32),
    ).astype(_F32)
    return np.exp(ramp.astype(np.float64)).astype(_F32)


def gaussian_conditional_buffers(scales: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """`gaussian_conditional.*` buffers after `update_scale_table(scales, force=True)`."""
    scales = scale_table() if scales is None else np.asarray(scales, _F32)
    multiplier = _F32(-scipy.special.ndtri(em.TAIL_MASS / 2))
    center = np.ceil(scales * multiplier).astype(np.int32)
    lengths = 2 * center + 1
    samples = np.abs(np.arange(int(lengths.max()), dtype=np.int32)[None] - center[:, None])
    samples = samples.astype(_F32)
    s = scales[:, None]
    upper = _standardized_cumulative((_F32(0.5) - samples) / s)
    lower = _standardized_cumulative((_F32(-0.5) - samples) / s)
    pmf = (upper - lower).astype(_F32)
    tail = (_F32(2) * lower[:, 0]).astype(_F32)
    bound = np.array([em.SCALE_BOUND], _F32)
    return {
        "gaussian_conditional._offset": (-center).astype(np.int32),
        "gaussian_conditional._quantized_cdf": _quantized_cdfs(pmf, tail, lengths),
        "gaussian_conditional._cdf_length": (lengths + 2).astype(np.int32),
        "gaussian_conditional.scale_table": scales.astype(_F32),
        "gaussian_conditional.scale_bound": bound,
        "gaussian_conditional.likelihood_lower_bound.bound": np.array([em.LIKELIHOOD_BOUND], _F32),
        "gaussian_conditional.lower_bound_scale.bound": bound.copy(),
    }


def _f32(fn, x: np.ndarray) -> np.ndarray:
    """fn in float64, rounded once to float32 (glibc's expf; torch's float32 tanh)."""
    return fn(np.asarray(x, np.float64)).astype(_F32)


def _fma(x, y, z) -> np.ndarray:
    # x * y is exact in float64 for float32 operands; one rounding of the sum, to float32.
    return (np.float64(x) * np.float64(y) + np.float64(z)).astype(_F32)


def _sleef_expf(d: np.ndarray) -> np.ndarray:
    """SLEEF's expf_u10 (what torch's vectorized float32 exp runs), operation for operation.

    Not correctly rounded: on 100,001 points in [-15, 15], torch.sigmoid agrees with this
    everywhere and with a correctly rounded exp on only 96 %.
    """
    d = np.asarray(d, _F32)
    q = np.rint(
        (d * _F32(1.442695040888963407359924681001892137426645954152985934135449406931)).astype(
            _F32
        )
    )
    s = _fma(q, _F32(-0.693145751953125), d)
    s = _fma(q, _F32(-1.428606765330187045e-06), s)
    u = np.full_like(s, _F32(0.000198527617612853646278381))
    for c in (
        0.00139304355252534151077271,
        0.00833336077630519866943359,
        0.0416664853692054748535156,
        0.166666671633720397949219,
        0.5,
    ):
        u = _fma(u, s, _F32(c))
    u = (_F32(1) + _fma((s * s).astype(_F32), u, s)).astype(_F32)
    out = np.ldexp(u.astype(np.float64), q.astype(np.int32)).astype(_F32)
    return np.where(d < -104, _F32(0), np.where(d > 104, _F32(np.inf), out)).astype(_F32)


def _torch_unary(x: np.ndarray, vectorized, scalar, contiguous: bool = True) -> np.ndarray:
    """A torch CPU elementwise op: SIMD on whole pairs of 512-bit vectors, scalar on the rest.

    torch's `cpu_kernel_vec` runs the vectorized lambda on 32 floats at a time (AVX-512)
    and the scalar one on the tail, or everywhere when the input is strided.
    """
    flat = np.ascontiguousarray(x, _F32).reshape(-1)
    split = (flat.size // 32) * 32 if contiguous else 0
    out = np.concatenate([vectorized(flat[:split]), scalar(flat[split:])]).astype(_F32)
    return out.reshape(np.shape(x))


def _softplus(x: np.ndarray) -> np.ndarray:
    # torch.nn.functional.softplus: beta 1, linear above threshold 20, log1p(exp(x)) with
    # each step in float32 (SLEEF's log1p is approximated by the correctly rounded one).
    def vec(v):
        return _f32(np.log1p, _sleef_expf(v))

    def one(v):
        return _f32(np.log1p, _f32(np.exp, v))

    return np.where(x > 20, x, _torch_unary(x, vec, one)).astype(_F32)


def _sigmoid(x: np.ndarray, contiguous: bool = True) -> np.ndarray:
    # torch's CPU sigmoid: 1 / (1 + exp(-x)), each step in float32.
    def vec(v):
        return _F32(1) / (_F32(1) + _sleef_expf(-v))

    def one(v):
        return _F32(1) / (_F32(1) + _f32(np.exp, -v))

    return _torch_unary(x, vec, one, contiguous)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[C, m, k] @ [C, k, n] as torch's CPU bmm sums k = 3 terms: in order, no FMA.

    numpy's float32 matmul (BLAS) rounds differently on 920 of 2400 outputs of one layer.
    """
    out = (a[:, :, :1] * b[:, :1, :]).astype(_F32)
    for j in range(1, a.shape[2]):
        out = (out + (a[:, :, j : j + 1] * b[:, j : j + 1, :]).astype(_F32)).astype(_F32)
    return out


def _logits_cumulative(eb: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """CompressAI's `_logits_cumulative` in float32 ([C, 1, n] -> [C, 1, n])."""
    logits = x.astype(_F32)
    n_layers = len(em.BOTTLENECK_FILTERS) + 1
    for i in range(n_layers):
        logits = _matmul(_softplus(eb[f"matrices.{i}"]), logits)
        logits = (logits + eb[f"biases.{i}"]).astype(_F32)
        if i < n_layers - 1:
            gate = (_f32(np.tanh, eb[f"factors.{i}"]) * _f32(np.tanh, logits)).astype(_F32)
            logits = (logits + gate).astype(_F32)
    return logits


def entropy_bottleneck_buffers(eb: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`entropy_bottleneck.*` buffers after `update(force=True)`; eb holds its torch tensors.

    `eb` maps the parameter names inside the bottleneck (`quantiles`, `matrices.0`, ...)
    to float32 arrays in CompressAI's layout. Quantiles are used as they are
    (`update_quantiles=False`, CompressAI's default and the authors' call).
    """
    eb = {k: np.asarray(v, _F32) for k, v in eb.items()}
    q = eb["quantiles"]
    if q.ndim != 3 or q.shape[1:] != (1, 3):
        raise ValueError(f"entropy_bottleneck.quantiles: expected [C, 1, 3], got {q.shape}")
    medians = q[:, 0, 1]
    minima = np.maximum(np.ceil(medians - q[:, 0, 0]).astype(np.int32), 0)
    maxima = np.maximum(np.ceil(q[:, 0, 2] - medians).astype(np.int32), 0)
    lengths = minima + maxima + 1
    start = (medians - minima.astype(_F32)).astype(_F32)
    samples = (np.arange(int(lengths.max()), dtype=_F32)[None] + start[:, None, None]).astype(_F32)
    lower = _logits_cumulative(eb, samples - _F32(0.5))
    upper = _logits_cumulative(eb, samples + _F32(0.5))
    pmf = (_sigmoid(upper) - _sigmoid(lower))[:, 0, :]
    # lower[:, 0, :1] is a strided view in torch (scalar path); -upper[..., -1:] is not.
    tail = (_sigmoid(lower[:, 0, 0], contiguous=False) + _sigmoid(-upper[:, 0, -1])).astype(_F32)
    return {
        "entropy_bottleneck._offset": (-minima).astype(np.int32),
        "entropy_bottleneck._quantized_cdf": _quantized_cdfs(pmf, tail, lengths),
        "entropy_bottleneck._cdf_length": (lengths + 2).astype(np.int32),
        "entropy_bottleneck.target": em.bottleneck_target(),
        "entropy_bottleneck.likelihood_lower_bound.bound": np.array([em.LIKELIHOOD_BOUND], _F32),
    }
