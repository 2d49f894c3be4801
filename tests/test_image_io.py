"""Reading images as viewers show them, writing files all or nothing."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from helpers import synthetic_image

from tgic_jax import image_io


def _quadrants(h: int, w: int) -> np.ndarray:
    """uint8 [h, w, 3]: red top-left, green top-right, blue bottom-left, white bottom-right."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 0)
    a[: h // 2, w // 2 :] = (0, 255, 0)
    a[h // 2 :, : w // 2] = (0, 0, 255)
    a[h // 2 :, w // 2 :] = (255, 255, 255)
    return a


@pytest.mark.parametrize(("orientation", "turn"), [(6, -1), (8, 1), (3, 2)])
def test_an_exif_rotated_jpeg_loads_the_way_a_viewer_shows_it(tmp_path, orientation, turn):
    from PIL import Image

    stored = _quadrants(32, 64)  # a sideways phone photo: 64 wide as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "p.jpg", quality=95, exif=exif.tobytes())
    x, notes = image_io.load_image(tmp_path / "p.jpg")
    expected = np.rot90(stored, k=turn)  # k=-1: 90 degrees clockwise
    assert x.shape == expected.shape
    # JPEG is lossy at the quadrant edges: compare the quadrant centres.
    h, w = expected.shape[:2]
    for r, c in ((h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4)):
        np.testing.assert_allclose(x[r, c] * 255, expected[r, c], atol=12)
    assert any(f"EXIF orientation {orientation}" in n for n in notes), notes


def test_an_image_without_orientation_is_untouched_and_unnoted(tmp_path):
    from PIL import Image

    Image.fromarray(_quadrants(8, 12)).save(tmp_path / "p.png")
    x, notes = image_io.load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), _quadrants(8, 12))
    assert notes == []


def _png_rgb16(path, a: np.ndarray) -> None:
    """A 16-bit RGB PNG (Pillow cannot write one)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    h, w = a.shape[:2]
    rows = b"".join(b"\x00" + a[i].astype(">u2").tobytes() for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_a_16_bit_rgb_image_is_noted_as_reduced_to_8_bits(tmp_path):
    a = np.random.default_rng(0).integers(0, 65536, (4, 5, 3)).astype(np.uint16)
    _png_rgb16(tmp_path / "rgb16.png", a)
    x, notes = image_io.load_image(tmp_path / "rgb16.png")
    np.testing.assert_array_equal(np.round(x * 255), a >> 8)
    assert any("16-bit" in n and "8 bits" in n for n in notes), notes


def test_a_load_error_names_the_file_once(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(image_io.ImageError) as err:
        image_io.load_image(tmp_path / "bad.png")
    assert str(err.value).count("bad.png") == 1


def test_save_png_writes_atomically_and_keeps_an_existing_png_without_overwrite(tmp_path):
    x = np.full((4, 4, 3), 0.5, np.float32)
    image_io.save_png(tmp_path / "o.png", x)
    with pytest.raises(FileExistsError):
        image_io.save_png(tmp_path / "o.png", np.zeros((4, 4, 3), np.float32), overwrite=False)
    y, _ = image_io.load_image(tmp_path / "o.png")
    np.testing.assert_array_equal(np.round(y * 255), 128)


def test_to_uint8_maps_nan_to_black_and_clamps_infinities():
    x = np.array([np.nan, -np.inf, np.inf, 0.2 / 255, 254.7 / 255], np.float32)
    assert image_io.to_uint8(x).tolist() == [0, 0, 255, 0, 255]


def test_list_images_keeps_image_files_only_sorted_by_name(tmp_path):
    for name in ("b.PNG", "a.jpg", "notes.txt", "c.webp"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.png").mkdir()  # a folder named like an image is not an image
    assert [p.name for p in image_io.list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.webp"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_io.list_images(tmp_path / "missing")


def test_load_image_converts_odd_modes_and_says_so(tmp_path):
    from PIL import Image

    rgb = (synthetic_image(5, 7) * 255).round().astype(np.uint8)
    cases = {
        "rgba.png": (
            Image.fromarray(np.dstack([rgb, np.full((5, 7), 128, np.uint8)]), "RGBA"),
            "alpha",
        ),
        "gray.png": (Image.fromarray(rgb[..., 0], "L"), "grayscale"),
        "pal.png": (Image.fromarray(rgb).convert("P"), "palette"),
        "g16.png": (Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "16-bit"),
    }
    for name, (im, word) in cases.items():
        im.save(tmp_path / name)
        x, notes = image_io.load_image(tmp_path / name)
        assert x.shape == (5, 7, 3) and x.dtype == np.float32, name
        assert 0 <= x.min() and x.max() <= 1
        assert any(word in n for n in notes), (name, notes)
    x, _ = image_io.load_image(tmp_path / "g16.png")  # 16-bit values scaled by 65535
    np.testing.assert_allclose(x[..., 0], rgb[..., 0] / 255.0, atol=1e-6)
    x, notes = image_io.load_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), rgb)


def test_load_image_refuses_unreadable_and_oversized_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    for path in (tmp_path / "bad.png", tmp_path / "missing.png", tmp_path):
        with pytest.raises(image_io.ImageError, match=str(path.name)):
            image_io.load_image(path)
    image_io.save_png(tmp_path / "big.png", synthetic_image(20, 30))
    with pytest.raises(image_io.ImageError, match="max_pixels"):
        image_io.load_image(tmp_path / "big.png", max_pixels=599)
    x, notes = image_io.load_image(tmp_path / "big.png", max_pixels=600)
    assert x.shape == (20, 30, 3) and notes == []


def test_save_png_clamps_and_rounds(tmp_path):
    x = np.array([[[-0.5, 0.5, 1.7], [0.2, 0.998, 0.001]]], np.float32)
    image_io.save_png(tmp_path / "o.png", x)
    y, _ = image_io.load_image(tmp_path / "o.png")
    np.testing.assert_array_equal(np.round(y * 255), [[[0, 128, 255], [51, 254, 0]]])
