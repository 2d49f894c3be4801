"""Caption tokenizers for the two text towers, on the Rust `tokenizers` package alone.

- CLIP: byte-level BPE (Radford et al. 2021) from the folder's `vocab.json` + `merges.txt`,
  else the model inside its `tokenizer.json`.
- MiniLM / BERT: WordPiece from the folder's `vocab.txt`, its flags from
  `tokenizer_config.json` (lower case, accents, Chinese characters).

Each pipeline is that of transformers' slow (pure-Python) tokenizer, the one the towers
used before: `CLIPTokenizer` without ftfy (BERT's basic cleaning and spaces around CJK
characters, NFC, lower case with accents kept, CLIP's split pattern, byte-level BPE with
`</w>` word ends) and `BertTokenizer` (cleaning, CJK spacing, lower case character by
character, accents stripped, punctuation split, greedy WordPiece of at most 100 characters
a word). CLIP's lower-casing is Python's `str.lower()` of the whole text, so a capital sigma
ending a word becomes the final sigma `ς`; the Rust normalizer maps each character alone,
and a rule writes that one case in. transformers' fast CLIP tokenizer (and 5.x's
`CLIPTokenizer`, the same) differs from its slow one on CJK text, control and zero-width
characters and that sigma; ours keeps the slow one's ids. `tests/test_tokenization.py` pins
ids and masks against transformers 4.57 and 5.x on 1,200 captions.

Batches come back as int32 `input_ids` and `attention_mask` [B, max_length], truncated
(the end token kept) and padded after the real tokens.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

# CLIP's word split (CLIPTokenizer.pat, after lower-casing): contractions, letter runs,
# single digits, runs of anything else that is not a space.
_CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# Python's str.lower() maps a word-final capital sigma to the final form (Unicode's
# Final_Sigma: a cased letter before it, none after it, case-ignorable marks skipped).
_IGNORABLE = r"[\p{Mn}\p{Me}\p{Cf}\p{Lm}\p{Sk}'.:\u00AD\u2019]*"
_FINAL_SIGMA = rf"(?<=\p{{Cased}}{_IGNORABLE})Σ(?!{_IGNORABLE}\p{{Cased}})"


@dataclasses.dataclass(frozen=True, eq=False)
class CaptionTokenizer:
    """A `tokenizers.Tokenizer` set to pad and truncate to `max_length` tokens."""

    tokenizer: Tokenizer
    max_length: int

    def __call__(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
        """Captions -> {'input_ids', 'attention_mask'} int32 [B, max_length]."""
        # One caption at a time: encode_batch would start tokenizers' thread pool, which
        # competes with XLA for the host's cores and warns in any child process forked
        # later; a caption takes ~0.15 ms either way (docs/BENCHMARKS.md).
        encodings = [self.tokenizer.encode(caption) for caption in captions]
        ids = np.asarray([e.ids for e in encodings], np.int32).reshape(-1, self.max_length)
        mask = np.asarray([e.attention_mask for e in encodings], np.int32)
        return {"input_ids": ids, "attention_mask": mask.reshape(ids.shape)}

    def count(self, caption: str) -> int:
        """The caption's token count before truncation (start and end tokens included)."""
        whole = self.__dict__.get("_untruncated")
        if whole is None:  # a copy: the shared one keeps its truncation (thread safety)
            whole = Tokenizer.from_str(self.tokenizer.to_str())
            whole.no_truncation()
            whole.no_padding()
            object.__setattr__(self, "_untruncated", whole)
        return len(whole.encode(caption).ids)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _token_text(value: Any, default: str) -> str:
    """A special token as written in tokenizer_config.json (a string or an AddedToken dict)."""
    if isinstance(value, dict):
        return str(value.get("content", default))
    return default if value is None else str(value)


def _special_tokens(folder: Path) -> dict[str, Any]:
    """tokenizer_config.json's settings over special_tokens_map.json's."""
    return {
        **_read_json(folder / "special_tokens_map.json"),
        **_read_json(folder / "tokenizer_config.json"),
    }


def _finish(tokenizer: Tokenizer, specials: Sequence[str], pad: str, max_length: int):
    """Special tokens matched whole in text, then truncation and padding to max_length."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in specials if t not in vocab]
    if missing:
        raise ValueError(f"special tokens {missing} are not in the vocabulary")
    tokenizer.add_special_tokens(list(specials))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(length=max_length, pad_id=vocab[pad], pad_token=pad)
    return CaptionTokenizer(tokenizer, max_length)


def clip_tokenizer(folder: str | os.PathLike, max_length: int) -> CaptionTokenizer:
    """CLIP's byte-level BPE from a CLIP folder (vocab.json + merges.txt, or tokenizer.json)."""
    folder = Path(folder)
    config = _special_tokens(folder)
    unk = _token_text(config.get("unk_token"), "<|endoftext|>")
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        model = models.BPE.from_file(
            str(folder / "vocab.json"),
            str(folder / "merges.txt"),
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
            unk_token=unk,
        )
        tokenizer = Tokenizer(model)
    elif (folder / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    else:
        raise FileNotFoundError(f"{folder}: no vocab.json + merges.txt nor tokenizer.json")
    bos = _token_text(config.get("bos_token"), "<|startoftext|>")
    eos = _token_text(config.get("eos_token"), "<|endoftext|>")
    pad = _token_text(config.get("pad_token"), "<|endoftext|>")
    # CLIPTokenizer without ftfy: BERT's basic cleaning and CJK spacing, NFC, then lower case
    # (accents kept) and spaces collapsed (its whitespace_clean).
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.BertNormalizer(
                clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
            ),
            normalizers.NFC(),
            normalizers.Replace(Regex(_FINAL_SIGMA), "ς"),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    vocab = tokenizer.get_vocab()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])]
    )
    return _finish(tokenizer, dict.fromkeys([bos, eos, unk, pad]), pad, max_length)


def bert_tokenizer(folder: str | os.PathLike, max_length: int) -> CaptionTokenizer:
    """BERT's WordPiece from a BERT folder's vocab.txt (MiniLM's) and tokenizer_config.json."""
    folder = Path(folder)
    config = _special_tokens(folder)
    lower = bool(config.get("do_lower_case", True))
    strip_accents = config.get("strip_accents")  # None: follow lower case, as BERT's
    unk = _token_text(config.get("unk_token"), "[UNK]")
    cls = _token_text(config.get("cls_token"), "[CLS]")
    sep = _token_text(config.get("sep_token"), "[SEP]")
    pad = _token_text(config.get("pad_token"), "[PAD]")
    mask = _token_text(config.get("mask_token"), "[MASK]")
    model = models.WordPiece.from_file(
        str(folder / "vocab.txt"), unk_token=unk, max_input_chars_per_word=100
    )
    tokenizer = Tokenizer(model)
    # BasicTokenizer's order: clean + CJK spacing, NFC, lower case, then accents stripped.
    steps = [
        normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
            strip_accents=False,
            lowercase=False,
        ),
        normalizers.NFC(),
    ]
    if lower:
        steps.append(normalizers.Lowercase())  # per character, as the slow tokenizer
    if lower if strip_accents is None else bool(strip_accents):
        steps += [normalizers.NFD(), normalizers.StripAccents()]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    vocab = tokenizer.get_vocab()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])]
    )
    return _finish(tokenizer, dict.fromkeys([pad, unk, cls, sep, mask]), pad, max_length)
