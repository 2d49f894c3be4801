"""Entropy models: the factorized bottleneck for z and the Gaussian conditional for y.

Pure functions of explicit parameters, so that the training forward pass, the coding
tables (`coding/tables.py`) and the codec share one definition of every density.
Follows CompressAI 1.2 numerically (LowerBound gradients, the bottleneck's sign trick).
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SCALE_BOUND = 0.11
LIKELIHOOD_BOUND = 1e-9
TAIL_MASS = 1e-9
BOTTLENECK_FILTERS = (3, 3, 3, 3)
BOTTLENECK_INIT_SCALE = 10.0


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def lower_bound(x: jax.Array, bound: float) -> jax.Array:
    """max(x, bound) whose gradient passes where x >= bound or the gradient pushes x up."""
    return jnp.maximum(x, bound)


def _lower_bound_fwd(x, bound):
    return jnp.maximum(x, bound), x


def _lower_bound_bwd(bound, x, g):
    pass_through = (x >= bound) | (g < 0)
    return (jnp.where(pass_through, g, 0.0).astype(g.dtype),)


lower_bound.defvjp(_lower_bound_fwd, _lower_bound_bwd)


def ste_round(x: jax.Array) -> jax.Array:
    """Round half to even with a straight-through (identity) gradient."""
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


def quantize_around(x: jax.Array, center: jax.Array) -> jax.Array:
    """round(x - center) + center with a straight-through gradient (y_hat, z_hat)."""
    return ste_round(x - center) + center


def add_noise(x: jax.Array, rng: jax.Array) -> jax.Array:
    """Training proxy for quantization: x + U(-0.5, 0.5)."""
    return x + jax.random.uniform(rng, x.shape, x.dtype, -0.5, 0.5)


def _standardized_cumulative(x: jax.Array) -> jax.Array:
    return 0.5 * jax.scipy.special.erfc(-(2**-0.5) * x)


def gaussian_likelihood(y_hat: jax.Array, scales: jax.Array, means: jax.Array) -> jax.Array:
    """P(y_hat) of a unit bin under N(means, scales), scales bounded at 0.11, floor 1e-9."""
    scales = lower_bound(scales, SCALE_BOUND)
    v = jnp.abs(y_hat - means)
    upper = _standardized_cumulative((0.5 - v) / scales)
    lower = _standardized_cumulative((-0.5 - v) / scales)
    return lower_bound(upper - lower, LIKELIHOOD_BOUND)


# ----------------------------------------------------------------------------------------
# Factorized bottleneck (Balle et al. 2018), parameters in CompressAI's layout:
# matrices_i [C, out, in], biases_i / factors_i [C, out, 1], quantiles [C, 1, 3].


def bottleneck_target() -> np.ndarray:
    """The logits the quantiles are trained to reach: (-t, 0, t), t = ln(2 / tail - 1)."""
    t = np.log(2.0 / TAIL_MASS - 1.0)
    return np.array([-t, 0.0, t], dtype=np.float32)


def bottleneck_logits_cumulative(params, x: jax.Array, stop_gradient: bool = False) -> jax.Array:
    """Cumulative logits of the per-channel density at x [C, 1, n] -> [C, 1, n]."""
    sg = jax.lax.stop_gradient if stop_gradient else (lambda a: a)
    logits = x
    n_layers = len(BOTTLENECK_FILTERS) + 1
    for i in range(n_layers):
        matrix = jax.nn.softplus(sg(params[f"matrices_{i}"]))
        logits = jnp.matmul(matrix, logits, precision=jax.lax.Precision.HIGHEST)
        logits = logits + sg(params[f"biases_{i}"])
        if i < n_layers - 1:
            logits = logits + jnp.tanh(sg(params[f"factors_{i}"])) * jnp.tanh(logits)
    return logits


def bottleneck_likelihood_cl(params, v: jax.Array) -> jax.Array:
    """Likelihood of unit bins centred at v [C, 1, n], CompressAI's sign trick, floored."""
    lower = bottleneck_logits_cumulative(params, v - 0.5)
    upper = bottleneck_logits_cumulative(params, v + 0.5)
    sign = jax.lax.stop_gradient(-jnp.sign(lower + upper))
    lik = jnp.abs(jax.nn.sigmoid(sign * upper) - jax.nn.sigmoid(sign * lower))
    return lower_bound(lik, LIKELIHOOD_BOUND)


