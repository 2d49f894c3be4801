"""Bjontegaard metrics: published examples, an independent integral, exact analytic cases."""

import math

import numpy as np
import pytest
from scipy import integrate, interpolate

from tgic_jax.evaluation import bdrate

# "Sample 1" of the public Bjontegaard reference script github.com/Anserw/Bjontegaard_metric
# (demo.py): rates in kbit/s, PSNR in dB. The script prints its result but does not publish it.
SAMPLE1_ANCHOR = ([686.76, 309.58, 157.11, 85.95], [40.28, 37.18, 34.24, 31.42])
SAMPLE1_TEST = ([893.34, 407.8, 204.93, 112.75], [40.39, 37.21, 34.17, 31.24])
# "Test case 1" of github.com/FAU-LMS/bjontegaard (example_usage.py), libx265 presets.
FAU_ANCHOR = ([9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851])
FAU_TEST = ([9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987])


def _linear_vector(slope, offset=0.0):
    """google/compare-codecs lib/visual_metrics_unittest.py: rates 10..40, psnr = slope*rate."""
    rates = [10.0, 20.0, 30.0, 40.0]
    return rates, [r * slope + offset for r in rates]


def _reference_bd_rate(anchor, test):
    """Independent evaluation: the unique cubic through the 4 points (scipy Lagrange form),
    integrated numerically with adaptive quadrature over the common PSNR range."""
    (ra, da), (rt, dt) = anchor, test
    fa = interpolate.BarycentricInterpolator(da, np.log(ra))
    ft = interpolate.BarycentricInterpolator(dt, np.log(rt))
    lo, hi = max(min(da), min(dt)), min(max(da), max(dt))
    ia, _ = integrate.quad(lambda d: float(fa(d)), lo, hi, epsabs=1e-13, epsrel=1e-13)
    it, _ = integrate.quad(lambda d: float(ft(d)), lo, hi, epsabs=1e-13, epsrel=1e-13)
    return (math.exp((it - ia) / (hi - lo)) - 1.0) * 100.0


def test_bd_rate_matches_published_compare_codecs_example():
    # compare-codecs asserts -50 % (delta 0.5) and +100 % (delta 2.0) for a doubled rate.
    base, doubled = _linear_vector(1.0), _linear_vector(2.0)
    assert bdrate.bd_rate(*base, *doubled) == pytest.approx(-50.0, abs=0.5)
    assert bdrate.bd_rate(*doubled, *base) == pytest.approx(100.0, abs=2.0)
    # ... and its BD-PSNR example: a constant +2 dB shift gives exactly 2 dB.
    assert bdrate.bd_psnr(*base, *_linear_vector(1.0, 2.0)) == pytest.approx(2.0, abs=1e-9)


@pytest.mark.parametrize(
    "anchor,test", [(SAMPLE1_ANCHOR, SAMPLE1_TEST), (FAU_ANCHOR, FAU_TEST)], ids=["anserw", "fau"]
)
def test_bd_rate_matches_independent_numerical_integral_within_0p1_percent(anchor, test):
    ours = bdrate.bd_rate(*anchor, *test)
    reference = _reference_bd_rate(anchor, test)
    assert ours == pytest.approx(reference, rel=1e-3)
    assert ours == pytest.approx(reference, abs=1e-6)  # in fact to round-off


def test_bd_rate_on_published_inputs_has_expected_value():
    # Values of the VCEG-M33 formulas on these inputs (checked above against quadrature);
    # a public TypeScript port of the same method lists 31.397374054908013 and -4.4204627061.
    assert bdrate.bd_rate(*SAMPLE1_ANCHOR, *SAMPLE1_TEST) == pytest.approx(31.3973740549, abs=1e-6)
    assert bdrate.bd_rate(*FAU_ANCHOR, *FAU_TEST) == pytest.approx(-4.4204627062, abs=1e-6)


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.25, 3.0])
def test_rate_scaled_curve_gives_bd_rate_exactly_factor_minus_one(factor):
    rates, dist = SAMPLE1_ANCHOR
    scaled = [r * factor for r in rates]
    assert bdrate.bd_rate(rates, dist, scaled, dist) == pytest.approx(
        (factor - 1.0) * 100.0, abs=1e-9
    )


def test_bd_rate_is_symmetric_in_sign_when_curves_swap():
    forward = bdrate.bd_rate(*FAU_ANCHOR, *FAU_TEST)
    backward = bdrate.bd_rate(*FAU_TEST, *FAU_ANCHOR)
    assert forward < 0 < backward
    # Exactly inverse in the log domain: (1 + f)(1 + b) = 1.
    assert (1 + forward / 100) * (1 + backward / 100) == pytest.approx(1.0, abs=1e-12)
    assert bdrate.bd_psnr(*FAU_ANCHOR, *FAU_TEST) == pytest.approx(
        -bdrate.bd_psnr(*FAU_TEST, *FAU_ANCHOR), abs=1e-12
    )
    assert bdrate.bd_rate(*FAU_ANCHOR, *FAU_ANCHOR) == pytest.approx(0.0, abs=1e-12)


def test_bd_psnr_of_a_better_codec_is_positive_and_matches_the_rate_direction():
    assert bdrate.bd_psnr(*FAU_ANCHOR, *FAU_TEST) > 0  # test codec: more dB at the same rate
    assert bdrate.bd_psnr(*SAMPLE1_ANCHOR, *SAMPLE1_TEST) < 0


def test_curves_without_overlap_or_with_bad_points_raise_a_clear_error():
    rates, dist = SAMPLE1_ANCHOR
    with pytest.raises(bdrate.BDError, match="overlap"):
        bdrate.bd_rate(rates, dist, rates, [d + 40 for d in dist])
    with pytest.raises(bdrate.BDError, match="positive"):
        bdrate.bd_rate(rates, dist, [-1.0, 2.0, 3.0, 4.0], dist)
    with pytest.raises(bdrate.BDError, match="at least 2"):
        bdrate.bd_rate(rates, dist, [1.0], [30.0])
    out = bdrate.bd_metrics(rates, dist, rates, [d + 40 for d in dist])
    assert out["bd_rate_percent"] is None and "overlap" in out["note"]


def test_fewer_than_four_points_fall_back_to_a_lower_degree_and_say_so():
    rates, dist = SAMPLE1_ANCHOR
    out = bdrate.bd_metrics(rates[:2], dist[:2], [r * 0.9 for r in rates[:2]], dist[:2])
    assert out["degree"] == 1
    assert out["bd_rate_percent"] == pytest.approx(-10.0, abs=1e-9)
    assert "degree 1" in out["note"]
