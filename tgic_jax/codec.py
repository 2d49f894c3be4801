"""Compress images to .tgic files and back: jitted networks, host-side range coding.

Order of coding (the authors'): all of z, then for each slice its anchors, then its
non-anchors, each scale/mean computed from already-decoded values only. Determinism is
by construction: every network that feeds the entropy model runs through the same jitted
function, with the same shapes and inputs (symbols, tables, params) on both sides, so the
decoder rebuilds the encoder's y_hat bit for bit:

    encoder:  x, text --analysis--> y, z           (encoder only; batched is fine)
              z_sym = round(z - medians)           --> z stream
              hyper = _hyper(z_sym)                (shared)
              for slice i:
                idx_a, mu_a, ctx = _anchor_i(hyper, y_hat_<i)          (shared)
                s_a = round(y_i - mu_a) at anchors                     --> y stream
                y_hat_a, idx_n, mu_n = _nonanchor_i(hyper, ctx, s_a, mu_a)   (shared)
                s_n = round(y_i - mu_n) at non-anchors                 --> y stream
                y_hat_i = _combine(y_hat_a, s_n, mu_n)                 (shared)
    decoder:  the same calls, with s_a and s_n read from the streams.

On GPU, run both sides with `--xla_gpu_deterministic_ops=true` on the same kind of device.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from tgic_jax import coding_tables
from tgic_jax.container import FINGERPRINT_BYTES, BitstreamError, Container, pack, unpack
from tgic_jax.model import TACO, ModelConfig, checkerboard_masks
from tgic_jax.range_coder import RangeDecoder, RangeEncoder, SymbolCosts, fits

__all__ = [
    "BitstreamError",
    "EncodeResult",
    "compress",
    "compress_batch",
    "decode",
    "decompress",
    "encode",
    "reconstruct",
    "read_header",
]

PAD = 64  # g_a downsamples by 16, h_a by 4 more
# Decoding memory, measured with the paper-size model on CPU (benchmarks/decode_memory.py,
# docs/BENCHMARKS.md): peak RSS 1.16 / 1.67 / 3.53 GiB at 512^2 / 1024^2 / 2048^2 pixels,
# a straight line of 1.02 GiB + 645 bytes per pixel. The default limit, 2^24 pixels
# (4096 x 4096), then needs about 11 GiB: it fits a 24 GiB machine with room for the OS
# and another process (2^25 would need 21 GiB). Larger images are refused up front (pass
# a larger max_pixels where memory allows) instead of being killed midway.
DECODE_BYTES_PER_PIXEL = 645
DECODE_BASE_BYTES = int(1.02 * 2**30)
MAX_PIXELS = 1 << 24
_MAX_SYMBOL = 1 << 24  # |round(y - mu)| beyond this means a broken model or stream


@dataclasses.dataclass
class EncodeResult:
    """One compressed image: the file bytes and what the encoder knows about it."""

    data: bytes
    height: int
    width: int
    payload_bytes: dict  # {"z": n, "y": n}
    header_bytes: int
    x_hat: np.ndarray | None  # decoder-side reconstruction [H, W, 3], unclamped (if asked)
    timings: dict  # seconds: networks, entropy_coding

    @property
    def bpp(self) -> float:
        """Real bits per pixel: 8 x file bytes / pixels."""
        return 8.0 * len(self.data) / (self.height * self.width)


# ----------------------------------------------------------------------------------------
# Jitted pieces, one set per model architecture (params are arguments: no re-trace per
# checkpoint; jit caches per shape).


def _model_key(model: TACO) -> tuple:
    return (model.N, model.M, tuple(model.slices), model.text_dim, model.heads)


class _Networks:
    """The model's pieces as jitted functions of (params, arrays)."""

    def __init__(self, model: TACO):
        self.model = model
        apply = model.apply

        def analysis(params, x, text):
            return apply({"params": params}, x, text, method="analysis")

        def hyper(params, z_sym, medians):
            z_hat = z_sym.astype(jnp.float32) + medians
            return apply({"params": params}, z_hat, method="hyper_synthesis")

        def anchor(i, params, hyper, y_hat_previous, thresholds):
            scales, means, ctx = apply(
                {"params": params}, i, hyper, list(y_hat_previous), method="anchor_params"
            )
            mask = _masks(hyper.shape)[0]
            return _indexes(scales, thresholds) * mask.astype(jnp.int32), means * mask, ctx

        def nonanchor(i, params, hyper, ctx, sym_a, means_a, thresholds):
            anchor_mask, non_anchor_mask = _masks(hyper.shape)
            y_hat_a = (sym_a.astype(jnp.float32) + means_a) * anchor_mask
            scales, means = apply(
                {"params": params}, i, hyper, ctx, y_hat_a, method="nonanchor_params"
            )
            idx = _indexes(scales, thresholds) * non_anchor_mask.astype(jnp.int32)
            return y_hat_a, idx, means * non_anchor_mask

        def combine(y_hat_a, sym_n, means_n):
            non_anchor_mask = _masks(y_hat_a.shape)[1]
            return y_hat_a + (sym_n.astype(jnp.float32) + means_n) * non_anchor_mask

        def synthesis(params, y_hat_slices):
            y_hat = jnp.concatenate(list(y_hat_slices), -1)
            return apply({"params": params}, y_hat, method="synthesis")

        def forward(params, x, text):
            out = apply({"params": params}, x, text, train=False)
            return out["x_hat"], out["likelihoods"]

        self.analysis = jax.jit(analysis)
        self.hyper = jax.jit(hyper)
        self.anchor = jax.jit(anchor, static_argnums=0)
        self.nonanchor = jax.jit(nonanchor, static_argnums=0)
        self.combine = jax.jit(combine)
        self.synthesis = jax.jit(synthesis)
        self.forward = jax.jit(forward)


