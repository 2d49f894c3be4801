"""Range coding on the host with `constriction`, over our own quantized tables.

One `RangeEncoder` writes one stream; `encode(values, indexes)` may be called several
times, and `finish()` returns the bytes. The `RangeDecoder` mirrors it call for call: the
same tables, the same sequence of `decode(indexes)` shapes. Values are table-relative
(symbol - offset); a value outside its table's range is coded as the table's last
(overflow) bin followed by an escape code (below), so no value is ever clipped.

**Grouped by table.** constriction is fast for many symbols of one distribution and slow
for one distribution per symbol (~44 s for 500k symbols against ~30 ms grouped). Within
one `encode` call the symbols are therefore coded table by table (ascending table index,
each table's symbols in their original order), then the escapes of the whole call. The
decoder holds the same `indexes`, so it forms the same groups.

**Tables.** The coder takes float probabilities and quantizes them to its own 24-bit
precision; we give it our 16-bit counts divided by 2^16, which it represents exactly, so
what is coded is our tables (`coding.tables`), not a quantization of its own.

**Escapes** (values outside [0, L) of a table with L bins before its overflow bin): fold
to u >= 0 (above the table: 2 (v - L); below: 2 (-1 - v) + 1), then an Elias-gamma code
of u + 1 with n = bit_length(u + 1): n - 1 = k as one symbol of probability 2^-(k+1)
(the unary prefix, in one symbol), then the n - 1 low bits of u + 1 in uniform chunks of
at most 16 bits.

**Damage.** Past its last word the decoder reads zeros without complaint, so a section cut
short, or a crafted file of a few zero bytes, decodes to symbols. `SymbolCosts` gives the
missing check: every decoded symbol narrows the coder's range by a known factor, so the
bytes a stream must hold follow from the symbols read (`needed_bits`), and a
`RangeDecoder` that has read more than its bytes can hold reports damage.
"""

from __future__ import annotations

import dataclasses

import constriction
import numpy as np

from tgic_jax.coding.tables import split_lookup

_ESCAPE_LENGTHS = 32  # n - 1 < 32: escaped values up to 2^31
_ESCAPE_CHUNK_BITS = 16
_MAX_ESCAPE_BITS = 31  # u + 1 < 2^31: more than any symbol the codec lets through (2^24)
# Bits a valid stream may fall short of the symbols' lower bound. The coder keeps its range
# in [2^32, 2^64) and writes a 32-bit word each time it narrows by 2^32, so the words it has
# written when it seals hold every symbol's bits but for at most one word, which the seal
# writes; `finish` then drops at most the last word's trailing zero bytes (24 bits). On
# 400 random valid streams the needed bits never exceeded the stream's. A tighter slack
# catches more truncation: a z section cut to 2 bytes needs ~77 bits in a tiny model.
SLACK_BITS = 32 + 24


def _models(cdf: np.ndarray):
    """constriction's model of one CDF (counts / 2^16: exact at its 24-bit precision)."""
    p = np.diff(np.asarray(cdf, np.int64)).astype(np.float64) / float(cdf[-1])
    return constriction.stream.model.Categorical(p, perfect=False)


@dataclasses.dataclass(frozen=True)
class SymbolCosts:
    """Per table and bin, a lower bound on the bits one decoded symbol consumes.

    The coder narrows its range R to floor(R / 2^24) q for a bin of quantized probability
    q / 2^24 <= p + 2^-16 (p = (cdf[v+1] - cdf[v]) / 2^16, exact in 24 bits), and takes a
    new 32-bit word whenever R falls too low: a symbol therefore consumes at least
    -log2(p + 2^-16) bits of the stream, whatever the stream's bytes. An escaped value costs
    its overflow bin plus its escape code (n bits of length prefix, counted as n - 1 for
    safety, and n - 1 uniform bits).
    """

    bins: np.ndarray  # float64, every table's bins concatenated (overflow bin excluded)
    starts: np.ndarray  # int64 [tables]: where each table's bins start in `bins`
    lengths: np.ndarray  # int64 [tables]: bins per table before its overflow bin
    overflow: np.ndarray  # float64 [tables]: cost of the overflow (escape) bin
    minimum: np.ndarray  # float64 [tables]: the cheapest symbol of each table

    @classmethod
    def from_cdfs(cls, cdfs: list[np.ndarray]) -> SymbolCosts:
        """Costs of a list of CDFs (each [0, ..., 2^precision])."""
        bins, starts, lengths, overflow, minimum = [], [], [], [], []
        start = 0
        for cdf in cdfs:
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
            np.concatenate(bins),
            np.asarray(starts, np.int64),
            np.asarray(lengths, np.int64),
            np.asarray(overflow),
            np.asarray(minimum),
        )

    @classmethod
    def from_lookup(cls, lookup: np.ndarray) -> SymbolCosts:
        """Costs of the CDFs in a concatenated lookup (`coding.tables` layout)."""
        return cls.from_cdfs(split_lookup(lookup))

    def needed_bits(self, values: np.ndarray, indexes: np.ndarray) -> float:
        """Lower bound on the stream bits that decoding `values` with tables `indexes` read."""
        values = np.asarray(values, np.int64).reshape(-1)
        indexes = np.asarray(indexes, np.int64).reshape(-1)
        n = self.lengths[indexes]
        inside = (values >= 0) & (values < n)
        # The length code costs n bits (probability 2^-n; counted as n - 1, a safe bound
        # whatever the coder's rounding of the far tail), then n - 1 uniform bits.
        escape = 2 * (_escape_bits(_fold(values, n)) - 1)
        cost = np.where(
            inside,
            self.bins[self.starts[indexes] + np.where(inside, values, 0)],
            self.overflow[indexes] + escape,
        )
        return float(cost.sum())


