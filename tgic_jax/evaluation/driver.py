"""Evaluation as the field reports it: real bytes, PSNR / MS-SSIM / LPIPS, times, RD curves.

For every image, checkpoint and caption variant, the image is encoded to a file, the
file is decoded, and the row records:

    bytes, bpp          8 x (size of the written file) / (H x W): the rate you would send
    bpp_estimated       sum of -log2 likelihoods / (H x W), the model's estimate
    psnr                on the 8-bit reconstruction (what a user gets from the PNG)
    psnr_float          on the unclamped float x_hat, as the TACO authors compute it
    ms_ssim(_db)        on the 8-bit reconstruction, data range 1 (see metrics.py)
    lpips               LPIPS-Alex on images mapped to [-1, 1] (correct)
    lpips_zero_one      LPIPS-Alex fed [0, 1] images, as the authors' code calls it
    encode_ms/decode_ms wall time of compress / decompress (text encoding is text_ms)

Averages are means over images of the per-image values (CompressAI's convention).
Caption variants (the ablation): "correct" (the image's own caption), "empty" (""),
"mismatched" (the caption of the next image, wrapping). A JPEG baseline (Pillow, real
file bytes) runs on the same images and every model curve gets a BD-rate against it,
and against the published anchor curves of the data set (ELIC on Kodak).

Outputs in out_dir: per_image.csv/.json, jpeg.csv, summary.json/.md (made by
`evaluation_summary`), rd_{psnr,ms_ssim,lpips}.png/.svg, recon/<checkpoint>/<variant>/
<image>.png, bitstreams/... Failures (unreadable images, codec errors) are recorded and
the run goes on. Entry points: `evaluate_checkpoints` (inference checkpoints: eval.py and
`tgic evaluate`, whose arguments live in cli_evaluate.py), `evaluate` (codec objects) and
`evaluate_means` (in-memory parameters, no files: the training loop's evaluation).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tgic_jax import image_io
from tgic_jax.evaluation import baselines, metrics, plots, sets
from tgic_jax.evaluation.summary import MEAN_KEYS, jsonable, summarize, write_summary

if TYPE_CHECKING:
    from tgic_jax.coding.caption_coder import CaptionCoder

VARIANTS = ("correct", "empty", "mismatched")
ROW_FIELDS = (
    "checkpoint",
    "variant",
    "image",
    "height",
    "width",
    "caption",
    "caption_note",
    "bytes",
    *MEAN_KEYS,  # the per-image metrics the summary averages, in its order
    "bitstream",
    "recon",
)


# ----------------------------------------------------------------------------- codecs
class EvaluatedCodec(Protocol):
    """What the driver needs from a codec it evaluates (a `CaptionCoder`, or a fake in tests)."""

    label: str

    def encode(self, image: np.ndarray, caption: str) -> bytes:
        """The file's bytes for `image` [H, W, 3] coded with `caption`."""

    def decode(self, data: bytes) -> np.ndarray:
        """The image float32 [H, W, 3] in [0, 1] that `data` decodes to."""

    def estimate(self, image: np.ndarray, caption: str) -> dict:
        """{'x_hat_float', 'bpp_estimated'} of `image` from the forward pass."""


Codec = EvaluatedCodec  # the earlier name


def load_codec(checkpoint: str, label: str = "", text_encoder=None) -> CaptionCoder:
    """The default codec loader: the `CaptionCoder` of a TACO inference checkpoint."""
    from tgic_jax.checkpoints.inference import load_caption_coder  # JAX: only when coding

    return load_caption_coder(checkpoint, text_encoder, label)


def TacoCodec(checkpoint: str, text_encoder=None, label: str = "") -> CaptionCoder:
    """The earlier name of `load_codec` (a checkpoint's caption-aware coder)."""
    return load_codec(checkpoint, label, text_encoder)


# ----------------------------------------------------------------------------- LPIPS
LpipsFn = Callable[[np.ndarray, np.ndarray, str], float]


