"""Bjontegaard delta rate and delta PSNR between two rate-distortion curves (VCEG-M33).

The classic method of the common reference scripts (Bjontegaard's VCEG-M33 and its
Python ports): fit a cubic polynomial through each curve, distortion against the natural
log of the rate (BD-rate) or log-rate against distortion (BD-PSNR), integrate both fits
over the interval where the curves overlap, and compare the mean values:

    BD-rate = exp(mean(log R_test - log R_anchor over the common distortion range)) - 1
    BD-PSNR = mean(D_test - D_anchor over the common log-rate range)

A negative BD-rate means the test codec needs fewer bits for the same quality. The
distortion axis can be any quality metric (PSNR, MS-SSIM in dB, LPIPS): the integral
is over the metric's values, so its direction does not matter for BD-rate.

With fewer than 4 points the polynomial degree drops to (points - 1) so that the fit
still interpolates; the reference scripts require 4 points, so such numbers are labelled
by the caller (`bd_metrics` reports the degree used).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


class BDError(ValueError):
    """The curves cannot be compared (too few points, bad rates, no overlap)."""


def _prepare(rate: Sequence[float], dist: Sequence[float], name: str):
    rate = np.asarray(rate, np.float64).ravel()
    dist = np.asarray(dist, np.float64).ravel()
    if rate.shape != dist.shape:
        raise BDError(f"{name}: {rate.size} rates but {dist.size} distortion values")
    keep = np.isfinite(rate) & np.isfinite(dist)
    rate, dist = rate[keep], dist[keep]
    if rate.size < 2:
        raise BDError(f"{name}: needs at least 2 finite rate-distortion points, got {rate.size}")
    if np.any(rate <= 0):
        raise BDError(f"{name}: rates must be positive, got {rate.tolist()}")
    if np.unique(dist).size < 2 or np.unique(rate).size < 2:
        raise BDError(f"{name}: points must differ in rate and in distortion")
    return np.log(rate), dist


def _mean_of_fit(x: np.ndarray, y: np.ndarray, lo: float, hi: float, degree: int) -> float:
    """Mean of the degree-`degree` least-squares fit y(x) over [lo, hi] (exact integral)."""
    antiderivative = np.polyint(np.polyfit(x, y, degree))
    return float((np.polyval(antiderivative, hi) - np.polyval(antiderivative, lo)) / (hi - lo))


def _overlap(a: np.ndarray, b: np.ndarray, what: str) -> tuple[float, float]:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if not hi > lo:
        raise BDError(
            f"the curves do not overlap in {what}: [{a.min():.4g}, {a.max():.4g}] vs "
            f"[{b.min():.4g}, {b.max():.4g}]"
        )
    return float(lo), float(hi)


def fit_degree(num_points_a: int, num_points_b: int) -> int:
    """Polynomial degree used: 3 (the standard) unless a curve has fewer than 4 points."""
    return min(3, num_points_a - 1, num_points_b - 1)


def bd_rate(
    rate_anchor: Sequence[float],
    dist_anchor: Sequence[float],
    rate_test: Sequence[float],
    dist_test: Sequence[float],
) -> float:
    """BD-rate of test against anchor in percent (negative: test needs fewer bits)."""
    log_ra, da = _prepare(rate_anchor, dist_anchor, "anchor")
    log_rt, dt = _prepare(rate_test, dist_test, "test")
    degree = fit_degree(da.size, dt.size)
    lo, hi = _overlap(da, dt, "distortion")
    diff = _mean_of_fit(dt, log_rt, lo, hi, degree) - _mean_of_fit(da, log_ra, lo, hi, degree)
    return (math.exp(diff) - 1.0) * 100.0


def bd_psnr(
    rate_anchor: Sequence[float],
    dist_anchor: Sequence[float],
    rate_test: Sequence[float],
    dist_test: Sequence[float],
) -> float:
    """BD-PSNR (generally BD-distortion) of test against anchor, in the metric's units."""
    log_ra, da = _prepare(rate_anchor, dist_anchor, "anchor")
    log_rt, dt = _prepare(rate_test, dist_test, "test")
    degree = fit_degree(da.size, dt.size)
    lo, hi = _overlap(log_ra, log_rt, "log-rate")
    return _mean_of_fit(log_rt, dt, lo, hi, degree) - _mean_of_fit(log_ra, da, lo, hi, degree)


def bd_metrics(
    rate_anchor: Sequence[float],
    dist_anchor: Sequence[float],
    rate_test: Sequence[float],
    dist_test: Sequence[float],
) -> dict:
    """{'bd_rate_percent', 'bd_distortion', 'degree', 'note'}; values None when undefined."""
    out = {"bd_rate_percent": None, "bd_distortion": None, "degree": None, "note": ""}
    try:
        out["bd_rate_percent"] = bd_rate(rate_anchor, dist_anchor, rate_test, dist_test)
        out["bd_distortion"] = bd_psnr(rate_anchor, dist_anchor, rate_test, dist_test)
        out["degree"] = fit_degree(len(rate_anchor), len(rate_test))
        if out["degree"] < 3:
            out["note"] = f"fit of degree {out['degree']}: fewer than 4 points on a curve"
    except BDError as err:
        out["note"] = str(err)
    return out
