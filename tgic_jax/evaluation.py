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

Outputs in --out: per_image.csv/.json, jpeg.csv, summary.json/.md, rd_{psnr,ms_ssim,lpips}
.png/.svg, recon/<checkpoint>/<variant>/<image>.png, bitstreams/... Failures (unreadable
images, codec errors) are recorded and the run goes on; the exit code is 1 if any.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from tgic_jax import baselines, bdrate, datasets, image_io, metrics, plots

VARIANTS = ("correct", "empty", "mismatched")
ROW_FIELDS = (
    "checkpoint", "variant", "image", "height", "width", "caption", "caption_note",
    "bytes", "bpp", "bpp_estimated", "psnr", "psnr_float", "ms_ssim", "ms_ssim_db",
    "lpips", "lpips_zero_one", "encode_ms", "decode_ms", "text_ms", "bitstream", "recon",
)  # fmt: skip
MEAN_KEYS = (
    "bpp", "bpp_estimated", "psnr", "psnr_float", "ms_ssim", "ms_ssim_db", "lpips",
    "lpips_zero_one", "encode_ms", "decode_ms", "text_ms",
)  # fmt: skip


# ----------------------------------------------------------------------------- codecs
class Codec(Protocol):
    """What the driver needs from a codec (TacoCodec, or a fake in tests)."""

    label: str

    def encode(self, image: np.ndarray, caption: str) -> bytes:
        """The file's bytes for `image` [H, W, 3] coded with `caption`."""

    def decode(self, data: bytes) -> np.ndarray:
        """The image float32 [H, W, 3] in [0, 1] that `data` decodes to."""

    def estimate(self, image: np.ndarray, caption: str) -> dict:
        """{'x_hat_float', 'bpp_estimated'} of `image` from the forward pass."""


class TacoCodec:
    """A TACO inference checkpoint + its text encoder, behind the `Codec` interface."""

    def __init__(self, checkpoint: str | os.PathLike, text_encoder=None, label: str = ""):
        from tgic_jax import checkpoint as ckpt_lib
        from tgic_jax import codec

        self._codec = codec
        self.model, self.variables, self.config = ckpt_lib.load_inference(checkpoint)
        if text_encoder is None:
            from tgic_jax.text_encoders import build_text_encoder

            text_encoder = build_text_encoder(self.config.text)
        self.text_encoder = text_encoder
        self.label = label or Path(checkpoint).name
        self._states: dict[str, np.ndarray] = {}

    def prepare_text(self, caption: str) -> None:
        """Runs the text encoder for `caption` (timed by the driver as text_ms)."""
        states, _ = self.text_encoder.encode([caption])
        self._states[caption] = np.asarray(states[0], np.float32)

    def text(self, caption: str) -> np.ndarray:
        """Token states [T, D] of one caption (cached: the ablation reuses captions)."""
        if caption not in self._states:
            self.prepare_text(caption)
        return self._states[caption]

    def encode(self, image: np.ndarray, caption: str) -> bytes:
        """Bitstream of `image` encoded with `caption` (tgic_jax.codec.compress)."""
        return self._codec.compress(self.model, self.variables, image, self.text(caption))

    def decode(self, data: bytes) -> np.ndarray:
        """Image float32 [H, W, 3] in [0, 1] from a bitstream (no caption needed)."""
        return np.asarray(self._codec.decompress(self.model, self.variables, data), np.float32)

    def estimate(self, image: np.ndarray, caption: str) -> dict:
        """{'x_hat_float': unclamped float output, 'bpp_estimated'} from the forward pass."""
        out = self._codec.reconstruct(self.model, self.variables, image, self.text(caption))
        return {
            "x_hat_float": np.asarray(out["x_hat_float"], np.float32),
            "bpp_estimated": float(out["bpp_estimated"]),
        }


def load_codec(checkpoint: str, label: str = "") -> TacoCodec:
    """The default codec loader: a TACO inference checkpoint directory."""
    return TacoCodec(checkpoint, label=label)


# ----------------------------------------------------------------------------- LPIPS
LpipsFn = Callable[[np.ndarray, np.ndarray, str], float]