def make_lpips_fn() -> LpipsFn:
    """LPIPS-Alex of two [H, W, 3] images in [0, 1]; input_range as in `lpips_distance`."""
    import jax

    from tgic_jax.evaluation.lpips import load_lpips_params, lpips_distance

    params = load_lpips_params()
    fn = jax.jit(lpips_distance, static_argnames="input_range")

    def distance(a: np.ndarray, b: np.ndarray, input_range: str = "minus_one_one") -> float:
        a = np.asarray(a, np.float32)[None]
        b = np.asarray(b, np.float32)[None]
        return float(np.asarray(fn(params, a, b, input_range=input_range))[0])

    return distance


# ----------------------------------------------------------------------------- images
def load_item_image(
    item: sets.EvalItem, max_pixels: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """(float32 [H, W, 3] in [0, 1], conversion notes); image_io.ImageError if unreadable."""
    if item.array is not None:  # TFDS: uint8 arrays, maybe grayscale
        arr = np.asarray(item.array)
        notes = []
        if arr.ndim == 2 or arr.shape[-1] == 1:
            arr = np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=-1)
            notes.append("grayscale replicated to RGB")
        scale = 255.0 if arr.dtype == np.uint8 else 1.0
        return (arr[..., :3].astype(np.float32) / scale).clip(0.0, 1.0), notes
    image, notes = image_io.load_image(item.path, max_pixels)
    return np.asarray(image, np.float32), list(notes)


# ----------------------------------------------------------------------------- options
@dataclasses.dataclass
class EvalOptions:
    """What to run besides the model: variants, JPEG qualities, LPIPS, anchors, warm-up."""

    variants: tuple[str, ...] = ("correct",)
    jpeg_qualities: tuple[int, ...] = baselines.DEFAULT_QUALITIES
    lpips: bool = True
    jpeg_lpips: bool = True  # LPIPS of every JPEG point (the costliest part on a CPU)
    lpips_zero_one: bool = True  # also LPIPS fed [0, 1] images, as the authors' code calls it
    ablation_images: int | None = None  # variants other than "correct" on the first K only
    warmup: bool = True  # code each new image shape once untimed (excludes JIT compile)
    save_recon: bool = True
    anchors: list[plots.Curve] | None = None  # None: the shipped ones for this data set
    progress: bool = True
    max_pixels: int | None = None


def _safe_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label) or "model"


def _captions_for(variant: str, items, index: int, mode: str) -> tuple[list[str], str]:
    """(candidate captions, note) for one image under one variant."""
    item = items[index]
    if variant == "correct":
        if not item.captions:
            return [""], item.caption_note
        if mode == "best_lpips" and len(item.captions) > 1:
            return list(item.captions), f"best of {len(item.captions)} by LPIPS (oracle)"
        return [item.captions[0]], item.caption_note
    if variant == "empty":
        return [""], "ablation: empty caption"
    if variant == "mismatched":
        other = items[(index + 1) % len(items)]
        return [other.caption], f"ablation: caption of {other.name}"
    raise ValueError(f"unknown caption variant {variant!r}: expected one of {VARIANTS}")


