"""Range-coding tables: a pure function of the parameters (CompressAI's `update()`, no state).

Computed in float64 NumPy/SciPy, never by XLA, so that every CPU builds the same tables and
fingerprint from the same parameters (`bottleneck_tables` says why).

Two families of quantized CDFs, both at 16-bit precision (`quantize_pmf`, our own rule),
each ending in an overflow bin that escapes values beyond the table (`range_coder`), so no
symbol is ever out of range:

- Gaussian (y): one table per entry of the scale table exp(linspace(ln 0.11, ln 256, 64)).
  Table k covers the integer offsets -c..c around the mean, c = ceil(s_k * 6.1) (the
  1e-9 tail quantile), followed by one overflow bin holding the tail mass.
- Factorized (z): one table per channel, over median - minima .. median + maxima with
  minima/maxima from the bottleneck's quantiles, plus the tail mass as overflow bin.

Layout (what `range_coder.RangeEncoder` takes as `lookup`): the tables of one family
concatenated into one int32 vector, each preceded by its precision negated (-16), so
index k selects table k. A symbol s is coded as the value s - offset[k]; values outside
[0, length) are escaped.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import scipy.special
from flax.traverse_util import flatten_dict

from tgic_jax.model import entropy_models as em

PRECISION = 16
NUM_SCALES = 64
SCALE_MIN = em.SCALE_BOUND
SCALE_MAX = 256.0
TABLE_KEYS = (
    "scale_table",
    "gaussian_lookup",
    "gaussian_offset",
    "z_lookup",
    "z_offset",
    "z_medians",
)


def scale_table() -> np.ndarray:
    """The 64 Gaussian scales, float32, log-spaced from 0.11 to 256."""
    logs = np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), NUM_SCALES)
    return np.array([math.exp(v) for v in logs], np.float64).astype(np.float32)


def scale_thresholds(scales: np.ndarray) -> np.ndarray:
    """Where the table index steps up: the geometric midpoints of neighbouring scales.

    A scale s codes with table k when thresholds[k-1] < s <= thresholds[k], i.e. with the
    nearest table entry in log scale. Coding N(s) with N(s') costs KL = ln(s'/s) +
    s^2 / (2 s'^2) - 1/2 nats; the break-even point between two neighbours (ratio 1.131)
    lies 0.1 % from their geometric midpoint. Rounding every scale up instead (CompressAI)
    measured +1.8 % y bits over the estimate on a trained model; nearest: -0.3 %.
    """
    s = np.asarray(scales, np.float64)
    return np.sqrt(s[:-1] * s[1:]).astype(np.float32)


def _tail_multiplier(tail_mass: float = em.TAIL_MASS) -> float:
    """-Phi^-1(tail / 2): how many scales out the table must reach (6.109 for 1e-9)."""
    return float(-scipy.special.ndtri(tail_mass / 2))


def _std_cumulative(x: np.ndarray) -> np.ndarray:
    return 0.5 * scipy.special.erfc(-(2**-0.5) * x)


def quantize_pmf(pmf: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Probabilities -> integer counts >= 1 that sum to 2^precision (int64, same length).

    Bins whose share of 2^precision is below one count get exactly one; the rest share what
    is left in proportion to their probability, by largest remainders (Hamilton's rule):
    floor of each share, then one more count to the largest fractional parts, ties to the
    lower index. Only IEEE-exact operations (products, quotients, floors, sorts), so every
    CPU gets the same counts from the same float64 pmf.
    """
    p = np.asarray(pmf, np.float64)
    if p.ndim != 1 or not len(p) or not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("pmf must be a non-empty vector of finite non-negative numbers")
    total = 1 << precision
    if len(p) > total:
        raise ValueError(f"{len(p)} bins cannot each keep a count of 2^-{precision}")
    p = p / math.fsum(p) if math.fsum(p) > 0 else np.full(len(p), 1.0 / len(p))
    floor_only = np.zeros(len(p), bool)
    while True:  # a bin pushed to one count leaves less for the others: repeat until stable
        left = total - int(floor_only.sum())
        mass = math.fsum(p[~floor_only])
        share = np.where(floor_only, 0.0, p * (left / mass))
        grow = ~floor_only & (share < 1.0)
        if not grow.any():
            break
        floor_only |= grow
    counts = np.where(floor_only, 1, np.floor(share)).astype(np.int64)
    remainder = np.where(floor_only, -1.0, share - np.floor(share))
    extra = total - int(counts.sum())
    counts[np.argsort(-remainder, kind="stable")[:extra]] += 1
    return counts


def quantize_pmfs(pmfs: list[np.ndarray], precision: int = PRECISION) -> np.ndarray:
    """[pmf] per table -> the concatenated lookup [-precision, cdf..., ...], overflow bin added."""
    parts = []
    for pmf in pmfs:
        # The overflow (escape) bin holds the mass outside the table, at least one count.
        # math.fsum: exactly rounded, so no summation order (SIMD width) shows in the tables.
        overflow = max(1.0 - math.fsum(np.asarray(pmf, np.float64)), 2.0**-precision)
        counts = quantize_pmf(np.concatenate([np.asarray(pmf, np.float64), [overflow]]), precision)
        cdf = np.concatenate([[0], np.cumsum(counts)])
        parts.append(np.concatenate([[-precision], cdf]).astype(np.int32))
    return np.concatenate(parts)


def gaussian_tables(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lookup, offset [64]) for zero-mean Gaussians of the given scales."""
    centers = np.ceil(scales.astype(np.float64) * _tail_multiplier()).astype(np.int64)
    pmfs = []
    for s, c in zip(scales.astype(np.float64), centers, strict=True):
        v = np.abs(np.arange(-c, c + 1, dtype=np.float64))
        pmfs.append(_std_cumulative((0.5 - v) / s) - _std_cumulative((-0.5 - v) / s))
    return quantize_pmfs(pmfs), (-centers).astype(np.int32)


def _logits_cumulative_f64(eb: dict, x: np.ndarray) -> np.ndarray:
    """`entropy_models.bottleneck_logits_cumulative` in float64 NumPy, in a fixed order.

    The matrices are at most 3 x 3, so each product is written out as elementwise
    multiply-adds (IEEE-exact per operation, no BLAS or FMA whose rounding varies by CPU).
    """
    logits = x
    n_layers = len(em.BOTTLENECK_FILTERS) + 1
    for i in range(n_layers):
        matrix = np.logaddexp(0.0, eb[f"matrices_{i}"])  # softplus, [C, out, in]
        out = eb[f"biases_{i}"] + matrix[:, :, :1] * logits[:, :1, :]
        for k in range(1, matrix.shape[2]):
            out = out + matrix[:, :, k : k + 1] * logits[:, k : k + 1, :]
        logits = out
        if i < n_layers - 1:
            logits = logits + np.tanh(eb[f"factors_{i}"]) * np.tanh(logits)
    return logits


def bottleneck_tables(eb_params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lookup, offset [N], medians [N]) for the factorized prior of z.

    Portable: computed in float64 NumPy from the float32 parameters, never by XLA, whose
    float32 results differ in their low bits between instruction sets (AVX-512 vs SSE4.2,
    x86 vs ARM) and once gave another CPU other tables, so another fingerprint. Float64
    results that differ by a few ulp between math libraries change nothing after the
    rounding to float32 and then to 16-bit counts, except for a value within ~2^-26 of a
    rounding boundary.
    """
    eb = {k: np.asarray(v, np.float32).astype(np.float64) for k, v in eb_params.items()}
    q = eb["quantiles"][:, 0, :]
    medians = q[:, 1]
    minima = np.maximum(np.ceil(medians - q[:, 0]), 0).astype(np.int64)
    maxima = np.maximum(np.ceil(q[:, 2] - medians), 0).astype(np.int64)
    lengths = minima + maxima + 1
    n = int(lengths.max())
    # Sample every channel at n steps from its own start; each keeps its first `length`.
    samples = (medians[:, None] - minima[:, None] + np.arange(n))[:, None, :]
    lower = _logits_cumulative_f64(eb, samples - 0.5)[:, 0, :]
    upper = _logits_cumulative_f64(eb, samples + 0.5)[:, 0, :]
    # CompressAI's sign trick (difference of the sigmoids on the side where they are small).
    sign = -np.sign(lower + upper)
    lik = np.abs(scipy.special.expit(sign * upper) - scipy.special.expit(sign * lower))
    lik = np.maximum(lik, em.LIKELIHOOD_BOUND)
    pmfs = []
    for ch, length in enumerate(lengths):
        # Tail mass outside the table: below its first bin and above its last.
        tail = scipy.special.expit(lower[ch, 0]) + scipy.special.expit(-upper[ch, length - 1])
        pmf = lik[ch, :length]
        # The overflow bin is 1 - sum(pmf) in `quantize_pmfs`; keep at least the tail.
        pmf = pmf * min(1.0, (1.0 - tail) / max(math.fsum(pmf), 1e-12))
        pmfs.append(pmf)
    return quantize_pmfs(pmfs), (-minima).astype(np.int32), medians.astype(np.float32)


def build_tables(params) -> dict[str, np.ndarray]:
    """All coding tables from the model parameters (the same on every platform)."""
    scales = scale_table()
    g_lookup, g_offset = gaussian_tables(scales)
    z_lookup, z_offset, z_medians = bottleneck_tables(params["entropy_bottleneck"])
    return {
        "scale_table": scales,
        "gaussian_lookup": g_lookup,
        "gaussian_offset": g_offset,
        "z_lookup": z_lookup,
        "z_offset": z_offset,
        "z_medians": z_medians,
    }


def split_lookup(lookup: np.ndarray) -> list[np.ndarray]:
    """The concatenated lookup back into its CDFs (each without the precision entry)."""
    lookup = np.asarray(lookup)
    cdfs, i = [], 0
    while i < len(lookup):
        if lookup[i] >= 0:
            raise ValueError(f"lookup entry {i} is not a (negated) precision")
        top = 2 ** -int(lookup[i])
        # A CDF ends at its first entry equal to 2**precision.
        ends = np.flatnonzero(lookup[i + 1 :] == top)
        if not len(ends):
            raise ValueError(f"lookup CDF at {i} never reaches {top}")
        end = i + 2 + int(ends[0])
        cdfs.append(lookup[i + 1 : end])
        i = end
    return cdfs


def check_tables(tables) -> None:
    """Raises ValueError when `tables` lacks a key or its arrays disagree in size."""
    missing = [k for k in TABLE_KEYS if k not in tables]
    if missing:
        raise ValueError(f"coding tables lack {', '.join(missing)}")
    if len(tables["scale_table"]) != len(tables["gaussian_offset"]):
        raise ValueError("coding tables: scale table and Gaussian offsets differ in size")
    if len(tables["z_offset"]) != len(tables["z_medians"]):
        raise ValueError("coding tables: z offsets and medians differ in size")


def fingerprint(model_config: dict, tables, integer_entropy=None) -> bytes:
    """SHA-256 over the model sizes and every coding table (first bytes go in each file).

    With `integer_entropy` (the integer entropy path's parameters) every one of its arrays
    is hashed too, by path: the integer path of other calibration is another model.
    """
    h = hashlib.sha256()
    h.update(json.dumps(model_config, sort_keys=True).encode())
    for key in TABLE_KEYS:
        a = np.ascontiguousarray(np.asarray(tables[key]))
        h.update(f"{key}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    if integer_entropy is not None:
        for path, leaf in sorted(flatten_dict(integer_entropy, sep="/").items()):
            a = np.ascontiguousarray(np.asarray(leaf))
            h.update(f"integer_entropy/{path}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
    return h.digest()