def _masks(shape) -> tuple[jax.Array, jax.Array]:
    anchor, non_anchor = checkerboard_masks(shape[1], shape[2])
    return jnp.asarray(anchor), jnp.asarray(non_anchor)


def _indexes(scales: jax.Array, thresholds: jax.Array) -> jax.Array:
    """Table index = the nearest scale-table entry in log scale (`scale_thresholds`)."""
    return jnp.searchsorted(thresholds, scales, side="left").astype(jnp.int32)


_NETWORKS: dict[tuple, _Networks] = {}


def _networks(model: TACO) -> _Networks:
    key = _model_key(model)
    if key not in _NETWORKS:
        _NETWORKS[key] = _Networks(model)
    return _NETWORKS[key]


@dataclasses.dataclass
class _Prepared:
    """Device params and host tables for one `variables` (cached: built once)."""

    source: tuple  # the (params, tables) objects this was made from (kept alive: ids stay unique)
    params: object
    tables: dict
    thresholds: jax.Array  # where the scale-table index steps up, on device
    medians: jax.Array
    fingerprint: bytes
    z_costs: SymbolCosts  # bits each decoded symbol consumes at least (stream length checks)
    y_costs: SymbolCosts


_PREPARED: dict[tuple, _Prepared] = {}


def _prepare(model: TACO, variables) -> _Prepared:
    params = variables["params"]
    given_tables = variables.get("tables") if hasattr(variables, "get") else None
    key = (id(params), id(given_tables), _model_key(model))
    hit = _PREPARED.get(key)
    if hit is not None and hit.source[0] is params and hit.source[1] is given_tables:
        return hit
    tables = given_tables
    if tables is None:
        tables = coding_tables.build_tables(params)
    tables = {k: np.asarray(tables[k]) for k in coding_tables.TABLE_KEYS if k in tables}
    coding_tables.check_tables(tables)
    if len(tables["z_offset"]) != model.N:
        raise ValueError(f"coding tables are for N={len(tables['z_offset'])}, model has {model.N}")
    config = ModelConfig(model.N, model.M, tuple(model.slices), model.text_dim, model.heads)
    fp = coding_tables.fingerprint(config.to_dict(), tables)[:FINGERPRINT_BYTES]
    prepared = _Prepared(
        source=(params, given_tables),
        params=jax.device_put(params),
        tables=tables,
        thresholds=jnp.asarray(coding_tables.scale_thresholds(tables["scale_table"])),
        medians=jnp.asarray(tables["z_medians"], jnp.float32),
        fingerprint=fp,
        z_costs=SymbolCosts.from_lookup(tables["z_lookup"]),
        y_costs=SymbolCosts.from_lookup(tables["gaussian_lookup"]),
    )
    if len(_PREPARED) >= 4:
        _PREPARED.pop(next(iter(_PREPARED)))
    _PREPARED[key] = prepared
    return prepared