# ----------------------------------------------------------------------------- driver
class _Run:
    """State of one evaluation: output paths, rows, failures; one method per step."""

    def __init__(self, codecs, eval_set, out_dir, options, lpips_fn):
        self.codecs = list(codecs)
        self.set = eval_set
        self.out = Path(out_dir)
        self.opt = options
        self.lpips_fn = lpips_fn
        self.rows: list[dict] = []
        self.jpeg_rows: list[dict] = []
        self.failures: list[dict] = []
        self.warnings: list[str] = list(eval_set.problems)
        self.seen_shapes: set[tuple] = set()
        self.labels = self._unique_labels()
        for err in eval_set.errors:
            self.fail("(captions)", "captions", err)

    def _unique_labels(self) -> list[str]:
        labels, seen = [], {}
        for c in self.codecs:
            base = _safe_label(c.label)
            seen[base] = seen.get(base, 0) + 1
            labels.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
        return labels

    def fail(self, image: str, stage: str, err: BaseException | str, ckpt="", variant=""):
        msg = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
        self.failures.append(
            {"image": image, "checkpoint": ckpt, "variant": variant, "stage": stage, "error": msg}
        )

    def lpips_pair(self, x: np.ndarray, x_hat: np.ndarray) -> tuple[float, float]:
        if self.lpips_fn is None:
            return float("nan"), float("nan")
        zero_one = float("nan")
        if self.opt.lpips_zero_one:
            zero_one = self.lpips_fn(x, x_hat, "zero_one")
        return self.lpips_fn(x, x_hat, "minus_one_one"), zero_one

    def code_once(self, codec, label, variant, item, x, caption) -> dict:
        """Encode to a file, decode from it, measure; returns the row."""
        h, w = x.shape[:2]
        stem = Path(item.name).stem
        if self.opt.warmup and (label, x.shape) not in self.seen_shapes:
            codec.decode(codec.encode(x, caption))  # untimed: compiles for this shape
            self.seen_shapes.add((label, x.shape))
        text_ms = float("nan")
        if hasattr(codec, "prepare_text"):  # the caption's token states, timed on their own
            start = time.perf_counter()
            codec.prepare_text(caption)
            text_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        data = codec.encode(x, caption)
        encode_ms = (time.perf_counter() - start) * 1e3
        stream = self.out / "bitstreams" / label / variant / f"{stem}.tgic"
        stream.parent.mkdir(parents=True, exist_ok=True)
        stream.write_bytes(data)
        num_bytes = stream.stat().st_size  # the rate is what is on disk
        start = time.perf_counter()
        x_hat = codec.decode(stream.read_bytes())
        decode_ms = (time.perf_counter() - start) * 1e3
        if x_hat.shape != x.shape:
            raise ValueError(f"decoded shape {x_hat.shape} != input shape {x.shape}")
        x_hat8 = metrics.quantize_8bit(x_hat)
        est = codec.estimate(x, caption)
        ms = metrics.ms_ssim(x, x_hat8)
        lp, lp01 = self.lpips_pair(x, x_hat8)
        recon = ""
        if self.opt.save_recon:
            recon_path = self.out / "recon" / label / variant / f"{stem}.png"
            recon_path.parent.mkdir(parents=True, exist_ok=True)
            image_io.save_png(recon_path, x_hat8)
            recon = str(recon_path.relative_to(self.out))
        return {
            "checkpoint": label,
            "variant": variant,
            "image": item.name,
            "height": h,
            "width": w,
            "caption": caption,
            "bytes": num_bytes,
            "bpp": 8.0 * num_bytes / (h * w),
            "bpp_estimated": float(est["bpp_estimated"]),
            "psnr": metrics.psnr(x, x_hat8),
            "psnr_float": metrics.psnr(x, est["x_hat_float"]),
            "ms_ssim": ms,
            "ms_ssim_db": metrics.ms_ssim_db(ms),
            "lpips": lp,
            "lpips_zero_one": lp01,
            "encode_ms": encode_ms,
            "decode_ms": decode_ms,
            "text_ms": text_ms,
            "bitstream": str(stream.relative_to(self.out)),
            "recon": recon,
        }

    def code_image(self, index: int, progress) -> None:
        item = self.set.items[index]
        try:
            x, notes = load_item_image(item, self.opt.max_pixels)
        except (ValueError, OSError) as err:  # image_io.ImageError is a ValueError
            self.fail(item.name, "load", err)
            return
        self.warnings += [f"{item.name}: {note}" for note in notes]
        if not item.captions and item.caption_note == sets.NOTE_MISSING:
            self.fail(
                item.name,
                "caption",
                "no caption for this image in the captions JSON; coded with the empty caption",
            )
        elif not item.captions:
            self.warnings.append(f"{item.name}: no caption ({item.caption_note})")
        for codec, label in zip(self.codecs, self.labels, strict=True):
            for variant in self.opt.variants:
                limit = self.opt.ablation_images
                if variant != "correct" and limit is not None and index >= limit:
                    continue
                candidates, note = _captions_for(
                    variant, self.set.items, index, self.set.caption_mode
                )
                best = None
                for caption in candidates:
                    progress.set_postfix_str(f"{label}/{variant}")
                    try:
                        row = self.code_once(codec, label, variant, item, x, caption)
                    except Exception as err:  # noqa: BLE001 - record, go on with the others
                        self.fail(item.name, "codec", err, label, variant)
                        continue
                    if best is None or row["lpips"] < best["lpips"]:
                        best = row
                if best is not None:
                    best["caption_note"] = note
                    self.rows.append(best)
        if self.opt.jpeg_qualities:
            lp = None
            if self.lpips_fn is not None and self.opt.jpeg_lpips:
                lp = lambda a, b: self.lpips_fn(a, b, "minus_one_one")
            try:
                self.jpeg_rows += baselines.jpeg_rows(
                    item.name, x, self.opt.jpeg_qualities, self.out / "jpeg", lp
                )
            except Exception as err:  # noqa: BLE001 - recorded as a failure, the run goes on
                self.fail(item.name, "jpeg", err)


