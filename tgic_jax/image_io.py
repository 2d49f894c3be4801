"""Reading images into float32 RGB in [0, 1], and writing 8-bit PNGs.

`load_image` accepts what Pillow reads and converts it to RGB, saying so in `notes` (an
animation gives its first frame, noted):
the EXIF orientation is applied (as viewers show the photo), 16-bit and 32-bit grayscale
are scaled from their full range, 16-bit RGB is reduced to 8 bits (Pillow's reading),
grayscale is replicated, palette images are expanded, the alpha channel is dropped.
Unreadable files and images larger than `max_pixels` raise `ImageError` (a ValueError)
with one clear line that names the file once.

`save_png` writes atomically (`files.write_atomic`): a full disk, a file-size limit or a
kill never leaves a truncated PNG under the final name, and an existing file is replaced
only when `overwrite` says so.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np

from tgic_jax.files import write_atomic

# The common suffixes of what Pillow reads (kept for importers); listing a folder keeps
# every suffix Pillow can open here (`readable_suffixes`), case-insensitive.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")
# Registered by Pillow but not images it decodes by itself: stubs that need a handler
# (BUFR, GRIB, HDF5, MPEG), Ghostscript (EPS) or Windows (EMF, WMF).
_NOT_DECODED = {".bufr", ".grib", ".h5", ".hdf", ".mpeg", ".mpg", ".eps", ".ps", ".emf", ".wmf"}


@functools.cache
def readable_suffixes() -> frozenset[str]:
    """Every file suffix (lower case, with the dot) whose format Pillow opens here."""
    from PIL import Image

    Image.init()
    found = {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return frozenset((found - _NOT_DECODED) | set(IMAGE_SUFFIXES))


class ImageError(ValueError):
    """The file cannot be used as an input image (one-line reason)."""


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files (by `readable_suffixes`: .gif too) directly in `folder`, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    suffixes = readable_suffixes()
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file())


def load_image(
    path: str | os.PathLike, max_pixels: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """-> (image float32 [H, W, 3] in [0, 1], notes on any conversion done).

    `max_pixels` None: only Pillow's decompression-bomb limit (~89 M pixels) applies; the
    codec passes its own `codec.MAX_PIXELS`, the largest image it decodes by default.
    """
    from PIL import Image, UnidentifiedImageError

    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageError(f"{path}: {w} x {h} image exceeds max_pixels={max_pixels}")
            if w < 1 or h < 1:
                raise ImageError(f"{path}: empty image ({w} x {h})")
            bits16 = _is_16bit_colour(im)
            frames = int(getattr(im, "n_frames", 1) or 1)
            if frames > 1:  # Pillow opens an animation (GIF, APNG, WebP) at its first frame
                notes.append(f"animation of {frames} frames: the first frame is used")
            im.load()
            im = _apply_orientation(im, notes)
            if bits16:
                notes.append(f"16-bit {im.mode} reduced to 8 bits per channel")
            return _to_rgb_float(im, notes), notes
    except ImageError:
        raise
    except FileNotFoundError as e:
        raise ImageError(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise ImageError(f"{path}: is a directory") from e
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as e:
        raise ImageError(f"{path}: cannot read image ({_one_line(e, path)})") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or corrupt data
        raise ImageError(f"{path}: cannot read image ({_one_line(e, path)})") from e


_ORIENTATION_WORDS = {
    2: "mirrored",
    3: "rotated 180 degrees",
    4: "flipped vertically",
    5: "transposed",
    6: "rotated 90 degrees clockwise",
    7: "transversed",
    8: "rotated 90 degrees counter-clockwise",
}


def _apply_orientation(im, notes: list[str]):
    """Turns the pixels the way the EXIF orientation tag says (what viewers show)."""
    from PIL import ImageOps

    try:
        orientation = int(im.getexif().get(0x0112, 1) or 1)
    except (ValueError, TypeError, SyntaxError, OSError):  # a damaged EXIF block: ignore it
        return im
    if orientation not in _ORIENTATION_WORDS:
        return im
    turned = ImageOps.exif_transpose(im)
    notes.append(f"EXIF orientation {orientation} applied ({_ORIENTATION_WORDS[orientation]})")
    return turned


def _is_16bit_colour(im) -> bool:
    """Pillow reads 16-bit RGB(A) as 8-bit 'RGB': only the raw mode of its tiles tells."""
    if im.mode not in ("RGB", "RGBA"):
        return False
    for tile in getattr(im, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else (args[0] if args else "")
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def _one_line(e: BaseException, path=None) -> str:
    msg = (str(e) or type(e).__name__).splitlines()[0]
    if path is not None:  # Pillow repeats the path; our message starts with it already
        msg = msg.replace(f" '{path}'", "").replace(f" {path}", "").replace(str(path), "it")
    return msg


def _to_rgb_float(im, notes: list[str]) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        notes.append(f"16-bit grayscale ({mode}) scaled to [0, 1] and replicated to RGB")
        a = np.asarray(im, np.float64) / 65535.0
    elif mode == "I":
        # Pillow opens 16-bit PNG grayscale as 32-bit "I"; values above 65535 are clipped.
        notes.append("integer grayscale (I) read as 16-bit, scaled to [0, 1], replicated to RGB")
        a = np.clip(np.asarray(im, np.float64) / 65535.0, 0.0, 1.0)
    elif mode == "F":
        notes.append("float grayscale (F) clipped to [0, 1] and replicated to RGB")
        a = np.clip(np.nan_to_num(np.asarray(im, np.float64)), 0.0, 1.0)
    elif mode == "RGB":
        return np.asarray(im, np.float32) / np.float32(255.0)
    else:
        if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
            notes.append(f"alpha channel dropped ({mode})")
        if mode in ("P", "PA"):
            notes.append("palette image expanded to RGB")
        elif mode in ("L", "LA", "1", "La"):
            notes.append(f"grayscale ({mode}) replicated to RGB")
        elif mode not in ("RGBA", "RGBa"):
            notes.append(f"{mode} converted to RGB")
        return np.asarray(im.convert("RGB"), np.float32) / np.float32(255.0)
    return np.repeat(a.astype(np.float32)[..., None], 3, axis=-1)


def to_uint8(image) -> np.ndarray:
    """[0, 1] float image -> uint8, clamped and rounded (what an 8-bit PNG stores); NaN -> 0.

    NaN is mapped to 0 explicitly: its uint8 cast is undefined and differs between platforms.
    """
    a = np.nan_to_num(np.asarray(image, np.float64), nan=0.0)
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_png(path: str | os.PathLike, image: np.ndarray, overwrite: bool = True) -> None:
    """Writes an 8-bit RGB PNG of a float image in [0, 1] (clamped, rounded), atomically."""
    from PIL import Image

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an [H, W, 3] image, got {image.shape}")
    pil = Image.fromarray(to_uint8(image), "RGB")
    write_atomic(path, lambda f: pil.save(f, format="PNG"), overwrite=overwrite)
