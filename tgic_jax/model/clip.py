"""CLIP's text and vision towers in Flax (Radford et al. 2021; transformers' `CLIPModel`).

    input_ids [B, L] -> token + position embeddings -> N x pre-LN block (causal, quick-GELU)
        -> final_layer_norm = last_hidden_state [B, L, D]
        -> state at the first end-of-text token -> text_projection = text_embeds [B, P]

    pixels [B, H, W, 3] -> patch conv (P x P, stride P) -> [class] + patches + positions
        -> pre_layrnorm -> N x pre-LN block -> post_layernorm(class state)
        -> visual_projection = image_embeds [B, P]

TACO conditions on the text tower's `last_hidden_state` (the paper's CLIP ViT-B/32); the
training loss compares `text_embeds` with `image_embeds` of x_hat. Module names are the
PyTorch ones (`pre_layrnorm` included), so `pretrained.state_dict_to_params` reads a
checkpoint folder by rule. Images come NHWC, normalized as `losses.clip_preprocess` does.
"""

from __future__ import annotations

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tgic_jax.model import pretrained
from tgic_jax.model.layers import Params


def activation(name: str):
    """transformers' `hidden_act` names -> functions (the ones CLIP and BERT use)."""
    if name == "quick_gelu":
        return lambda x: x * jax.nn.sigmoid(1.702 * x)
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: jax.nn.gelu(x, approximate=True)
    raise ValueError(f"hidden_act {name!r} is not supported")


def layer_norm(eps: float, name: str) -> nn.LayerNorm:
    """torch's LayerNorm: variance as mean((x - mean)^2), not E[x^2] - E[x]^2."""
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


@dataclasses.dataclass(frozen=True)
class TowerConfig:
    """The fields of a CLIPTextConfig / CLIPVisionConfig that the forward reads."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    layer_norm_eps: float
    hidden_act: str
    max_position_embeddings: int = 0  # text
    vocab_size: int = 0  # text
    eos_token_id: int = 2  # text; 2 means "the largest id", as transformers' legacy rule
    image_size: int = 0  # vision
    patch_size: int = 0  # vision
    num_channels: int = 3  # vision

    @classmethod
    def from_transformers(cls, config) -> TowerConfig:
        """From a transformers CLIPTextConfig or CLIPVisionConfig (any version), or a
        TowerConfig."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: getattr(config, n) for n in names if getattr(config, n, None) is not None})

    @classmethod
    def from_dict(cls, fields: dict, defaults: dict) -> TowerConfig:
        """From one tower's config.json fields, absent ones taken from `defaults`."""
        names = {f.name for f in dataclasses.fields(cls)}
        merged = {**defaults, **{k: v for k, v in fields.items() if v is not None}}
        return cls(**{k: v for k, v in merged.items() if k in names})


# transformers' CLIPTextConfig / CLIPVisionConfig defaults (the same in 4.57 and 5.x).
TEXT_DEFAULTS = pretrained.TRANSFORMERS_DEFAULTS["clip_text"]
VISION_DEFAULTS = pretrained.TRANSFORMERS_DEFAULTS["clip_vision"]
PROJECTION_DIM = 512


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """A CLIP folder's config.json as the towers read it (`clip_module` takes it)."""

    text_config: TowerConfig | None
    vision_config: TowerConfig | None
    projection_dim: int = PROJECTION_DIM


def clip_config(
    text: dict | None, vision: dict | None, projection_dim: int = PROJECTION_DIM
) -> CLIPConfig:
    """A CLIPConfig from tower fields over transformers' defaults ({} gives ViT-B/32's:
    text 512 x 12 layers, vision 768 x 12, patch 32); None leaves that tower out."""
    return CLIPConfig(
        TowerConfig.from_dict(text, TEXT_DEFAULTS) if text is not None else None,
        TowerConfig.from_dict(vision, VISION_DEFAULTS) if vision is not None else None,
        projection_dim,
    )


def read_clip_config(folder: str | os.PathLike, text: bool = True) -> CLIPConfig:
    """A CLIP folder's config: a full `CLIPModel` one (both towers), or one tower's (the text
    tower's if `text`); transformers' defaults fill absent fields, as its from_pretrained."""
    raw = pretrained.read_config(folder)
    projection = int(raw.get("projection_dim", PROJECTION_DIM))
    if raw.get("model_type") == "clip":
        # Old hub configs carry `*_config_dict` beside `*_config`; transformers lets it win.
        text_fields = {**(raw.get("text_config") or {}), **(raw.get("text_config_dict") or {})}
        vision_fields = {
            **(raw.get("vision_config") or {}),
            **(raw.get("vision_config_dict") or {}),
        }
        return clip_config(text_fields, vision_fields, projection)
    return clip_config(raw, None, projection) if text else clip_config(None, raw, projection)


