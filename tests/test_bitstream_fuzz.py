"""Damaged, random, foreign and crafted files: every one ends in BitstreamError, quickly."""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
import pytest
from helpers import synthetic_image, text_states, tiny_model

from tgic_jax.coding import codec, container
from tgic_jax.coding.codec import BitstreamError

MAX_SECONDS = 10.0


@pytest.fixture(scope="module")
def files():
    model, v = tiny_model(0)
    images = [synthetic_image(1, 1), synthetic_image(40, 50, 1), synthetic_image(64, 64, 2)]
    coder = codec.Coder(model, v)
    results = coder.encode(images, [text_states(k) for k in range(3)], with_reconstruction=True)
    return coder, v, results


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


def _header_end(data: bytes) -> int:
    c = container.unpack(data)
    return len(data) - 4 - sum(len(s) for s in c.sections)


def _mutations(data: bytes, rng: np.random.Generator):
    """(kind, bytes) pairs, each a different way of damaging one valid file."""
    n = len(data)
    for _ in range(300):  # bit flips, 1 to 3 bits anywhere
        b = bytearray(data)
        for pos in rng.integers(0, n, rng.integers(1, 4)):
            b[pos] ^= 1 << int(rng.integers(0, 8))
        if bytes(b) != data:
            yield "bitflip", bytes(b)
    for _ in range(60):  # one byte replaced
        b = bytearray(data)
        pos = int(rng.integers(0, n))
        b[pos] = (b[pos] + int(rng.integers(1, 256))) % 256
        yield "byte", bytes(b)
    for cut in sorted(set(rng.integers(0, n, 100).tolist()) | {0, 1, 4, 5, n - 1}):
        yield "truncated", data[:cut]
    for _ in range(60):
        yield "appended", data + rng.bytes(int(rng.integers(1, 65)))
    yield "appended_crc", data + struct.pack(">I", zlib.crc32(data))
    for _ in range(40):  # a byte inserted or removed inside
        pos = int(rng.integers(1, n))
        yield "inserted", data[:pos] + rng.bytes(1) + data[pos:]
        yield "deleted", data[: pos - 1] + data[pos:]
    for _ in range(20):
        magic = rng.bytes(4)
        if magic != container.MAGIC:
            yield "magic", magic + data[4:]
            yield "magic_crc", _with_crc(magic + data[4:-4])
    # 1: the old index rule
    for version in sorted({0, 1, 2, 3, 4, 17, 255} - set(container.READABLE_VERSIONS)):
        yield "version", _with_crc(data[:4] + bytes([version]) + data[5:-4])
    # Crafted headers with a valid checksum: sizes that do not fit, lengths that lie.
    c = container.unpack(data)
    z, y = c.sections
    head = dict(
        height=c.height,
        width=c.width,
        latent_height=c.latent_height,
        latent_width=c.latent_width,
        fingerprint=c.fingerprint,
    )
    for change in (
        dict(latent_height=c.latent_height + 1),
        dict(latent_width=0),
        dict(height=0, latent_height=0),
        dict(width=c.width + 64),
        dict(height=100_000, width=100_000, latent_height=1563, latent_width=1563),
    ):
        yield "header", container.pack(container.Container(**{**head, **change}, sections=(z, y)))
    body = data[:-4]
    hdr = _header_end(data)
    # Section lengths moved by one between z and y: each section is still framed, the
    # length check passes, but the streams are then wrong. The CRC is recomputed, so
    # this is a valid file of the wrong content: see the separate test below.
    yield "random_magic_prefix", container.MAGIC + rng.bytes(int(rng.integers(0, 200)))
    yield "header_only", _with_crc(body[:hdr])


def _random_inputs(rng: np.random.Generator):
    for _ in range(300):
        yield "random", rng.bytes(int(rng.integers(0, 3000)))
    for _ in range(60):
        yield (
            "random_magic",
            container.MAGIC + bytes([container.VERSION]) + rng.bytes(int(rng.integers(0, 500))),
        )
    yield "empty", b""
    yield "not_bytes_str", "TGIC"  # a str is not a file


def test_fuzzed_files_all_raise_bitstream_error_quickly(files):
    coder, _, results = files
    rng = np.random.default_rng(1234)
    cases = []
    for r in results:
        cases += list(_mutations(r.data, rng))
    cases += list(_random_inputs(rng))
    kinds: dict[str, int] = {}
    slowest = 0.0
    for kind, data in cases:
        t0 = time.perf_counter()
        with pytest.raises(BitstreamError) as info:
            coder.decode(data)
        slowest = max(slowest, time.perf_counter() - t0)
        msg = str(info.value)
        assert msg and "\n" not in msg, (kind, msg)
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"{len(cases)} damaged inputs, slowest {slowest * 1e3:.1f} ms: {kinds}")
    assert len(cases) >= 2000
    assert slowest < MAX_SECONDS
    # The undamaged files still decode: the fuzz did not pass because decoding is broken.
    for r in results:
        np.testing.assert_array_equal(coder.decode(r.data)[0], r.x_hat)