# ----------------------------------------------------------------------------------------
# Helpers


def _pad(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    ph, pw = -h % PAD, -w % PAD
    return np.pad(image, ((0, ph), (0, pw), (0, 0)))


def _check_image(image, text, text_dim: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image, np.float32)
    text = np.asarray(text, np.float32)
    if image.ndim == 4 and image.shape[0] == 1 and text.ndim == 3 and text.shape[0] == 1:
        image, text = image[0], text[0]  # a batch of one, as some callers hold it
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"image must be float32 [H, W, 3] with H, W >= 1, got {image.shape}")
    if text.ndim != 2 or text.shape[-1] != text_dim:
        raise ValueError(f"text must be [T, {text_dim}], got {text.shape}")
    if not np.isfinite(image).all():
        raise ValueError("image has non-finite values")
    return image, text


def _symbols(y: np.ndarray, means, positions: np.ndarray) -> np.ndarray:
    """round(y - means) at `positions` ([h, w] bool), zeros elsewhere, int32 [1, h, w, c]."""
    d = y - np.asarray(means)
    if not np.isfinite(d).all() or np.abs(d).max(initial=0) >= _MAX_SYMBOL:
        raise ValueError("latents out of range (non-finite or huge): is the model broken?")
    sym = np.rint(d).astype(np.int32)
    sym[:, ~positions] = 0
    return sym


def _latent_hw(height: int, width: int) -> tuple[int, int]:
    return math.ceil(height / PAD), math.ceil(width / PAD)


# ----------------------------------------------------------------------------------------
# Encoder


def encode(
    model: TACO,
    variables,
    images: Sequence[np.ndarray],
    texts: Sequence[np.ndarray],
    with_reconstruction: bool = False,
) -> list[EncodeResult]:
    """Compresses several images (g_a runs batched per padded size); one result each."""
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images but {len(texts)} texts")
    nets, prep = _networks(model), _prepare(model, variables)
    checked = [_check_image(im, t, model.text_dim) for im, t in zip(images, texts, strict=True)]
    results: list[EncodeResult | None] = [None] * len(checked)
    groups: dict[tuple, list[int]] = {}
    for k, (im, t) in enumerate(checked):
        groups.setdefault((_pad(im).shape, t.shape), []).append(k)
    for members in groups.values():
        t0 = time.perf_counter()
        x = np.stack([_pad(checked[k][0]) for k in members])
        text = np.stack([checked[k][1] for k in members])
        y, z = jax.device_get(nets.analysis(prep.params, x, text))
        t_analysis = (time.perf_counter() - t0) / len(members)
        for j, k in enumerate(members):
            im = checked[k][0]
            results[k] = _encode_latents(
                nets,
                prep,
                y[j : j + 1],
                z[j : j + 1],
                im.shape[0],
                im.shape[1],
                with_reconstruction,
                t_analysis,
            )
    return results