class _Attention(nn.Module):
    """CLIP's multi-head self-attention (q/k/v/out projections with bias)."""

    config: TowerConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        heads = self.config.num_attention_heads
        split = lambda t: t.reshape(t.shape[:2] + (heads, -1))
        q, k, v = (split(nn.Dense(x.shape[-1], name=n)(x)) for n in ("q_proj", "k_proj", "v_proj"))
        out = nn.dot_product_attention(q, k, v, mask=mask)
        return nn.Dense(x.shape[-1], name="out_proj")(out.reshape(x.shape))


class _MLP(nn.Module):
    config: TowerConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = activation(self.config.hidden_act)(
            nn.Dense(self.config.intermediate_size, name="fc1")(x)
        )
        return nn.Dense(x.shape[-1], name="fc2")(h)


class _Encoder(nn.Module):
    """N pre-LN residual blocks: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    config: TowerConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        eps = self.config.layer_norm_eps
        for i in range(self.config.num_hidden_layers):
            layer = _Layer(self.config, name=f"layers_{i}")
            x = layer(x, mask, eps)
        return x


class _Layer(nn.Module):
    config: TowerConfig

    @nn.compact
    def __call__(self, x, mask, eps):
        x = x + _Attention(self.config, name="self_attn")(layer_norm(eps, "layer_norm1")(x), mask)
        return x + _MLP(self.config, name="mlp")(layer_norm(eps, "layer_norm2")(x))


class _TextEmbeddings(nn.Module):
    config: TowerConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        c = self.config
        tokens = nn.Embed(c.vocab_size, c.hidden_size, name="token_embedding")(input_ids)
        table = nn.Embed(c.max_position_embeddings, c.hidden_size, name="position_embedding")
        return tokens + table(jnp.arange(input_ids.shape[1])[None])


class TextTransformer(nn.Module):
    """(input_ids, attention_mask) [B, L] -> (last_hidden_state [B, L, D], pooled [B, D])."""

    config: TowerConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array):
        """Causal self-attention over the real tokens, then end-of-text pooling."""
        c = self.config
        x = _TextEmbeddings(c, name="embeddings")(input_ids)
        length = input_ids.shape[1]
        causal = jnp.tril(jnp.ones((length, length), bool))
        mask = causal[None, None] & (attention_mask[:, None, None, :] > 0)
        x = _Encoder(c, name="encoder")(x, mask)
        x = layer_norm(c.layer_norm_eps, "final_layer_norm")(x)
        # transformers' rule: legacy configs (eos_token_id == 2) pool at the largest id,
        # the others at the first end-of-text token (the largest id of OpenAI's vocab).
        if c.eos_token_id == 2:
            eos = jnp.argmax(input_ids, axis=-1)
        else:
            eos = jnp.argmax((input_ids == c.eos_token_id).astype(jnp.int32), axis=-1)
        return x, x[jnp.arange(x.shape[0]), eos]


class VisionTransformer(nn.Module):
    """Pixels NHWC [B, H, W, C] -> (last_hidden_state [B, 1 + N, D], pooled [B, D])."""

    config: TowerConfig

    @nn.compact
    def __call__(self, pixels: jax.Array):
        """Patches + class token through the encoder; the class state pooled."""
        c = self.config
        x = _VisionEmbeddings(c, name="embeddings")(pixels)
        x = layer_norm(c.layer_norm_eps, "pre_layrnorm")(x)
        x = _Encoder(c, name="encoder")(x, None)
        return x, layer_norm(c.layer_norm_eps, "post_layernorm")(x[:, 0])


class _VisionEmbeddings(nn.Module):
    config: TowerConfig

    @nn.compact
    def __call__(self, pixels):
        c = self.config
        p = c.patch_size
        patches = nn.Conv(
            c.hidden_size,
            (p, p),
            strides=(p, p),
            padding="VALID",
            use_bias=False,
            name="patch_embedding",
        )(pixels)
        patches = patches.reshape(patches.shape[0], -1, c.hidden_size)  # row-major, as torch
        cls = self.param("class_embedding", nn.initializers.normal(0.02), (c.hidden_size,))
        cls = jnp.broadcast_to(cls.astype(patches.dtype), (patches.shape[0], 1, c.hidden_size))
        x = jnp.concatenate([cls, patches], axis=1)
        positions = (c.image_size // p) ** 2 + 1
        table = nn.Embed(positions, c.hidden_size, name="position_embedding")
        return x + table(jnp.arange(positions)[None])


class CLIP(nn.Module):
    """Either or both towers with their projections, named as transformers' `CLIPModel`.

    `projection_dim` 0 leaves the projections out (a `CLIPTextModel` folder has none).
    """

    text: TowerConfig | None = None
    vision: TowerConfig | None = None
    projection_dim: int = 0

    def setup(self):
        """The towers present in the config, named as in `CLIPModel`."""
        dense = lambda name: nn.Dense(self.projection_dim, use_bias=False, name=name)
        if self.text is not None:
            self.text_model = TextTransformer(self.text)
            if self.projection_dim:
                self.text_projection = dense("text_projection")
        if self.vision is not None:
            self.vision_model = VisionTransformer(self.vision)
            if self.projection_dim:
                self.visual_projection = dense("visual_projection")

    def encode_text(self, input_ids: jax.Array, attention_mask: jax.Array) -> dict:
        """{'last_hidden_state' [B, L, D], 'pooler_output' [B, D] (, 'text_embeds' [B, P])}."""
        states, pooled = self.text_model(input_ids, attention_mask)
        out = {"last_hidden_state": states, "pooler_output": pooled}
        if self.projection_dim:
            out["text_embeds"] = self.text_projection(pooled)
        return out

    def encode_image(self, pixels: jax.Array) -> dict:
        """NHWC normalized pixels -> {'last_hidden_state', 'pooler_output' (, 'image_embeds')}."""
        states, pooled = self.vision_model(pixels)
        out = {"last_hidden_state": states, "pooler_output": pooled}
        if self.projection_dim:
            out["image_embeds"] = self.visual_projection(pooled)
        return out

    def __call__(self, input_ids=None, attention_mask=None, pixels=None) -> dict:
        """Both towers' outputs (used to create every parameter at init)."""
        out = {}
        if self.text is not None:
            out["text"] = self.encode_text(input_ids, attention_mask)
        if self.vision is not None:
            out["vision"] = self.encode_image(pixels)
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class PretrainedCLIP:
    """A CLIP module with its weights: `params` is the frozen tree `apply` takes."""

    module: CLIP
    params: Params
    config: object  # the config it was read from (CLIPConfig, or a transformers one)

    def text_features(self, params: Params, input_ids, attention_mask) -> dict:
        """Pure text forward (jittable): see `CLIP.encode_text`."""
        variables = {"params": params}
        return self.module.apply(variables, input_ids, attention_mask, method=CLIP.encode_text)

    def image_features(self, params: Params, pixels) -> dict:
        """Pure image forward (jittable) on NHWC normalized pixels: see `CLIP.encode_image`."""
        return self.module.apply({"params": params}, pixels, method=CLIP.encode_image)


