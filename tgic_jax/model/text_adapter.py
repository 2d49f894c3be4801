"""The text adapter of g_a: image tokens attend to text (Injector) and back (Extractor)."""

from __future__ import annotations

import flax.linen as nn
import jax

from tgic_jax.model.layers import Dense, LayerNorm, MultiheadAttention


class Injector(nn.Module):
    """out = LN_x(x) + gamma * MHA(LN_x(x), LN_t(W t), LN_t(W t)), per pixel.

    The residual is added to the *normalized* image features, so with gamma = 0 (its
    initial value) the Injector is a per-pixel LayerNorm, not an identity.
    """

    heads: int = 8

    @nn.compact
    def __call__(self, x: jax.Array, text: jax.Array) -> jax.Array:
        """Image features x [B, H, W, C] conditioned on text tokens [B, T, D]; same shape."""
        b, h, w, dim = x.shape
        gamma = self.param("gamma", nn.initializers.zeros, (dim,))
        t = LayerNorm(name="text_norm")(
            Dense(dim, kaiming_normal=True, name="text_feature_dim_proj")(text)
        )
        v = LayerNorm(name="image_norm")(x.reshape(b, h * w, dim))
        a = MultiheadAttention(self.heads, name="cross_attn")(v, t, t)
        return (v + gamma.astype(v.dtype) * a).reshape(b, h, w, dim)


class Extractor(nn.Module):
    """Text tokens attend to the image: LN_t(t) + MHA(LN_t(t), LN_v(W x), LN_v(W x))."""

    heads: int = 8

    @nn.compact
    def __call__(self, x: jax.Array, text: jax.Array) -> jax.Array:
        """Text tokens [B, T, D] updated from the image features x [B, H, W, C]; same shape out."""
        b, h, w, dim = x.shape
        text_dim = text.shape[-1]
        v = Dense(text_dim, kaiming_normal=True, name="image_feature_dim_proj")(
            x.reshape(b, h * w, dim)
        )
        v = LayerNorm(name="image_norm")(v)
        q = LayerNorm(name="text_norm")(text)
        return q + MultiheadAttention(self.heads, name="cross_attn")(q, v, v)
