"""Our Flax CLIP and BERT towers against transformers' PyTorch ones (tests/fixtures/towers).

The fixtures come from tools/make_tower_fixtures.py (torch, seeded); the tiny checkpoints
are read by our torch-free loader, the real MiniLM from the user's cache (skipped if absent).
"""

import re
from pathlib import Path

import jax
import numpy as np
import pytest

from tgic_jax import minilm_fetch
from tgic_jax.model import bert, clip, pretrained, text_encoders

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "towers"
TOL = 1e-5  # max abs, float32


def _max_abs(got, want):
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)))


@pytest.fixture(scope="module")
def tiny_clip():
    return clip.load_clip(FIXTURES / "tiny_clip"), dict(np.load(FIXTURES / "tiny_clip.npz"))


def test_clip_text_tower_matches_pytorch_last_hidden_state_and_text_embeds(tiny_clip):
    model, want = tiny_clip
    out = jax.jit(model.text_features)(model.params, want["input_ids"], want["attention_mask"])
    assert _max_abs(out["last_hidden_state"], want["last_hidden_state"]) < TOL
    # Rows pool at their first eos (positions 15, 8, 1), never at a padding eos after it.
    assert _max_abs(out["text_embeds"], want["text_embeds"]) < TOL


def test_clip_vision_tower_matches_pytorch_image_embeds(tiny_clip):
    model, want = tiny_clip
    out = jax.jit(model.image_features)(model.params, want["pixels_nhwc"])
    assert _max_abs(out["image_embeds"], want["image_embeds"]) < TOL


def test_clip_text_tower_alone_reads_a_full_clip_folder(tiny_clip):
    """config.text.path may name a whole CLIP folder: the text tower takes its part."""
    _, want = tiny_clip
    text_only = clip.load_clip(FIXTURES / "tiny_clip", vision=False, projection=False)
    assert set(text_only.params) == {"text_model"}
    out = text_only.text_features(text_only.params, want["input_ids"], want["attention_mask"])
    assert set(out) == {"last_hidden_state", "pooler_output"}
    assert _max_abs(out["last_hidden_state"], want["last_hidden_state"]) < TOL


def test_bert_tower_reads_pytorch_model_bin_without_torch_and_matches(tmp_path):
    want = dict(np.load(FIXTURES / "tiny_bert.npz"))
    module, params = bert.load_bert(FIXTURES / "tiny_bert")
    got = module.apply({"params": params}, want["input_ids"], want["attention_mask"])
    assert _max_abs(got, want["last_hidden_state"]) < TOL


def test_torch_zip_reader_refuses_code_in_the_pickle(tmp_path):
    import pickle
    import zipfile

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with zipfile.ZipFile(tmp_path / "pytorch_model.bin", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        pretrained.read_torch_zip(tmp_path / "pytorch_model.bin")


def test_missing_weight_names_the_torch_key(tmp_path):
    from safetensors.numpy import save_file

    state = pretrained.read_state_dict(FIXTURES / "tiny_clip")
    del state["text_model.final_layer_norm.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((FIXTURES / "tiny_clip" / "config.json").read_text())
    with pytest.raises(pretrained.CheckpointError, match="text_model.final_layer_norm.weight"):
        clip.load_clip(tmp_path)


def test_params_round_trip_to_torch_names(tiny_clip):
    model, _ = tiny_clip
    state = pretrained.params_to_state_dict(model.params)
    assert "vision_model.pre_layrnorm.weight" in state
    assert state["text_model.encoder.layers.1.mlp.fc1.weight"].shape == (37, 32)  # [out, in]
    back = pretrained.state_dict_to_params(state, clip.init_shapes(model.module))
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, model.params)


def test_real_minilm_matches_pytorch_states():
    want = dict(np.load(FIXTURES / "minilm.npz"))
    folder = minilm_fetch.cache_root() / "minilm"  # never downloads: skips when absent
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"no MiniLM folder at {folder} (tools/fetch_minilm.py)")
    encoder = text_encoders.load_minilm(str(folder))
    tokens = encoder.tokenize([str(c) for c in want["captions"]])
    np.testing.assert_array_equal(tokens["input_ids"], want["input_ids"])
    np.testing.assert_array_equal(tokens["attention_mask"], want["attention_mask"])
    states, _ = encoder.encode([str(c) for c in want["captions"]])
    assert _max_abs(states, want["last_hidden_state"]) < TOL


def test_no_flax_class_of_transformers_is_used():
    """transformers 5 removed its Flax classes: the package only takes tokenizers and configs."""
    package = Path(__file__).resolve().parents[1] / "tgic_jax"
    pattern = re.compile(r"\bFlax[A-Z]\w*(Model|PreTrainedModel)\b")
    hits = [p for p in package.rglob("*.py") if pattern.search(p.read_text())]
    assert not hits, hits