def make_lpips_fn() -> LpipsFn:
    """LPIPS-Alex of two [H, W, 3] images in [0, 1]; input_range as losses.lpips_distance."""
    import jax

    from tgic_jax import losses

    params = losses.load_lpips_params()
    fn = jax.jit(losses.lpips_distance, static_argnames="input_range")

    def lpips(a: np.ndarray, b: np.ndarray, input_range: str = "minus_one_one") -> float:
        a = np.asarray(a, np.float32)[None]
        b = np.asarray(b, np.float32)[None]
        return float(np.asarray(fn(params, a, b, input_range=input_range))[0])

    return lpips


# ----------------------------------------------------------------------------- images
def load_item_image(
    item: datasets.EvalItem, max_pixels: int | None = None
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
    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    image, notes = image_io.load_image(item.path, **kwargs)
    return np.asarray(image, np.float32), list(notes)


# ----------------------------------------------------------------------------- options
@dataclasses.dataclass
class EvalOptions:
    """What to run besides the model: variants, JPEG qualities, LPIPS, anchors, warm-up."""

    variants: tuple[str, ...] = ("correct",)
    jpeg_qualities: tuple[int, ...] = baselines.DEFAULT_QUALITIES
    lpips: bool = True
    jpeg_lpips: bool = True  # LPIPS of every JPEG point (the costliest part on a CPU)
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
        return self.lpips_fn(x, x_hat, "minus_one_one"), self.lpips_fn(x, x_hat, "zero_one")

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
            "checkpoint": label, "variant": variant, "image": item.name,
            "height": h, "width": w, "caption": caption,
            "bytes": num_bytes, "bpp": 8.0 * num_bytes / (h * w),
            "bpp_estimated": float(est["bpp_estimated"]),
            "psnr": metrics.psnr(x, x_hat8),
            "psnr_float": metrics.psnr(x, est["x_hat_float"]),
            "ms_ssim": ms, "ms_ssim_db": baselines.ms_ssim_db(ms),
            "lpips": lp, "lpips_zero_one": lp01,
            "encode_ms": encode_ms, "decode_ms": decode_ms, "text_ms": text_ms,
            "bitstream": str(stream.relative_to(self.out)), "recon": recon,
        }  # fmt: skip

    def image(self, index: int, progress) -> None:
        item = self.set.items[index]
        try:
            x, notes = load_item_image(item, self.opt.max_pixels)
        except (ValueError, OSError) as err:  # image_io.ImageError is a ValueError
            self.fail(item.name, "load", err)
            return
        self.warnings += [f"{item.name}: {note}" for note in notes]
        if not item.captions and item.caption_note == datasets.NOTE_MISSING:
            self.fail(item.name, "caption", "no caption for this image in the captions JSON; "
                      "coded with the empty caption")  # fmt: skip
        elif not item.captions:
            self.warnings.append(f"{item.name}: no caption ({item.caption_note})")
        for codec, label in zip(self.codecs, self.labels, strict=True):
            for variant in self.opt.variants:
                candidates, note = _captions_for(variant, self.set.items, index,
                                                 self.set.caption_mode)  # fmt: skip
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
            except Exception as err:  # noqa: BLE001
                self.fail(item.name, "jpeg", err)


def _mean_rows(rows: Sequence[dict]) -> dict:
    out = {"n": len(rows)}
    for k in MEAN_KEYS:
        vals = [r[k] for r in rows if r.get(k) is not None and math.isfinite(r[k])]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    out["n_empty_caption"] = sum(1 for r in rows if r["caption"] == "")
    return out


def rate_saving_at_equal_quality(point: dict, curve: Sequence[dict], key: str) -> float | None:
    """% rate of `point` vs `curve` interpolated (log-rate, linear) at the same quality."""
    pts = sorted((p for p in curve if math.isfinite(p.get(key, math.nan))), key=lambda p: p[key])
    qs = [p[key] for p in pts]
    if len(pts) < 2 or not (qs[0] <= point[key] <= qs[-1]) or np.any(np.diff(qs) <= 0):
        return None
    log_rate = np.interp(point[key], qs, [math.log(p["bpp"]) for p in pts])
    return (point["bpp"] / math.exp(log_rate) - 1.0) * 100.0


