"""Per-epoch evaluation: real and estimated rates, eval.csv, best-by-metric checkpoints."""

import json

import jax
import ml_collections
import numpy as np
import pytest

from tgic_jax.train import metrics_writer, optim, selection, train_state, trainer


def test_evaluation_reports_estimated_and_real_bitstream_rates(tmp_path, kodak_dir):
    from PIL import Image

    from configs.small import get_config
    from tgic_jax.model.taco import TACO, ModelConfig
    from tgic_jax.train import input_pipeline

    Image.open(kodak_dir / "kodim01.png").crop((0, 0, 96, 64)).save(tmp_path / "a.png")
    (tmp_path / "captions.json").write_text(json.dumps({"a.png": "a brick building"}))
    config = get_config("tiny")
    model = TACO(ModelConfig.from_config(config.model))
    optimizer = optim.make_optimizer(config.optim)
    state = jax.jit(lambda: train_state.create_train_state(model, optimizer, 0))()
    encoder = input_pipeline.build_text_encoder(config.text, config.model.text_dim)
    eval_config = ml_collections.ConfigDict(dict(folder=str(tmp_path), captions="", max_images=1))
    eval_set = selection.eval_set_of(eval_config)
    out = selection.evaluate_params(model, state.params, encoder, eval_set)
    assert set(out) == {"bpp_estimate", "bpp_real", "psnr", "psnr_real", "ms_ssim"}
    assert 0 < out["ms_ssim"] <= 1
    assert out["bpp_real"] > 0.1 and out["bpp_estimate"] > 0.1  # 96x64: header bytes count
    assert np.isfinite(out["psnr"]) and np.isfinite(out["psnr_real"])