def bottleneck_medians(params) -> jax.Array:
    """Per-channel medians [C] = quantiles[:, 0, 1]."""
    return params["quantiles"][:, 0, 1]


def bottleneck_aux_loss(params) -> jax.Array:
    """sum |logits(quantiles) - target|, with gradients reaching only the quantiles."""
    logits = bottleneck_logits_cumulative(params, params["quantiles"], stop_gradient=True)
    return jnp.abs(logits - bottleneck_target()).sum()


def _to_channels_last_rows(z: jax.Array) -> jax.Array:
    """NHWC -> [C, 1, B*H*W] (CompressAI's per-channel layout)."""
    c = z.shape[-1]
    return jnp.moveaxis(z, -1, 0).reshape(c, 1, -1)


def _from_channels_last_rows(v: jax.Array, shape) -> jax.Array:
    c = shape[-1]
    return jnp.moveaxis(v.reshape((c,) + tuple(shape[:-1])), 0, -1)


class EntropyBottleneck(nn.Module):
    """Holds the factorized prior's parameters; math in the pure functions above."""

    channels: int

    def setup(self):
        """Declares the per-channel density MLP (matrices, biases, factors) and the quantiles."""
        filters = (1,) + BOTTLENECK_FILTERS + (1,)
        scale = BOTTLENECK_INIT_SCALE ** (1.0 / (len(BOTTLENECK_FILTERS) + 1))
        c = self.channels
        for i in range(len(filters) - 1):
            init = float(np.log(np.expm1(1.0 / scale / filters[i + 1])))
            shape = (c, filters[i + 1], filters[i])
            setattr(
                self,
                f"matrices_{i}",
                self.param(f"matrices_{i}", nn.initializers.constant(init), shape),
            )
            setattr(
                self,
                f"biases_{i}",
                self.param(
                    f"biases_{i}",
                    lambda k, s: jax.random.uniform(k, s, jnp.float32, -0.5, 0.5),
                    (c, filters[i + 1], 1),
                ),
            )
            if i < len(filters) - 2:
                setattr(
                    self,
                    f"factors_{i}",
                    self.param(f"factors_{i}", nn.initializers.zeros, (c, filters[i + 1], 1)),
                )
        q = np.array([-BOTTLENECK_INIT_SCALE, 0.0, BOTTLENECK_INIT_SCALE], np.float32)
        self.quantiles = self.param("quantiles", lambda k, s: jnp.tile(q, (c, 1, 1)), (c, 1, 3))

    def params_dict(self) -> dict:
        """The bottleneck's parameters as a plain dict (for the pure functions)."""
        n = len(BOTTLENECK_FILTERS) + 1
        d = {"quantiles": self.quantiles}
        for i in range(n):
            d[f"matrices_{i}"] = getattr(self, f"matrices_{i}")
            d[f"biases_{i}"] = getattr(self, f"biases_{i}")
            if i < n - 1:
                d[f"factors_{i}"] = getattr(self, f"factors_{i}")
        return d

    def medians(self) -> jax.Array:
        """Per-channel medians [C]."""
        return bottleneck_medians(self.params_dict())

    def likelihood(self, z_hat: jax.Array) -> jax.Array:
        """Likelihoods of z_hat (NHWC), same shape."""
        v = _to_channels_last_rows(z_hat)
        return _from_channels_last_rows(
            bottleneck_likelihood_cl(self.params_dict(), v), z_hat.shape
        )

    def aux_loss(self) -> jax.Array:
        """The quantile loss (trains `quantiles` only)."""
        return bottleneck_aux_loss(self.params_dict())
