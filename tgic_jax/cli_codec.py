"""`tgic compress` and `tgic decompress`: argument wiring around tgic_jax.codec.

    tgic compress IMAGE_OR_FOLDER... --caption TEXT | --captions JSON | --text-embeddings NPY
                  --checkpoint DIR -o OUT
    tgic decompress FILE_OR_FOLDER... --checkpoint DIR -o OUT

OUT is a file when there is one input and OUT ends in .tgic (.png); otherwise a folder
that receives <stem>.tgic (<stem>.png). One line per image: bytes, bpp, milliseconds.
A failing image is reported and skipped; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def add_compress_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `tgic compress`."""
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files or folders of images")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--caption", help="one caption for every image")
    text.add_argument("--captions", help="JSON file {image file name: caption}")
    text.add_argument(
        "--text-embeddings", help=".npy of text states [T, D] (all images) or [B, T, D] (in order)"
    )
    p.add_argument("--checkpoint", required=True, help="inference checkpoint directory")
    p.add_argument("-o", "--output", required=True, help="output .tgic file or folder")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse larger images")


def add_decompress_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `tgic decompress`."""
    p.add_argument("inputs", nargs="+", metavar="FILE", help=".tgic files or folders of them")
    p.add_argument("--checkpoint", required=True, help="inference checkpoint directory")
    p.add_argument("-o", "--output", required=True, help="output .png file or folder")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse larger claimed sizes")


def _expand(inputs, suffixes) -> list[Path]:
    paths = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            paths += sorted(q for q in p.iterdir() if q.suffix.lower() in suffixes and q.is_file())
        else:
            paths.append(p)
    return paths


def _outputs(paths: list[Path], output: str, suffix: str) -> list[Path]:
    out = Path(output)
    if len(paths) == 1 and out.suffix.lower() == suffix and not out.is_dir():
        out.parent.mkdir(parents=True, exist_ok=True)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    return [out / (p.stem + suffix) for p in paths]


def _progress(items, desc: str):
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(items, desc=desc, unit="img", disable=len(items) < 2, file=sys.stderr)


def _say(line: str) -> None:
    from tqdm import tqdm  # noqa: PLC0415

    tqdm.write(line)


def _load(checkpoint: str):
    from tgic_jax.checkpoint import load_inference  # noqa: PLC0415

    return load_inference(checkpoint)


class _Texts:
    """Text states per image from a caption, a captions file or precomputed embeddings."""

    def __init__(self, args, config, paths: list[Path]):
        import numpy as np  # noqa: PLC0415

        self.fixed = self.per_image = self.captions = self.encoder = None
        if args.text_embeddings:
            emb = np.load(args.text_embeddings).astype(np.float32)
            if emb.ndim == 2:
                self.fixed = emb
            elif emb.ndim == 3 and emb.shape[0] == len(paths):
                self.per_image = emb
            else:
                raise ValueError(
                    f"--text-embeddings has shape {emb.shape}: need [T, D] or [{len(paths)}, T, D]"
                )
            return
        if args.captions:
            self.captions = json.loads(Path(args.captions).read_text())
            if not isinstance(self.captions, dict):
                raise ValueError(f"{args.captions}: expected a JSON object {{file name: caption}}")
        text_config = config.get("text") or {}
        if not text_config.get("encoder"):
            raise ValueError("the checkpoint names no text encoder: pass --text-embeddings")
        from tgic_jax.text_encoders import build_text_encoder  # noqa: PLC0415

        self.encoder = build_text_encoder(text_config)
        self.default = args.caption

    def __call__(self, k: int, path: Path):
        if self.fixed is not None:
            return self.fixed
        if self.per_image is not None:
            return self.per_image[k]
        caption = self.default
        if self.captions is not None:
            caption = self.captions.get(path.name, self.captions.get(str(path)))
            if caption is None:
                raise ValueError(f"no caption for {path.name} in the captions file")
        return self.encoder.encode([caption])[0][0]


def run_compress(args: argparse.Namespace) -> int:
    """Compresses each input image to a .tgic file; 0 if all succeeded."""
    from tgic_jax import codec, image_io  # noqa: PLC0415

    paths = _expand(args.inputs, IMAGE_SUFFIXES)
    if not paths:
        print("tgic compress: no input images", file=sys.stderr)
        return 2
    try:
        model, variables, config = _load(args.checkpoint)
        texts = _Texts(args, config, paths)
    except (OSError, ValueError) as e:
        print(f"tgic compress: {e}".splitlines()[0], file=sys.stderr)
        return 2
    outs = _outputs(paths, args.output, ".tgic")
    max_pixels = args.max_pixels or image_io.MAX_PIXELS
    failures = 0
    for k, (path, out) in enumerate(zip(_progress(paths, "compress"), outs, strict=True)):
        try:
            image, notes = image_io.load_image(path, max_pixels=max_pixels)
            text = texts(k, path)
            t0 = time.perf_counter()
            result = codec.encode(model, variables, [image], [text])[0]
            ms = 1e3 * (time.perf_counter() - t0)
            out.write_bytes(result.data)
        except (OSError, ValueError) as e:
            failures += 1
            print(f"tgic compress: {path}: {e}".splitlines()[0], file=sys.stderr)
            continue
        for note in notes:
            _say(f"{path.name}: note: {note}")
        _say(
            f"{path.name} -> {out}: {len(result.data)} bytes, {result.bpp:.4f} bpp "
            f"({result.header_bytes} header), {ms:.0f} ms"
        )
    return 1 if failures else 0


def run_decompress(args: argparse.Namespace) -> int:
    """Decodes each .tgic file to a PNG; 0 if all succeeded."""
    from tgic_jax import codec, image_io  # noqa: PLC0415

    paths = _expand(args.inputs, {".tgic"})
    if not paths:
        print("tgic decompress: no input files", file=sys.stderr)
        return 2
    try:
        model, variables, _ = _load(args.checkpoint)
    except (OSError, ValueError) as e:
        print(f"tgic decompress: {e}".splitlines()[0], file=sys.stderr)
        return 2
    outs = _outputs(paths, args.output, ".png")
    max_pixels = args.max_pixels or codec.MAX_PIXELS
    failures = 0
    for path, out in zip(_progress(paths, "decompress"), outs, strict=True):
        try:
            data = path.read_bytes()
            t0 = time.perf_counter()
            image = codec.decompress(model, variables, data, max_pixels=max_pixels)
            ms = 1e3 * (time.perf_counter() - t0)
            image_io.save_png(out, image)
        except (OSError, ValueError) as e:
            failures += 1
            print(f"tgic decompress: {path}: {e}".splitlines()[0], file=sys.stderr)
            continue
        bpp = 8.0 * len(data) / (image.shape[0] * image.shape[1])
        _say(f"{path.name} -> {out}: {len(data)} bytes, {bpp:.4f} bpp, {ms:.0f} ms")
    return 1 if failures else 0