def test_evaluation_rows_go_to_the_csv_and_each_best_keeps_its_own_params(tmp_path, monkeypatch):
    import flax

    from configs.small import get_config
    from tgic_jax.checkpoints import inference
    from tgic_jax.model.taco import TACO, ModelConfig, init_variables

    config = get_config("tiny")
    model = TACO(ModelConfig.from_config(config.model))
    flat = flax.traverse_util.flatten_dict(init_variables(model, jax.random.key(0))["params"])
    marker = next(k for k in sorted(flat) if k[0] == "g_s")  # no effect on the coding tables
    # ... nor this one, but on the integer entropy path: each step's calibration differs.
    shifted = next(k for k in sorted(flat) if k[0] == "h_s" and k[-1] == "bias")
    evals = [  # step, psnr_real, ms_ssim, bpp_real, lpips
        (10, 20.0, 0.90, 0.50, 0.30),
        (20, 21.0, 0.89, 0.60, 0.25),
        (30, 20.5, 0.95, 0.40, 0.35),
    ]
    calibrations, calibrate = [], inference.integer_entropy_of

    def counted(*args, **kw):
        calibrations.append(args[1])
        return calibrate(*args, **kw)

    monkeypatch.setattr(inference, "integer_entropy_of", counted)
    for step, psnr, ssim, bpp, lp in evals:
        scalars = dict(
            psnr_real=psnr,
            ms_ssim=ssim,
            bpp_real=bpp,
            lpips=lp,
            lpips_zero_one=0.1,
            psnr=psnr + 0.1,
            bpp_estimate=bpp - 0.01,
        )
        params = {**flat, marker: np.full_like(flat[marker], step)}
        params[shifted] = flat[shifted] + np.float32(1e-2 * step)
        params = flax.traverse_util.unflatten_dict(params)
        selection.record_evaluation(tmp_path, config, step, step // 10, scalars, params)
    rows = (tmp_path / "eval.csv").read_text().splitlines()
    assert rows[0].split(",") == list(selection.EVAL_COLUMNS) and len(rows) == 4
    # 4 + 2 + 2 bests set, one calibration of the integer entropy path per evaluation.
    assert len(calibrations) == 3
    best = selection.read_best(tmp_path)
    assert {k: v["step"] for k, v in best.items()} == {
        "best_psnr": 20,
        "best_lpips": 20,
        "best_ms_ssim": 30,
        "best_bpp": 30,
    }
    kept, info = selection.load_best_params(tmp_path, "best_psnr")
    assert (flax.traverse_util.flatten_dict(kept)[marker] == 20.0).all()
    assert info["psnr_real"] == 21.0
    # Each best is an inference checkpoint: the codec loads it as it is.
    _, variables, loaded = inference.load_inference(tmp_path / selection.BEST_DIR / "best_bpp")
    assert loaded.extra.train_step == 30 and "tables" in variables
    # ... with the integer entropy path of its own params (calibrated once per evaluation).
    stored = {}
    for name, evaluation in (("best_psnr", 1), ("best_bpp", 2)):
        _, v, _ = inference.load_inference(tmp_path / selection.BEST_DIR / name)
        stored[name] = flax.traverse_util.flatten_dict(v["integer_entropy"])
        own = flax.traverse_util.flatten_dict(calibrate(model, calibrations[evaluation]))
        assert stored[name].keys() == own.keys()
        for key, value in own.items():
            np.testing.assert_array_equal(stored[name][key], value, err_msg=f"{name} {key}")
    assert any((stored["best_psnr"][k] != stored["best_bpp"][k]).any() for k in stored["best_bpp"])
    with pytest.raises(ValueError, match="unknown selection"):
        selection.load_best_params(tmp_path, "best_loss")


@pytest.mark.slow
def test_per_epoch_evaluation_writes_its_csv_keeps_best_checkpoints_and_export_selects_one(
    tmp_path, kodak_dir
):
    from PIL import Image

    from configs.small import get_config
    from tgic_jax.checkpoints import inference
    from tgic_jax.cli import main as cli

    evalset = tmp_path / "kodak_crop"
    evalset.mkdir()
    Image.open(kodak_dir / "kodim23.png").crop((0, 0, 64, 64)).save(evalset / "k.png")
    (evalset / "captions.json").write_text(json.dumps({"k.png": "two parrots"}))
    config = get_config("tiny")
    config.optim.train_images = 4  # 2 steps an epoch at batch 2
    config.optim.epochs = 2
    config.ckpt.every_steps = 100
    config.eval.update(folder=str(evalset), captions="", every_epochs=1, images_to_log=1)
    workdir = tmp_path / "run"
    trainer.train_and_evaluate(config, workdir)
    rows = (workdir / "eval.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["2", "1"], ["4", "2"]]
    best = selection.read_best(workdir)
    assert set(best) == set(selection.BEST_BY)
    assert all(np.isfinite(v["lpips"]) and np.isfinite(v["lpips_zero_one"]) for v in best.values())
    assert any(p.name.startswith("events") for p in (workdir / "tensorboard").iterdir())
    out = tmp_path / "exported"
    assert (
        cli.main(["export", "--workdir", str(workdir), "--out", str(out), "--select", "best_psnr"])
        == 0
    )
    _, variables, loaded = inference.load_inference(out)
    kept, info = selection.load_best_params(workdir, "best_psnr")
    assert loaded.extra.train_step == info["step"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables["params"], kept)


def test_a_failing_evaluation_is_reported_on_stderr_and_writes_no_csv_row(tmp_path, capsys, caplog):
    from configs.small import get_config
    from tgic_jax.model.taco import TACO, ModelConfig, init_variables
    from tgic_jax.model.text_encoders import RandomTextEncoder

    folder = tmp_path / "evalset"
    folder.mkdir()
    (folder / "k.png").write_bytes(b"not a png")  # captioned but unreadable
    (folder / "captions.json").write_text(json.dumps({"k.png": "two parrots"}))
    config = get_config("tiny")
    model = TACO(ModelConfig.from_config(config.model))
    params = init_variables(model, jax.random.key(0))["params"]
    config.eval.update(folder=str(folder), captions="", max_images=0)
    writer = metrics_writer.MetricWriter(tmp_path / "tb", enabled=False)
    with caplog.at_level("ERROR"):
        selection.evaluate_and_record(
            model, params, RandomTextEncoder(16), config, None, writer, tmp_path, step=6, epoch=3
        )
    err = capsys.readouterr().err
    assert "[eval] step 6 FAILED, no eval.csv row: ImageError" in err and "k.png" in err
    assert any("evaluation at step 6 failed" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / selection.EVAL_CSV).exists() and selection.read_best(tmp_path) == {}
