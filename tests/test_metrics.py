"""PSNR, 8-bit conversion and MS-SSIM, checked against exact values and TensorFlow."""

import numpy as np
import pytest

from tgic_jax import image_io
from tgic_jax.evaluation import metrics


def _smooth_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([np.sin(xx / 7.0), np.cos(yy / 9.0), np.sin((xx + yy) / 13.0)], -1)
    return np.clip(0.5 + 0.35 * img + 0.05 * rng.standard_normal(img.shape), 0, 1).astype(
        np.float32
    )


def test_psnr_of_a_known_mse():
    a = np.zeros((4, 4, 3))
    b = np.full((4, 4, 3), 0.1)  # MSE 0.01 -> 20 dB
    assert metrics.psnr(a, b) == pytest.approx(20.0, abs=1e-12)
    assert metrics.psnr(a * 255, b * 255, data_range=255.0) == pytest.approx(20.0, abs=1e-12)
    assert metrics.psnr(a, a) == float("inf")


def test_to_uint8_clamps_and_rounds():
    x = np.array([-0.2, 0.0, 0.5 / 255, 1.49 / 255, 0.5, 1.0, 1.3])
    assert image_io.to_uint8(x).tolist() == [0, 0, 0, 1, 128, 255, 255]
    assert image_io.to_uint8(x).dtype == np.uint8


def test_ms_ssim_of_identical_images_is_one():
    x = _smooth_image(192, 200)
    assert metrics.ms_ssim(x, x) == pytest.approx(1.0, abs=1e-12)


def test_ms_ssim_decreases_as_noise_grows():
    x = _smooth_image(180, 180)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(x.shape)
    values = [metrics.ms_ssim(x, np.clip(x + s * noise, 0, 1)) for s in (0.01, 0.05, 0.1, 0.3)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert 0.0 < values[-1] < values[0] < 1.0


@pytest.mark.parametrize("shape", [(256, 192), (177, 201)])
def test_ms_ssim_matches_tensorflow_ssim_multiscale(shape):
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    x = _smooth_image(*shape)
    y = np.clip(x + 0.08 * np.random.default_rng(2).standard_normal(x.shape), 0, 1).astype(
        np.float32
    )
    ours = metrics.ms_ssim(x, y, data_range=1.0)
    theirs = float(tf.image.ssim_multiscale(x, y, max_val=1.0))  # 5 scales, standard weights
    assert ours == pytest.approx(theirs, abs=5e-5)  # TF computes in float32


def test_small_images_use_fewer_scales_with_renormalized_weights():
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    assert metrics.ms_ssim_scales(768, 512) == (5, 11)
    assert metrics.ms_ssim_scales(176, 300) == (5, 11)
    assert metrics.ms_ssim_scales(160, 300) == (4, 11)
    assert metrics.ms_ssim_scales(64, 64) == (3, 11)
    assert metrics.ms_ssim_scales(8, 30) == (1, 7)
    x = _smooth_image(64, 72)
    y = np.clip(x + 0.05 * np.random.default_rng(3).standard_normal(x.shape), 0, 1)
    y = y.astype(np.float32)
    weights = np.array(metrics.MS_SSIM_WEIGHTS[:3])
    theirs = float(tf.image.ssim_multiscale(x, y, 1.0, power_factors=weights / weights.sum()))
    assert metrics.ms_ssim(x, y) == pytest.approx(theirs, abs=5e-5)
    tiny = _smooth_image(8, 9)
    assert metrics.ms_ssim(tiny, tiny) == pytest.approx(1.0)


def test_ms_ssim_accepts_batches_and_jax_arrays():
    import jax.numpy as jnp

    x = _smooth_image(64, 64)
    y = np.clip(x + 0.1, 0, 1)
    batch = metrics.ms_ssim(np.stack([x, x]), np.stack([x, y]))
    assert batch.shape == (2,)
    assert batch[0] == pytest.approx(1.0) and batch[1] == pytest.approx(metrics.ms_ssim(x, y))
    assert metrics.ms_ssim(jnp.asarray(x), jnp.asarray(y)) == pytest.approx(batch[1])
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.ms_ssim(x, y[:32])


def test_ms_ssim_db_is_minus_ten_log10_of_the_gap_to_one_for_floats_and_curves():
    assert metrics.ms_ssim_db(0.99) == pytest.approx(20.0, abs=1e-9)
    assert metrics.ms_ssim_db(1.0) == float("inf") and isinstance(metrics.ms_ssim_db(0.9), float)
    np.testing.assert_allclose(metrics.ms_ssim_db(np.array([0.9, 0.999, 1.0])), [10, 30, np.inf])