def _encode_latents(nets, prep, y, z, height, width, with_reconstruction, t_analysis):
    tables = prep.tables
    t_net, t_code = t_analysis, 0.0
    # z: symbols around the medians, one table per channel.
    t0 = time.perf_counter()
    z_sym = _symbols(z, tables["z_medians"], np.ones(z.shape[1:3], bool))
    z_idx = np.broadcast_to(np.arange(z.shape[-1], dtype=np.int32), z_sym.shape)
    z_enc = RangeEncoder(tables["z_lookup"])
    z_enc.encode(z_sym - tables["z_offset"][z_idx], z_idx)
    z_bytes = z_enc.finish()
    y_enc = RangeEncoder(tables["gaussian_lookup"])
    g_offset = tables["gaussian_offset"]
    t_code += time.perf_counter() - t0

    t0 = time.perf_counter()
    hyper = nets.hyper(prep.params, z_sym, prep.medians)
    t_net += time.perf_counter() - t0
    anchor_hw = checkerboard_masks(y.shape[1], y.shape[2])[0][..., 0] > 0
    y_hat_slices, start = [], 0
    for i, c in enumerate(nets.model.slices):
        y_i = y[..., start : start + c]
        start += c
        t0 = time.perf_counter()
        idx_a, means_a, ctx = nets.anchor(
            i, prep.params, hyper, tuple(y_hat_slices), prep.thresholds
        )
        idx_a, means_a = np.asarray(idx_a), np.asarray(means_a)
        t_net += time.perf_counter() - t0
        t0 = time.perf_counter()
        sym_a = _symbols(y_i, means_a, anchor_hw)
        _code_positions(y_enc, sym_a, idx_a, anchor_hw, g_offset)
        t_code += time.perf_counter() - t0
        t0 = time.perf_counter()
        y_hat_a, idx_n, means_n = nets.nonanchor(
            i, prep.params, hyper, ctx, sym_a, means_a, prep.thresholds
        )
        idx_n, means_n = np.asarray(idx_n), np.asarray(means_n)
        t_net += time.perf_counter() - t0
        t0 = time.perf_counter()
        sym_n = _symbols(y_i, means_n, ~anchor_hw)
        _code_positions(y_enc, sym_n, idx_n, ~anchor_hw, g_offset)
        t_code += time.perf_counter() - t0
        t0 = time.perf_counter()
        y_hat_slices.append(nets.combine(y_hat_a, sym_n, means_n))
        t_net += time.perf_counter() - t0
    t0 = time.perf_counter()
    y_bytes = y_enc.finish()
    zh, zw = _latent_hw(height, width)
    container = Container(height, width, zh, zw, prep.fingerprint, (z_bytes, y_bytes))
    data = pack(container)
    t_code += time.perf_counter() - t0
    x_hat = None
    if with_reconstruction:
        t0 = time.perf_counter()
        x_hat = np.asarray(nets.synthesis(prep.params, tuple(y_hat_slices)))[0, :height, :width]
        t_net += time.perf_counter() - t0
    return EncodeResult(
        data=data,
        height=height,
        width=width,
        payload_bytes={"z": len(z_bytes), "y": len(y_bytes)},
        header_bytes=len(data) - len(z_bytes) - len(y_bytes),
        x_hat=x_hat,
        timings={"networks": t_net, "entropy_coding": t_code},
    )


def _code_positions(enc: RangeEncoder, sym, idx, positions, offset) -> None:
    """Codes the symbols at `positions` ([h, w] bool) of [1, h, w, c] arrays, row-major."""
    s = sym[0][positions]
    k = idx[0][positions]
    enc.encode(s - offset[k], k)


def compress(model: TACO, variables, image: np.ndarray, text: np.ndarray) -> bytes:
    """One image float32 [H, W, 3] in [0, 1] + its text states [T, D] -> .tgic bytes."""
    return encode(model, variables, [image], [text])[0].data