def init_shapes(module: CLIP) -> Params:
    """The parameter tree of `module` as shapes (no weights computed)."""
    ids = jnp.zeros((1, 1), jnp.int32)
    pixels = None
    if module.vision is not None:
        size = module.vision.image_size
        pixels = jnp.zeros((1, size, size, module.vision.num_channels), jnp.float32)
    init = lambda: module.init(jax.random.PRNGKey(0), ids, ids, pixels)["params"]
    return jax.eval_shape(init)


def clip_module(config, projection: bool = True) -> CLIP:
    """The module for our CLIPConfig, or a transformers CLIPConfig, CLIPTextConfig or
    CLIPVisionConfig."""
    text = getattr(config, "text_config", None)
    vision = getattr(config, "vision_config", None)
    if text is None and vision is None:  # one tower's config
        is_text = getattr(config, "vocab_size", None) is not None
        text, vision = (config, None) if is_text else (None, config)
    return CLIP(
        text=TowerConfig.from_transformers(text) if text is not None else None,
        vision=TowerConfig.from_transformers(vision) if vision is not None else None,
        projection_dim=int(config.projection_dim) if projection else 0,
    )


def load_clip(
    path: str | os.PathLike, text: bool = True, vision: bool = True, projection: bool = True
) -> PretrainedCLIP:
    """The towers asked for, from a CLIP folder (`CLIPModel`, or one tower's) or a hub id.

    A text-only or vision-only folder serves its own tower; `projection` needs the
    projections in the checkpoint (a `CLIPTextModel` folder has none: pass False).
    """
    folder = pretrained.resolve_folder(path)
    config = read_clip_config(folder, text)
    module = clip_module(config, projection)
    if config.text_config is not None and config.vision_config is not None:
        module = module.clone(
            text=module.text if text else None, vision=module.vision if vision else None
        )
    state = pretrained.read_state_dict(folder)
    params = pretrained.state_dict_to_params(state, init_shapes(module))
    return PretrainedCLIP(module, jax.tree_util.tree_map(jnp.asarray, params), config)


def random_clip(config, seed: int = 0) -> PretrainedCLIP:
    """A CLIP with random weights for a config (ours or transformers'; tests, benchmarks)."""
    module = clip_module(config)
    shapes = init_shapes(module)
    leaves, tree = jax.tree_util.tree_flatten(shapes)
    rng = np.random.default_rng(seed)
    params = [jnp.asarray(rng.normal(0, 0.2, s.shape), jnp.float32) for s in leaves]
    return PretrainedCLIP(module, jax.tree_util.tree_unflatten(tree, params), config)
