"""TACO: an ELIC codec whose analysis transform reads the caption.

Data flow (NHWC; the caption enters g_a only, nothing about it is transmitted):

    text [B,T,D] ─────────┐ (Injector at 1/4, Extractor + Injector at 1/8)
                          v
    x [B,H,W,3] ──> g_a(x, text) ──> y [B,H/16,W/16,M] ──> h_a ──> z [B,H/64,W/64,N]
                                      │                               │ Q around medians
                                      │                       z_hat ──┤──> EntropyBottleneck
                                      │                               │    p(z_hat)
                                      │                               v
                                      │                       h_s(z_hat) = hyper [.., 2M]
                                      v                               │
            y split in slices [c_0 .. c_4]; for slice i:              │
              channel_context_i(y_hat of slices < i) ─────────────────┤
              anchors:     entropy_parameters_anchor_i   -> (scales, means) -> y_hat anchors
              local_context_i(y_hat anchors) ─────────────────────────┘
              non-anchors: entropy_parameters_nonanchor_i -> (scales, means) -> y_hat non-anchors
            GaussianConditional: p(y_hat | scales, means)
                                      │
    x_hat [B,H,W,3] <── g_s(y_hat) <──┘          (text-free decoder; x_hat is not clamped)

`model.apply(variables, x, text, train=False)` returns
`{"x_hat", "likelihoods": {"y", "z"}, "y", "z"}`; with `train=True` pass
`rngs={"noise": key}` (uniform noise for the rates, straight-through rounding for g_s).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tgic_jax.model import entropy_models as em
from tgic_jax.model.layers import Conv
from tgic_jax.model.transforms import (
    G_A_DOWNSAMPLING,
    H_A_DOWNSAMPLING,
    AnalysisTransform,
    HyperAnalysis,
    HyperSynthesis,
    SynthesisTransform,
)

COMPUTE_DTYPES = ("float32", "bfloat16")
# z is [H/64, W/64]: g_a downsamples by 16, h_a by 4 more. Images are coded padded to a
# multiple of it, and training crops must be one.
DOWNSAMPLING_FACTOR = G_A_DOWNSAMPLING * H_A_DOWNSAMPLING


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of a TACO model (the paper: N=192, M=320, slices 16/16/32/64/192, D=512)."""

    N: int = 192
    M: int = 320
    slices: tuple[int, ...] = (16, 16, 32, 64, 192)
    text_dim: int = 512
    heads: int = 8
    # Compute dtype of g_a, g_s, h_a, h_s ("bfloat16": mixed precision); the entropy model,
    # likelihoods and parameters stay float32 either way.
    compute_dtype: str = "float32"

    @property
    def downsampling_factor(self) -> int:
        """H / z's height (and W / z's width): `DOWNSAMPLING_FACTOR`, the same for every size."""
        return DOWNSAMPLING_FACTOR

    def __post_init__(self):
        object.__setattr__(self, "slices", tuple(int(c) for c in self.slices))
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype {self.compute_dtype!r} is not one of {COMPUTE_DTYPES}")
        if sum(self.slices) != self.M:
            raise ValueError(f"slices {self.slices} must sum to M={self.M}")
        for dim in (self.N, self.text_dim):
            if dim % self.heads:
                raise ValueError(f"width {dim} is not divisible by heads={self.heads}")

    @classmethod
    def from_config(cls, cfg) -> ModelConfig:
        """From a `config.model` ConfigDict or dict."""
        d = dict(cfg)
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        d = dataclasses.asdict(self)
        d["slices"] = list(self.slices)
        return d


