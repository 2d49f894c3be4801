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
from tgic_jax.checkpoints.authors import (
    BUFFERS,
    ConversionError,
    flax_path,
    from_official_state_dict,
    load_state_dict_file,
)
from tgic_jax.model.taco import TACO, ModelConfig, init_variables


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
    assert model.config == ModelConfig()
    params = flatten_dict(variables["params"])
    trainable = {k for k, (_, _, kind) in layout.items() if kind == "param"}
    assert {k for k in layout if k in BUFFERS} == {k for k, v in layout.items() if v[2] == "buffer"}
    assert len(params) == len(trainable) == 429
    assert sum(a.size for a in params.values()) == 38_579_275
    # the model built from configs/taco.py has exactly that tree
    cfg = ModelConfig.from_config(taco_config.get_config().model)
    shapes = flatten_dict(
        jax.eval_shape(lambda: init_variables(TACO(cfg), jax.random.PRNGKey(0)))["params"]
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
    cfg = model.config
    assert (cfg.N, cfg.M, cfg.slices, cfg.text_dim) == (
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
    from tgic_jax.checkpoints.inference import load_inference

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


# ------------------------------------------------------------------------- the way back
def _assert_valid_cdfs(cdf: np.ndarray, lengths: np.ndarray) -> None:
    """Each row: 0, strictly increasing to 65536 at lengths[i] - 1, zeros after."""
    for row, n in zip(cdf, lengths, strict=True):
        assert row[0] == 0 and row[n - 1] == 65536, (row[:3], row[n - 1])
        assert np.all(np.diff(row[:n]) > 0)
        assert not row[n:].any()


def test_pmf_to_quantized_cdf_rounds_half_away_rescales_and_steals_like_compressai():
    from tgic_jax.checkpoints.compressai_buffers import pmf_to_quantized_cdf

    # 2.5 counts round up to 3 (C's round, not numpy's to-even), 65533.5 to 65534; the
    # total 65537 rescales them by integer division to 2 and 65532; the last entry is 2^16.
    p = np.array([2.5 / 65536, 1 - 2.5 / 65536], np.float32)
    assert float(p[1]) * 65536 == 65533.5
    np.testing.assert_array_equal(pmf_to_quantized_cdf(p), [0, 2, 65536])
    # Zero-width bins take one count each from the widest-but-narrowest donor, bin 0.
    np.testing.assert_array_equal(pmf_to_quantized_cdf([0.0, 1.0, 0.0]), [0, 1, 65535, 65536])
    np.testing.assert_array_equal(
        pmf_to_quantized_cdf([1.0, 0.0, 0.0, 0.0]), [0, 65533, 65534, 65535, 65536]
    )
    with pytest.raises(ValueError, match="non-negative"):
        pmf_to_quantized_cdf([0.5, -0.1])
    with pytest.raises(ValueError, match="non-zero"):
        pmf_to_quantized_cdf([0.0, 0.0])


@pytest.fixture(scope="module")
def round_trip(parity_dir):
    from tgic_jax.checkpoints.authors import to_official_state_dict

    sd = load_state_dict_file(parity_dir / "official_state_dict.npz")
    return sd, to_official_state_dict(*from_official_state_dict(sd))


def test_round_trip_gives_every_key_of_the_authors_state_dict_with_their_shapes(round_trip):
    sd, out = round_trip
    assert list(out) == list(sd)  # their state_dict() order, too
    for k, a in sd.items():
        assert (out[k].shape, out[k].dtype) == (a.shape, a.dtype), k


def test_round_trip_returns_the_parameters_bit_for_bit(round_trip):
    sd, out = round_trip
    for k in sd:
        if k not in BUFFERS:
            np.testing.assert_array_equal(out[k], sd[k], err_msg=k)


def test_recomputed_coder_buffers_equal_those_their_update_wrote(round_trip):
    sd, out = round_trip
    for model in ("entropy_bottleneck", "gaussian_conditional"):
        for buf in ("_offset", "_cdf_length"):
            np.testing.assert_array_equal(out[f"{model}.{buf}"], sd[f"{model}.{buf}"])
        cdf = out[f"{model}._quantized_cdf"]
        diff = np.abs(cdf.astype(np.int64) - sd[f"{model}._quantized_cdf"])
        assert diff.max() <= 1, model  # float32 rounding may decide one count
        assert (diff > 0).mean() < 1e-3, (model, int((diff > 0).sum()))
        _assert_valid_cdfs(cdf, out[f"{model}._cdf_length"])
    floats = [k for k in BUFFERS if sd[k].dtype == np.float32]
    assert len(floats) == 6
    for k in floats:
        np.testing.assert_allclose(out[k], sd[k], rtol=0, atol=1e-6, err_msg=k)


def test_bottleneck_buffers_follow_the_quantiles_not_the_initial_ones(round_trip):
    from tgic_jax.checkpoints.compressai_buffers import entropy_bottleneck_buffers

    sd, _ = round_trip
    eb = {
        k.removeprefix("entropy_bottleneck."): v
        for k, v in sd.items()
        if k.startswith("entropy_bottleneck.") and k not in BUFFERS
    }
    eb["quantiles"] = eb["quantiles"] + np.float32(3.25)  # every table moves by 3.25
    moved = entropy_bottleneck_buffers(eb)
    np.testing.assert_array_equal(
        moved["entropy_bottleneck._offset"], sd["entropy_bottleneck._offset"]
    )
    assert not np.array_equal(
        moved["entropy_bottleneck._quantized_cdf"], sd["entropy_bottleneck._quantized_cdf"]
    )
    _assert_valid_cdfs(
        moved["entropy_bottleneck._quantized_cdf"], moved["entropy_bottleneck._cdf_length"]
    )
    wide = dict(eb, quantiles=eb["quantiles"] * np.float32([2, 1, 2]))
    widened = entropy_bottleneck_buffers(wide)["entropy_bottleneck._cdf_length"]
    assert np.all(widened > sd["entropy_bottleneck._cdf_length"])


def _perturbed_tiny_model(seed: int = 3):
    """The codec tests' tiny model, bottleneck density moved away from its init."""
    from helpers import TINY, random_variables

    model = TACO(TINY)
    variables = random_variables(model, seed)
    rng = np.random.default_rng(seed)
    eb = variables["params"]["entropy_bottleneck"]
    for name in list(eb):
        if name != "quantiles":
            eb[name] = (eb[name] + rng.normal(0, 0.2, eb[name].shape)).astype(np.float32)
    return model, variables


def _tgic(args, timeout=600):
    r = subprocess.run(
        [sys.executable, "-m", "tgic_jax.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.mark.slow
def test_export_authors_then_convert_gives_identical_parameters_and_tgic_files(tmp_path):
    from helpers import synthetic_image, text_states

    from tgic_jax.checkpoints import inference
    from tgic_jax.checkpoints.authors import to_official_state_dict
    from tgic_jax.cli.export import export_authors
    from tgic_jax.coding import codec
    from tgic_jax.train import checkpoint as ckpt_lib

    model, variables = _perturbed_tiny_model()
    inference.save_inference(tmp_path / "ours", model.config, variables["params"])
    _tgic(
        [
            "export",
            "--format",
            "authors",
            "--workdir",
            tmp_path / "ours",
            "--out",
            tmp_path / "theirs.npz",
        ]
    )
    _tgic(["convert", tmp_path / "theirs.npz", tmp_path / "back"])
    _, v1, _ = inference.load_inference(tmp_path / "ours")
    _, v2, _ = inference.load_inference(tmp_path / "back")
    flat1, flat2 = flatten_dict(v1["params"]), flatten_dict(v2["params"])
    assert set(flat1) == set(flat2)
    for k in flat1:
        np.testing.assert_array_equal(flat1[k], flat2[k], err_msg=str(k))
    image, text = synthetic_image(40, 56), text_states()
    ours, back = (codec.Coder(model, v).encode([image], [text])[0].data for v in (v1, v2))
    assert ours == back

    sd = load_state_dict_file(tmp_path / "theirs.npz")
    _assert_valid_cdfs(
        sd["entropy_bottleneck._quantized_cdf"], sd["entropy_bottleneck._cdf_length"]
    )
    # From a training workdir (orbax train state + config.json), as .safetensors.
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.json").write_text(json.dumps({"model": model.config.to_dict()}))
    manager = ckpt_lib.train_checkpoint_manager(work, use_async=False)
    ckpt_lib.save_train_state(manager, 7, {"params": variables["params"], "step": 7}, force=True)
    manager.close()
    out = export_authors(work, tmp_path / "theirs.safetensors")
    sd2 = load_state_dict_file(out)
    assert set(sd2) == set(to_official_state_dict(model, variables))  # safetensors sorts keys
    for k in sd:
        np.testing.assert_array_equal(sd2[k], sd[k], err_msg=k)


def test_pth_tar_export_holds_the_state_dict_torch_load_reads(tmp_path):
    torch = pytest.importorskip("torch")
    from tgic_jax.checkpoints.authors import save_state_dict_file

    sd = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b._offset": np.int32([-3])}
    path = save_state_dict_file(sd, tmp_path / "m.pth.tar")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    assert list(obj) == ["state_dict"]
    assert obj["state_dict"]["b._offset"].dtype == torch.int32
    back = load_state_dict_file(path)
    for k, a in sd.items():
        np.testing.assert_array_equal(back[k], a)
        assert back[k].dtype == a.dtype


def test_pth_tar_export_without_torch_names_the_torch_free_formats(tmp_path, monkeypatch):
    from tgic_jax.checkpoints.authors import save_state_dict_file

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ConversionError, match=r"needs torch.*\.npz / \.safetensors"):
        save_state_dict_file({"a": np.zeros(1, np.float32)}, tmp_path / "m.pth.tar")
    with pytest.raises(ValueError, match="unknown format"):
        save_state_dict_file({"a": np.zeros(1, np.float32)}, tmp_path / "m.bin")
    assert not list(tmp_path.iterdir())


def test_variables_of_another_model_are_refused_naming_the_first_differences():
    from tgic_jax.checkpoints.authors import to_official_state_dict

    model, variables = _perturbed_tiny_model()
    bigger = TACO(ModelConfig(N=16, M=24, slices=(4, 4, 4, 12), text_dim=16))
    with pytest.raises(ConversionError, match=r"unexpected 20: channel_context_4/") as e:
        to_official_state_dict(bigger, variables)
    assert "mis-shaped 49: channel_context_1/fushion_0/kernel (5, 5, 2, 224)" in str(e.value)


def test_export_refuses_a_head_count_the_authors_code_cannot_run(tmp_path):
    from tgic_jax.cli.export import export_authors
    from tgic_jax.train import checkpoint as ckpt_lib

    model, variables = _perturbed_tiny_model()
    work = tmp_path / "work"
    work.mkdir()
    cfg = ModelConfig(N=16, M=24, slices=model.config.slices, text_dim=16, heads=4)
    (work / "config.json").write_text(json.dumps({"model": cfg.to_dict()}))
    manager = ckpt_lib.train_checkpoint_manager(work, use_async=False)
    ckpt_lib.save_train_state(manager, 1, {"params": variables["params"]}, force=True)
    manager.close()
    with pytest.raises(ConversionError, match="4 attention heads.*hard-codes 8"):
        export_authors(work, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        export_authors(tmp_path / "nowhere", tmp_path / "m.npz")
