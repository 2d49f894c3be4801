"""The demo report: its sentences come from its own numbers, its figure from real pixels."""

import numpy as np
import pytest
from PIL import Image

from tgic_jax.cli import demo


def _row(variant, bpp, psnr, lpips, jpeg_psnr=24.0, jpeg_lpips=0.45):
    return dict(
        variant=variant, bpp=bpp, psnr=psnr, lpips=lpips, jpeg_psnr=jpeg_psnr, jpeg_lpips=jpeg_lpips
    )


def test_the_verdict_on_jpeg_follows_the_numbers():
    ahead = demo._versus_jpeg([_row("correct", 0.2, 23.8, 0.40)])
    assert "0.20 dB below JPEG" in ahead and "LPIPS 0.050 lower" in ahead and "beats" in ahead
    above = demo._versus_jpeg([_row("correct", 0.2, 24.5, 0.40)])
    assert "0.50 dB above JPEG" in above and "perceptually and in PSNR" in above
    behind = demo._versus_jpeg([_row("correct", 0.2, 21.0, 0.50)])
    assert "3.00 dB below" in behind and "higher (worse)" in behind and "beats" not in behind


def test_the_caption_ablation_states_its_largest_difference():
    rows = [
        _row("correct", 0.2000, 23, 0.40),
        _row("empty", 0.2010, 23, 0.41),
        _row("mismatched", 0.1995, 23, 0.40),
    ]
    text = demo._caption_effect(rows)
    assert "at most 0.0010 bpp" in text and "LPIPS by 0.0100" in text and "nearly inert" in text


def test_the_ablation_table_compares_the_variants_on_the_images_all_of_them_ran_on():
    rows = [
        dict(_row(v, 0.2, 23, 0.4), image=name)
        for v, names in [("correct", "abc"), ("empty", "ab"), ("mismatched", "ab")]
        for name in names
    ]
    assert sorted({r["image"] for r in demo.ablation_rows(rows)}) == ["a", "b"]
    assert len(demo.ablation_rows(rows)) == 6


def test_side_by_side_puts_the_centre_crops_next_to_each_other(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.random((300, 400, 3), np.float32) for _ in range(3)]
    path = demo._side_by_side(
        tmp_path / "s.png", [("a", images[0]), ("b", images[1]), ("c", images[2])], crop=128
    )
    sheet = np.asarray(Image.open(path))
    assert sheet.shape == (128 + 22, 3 * 128 + 2 * 6, 3)
    second = sheet[22:, 134 : 134 + 128]  # the second panel, below its label strip
    expected = np.round(images[1][86:214, 136:264] * 255).astype(np.uint8)
    np.testing.assert_array_equal(second, expected)


def test_the_report_facts_come_from_the_config_that_trained():
    import jax

    from configs.small import get_config
    from tgic_jax.model.taco import TACO, ModelConfig, init_variables

    config = get_config("tiny")
    config.input.max_images = 7
    facts = demo.run_facts(config.to_dict(), 42)
    assert (facts["N"], facts["M"], facts["train_images"], facts["steps"]) == (16, 24, 7, 42)
    assert (facts["crop"], facts["batch"]) == (
        config.input.crop_size,
        config.input.batch_size_per_device,
    )
    assert facts["loss"] == "bpp + lambda*255^2*MSE" and not facts["clip_term"]  # k_p = k_j = 0
    model = TACO(ModelConfig.from_config(config.model))
    params = init_variables(model, jax.random.key(0))["params"]
    assert facts["parameters"] == sum(a.size for a in jax.tree_util.tree_leaves(params))
    assert facts["paper_parameters"] == demo.parameter_count(ModelConfig().to_dict())
    assert facts["paper_parameters"] > facts["parameters"]


def test_the_report_says_plainly_when_a_run_differs_from_the_readme_and_why():
    e = demo.EXPECTED
    same = {"bpp": e["bpp"] + 0.001, "psnr": e["psnr"] - 0.04, "lpips": e["lpips"] + 0.004}
    facts = {
        "steps": e["steps"],
        "batch": e["batch"],
        "crop": e["crop"],
        "learning_rate": e["learning_rate"],
        "budget_minutes": 0.0,
    }
    text = demo.against_expected(same, facts, e["jax"])
    assert "repeats them within round-off" in text and "differs" not in text
    moved = {**same, "psnr": e["psnr"] - 0.3}
    text = demo.against_expected(moved, facts, e["jax"])
    assert "**This run differs by more than round-off** (PSNR " in text
    assert "another CPU" in text and "budget" not in text
    text = demo.against_expected(moved, {**facts, "steps": 700, "budget_minutes": 9.0}, "0.11.2")
    assert "9-minute budget (--minutes)" in text
    assert f"700 steps of batch {e['batch']} at {e['crop']} x {e['crop']}, learning rate" in text
    assert "another stack (jax 0.11.2)" in text and "another CPU" not in text
    text = demo.against_expected(moved, {**facts, "learning_rate": 3e-3}, e["jax"])
    assert "learning rate 0.003, not" in text and "another CPU" not in text


def test_the_readme_numbers_are_those_of_the_schedule_the_demo_trains(repo_root):
    # A change of configs/small.py's schedule must come with new numbers in the README and
    # in demo.EXPECTED (the report compares a run with them).
    from configs.small import get_config
    from tgic_jax.train import optim

    config = get_config()
    batch = optim.global_batch_size(config, 1)
    e = demo.EXPECTED
    assert (e["steps"], e["batch"], e["crop"], e["learning_rate"]) == (
        optim.total_steps(config, batch),
        batch,
        config.input.crop_size,
        config.optim.learning_rate,
    )
    readme = (repo_root / "README.md").read_text()
    assert f"**{e['bpp']:.4f} bpp, {e['psnr']:.2f} dB, LPIPS {e['lpips']:.4f}**" in readme
    assert f"{e['jpeg_bpp']:.4f} bpp, {e['jpeg_psnr']:.2f} dB, LPIPS {e['jpeg_lpips']:.4f}" in (
        readme.replace("\n", " ")
    )


def test_the_held_out_means_are_those_of_the_given_captions_only():
    keys = ("bpp", "psnr", "lpips", "jpeg_bpp", "jpeg_psnr", "jpeg_lpips")
    given = [(0.2, 23.0, 0.4, 0.21, 23.5, 0.5), (0.4, 25.0, 0.2, 0.39, 24.5, 0.3)]
    rows = [dict(variant="correct", **dict(zip(keys, values, strict=True))) for values in given]
    rows.append(dict(variant="empty", bpp=9.0, psnr=0.0, lpips=9.0))
    m = demo.held_out_means(rows)
    assert m == pytest.approx(
        dict(bpp=0.3, psnr=24.0, lpips=0.3, jpeg_bpp=0.3, jpeg_psnr=24.0, jpeg_lpips=0.4)
    )
