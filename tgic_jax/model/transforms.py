"""The four transforms: g_a(x, text), g_s(y_hat), h_a(y), h_s(z_hat).

Submodule names follow the authors' state_dict (`analysis_transform.<i>` becomes
`analysis_transform_<i>`), so that conversion is a mechanical renaming.

Mixed precision: `dtype` is the compute dtype of a transform ("float32" or "bfloat16").
Its inputs are cast to it on entry and its output back to float32 on exit, so the
entropy model, the likelihoods and the loss always see float32; parameters stay float32.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from tgic_jax.model.layers import AttentionBlock, Conv, ConvTranspose, ResidualBottleneck
from tgic_jax.model.text_adapter import Extractor, Injector

# How much each analysis transform shrinks H and W: g_a has four stride-2 convolutions,
# h_a two. Their product is the model's `DOWNSAMPLING_FACTOR` (model/taco.py).
G_A_DOWNSAMPLING = 2**4
H_A_DOWNSAMPLING = 2**2


class AnalysisTransform(nn.Module):
    """g_a: x [B,H,W,3] and text [B,T,D] -> y [B,H/16,W/16,M]; the text enters at 1/4 and 1/8."""

    N: int
    M: int
    heads: int = 8
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, text: jax.Array) -> jax.Array:
        """Latent y [B, H/16, W/16, M] float32 of the image x and its text tokens."""
        N, M = self.N, self.M
        x, text = x.astype(self.dtype), text.astype(self.dtype)

        x = Conv(N, 5, 2, name="analysis_transform_0")(x)
        for i in (1, 2, 3):
            x = ResidualBottleneck(name=f"analysis_transform_{i}")(x)
        x = Conv(N, 5, 2, name="analysis_transform_4")(x)
        for i in (5, 6, 7):
            x = ResidualBottleneck(name=f"analysis_transform_{i}")(x)
        x = Injector(self.heads, name="analysis_transform_8")(x, text)  # 1/4 resolution
        x = AttentionBlock(name="analysis_transform_9")(x)
        x = Conv(N, 5, 2, name="analysis_transform_10")(x)
        for i in (11, 12, 13):
            x = ResidualBottleneck(name=f"analysis_transform_{i}")(x)
        text = Extractor(self.heads, name="analysis_transform_14")(x, text)  # updates the text
        x = Injector(self.heads, name="analysis_transform_15")(x, text)  # 1/8 resolution
        x = Conv(M, 5, 2, name="analysis_transform_16")(x)
        return AttentionBlock(name="analysis_transform_17")(x).astype(jnp.float32)


class SynthesisTransform(nn.Module):
    """g_s: y_hat [B,h,w,M] -> x_hat [B,16h,16w,3] (text-free, not clamped)."""

    N: int
    M: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, y_hat: jax.Array) -> jax.Array:
        """Reconstruction x_hat [B, 16h, 16w, 3] float32 of the quantized latent."""
        N = self.N
        x = AttentionBlock(name="synthesis_transform_0")(y_hat.astype(self.dtype))
        x = ConvTranspose(N, 5, 2, name="synthesis_transform_1")(x)
        for i in (2, 3, 4):
            x = ResidualBottleneck(name=f"synthesis_transform_{i}")(x)
        x = ConvTranspose(N, 5, 2, name="synthesis_transform_5")(x)
        x = AttentionBlock(name="synthesis_transform_6")(x)
        for i in (7, 8, 9):
            x = ResidualBottleneck(name=f"synthesis_transform_{i}")(x)
        x = ConvTranspose(N, 5, 2, name="synthesis_transform_10")(x)
        for i in (11, 12, 13):
            x = ResidualBottleneck(name=f"synthesis_transform_{i}")(x)
        return ConvTranspose(3, 5, 2, name="synthesis_transform_14")(x).astype(jnp.float32)


class HyperAnalysis(nn.Module):
    """h_a: y -> z (N channels at 1/64)."""

    N: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        """Hyper-latent z [B, h/4, w/4, N] float32 of the latent y [B, h, w, M]."""
        z = nn.relu(Conv(self.N, 3, 1, name="reduction_0")(y.astype(self.dtype)))
        z = nn.relu(Conv(self.N, 5, 2, name="reduction_2")(z))
        return Conv(self.N, 5, 2, name="reduction_4")(z).astype(jnp.float32)


class HyperSynthesis(nn.Module):
    """h_s: z_hat -> hyper parameters (2M channels at 1/16)."""

    M: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, z_hat: jax.Array) -> jax.Array:
        """Hyper parameters [B, 4h, 4w, 2M] float32 of the quantized hyper-latent."""
        M = self.M
        h = nn.relu(ConvTranspose(M, 5, 2, name="increase_0")(z_hat.astype(self.dtype)))
        h = nn.relu(ConvTranspose(M * 3 // 2, 5, 2, name="increase_2")(h))
        return ConvTranspose(2 * M, 3, 1, name="increase_4")(h).astype(jnp.float32)
