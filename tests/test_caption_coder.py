"""The one caption-aware coder (`coding/caption_coder.py`) of `tgic compress` and evaluation."""

import jax
import numpy as np
import pytest

from tgic_jax.coding.caption_coder import CaptionCoder
from tgic_jax.model.taco import TACO, ModelConfig, init_variables
from tgic_jax.model.text_encoders import RandomTextEncoder

TINY = ModelConfig(N=16, M=24, slices=(2, 2, 4, 4, 12), text_dim=16, heads=4)


@pytest.fixture(scope="module")
def tiny():
    model = TACO(TINY)
    return model, init_variables(model, jax.random.key(0))


class _CountingEncoder(RandomTextEncoder):
    """A random text encoder that counts its calls and tokenizes one token per word."""

    def __init__(self):
        super().__init__(TINY.text_dim, 4)
        self.calls = 0
        self.tokenizer = type("Words", (), {"count": staticmethod(lambda c: len(c.split()) + 2)})

    def encode(self, captions):
        self.calls += 1
        return super().encode(captions)


def test_a_checkpoint_naming_no_text_encoder_fails_only_when_a_caption_is_coded(tiny):
    coder = CaptionCoder(*tiny, text_config={"encoder": ""})  # decoding needs no text
    with pytest.raises(ValueError, match="names no text encoder: pass --text-embeddings"):
        coder.text_states("a red boat")


def test_text_states_are_the_encoders_and_the_last_captions_are_not_encoded_twice(tiny):
    encoder = _CountingEncoder()
    coder = CaptionCoder(*tiny, text_encoder=encoder)
    states = coder.text_states("a red boat")
    np.testing.assert_array_equal(states, RandomTextEncoder(16, 4).encode(["a red boat"])[0][0])
    assert states.dtype == np.float32 and states.shape == (4, TINY.text_dim)
    coder.text_states("")
    coder.text_states("a red boat")  # the ablation's pattern: own, empty, own again
    assert encoder.calls == 2
    for k in range(40):  # a folder of many captions keeps only the last few
        coder.text_states(f"caption {k}")
    assert len(coder._states) <= 16 and "caption 39" in coder._states


def test_a_caption_longer_than_the_text_encoder_reads_is_noted(tiny):
    coder = CaptionCoder(*tiny, text_encoder=_CountingEncoder())
    assert coder.caption_notes("a boat") == []  # 4 tokens with start and end
    assert coder.caption_notes("a red boat on a lake") == [
        "caption truncated: 8 tokens, the text encoder reads the first 4"
    ]
