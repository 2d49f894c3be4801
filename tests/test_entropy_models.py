"""Quantization, the Gaussian conditional and the factorized bottleneck."""

import jax
import jax.numpy as jnp
import numpy as np

from tgic_jax.model import entropy_models as em


def test_straight_through_gradient_is_one():
    x = jnp.linspace(-3.3, 3.3, 101)
    g = jax.grad(lambda v: em.quantize_around(v, 0.25).sum())(x)
    np.testing.assert_array_equal(g, np.ones_like(x))
    np.testing.assert_array_equal(em.quantize_around(x, 0.25), jnp.round(x - 0.25) + 0.25)


def test_training_noise_lies_in_half_unit_interval():
    x = jnp.zeros((200_000,))
    n = em.add_noise(x, jax.random.PRNGKey(0))
    assert float(n.min()) >= -0.5 and float(n.max()) <= 0.5
    assert abs(float(n.mean())) < 0.01 and abs(float(n.var()) - 1 / 12) < 0.002


def test_rounding_is_half_to_even():
    np.testing.assert_array_equal(
        em.quantize_around(jnp.array([0.5, 1.5, 2.5, -0.5]), 0.0), [0.0, 2.0, 2.0, -0.0]
    )


def test_gaussian_likelihoods_are_in_unit_interval_and_sum_to_one():
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    y = jax.random.normal(k[0], (1000,)) * 20
    scales = jnp.exp(jax.random.normal(k[1], (1000,)) * 2)
    means = jax.random.normal(k[2], (1000,))
    p = em.gaussian_likelihood(jnp.round(y - means) + means, scales, means)
    assert float(p.min()) >= np.float32(1e-9) and float(p.max()) <= 1.0
    # the pmf over integer offsets sums to ~1 for a moderate scale
    support = jnp.arange(-50, 51, dtype=jnp.float32)
    total = em.gaussian_likelihood(support + 0.3, jnp.full_like(support, 3.0), 0.3).sum()
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_scale_lower_bound_passes_gradient_only_upward():
    f = lambda s: em.gaussian_likelihood(jnp.float32(0.0), s, 0.0)
    assert (
        float(jax.grad(lambda s: -jnp.log(f(s)))(jnp.float32(0.05))) == 0.0
    )  # pushes down: blocked
    assert float(jax.grad(lambda s: jnp.log(f(s)))(jnp.float32(0.05))) != 0.0  # pushes up: passes


def _bottleneck_params(channels=4):
    eb = em.EntropyBottleneck(channels)
    return eb.init(jax.random.PRNGKey(0), method=lambda m: m.medians())["params"]


def test_aux_loss_moves_quantiles_toward_targets():
    params = _bottleneck_params()
    target = em.bottleneck_target()

    def distance(p):
        logits = em.bottleneck_logits_cumulative(p, p["quantiles"])
        return float(jnp.abs(logits - target).sum())

    grads = jax.grad(em.bottleneck_aux_loss)(params)
    # only the quantiles receive gradient
    for name, g in grads.items():
        assert (float(jnp.abs(g).sum()) > 0) == (name == "quantiles"), name
    before = distance(params)
    p = dict(params)
    for _ in range(200):
        p["quantiles"] = p["quantiles"] - 0.5 * jnp.sign(
            jax.grad(em.bottleneck_aux_loss)(p)["quantiles"]
        )
    assert distance(p) < 0.6 * before


def test_bottleneck_likelihoods_are_a_distribution():
    params = _bottleneck_params(3)
    v = jnp.tile(jnp.arange(-300.0, 301.0), (3, 1, 1))
    p = em.bottleneck_likelihood_cl(params, v)
    assert float(p.min()) >= np.float32(1e-9) and float(p.max()) <= 1.0
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-4)
