"""Coding with a caption: caption -> the model's text encoder -> text states -> `Coder`.

`Coder` (coding/codec.py) codes an image with given text states [T, D]. `CaptionCoder`
puts the text encoder in front of it, the one the checkpoint was trained with, and is the
one caption-aware coder of `tgic compress` and of evaluation (`evaluation/driver.py`, the
training loop's per-epoch evaluation). `checkpoints.inference.load_caption_coder` builds
one from an inference checkpoint.
"""

from __future__ import annotations

import collections
import os

import numpy as np

from tgic_jax.coding.codec import MAX_PIXELS, Coder, EncodeResult
from tgic_jax.model.taco import TACO

# Captions whose text states are kept: the evaluation's ablation codes an image with its
# own caption, "" and the next image's, so a few suffice; a folder of 10,000 captions
# would otherwise keep 10,000 x [77, 512] floats (1.5 GB).
_KEPT_CAPTIONS = 16


class CaptionCoder:
    """A `Coder` and its text encoder: `compress`/`encode`, `decode`, `estimate` by caption.

    The text encoder is given, or built from `text_config` (a checkpoint's config.text)
    when first needed, so decoding, or coding given text states, never loads a text tower.
    """

    def __init__(
        self,
        model: TACO,
        variables,
        text_encoder=None,
        text_config=None,
        program_dir: str | os.PathLike | None = None,
        label: str = "model",
    ):
        self.coder = Coder(model, variables, program_dir)
        self.label = label
        self.config = None  # the checkpoint's config, when loaded from one
        self._text_encoder = text_encoder
        self._text_config = text_config
        self._states: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()

    @property
    def text_encoder(self):
        """The text encoder (ValueError when none is given and the config names none)."""
        if self._text_encoder is None:
            text = self._text_config or {}  # the checkpoint's text section, as saved
            if "encoder" not in text or not text["encoder"]:
                raise ValueError("the checkpoint names no text encoder: pass --text-embeddings")
            from tgic_jax.model.text_encoders import build_text_encoder

            self._text_encoder = build_text_encoder(self._text_config)
        return self._text_encoder

    # -------------------------------------------------------------------- text
    def prepare_text(self, caption: str) -> None:
        """Runs the text encoder for `caption` (the driver times it as text_ms)."""
        states, _ = self.text_encoder.encode([caption])
        self._states[caption] = np.asarray(states[0], np.float32)
        self._states.move_to_end(caption)
        while len(self._states) > _KEPT_CAPTIONS:
            self._states.popitem(last=False)

    def text_states(self, caption: str) -> np.ndarray:
        """Token states [T, D] float32 of one caption (the last few are kept)."""
        if caption not in self._states:
            self.prepare_text(caption)
        return self._states[caption]

    def caption_notes(self, caption: str) -> list[str]:
        """What the text encoder does to `caption` that a user should know (truncation)."""
        count = getattr(getattr(self.text_encoder, "tokenizer", None), "count", None)
        if count is None:  # not a real tower's tokenizer (model/tokenization.py)
            return []
        n = count(caption)
        if n <= self.text_encoder.max_length:
            return []
        return [
            f"caption truncated: {n} tokens, the text encoder reads the first "
            f"{self.text_encoder.max_length}"
        ]

    # -------------------------------------------------------------------- coding
    def compress(
        self, image: np.ndarray, caption: str | None = None, text: np.ndarray | None = None
    ) -> EncodeResult:
        """The file of `image` [H, W, 3] coded with `caption` (or given text states [T, D])."""
        if text is None:
            text = self.text_states(caption)
        return self.coder.encode([image], [text])[0]

    def encode(self, image: np.ndarray, caption: str) -> bytes:
        """The file's bytes of `image` coded with `caption`."""
        return self.compress(image, caption).data

    def decode(self, data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        """The image float32 [H, W, 3] in [0, 1] of a file (no caption needed)."""
        return np.clip(self.coder.decode(data, max_pixels)[0], 0.0, 1.0).astype(np.float32)

    def estimate(self, image: np.ndarray, caption: str) -> dict:
        """{'x_hat_float': unclamped float output, 'bpp_estimated'} from the forward pass."""
        out = self.coder.estimate(image, self.text_states(caption))
        return {
            "x_hat_float": np.asarray(out["x_hat_float"], np.float32),
            "bpp_estimated": float(out["bpp_estimated"]),
        }
