"""A thin host-side wrapper of tensorflow-compression's range coder (eager TF ops).

One `RangeEncoder` writes one stream; `encode(values, indexes)` may be called several
times (the handle carries the coder state), and `finish()` returns the bytes. The
`RangeDecoder` mirrors it call for call: the same lookup, the same sequence of
`decode(indexes)` shapes. Values are table-relative (symbol - offset); values outside a
table's range go through the coder's Elias-gamma escape (lookup precision negated).

The coder itself cannot tell a stream that ended early: past its last byte it reads
zeros (the encoder leaves trailing zeros out), so a section cut short, or a crafted file
of a few zero bytes, decodes to symbols without complaint. `SymbolCosts` gives the
missing check: every decoded symbol narrows the coder's interval by a known factor, so
the bytes a stream must hold follow from the symbols read (`needed_bits`), and a
`RangeDecoder` that has read more than its bytes can hold reports damage.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

# Bits a valid stream may fall short of the symbols' lower bound: the decoder's first
# 32-bit read, its last 16-bit renormalization, and up to 3 implicit 16-bit zero words the
# encoder may leave out at the end (each further one has probability ~2^-16).
SLACK_BITS = 32 + 16 + 3 * 16


@functools.cache
def _ops():
    """(tf, tensorflow_compression_ops), imported at the first coder use (the CLI relies on it)."""
    from tgic_jax.tf_import import import_tensorflow

    tf = import_tensorflow()
    import tensorflow_compression_ops as tco

    return tf, tco


@dataclasses.dataclass(frozen=True)
class SymbolCosts:
    """Per table and bin, a lower bound on the bits one decoded symbol consumes.

    The coder narrows its interval of size S (always >= 2^16) to at most S p + 1 <=
    S (p + 2^-16) for a bin of probability p = (cdf[v+1] - cdf[v]) / 2^16, and renormalizes
    by reading 16 bits whenever S falls below 2^16: a symbol therefore consumes at least
    -log2(p + 2^-16) bits of the stream, whatever the stream's bytes. An escaped value
    costs its overflow bin (the Elias-gamma bits after it are not counted: a lower bound).
    """

    bins: np.ndarray  # float64, every table's bins concatenated (overflow bin excluded)
    starts: np.ndarray  # int64 [tables]: where each table's bins start in `bins`
    lengths: np.ndarray  # int64 [tables]: bins per table before its overflow bin
    overflow: np.ndarray  # float64 [tables]: cost of the overflow (escape) bin
    minimum: np.ndarray  # float64 [tables]: the cheapest symbol of each table

    @classmethod
    def from_lookup(cls, lookup: np.ndarray) -> SymbolCosts:
        """Costs of the CDFs in a concatenated lookup (as `RangeEncoder` takes it)."""
        from tgic_jax.coding.tables import split_lookup  # no import cycle

        bins, starts, lengths, overflow, minimum = [], [], [], [], []
        start = 0
        for cdf in split_lookup(lookup):
            top = float(cdf[-1])
            p = np.diff(np.asarray(cdf, np.float64)) / top
            cost = -np.log2(p + 1.0 / top)
            bins.append(cost[:-1])
            starts.append(start)
            lengths.append(len(cost) - 1)
            overflow.append(cost[-1])
            minimum.append(cost.min())
            start += len(cost) - 1
        return cls(
            np.concatenate(bins), np.asarray(starts, np.int64), np.asarray(lengths, np.int64),
            np.asarray(overflow), np.asarray(minimum),
        )  # fmt: skip

    def needed_bits(self, values: np.ndarray, indexes: np.ndarray) -> float:
        """Lower bound on the stream bits that decoding `values` with tables `indexes` read."""
        values = np.asarray(values, np.int64).reshape(-1)
        indexes = np.asarray(indexes, np.int64).reshape(-1)
        n = self.lengths[indexes]
        inside = (values >= 0) & (values < n)
        cost = np.where(
            inside, self.bins[self.starts[indexes] + np.where(inside, values, 0)],
            self.overflow[indexes],
        )  # fmt: skip
        return float(cost.sum())


def fits(needed_bits: float, num_bytes: int) -> bool:
    """Whether a stream of `num_bytes` can hold symbols that need `needed_bits` at least."""
    return needed_bits <= 8 * num_bytes + SLACK_BITS


class RangeEncoder:
    """One range-coded stream over the CDFs of `lookup`."""

    def __init__(self, lookup: np.ndarray):
        tf, tco = _ops()
        with tf.device("/cpu:0"):
            self._lookup = tf.constant(np.asarray(lookup, np.int32))
            self._handle = tco.create_range_encoder([], self._lookup)

    def encode(self, values: np.ndarray, indexes: np.ndarray) -> None:
        """Appends `values` (int32), each coded with CDF `indexes` (same shape)."""
        tf, tco = _ops()
        values = np.ascontiguousarray(values, np.int32).reshape(-1)
        indexes = np.ascontiguousarray(indexes, np.int32).reshape(-1)
        if values.shape != indexes.shape:
            raise ValueError(f"values {values.shape} and indexes {indexes.shape} differ")
        if values.size:
            with tf.device("/cpu:0"):
                self._handle = tco.entropy_encode_index(self._handle, indexes, values)

    def finish(self) -> bytes:
        """The stream's bytes (the encoder cannot be used afterwards)."""
        tf, tco = _ops()
        with tf.device("/cpu:0"):
            out = tco.entropy_encode_finalize(self._handle).numpy()
        self._handle = None
        return bytes(out)


class RangeDecoder:
    """Reads a stream written by `RangeEncoder` with the same lookup."""

    def __init__(self, data: bytes, lookup: np.ndarray, costs: SymbolCosts | None = None):
        tf, tco = _ops()
        self._costs = costs if costs is not None else SymbolCosts.from_lookup(lookup)
        self._bytes = len(data)
        self.needed_bits = 0.0  # lower bound on the bits the symbols read so far consumed
        with tf.device("/cpu:0"):
            self._lookup = tf.constant(np.asarray(lookup, np.int32))
            self._handle = tco.create_range_decoder(tf.constant(data, tf.string), self._lookup)

    def decode(self, indexes: np.ndarray) -> np.ndarray:
        """Values (int32, shape of `indexes`) coded with CDFs `indexes`."""
        tf, tco = _ops()
        indexes = np.ascontiguousarray(indexes, np.int32)
        if not indexes.size:
            return np.zeros(indexes.shape, np.int32)
        flat = indexes.reshape(-1)
        with tf.device("/cpu:0"):
            self._handle, values = tco.entropy_decode_index(
                self._handle, flat, tf.constant(flat.shape, tf.int32), tf.int32
            )
        values = values.numpy()
        self.needed_bits += self._costs.needed_bits(values, flat)
        return values.reshape(indexes.shape)

    @property
    def overrun(self) -> bool:
        """True once the symbols read need more bits than the stream holds (it ended early)."""
        return not fits(self.needed_bits, self._bytes)

    def finish(self) -> bool:
        """End-of-stream check (False: the stream was damaged or ended before its symbols)."""
        tf, tco = _ops()
        with tf.device("/cpu:0"):
            ok = bool(tco.entropy_decode_finalize(self._handle).numpy())
        self._handle = None
        return ok and not self.overrun