def compress_batch(model: TACO, variables, images, texts) -> list[bytes]:
    """Several images (any sizes) -> one .tgic file each."""
    return [r.data for r in encode(model, variables, images, texts)]


# ----------------------------------------------------------------------------------------
# Decoder


def read_header(data: bytes) -> Container:
    """Parses and checks a file's framing (magic, CRC, version, lengths), no model needed."""
    c = unpack(data)
    if c.height < 1 or c.width < 1:
        raise BitstreamError(f"invalid image size {c.height} x {c.width}")
    if (c.latent_height, c.latent_width) != _latent_hw(c.height, c.width):
        raise BitstreamError(
            f"latent shape {c.latent_height} x {c.latent_width} does not fit image size "
            f"{c.height} x {c.width}"
        )
    return c


def decode(
    model: TACO, variables, data: bytes, max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, dict]:
    """.tgic bytes -> (x_hat float32 [H, W, 3] unclamped, {"networks", "entropy_coding"} s)."""
    c = read_header(data)
    if c.height * c.width > max_pixels:
        need = DECODE_BASE_BYTES + DECODE_BYTES_PER_PIXEL * c.height * c.width
        raise BitstreamError(
            f"image of {c.height} x {c.width} exceeds max_pixels={max_pixels} (decoding it with "
            f"the paper-size model takes ~{need / 2**30:.0f} GiB; raise max_pixels if memory "
            "allows)"
        )
    prep = _prepare(model, variables)
    if c.fingerprint != prep.fingerprint:
        raise BitstreamError(
            f"file was made by another model (fingerprint {c.fingerprint.hex()}, "
            f"this model {prep.fingerprint.hex()})"
        )
    _check_payload_bound(model, prep, c)
    nets, tables = _networks(model), prep.tables
    z_bytes, y_bytes = c.sections
    t_net = t_code = 0.0
    try:
        t0 = time.perf_counter()
        n = model.N
        z_idx = np.broadcast_to(
            np.arange(n, dtype=np.int32), (1, c.latent_height, c.latent_width, n)
        )
        z_dec = RangeDecoder(z_bytes, tables["z_lookup"], prep.z_costs)
        z_sym = z_dec.decode(z_idx) + tables["z_offset"][z_idx]
        if not z_dec.finish():
            raise BitstreamError("z stream is damaged or ends before its symbols")
        _check_range(z_sym, "z")
        y_dec = RangeDecoder(y_bytes, tables["gaussian_lookup"], prep.y_costs)
        g_offset = tables["gaussian_offset"]
        t_code += time.perf_counter() - t0

        t0 = time.perf_counter()
        hyper = nets.hyper(prep.params, z_sym, prep.medians)
        t_net += time.perf_counter() - t0
        h, w = 4 * c.latent_height, 4 * c.latent_width
        anchor_hw = checkerboard_masks(h, w)[0][..., 0] > 0
        y_hat_slices = []
        for i, ch in enumerate(model.slices):
            t0 = time.perf_counter()
            idx_a, means_a, ctx = nets.anchor(
                i, prep.params, hyper, tuple(y_hat_slices), prep.thresholds
            )
            idx_a = np.asarray(idx_a)
            t_net += time.perf_counter() - t0
            t0 = time.perf_counter()
            sym_a = _decode_positions(y_dec, idx_a, anchor_hw, g_offset, (1, h, w, ch))
            t_code += time.perf_counter() - t0
            t0 = time.perf_counter()
            y_hat_a, idx_n, means_n = nets.nonanchor(
                i, prep.params, hyper, ctx, sym_a, means_a, prep.thresholds
            )
            idx_n = np.asarray(idx_n)
            t_net += time.perf_counter() - t0
            t0 = time.perf_counter()
            sym_n = _decode_positions(y_dec, idx_n, ~anchor_hw, g_offset, (1, h, w, ch))
            t_code += time.perf_counter() - t0
            t0 = time.perf_counter()
            y_hat_slices.append(nets.combine(y_hat_a, sym_n, means_n))
            t_net += time.perf_counter() - t0
        t0 = time.perf_counter()
        if not y_dec.finish():
            raise BitstreamError("y stream is damaged or ends before its symbols")
        t_code += time.perf_counter() - t0
    except BitstreamError:
        raise
    except Exception as e:  # the coder's own complaints about a malformed stream
        raise BitstreamError(
            f"range decoding failed: {type(e).__name__}: {e}".split("\n")[0]
        ) from e
    t0 = time.perf_counter()
    x_hat = np.asarray(nets.synthesis(prep.params, tuple(y_hat_slices)))[0, : c.height, : c.width]
    t_net += time.perf_counter() - t0
    if not np.isfinite(x_hat).all():
        raise BitstreamError("decoded image is not finite: damaged stream or wrong model")
    return x_hat, {"networks": t_net, "entropy_coding": t_code}