def checkerboard_masks(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(anchor, non_anchor) float32 [h, w, 1]; anchors at (even, odd) and (odd, even)."""
    parity = (np.arange(h)[:, None] + np.arange(w)[None, :]) % 2
    anchor = (parity == 1).astype(np.float32)[..., None]
    return anchor, 1.0 - anchor


class EntropyParameters(nn.Module):
    """1x1 convs in -> 2c*5//3 -> 2c*4//3 -> 2c, ReLU between (`fusion`)."""

    features: int  # 2 * c_i

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Entropy parameters [..., features] (scales then means) from the concatenated context."""
        f = self.features
        x = nn.relu(Conv(f * 5 // 3, 1, name="fusion_0")(x))
        x = nn.relu(Conv(f * 4 // 3, 1, name="fusion_2")(x))
        return Conv(f, 1, name="fusion_4")(x)


class ChannelContext(nn.Module):
    """5x5 convs (previous slices) -> 224 -> 128 -> 2c, ReLU between (`fushion`, sic)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Channel context [..., features] from the concatenated y_hat of the previous slices."""
        x = nn.relu(Conv(224, 5, name="fushion_0")(x))
        x = nn.relu(Conv(128, 5, name="fushion_2")(x))
        return Conv(self.features, 5, name="fushion_4")(x)


def split_params(p: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Entropy parameters split along channels into (scales, means), scales first."""
    c = p.shape[-1] // 2
    return p[..., :c], p[..., c:]


class TACO(nn.Module):
    """The text-guided codec of `config`'s sizes and compute dtype.

    `config` is the one description of the model: the codec keys its exported programs and
    the file fingerprint by it, so two models that differ in any field never share either.
    """

    config: ModelConfig = ModelConfig()

    @property
    def downsampling_factor(self) -> int:
        """H / z's height: inputs are multiples of it (`DOWNSAMPLING_FACTOR`)."""
        return self.config.downsampling_factor

    def setup(self):
        """Declares the transforms, the bottleneck and one context/parameter net per slice."""
        cfg, dtype = self.config, self.config.compute_dtype
        self.g_a = AnalysisTransform(cfg.N, cfg.M, cfg.heads, dtype=dtype)
        self.g_s = SynthesisTransform(cfg.N, cfg.M, dtype=dtype)
        self.h_a = HyperAnalysis(cfg.N, dtype=dtype)
        self.h_s = HyperSynthesis(cfg.M, dtype=dtype)
        self.entropy_bottleneck = em.EntropyBottleneck(cfg.N)
        self.local_context = [Conv(2 * c, 5, 1) for c in cfg.slices]
        # channel_context has no entry for slice 0 (nothing precedes it).
        self.channel_context = {
            str(i): ChannelContext(2 * c) for i, c in enumerate(cfg.slices) if i
        }
        self.entropy_parameters_anchor = [EntropyParameters(2 * c) for c in cfg.slices]
        self.entropy_parameters_nonanchor = [EntropyParameters(2 * c) for c in cfg.slices]

    # -- pieces the codec calls one by one ---------------------------------------------
    def analysis(self, x: jax.Array, text: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(y, z) = (g_a(x, text), h_a(y))."""
        _check_inputs(x, text, self.config.text_dim)
        y = self.g_a(x, text)
        return y, self.h_a(y)

    def synthesis(self, y_hat: jax.Array) -> jax.Array:
        """x_hat = g_s(y_hat)."""
        return self.g_s(y_hat)

    def hyper_synthesis(self, z_hat: jax.Array) -> jax.Array:
        """hyper = h_s(z_hat), 2M channels."""
        return self.h_s(z_hat)

    def z_medians(self) -> jax.Array:
        """The bottleneck medians [N] that z is rounded around."""
        return self.entropy_bottleneck.medians()

    def z_likelihood(self, z_hat: jax.Array) -> jax.Array:
        """p(z_hat) under the factorized prior."""
        return self.entropy_bottleneck.likelihood(z_hat)

    def anchor_params(self, i: int, hyper: jax.Array, y_hat_previous: Sequence[jax.Array]):
        """Slice i's anchor (scales, means) and its channel context (None for slice 0)."""
        if i == 0:
            ctx = None
            p = self.entropy_parameters_anchor[0](hyper)
        else:
            ctx = self.channel_context[str(i)](jnp.concatenate(list(y_hat_previous), -1))
            p = self.entropy_parameters_anchor[i](jnp.concatenate([ctx, hyper], -1))
        scales, means = split_params(p)
        return scales, means, ctx

    def nonanchor_params(self, i: int, hyper: jax.Array, ctx, y_hat_anchor: jax.Array):
        """Slice i's non-anchor (scales, means) from the decoded anchors of the slice."""
        local = self.local_context[i](y_hat_anchor)
        inputs = [local, hyper] if ctx is None else [local, ctx, hyper]
        return split_params(self.entropy_parameters_nonanchor[i](jnp.concatenate(inputs, -1)))

    def aux_loss(self) -> jax.Array:
        """The bottleneck's quantile loss (reaches only `quantiles`)."""
        return self.entropy_bottleneck.aux_loss()

    # -- the whole model ------------------------------------------------------------------
    def __call__(self, x: jax.Array, text: jax.Array, train: bool = False) -> dict:
        """Forward pass: x_hat and the likelihoods of y_hat and z_hat (see module doc)."""
        y, z = self.analysis(x, text)
        z_hat = em.quantize_around(z, self.z_medians())
        z_rate_input = em.add_noise(z, self.make_rng("noise")) if train else z_hat
        z_likelihoods = self.z_likelihood(z_rate_input)
        hyper = self.hyper_synthesis(z_hat)

        anchor, non_anchor = checkerboard_masks(y.shape[1], y.shape[2])
        y_rate_input = em.add_noise(y, self.make_rng("noise")) if train else None
        y_hat_slices, likelihoods = [], []
        start = 0
        for i, c in enumerate(self.config.slices):
            y_i = y[..., start : start + c]
            scales_a, means_a, ctx = self.anchor_params(i, hyper, y_hat_slices)
            scales_a, means_a = scales_a * anchor, means_a * anchor
            y_hat_a = em.quantize_around(y_i * anchor, means_a)
            scales_n, means_n = self.nonanchor_params(i, hyper, ctx, y_hat_a)
            scales_n, means_n = scales_n * non_anchor, means_n * non_anchor
            y_hat_i = y_hat_a + em.quantize_around(y_i * non_anchor, means_n)
            rate_input = y_hat_i if y_rate_input is None else y_rate_input[..., start : start + c]
            likelihoods.append(
                em.gaussian_likelihood(rate_input, scales_a + scales_n, means_a + means_n)
            )
            y_hat_slices.append(y_hat_i)
            start += c
        y_hat = jnp.concatenate(y_hat_slices, -1)
        return {
            "x_hat": self.synthesis(y_hat),
            "likelihoods": {"y": jnp.concatenate(likelihoods, -1), "z": z_likelihoods},
            "y": y,
            "z": z,
        }


def _check_inputs(x: jax.Array, text: jax.Array, text_dim: int) -> None:
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"x must be [B, H, W, 3], got {x.shape}")
    f = DOWNSAMPLING_FACTOR
    if x.shape[1] % f or x.shape[2] % f:
        raise ValueError(f"H and W must be multiples of {f} (pad first), got {x.shape[1:3]}")
    if text.ndim != 3 or text.shape[0] != x.shape[0] or text.shape[-1] != text_dim:
        raise ValueError(f"text must be [B={x.shape[0]}, T, {text_dim}], got {text.shape}")


def init_variables(model: TACO, rng: jax.Array, image_size: int = 64, tokens: int = 38) -> dict:
    """Initial variables for `model` (traced on a tiny input; shapes do not depend on it)."""
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    text = jnp.zeros((1, tokens, model.config.text_dim), jnp.float32)
    return model.init({"params": rng}, x, text)
