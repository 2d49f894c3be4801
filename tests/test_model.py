"""The TACO model: structure, text conditioning, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from tgic_jax.model.taco import TACO, ModelConfig, checkerboard_masks, init_variables

TINY = ModelConfig(N=16, M=24, slices=(2, 2, 4, 4, 12), text_dim=16, heads=8)


def _tiny(seed=0, gamma=None):
    model = TACO(TINY)
    v = init_variables(model, jax.random.PRNGKey(seed))
    if gamma is not None:  # give the text path weight, as a trained model has
        for name in ("analysis_transform_8", "analysis_transform_15"):
            g = v["params"]["g_a"][name]["gamma"]
            v["params"]["g_a"][name]["gamma"] = jnp.full_like(g, gamma)
    return model, v


def test_checkerboard_masks_partition_the_latent():
    for h, w in [(4, 6), (5, 3), (1, 1)]:
        anchor, non_anchor = checkerboard_masks(h, w)
        np.testing.assert_array_equal(anchor + non_anchor, np.ones((h, w, 1)))
        assert np.all(anchor * non_anchor == 0)
        for i in range(h):
            for j in range(w):  # anchors at (even, odd) and (odd, even)
                assert anchor[i, j, 0] == (i % 2 != j % 2)


def test_different_caption_changes_y_when_gamma_is_nonzero():
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 64, 64, 3))
    t1 = jax.random.normal(jax.random.PRNGKey(1), (1, 38, TINY.text_dim))
    t2 = jax.random.normal(jax.random.PRNGKey(2), (1, 38, TINY.text_dim))
    model, v = _tiny(gamma=0.5)
    analysis = jax.jit(lambda v, t: model.apply(v, x, t, method="analysis"))
    y1, _ = analysis(v, t1)
    y2, _ = analysis(v, t2)
    assert float(jnp.abs(y1 - y2).max()) > 1e-4
    _, v0 = _tiny(gamma=0.0)  # gamma = 0: the Extractor's output never reaches y
    y1, _ = analysis(v0, t1)
    y2, _ = analysis(v0, t2)
    np.testing.assert_array_equal(y1, y2)


def test_outputs_follow_the_contract_and_likelihoods_are_in_unit_interval():
    model, v = _tiny(gamma=0.3)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 128, 64, 3))
    text = jax.random.normal(jax.random.PRNGKey(1), (2, 38, TINY.text_dim))
    apply = jax.jit(model.apply, static_argnames="train")  # eager: thousands of tiny compiles
    for train in (False, True):
        out = apply(v, x, text, train=train, rngs={"noise": jax.random.PRNGKey(3)})
        assert out["x_hat"].shape == x.shape
        assert out["likelihoods"]["y"].shape == (2, 8, 4, TINY.M)
        assert out["likelihoods"]["z"].shape == (2, 2, 1, TINY.N)
        for lik in out["likelihoods"].values():
            assert float(lik.min()) > 0 and float(lik.max()) <= 1.0


def test_eval_mode_is_deterministic_and_training_mode_is_noisy():
    model, v = _tiny(gamma=0.3)
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 64, 64, 3))
    text = jax.random.normal(jax.random.PRNGKey(1), (1, 38, TINY.text_dim))
    apply = jax.jit(model.apply, static_argnames="train")
    a, b = apply(v, x, text), apply(v, x, text)
    np.testing.assert_array_equal(a["likelihoods"]["y"], b["likelihoods"]["y"])
    c = apply(v, x, text, train=True, rngs={"noise": jax.random.PRNGKey(0)})
    d = apply(v, x, text, train=True, rngs={"noise": jax.random.PRNGKey(1)})
    assert float(jnp.abs(c["likelihoods"]["y"] - d["likelihoods"]["y"]).max()) > 0
    np.testing.assert_array_equal(c["x_hat"], a["x_hat"])  # g_s sees rounded y_hat either way


def test_one_gradient_of_bpp_plus_mse_in_training_mode_is_finite_for_every_parameter():
    model, v = _tiny(gamma=0.3)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 64, 64, 3))
    text = jax.random.normal(jax.random.PRNGKey(1), (2, 38, TINY.text_dim))

    def loss(params):
        out = model.apply(
            {"params": params}, x, text, train=True, rngs={"noise": jax.random.PRNGKey(2)}
        )
        bits = sum(-jnp.log2(p).sum() for p in out["likelihoods"].values())
        return bits / (2 * 64 * 64) + 0.01 * 255**2 * jnp.mean((out["x_hat"] - x) ** 2)

    grads = flatten_dict(jax.jit(jax.grad(loss))(v["params"]))
    bad = ["/".join(k) for k, g in grads.items() if not bool(jnp.all(jnp.isfinite(g)))]
    assert not bad
    # the rate reaches the context model and the distortion reaches g_a
    assert float(jnp.abs(grads[("entropy_parameters_nonanchor_4", "fusion_4", "kernel")]).sum()) > 0
    assert float(jnp.abs(grads[("g_a", "analysis_transform_0", "kernel")]).sum()) > 0


def test_model_rejects_sizes_that_are_not_multiples_of_64_and_wrong_text_width():
    model, v = _tiny()
    with pytest.raises(ValueError, match="multiples of 64"):
        model.apply(v, jnp.zeros((1, 96, 64, 3)), jnp.zeros((1, 38, TINY.text_dim)))
    with pytest.raises(ValueError, match="text must be"):
        model.apply(v, jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 38, TINY.text_dim + 8)))


def test_bfloat16_transforms_compute_in_bfloat16_but_params_likelihoods_and_grads_stay_float32():
    import dataclasses

    model32, v = _tiny(gamma=0.5)
    model16 = TACO(dataclasses.replace(TINY, compute_dtype="bfloat16"))
    x = jax.random.uniform(jax.random.PRNGKey(3), (2, 64, 64, 3))
    text = jax.random.normal(jax.random.PRNGKey(4), (2, 5, 16))
    # The convolutions of the transforms run in bfloat16 (none does in float32 mode).
    jaxpr16 = str(jax.make_jaxpr(lambda v: model16.apply(v, x, text))(v))
    jaxpr32 = str(jax.make_jaxpr(lambda v: model32.apply(v, x, text))(v))
    assert "bf16[2,32,32,16]" in jaxpr16 and "bf16" not in jaxpr32
    # Jitted: eager, the model is thousands of one-op programs, each compiled on its own.
    out16, out32 = jax.jit(model16.apply)(v, x, text), jax.jit(model32.apply)(v, x, text)
    for key in ("x_hat", "y", "z"):
        assert out16[key].dtype == jnp.float32, key
    assert out16["likelihoods"]["y"].dtype == out16["likelihoods"]["z"].dtype == jnp.float32
    # Same parameters, bfloat16 arithmetic: close to float32, not equal to it.
    rel = float(jnp.linalg.norm(out16["y"] - out32["y"]) / jnp.linalg.norm(out32["y"]))
    assert 1e-4 < rel < 5e-2

    def loss(params):
        out = model16.apply(
            {"params": params}, x, text, train=True, rngs={"noise": jax.random.PRNGKey(5)}
        )
        return jnp.mean(jnp.square(out["x_hat"] - x)) - jnp.mean(jnp.log(out["likelihoods"]["y"]))

    grads = jax.jit(jax.grad(loss))(v["params"])
    leaves = jax.tree_util.tree_leaves(grads)
    assert {g.dtype for g in leaves} == {jnp.dtype(jnp.float32)}
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    g_a_norm = sum(float(jnp.sum(g**2)) for g in jax.tree_util.tree_leaves(grads["g_a"]))
    assert g_a_norm > 0


def test_unknown_compute_dtype_fails_clearly():
    import dataclasses

    with pytest.raises(ValueError, match="compute_dtype 'float16'"):
        dataclasses.replace(TINY, compute_dtype="float16")


def test_downsampling_factor_is_what_g_a_and_h_a_shrink_an_image_by():
    from tgic_jax.coding import codec
    from tgic_jax.model.taco import DOWNSAMPLING_FACTOR
    from tgic_jax.train import config_checks

    model, v = _tiny()
    assert model.downsampling_factor == TINY.downsampling_factor == DOWNSAMPLING_FACTOR == 64
    x = jnp.zeros((1, 2 * 64, 3 * 64, 3))
    text = jnp.zeros((1, 4, TINY.text_dim))
    y, z = jax.eval_shape(lambda v: model.apply(v, x, text, method="analysis"), v)
    assert y.shape[1:3] == (2 * 4, 3 * 4) and z.shape[1:3] == (2, 3)  # 1/16, then 1/64
    assert codec.PAD == config_checks.MODEL_STRIDE == model.downsampling_factor
    assert "downsampling_factor" not in TINY.to_dict()  # not a field: fingerprints unchanged
