"""Image quality metrics on [0, 1] float images: PSNR, MS-SSIM (and in dB), 8-bit rounding.

Host-side numpy (float64) on purpose: metrics are computed once per decoded image, outside
jit, and float64 keeps them independent of the accelerator's matmul precision.

MS-SSIM follows Wang, Simoncelli & Bovik (2003) as MATLAB, tf.image.ssim_multiscale and
pytorch_msssim compute it: 5 scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
an 11x11 Gaussian window (sigma 1.5, 'valid' filtering), K1 = 0.01, K2 = 0.03, 2x2 average
pooling between scales, contrast-structure terms of the first 4 scales times the SSIM of
the last, per channel, then averaged over channels. An odd size is padded by repeating
its last row/column before pooling (TF's choice; pytorch_msssim zero-pads instead; the two
agree exactly whenever every scale has even sides, e.g. on Kodak's 768x512).

Small images: 5 scales need the smallest scale to be at least 11 px, i.e. a short side
>= 176 px (TF and pytorch_msssim refuse anything <= 160). Here the number of scales is
reduced to what fits and the remaining weights are renormalized to sum to 1; below 11 px
the window shrinks to the largest odd size that fits. `ms_ssim_scales` says what was used.
"""

from __future__ import annotations

import numpy as np

from tgic_jax.image_io import to_uint8

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1, K2 = 0.01, 0.03


def _as_float(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def psnr(a, b, data_range: float = 1.0) -> float:
    """PSNR in dB between two images (any matching shape); inf when they are identical."""
    a, b = _as_float(a), _as_float(b)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def ms_ssim_db(value):
    """MS-SSIM in dB, -10 log10(1 - MS-SSIM), as rate-distortion plots show it (inf at 1).

    A float for a float, an array for an array (the plots transform whole curves).
    """
    v = _as_float(value)
    with np.errstate(divide="ignore"):
        db = -10.0 * np.log10(np.maximum(1.0 - v, 0.0))
    return float(db) if db.ndim == 0 else db


def quantize_8bit(image) -> np.ndarray:
    """The float32 [0, 1] image a user gets back from the 8-bit file of `image`."""
    return to_uint8(image).astype(np.float32) / 255.0


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(coords**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of [..., H, W, C] with the 1-D kernel g along H and W."""
    n = g.shape[0]
    h, w = x.shape[-3], x.shape[-2]
    rows = sum(g[i] * x[..., i : h - n + 1 + i, :, :] for i in range(n))
    return sum(g[i] * rows[..., :, i : w - n + 1 + i, :] for i in range(n))


def _ssim_terms(a: np.ndarray, b: np.ndarray, g: np.ndarray, data_range: float):
    """Per-channel mean SSIM and mean contrast-structure term, each [..., C]."""
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    luminance = (2.0 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
    cs = (2.0 * cov + c2) / (var_a + var_b + c2)
    axes = (-3, -2)
    return np.mean(luminance * cs, axis=axes), np.mean(cs, axis=axes)


def _downsample(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling; odd sides are first padded by repeating the last row/column."""
    h, w = x.shape[-3], x.shape[-2]
    pad = [(0, 0)] * (x.ndim - 3) + [(0, h % 2), (0, w % 2), (0, 0)]
    if h % 2 or w % 2:
        x = np.pad(x, pad, mode="symmetric")
    h, w = x.shape[-3], x.shape[-2]
    x = x.reshape(*x.shape[:-3], h // 2, 2, w // 2, 2, x.shape[-1])
    return x.mean(axis=(-4, -2))


def ms_ssim_scales(height: int, width: int) -> tuple[int, int]:
    """(number of scales, window size) that `ms_ssim` uses for an image of this size."""
    side = min(height, width)
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side // 2**scales >= WINDOW_SIZE:
        scales += 1
    window = WINDOW_SIZE if side >= WINDOW_SIZE else max(1, side - (1 - side % 2))
    return scales, window


def ms_ssim(a, b, data_range: float = 1.0) -> float | np.ndarray:
    """MS-SSIM of [H, W, C] images (a float) or [B, H, W, C] batches (an array [B]).

    Accepts numpy or jax arrays. Images too small for 5 scales use fewer scales with
    renormalized weights (see the module docstring).
    """
    a, b = _as_float(a), _as_float(b)
    if a.shape != b.shape:
        raise ValueError(f"ms_ssim: shapes differ {a.shape} vs {b.shape}")
    if a.ndim not in (3, 4):
        raise ValueError(f"ms_ssim expects [H, W, C] or [B, H, W, C], got {a.shape}")
    scales, window = ms_ssim_scales(a.shape[-3], a.shape[-2])
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales], np.float64)
    weights = weights / weights.sum()
    g = _gaussian_1d(window, WINDOW_SIGMA)
    factors = []
    for k in range(scales):
        if k:
            a, b = _downsample(a), _downsample(b)
        ssim_k, cs_k = _ssim_terms(a, b, g, data_range)
        # relu as the reference implementations do: negative terms have no geometric mean.
        factors.append(np.maximum(cs_k if k < scales - 1 else ssim_k, 0.0))
    stacked = np.stack(factors, axis=-1)  # [..., C, scales]
    per_channel = np.prod(stacked**weights, axis=-1)
    out = per_channel.mean(axis=-1)
    return float(out) if out.ndim == 0 else out
