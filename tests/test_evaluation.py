"""The evaluate driver: real bpp from files on disk, outputs, failures, caption ablation."""

import argparse
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tgic_jax import image_io
from tgic_jax.cli import evaluate as cli_evaluate
from tgic_jax.evaluation import driver, metrics, sets


class FakeCodec:
    """A lossy stand-in for TACO: quantizes to `levels` grey levels and zlib-packs them.

    The empty caption costs quality (half the levels) so caption variants are distinguishable.
    """

    def __init__(self, label, levels):
        self.label, self.levels = label, levels
        self.encoded_captions = []

    def _levels(self, caption):
        return self.levels if caption else max(2, self.levels // 2)

    def encode(self, image, caption):
        self.encoded_captions.append(caption)
        n = self._levels(caption)
        q = np.round(np.clip(image, 0, 1) * (n - 1)).astype(np.uint8)
        h, w = image.shape[:2]
        return struct.pack("<HHH", h, w, n) + zlib.compress(q.tobytes(), 9)

    def decode(self, data):
        h, w, n = struct.unpack("<HHH", data[:6])
        q = np.frombuffer(zlib.decompress(data[6:]), np.uint8).reshape(h, w, 3)
        return q.astype(np.float32) / (n - 1)

    def estimate(self, image, caption):
        x_hat = self.decode(self.encode(image, caption))
        # Unclamped float output: overshoots [0, 1] like a real decoder can.
        return {"x_hat_float": x_hat * 1.02 - 0.01, "bpp_estimated": 0.5 * self.levels / 8}


def fake_lpips(a, b, input_range="minus_one_one"):
    scale = 2.0 if input_range == "minus_one_one" else 1.0
    return float(np.mean(np.abs(a - b)) * scale)


def _write_images(folder, n=3, size=(40, 56), seed=0):
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        yy, xx = np.mgrid[: size[0], : size[1]]
        base = np.stack([np.sin(xx / (3 + i)), np.cos(yy / 5), (xx + yy) / sum(size)], -1)
        img = np.clip(0.5 + 0.4 * base + 0.05 * rng.standard_normal(base.shape), 0, 1)
        name = f"img{i}.png"
        Image.fromarray(image_io.to_uint8(img)).save(folder / name)
        names.append(name)
    return names


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    names = _write_images(folder)
    captions = {n: f"caption of {n}" for n in names}
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    return folder, tmp_path / "captions.json", names


def _options(**kw):
    base = dict(jpeg_qualities=(10, 40, 70, 95), progress=False, warmup=True)
    base.update(kw)
    return driver.EvalOptions(**base)


def test_real_bpp_is_eight_times_file_bytes_over_pixels_and_outputs_are_written(
    image_folder, tmp_path
):
    folder, captions, names = image_folder
    out = tmp_path / "out"
    codecs = [FakeCodec("low", 4), FakeCodec("mid", 16), FakeCodec("high", 64)]
    summary = driver.evaluate(
        codecs, sets.folder_set(folder, captions), out, _options(), lpips_fn=fake_lpips
    )
    rows = json.loads((out / "per_image.json").read_text())["rows"]
    assert len(rows) == 3 * len(names)
    for row in rows:
        size = (out / row["bitstream"]).stat().st_size
        assert row["bytes"] == size
        assert row["bpp"] == pytest.approx(8 * size / (row["height"] * row["width"]), rel=1e-12)
        # The PNG on disk is the 8-bit reconstruction the PSNR was computed on.
        recon = np.asarray(Image.open(out / row["recon"]), np.float32) / 255.0
        original = np.asarray(Image.open(folder / row["image"]), np.float32) / 255.0
        assert metrics.psnr(original, recon) == pytest.approx(row["psnr"], abs=1e-9)
        assert row["psnr_float"] != pytest.approx(row["psnr"], abs=1e-3)  # unclamped differs
        assert row["lpips_zero_one"] == pytest.approx(row["lpips"] / 2)
        assert row["caption"] == f"caption of {row['image']}"
    csv_lines = (out / "per_image.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + len(rows) and csv_lines[0].startswith("checkpoint,variant")
    for metric in ("psnr", "ms_ssim", "lpips"):
        for ext in ("png", "svg"):
            assert (out / f"rd_{metric}.{ext}").stat().st_size > 1000
    # Higher rate point, higher quality: the table is a real RD curve.
    table = sorted(summary["table"], key=lambda t: t["bpp"])
    assert [t["checkpoint"] for t in table] == ["low", "mid", "high"]
    assert table[0]["psnr"] < table[1]["psnr"] < table[2]["psnr"]
    assert summary["failures"] == []


def test_summary_states_bd_rate_against_the_jpeg_curve_in_the_plot(image_folder, tmp_path):
    folder, captions, _ = image_folder
    out = tmp_path / "out"
    codecs = [FakeCodec(f"q{n}", n) for n in (4, 8, 16, 32)]
    summary = driver.evaluate(
        codecs, sets.folder_set(folder, captions), out, _options(), lpips_fn=fake_lpips
    )
    assert len(summary["jpeg"]) == 4 and all(p["bpp"] > 0 for p in summary["jpeg"])
    jpeg_csv = (out / "jpeg.csv").read_text().splitlines()
    assert len(jpeg_csv) == 1 + 4 * 3
    # The JPEG bpp is its real file size too.
    jpg = out / "jpeg" / "q40" / "img0.jpg"
    row = next(
        r
        for r in summary_rows(out / "jpeg.csv")
        if r["image"] == "img0.png" and r["quality"] == "40"
    )
    assert float(row["bpp"]) == pytest.approx(8 * jpg.stat().st_size / (40 * 56))
    key = "TACO-JAX (correct caption) vs JPEG"
    assert key in summary["bd"]
    md = (out / "summary.md").read_text()
    assert key in md and "BD-rate" in md
    assert "JPEG (Pillow" in (out / "rd_psnr.svg").read_text()
    bd = summary["bd"][key]["psnr"]
    if bd["bd_rate_percent"] is not None:  # defined when the PSNR ranges overlap
        assert f"{bd['bd_rate_percent']:.2f}" in md
    else:
        assert bd["note"] in md


def summary_rows(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def _args(**kw):
    parser = argparse.ArgumentParser()
    cli_evaluate.add_cli_arguments(parser)
    argv = ["--checkpoint", "ckptA", "--out", str(kw.pop("out")), "--no-lpips", "--no-progress"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}"] + ([str(v)] if v is not True else [])
    return parser.parse_args(argv)


def test_unreadable_image_and_missing_caption_are_listed_and_the_others_finish(
    image_folder, tmp_path
):
    folder, captions, names = image_folder
    (folder / "broken.png").write_bytes(b"not a png at all")
    _write_images(folder, n=1, seed=5)  # overwrites img0? no: write under a new name below
    Image.open(folder / "img0.png").save(folder / "zz_uncaptioned.png")
    args = _args(out=tmp_path / "out", images=folder, captions=captions, jpeg_qualities=50)
    code = cli_evaluate.run_from_args(args, codec_loader=lambda c: FakeCodec(c, 16))
    assert code == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    by_image = {f["image"]: f for f in summary["failures"]}
    assert by_image["broken.png"]["stage"] == "load"
    assert "broken.png" in by_image["broken.png"]["error"]
    assert by_image["zz_uncaptioned.png"]["stage"] == "caption"
    rows = json.loads((tmp_path / "out" / "per_image.json").read_text())["rows"]
    coded = {r["image"]: r for r in rows}
    assert set(coded) == set(names) | {"zz_uncaptioned.png"}
    assert coded["zz_uncaptioned.png"]["caption"] == ""
    assert "empty caption" in coded["zz_uncaptioned.png"]["caption_note"]
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "broken.png" in md and "zz_uncaptioned.png" in md


def test_malformed_captions_json_gives_a_clear_message_and_the_run_finishes(image_folder, tmp_path):
    folder, _, names = image_folder
    bad = tmp_path / "bad.json"
    bad.write_text('{"img0.png": "a caption",,}')
    args = _args(out=tmp_path / "out", images=folder, captions=bad, jpeg_qualities=50)
    assert cli_evaluate.run_from_args(args, codec_loader=lambda c: FakeCodec(c, 16)) == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    (failure,) = [f for f in summary["failures"] if f["stage"] == "captions"]
    assert "bad.json is not valid JSON (line 1" in failure["error"]
    rows = json.loads((tmp_path / "out" / "per_image.json").read_text())["rows"]
    assert sorted(r["image"] for r in rows) == names
    assert all(r["caption"] == "" and "unreadable" in r["caption_note"] for r in rows)


def test_a_checkpoint_that_cannot_load_is_reported_and_others_run(image_folder, tmp_path):
    folder, captions, _ = image_folder
    parser = argparse.ArgumentParser()
    cli_evaluate.add_cli_arguments(parser)
    args = parser.parse_args(
        [
            "--checkpoint",
            "good",
            "missing",
            "--out",
            str(tmp_path / "o"),
            "--images",
            str(folder),
            "--captions",
            str(captions),
            "--no-lpips",
            "--no-progress",
            "--jpeg-qualities",
        ]
    )

    def loader(c):
        if c == "missing":
            raise FileNotFoundError("missing: not a tgic_jax inference checkpoint")
        return FakeCodec(c, 8)

    assert cli_evaluate.run_from_args(args, codec_loader=loader) == 1
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["failures"][0]["checkpoint"] == "missing"
    assert [t["checkpoint"] for t in summary["table"]] == ["good"]
    assert summary["jpeg"] == []


def test_caption_ablation_codes_correct_empty_and_shifted_captions_side_by_side(
    image_folder, tmp_path
):
    folder, captions, names = image_folder
    codec = FakeCodec("taco", 16)
    summary = driver.evaluate(
        [codec],
        sets.folder_set(folder, captions),
        tmp_path / "out",
        _options(variants=driver.VARIANTS, jpeg_qualities=()),
        lpips_fn=fake_lpips,
    )
    rows = json.loads((tmp_path / "out" / "per_image.json").read_text())["rows"]
    got = {(r["variant"], r["image"]): r["caption"] for r in rows}
    for i, name in enumerate(names):
        assert got[("correct", name)] == f"caption of {name}"
        assert got[("empty", name)] == ""
        assert got[("mismatched", name)] == f"caption of {names[(i + 1) % len(names)]}"
    ablation = {a["variant"]: a for a in summary["ablation"]}
    assert set(ablation) == {"empty", "mismatched"}
    assert ablation["empty"]["psnr_change_db"] < -1.0  # the fake codec degrades without text
    assert ablation["mismatched"]["psnr_change_db"] == pytest.approx(0.0, abs=1e-9)
    assert (tmp_path / "out" / "recon" / "taco" / "mismatched" / "img1.png").is_file()


def test_best_of_captions_is_an_oracle_choice_by_lpips_and_labelled(tmp_path):
    folder = tmp_path / "im"
    folder.mkdir()
    _write_images(folder, n=2)
    caps = {"img0.png": ["", "long caption"], "img1.png": ["only one"]}
    (tmp_path / "c.json").write_text(json.dumps(caps))
    eval_set = sets.folder_set(folder, tmp_path / "c.json")
    eval_set.caption_mode = "best_lpips"
    summary = driver.evaluate(
        [FakeCodec("t", 16)],
        eval_set,
        tmp_path / "out",
        _options(jpeg_qualities=()),
        lpips_fn=fake_lpips,
    )
    rows = {
        r["image"]: r for r in json.loads((tmp_path / "out" / "per_image.json").read_text())["rows"]
    }
    assert rows["img0.png"]["caption"] == "long caption"  # the non-empty one codes better
    assert "oracle" in rows["img0.png"]["caption_note"]
    assert "ORACLE" in (tmp_path / "out" / "summary.md").read_text()
    assert summary["caption_mode"] == "best_lpips"


def test_real_lpips_is_zero_for_identical_images_and_depends_on_input_range():
    lpips = driver.make_lpips_fn()
    rng = np.random.default_rng(0)
    a = rng.random((64, 64, 3)).astype(np.float32)
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    assert lpips(a, a) == pytest.approx(0.0, abs=1e-6)
    correct, authors = lpips(a, b, "minus_one_one"), lpips(a, b, "zero_one")
    assert correct > 0.01 and authors > 0
    assert abs(correct - authors) > 1e-3


class _HashText:
    """Deterministic caption -> token states, standing in for MiniLM/CLIP (no weights)."""

    def __init__(self, width, length=8):
        self.width, self.length = width, length

    def encode(self, captions):
        out = []
        for c in captions:
            seed = zlib.crc32(c.encode("utf-8"))
            out.append(np.random.default_rng(seed).standard_normal((self.length, self.width)))
        return np.asarray(out, np.float32), np.ones((len(captions), self.length), np.int32)


@pytest.mark.slow  # compiles a (tiny) TACO for 768x512 on CPU: ~1-2 minutes on 2 cores
def test_kodak_with_a_real_checkpoint_writes_everything_and_bpp_is_the_file_size(
    kodak_dir, tmp_path
):
    import jax

    from tgic_jax.checkpoints import inference
    from tgic_jax.model.taco import TACO, ModelConfig, init_variables

    cfg = ModelConfig(N=16, M=24, slices=(2, 2, 4, 4, 12), text_dim=16, heads=4)
    model = TACO(cfg)
    params = init_variables(model, jax.random.PRNGKey(0))["params"]
    ckpt = inference.save_inference(
        tmp_path / "tiny_ckpt", cfg, params, text_config={"encoder": "test-hash"}
    )
    codec = driver.TacoCodec(ckpt, text_encoder=_HashText(16))
    out = tmp_path / "out"
    summary = driver.evaluate(
        [codec],
        sets.kodak_set(kodak_dir, max_images=1),
        out,
        _options(jpeg_qualities=(10, 50), variants=("correct", "empty")),
    )
    assert summary["failures"] == []
    rows = json.loads((out / "per_image.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["correct", "empty"]
    for row in rows:
        size = (out / row["bitstream"]).stat().st_size
        assert (row["height"], row["width"]) == (512, 768)
        assert row["bpp"] == pytest.approx(8 * size / (512 * 768), rel=1e-12)
        assert row["bpp_estimated"] > 0 and np.isfinite(row["lpips"])
        assert (out / row["recon"]).is_file()
    assert rows[0]["caption"].startswith("a brick building")
    for name in ("summary.md", "summary.json", "per_image.csv", "rd_psnr.png", "rd_psnr.svg"):
        assert (out / name).is_file()
    assert "ELIC" in (out / "summary.md").read_text()


def test_single_rate_point_gets_rate_at_equal_quality_instead_of_bd_rate():
    from tgic_jax.evaluation.summary import rate_saving_at_equal_quality

    jpeg = [{"bpp": 0.5, "psnr": 30.0}, {"bpp": 1.0, "psnr": 34.0}]
    # Halfway in PSNR is the geometric mean in rate (log-rate interpolation): sqrt(0.5).
    point = {"bpp": 0.5 * 2**0.5 * 0.8, "psnr": 32.0}
    assert rate_saving_at_equal_quality(point, jpeg, "psnr") == pytest.approx(-20.0)
    assert rate_saving_at_equal_quality({"bpp": 1, "psnr": 40}, jpeg, "psnr") is None


def test_evaluate_checkpoints_runs_the_loadable_ones_and_lists_the_others_first(
    image_folder, tmp_path
):
    folder, captions, names = image_folder

    def loader(c):
        if c == "broken":
            raise FileNotFoundError("broken: not a tgic_jax inference checkpoint")
        return FakeCodec(c, 8)

    out = tmp_path / "o"
    summary = driver.evaluate_checkpoints(
        ["a", "broken", "b"],
        sets.folder_set(folder, captions),
        out,
        _options(jpeg_qualities=(), lpips=False),
        codec_loader=loader,
    )
    assert [t["checkpoint"] for t in summary["table"]] == ["a", "b"]
    assert summary["failures"][0] == {
        "image": "",
        "checkpoint": "broken",
        "variant": "",
        "stage": "load checkpoint",
        "error": "FileNotFoundError: broken: not a tgic_jax inference checkpoint",
    }
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["failures"][0]["checkpoint"] == "broken"
    assert "broken" in (out / "summary.md").read_text()
    with pytest.raises(ValueError, match="none of the checkpoints could be loaded"):
        driver.evaluate_checkpoints(
            ["broken"], sets.folder_set(folder, captions), out, codec_loader=loader
        )


def test_evaluate_means_averages_real_bytes_and_raises_instead_of_dropping_a_metric(image_folder):
    folder, captions, names = image_folder
    eval_set = sets.folder_set(folder, captions)
    codec = FakeCodec("m", 16)
    ev = driver.evaluate_means(codec, eval_set, fake_lpips, keep_images=2)
    per_image = []
    for item in eval_set:
        x = driver.load_item_image(item)[0]
        data = codec.encode(x, item.caption)
        per_image.append((8.0 * len(data) / (x.shape[0] * x.shape[1]), x, codec.decode(data)))
    assert ev["bpp_real"] == pytest.approx(np.mean([b for b, _, _ in per_image]), rel=1e-12)
    assert ev["psnr_real"] == pytest.approx(
        np.mean([metrics.psnr(x, y) for _, x, y in per_image]), rel=1e-12
    )
    assert ev["bpp_estimate"] == pytest.approx(1.0)  # FakeCodec: 0.5 * 16 / 8
    assert ev["lpips"] == pytest.approx(2 * ev["lpips_zero_one"])
    assert [im.shape for im in ev.pop("images")] == [(40, 112, 3)] * 2
    assert set(ev) == {
        "bpp_estimate",
        "bpp_real",
        "psnr",
        "psnr_real",
        "ms_ssim",
        "lpips",
        "lpips_zero_one",
    }
    (folder / "img1.png").write_bytes(b"not a png")  # one image fails: no partial mean
    with pytest.raises(ValueError, match="img1.png"):
        driver.evaluate_means(codec, sets.folder_set(folder, captions))


def test_a_mean_over_fewer_images_than_n_says_over_how_many():
    # Measured: the model's LPIPS was averaged over fewer images than the `n` shown.
    from tgic_jax.evaluation import summary as summary_lib

    def row(name, lpips):
        values = dict.fromkeys(summary_lib.MEAN_KEYS, 1.0)
        return {
            "checkpoint": "a",
            "variant": "correct",
            "caption": "c",
            "image": name,
            **values,
            "lpips": lpips,
        }

    rows = [row("x", 0.2), row("y", float("nan")), row("z", 0.4)]
    s = summary_lib.summarize(sets.EvalSet("set", []), rows, [], ["a"], ["correct"], [])
    (t,) = s["table"]
    assert t["n"] == 3 and t["n_by_metric"] == {"lpips": 2}
    np.testing.assert_allclose(t["lpips"], 0.3)
    md = summary_lib.summary_markdown(s)
    assert "0.3000 (n=2)" in md and "lpips over 2 of 3 images" in md


def test_a_metric_computed_for_no_image_is_not_averaged_over_zero():
    from tgic_jax.evaluation import summary as summary_lib

    rows = [
        {
            "checkpoint": "a",
            "variant": "correct",
            "caption": "c",
            "image": name,
            **dict.fromkeys(summary_lib.MEAN_KEYS, 1.0),
            "lpips_zero_one": float("nan"),
        }
        for name in "xy"
    ]
    s = summary_lib.summarize(sets.EvalSet("set", []), rows, [], ["a"], ["correct"], [])
    assert s["table"][0]["n_by_metric"] == {}
    assert "over 0 of" not in summary_lib.summary_markdown(s)


def test_the_caption_ablation_compares_each_variant_on_its_own_images():
    # The ablation may run on fewer images (EvalOptions.ablation_images): the correct
    # caption's mean over all of them would compare two different sets.
    from tgic_jax.evaluation import summary as summary_lib

    def row(variant, name, bpp, psnr):
        values = dict.fromkeys(summary_lib.MEAN_KEYS, 0.5)
        return {
            "checkpoint": "a",
            "variant": variant,
            "caption": "c",
            "image": name,
            **values,
            "bpp": bpp,
            "psnr": psnr,
        }

    rows = [
        row("correct", "x", 0.2, 30.0),
        row("correct", "y", 0.6, 20.0),
        row("empty", "x", 0.22, 29.0),
    ]
    s = summary_lib.summarize(sets.EvalSet("set", []), rows, [], ["a"], ["correct", "empty"], [])
    (a,) = s["ablation"]
    assert a["n"] == 1
    np.testing.assert_allclose([a["bpp_change_percent"], a["psnr_change_db"]], [10.0, -1.0])


def test_evaluate_refuses_an_earlier_evaluation_without_force_and_never_mixes_with_it(
    image_folder, tmp_path, capsys
):
    # Measured: `--out U` replaced the user's U/summary.md and left the earlier evaluation's
    # files beside the new ones; `tgic evaluate` had no --force.
    folder, captions, _ = image_folder
    out = tmp_path / "out"
    loader = lambda c: FakeCodec(c, 16)
    argv = dict(out=out, images=folder, captions=captions, jpeg_qualities=50)
    assert cli_evaluate.run_from_args(_args(**argv), codec_loader=loader) == 0
    (out / "NOTES.md").write_text("my notes")
    (out / "recon" / "earlier_model").mkdir(parents=True)  # an earlier evaluation's label
    (out / "rd_earlier.png").write_bytes(b"an earlier plot")
    summary = (out / "summary.md").read_text()
    capsys.readouterr()
    assert cli_evaluate.run_from_args(_args(**argv), codec_loader=loader) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tgic evaluate: error: {out}: holds an evaluation's files (") and (
        "use --force" in err and err.count("\n") == 1
    ), err
    assert (out / "summary.md").read_text() == summary and (out / "rd_earlier.png").exists()
    assert cli_evaluate.run_from_args(_args(**argv, force=True), codec_loader=loader) == 0
    assert f"replacing the evaluation in {out} (" in capsys.readouterr().out
    assert (out / "NOTES.md").read_text() == "my notes"  # the user's file is kept
    assert not (out / "rd_earlier.png").exists() and not (out / "recon" / "earlier_model").exists()
    assert sorted(p.name for p in (out / "recon").iterdir()) == ["ckptA"]


def _eval_py(*argv):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo), JAX_PLATFORMS="cpu")
    cmd = [
        sys.executable,
        str(repo / "eval.py"),
        "--config",
        f"{repo}/configs/small.py:tiny",
        *map(str, argv),
    ]
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)


def test_eval_py_on_a_missing_workdir_or_over_an_earlier_export_is_one_line_and_writes_nothing(
    tmp_path,
):
    # Measured: a missing workdir gave a 27-line traceback; DIR/inference/NOTES.md was deleted.
    proc = _eval_py("--workdir", tmp_path / "nope")
    assert (
        proc.returncode == 2
        and proc.stderr.startswith("eval.py: error: ")
        and (proc.stderr.count("\n") == 1 and "not a training workdir" in proc.stderr)
    ), proc.stderr
    assert not (tmp_path / "nope").exists()
    workdir = tmp_path / "run"
    (workdir / "inference").mkdir(parents=True)
    (workdir / "config.json").write_text("{}")
    (workdir / "inference" / "config.json").write_text(
        json.dumps({"format": "tgic_jax-inference-v1"})
    )
    (workdir / "inference" / "NOTES.md").write_text("my notes")
    proc = _eval_py("--workdir", workdir)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "an inference checkpoint exists there (use --force" in proc.stderr
    assert sorted(p.name for p in workdir.rglob("*")) == [
        "NOTES.md",
        "config.json",
        "config.json",
        "inference",
    ]


def _captioned_folder_with_a_gap(folder):
    """a.png, b.png (no caption), c.png, d.png and their captions.json."""
    folder.mkdir()
    for k, name in enumerate("abcd"):
        Image.fromarray(np.full((64, 64, 3), 60 * k, np.uint8)).save(folder / f"{name}.png")
    captions = {"a.png": "a red boat", "c.png": "a lake", "d.png": "a dog"}
    (folder / "captions.json").write_text(json.dumps(captions))


def test_per_epoch_selection_lists_config_eval_by_evaluations_rule(tmp_path):
    from configs.small import get_config
    from tgic_jax.train import input_pipeline, selection

    _captioned_folder_with_a_gap(tmp_path / "set")
    eval_config = get_config("tiny").eval
    eval_config.update(folder=str(tmp_path / "set"), captions="", max_images=3)
    listed = selection.eval_set_of(eval_config)
    # max_images first, then the uncaptioned image is coded with "" (not dropped for d.png).
    assert [(i.name, i.caption) for i in listed] == [
        ("a.png", "a red boat"),
        ("b.png", ""),
        ("c.png", "a lake"),
    ]
    assert listed.errors == [] and listed.items[1].caption_note == sets.NOTE_MISSING
    # Training's own input leaves b.png out (an example needs a caption).
    train = input_pipeline.list_folder(tmp_path / "set", None, 3)
    assert [p.name for p, _ in train] == ["a.png", "c.png", "d.png"]


@pytest.mark.slow  # eval.py codes with a tiny TACO: one compile (~1 min on 2 cores)
def test_eval_py_codes_the_images_per_epoch_selection_lists_for_one_config_eval(tmp_path):
    import jax

    from configs.small import get_config
    from tgic_jax.checkpoints import inference
    from tgic_jax.model.taco import TACO, ModelConfig, init_variables
    from tgic_jax.train import selection

    _captioned_folder_with_a_gap(tmp_path / "set")
    config = get_config("tiny")
    config.eval.update(folder=str(tmp_path / "set"), captions="", max_images=3)
    model_config = ModelConfig.from_config(config.model)
    params = init_variables(TACO(model_config), jax.random.key(0))["params"]
    text = {"encoder": "random", "width": model_config.text_dim, "max_length": 8}
    ckpt = inference.save_inference(tmp_path / "ckpt", model_config, params, text_config=text)
    out = tmp_path / "out"
    eval_config = [f"--config.eval.folder={tmp_path / 'set'}", "--config.eval.max_images=3"]
    proc = _eval_py(
        "--workdir", tmp_path, "--checkpoint", ckpt, "--out", out, "--nolpips", *eval_config
    )
    assert proc.returncode == 1, proc.stderr  # b.png's missing caption is listed as a failure
    rows = json.loads((out / "per_image.json").read_text())["rows"]
    listed = selection.eval_set_of(config.eval)
    assert [(r["image"], r["caption"]) for r in rows] == [(i.name, i.caption) for i in listed]