def _bd_block(test: Sequence[dict], anchor: Sequence[dict], keys: Sequence[str]) -> dict:
    out = {}
    for key in keys:
        t = [p for p in test if math.isfinite(p.get(key, math.nan))]
        a = [p for p in anchor if math.isfinite(p.get(key, math.nan))]
        res = bdrate.bd_metrics([p["bpp"] for p in a], [p[key] for p in a],
                                [p["bpp"] for p in t], [p[key] for p in t])  # fmt: skip
        if len(t) == 1:  # one checkpoint: BD is undefined, give the single-point saving
            saving = rate_saving_at_equal_quality(t[0], a, key)
            res["single_point_rate_percent"] = saving
            res["note"] = "one rate point: BD-rate needs >= 2 checkpoints; " + (
                "single-point rate at equal quality (log-rate interpolation of the anchor)"
                if saving is not None
                else "its quality is outside the anchor's range"
            )
        out[key] = res
    return out


def summarize(run: _Run) -> dict:
    """Tables, curves, BD-rates, ablation deltas, failures: the content of summary.json."""
    table = []
    for label in run.labels:
        for variant in run.opt.variants:
            rows = [r for r in run.rows if r["checkpoint"] == label and r["variant"] == variant]
            if rows:
                table.append({"checkpoint": label, "variant": variant, **_mean_rows(rows)})
    jpeg = baselines.mean_curve(run.jpeg_rows) if run.jpeg_rows else []
    anchors = run.opt.anchors
    if anchors is None:
        anchors = plots.default_anchors(run.set.name)
    curves, bd = [], {}
    for variant in run.opt.variants:
        pts = sorted((t for t in table if t["variant"] == variant), key=lambda t: t["bpp"])
        if not pts:
            continue
        name = f"TACO-JAX ({variant} caption)"
        curves.append(plots.Curve(name, pts, kind="model"))
        if jpeg:
            bd[f"{name} vs JPEG"] = _bd_block(pts, jpeg, ("psnr", "ms_ssim_db", "lpips"))
        for anchor in anchors:
            bd[f"{name} vs {anchor.label}"] = _bd_block(pts, anchor.points, ("psnr",))
    if jpeg:
        curves.append(plots.Curve(f"JPEG ({baselines.JPEG_SETTINGS})", jpeg, kind="baseline"))
    curves += anchors
    ablation = []
    if "correct" in run.opt.variants:
        for t in table:
            if t["variant"] == "correct":
                continue
            ref = next((c for c in table if c["checkpoint"] == t["checkpoint"]
                        and c["variant"] == "correct"), None)  # fmt: skip
            if ref:
                ablation.append({
                    "checkpoint": t["checkpoint"], "variant": t["variant"],
                    "bpp_change_percent": (t["bpp"] / ref["bpp"] - 1.0) * 100.0,
                    "psnr_change_db": t["psnr"] - ref["psnr"],
                    "lpips_change": t["lpips"] - ref["lpips"],
                })  # fmt: skip
    return {
        "dataset": run.set.name,
        "images": len(run.set),
        "caption_mode": run.set.caption_mode,
        "caption_source": run.set.caption_source,
        "table": table,
        "jpeg": jpeg,
        "bd": bd,
        "ablation": ablation,
        "anchors": [{"label": a.label, "source": a.source} for a in anchors],
        "failures": run.failures,
        "warnings": run.warnings,
        "_curves": curves,
    }


