"""The BERT encoder (Devlin et al. 2019; transformers' `BertModel`) that MiniLM-L6 uses.

    input_ids [B, L] -> word + position + token-type embeddings -> LayerNorm
        -> N x post-LN block: LN(x + attn(x)), LN(h + W2 gelu(W1 h)) = last_hidden_state

Our MiniLM path conditions on `last_hidden_state` (no pooling), one sentence per caption
(token types 0, positions 0..L-1). Module names are the PyTorch ones (`attention/self/query`,
`LayerNorm`), so `pretrained.state_dict_to_params` reads a checkpoint folder by rule.
"""

from __future__ import annotations

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp

from tgic_jax.model import pretrained
from tgic_jax.model.clip import activation
from tgic_jax.model.layers import Params


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The fields of a transformers BertConfig that the forward reads."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_transformers(cls, config) -> BertConfig:
        """From a transformers BertConfig (any version)."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def from_dict(cls, fields: dict) -> BertConfig:
        """From a folder's config.json fields; absent ones take transformers' BertConfig
        defaults (the same in 4.57 and 5.x), as its from_pretrained does."""
        merged = {**BERT_DEFAULTS, **{k: v for k, v in fields.items() if v is not None}}
        return cls(**{f.name: merged[f.name] for f in dataclasses.fields(cls)})


# transformers' BertConfig defaults (the same in 4.57 and 5.x).
BERT_DEFAULTS = pretrained.TRANSFORMERS_DEFAULTS["bert"]


def _layer_norm(config: BertConfig) -> nn.LayerNorm:
    # torch's variance, mean((x - mean)^2); the name is BERT's.
    return nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False, name="LayerNorm")


class _Embeddings(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids):
        c = self.config
        positions = jnp.arange(input_ids.shape[1])[None]
        x = nn.Embed(c.vocab_size, c.hidden_size, name="word_embeddings")(input_ids)
        x = x + nn.Embed(c.max_position_embeddings, c.hidden_size, name="position_embeddings")(
            positions
        )
        types = nn.Embed(c.type_vocab_size, c.hidden_size, name="token_type_embeddings")
        x = x + types(jnp.zeros_like(input_ids))
        return _layer_norm(c)(x)


class _SelfAttention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, mask):
        heads = self.config.num_attention_heads
        split = lambda t: t.reshape(t.shape[:2] + (heads, -1))
        q, k, v = (split(nn.Dense(x.shape[-1], name=n)(x)) for n in ("query", "key", "value"))
        return nn.dot_product_attention(q, k, v, mask=mask).reshape(x.shape)


class _Output(nn.Module):
    """Dense + residual + LayerNorm (BERT's `BertSelfOutput` and `BertOutput`)."""

    config: BertConfig

    @nn.compact
    def __call__(self, h, residual):
        return _layer_norm(self.config)(nn.Dense(residual.shape[-1], name="dense")(h) + residual)


class _Attention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, mask):
        h = _SelfAttention(self.config, name="self")(x, mask)
        return _Output(self.config, name="output")(h, x)


class _Intermediate(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        return activation(c.hidden_act)(nn.Dense(c.intermediate_size, name="dense")(x))


class _Layer(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, mask):
        x = _Attention(self.config, name="attention")(x, mask)
        h = _Intermediate(self.config, name="intermediate")(x)
        return _Output(self.config, name="output")(h, x)


class _Encoder(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, mask):
        for i in range(self.config.num_hidden_layers):
            x = _Layer(self.config, name=f"layer_{i}")(x, mask)
        return x


class Bert(nn.Module):
    """(input_ids, attention_mask) [B, L] -> last_hidden_state [B, L, D]."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Embeddings, then the post-LN blocks with padding keys masked out."""
        x = _Embeddings(self.config, name="embeddings")(input_ids)
        mask = attention_mask[:, None, None, :] > 0  # padding keys are not attended to
        return _Encoder(self.config, name="encoder")(x, mask)


def init_shapes(module: Bert) -> Params:
    """The parameter tree of `module` as shapes (no weights computed)."""
    ids = jnp.zeros((1, 1), jnp.int32)
    return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), ids, ids)["params"])


def load_bert(path: str | os.PathLike) -> tuple[Bert, Params]:
    """(module, params) from a BERT folder (MiniLM's, or any `BertModel`'s) or a hub id."""
    folder = pretrained.resolve_folder(path)
    module = Bert(BertConfig.from_dict(pretrained.read_config(folder)))
    state = pretrained.read_state_dict(folder)
    params = pretrained.state_dict_to_params(state, init_shapes(module), prefixes=("", "bert."))
    return module, jax.tree_util.tree_map(jnp.asarray, params)
