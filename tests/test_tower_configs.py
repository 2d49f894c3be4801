"""Config folders read into our own dataclasses give what transformers' configs give.

`fixtures/configs`: folders saved by transformers 5.25 (`expected.json`: its attribute
values); the live tests save the same configs with the installed transformers (4.57 in the
locked venv) and compare with its own reading of them.
"""

import dataclasses
import json
from pathlib import Path

import pytest

from tgic_jax.model import bert, clip, pretrained

FIXTURES = Path(__file__).parent / "fixtures" / "configs"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def _fields(tower: clip.TowerConfig, like: dict) -> dict:
    return {name: getattr(tower, name) for name in like}


@pytest.mark.parametrize("name", ["clip_default", "clip_small"])
def test_full_clip_folders_saved_by_transformers_5_read_as_it_reads_them(name):
    want = EXPECTED[name]
    for text in (True, False):  # a full folder serves either tower
        config = clip.read_clip_config(FIXTURES / name, text)
        assert _fields(config.text_config, want["text"]) == want["text"]
        assert _fields(config.vision_config, want["vision"]) == want["vision"]
        assert config.projection_dim == want["projection_dim"]


def test_one_tower_clip_folders_saved_by_transformers_5_read_as_it_reads_them():
    text = clip.read_clip_config(FIXTURES / "clip_text", text=True)
    want = EXPECTED["clip_text"]
    assert text.vision_config is None and text.projection_dim == want["projection_dim"]
    assert _fields(text.text_config, want["tower"]) == want["tower"]
    vision = clip.read_clip_config(FIXTURES / "clip_vision", text=False)
    want = EXPECTED["clip_vision"]
    assert vision.text_config is None
    assert _fields(vision.vision_config, want["tower"]) == want["tower"]


def test_bert_folder_saved_by_transformers_5_reads_as_it_reads_it():
    config = bert.BertConfig.from_dict(pretrained.read_config(FIXTURES / "bert_minilm"))
    assert dataclasses.asdict(config) == EXPECTED["bert_minilm"]


def test_defaults_equal_the_installed_transformers_and_its_saved_folders(tmp_path):
    transformers = pytest.importorskip("transformers")
    full = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4),
        vision_config=dict(image_size=64, patch_size=16),
        projection_dim=8,
    )
    full.save_pretrained(str(tmp_path / "clip"))
    ours = clip.read_clip_config(tmp_path / "clip")
    assert ours.text_config == clip.TowerConfig.from_transformers(full.text_config)
    assert ours.vision_config == clip.TowerConfig.from_transformers(full.vision_config)
    assert ours.projection_dim == 8
    default = transformers.CLIPConfig()
    assert clip.clip_config({}, {}) == clip.CLIPConfig(
        clip.TowerConfig.from_transformers(default.text_config),
        clip.TowerConfig.from_transformers(default.vision_config),
        default.projection_dim,
    )
    hf_bert = transformers.BertConfig(hidden_size=48, num_attention_heads=4, layer_norm_eps=1e-7)
    hf_bert.save_pretrained(str(tmp_path / "bert"))
    got = bert.BertConfig.from_dict(pretrained.read_config(tmp_path / "bert"))
    assert got == bert.BertConfig.from_transformers(hf_bert)
    assert bert.BertConfig.from_dict({}) == bert.BertConfig.from_transformers(
        transformers.BertConfig()
    )
