"""The .tgic file: a small versioned header, the range-coded sections, a CRC32 trailer.

Layout (docs/BITSTREAM.md has the full description):

    magic  b"TGIC"                          4 bytes
    version                                 1 byte
    height, width                           varints (pixels of the original image)
    latent height, latent width             varints (of z: ceil(H / 64), ceil(W / 64))
    model fingerprint                       4 bytes (SHA-256 of config + coding tables)
    section lengths (z, y)                  varints
    sections                                z stream, y stream
    CRC32 of every byte before it           4 bytes, big-endian

Any byte changed, added or removed is caught by the length check or the CRC before a
network runs; a file of another model by the fingerprint.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

MAGIC = b"TGIC"
# 4: sections coded by constriction's range coder with our own escape code (1-3:
# tensorflow-compression's coder, whose streams the new one cannot read). 5: the same
# layout, with every table index and mean from the integer entropy path (`integer_path`).
VERSION = 4
INTEGER_VERSION = 5
READABLE_VERSIONS = (4, 5)
# Versions 1-3: tensorflow-compression's range coder (tgic_jax 0.1.x, jax 0.5.3).
_RETIRED_VERSIONS = (1, 2, 3)
FINGERPRINT_BYTES = 4
NUM_SECTIONS = 2  # z, y
_MAX_VARINT_BYTES = 5  # values < 2**35 (sizes and lengths fit easily)
MIN_SIZE = len(MAGIC) + 1 + 4 + FINGERPRINT_BYTES + NUM_SECTIONS + 4


class BitstreamError(ValueError):
    """The bytes are not a valid .tgic file for this model (one-line reason)."""


@dataclasses.dataclass(frozen=True)
class Container:
    """The parsed contents of one .tgic file."""

    height: int
    width: int
    latent_height: int
    latent_width: int
    fingerprint: bytes
    sections: tuple[bytes, ...]
    version: int = VERSION

    @property
    def header_bytes(self) -> int:
        """Bytes that are not range-coded payload (header and checksum)."""
        return len(pack(self)) - sum(len(s) for s in self.sections)


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"varint of a negative number {n}")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    value, shift = 0, 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= end:
            raise BitstreamError(f"truncated header while reading the {what}")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte == 0 and i:
                raise BitstreamError(f"non-canonical varint for the {what}")
            return value, pos + i + 1
    raise BitstreamError(f"the {what} is too large")


def pack(c: Container) -> bytes:
    """Container -> bytes (with the CRC32 trailer)."""
    if len(c.fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes")
    if len(c.sections) != NUM_SECTIONS:
        raise ValueError(f"expected {NUM_SECTIONS} sections, got {len(c.sections)}")
    if c.version not in READABLE_VERSIONS:
        raise ValueError(f"cannot write .tgic version {c.version}")
    head = bytearray(MAGIC)
    head.append(c.version)
    for n in (c.height, c.width, c.latent_height, c.latent_width):
        head += _varint(n)
    head += c.fingerprint
    for s in c.sections:
        head += _varint(len(s))
    body = bytes(head) + b"".join(c.sections)
    return body + struct.pack(">I", zlib.crc32(body))


def unpack(data: bytes) -> Container:
    """bytes -> Container; raises BitstreamError on any damage (model checks are the caller's)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[: len(MAGIC)] != MAGIC:
        raise BitstreamError("not a .tgic file (bad magic)")
    if len(data) < MIN_SIZE:
        raise BitstreamError(f"file too short ({len(data)} bytes)")
    body, (crc,) = data[:-4], struct.unpack(">I", data[-4:])
    if zlib.crc32(body) != crc:
        raise BitstreamError("checksum mismatch: the file is damaged, truncated or padded")
    version = body[len(MAGIC)]
    if version in _RETIRED_VERSIONS:
        raise BitstreamError(
            f".tgic version {version} was written by tgic_jax 0.1.x (tensorflow-compression's "
            f"range coder); this reader reads version {VERSION}: decode the file with tgic_jax "
            "0.1.x, then compress the image again"
        )
    if version not in READABLE_VERSIONS:
        raise BitstreamError(
            f"unsupported .tgic version {version} (this reader: {READABLE_VERSIONS})"
        )
    pos, end = len(MAGIC) + 1, len(body)
    fields = []
    for what in ("image height", "image width", "latent height", "latent width"):
        value, pos = _read_varint(body, pos, end, what)
        fields.append(value)
    if pos + FINGERPRINT_BYTES > end:
        raise BitstreamError("truncated header while reading the model fingerprint")
    fingerprint = body[pos : pos + FINGERPRINT_BYTES]
    pos += FINGERPRINT_BYTES
    lengths = []
    for k in range(NUM_SECTIONS):
        value, pos = _read_varint(body, pos, end, f"length of section {k}")
        lengths.append(value)
    if pos + sum(lengths) != end:
        raise BitstreamError(
            f"section lengths {lengths} do not match the {end - pos} payload bytes present"
        )
    sections = []
    for n in lengths:
        sections.append(body[pos : pos + n])
        pos += n
    return Container(*fields, fingerprint=fingerprint, sections=tuple(sections), version=version)
