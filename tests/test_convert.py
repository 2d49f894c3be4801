"""Conversion of the authors' state_dict, and parity with their model's outputs."""

import json
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from configs import taco as taco_config
from tgic_jax.convert import (
    BUFFERS,
    ConversionError,
    flax_path,
    from_official_state_dict,
    load_state_dict_file,
)
from tgic_jax.model import TACO, ModelConfig, init_variables


def _official_layout(repo_root):
    rows = (
        (repo_root / "tgic_jax" / "assets" / "taco_official_state_dict.tsv")
        .read_text()
        .splitlines()
    )
    out = {}
    for row in rows[1:]:
        key, shape, dtype, kind = row.split("\t")
        out[key] = (tuple(int(s) for s in re.findall(r"\d+", shape)), dtype, kind)
    return out


def test_zero_state_dict_with_official_shapes_converts_to_the_paper_model(repo_root):
    layout = _official_layout(repo_root)
    sd = {
        k: np.zeros(shape, np.float32 if d == "float32" else np.int32)
        for k, (shape, d, _) in layout.items()
    }
    model, variables = from_official_state_dict(sd)
    assert (
        ModelConfig(N=model.N, M=model.M, slices=model.slices, text_dim=model.text_dim)
        == ModelConfig()
    )
    params = flatten_dict(variables["params"])
    trainable = {k for k, (_, _, kind) in layout.items() if kind == "param"}
    assert {k for k in layout if k in BUFFERS} == {k for k, v in layout.items() if v[2] == "buffer"}
    assert len(params) == len(trainable) == 429
    assert sum(a.size for a in params.values()) == 38_579_275
    # the model built from configs/taco.py has exactly that tree
    cfg = ModelConfig.from_config(taco_config.get_config().model)
    shapes = flatten_dict(
        jax.eval_shape(lambda: init_variables(TACO.from_config(cfg), jax.random.PRNGKey(0)))[
            "params"
        ]
    )
    assert set(shapes) == set(params)
    assert sum(int(np.prod(s.shape)) for s in shapes.values()) == 38_579_275
    assert all(shapes[k].shape == params[k].shape for k in shapes)


def test_torch_keys_map_mechanically_to_flax_paths():
    assert flax_path("g_a.analysis_transform.17.conv_b.0.conv.2.weight") == (
        "g_a",
        "analysis_transform_17",
        "conv_b_0",
        "conv_2",
        "weight",
    )
    assert flax_path("entropy_bottleneck.matrices.3") == ("entropy_bottleneck", "matrices_3")


def test_missing_unexpected_and_misshaped_keys_raise_naming_them(parity_dir):
    sd = load_state_dict_file(parity_dir / "official_state_dict.npz")
    bad = dict(sd)
    del bad["h_a.reduction.2.bias"]
    bad["g_s.extra.weight"] = np.zeros(3, np.float32)
    bad["local_context.1.bias"] = np.zeros(7, np.float32)
    with pytest.raises(ConversionError) as e:
        from_official_state_dict(bad)
    msg = str(e.value)
    assert (
        "h_a.reduction_2.bias" in msg
        and "g_s.extra.weight" in msg
        and "local_context.1.bias" in msg
    )
    with pytest.raises(ConversionError, match="not a TACO"):
        from_official_state_dict({"foo": np.zeros(1)})


@pytest.fixture(scope="module")
def parity(parity_dir):
    sd = load_state_dict_file(parity_dir / "official_state_dict.npz")
    model, variables = from_official_state_dict(sd)
    io = dict(np.load(parity_dir / "io.npz"))
    meta = json.loads((parity_dir / "meta.json").read_text())
    x = io["x"].transpose(0, 2, 3, 1)
    with jax.default_matmul_precision("float32"):
        out = jax.jit(model.apply)(variables, x, io["text"])
    return model, variables, io, meta, jax.tree_util.tree_map(np.asarray, out)


def _nchw(a):
    return np.asarray(a).transpose(0, 3, 1, 2)


def test_converted_model_reproduces_the_authors_latents_and_reconstruction(parity):
    model, _, io, meta, out = parity
    assert (model.N, model.M, tuple(model.slices), model.text_dim) == (
        meta["N"],
        meta["M"],
        tuple(meta["slice_ch"]),
        meta["text_dim"],
    )
    np.testing.assert_allclose(_nchw(out["y"]), io["y"], atol=1e-4)
    np.testing.assert_allclose(_nchw(out["z"]), io["z"], atol=1e-4)
    diff = np.abs(_nchw(out["x_hat"]) - io["x_hat"])
    if diff.max() > 1e-4:  # a latent on an exact .5 rounding boundary may flip
        psnr = -10 * np.log10(np.mean(diff**2))
        assert psnr >= 60, psnr
    np.testing.assert_allclose(_nchw(out["likelihoods"]["y"]), io["y_likelihoods"], atol=1e-4)
    np.testing.assert_allclose(_nchw(out["likelihoods"]["z"]), io["z_likelihoods"], atol=1e-4)


def test_estimated_bpp_matches_the_authors_within_a_tenth_of_a_percent(parity):
    _, _, io, meta, out = parity
    h, w = io["x"].shape[2:]
    for b, expected in enumerate(meta["bpp_estimated_from_likelihoods"]):
        bits = -sum(np.log2(out["likelihoods"][k][b].astype(np.float64)).sum() for k in ("y", "z"))
        assert abs(bits / (h * w) / expected - 1) < 1e-3


def test_parameter_count_matches_the_fixture(parity):
    _, variables, _, meta, _ = parity
    n = sum(a.size for a in jax.tree_util.tree_leaves(variables["params"]))
    assert n == meta["trainable_parameters"]


def test_convert_cli_writes_a_checkpoint_that_reproduces_the_model(parity, parity_dir, tmp_path):
    model, variables, io, _, out = parity
    dest = tmp_path / "ckpt"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tgic_jax.cli",
            "convert",
            str(parity_dir / "official_state_dict.npz"),
            str(dest),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "4,026,289" in r.stdout  # the parameter summary
    from tgic_jax.checkpoint import load_inference

    model2, variables2, config = load_inference(dest)
    assert model2 == model
    assert config.model.slices == [4, 4, 8, 8, 16]
    for a, b in zip(
        jax.tree_util.tree_leaves(variables["params"]),
        jax.tree_util.tree_leaves(variables2["params"]),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert "tables" in variables2
    r = subprocess.run(
        [sys.executable, "-m", "tgic_jax.cli", "convert", str(tmp_path / "nope.npz"), str(dest)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0 and "nope.npz" in r.stderr
