"""TACO's training loss: rate + distortion + LPIPS-Alex + joint image-text (CLIP) term.

    L = bpp + lmbda * 255^2 * MSE(x_hat, x) + k_P * LPIPS_alex(x_hat, x)
        + k_J * [CLIP contrastive(t, e(x_hat)) + 40 * ||e(x_hat) - e(x)||_F]

Everything is one pure function ``loss_fn(frozen_params, outputs, x, clip_text_embeds)``;
the frozen LPIPS and CLIP weights are an argument, not constants baked into the graph.
Terms whose weight is 0 are left out at trace time (no LPIPS / CLIP forward at all).
The joint term is computed per group of ``joint_group_size`` images (the authors' per-GPU
batch of 8 under DistributedDataParallel) and averaged over the groups, so a batch gives
the same loss and gradients whatever the device mesh.
The auxiliary quantile loss of the entropy bottleneck is the model's, not computed here.
Images are NHWC float32 in [0, 1].
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from tgic_jax.config import LossConfig
from tgic_jax.evaluation.lpips import load_lpips_params, lpips_distance
from tgic_jax.model.clip import PretrainedCLIP, load_clip
from tgic_jax.model.layers import Params
from tgic_jax.train import precision

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


# ----------------------------------------------------------------------------- CLIP
def build_clip(path: str = "openai/clip-vit-base-patch32") -> PretrainedCLIP:
    """Both CLIP towers with projections, from a hub id or a local folder (no torch)."""
    return load_clip(path)


def clip_preprocess(
    images: jax.Array, size: int = CLIP_IMAGE_SIZE, method: str = "linear"
) -> jax.Array:
    """Differentiable CLIP input: resize short side -> size, center crop, normalize.

    NHWC [0, 1] -> NHWC normalized [B, size, size, 3]. method 'linear' with antialias is
    torchvision's `Resize` on tensors (the authors' `transform_for_clip`: their x*255 and
    /255 around it cancel, float tensors are not rounded); 'cubic' is close to the
    CLIPImageProcessor (PIL bicubic). x_hat is not clipped so its gradient stays intact.
    """
    batch, height, width, channels = images.shape
    short = min(height, width)
    # Same integer rounding as torchvision's Resize(int) and transformers' processor.
    new_h, new_w = (
        (size, int(size * width / height))
        if height == short
        else (int(size * height / width), size)
    )
    if (new_h, new_w) != (height, width):
        # antialias=True widens the kernel by the downscale factor and renormalizes it at
        # the borders, as torchvision (antialias=True) and PIL do.
        images = jax.image.resize(
            images, (batch, new_h, new_w, channels), method=method, antialias=True
        )
    top, left = (new_h - size) // 2, (new_w - size) // 2
    images = images[:, top : top + size, left : left + size, :]
    mean = jnp.asarray(CLIP_MEAN, images.dtype)
    std = jnp.asarray(CLIP_STD, images.dtype)
    return (images - mean) / std


def _l2_normalize(v: jax.Array) -> jax.Array:
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def clip_image_embeddings(
    clip_model, clip_params: Params, images: jax.Array, resize_method: str = "linear"
) -> jax.Array:
    """L2-normalized projected CLIP image embeddings [B, P] of NHWC [0, 1] images."""
    # At the tower's own input size: 224 for OpenAI's B/32, 336 for L/14-336, a test tower's.
    size = clip_model.module.vision.image_size
    pixels = clip_preprocess(images, size, method=resize_method)  # NHWC, as our tower takes
    return _l2_normalize(clip_model.image_features(clip_params, pixels)["image_embeds"])


def clip_text_embeddings(
    clip_model, clip_params: Params, input_ids: jax.Array, mask: jax.Array
) -> jax.Array:
    """Projected CLIP text features [B, P], not normalized (pure: runs in the train step).

    The one function that turns the batch's tokens (the same 38 tokens as the conditioning
    text) into the joint term's text embeddings; frozen, so no gradient flows back.
    """
    feats = clip_model.text_features(clip_params, input_ids, mask)["text_embeds"]
    return jax.lax.stop_gradient(feats)


def clip_joint_term(
    clip_model,
    clip_params: Params,
    x_hat: jax.Array,
    x: jax.Array,
    text_embeds: jax.Array,
    logit_scale_log: float = 2.6592,
    embed_weight: float = 40.0,
    group_size: int = 0,
    resize_method: str = "linear",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean over groups of CLIP contrastive(t, e(x_hat)) + embed_weight * ||e(x_hat) - e(x)||_F.

    Groups are consecutive blocks of group_size images (0: the whole batch is one group):
    the authors compute the term on each GPU's 8 images, and DDP averages the gradients.
    """
    batch = x_hat.shape[0]
    group = int(group_size) or batch
    if batch % group:
        raise ValueError(f"batch {batch} is not a multiple of loss.joint_group_size={group}")
    e_hat = clip_image_embeddings(clip_model, clip_params, x_hat, resize_method)
    e_ref = jax.lax.stop_gradient(clip_image_embeddings(clip_model, clip_params, x, resize_method))
    t = _l2_normalize(text_embeds.astype(jnp.float32))

    def grouped(v):
        return v.reshape(batch // group, group, v.shape[-1])

    contrastive = jax.vmap(lambda a, b: clip_contrastive(a, b, logit_scale_log))(
        grouped(t), grouped(e_hat)
    )
    # Frobenius norm of each group's [group, P] difference. The floor keeps the gradient
    # finite (sqrt'(0) = inf) when x_hat == x; it changes the value by at most 1e-12.
    sq = jnp.sum(jnp.square(grouped(e_hat) - grouped(e_ref)), axis=(1, 2))
    embed_dist = jnp.sqrt(jnp.maximum(sq, 1e-24))
    term = jnp.mean(contrastive + embed_weight * embed_dist)
    return term, {
        "clip_contrastive": jnp.mean(contrastive),
        "clip_embed_dist": jnp.mean(embed_dist),
    }


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
def check_joint_group(loss_config, global_batch: int) -> None:
    """Raises a one-line error when the joint term's groups do not tile the global batch."""
    loss_config = LossConfig.from_config(loss_config)
    group = int(loss_config.joint_group_size)
    if float(loss_config.k_j) > 0 and group > 0 and global_batch % group:
        raise ValueError(
            f"global batch {global_batch} is not a multiple of loss.joint_group_size={group} "
            "(the joint term is computed per group; change the batch or the group size)"
        )


def build_loss(loss_config, clip_model=None) -> tuple[LossFn, dict[str, Params]]:
    """Returns (loss_fn, frozen_params) for config.loss; loss_fn is pure and jittable.

    loss_fn(frozen_params, outputs, x, clip_text_embeds) -> (loss, metrics), with outputs
    {"x_hat": [B,H,W,3], "likelihoods": {"y": ..., "z": ...}}, x [B,H,W,3] in [0, 1] and
    clip_text_embeds the projected CLIP text features [B, P], normalized or not (None when
    k_j == 0). A clip_model may be passed to share it with the caller (which also needs it
    for `clip_text_embeddings`).
    """
    loss_config = LossConfig.from_config(loss_config)
    lmbda = float(loss_config.lmbda)
    k_p = float(loss_config.k_p)
    k_j = float(loss_config.k_j)
    input_range = loss_config.lpips_input_range
    lpips_float64 = precision.lpips_float64(loss_config)
    if k_p > 0:
        chosen = precision.lpips_precision(loss_config)
        log = logging.warning if chosen.startswith("float32 (") else logging.info
        log("LPIPS in %s", chosen)
    embed_weight = float(loss_config.clip_embed_weight)
    logit_scale_log = float(loss_config.clip_logit_scale_log)
    group_size = int(loss_config.joint_group_size)
    resize_method = loss_config.clip_resize_method
    if resize_method not in ("linear", "cubic"):
        raise ValueError(f"clip_resize_method must be 'linear' or 'cubic': {resize_method}")

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
        loss = bpp + distortion  # lmbda = 0 removes the term (0 * mse)
        metrics = {
            "bpp": bpp,
            **{f"bpp_{name}": value for name, value in bpp_parts.items()},
            "mse": mse,
            "psnr": -10.0 * jnp.log10(mse),
            "distortion": distortion,
        }
        if k_p > 0:
            lpips = jnp.mean(
                lpips_distance(frozen_params["lpips"], x_hat, x, input_range, lpips_float64)
            )
            loss = loss + k_p * lpips
            metrics["lpips"] = lpips
        if k_j > 0:
            if clip_text_embeds is None:
                raise ValueError("k_j > 0 needs clip_text_embeds [B, P].")
            joint, parts = clip_joint_term(
                clip_model,
                frozen_params["clip"],
                x_hat,
                x,
                clip_text_embeds,
                logit_scale_log,
                embed_weight,
                group_size,
                resize_method,
            )
            loss = loss + k_j * joint
            metrics.update(parts, joint=joint)
        metrics["loss"] = loss
        return loss, metrics

    return loss_fn, frozen
