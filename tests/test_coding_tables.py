"""Coding tables: CompressAI's construction, valid CDFs, escapes, determinism, coder overhead."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from tgic_jax.coding import tables as ct
from tgic_jax.coding.programs import _indexes
from tgic_jax.coding.range_coder import RangeDecoder, RangeEncoder


@pytest.fixture(scope="module")
def gaussian():
    scales = ct.scale_table()
    lookup, offset = ct.gaussian_tables(scales)
    return scales, lookup, offset, ct.split_lookup(lookup)


def _bottleneck_params(seed=0, channels=6):
    rng = np.random.default_rng(seed)
    p = {}
    filters = (1, 3, 3, 3, 3, 1)
    for i in range(5):
        p[f"matrices_{i}"] = rng.normal(0.3, 0.3, (channels, filters[i + 1], filters[i]))
        p[f"biases_{i}"] = rng.uniform(-0.5, 0.5, (channels, filters[i + 1], 1))
        if i < 4:
            p[f"factors_{i}"] = rng.normal(0, 0.5, (channels, filters[i + 1], 1))
    med = rng.uniform(-1, 1, channels)
    spread = rng.uniform(0.5, 12, channels)
    p["quantiles"] = np.stack([med - spread, med, med + spread * 0.7], -1)[:, None, :]
    return {k: v.astype(np.float32) for k, v in p.items()}


def test_scale_table_is_64_log_spaced_scales_from_0_11_to_256():
    s = ct.scale_table()
    assert s.dtype == np.float32 and s.shape == (64,)
    np.testing.assert_allclose([s[0], s[-1]], [0.11, 256.0], rtol=1e-6)
    np.testing.assert_allclose(
        np.diff(np.log(s.astype(np.float64))), math.log(256 / 0.11) / 63, rtol=1e-5
    )


def test_gaussian_tables_cover_six_point_one_scales_plus_an_overflow_bin(gaussian):
    scales, _, offset, cdfs = gaussian
    centers = np.ceil(scales.astype(np.float64) * 6.109410204869).astype(int)
    np.testing.assert_array_equal(offset, -centers)
    assert offset[0] == -1 and offset[-1] == -1565  # 0.11 -> +-1, 256 -> +-1565
    for c, cdf in zip(centers, cdfs, strict=True):
        assert len(cdf) == 2 * c + 1 + 2  # pmf bins, overflow bin, leading zero


def test_every_cdf_is_strictly_increasing_to_2_pow_16(gaussian):
    """No zero-probability bin: the escape symbol is always the overflow bin."""
    _, _, _, cdfs = gaussian
    for cdf in cdfs:
        assert cdf[0] == 0 and cdf[-1] == 2**16
        assert np.all(np.diff(cdf) >= 1)


def test_gaussian_tables_quantize_the_true_pmf(gaussian):
    scales, _, offset, cdfs = gaussian
    k = 32
    pmf = np.diff(cdfs[k])[:-1] / 2**16
    x = np.arange(offset[k], -offset[k] + 1)
    true = scipy.stats.norm.cdf(x + 0.5, scale=scales[k]) - scipy.stats.norm.cdf(
        x - 0.5, scale=scales[k]
    )
    assert np.abs(pmf - true).max() < 3e-4


def test_gaussian_tables_match_the_authors_buffers(gaussian, parity_dir):
    _, _, offset, cdfs = gaussian
    with np.load(parity_dir / "official_state_dict.npz") as sd:
        theirs_offset = sd["gaussian_conditional._offset"]
        theirs_len = sd["gaussian_conditional._cdf_length"]
        theirs_cdf = sd["gaussian_conditional._quantized_cdf"]
    np.testing.assert_array_equal(offset, theirs_offset)
    np.testing.assert_array_equal([len(c) for c in cdfs], theirs_len)
    # Small scales (where most latents sit): the same 16-bit CDFs up to a few counts. For wide
    # tables their buffers give 1/65536 to bins whose true mass is ~10x that (a quirk of
    # their quantizer); ours follow the Gaussian (checked above), so only lengths agree there.
    for k in range(20):
        assert np.abs(cdfs[k] - theirs_cdf[k, : theirs_len[k]]).max() <= 8


def test_bottleneck_tables_follow_the_quantiles():
    p = _bottleneck_params()
    lookup, offset, medians = ct.bottleneck_tables(p)
    q = p["quantiles"][:, 0, :]
    minima = np.maximum(np.ceil(q[:, 1] - q[:, 0]), 0)
    maxima = np.maximum(np.ceil(q[:, 2] - q[:, 1]), 0)
    np.testing.assert_array_equal(offset, -minima)
    np.testing.assert_array_equal(medians, q[:, 1])
    cdfs = ct.split_lookup(lookup)
    assert [len(c) for c in cdfs] == list((minima + maxima + 1 + 2).astype(int))
    for cdf in cdfs:
        assert cdf[-1] == 2**16 and np.all(np.diff(cdf) >= 1)


def test_bottleneck_tables_match_the_authors_buffers(parity_dir):
    from tgic_jax.checkpoints.authors import from_official_state_dict, load_state_dict_file

    sd = load_state_dict_file(parity_dir / "official_state_dict.npz")
    _, v = from_official_state_dict(sd)
    lookup, offset, _ = ct.bottleneck_tables(v["params"]["entropy_bottleneck"])
    np.testing.assert_array_equal(offset, sd["entropy_bottleneck._offset"])
    lengths = sd["entropy_bottleneck._cdf_length"]
    for c, (ours, n) in enumerate(zip(ct.split_lookup(lookup), lengths, strict=True)):
        assert len(ours) == n
        theirs = sd["entropy_bottleneck._quantized_cdf"][c, :n]
        assert np.abs(ours.astype(int) - theirs).max() <= 40  # different 16-bit quantizers


def test_build_tables_is_deterministic_and_fingerprint_sees_every_change():
    params = {"entropy_bottleneck": _bottleneck_params(1)}
    a, b = ct.build_tables(params), ct.build_tables(params)
    assert set(a) == set(ct.TABLE_KEYS)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    cfg = {"N": 6}
    assert ct.fingerprint(cfg, a) == ct.fingerprint(cfg, b)
    assert ct.fingerprint({"N": 7}, a) != ct.fingerprint(cfg, a)
    params["entropy_bottleneck"]["quantiles"][2, 0, 1] += 0.01  # one median moves
    assert ct.fingerprint(cfg, ct.build_tables(params)) != ct.fingerprint(cfg, a)


def test_table_index_is_the_nearest_entry_in_log_scale():
    t = ct.scale_table()
    thresholds = jnp.asarray(ct.scale_thresholds(t))
    step = float(t[6] / t[5])  # 1.131: neighbours' ratio; the midpoint is its square root
    below, above = step**0.5 * 0.999, step**0.5 * 1.001
    scales = [
        0.0,
        -3.0,
        0.05,
        t[0],
        t[0] * 1.0001,
        t[5],
        t[5] * below,
        t[5] * above,
        t[62],
        t[63],
        1e6,
    ]
    got = np.asarray(_indexes(jnp.asarray(scales, jnp.float32), thresholds))
    np.testing.assert_array_equal(got, [0, 0, 0, 0, 0, 5, 5, 6, 62, 63, 63])
    # Against a brute-force nearest neighbour in log scale, away from exact ties.
    rng = np.random.default_rng(0)
    s = np.exp(rng.uniform(np.log(0.05), np.log(600.0), 20_000)).astype(np.float32)
    distance = np.abs(np.log(np.maximum(s, t[0]))[:, None] - np.log(t.astype(np.float64))[None])
    nearest = np.argmin(distance, axis=1)
    sorted_d = np.sort(distance, axis=1)
    clear = sorted_d[:, 1] - sorted_d[:, 0] > 1e-5
    got = np.asarray(_indexes(jnp.asarray(s), thresholds))
    np.testing.assert_array_equal(got[clear], nearest[clear])
    assert clear.mean() > 0.99


def test_values_beyond_the_tables_are_escaped_not_clipped(gaussian):
    _, lookup, offset, _ = gaussian
    idx = np.array([0, 0, 63, 5, 0, 20], np.int32)
    sym = np.array([0, 7, -4000, 123456, -(2**20), 3], np.int32)
    enc = RangeEncoder(lookup)
    enc.encode(sym[:2] - offset[idx[:2]], idx[:2])  # two calls share one stream
    enc.encode(sym[2:] - offset[idx[2:]], idx[2:])
    data = enc.finish()
    dec = RangeDecoder(data, lookup)
    got = np.concatenate([dec.decode(idx[:2]), dec.decode(idx[2:])]) + offset[idx]
    assert dec.finish()
    np.testing.assert_array_equal(got, sym)


def test_coder_spends_within_half_a_percent_of_the_table_entropy(gaussian):
    """The range coder's own overhead, measured against the quantized tables."""
    scales, lookup, offset, cdfs = gaussian
    rng = np.random.default_rng(0)
    idx = rng.integers(8, 40, 200_000).astype(np.int32)
    sym = np.rint(rng.normal(size=idx.size) * scales[idx]).astype(np.int32)
    values = sym - offset[idx]
    enc = RangeEncoder(lookup)
    enc.encode(values, idx)
    coded_bits = 8 * len(enc.finish())
    probs = np.array(
        [(cdfs[k][v + 1] - cdfs[k][v]) / 2**16 for k, v in zip(idx, values, strict=True)]
    )
    ideal_bits = -np.log2(probs).sum()
    print(
        f"coded {coded_bits} bits, ideal {ideal_bits:.0f} bits, "
        f"overhead {coded_bits / ideal_bits - 1:+.4%}"
    )
    assert ideal_bits - 64 <= coded_bits < 1.005 * ideal_bits + 64