def _check_payload_bound(model: TACO, prep: _Prepared, c: Container) -> None:
    """Refuses sections too short for the symbols the header implies, before any network.

    Each z symbol of channel c costs at least the cheapest symbol of table c; each y
    symbol at least the cheapest of all Gaussian tables (its table is known only after
    the networks run). A 100-byte file claiming 6000 x 6000 fails here, not after minutes
    of decoding into gigabytes.
    """
    zh, zw = c.latent_height, c.latent_width
    need = {
        "z": zh * zw * float(prep.z_costs.minimum.sum()),
        "y": 16 * zh * zw * sum(model.slices) * float(prep.y_costs.minimum.min()),
    }
    for (name, bits), section in zip(need.items(), c.sections, strict=True):
        if not fits(bits, len(section)):
            raise BitstreamError(
                f"{name} section has {len(section)} bytes, too few for the {c.height} x "
                f"{c.width} image the header claims (at least {math.ceil(bits / 8)} bytes)"
            )


def _check_range(sym: np.ndarray, what: str) -> None:
    if sym.size and np.abs(sym).max() >= _MAX_SYMBOL:
        raise BitstreamError(f"{what} stream decodes to out-of-range symbols (damaged)")


def _decode_positions(dec: RangeDecoder, idx, positions, offset, shape) -> np.ndarray:
    k = idx[0][positions]
    s = dec.decode(k) + offset[k]
    if dec.overrun:  # stop before more networks run on symbols read from beyond the end
        raise BitstreamError("y stream ends before its symbols (damaged or truncated)")
    _check_range(s, "y")
    sym = np.zeros(shape, np.int32)
    sym[0][positions] = s
    return sym


def decompress(model: TACO, variables, data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """.tgic bytes -> image float32 [H, W, 3] in [0, 1]; BitstreamError on any bad input."""
    return np.clip(decode(model, variables, data, max_pixels)[0], 0.0, 1.0)


# ----------------------------------------------------------------------------------------
# Evaluation helper


def reconstruct(model: TACO, variables, image: np.ndarray, text: np.ndarray) -> dict:
    """Eval-mode model output: x_hat_float [H, W, 3] (unclamped), bpp_estimated."""
    image, text = _check_image(image, text, model.text_dim)
    nets, prep = _networks(model), _prepare(model, variables)
    x_hat, lik = nets.forward(prep.params, _pad(image)[None], text[None])
    bits = _bits(lik["y"]) + _bits(lik["z"])
    h, w = image.shape[:2]
    return {
        "x_hat_float": np.asarray(x_hat)[0, :h, :w],
        "bpp_estimated": float(bits / (h * w)),
        "bits_estimated": {"y": float(_bits(lik["y"])), "z": float(_bits(lik["z"]))},
    }


@partial(jax.jit)
def _bits_jit(lik):
    return -jnp.sum(jnp.log2(lik))


def _bits(lik) -> float:
    return float(_bits_jit(lik))
