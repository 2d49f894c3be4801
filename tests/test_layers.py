"""Layers reproduce PyTorch's convolution arithmetic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from tgic_jax.model.layers import Conv, ConvTranspose


def _torch_style_transposed_conv(x, kernel, stride, padding, output_padding):
    """Reference: input-dilated convolution with the flipped kernel (PyTorch's definition)."""
    k = kernel.shape[0]
    flipped = kernel[::-1, ::-1]
    lo, hi = k - 1 - padding, k - 1 - padding + output_padding
    return lax.conv_general_dilated(
        x,
        flipped,
        (1, 1),
        ((lo, hi), (lo, hi)),
        lhs_dilation=(stride, stride),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )


@pytest.mark.parametrize("h,w", [(4, 6), (5, 3), (1, 1)])
def test_transposed_conv_doubles_height_and_width(h, w):
    x = jnp.ones((2, h, w, 3))
    layer = ConvTranspose(5, 5, 2)
    v = layer.init(jax.random.PRNGKey(0), x)
    assert layer.apply(v, x).shape == (2, 2 * h, 2 * w, 5)


@pytest.mark.parametrize("k,s", [(5, 2), (3, 1), (3, 2)])
def test_transposed_conv_equals_pytorch_definition(k, s):
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 7, 4))
    layer = ConvTranspose(6, k, s)
    v = layer.init(jax.random.PRNGKey(2), x)
    v = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.PRNGKey(3), a.shape), v)
    got = layer.apply(v, x)
    ref = _torch_style_transposed_conv(x, v["params"]["kernel"], s, k // 2, s - 1)
    ref = ref + v["params"]["bias"]
    assert got.shape == ref.shape == (2, 5 * s, 7 * s, 6)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("h", [64, 65, 97, 1])
def test_strided_conv_output_size_matches_pytorch(h):
    x = jnp.ones((1, h, h + 3, 3))
    layer = Conv(4, 5, 2)
    v = layer.init(jax.random.PRNGKey(0), x)
    expected = lambda n: (n + 2 * 2 - 5) // 2 + 1  # torch: floor((n + 2p - k) / s) + 1
    assert layer.apply(v, x).shape == (1, expected(h), expected(h + 3), 4)
