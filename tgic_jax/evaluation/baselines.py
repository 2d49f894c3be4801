"""JPEG baseline with Pillow: real file bytes at several qualities, on the evaluation images.

Pillow's libjpeg with its defaults (baseline, 4:2:0 chroma subsampling, standard Huffman
tables) and only `quality` varied. The bpp is 8 x (bytes of the .jpg file) / (H x W),
exactly as for the learned codec; metrics are computed on the decoded 8-bit image.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tgic_jax import image_io
from tgic_jax.evaluation import metrics

DEFAULT_QUALITIES = (5, 10, 20, 30, 50, 70, 90)
JPEG_SETTINGS = "Pillow libjpeg, baseline, 4:2:0 subsampling, default tables"


def jpeg_encode(image: np.ndarray, quality: int) -> bytes:
    """[H, W, 3] float [0, 1] (or uint8) image -> JPEG file bytes at `quality` (1..95)."""
    pixels = image if image.dtype == np.uint8 else image_io.to_uint8(image)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def jpeg_decode(data: bytes) -> np.ndarray:
    """JPEG bytes -> [H, W, 3] float32 image in [0, 1]."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), np.float32) / 255.0


def jpeg_rows(
    name: str,
    image: np.ndarray,
    qualities: Sequence[int] = DEFAULT_QUALITIES,
    out_dir: str | os.PathLike | None = None,
    lpips_fn: Callable[[np.ndarray, np.ndarray], float] | None = None,
) -> list[dict]:
    """One row per quality for one image: bytes, bpp, PSNR, MS-SSIM, LPIPS (if given).

    With `out_dir`, each .jpg is written to out_dir/q<quality>/<stem>.jpg and its size on
    disk is the one reported.
    """
    h, w = image.shape[:2]
    rows = []
    for q in qualities:
        data = jpeg_encode(image, q)
        num_bytes = len(data)
        if out_dir is not None:
            path = Path(out_dir) / f"q{int(q):02d}" / f"{Path(name).stem}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            num_bytes = path.stat().st_size
        decoded = jpeg_decode(data)
        ms = metrics.ms_ssim(image, decoded)
        row = {
            "image": name,
            "quality": int(q),
            "bytes": num_bytes,
            "bpp": 8.0 * num_bytes / (h * w),
            "psnr": metrics.psnr(image, decoded),
            "ms_ssim": ms,
            "ms_ssim_db": metrics.ms_ssim_db(ms),
            "lpips": float(lpips_fn(image, decoded)) if lpips_fn else float("nan"),
        }
        rows.append(row)
    return rows


def mean_curve(rows: Sequence[dict], keys=("bpp", "psnr", "ms_ssim", "ms_ssim_db", "lpips")):
    """Per-quality means over images -> list of {quality, n, <key>...} sorted by bpp."""
    by_q: dict[int, list[dict]] = {}
    for r in rows:
        by_q.setdefault(r["quality"], []).append(r)
    out = []
    for q, rs in by_q.items():
        point = {"quality": q, "n": len(rs)}
        point.update({k: float(np.mean([r[k] for r in rs])) for k in keys})
        out.append(point)
    return sorted(out, key=lambda p: p["bpp"])