# Every entry `evaluate` writes into its output folder: by name, and the RD plots by pattern.
# `tgic evaluate` and eval.py refuse an output holding any of them unless --force, and then
# remove them all first, so an evaluation's files never mix with an earlier one's.
OUTPUT_ENTRIES = (
    "summary.md",
    "summary.json",
    "per_image.csv",
    "per_image.json",
    "jpeg.csv",
    "bitstreams",
    "recon",
    "jpeg",
)
OUTPUT_PATTERNS = ("rd_*.png", "rd_*.svg")


def existing_outputs(out_dir: str | os.PathLike) -> list[Path]:
    """The entries of out_dir that an evaluation writes (`OUTPUT_ENTRIES`), sorted."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = {out / name for name in OUTPUT_ENTRIES if (out / name).exists()}
    found.update(p for pattern in OUTPUT_PATTERNS for p in out.glob(pattern))
    return sorted(found)


def clear_outputs(out_dir: str | os.PathLike) -> None:
    """Removes an earlier evaluation's entries (`existing_outputs`) from out_dir, only those."""
    import shutil

    for path in existing_outputs(out_dir):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _write_csv(path: Path, rows: Sequence[dict], fields: Sequence[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def evaluate(
    codecs: Sequence[EvaluatedCodec],
    eval_set: sets.EvalSet,
    out_dir: str | os.PathLike,
    options: EvalOptions | None = None,
    lpips_fn: LpipsFn | None = None,
) -> dict:
    """Runs every codec on every image and writes all outputs; returns the summary dict."""
    from tqdm import tqdm

    options = options or EvalOptions()
    for v in options.variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown caption variant {v!r}: expected one of {VARIANTS}")
    if options.lpips and lpips_fn is None:
        lpips_fn = make_lpips_fn()
    if not options.lpips:
        lpips_fn = None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clear_outputs(out)  # never a mix with an earlier evaluation's files
    run = _Run(codecs, eval_set, out, options, lpips_fn)
    with tqdm(
        total=len(eval_set),
        desc=f"evaluate {eval_set.name}",
        unit="img",
        disable=not options.progress,
    ) as progress:
        for i in range(len(eval_set)):
            run.code_image(i, progress)
            progress.update(1)
    summary = summarize(
        eval_set,
        run.rows,
        run.jpeg_rows,
        run.labels,
        options.variants,
        options.anchors,
        run.failures,
        run.warnings,
    )
    curves = summary.pop("_curves")
    summary["plots"] = [
        str(p.relative_to(out)) for p in plots.plot_all(curves, out, title=eval_set.name)
    ]
    _write_csv(out / "per_image.csv", run.rows, ROW_FIELDS)
    (out / "per_image.json").write_text(
        json.dumps(jsonable({"rows": run.rows, "failures": run.failures}), indent=1)
    )
    if run.jpeg_rows:
        _write_csv(out / "jpeg.csv", run.jpeg_rows, list(run.jpeg_rows[0]))
    write_summary(summary, out)
    return summary


def evaluate_checkpoints(
    checkpoints: Sequence[str | os.PathLike],
    eval_set: sets.EvalSet,
    out_dir: str | os.PathLike,
    options: EvalOptions | None = None,
    codec_loader: Callable[[str], EvaluatedCodec] = load_codec,
    lpips_fn: LpipsFn | None = None,
) -> dict:
    """Evaluates inference checkpoints (one per rate point) on `eval_set` into out_dir.

    The entry point of eval.py and `tgic evaluate`. A checkpoint that cannot be loaded is
    reported on stderr and listed first in the summary's failures; the others run.
    Raises ValueError when the set has no image or no checkpoint loads.
    """
    if not len(eval_set):
        raise ValueError(f"no images in {eval_set.name}")
    codecs, load_failures = [], []
    for ckpt in checkpoints:
        try:
            codecs.append(codec_loader(str(ckpt)))
        except Exception as err:  # noqa: BLE001 - report and evaluate the others
            load_failures.append(
                {
                    "image": "",
                    "checkpoint": str(ckpt),
                    "variant": "",
                    "stage": "load checkpoint",
                    "error": f"{type(err).__name__}: {err}",
                }
            )
            print(f"error: cannot load checkpoint {ckpt}: {err}", file=sys.stderr)
    if not codecs:
        raise ValueError(f"none of the checkpoints could be loaded: {list(map(str, checkpoints))}")
    summary = evaluate(codecs, eval_set, out_dir, options, lpips_fn)
    if load_failures:
        summary["failures"] = load_failures + summary["failures"]
        write_summary(summary, out_dir)
    return summary


def evaluate_means(
    codec: EvaluatedCodec,
    eval_set: sets.EvalSet,
    lpips_fn: LpipsFn | None = None,
    keep_images: int = 0,
) -> dict[str, Any]:
    """Mean real and estimated bpp, PSNR, MS-SSIM, LPIPS of one codec, in memory (no files).

    The training loop's evaluation: each image is coded with its first caption; bpp_real
    counts the bitstream's bytes, psnr is on the float x_hat of the forward pass (as the
    authors' test_epoch), psnr_real / ms_ssim / lpips on the decoded image. `lpips` is
    LPIPS-Alex on [-1, 1] inputs, `lpips_zero_one` the authors' variant fed [0, 1]. Any
    failure raises (a mean over the images that happened to work would mislead). With
    keep_images > 0 the result also holds "images": the first originals beside their
    decoded images (uint8 [H, 2W, 3]), for TensorBoard.
    """
    if not len(eval_set):
        raise ValueError(f"no images in {eval_set.name}")
    if eval_set.errors:  # an unreadable captions JSON or entry: not a mean to trust
        raise ValueError(eval_set.errors[0])
    uncaptioned = [item.name for item in eval_set if not item.captions]
    if uncaptioned:  # coded with "" as `evaluate` codes them (its failures list them)
        logging.warning(
            "%s: %d images without a caption coded with the empty caption: %s",
            eval_set.name,
            len(uncaptioned),
            ", ".join(uncaptioned[:5]),
        )
    rows, images = [], []
    for item in eval_set:
        x, _ = load_item_image(item)
        h, w = x.shape[:2]
        est = codec.estimate(x, item.caption)
        data = codec.encode(x, item.caption)
        x_hat = codec.decode(data)
        row = {
            "bpp_estimate": float(est["bpp_estimated"]),
            "psnr": metrics.psnr(x, est["x_hat_float"]),
            "bpp_real": 8.0 * len(data) / (h * w),
            "psnr_real": metrics.psnr(x, x_hat),
            "ms_ssim": metrics.ms_ssim(x, x_hat),
        }
        if lpips_fn is not None:
            row["lpips"] = lpips_fn(x, x_hat, "minus_one_one")
            row["lpips_zero_one"] = lpips_fn(x, x_hat, "zero_one")
        if len(images) < keep_images:
            images.append(np.concatenate([image_io.to_uint8(x), image_io.to_uint8(x_hat)], 1))
        rows.append(row)
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in sorted(rows[0])}
    if keep_images:
        out["images"] = images
    return out
