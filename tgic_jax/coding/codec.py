"""Compress images to .tgic files and back: exported networks, host-side range coding.

`Coder(model, variables)` is built once per checkpoint and holds what coding needs: the
checked tables, the fingerprint, the parameters on the device and the compiled programs.
Order of coding (the authors'): all of z, then for each slice its anchors, then its
non-anchors, each scale/mean computed from already-decoded values only. Determinism is
by construction: every network that feeds the entropy model is one exported program,
called with the same shapes and inputs (symbols, tables, params) on both sides, and both
sides run one slice loop (`Coder._slices`) that differs only in where symbols come from,
so the decoder rebuilds the encoder's y_hat bit for bit:

    encoder:  x, text --analysis--> y, z           (encoder only; batched is fine)
              z_sym = round(z - medians)           --> z stream
              hyper = hyper(z_sym)                 (shared)
              for slice i:
                idx_a, mu_a, ctx = anchor_i(hyper, y_hat_<i)           (shared)
                s_a = round(y_i - mu_a) at anchors                     --> y stream
                y_hat_a, idx_n, mu_n = nonanchor_i(hyper, ctx, s_a, mu_a)    (shared)
                s_n = round(y_i - mu_n) at non-anchors                 --> y stream
                y_hat_i = combine(y_hat_a, s_n, mu_n)                  (shared)
    decoder:  the same calls, with s_a and s_n read from the streams.

The exported programs live in `coding/programs.py`; every Coder of one model config in a
process shares them.

Two entropy paths. When the variables carry `integer_entropy` (checkpoints written by
`tgic export` and `tgic convert`), hyper / anchor / nonanchor / combine are the integer
programs of `coding/integer_path.py`: table indices and means are exact integers, the same
on every device, and the files are version 5. With float parameters only, the float
programs above run and the files are version 4; those decode bit for bit on the kind of
device that made them (on GPU, run both sides with `--xla_gpu_deterministic_ops=true`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tgic_jax.coding import integer_path
from tgic_jax.coding import tables as coding_tables
from tgic_jax.coding.container import (
    FINGERPRINT_BYTES,
    INTEGER_VERSION,
    VERSION,
    BitstreamError,
    Container,
    pack,
    unpack,
)
from tgic_jax.coding.programs import (
    INTEGER_PROGRAMS,
    integer_scopes,
    param_scopes,
    shared_programs,
)
from tgic_jax.coding.range_coder import RangeDecoder, RangeEncoder, Tables, fits
from tgic_jax.model.taco import DOWNSAMPLING_FACTOR, TACO, checkerboard_masks

__all__ = ["BitstreamError", "Coder", "EncodeResult", "read_header"]

PAD = DOWNSAMPLING_FACTOR  # images are coded padded to a multiple of the model's factor
# Decoding memory of the paper-size model grows by ~645 bytes a pixel over ~1 GiB
# (benchmarks/decode_memory.py, docs/BENCHMARKS.md). The default limit, 2^24 pixels
# (4096 x 4096), needs about 11 GiB and so fits a 24 GiB machine with room for the OS and
# another process. Larger images are refused up front (pass a larger max_pixels where
# memory allows) instead of being killed midway.
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


class _Clock:
    """Accumulates seconds per phase: `with clock("networks"): ...`."""

    def __init__(self, **start: float):
        self.seconds = {"networks": 0.0, "entropy_coding": 0.0, **start}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0


# ----------------------------------------------------------------------------------------
# The coder


class Coder:
    """One model + its variables, ready to code: `encode`, `decode` and `estimate`.

    Built once per checkpoint: it checks the coding tables (building them from the
    parameters if `variables` has none), computes the model fingerprint written into
    every file, and puts the parameters on the device. `program_dir` keeps the exported
    programs between processes (see `programs.Programs`; the CLI passes its cache folder).
    """

    def __init__(self, model: TACO, variables, program_dir: str | os.PathLike | None = None):
        params = variables["params"]
        tables = variables.get("tables") if hasattr(variables, "get") else None
        if tables is None:
            tables = coding_tables.build_tables(params)
        tables = {k: np.asarray(tables[k]) for k in coding_tables.TABLE_KEYS if k in tables}
        coding_tables.check_tables(tables)
        if len(tables["z_offset"]) != model.config.N:
            raise ValueError(
                f"coding tables are for N={len(tables['z_offset'])}, model has {model.config.N}"
            )
        self.model = model
        self.tables = tables
        integer = variables.get("integer_entropy") if hasattr(variables, "get") else None
        self.integer = integer is not None
        self.version = INTEGER_VERSION if self.integer else VERSION
        # Every field of the config, compute_dtype included: a bfloat16 model computes other
        # scales from the same tables, so its files must fail a float32 model's check.
        fingerprint = coding_tables.fingerprint(model.config.to_dict(), tables, integer)
        self.fingerprint = fingerprint[:FINGERPRINT_BYTES]
        self.programs = shared_programs(model, program_dir)
        self.params = jax.device_put(params)
        self.integer_params = None
        self._float_coder: Coder | None = None  # an integer checkpoint's version 4 reader
        if self.integer:
            integer = jax.tree_util.tree_map(np.asarray, dict(integer))
            integer_path.check_bounds(integer)
            self.integer_params = jax.device_put(integer)
            self._float_coder_args = (model, {"params": params, "tables": tables}, program_dir)
        self._scoped_params: dict[tuple, dict] = {}
        # Where the scale-table index steps up, and z's medians, on the device.
        self.thresholds = jnp.asarray(coding_tables.scale_thresholds(tables["scale_table"]))
        self.medians = jnp.asarray(tables["z_medians"], jnp.float32)
        # The range coder's models of both families, and the bits each decoded symbol
        # consumes at least (stream length checks), built once per checkpoint.
        self.z_tables = Tables(tables["z_lookup"])
        self.y_tables = Tables(tables["gaussian_lookup"])
        self.z_costs, self.y_costs = self.z_tables.costs, self.y_tables.costs

    def _run(self, name: str, *args, i: int | None = None):
        """Program `name` on (its part of the parameters, *args)."""
        params = self._scoped_params.get((name, i))
        if params is None:
            if name in INTEGER_PROGRAMS:
                params = {k: self.integer_params[k] for k in integer_scopes(name, i)}
            else:
                params = {k: self.params[k] for k in param_scopes(name, i)}
            self._scoped_params[(name, i)] = params
        return self.programs(name, params, *args, i=i)

    # -------------------------------------------------------------------- the slice loop
    def _slices(self, hyper, symbols: Callable, clock: _Clock) -> list:
        """y_hat slice by slice: anchors, then non-anchors, each from decoded values only.

        `symbols(channels, idx, means, positions)` is the one difference between the two
        sides: the encoder rounds y there and writes the symbols, the decoder reads them.
        Everything else is this loop, so the sides stay in step by construction.
        """
        h, w = hyper.shape[1], hyper.shape[2]
        anchor_hw = checkerboard_masks(h, w)[0][..., 0] > 0
        y_hat_slices, start = [], 0
        for i, c in enumerate(self.model.config.slices):
            channels, start = slice(start, start + c), start + c
            with clock("networks"):
                idx_a, means_a, ctx = self._run(
                    "anchor", hyper, tuple(y_hat_slices), self.thresholds, i=i
                )
                idx_a, means_a = np.asarray(idx_a), np.asarray(means_a)
            with clock("entropy_coding"):
                sym_a = symbols(channels, idx_a, means_a, anchor_hw)
            with clock("networks"):
                y_hat_a, idx_n, means_n = self._run(
                    "nonanchor", hyper, ctx, sym_a, means_a, self.thresholds, i=i
                )
                idx_n, means_n = np.asarray(idx_n), np.asarray(means_n)
            with clock("entropy_coding"):
                sym_n = symbols(channels, idx_n, means_n, ~anchor_hw)
            with clock("networks"):
                y_hat_slices.append(self.programs("combine", y_hat_a, sym_n, means_n))
        return y_hat_slices

    def _slices_integer(self, hyper, symbols: Callable, clock: _Clock) -> tuple[list, list]:
        """`_slices` on the integer path: (symbols, mean_q) per slice, both int32.

        The same loop and order; `symbols` gets the means as float (mean_q 2^-F, exact) so
        that the encoder rounds y around them; the decoder ignores them.
        """
        h, w = hyper.shape[1], hyper.shape[2]
        anchor_hw = checkerboard_masks(h, w)[0][..., 0] > 0
        unit = 2.0**-integer_path.FRACTION_BITS
        sym_slices, mean_slices, y_in, start = [], [], [], 0
        for i, c in enumerate(self.model.config.slices):
            channels, start = slice(start, start + c), start + c
            with clock("networks"):
                idx_a, mean_a, ctx = self._run("anchor_int", hyper, tuple(y_in), i=i)
                idx_a, mean_a = np.asarray(idx_a), np.asarray(mean_a)
            with clock("entropy_coding"):
                sym_a = symbols(channels, idx_a, mean_a * unit, anchor_hw)
            with clock("networks"):
                idx_n, mean_n = self._run("nonanchor_int", hyper, ctx, sym_a, mean_a, i=i)
                idx_n, mean_n = np.asarray(idx_n), np.asarray(mean_n)
            with clock("entropy_coding"):
                sym_n = symbols(channels, idx_n, mean_n * unit, ~anchor_hw)
            with clock("networks"):
                sym, mean, y_in_i = self._run("combine_int", sym_a, mean_a, sym_n, mean_n, i=i)
            sym_slices.append(sym)
            mean_slices.append(mean)
            y_in.append(y_in_i)
        return sym_slices, mean_slices

    def _entropy_path(self, z_sym, symbols: Callable, clock: _Clock):
        """h_s, then the slice loop: what both sides run from z's symbols (integer or float)."""
        with clock("networks"):
            if self.integer:
                hyper = self._run("hyper_int", z_sym)
            else:
                hyper = self._run("hyper", z_sym, self.medians)
        loop = self._slices_integer if self.integer else self._slices
        return loop(hyper, symbols, clock)

    def decode_y_hat(self, data: bytes) -> np.ndarray:
        """The file's y_hat [1, h, w, M], what g_s reads (integer path: float64, exact)."""
        c = self._check_file(data)
        slices = self._decode_slices(c, _Clock())
        if not self.integer:
            return np.concatenate([np.asarray(s) for s in slices], -1)
        unit = 2.0**-integer_path.FRACTION_BITS
        parts = [
            np.asarray(s, np.float64) + np.asarray(m, np.float64) * unit
            for s, m in zip(*slices, strict=True)
        ]
        return np.concatenate(parts, -1)

    # -------------------------------------------------------------------- encoder
    def encode(
        self,
        images: Sequence[np.ndarray],
        texts: Sequence[np.ndarray],
        with_reconstruction: bool = False,
    ) -> list[EncodeResult]:
        """Compresses several images (g_a runs batched per padded size); one result each."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        checked = [
            _check_image(im, t, self.model.config.text_dim)
            for im, t in zip(images, texts, strict=True)
        ]
        results: list[EncodeResult | None] = [None] * len(checked)
        groups: dict[tuple, list[int]] = {}
        for k, (im, t) in enumerate(checked):
            groups.setdefault((_pad(im).shape, t.shape), []).append(k)
        for members in groups.values():
            t0 = time.perf_counter()
            x = np.stack([_pad(checked[k][0]) for k in members])
            text = np.stack([checked[k][1] for k in members])
            y, z = jax.device_get(self._run("analysis", x, text))
            t_analysis = (time.perf_counter() - t0) / len(members)
            for j, k in enumerate(members):
                height, width = checked[k][0].shape[:2]
                results[k] = self._encode_latents(
                    y[j : j + 1], z[j : j + 1], height, width, with_reconstruction, t_analysis
                )
        return results

    def _encode_latents(self, y, z, height, width, with_reconstruction, t_analysis):
        tables, clock = self.tables, _Clock(networks=t_analysis)
        with clock("entropy_coding"):  # z: symbols around the medians, one table per channel
            z_sym = _symbols(z, tables["z_medians"], np.ones(z.shape[1:3], bool))
            z_idx = np.broadcast_to(np.arange(z.shape[-1], dtype=np.int32), z_sym.shape)
            z_enc = RangeEncoder(self.z_tables)
            z_enc.encode(z_sym - tables["z_offset"][z_idx], z_idx)
            z_bytes = z_enc.finish()
            y_enc = RangeEncoder(self.y_tables)
        offset = tables["gaussian_offset"]

        def write(channels, idx, means, positions):
            sym = _symbols(y[..., channels], means, positions)
            k = idx[0][positions]
            y_enc.encode(sym[0][positions] - offset[k], k)
            return sym

        y_hat_slices = self._entropy_path(z_sym, write, clock)
        with clock("entropy_coding"):
            y_bytes = y_enc.finish()
            zh, zw = _latent_hw(height, width)
            c = Container(height, width, zh, zw, self.fingerprint, (z_bytes, y_bytes), self.version)
            data = pack(c)
        x_hat = None
        if with_reconstruction:
            with clock("networks"):
                x_hat = self._synthesis(y_hat_slices)[:height, :width]
        return EncodeResult(
            data=data,
            height=height,
            width=width,
            payload_bytes={"z": len(z_bytes), "y": len(y_bytes)},
            header_bytes=len(data) - len(z_bytes) - len(y_bytes),
            x_hat=x_hat,
            timings=clock.seconds,
        )

    def _synthesis(self, y_hat_slices) -> np.ndarray:
        if self.integer:
            sym_slices, mean_slices = y_hat_slices
            out = self._run("synthesis_int", tuple(sym_slices), tuple(mean_slices))
            return np.asarray(out)[0]
        return np.asarray(self._run("synthesis", tuple(y_hat_slices)))[0]

    # -------------------------------------------------------------------- decoder
    def decode(self, data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, dict]:
        """.tgic bytes -> (x_hat float32 [H, W, 3] unclamped, {"networks", "entropy_coding"} s).

        Any bad input (damaged, truncated, another model's, too large) raises BitstreamError.
        """
        c = read_header(data)
        if c.height * c.width > max_pixels:
            need = DECODE_BASE_BYTES + DECODE_BYTES_PER_PIXEL * c.height * c.width
            raise BitstreamError(
                f"image of {c.height} x {c.width} exceeds max_pixels={max_pixels} (decoding it "
                f"with the paper-size model takes ~{need / 2**30:.0f} GiB; raise max_pixels if "
                "memory allows)"
            )
        if c.version == VERSION and self.integer:
            # A file of the float path: this checkpoint's float parameters still read it.
            if self._float_coder is None:
                self._float_coder = Coder(*self._float_coder_args)
            if c.fingerprint == self._float_coder.fingerprint:
                return self._float_coder.decode(data, max_pixels)
        c = self._check_file(data, c)
        clock = _Clock()
        y_hat_slices = self._decode_slices(c, clock)
        with clock("networks"):
            x_hat = self._synthesis(y_hat_slices)[: c.height, : c.width]
        if not np.isfinite(x_hat).all():
            raise BitstreamError("decoded image is not finite: damaged stream or wrong model")
        return x_hat, clock.seconds

    def _check_file(self, data: bytes, c: Container | None = None) -> Container:
        """The header's checks against this model: version, fingerprint, section sizes."""
        c = read_header(data) if c is None else c
        if c.version != self.version:
            if c.version == INTEGER_VERSION:
                raise BitstreamError(
                    "file is version 5 (integer entropy path) but this checkpoint has float "
                    "entropy parameters only: decode it with the checkpoint that `tgic export` "
                    "or `tgic convert` wrote"
                )
            raise BitstreamError(
                f"file is version {c.version} (float entropy path) and this checkpoint's float "
                "parameters did not make it: decode it with the checkpoint that made it"
            )
        if c.fingerprint != self.fingerprint:
            raise BitstreamError(
                f"file was made by another model (fingerprint {c.fingerprint.hex()}, "
                f"this model {self.fingerprint.hex()})"
            )
        self._check_payload_bound(c)
        return c

    def _decode_slices(self, c: Container, clock: _Clock):
        """The y_hat slices of a checked file (float path: y_hat; integer: symbols, means)."""
        tables = self.tables
        z_bytes, y_bytes = c.sections
        try:
            with clock("entropy_coding"):
                n = self.model.config.N
                z_idx = np.broadcast_to(
                    np.arange(n, dtype=np.int32), (1, c.latent_height, c.latent_width, n)
                )
                z_dec = RangeDecoder(z_bytes, self.z_tables)
                z_sym = z_dec.decode(z_idx) + tables["z_offset"][z_idx]
                if not z_dec.finish():
                    raise BitstreamError("z stream is damaged or ends before its symbols")
                _check_range(z_sym, "z")
                z_sym = z_sym.astype(np.int32)  # the encoder's dtype: the same program
                y_dec = RangeDecoder(y_bytes, self.y_tables)
            offset = tables["gaussian_offset"]

            def read(channels, idx, means, positions):
                k = idx[0][positions]
                s = y_dec.decode(k) + offset[k]
                if y_dec.overrun:  # stop before more networks run on symbols from past the end
                    raise BitstreamError("y stream ends before its symbols (damaged or truncated)")
                _check_range(s, "y")
                sym = np.zeros(idx.shape, np.int32)
                sym[0][positions] = s
                return sym

            y_hat_slices = self._entropy_path(z_sym, read, clock)
            with clock("entropy_coding"):
                if not y_dec.finish():
                    raise BitstreamError("y stream is damaged or ends before its symbols")
        except BitstreamError:
            raise
        except Exception as e:  # the coder's own complaints about a malformed stream
            raise BitstreamError(
                f"range decoding failed: {type(e).__name__}: {e}".split("\n")[0]
            ) from e
        return y_hat_slices

    def _check_payload_bound(self, c: Container) -> None:
        """Refuses sections too short for the symbols the header implies, before any network.

        Each z symbol of channel c costs at least the cheapest symbol of table c; each y
        symbol at least the cheapest of all Gaussian tables (its table is known only after
        the networks run). A 100-byte file claiming 6000 x 6000 fails here, not after
        minutes of decoding into gigabytes.
        """
        zh, zw = c.latent_height, c.latent_width
        need = {
            "z": zh * zw * float(self.z_costs.minimum.sum()),
            "y": 16 * zh * zw * self.model.config.M * float(self.y_costs.minimum.min()),
        }
        for (name, bits), section in zip(need.items(), c.sections, strict=True):
            if not fits(bits, len(section)):
                raise BitstreamError(
                    f"{name} section has {len(section)} bytes, too few for the {c.height} x "
                    f"{c.width} image the header claims (at least {math.ceil(bits / 8)} bytes)"
                )

    # -------------------------------------------------------------------- estimate
    def estimate(self, image: np.ndarray, text: np.ndarray) -> dict:
        """Eval-mode model output: x_hat_float [H, W, 3] (unclamped), bpp_estimated."""
        image, text = _check_image(image, text, self.model.config.text_dim)
        x_hat, lik = self.programs.forward(self.params, _pad(image)[None], text[None])
        bits_y, bits_z = _bits(lik["y"]), _bits(lik["z"])
        h, w = image.shape[:2]
        return {
            "x_hat_float": np.asarray(x_hat)[0, :h, :w],
            "bpp_estimated": float((bits_y + bits_z) / (h * w)),
            "bits_estimated": {"y": bits_y, "z": bits_z},
        }


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


def _check_range(sym: np.ndarray, what: str) -> None:
    if sym.size and np.abs(sym).max() >= _MAX_SYMBOL:
        # Garbage read past a section's end can decode to escapes before the length bound
        # trips: the same damage, caught one check earlier.
        raise BitstreamError(
            f"{what} stream is damaged or ends before its symbols (out-of-range symbols)"
        )


def _latent_hw(height: int, width: int) -> tuple[int, int]:
    return math.ceil(height / PAD), math.ceil(width / PAD)


@jax.jit
def _bits_jit(lik):
    return -jnp.sum(jnp.log2(lik))


def _bits(lik) -> float:
    return float(_bits_jit(lik))


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
