r"""Images per second of the training input alone (no model): decode, random crop, batch.

The folder source of `tgic_jax/train/input_pipeline.py` on full-size images: Kodak's PNGs
(768x512) as they are, and the same images re-encoded as JPEG (quality 95), COCO's format.
Run: python benchmarks/input.py [--folder data/kodak] [--crop 256] [--batch 16]
[--batches 20] [--workers 0 (= one per core)]. Compare with the train step's images/s
(benchmarks/train.py): at or above it, the input keeps up and the logged input wait
stays near zero.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def jpeg_copy(folder: Path, out: Path, quality: int = 95) -> Path:
    """The folder's captioned images re-encoded as JPEG, with a matching captions.json."""
    from PIL import Image

    captions = json.loads((folder / "captions.json").read_text())
    renamed = {}
    for name, caption in captions.items():
        src = folder / name
        if src.is_file():
            Image.open(src).convert("RGB").save(out / f"{src.stem}.jpg", quality=quality)
            renamed[f"{src.stem}.jpg"] = caption
    (out / "captions.json").write_text(json.dumps(renamed))
    return out


def images_per_second(folder: Path, crop: int, batch: int, batches: int, workers: int) -> float:
    """Host images/s of `input_pipeline.make_dataset` after one warm-up batch."""
    import ml_collections

    sys.path.insert(0, str(REPO))
    from tgic_jax.train import input_pipeline

    config = ml_collections.ConfigDict(
        dict(
            source="folder",
            folder=str(folder),
            captions="",
            max_images=0,
            crop_size=crop,
            workers=workers,
            cache=False,
        )
    )
    it = iter(input_pipeline.make_dataset(config, batch, seed=0))
    next(it)  # pool started, first batch decoded
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    ips = batch * batches / (time.perf_counter() - t0)
    it.close()  # its threads stop before the caller removes the folder
    return ips


def main(argv=None) -> dict:
    """Prints and returns {"png": images/s, "jpeg": images/s}."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", default=str(REPO / "data" / "kodak"))
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--workers", type=int, default=0)
    a = p.parse_args(argv)
    import os

    folder = Path(a.folder)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, where in (("png", folder), ("jpeg", jpeg_copy(folder, Path(tmp)))):
            ips = images_per_second(where, a.crop, a.batch, a.batches, a.workers)
            out[kind] = ips
            print(
                f"input alone, {kind} {where.name}: {ips:.0f} images/s "
                f"({a.crop}x{a.crop} crops, batch {a.batch}, "
                f"{a.workers or min(32, os.cpu_count() or 1)} threads, "
                f"{os.cpu_count()} cores)",
                flush=True,
            )
    return out


if __name__ == "__main__":
    main()
