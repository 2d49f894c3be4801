"""RD plots: PNG and SVG files with every curve, the shipped ELIC anchor."""

import json

import numpy as np
import pytest

from tgic_jax.evaluation import plots

ELIC_PUBLISHED = [  # bpp, PSNR as listed in the issue (rounded from the ELIC results CSV)
    (0.0468, 26.27),
    (0.0767, 27.68),
    (0.1236, 29.13),
    (0.1964, 30.70),
    (0.3334, 32.80),
    (0.4909, 34.59),
    (0.7041, 36.49),
    (0.8573, 37.62),
    (1.1065, 39.18),
    (1.4898, 41.07),
]


def test_shipped_elic_anchor_has_the_published_kodak_points_and_its_source():
    (elic,) = plots.default_anchors("kodak")
    bpp, psnr = elic.values("psnr")
    np.testing.assert_allclose(bpp, [p[0] for p in ELIC_PUBLISHED], atol=5e-5)
    np.testing.assert_allclose(psnr, [p[1] for p in ELIC_PUBLISHED], atol=5e-3)
    assert "JiangWeibeta/ELIC" in elic.source and elic.kind == "anchor"
    assert plots.default_anchors("clic") == []


def test_plot_rd_writes_png_and_svg_with_all_curves(tmp_path):
    model = plots.Curve(
        "ours",
        [
            {"bpp": 0.2, "psnr": 30.0, "ms_ssim": 0.95, "lpips": 0.2},
            {"bpp": 0.5, "psnr": 33.0, "ms_ssim": 0.97, "lpips": 0.1},
        ],
    )
    jpeg = plots.Curve(
        "JPEG",
        [
            {"bpp": 0.3, "psnr": 27.0, "ms_ssim": 0.9, "lpips": 0.4},
            {"bpp": 0.9, "psnr": 32.0, "ms_ssim": 0.96, "lpips": 0.2},
        ],
        kind="baseline",
    )
    curves = [model, jpeg, *plots.default_anchors("kodak")]
    paths = plots.plot_all(curves, tmp_path, title="kodak")
    assert sorted(p.name for p in paths) == sorted(
        f"rd_{m}.{e}" for m in ("psnr", "ms_ssim", "lpips") for e in ("png", "svg")
    )
    assert all(p.stat().st_size > 2000 for p in paths)
    assert (tmp_path / "rd_psnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "rd_psnr.svg").read_text()
    for label in ("ours", "JPEG", "ELIC"):
        assert label in svg
    assert "JiangWeibeta/ELIC" in svg  # the source of published points is on the figure
    # The ELIC anchor has no LPIPS: that plot still has ours and JPEG, no crash.
    lpips_svg = (tmp_path / "rd_lpips.svg").read_text()
    assert "ours" in lpips_svg and "ELIC" not in lpips_svg


def test_curve_values_skip_missing_metrics_and_sort_by_rate():
    c = plots.Curve(
        "x",
        [
            {"bpp": 0.5, "psnr": 31.0},
            {"bpp": 0.1, "psnr": 25.0},
            {"bpp": 0.3, "psnr": float("nan")},
        ],
    )
    bpp, psnr = c.values("psnr")
    assert bpp.tolist() == [0.1, 0.5] and psnr.tolist() == [25.0, 31.0]


def test_load_anchor_rejects_a_file_without_source(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"name": "x", "points": []}))
    with pytest.raises(ValueError, match="source"):
        plots.load_anchor(path)
