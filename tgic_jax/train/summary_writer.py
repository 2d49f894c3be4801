"""TensorBoard event files written without TensorFlow: scalars and PNG images.

An event file is a TFRecord stream of `Event` protos: each record is its length (uint64,
little-endian), the masked CRC32C of those 8 bytes, the payload, and the payload's masked
CRC32C. The protos come from the `tensorboard` package (no TensorFlow behind them); the
framing and the CRC are the few lines below. flax's `SummaryWriter` and `tf.summary` both
import TensorFlow (~3 s, hundreds of MB, one more CUDA stack), which a bare GPU image
does not have; `tensorboard.summary.writer` reaches for TensorFlow too when it is
installed (`tensorboard.compat.tf`).

Scalars and images are tensor summaries laid out as `tf.summary.scalar` and
`tf.summary.image` write them (what flax's writer wrote here before), so whatever read
earlier runs reads these. Local folders are appended to; on other locations (gs://), whose
object stores have no append, records are staged in a local file and uploaded as closed
segments, each once (`event_upload`).
"""

from __future__ import annotations

import io
import os
import socket
import struct
import time
from pathlib import Path

import numpy as np


# ----------------------------------------------------------------------------- framing
def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, as TFRecord framing uses."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(payload: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the payload, the payload's masked CRC."""
    length = struct.pack("<Q", len(payload))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + payload
        + struct.pack("<I", masked_crc32c(payload))
    )


# ----------------------------------------------------------------------------- writer
class SummaryWriter:
    """Scalars and images into `logdir/events.out.tfevents.<time>.<host>` (flax's API)."""

    def __init__(
        self,
        logdir: str | os.PathLike,
        staged: bool | None = None,
        segment_bytes: int | None = None,
        segment_seconds: float | None = None,
    ):
        """staged: events go to `logdir` as closed segments (`event_upload`); None: so for a
        URL (gs://), appended to one file for a local folder. segment_bytes /
        segment_seconds: when a segment is closed (`event_upload.SEGMENT_BYTES` /
        `SEGMENT_SECONDS` by default)."""
        from tensorboard.compat.proto import event_pb2

        self._event_pb2 = event_pb2
        self._pending: list[bytes] = []
        logdir_str = os.fspath(logdir)
        self._remote = "://" in logdir_str if staged is None else bool(staged)
        if self._remote:
            from tgic_jax.train import event_upload

            self._segments = event_upload.SegmentedEvents(
                logdir_str,
                self._header,
                segment_bytes or event_upload.SEGMENT_BYTES,
                segment_seconds or event_upload.SEGMENT_SECONDS,
            )
        else:
            name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
            Path(logdir_str).mkdir(parents=True, exist_ok=True)
            self._path = Path(logdir_str) / name
            self._file = open(self._path, "ab")  # closed by close()
            self._file.write(self._header())
            self._file.flush()

    def _header(self) -> bytes:
        """The record every event file starts with (TensorBoard's file version)."""
        event = self._event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
        return frame_record(event.SerializeToString())

    @property
    def path(self) -> str:
        """The event file's path (remote: where the open segment goes)."""
        return self._segments.path if self._remote else str(self._path)

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar at step."""
        from tensorboard.plugins.scalar import metadata
        from tensorboard.util import tensor_util

        tensor = tensor_util.make_tensor_proto(np.float32(value))
        self._add_value(tag, tensor, metadata.create_summary_metadata("", ""), step)

    def image(self, tag: str, image, step: int) -> None:
        """One uint8 (or [0, 1] float) image [H, W, 3] or [H, W], stored as PNG."""
        from PIL import Image
        from tensorboard.plugins.image import metadata
        from tensorboard.util import tensor_util

        a = np.asarray(image)
        if a.ndim == 4:  # a batch of one, as tf.summary.image takes
            a = a[0]
        if a.dtype != np.uint8:
            a = (np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0) * 255 + 0.5).astype(
                np.uint8
            )
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        h, w = a.shape[:2]
        # tf.summary.image's layout: [width, height, png, ...] as strings.
        strings = np.array([str(w).encode(), str(h).encode(), buf.getvalue()], dtype=object)
        tensor = tensor_util.make_tensor_proto(strings)
        self._add_value(tag, tensor, metadata.create_summary_metadata("", ""), step)

    def flush(self) -> None:
        """Writes what is pending to the event file."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending = []
        if self._remote:
            self._segments.write(data)
        else:
            self._file.write(data)
            self._file.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        self.flush()
        if self._remote:
            self._segments.close()
        elif not self._file.closed:
            self._file.close()

    def _add_value(self, tag: str, tensor, metadata, step: int) -> None:
        from tensorboard.compat.proto import summary_pb2

        value = summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=metadata)
        summary = summary_pb2.Summary(value=[value])
        self._add(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def _add(self, event) -> None:
        self._pending.append(frame_record(event.SerializeToString()))
