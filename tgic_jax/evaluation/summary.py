"""The summary of an evaluation: mean tables, BD-rates, the caption ablation, markdown.

`driver.evaluate` codes the images and produces per-image rows; this
module turns them into summary.json / summary.md: means over images per checkpoint and
caption variant (CompressAI's convention), BD-rates against the JPEG baseline and the
published anchor curves (a single rate point gets the rate saving at equal quality
instead), and the change of each ablation variant against the correct caption.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tgic_jax.evaluation import baselines, bdrate, plots, sets

MEAN_KEYS = (
    "bpp",
    "bpp_estimated",
    "psnr",
    "psnr_float",
    "ms_ssim",
    "ms_ssim_db",
    "lpips",
    "lpips_zero_one",
    "encode_ms",
    "decode_ms",
    "text_ms",
)


def _mean_rows(rows: Sequence[dict]) -> dict:
    """Means over the images whose value is finite; `n_by_metric` counts them where fewer
    (so no mean is shown beside an `n` it was not taken over)."""
    out = {"n": len(rows), "n_by_metric": {}}
    for k in MEAN_KEYS:
        vals = [r[k] for r in rows if r.get(k) is not None and math.isfinite(r[k])]
        out[k] = float(np.mean(vals)) if vals else float("nan")
        if 0 < len(vals) < len(rows):  # none at all: not computed (an option), shown as n/a
            out["n_by_metric"][k] = len(vals)
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
        res = bdrate.bd_metrics(
            [p["bpp"] for p in a], [p[key] for p in a], [p["bpp"] for p in t], [p[key] for p in t]
        )
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


def summarize(
    eval_set: sets.EvalSet,
    rows: Sequence[dict],
    jpeg_rows: Sequence[dict],
    labels: Sequence[str],
    variants: Sequence[str],
    anchors: list[plots.Curve] | None = None,
    failures: Sequence[dict] = (),
    warnings: Sequence[str] = (),
) -> dict:
    """Tables, curves, BD-rates, ablation deltas, failures: the content of summary.json.

    `rows` are the driver's per-image rows of the checkpoints `labels` under `variants`;
    `anchors` None: the shipped published curves of the data set.
    """
    table = []
    for label in labels:
        for variant in variants:
            mine = [r for r in rows if r["checkpoint"] == label and r["variant"] == variant]
            if mine:
                table.append({"checkpoint": label, "variant": variant, **_mean_rows(mine)})
    jpeg = baselines.mean_curve(jpeg_rows) if jpeg_rows else []
    if anchors is None:
        anchors = plots.default_anchors(eval_set.name)
    curves, bd = [], {}
    for variant in variants:
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
    if "correct" in variants:
        for t in table:
            if t["variant"] == "correct":
                continue
            # Against the correct caption on the same images (a variant may have run on
            # fewer: EvalOptions.ablation_images, or a failure).
            mine = (t["checkpoint"], t["variant"])
            images = {r["image"] for r in rows if (r["checkpoint"], r["variant"]) == mine}
            same = [
                r
                for r in rows
                if r["checkpoint"] == t["checkpoint"]
                and r["variant"] == "correct"
                and r["image"] in images
            ]
            if same:
                ref = _mean_rows(same)
                ablation.append(
                    {
                        "checkpoint": t["checkpoint"],
                        "variant": t["variant"],
                        "n": t["n"],
                        "bpp_change_percent": (t["bpp"] / ref["bpp"] - 1.0) * 100.0,
                        "psnr_change_db": t["psnr"] - ref["psnr"],
                        "lpips_change": t["lpips"] - ref["lpips"],
                    }
                )
    return {
        "dataset": eval_set.name,
        "images": len(eval_set),
        "caption_mode": eval_set.caption_mode,
        "caption_source": eval_set.caption_source,
        "table": table,
        "jpeg": jpeg,
        "bd": bd,
        "ablation": ablation,
        "anchors": [{"label": a.label, "source": a.source} for a in anchors],
        "failures": list(failures),
        "warnings": list(warnings),
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
    partial = []
    for t in summary["table"]:
        counts = t.get("n_by_metric", {})

        def cell(key, digits, t=t, counts=counts):  # the value, and its n when it is fewer
            return _fmt(t[key], digits) + (f" (n={counts[key]})" if key in counts else "")

        lines.append(
            f"| {t['checkpoint']} | {t['variant']} | {t['n']} | {cell('bpp', 4)} | "
            f"{cell('bpp_estimated', 4)} | {cell('psnr', 2)} | {cell('psnr_float', 2)} | "
            f"{cell('ms_ssim', 4)} | {cell('lpips', 4)} | {cell('lpips_zero_one', 4)} | "
            f"{cell('encode_ms', 0)} | {cell('decode_ms', 0)} | {t['n_empty_caption']} |"
        )
        partial += [
            f"{t['checkpoint']} ({t['variant']}): {k} over {c} of {t['n']} images"
            for k, c in counts.items()
        ]
    if partial:
        lines += ["", "Not finite for some images, so averaged over fewer: " + "; ".join(partial)]
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
            "## Caption ablation (change against the correct caption, on the same images)",
            "",
            "| checkpoint | caption | images | bpp change % | PSNR change dB | LPIPS change |",
            "|---|---|---|---|---|---|",
        ]
        for a in summary["ablation"]:
            lines.append(
                f"| {a['checkpoint']} | {a['variant']} | {a.get('n', '')} | "
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


def jsonable(obj):
    """`obj` with non-finite floats as None and numpy scalars as Python ones (for JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    return obj


def write_summary(summary: dict, out_dir: str | Path) -> None:
    """Writes summary.json and summary.md of `summary` into out_dir."""
    out = Path(out_dir)
    (out / "summary.json").write_text(json.dumps(jsonable(summary), indent=1))
    (out / "summary.md").write_text(summary_markdown(summary))