def _fmt(v, digits=3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def summary_markdown(summary: dict) -> str:
    """The human-readable summary (summary.md)."""
    lines = [f"# Evaluation on {summary['dataset']} ({summary['images']} images)", ""]
    lines.append(
        f"Captions: {summary['caption_source'] or 'n/a'} (mode: {summary['caption_mode']}"
        + (", ORACLE" if summary["caption_mode"] == "best_lpips" else "")
        + ")"
    )
    lines += [
        "",
        "bpp = 8 x bytes of the written file / (H x W); PSNR / MS-SSIM / LPIPS on the "
        "8-bit reconstruction; PSNR float = unclamped float x_hat (the authors' number); "
        "LPIPS on [-1, 1], LPIPS01 = fed [0, 1] as the authors' code does.",
        "",
    ]
    head = (
        "| checkpoint | caption | n | bpp | bpp est. | PSNR | PSNR float | MS-SSIM | "
        "LPIPS | LPIPS01 | enc ms | dec ms | empty captions |"
    )
    lines += [head, "|" + "---|" * 13]
    for t in summary["table"]:
        lines.append(
            f"| {t['checkpoint']} | {t['variant']} | {t['n']} | {_fmt(t['bpp'], 4)} | "
            f"{_fmt(t['bpp_estimated'], 4)} | {_fmt(t['psnr'], 2)} | {_fmt(t['psnr_float'], 2)} | "
            f"{_fmt(t['ms_ssim'], 4)} | {_fmt(t['lpips'], 4)} | {_fmt(t['lpips_zero_one'], 4)} | "
            f"{_fmt(t['encode_ms'], 0)} | {_fmt(t['decode_ms'], 0)} | {t['n_empty_caption']} |"
        )
    if summary["jpeg"]:
        lines += [
            "",
            "## JPEG baseline (Pillow, same images, real file bytes)",
            "",
            "| quality | bpp | PSNR | MS-SSIM | LPIPS |",
            "|---|---|---|---|---|",
        ]
        for p in summary["jpeg"]:
            lines.append(
                f"| {p['quality']} | {_fmt(p['bpp'], 4)} | {_fmt(p['psnr'], 2)} | "
                f"{_fmt(p['ms_ssim'], 4)} | {_fmt(p['lpips'], 4)} |"
            )
    if summary["bd"]:
        lines += [
            "",
            "## BD-rate (negative: fewer bits than the anchor for the same quality)",
            "",
            "| comparison | metric | BD-rate % | BD-dist | single-point rate % | note |",
            "|---|---|---|---|---|---|",
        ]
        for name, block in summary["bd"].items():
            for metric, r in block.items():
                lines.append(
                    f"| {name} | {metric} | {_fmt(r['bd_rate_percent'], 2)} | "
                    f"{_fmt(r['bd_distortion'], 3)} | "
                    f"{_fmt(r.get('single_point_rate_percent'), 2)} | {r['note']} |"
                )
    if summary["ablation"]:
        lines += [
            "",
            "## Caption ablation (change against the correct caption)",
            "",
            "| checkpoint | caption | bpp change % | PSNR change dB | LPIPS change |",
            "|---|---|---|---|---|",
        ]
        for a in summary["ablation"]:
            lines.append(
                f"| {a['checkpoint']} | {a['variant']} | "
                f"{_fmt(a['bpp_change_percent'], 2)} | {_fmt(a['psnr_change_db'], 3)} | "
                f"{_fmt(a['lpips_change'], 4)} |"
            )
    if summary["anchors"]:
        lines += ["", "## Anchors", ""]
        lines += [f"- {a['label']}: {a['source']}" for a in summary["anchors"]]
    lines += ["", f"## Failures ({len(summary['failures'])})", ""]
    lines += [
        f"- {f['image']} [{f['stage']}{' ' + f['checkpoint'] if f['checkpoint'] else ''}"
        f"{'/' + f['variant'] if f['variant'] else ''}]: {f['error']}"
        for f in summary["failures"]
    ] or ["none"]
    if summary["warnings"]:
        lines += ["", f"## Warnings ({len(summary['warnings'])})", ""]
        lines += [f"- {w}" for w in summary["warnings"]]
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: Sequence[dict], fields: Sequence[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


def evaluate(
    codecs: Sequence[Codec],
    eval_set: datasets.EvalSet,
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
    run = _Run(codecs, eval_set, out, options, lpips_fn)
    with tqdm(total=len(eval_set), desc=f"evaluate {eval_set.name}", unit="img",
              disable=not options.progress) as progress:  # fmt: skip
        for i in range(len(eval_set)):
            run.image(i, progress)
            progress.update(1)
    summary = summarize(run)
    curves = summary.pop("_curves")
    summary["plots"] = [
        str(p.relative_to(out)) for p in plots.plot_all(curves, out, title=eval_set.name)
    ]
    _write_csv(out / "per_image.csv", run.rows, ROW_FIELDS)
    (out / "per_image.json").write_text(
        json.dumps(_jsonable({"rows": run.rows, "failures": run.failures}), indent=1)
    )
    if run.jpeg_rows:
        _write_csv(out / "jpeg.csv", run.jpeg_rows, list(run.jpeg_rows[0]))
    (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=1))
    (out / "summary.md").write_text(summary_markdown(summary))
    return summary


# ----------------------------------------------------------------------------- CLI
def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `tgic evaluate`."""
    p.add_argument(
        "--checkpoint",
        nargs="+",
        required=True,
        help="inference checkpoint directories (one per rate point)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--images", default="", help="folder of images (default: Kodak in data/)")
    p.add_argument(
        "--captions",
        default="",
        help="captions JSON {image name: caption or [captions]} (see tgic_jax/captions.py)",
    )
    p.add_argument(
        "--caption-index",
        type=int,
        default=0,
        help="which caption of a list to code (0-based; default 0, the first)",
    )
    p.add_argument(
        "--dataset",
        choices=("folder", "kodak", "clic", "coco"),
        default=None,
        help="folder (with --images), kodak (data/kodak), clic or coco (TFDS)",
    )
    p.add_argument("--split", default=None, help="TFDS split (clic: validation, coco: val)")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir")
    p.add_argument("--max-images", type=int, default=0, help="0: all")
    p.add_argument(
        "--caption-mode",
        choices=datasets.CAPTION_MODES,
        default="first",
        help="first caption (default) or best_lpips (oracle, labelled)",
    )
    p.add_argument(
        "--ablation",
        action="store_true",
        help="also code with the empty and the mismatched (shifted) caption",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=None,
        help="caption variants to run (default: correct; --ablation: all)",
    )
    p.add_argument(
        "--jpeg-qualities",
        type=int,
        nargs="*",
        default=list(baselines.DEFAULT_QUALITIES),
        help="empty: no JPEG baseline",
    )
    p.add_argument(
        "--anchors",
        nargs="*",
        default=None,
        help="anchor JSON files (default: the shipped ones for the data set)",
    )
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--no-jpeg-lpips", action="store_true", help="skip LPIPS of the JPEG points")
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="time the first coding of each shape too (includes JIT compile)",
    )
    p.add_argument("--no-recon", action="store_true", help="do not write reconstructions")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse larger images")
    p.add_argument("--no-progress", action="store_true")


def build_eval_set(args) -> datasets.EvalSet:
    """The EvalSet named by the CLI arguments."""
    dataset = args.dataset or ("folder" if args.images else "kodak")
    limit = args.max_images or None
    if dataset == "folder":
        if not args.images:
            raise ValueError("--dataset folder needs --images DIR")
        return datasets.folder_set(
            args.images,
            args.captions or None,
            limit,
            caption_index=getattr(args, "caption_index", 0),
        )
    if dataset == "kodak":
        return datasets.kodak_set(args.images or None, limit)
    return datasets.tfds_set(dataset, args.split, args.data_dir, limit, args.caption_mode)


def run_from_args(args, codec_loader: Callable[[str], Codec] = load_codec) -> int:
    """`tgic evaluate`: 0 when everything ran, 1 with failures listed, 2 if nothing could."""
    try:
        eval_set = build_eval_set(args)
        if args.caption_mode != eval_set.caption_mode:
            eval_set.caption_mode = args.caption_mode
    except (ValueError, OSError) as err:
        print(f"error: {err}")
        return 2
    if not len(eval_set):
        print(f"error: no images in {eval_set.name}")
        return 2
    codecs, load_failures = [], []
    for ckpt in args.checkpoint:
        try:
            codecs.append(codec_loader(ckpt))
        except Exception as err:  # noqa: BLE001 - report and evaluate the others
            load_failures.append({"image": "", "checkpoint": str(ckpt), "variant": "",
                                  "stage": "load checkpoint",
                                  "error": f"{type(err).__name__}: {err}"})  # fmt: skip
            print(f"error: cannot load checkpoint {ckpt}: {err}")
    if not codecs:
        return 2
    anchors = None
    if args.anchors is not None:
        anchors = [plots.load_anchor(a) for a in args.anchors]
    variants = tuple(args.variants or (VARIANTS if args.ablation else ("correct",)))
    options = EvalOptions(
        variants=variants,
        jpeg_qualities=tuple(args.jpeg_qualities or ()),
        lpips=not args.no_lpips,
        jpeg_lpips=not args.no_jpeg_lpips,
        warmup=not args.no_warmup,
        save_recon=not args.no_recon,
        anchors=anchors,
        progress=not args.no_progress,
        max_pixels=args.max_pixels,
    )
    summary = evaluate(codecs, eval_set, args.out, options)
    if load_failures:
        summary["failures"] = load_failures + summary["failures"]
        out = Path(args.out)
        (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=1))
        (out / "summary.md").write_text(summary_markdown(summary))
    print((Path(args.out) / "summary.md").read_text())
    return 1 if summary["failures"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    """python -m tgic_jax.evaluation ... (same as `tgic evaluate`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cli_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
