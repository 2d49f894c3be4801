"""A thin host-side wrapper of tensorflow-compression's range coder (eager TF ops).

One `RangeEncoder` writes one stream; `encode(values, indexes)` may be called several
times (the handle carries the coder state), and `finish()` returns the bytes. The
`RangeDecoder` mirrors it call for call: the same lookup, the same sequence of
`decode(indexes)` shapes. Values are table-relative (symbol - offset); values outside a
table's range go through the coder's Elias-gamma escape (lookup precision negated).
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def hide_gpus_from_tf() -> None:
    """TF is only a host-side helper here: keep it off every GPU (JAX owns them)."""
    import tensorflow as tf  # noqa: PLC0415

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # already initialized: GPUs are then hidden or unused by our ops
        pass


@functools.cache
def _ops():
    hide_gpus_from_tf()
    import tensorflow as tf  # noqa: PLC0415
    import tensorflow_compression_ops as tco  # noqa: PLC0415

    return tf, tco


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

    def __init__(self, data: bytes, lookup: np.ndarray):
        tf, tco = _ops()
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
        return values.numpy().reshape(indexes.shape)

    def finish(self) -> bool:
        """The coder's weak end-of-stream check (False: the stream was certainly damaged)."""
        tf, tco = _ops()
        with tf.device("/cpu:0"):
            ok = bool(tco.entropy_decode_finalize(self._handle).numpy())
        self._handle = None
        return ok
