"""The text adapter: the Injector's residual starts at zero on normalized image features."""

import jax
import jax.numpy as jnp
import numpy as np

from tgic_jax.model.layers import LayerNorm
from tgic_jax.model.text_adapter import Injector


def test_injector_with_zero_gamma_equals_layernorm_of_its_input():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 5, 16)) * 3 + 1
    text = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 24))
    inj = Injector(heads=8)
    v = inj.init(jax.random.PRNGKey(2), x, text)
    assert float(jnp.abs(v["params"]["gamma"]).max()) == 0.0  # its initial value
    ln = LayerNorm()
    ln_v = {"params": v["params"]["image_norm"]}
    np.testing.assert_allclose(inj.apply(v, x, text), ln.apply(ln_v, x), atol=1e-6)
