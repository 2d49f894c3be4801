"""The range decoder knows when a stream ended before its symbols (the coder alone cannot)."""

from __future__ import annotations

import numpy as np
import pytest

from tgic_jax.coding import tables as ct
from tgic_jax.coding.range_coder import SLACK_BITS, RangeDecoder, RangeEncoder, SymbolCosts


@pytest.fixture(scope="module")
def gaussian():
    lookup, offset = ct.gaussian_tables(ct.scale_table())
    return lookup, offset, SymbolCosts.from_lookup(lookup)


def _stream(lookup, offset, rng, n, scales=(0, 40)):
    idx = rng.integers(*scales, n).astype(np.int32)
    sym = np.rint(rng.normal(size=n) * ct.scale_table()[idx]).astype(np.int32)
    enc = RangeEncoder(lookup)
    enc.encode(sym - offset[idx], idx)
    return enc.finish(), sym - offset[idx], idx


def test_symbol_costs_are_minus_log2_of_the_bin_probability_plus_one_count(gaussian):
    lookup, _, costs = gaussian
    cdfs = ct.split_lookup(lookup)
    k = 10
    p = np.diff(cdfs[k]) / 2**16
    np.testing.assert_allclose(
        costs.bins[costs.starts[k] : costs.starts[k] + len(p) - 1], -np.log2(p[:-1] + 2**-16)
    )
    assert costs.overflow[k] == pytest.approx(-np.log2(p[-1] + 2**-16))
    # The narrowest table (scale 0.11): its zero bin holds 65533 of 65536 counts.
    assert costs.minimum[0] == pytest.approx(-np.log2(65534 / 65536))
    # An escaped value is charged the overflow bin plus its escape code, counted as 2 (n - 1)
    # bits (-5 folds to u = 9: n = 4; L + 1000 folds to u = 2000: n = 11).
    n_bins = int(costs.lengths[k])
    assert costs.needed_bits(np.array([-5, n_bins + 1000]), np.array([k, k])) == pytest.approx(
        2 * costs.overflow[k] + 6 + 20
    )


def test_valid_streams_never_need_more_bits_than_they_hold(gaussian):
    """No false alarm: hundreds of streams, narrow tables too (whose streams end in zeros)."""
    lookup, offset, costs = gaussian
    rng = np.random.default_rng(0)
    worst = -np.inf
    for trial in range(400):
        scales = (0, 3) if trial % 2 else (0, 64)
        data, values, idx = _stream(lookup, offset, rng, int(rng.integers(1, 400)), scales)
        dec = RangeDecoder(data, lookup, costs)
        np.testing.assert_array_equal(dec.decode(idx), values)
        worst = max(worst, dec.needed_bits - 8 * len(data))
        assert dec.finish(), trial
    print(f"largest excess of needed bits over stream bits: {worst:.1f} (slack {SLACK_BITS})")
    assert worst <= SLACK_BITS


def test_the_bound_is_tight_on_long_streams(gaussian):
    lookup, offset, costs = gaussian
    data, values, idx = _stream(lookup, offset, np.random.default_rng(1), 100_000)
    dec = RangeDecoder(data, lookup, costs)
    dec.decode(idx)
    assert 0.995 * 8 * len(data) <= dec.needed_bits <= 8 * len(data) + SLACK_BITS
    assert dec.finish()


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.9])
def test_a_stream_cut_short_is_reported_damaged(gaussian, keep):
    lookup, offset, costs = gaussian
    data, _, idx = _stream(lookup, offset, np.random.default_rng(2), 20_000)
    assert len(data) > 1000
    dec = RangeDecoder(data[: int(keep * len(data))], lookup, costs)
    dec.decode(idx)  # the coder reads zeros past the end and does not complain
    assert dec.overrun
    assert not dec.finish()


def test_zero_bytes_standing_for_many_symbols_are_reported_damaged(gaussian):
    lookup, _, costs = gaussian
    idx = np.full(1_000_000, 20, np.int32)  # scale ~0.6: each symbol costs >= 0.7 bits
    dec = RangeDecoder(bytes(40), lookup, costs)
    dec.decode(idx)
    assert dec.needed_bits > 100_000 and dec.overrun and not dec.finish()
