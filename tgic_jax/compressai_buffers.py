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

Everything is float32 numpy op for op as torch computes it: on the parity fixture this
reproduces their `_quantized_cdf`, `_offset` and `_cdf_length` bit for bit, which XLA's
float32 tanh/softplus (a few ulps off torch's on 401 of 928 pmf entries) does not promise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import scipy.special

from tgic_jax import entropy_models as em
from tgic_jax.coding_tables import NUM_SCALES, SCALE_MAX, SCALE_MIN

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


def _softplus(x: np.ndarray) -> np.ndarray:
    # torch.nn.functional.softplus: beta 1, linear above threshold 20.
    return np.where(x > 20, x, np.log1p(np.exp(x))).astype(_F32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (_F32(1) / (_F32(1) + np.exp(-x))).astype(_F32)


def _logits_cumulative(eb: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """CompressAI's `_logits_cumulative` in float32 ([C, 1, n] -> [C, 1, n])."""
    logits = x.astype(_F32)
    n_layers = len(em.BOTTLENECK_FILTERS) + 1
    for i in range(n_layers):
        logits = np.matmul(_softplus(eb[f"matrices.{i}"]), logits).astype(_F32)
        logits = (logits + eb[f"biases.{i}"]).astype(_F32)
        if i < n_layers - 1:
            logits = (logits + np.tanh(eb[f"factors.{i}"]) * np.tanh(logits)).astype(_F32)
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
    tail = (_sigmoid(lower[:, 0, 0]) + _sigmoid(-upper[:, 0, -1])).astype(_F32)
    return {
        "entropy_bottleneck._offset": (-minima).astype(np.int32),
        "entropy_bottleneck._quantized_cdf": _quantized_cdfs(pmf, tail, lengths),
        "entropy_bottleneck._cdf_length": (lengths + 2).astype(np.int32),
        "entropy_bottleneck.target": em.bottleneck_target(),
        "entropy_bottleneck.likelihood_lower_bound.bound": np.array([em.LIKELIHOOD_BOUND], _F32),
    }
