"""The JPEG baseline: rates from real file bytes, curves averaged over images."""

import numpy as np
import pytest

from tgic_jax.evaluation import baselines


def test_jpeg_baseline_rate_is_real_file_bytes_and_quality_increases_with_rate(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :64]
    img = np.clip(
        0.5
        + 0.4 * np.sin(xx / 5)[..., None] * np.ones(3)
        + 0.03 * rng.standard_normal((48, 64, 3)),
        0,
        1,
    )
    rows = baselines.jpeg_rows("a.png", img, (10, 50, 90), tmp_path)
    for r in rows:
        size = (tmp_path / f"q{r['quality']:02d}" / "a.jpg").stat().st_size
        assert r["bytes"] == size and r["bpp"] == pytest.approx(8 * size / (48 * 64))
    assert rows[0]["bpp"] < rows[1]["bpp"] < rows[2]["bpp"]
    assert rows[0]["psnr"] < rows[1]["psnr"] < rows[2]["psnr"]
    curve = baselines.mean_curve(rows + baselines.jpeg_rows("b.png", img[::-1], (10, 50, 90)))
    assert [p["n"] for p in curve] == [2, 2, 2]
