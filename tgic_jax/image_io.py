"""Reading images into float32 RGB in [0, 1], and writing 8-bit PNGs.

`load_image` accepts what Pillow reads and converts it to RGB, saying so in `notes`:
16-bit and 32-bit grayscale are scaled from their full range, grayscale is replicated,
palette images are expanded, the alpha channel is dropped. Unreadable files and images
larger than `max_pixels` raise `ImageError` (a ValueError) with one clear line.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

MAX_PIXELS = 1 << 26  # 67 M pixels: far above any test image, far below memory trouble


class ImageError(ValueError):
    """The file cannot be used as an input image (one-line reason)."""


def load_image(
    path: str | os.PathLike, max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, list[str]]:
    """-> (image float32 [H, W, 3] in [0, 1], notes on any conversion done)."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"{path}: {w} x {h} image exceeds max_pixels={max_pixels}")
            if w < 1 or h < 1:
                raise ImageError(f"{path}: empty image ({w} x {h})")
            im.load()
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
        raise ImageError(f"{path}: cannot read image ({_one_line(e)})") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or corrupt data
        raise ImageError(f"{path}: cannot read image ({_one_line(e)})") from e


def _one_line(e: BaseException) -> str:
    return (str(e) or type(e).__name__).splitlines()[0]


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


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [H, W, 3] -> uint8, clamped to [0, 1] and rounded."""
    a = np.nan_to_num(np.asarray(image, np.float32), nan=0.0)
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes an 8-bit RGB PNG of a float image in [0, 1] (clamped, rounded)."""
    from PIL import Image  # noqa: PLC0415

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an [H, W, 3] image, got {image.shape}")
    Image.fromarray(to_uint8(image), "RGB").save(path, format="PNG")
