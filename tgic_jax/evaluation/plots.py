"""Rate-distortion plots (matplotlib, Agg): bpp against PSNR, MS-SSIM and LPIPS, PNG + SVG.

A `Curve` is a labelled list of points {bpp, psnr, ms_ssim, lpips, ...}; its `kind`
picks the style: "model" (our checkpoints, solid with markers), "baseline" (JPEG, dashed)
or "anchor" (published points read from a JSON file with their source, dotted).
"""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np

from tgic_jax.evaluation import metrics

ANCHOR_DIR = Path(__file__).resolve().parents[1] / "assets" / "anchors"

# metric key -> (axis label, transform of the stored value)
METRICS = {
    "psnr": ("PSNR (dB)", lambda v: v),
    "psnr_float": ("PSNR of float x_hat (dB)", lambda v: v),
    "ms_ssim": ("MS-SSIM (dB), -10 log10(1 - MS-SSIM)", metrics.ms_ssim_db),
    "lpips": ("LPIPS-Alex (lower is better)", lambda v: v),
}
_STYLES = {
    "model": dict(linestyle="-", marker="o", markersize=5),
    "baseline": dict(linestyle="--", marker="s", markersize=4),
    "anchor": dict(linestyle=":", marker="^", markersize=4),
}


@dataclasses.dataclass
class Curve:
    """One labelled rate-distortion curve; points are dicts with 'bpp' and metric keys."""

    label: str
    points: list[dict]
    kind: str = "model"
    source: str = ""

    def values(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(bpp, metric) arrays of the points that have a finite value, sorted by bpp."""
        pts = [p for p in self.points if np.isfinite(p.get(metric, np.nan))]
        pts.sort(key=lambda p: p["bpp"])
        return (
            np.array([p["bpp"] for p in pts], np.float64),
            np.array([p[metric] for p in pts], np.float64),
        )


def load_anchor(path: str | os.PathLike) -> Curve:
    """A published curve from JSON {name, source, points: [{bpp, psnr, ...}]}."""
    data = json.loads(Path(path).read_text())
    for key in ("name", "source", "points"):
        if key not in data:
            raise ValueError(f"anchor file {path} lacks {key!r}")
    label = data["name"] + (f" [{data['dataset']}]" if data.get("dataset") else "")
    return Curve(label, list(data["points"]), kind="anchor", source=data["source"])


def default_anchors(dataset: str) -> list[Curve]:
    """The shipped anchor curves published for `dataset` (e.g. 'kodak')."""
    out = []
    for path in sorted(ANCHOR_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("dataset") == dataset:
            out.append(load_anchor(path))
    return out


def plot_rd(
    curves: Sequence[Curve], metric: str, out_stem: str | os.PathLike, title: str = ""
) -> list[Path]:
    """Draws bpp vs `metric` for every curve that has it; writes <out_stem>.png and .svg."""
    label, transform = METRICS[metric]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    drawn = []
    for curve in curves:
        bpp, vals = curve.values(metric)
        if bpp.size == 0:
            continue
        with np.errstate(divide="ignore"):
            ax.plot(bpp, transform(vals), label=curve.label, **_STYLES.get(curve.kind, {}))
        drawn.append(curve)
    ax.set_xlabel("bits per pixel (real file bytes)")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if drawn:
        ax.legend(fontsize=7)
    sources = [f"{c.label}: {c.source}" for c in drawn if c.kind == "anchor" and c.source]
    if sources:  # where published points come from, on the figure itself
        text = "\n".join(textwrap.fill(s, 190) for s in sources)
        fig.text(0.01, 0.005, text, fontsize=5, va="bottom")
        fig.subplots_adjust(bottom=0.12 + 0.015 * text.count("\n"))
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths


def plot_all(
    curves: Sequence[Curve],
    out_dir: str | os.PathLike,
    metrics: Sequence[str] = ("psnr", "ms_ssim", "lpips"),
    title: str = "",
) -> list[Path]:
    """rd_<metric>.png/.svg in out_dir for each metric."""
    paths = []
    for metric in metrics:
        paths += plot_rd(curves, metric, Path(out_dir) / f"rd_{metric}", title)
    return paths