def test_files_of_another_model_are_refused(files):
    coder, v, results = files
    model, other = tiny_model(1)  # same sizes, other weights and tables
    for r in results:
        with pytest.raises(BitstreamError, match="another model"):
            codec.Coder(model, other).decode(r.data)
    from tgic_jax.model.taco import TACO, ModelConfig

    bigger = TACO(ModelConfig(N=24, M=24, slices=(2, 2, 4, 4, 12), text_dim=16))
    from tgic_jax.coding.tables import build_tables

    eb = {
        "entropy_bottleneck": {
            k: np.concatenate([a, a[:8]]) for k, a in v["params"]["entropy_bottleneck"].items()
        }
    }
    with pytest.raises(BitstreamError, match="another model"):
        codec.Coder(bigger, {"params": v["params"], "tables": build_tables(eb)}).decode(
            results[0].data
        )


def test_claimed_sizes_beyond_max_pixels_are_refused_before_decoding(files):
    coder, _, results = files
    data = results[2].data  # 64 x 64
    with pytest.raises(BitstreamError, match="max_pixels"):
        coder.decode(data, max_pixels=64 * 63)
    assert coder.decode(data, max_pixels=64 * 64)[0].shape == (64, 64, 3)


def test_valid_checksum_over_wrong_streams_never_crashes_or_hangs(files):
    """A CRC is no MAC: re-framed garbage may decode, but only to an image or an error."""
    coder, _, results = files
    rng = np.random.default_rng(7)
    c = container.unpack(results[2].data)
    z, y = c.sections
    variants = [
        (z, rng.bytes(len(y))),
        (rng.bytes(len(z)), y),
        (z, y[::-1]),
        (y[:3], z + y[3:]),
        (z, b""),
        (b"", y),
        (z, y[: len(y) // 2]),
        (z, b"\xff" * 64),
    ]
    for zs, ys in variants:
        data = container.pack(dataclass_replace(c, sections=(zs, ys)))
        t0 = time.perf_counter()
        try:
            x = coder.decode(data)[0]
        except BitstreamError as e:
            assert "\n" not in str(e)
        else:
            assert x.shape == (64, 64, 3) and np.isfinite(x).all()
        assert time.perf_counter() - t0 < MAX_SECONDS


def dataclass_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def _crafted(fingerprint: bytes, height: int, width: int, zeros: int) -> bytes:
    """Valid framing, this model's fingerprint, a fresh CRC, `zeros` zero bytes per section."""
    zh, zw = -(-height // codec.PAD), -(-width // codec.PAD)
    c = container.Container(height, width, zh, zw, fingerprint, (bytes(zeros), bytes(zeros)))
    return container.pack(c)


def test_a_100_byte_file_claiming_6000_x_6000_is_refused_at_once_without_big_buffers(files):
    import tracemalloc

    coder, _, results = files
    fingerprint = container.unpack(results[0].data).fingerprint
    data = _crafted(fingerprint, 6000, 6000, 40)
    assert 95 <= len(data) <= 105
    # By the default size limit, and, where a caller raised the limit, by the payload bound.
    for max_pixels, reason in (
        (codec.MAX_PIXELS, "exceeds max_pixels"),
        (6000 * 6000, "too few for the 6000 x 6000 image"),
    ):
        tracemalloc.start()
        t0 = time.perf_counter()
        with pytest.raises(BitstreamError, match=reason):
            coder.decode(data, max_pixels=max_pixels)
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"refused in {seconds * 1e3:.1f} ms, peak {peak / 1e6:.2f} MB of NumPy memory")
        assert seconds < 1.0
        assert peak < 20e6  # one float32 6000 x 6000 x 3 image is 432 MB; z symbols 23 MB


def test_sections_cut_short_under_a_fresh_checksum_are_refused(files):
    """The coder reads zeros past a section's end; the decoder must not take them as data."""
    coder, _, results = files
    c = container.unpack(results[2].data)  # 64 x 64, a real y stream
    z, y = c.sections
    assert len(y) > 200
    # (A few bytes may be a valid stream of near-zero residuals: no such case here.)
    for zs, ys in ((z, y[: len(y) // 2]), (z, y[: len(y) // 4]), (z, b""), (z[:2], y), (b"", y)):
        data = container.pack(dataclass_replace(c, sections=(zs, ys)))
        with pytest.raises(BitstreamError, match="ends before its symbols|too few"):
            coder.decode(data)


def test_small_claims_that_fit_the_payload_bound_still_decode_or_fail_cleanly(files):
    """The up-front bound refuses only what cannot be a valid file: a real 1 x 1 file passes."""
    coder, _, results = files
    assert coder.decode(results[0].data)[0].shape == (1, 1, 3)
    fingerprint = container.unpack(results[0].data).fingerprint
    for h, w in ((1, 1), (64, 64), (200, 300)):
        try:  # zero bytes may be a valid stream of small claims; never more than an image
            x = coder.decode(_crafted(fingerprint, h, w, 40))[0]
        except BitstreamError as e:
            assert "\n" not in str(e)
        else:
            assert x.shape == (h, w, 3)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_files_of_the_retired_coder_are_refused_with_what_made_them(files, version):
    """Versions 1-3 were written by tensorflow-compression's range coder; one line says so."""
    coder, _, results = files
    data = results[1].data
    assert data[4] == container.VERSION == 4
    old = _with_crc(data[:4] + bytes([version]) + data[5:-4])
    with pytest.raises(BitstreamError, match=f"version {version} was written by") as e:
        coder.decode(old)
    assert "\n" not in str(e.value) and "compress the image again" in str(e.value)