def fits(needed_bits: float, num_bytes: int) -> bool:
    """Whether a stream of `num_bytes` can hold symbols that need `needed_bits` at least."""
    return needed_bits <= 8 * num_bytes + SLACK_BITS


class Tables:
    """The coder's view of one family of tables: a model per table, lengths and costs.

    Built once per lookup (a Coder keeps one per family); `RangeEncoder` and
    `RangeDecoder` also accept a plain lookup and build this on the fly.
    """

    def __init__(self, lookup: np.ndarray):
        cdfs = split_lookup(lookup)
        for k, cdf in enumerate(cdfs):
            if cdf[0] != 0 or np.any(np.diff(cdf) <= 0):
                raise ValueError(f"table {k} is not a strictly increasing CDF from 0")
        self.models = [_models(cdf) for cdf in cdfs]
        self.costs = SymbolCosts.from_cdfs(cdfs)
        self.lengths = self.costs.lengths

    @classmethod
    def of(cls, lookup_or_tables) -> Tables:
        """`lookup_or_tables` itself when it already is a `Tables`."""
        return lookup_or_tables if isinstance(lookup_or_tables, Tables) else cls(lookup_or_tables)


def _fold(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Escaped values -> u >= 0 (above the table: even, below: odd); garbage inside."""
    return np.where(values >= lengths, 2 * (values - lengths), 2 * (-1 - values) + 1)


def _escape_bits(u: np.ndarray) -> np.ndarray:
    """n = bit_length(u + 1) for u >= 0 (1 for negative u, which only masked lanes have)."""
    u1 = np.maximum(np.asarray(u, np.int64) + 1, 1)
    return np.frexp(u1.astype(np.float64))[1].astype(np.int64)  # exact, unlike log2


def _chunks(n_low_bits: np.ndarray) -> list[np.ndarray]:
    """Per escape, the widths of its uniform chunks, top first ([k] arrays, 0 = none)."""
    widths, left = [], np.asarray(n_low_bits, np.int64).copy()
    while left.any():
        w = np.minimum(left, _ESCAPE_CHUNK_BITS)
        widths.append(w)
        left = left - w
    return widths


def _groups(indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, tables, bounds): positions sorted by table (stable), each table's slice."""
    # Narrow keys sort several times faster (the sort was most of the coder's time).
    narrow = indexes.astype(np.int16) if indexes.max(initial=0) < 2**15 else indexes
    order = np.argsort(narrow, kind="stable")
    ordered = indexes[order]
    tables, starts = np.unique(ordered, return_index=True)
    bounds = np.append(starts, len(ordered))
    return order, tables, bounds


_UNIFORM = constriction.stream.model.Uniform()  # family: one size per symbol
# n - 1 = k with probability 2^-(k+1): Elias gamma's unary length prefix as one symbol.
# Most escapes land just past their table (u = 0: one bit in all, not five).
_LENGTH_MODEL = constriction.stream.model.Categorical(
    np.exp2(-np.arange(1.0, _ESCAPE_LENGTHS + 1)), perfect=False
)


def _words_to_bytes(words: np.ndarray) -> bytes:
    """Big-endian words, the last word's trailing zero bytes dropped (the decoder pads them).

    Only the last word's: dropping whole zero words would let a valid stream look as
    short as a truncated one (`SLACK_BITS`).
    """
    data = np.asarray(words, ">u4").tobytes()
    keep = len(data) - 3 if len(data) >= 4 else 0
    return data[:keep] + data[keep:].rstrip(b"\0")


def _bytes_to_words(data: bytes) -> np.ndarray:
    padded = bytes(data) + b"\0" * (-len(data) % 4)
    return np.frombuffer(padded, ">u4").astype(np.uint32)


class RangeEncoder:
    """One range-coded stream over the tables of `lookup` (a lookup array or `Tables`)."""

    def __init__(self, lookup):
        self._tables = Tables.of(lookup)
        self._coder = constriction.stream.queue.RangeEncoder()

    def encode(self, values: np.ndarray, indexes: np.ndarray) -> None:
        """Appends `values` (integers), each coded with table `indexes` (same shape)."""
        values = np.asarray(values, np.int64).reshape(-1)
        indexes = np.asarray(indexes, np.int64).reshape(-1)
        if values.shape != indexes.shape:
            raise ValueError(f"values {values.shape} and indexes {indexes.shape} differ")
        if not values.size:
            return
        if indexes.min() < 0 or indexes.max() >= len(self._tables.models):
            raise ValueError(f"table indexes outside [0, {len(self._tables.models)})")
        lengths = self._tables.lengths[indexes]
        escaped = (values < 0) | (values >= lengths)
        coded = np.where(escaped, lengths, values).astype(np.int32)
        order, tables, bounds = _groups(indexes)
        for k, a, b in zip(tables, bounds[:-1], bounds[1:], strict=True):
            self._coder.encode(coded[order[a:b]], self._tables.models[k])
        if escaped.any():  # in the decoder's order: table by table
            at = order[escaped[order]]
            u1 = _fold(values[at], lengths[at]) + 1
            if u1.max() >= 1 << _MAX_ESCAPE_BITS:
                raise ValueError("escaped value too large for the range coder")
            n = _escape_bits(u1 - 1)
            self._coder.encode((n - 1).astype(np.int32), _LENGTH_MODEL)
            left = n - 1
            for w in _chunks(n - 1):
                left = left - w
                use = w > 0
                chunk = (u1[use] >> left[use]) & ((1 << w[use]) - 1)
                self._coder.encode(chunk.astype(np.int32), _UNIFORM, (1 << w[use]).astype(np.int32))

    def finish(self) -> bytes:
        """The stream's bytes (the encoder cannot be used afterwards)."""
        data = _words_to_bytes(self._coder.get_compressed())
        self._coder = None
        return data


class RangeDecoder:
    """Reads a stream written by `RangeEncoder` with the same tables."""

    def __init__(self, data: bytes, lookup, costs: SymbolCosts | None = None):
        self._tables = Tables.of(lookup)
        self._costs = costs if costs is not None else self._tables.costs
        self._bytes = len(data)
        self.needed_bits = 0.0  # lower bound on the bits the symbols read so far consumed
        self._coder = constriction.stream.queue.RangeDecoder(_bytes_to_words(data))

    def decode(self, indexes: np.ndarray) -> np.ndarray:
        """Values (int64, shape of `indexes`) coded with tables `indexes`."""
        indexes = np.asarray(indexes)
        if not indexes.size:
            return np.zeros(indexes.shape, np.int64)
        flat = indexes.reshape(-1).astype(np.int64)
        if flat.min() < 0 or flat.max() >= len(self._tables.models):
            raise ValueError(f"table indexes outside [0, {len(self._tables.models)})")
        values = np.empty(flat.shape, np.int64)
        order, tables, bounds = _groups(flat)
        for k, a, b in zip(tables, bounds[:-1], bounds[1:], strict=True):
            values[order[a:b]] = self._coder.decode(self._tables.models[k], int(b - a))
        lengths = self._tables.lengths[flat]
        escaped = values == lengths
        if escaped.any():
            at = order[escaped[order]]
            n = self._coder.decode(_LENGTH_MODEL, len(at)).astype(np.int64) + 1
            u1 = np.ones(len(at), np.int64)
            for w in _chunks(n - 1):
                use = w > 0
                chunk = self._coder.decode(_UNIFORM, (1 << w[use]).astype(np.int32))
                u1[use] = (u1[use] << w[use]) | chunk
            u = u1 - 1
            up = u % 2 == 0
            values[at] = np.where(up, lengths[at] + u // 2, -1 - (u - 1) // 2)
        self.needed_bits += self._costs.needed_bits(values, flat)
        return values.reshape(indexes.shape)

    @property
    def overrun(self) -> bool:
        """True once the symbols read need more bits than the stream holds (it ended early)."""
        return not fits(self.needed_bits, self._bytes)

    def finish(self) -> bool:
        """End-of-stream check (False: the stream was damaged or ended before its symbols)."""
        self._coder = None
        return not self.overrun
