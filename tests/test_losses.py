"""Tests for tgic_jax.train.losses: rate, distortion, LPIPS-Alex, joint CLIP term, the total."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import tower_sizes

from tgic_jax.evaluation import lpips
from tgic_jax.train import losses

REPO = Path(__file__).resolve().parents[1]


def _kodak_image(name):
    for folder in (REPO / "data" / "kodak", REPO.parent / "shared" / "data" / "kodak"):
        if (folder / name).is_file():
            from PIL import Image

            return np.asarray(Image.open(folder / name).convert("RGB"), np.float32) / 255.0
    pytest.skip(f"Kodak {name} not found")


def _loss_config(**overrides):
    config = dict(
        lmbda=0.0004,
        k_p=3.5,
        k_j=0.0025,
        lpips_input_range="minus_one_one",
        clip_path="",
        clip_embed_weight=40.0,
        clip_logit_scale_log=2.6592,
        joint_group_size=0,
    )
    config.update(overrides)
    return ml_collections.ConfigDict(config)


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory):
    """A tiny random CLIP (224 px input like ViT-B/32) + a byte-level BPE tokenizer."""
    try:  # tests/ on sys.path (pytest's default rootdir-less import mode)
        from test_text_encoders import write_tiny_clip_tokenizer
    except ImportError:  # tests/ imported as a package
        from tests.test_text_encoders import write_tiny_clip_tokenizer
    from transformers import CLIPConfig

    from tgic_jax.model import clip, pretrained

    folder = tmp_path_factory.mktemp("tiny_clip")
    vocab = write_tiny_clip_tokenizer(folder)
    config = CLIPConfig(
        text_config=tower_sizes(
            16,
            24,
            1,
            2,
            vocab_size=vocab,
            max_position_embeddings=77,
            bos_token_id=vocab - 2,
            eos_token_id=vocab - 1,
            pad_token_id=vocab - 1,
        ),
        vision_config=tower_sizes(16, 24, 1, 2, image_size=224, patch_size=32),
        projection_dim=8,
    )
    pretrained.save_folder(folder, config, clip.random_clip(config, seed=0).params)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_folder):
    return losses.build_clip(str(tiny_clip_folder))


@pytest.fixture(scope="module")
def lpips_params():
    return lpips.load_lpips_params()


def test_build_clip_loads_a_local_folder(tiny_clip):
    assert tiny_clip.config.projection_dim == 8
    assert tiny_clip.config.vision_config.image_size == 224


def test_lpips_alex_known_answer_on_kodim23(lpips_params):
    a = _kodak_image("kodim23.png")[0:256, 0:256]
    noise = np.random.default_rng(0).normal(0, 0.05, a.shape).astype(np.float32)
    b = np.clip(a + noise, 0, 1)
    dist = jax.jit(lpips.lpips_distance, static_argnums=3)
    value = float(dist(lpips_params, a[None], b[None], "minus_one_one")[0])
    assert value == pytest.approx(0.34504, abs=1e-4)
    assert float(dist(lpips_params, a[None], a[None], "minus_one_one")[0]) == pytest.approx(
        0.0, abs=1e-7
    )
    # The authors' call on [0, 1] images gives another (smaller) number.
    zero_one = float(dist(lpips_params, a[None], b[None], "zero_one")[0])
    assert abs(zero_one - value) > 0.02


def test_lpips_is_per_image_and_rejects_unknown_ranges(lpips_params):
    rng = np.random.default_rng(1)
    a = rng.uniform(size=(2, 64, 64, 3)).astype(np.float32)
    b = a.copy()
    b[1] = np.clip(b[1] + 0.1 * rng.normal(size=b[1].shape), 0, 1)
    dist = np.asarray(lpips.lpips_distance(lpips_params, a, b))
    assert dist.shape == (2,) and dist[0] == pytest.approx(0.0, abs=1e-7) and dist[1] > 0.01
    with pytest.raises(ValueError, match="lpips_input_range"):
        lpips.lpips_distance(lpips_params, a, b, "0_255")


def test_bpp_is_minus_log2_likelihoods_per_pixel():
    y = jnp.full((2, 4, 4, 5), 0.5)  # 1 bit per element
    z = jnp.full((2, 1, 1, 3), 0.25)  # 2 bits per element
    bpp, parts = losses.bpp_from_likelihoods({"y": y, "z": z}, num_pixels=2 * 16 * 16)
    assert float(parts["y"]) == pytest.approx(160 / 512, rel=1e-5)
    assert float(parts["z"]) == pytest.approx(12 / 512, rel=1e-5)
    assert float(bpp) == pytest.approx(172 / 512, rel=1e-5)


def test_clip_preprocess_resizes_short_side_and_center_crops():
    rng = np.random.default_rng(0)
    # Already 224 high: no resampling, only the center crop of the 448 wide image.
    wide = rng.uniform(size=(1, 224, 448, 3)).astype(np.float32)
    out = np.asarray(losses.clip_preprocess(wide))
    want = (wide[:, :, 112:336] - np.array(losses.CLIP_MEAN)) / np.array(losses.CLIP_STD)
    np.testing.assert_allclose(out, want, atol=1e-4)
    # A 256x256 crop is resized to 224; a constant image stays constant.
    const = np.full((2, 256, 256, 3), 0.5, np.float32)
    out = np.asarray(losses.clip_preprocess(const))
    assert out.shape == (2, 224, 224, 3)
    np.testing.assert_allclose(
        out[0, 100, 100], (0.5 - np.array(losses.CLIP_MEAN)) / np.array(losses.CLIP_STD), atol=1e-5
    )
    assert losses.clip_preprocess(jnp.zeros((1, 256, 320, 3))).shape == (1, 224, 224, 3)


def test_clip_preprocess_cubic_matches_clip_image_processor_on_kodak():
    """method='cubic' is CLIPImageProcessor (PIL bicubic on uint8) up to rounding/clipping."""
    from transformers import CLIPImageProcessor

    image = np.round(_kodak_image("kodim23.png") * 255).astype(np.uint8)  # 512x768
    want = CLIPImageProcessor()(images=image, return_tensors="np")["pixel_values"]
    got = np.asarray(losses.clip_preprocess(image[None].astype(np.float32) / 255.0, method="cubic"))
    diff = np.abs(got - want.transpose(0, 2, 3, 1))
    assert got.shape == (1, 224, 224, 3)
    assert diff.mean() < 0.01 and np.percentile(diff, 99) < 0.02


def test_clip_contrastive_falls_as_matching_improves():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(4, 8)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    other = rng.normal(size=(4, 8)).astype(np.float32)
    values, images = [], []
    for alpha in (0.0, 0.3, 0.6, 1.0):
        img = alpha * text + (1 - alpha) * other
        img /= np.linalg.norm(img, axis=1, keepdims=True)
        images.append(img)
        values.append(float(losses.clip_contrastive(text, img)))
    assert all(a > b for a, b in zip(values[:-1], values[1:], strict=True)), values
    # Against a float64 numpy CLIP loss (mean of both cross-entropies), at alpha=0.3.
    logits = math.exp(2.6592) * text.astype(np.float64) @ images[1].astype(np.float64).T

    def ce(lg):
        return -np.mean(np.diag(lg - np.log(np.exp(lg).sum(1, keepdims=True))))

    assert values[1] == pytest.approx((ce(logits) + ce(logits.T)) / 2, rel=1e-4)


def test_clip_text_embeddings_of_38_tokens_are_independent_of_padding(tiny_clip, tiny_clip_folder):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_clip_folder))
    captions = ["a red car", "the dog", "a red car"]
    embed = jax.jit(
        lambda ids, mask: losses.clip_text_embeddings(tiny_clip, tiny_clip.params, ids, mask)
    )

    def tokens(length):
        t = tokenizer(
            captions, padding="max_length", max_length=length, truncation=True, return_tensors="np"
        )
        return np.asarray(t["input_ids"], np.int32), np.asarray(t["attention_mask"], np.int32)

    text = np.asarray(embed(*tokens(38)))
    assert text.shape == (3, 8) and text.dtype == np.float32
    np.testing.assert_allclose(text[0], text[2], atol=1e-6)
    assert np.abs(text[0] - text[1]).max() > 1e-3
    # CLIP pools at the end token under a causal mask: the padded length does not matter.
    np.testing.assert_allclose(np.asarray(embed(*tokens(16))), text, atol=1e-5)


def test_clip_joint_term_gradient_reaches_x_hat(tiny_clip):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 64, 64, 3)).astype(np.float32)
    x_hat = np.clip(x + 0.1 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
    text = jax.random.normal(jax.random.key(0), (2, 8))

    def term(x_hat_, x_):
        return losses.clip_joint_term(tiny_clip, tiny_clip.params, x_hat_, x_, text)

    (value, parts), grad = jax.jit(jax.value_and_grad(term, has_aux=True))(x_hat, x)
    grad = np.asarray(grad)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    assert float(parts["clip_embed_dist"]) > 0
    assert float(value) == pytest.approx(
        float(parts["clip_contrastive"]) + 40.0 * float(parts["clip_embed_dist"]), rel=1e-5
    )
    # x_hat == x: the embedding distance is 0 and its gradient stays finite.
    (_, parts), grad = jax.jit(jax.value_and_grad(term, has_aux=True))(x, x)
    assert float(parts["clip_embed_dist"]) < 1e-6 and np.all(np.isfinite(np.asarray(grad)))


def _fake_outputs(rng, x):
    def lik(shape):
        return rng.uniform(0.05, 1.0, size=shape).astype(np.float32)

    x_hat = np.clip(x + 0.05 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
    return {"x_hat": x_hat, "likelihoods": {"y": lik((2, 16, 16, 320)), "z": lik((2, 4, 4, 192))}}


def test_whole_loss_is_finite_for_paper_size_outputs_with_every_term_logged(tiny_clip):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 256, 256, 3)).astype(np.float32)
    outputs = _fake_outputs(rng, x)
    config = _loss_config()
    loss_fn, frozen = losses.build_loss(config, clip_model=tiny_clip)
    assert set(frozen) == {"lpips", "clip"}
    text = jax.random.normal(jax.random.key(0), (2, 8))

    def total(x_hat):
        return loss_fn(frozen, {**outputs, "x_hat": x_hat}, x, text)

    (loss, metrics), grad = jax.jit(jax.value_and_grad(total, has_aux=True))(outputs["x_hat"])
    metrics = {k: float(v) for k, v in metrics.items()}
    expected = {
        "loss",
        "bpp",
        "bpp_y",
        "bpp_z",
        "mse",
        "psnr",
        "distortion",
        "lpips",
        "clip_contrastive",
        "clip_embed_dist",
        "joint",
    }
    assert set(metrics) == expected
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert np.all(np.isfinite(np.asarray(grad))) and np.abs(np.asarray(grad)).max() > 0
    # Every term has its paper weight and the total is their sum.
    mse = np.mean((outputs["x_hat"] - x) ** 2)
    bpp_y = -np.log2(outputs["likelihoods"]["y"].astype(np.float64)).sum() / (2 * 256 * 256)
    assert metrics["mse"] == pytest.approx(mse, rel=1e-4)
    assert metrics["psnr"] == pytest.approx(-10 * np.log10(mse), rel=1e-4)
    assert metrics["bpp_y"] == pytest.approx(bpp_y, rel=1e-4)
    assert metrics["distortion"] == pytest.approx(0.0004 * 255**2 * mse, rel=1e-4)
    assert metrics["joint"] == pytest.approx(
        metrics["clip_contrastive"] + 40 * metrics["clip_embed_dist"], rel=1e-4
    )
    want = metrics["bpp"] + metrics["distortion"] + 3.5 * metrics["lpips"]
    want += 0.0025 * metrics["joint"]
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert metrics["bpp"] == pytest.approx(metrics["bpp_y"] + metrics["bpp_z"], rel=1e-5)


def test_zero_weight_terms_are_not_in_the_graph(lpips_params):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 64, 64, 3)).astype(np.float32)
    outputs = {
        "x_hat": x * 0.9,
        "likelihoods": {
            "y": np.full((2, 4, 4, 8), 0.5, np.float32),
            "z": np.full((2, 1, 1, 4), 0.5, np.float32),
        },
    }
    rd_fn, rd_frozen = losses.build_loss(_loss_config(k_p=0.0, k_j=0.0))
    assert rd_frozen == {}
    loss, metrics = jax.jit(rd_fn)(rd_frozen, outputs, x, None)
    assert "lpips" not in metrics and "joint" not in metrics
    assert float(loss) == pytest.approx(float(metrics["bpp"] + metrics["distortion"]), rel=1e-6)
    graph = str(jax.make_jaxpr(rd_fn)(rd_frozen, outputs, x, None))
    assert "conv_general_dilated" not in graph
    # With k_p > 0 the LPIPS network is traced, its weights come in as arguments.
    lp_fn, lp_frozen = losses.build_loss(_loss_config(k_j=0.0))
    assert set(lp_frozen) == {"lpips"}
    jaxpr = jax.make_jaxpr(lp_fn)(lp_frozen, outputs, x, None)
    assert "conv_general_dilated" in str(jaxpr)
    # No big constants baked in: the AlexNet kernels are inputs, not literals.
    assert all(np.size(c) < 1000 for c in jaxpr.consts)


def test_zero_one_lpips_option_changes_the_loss(lpips_params):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(1, 64, 64, 3)).astype(np.float32)
    outputs = {"x_hat": np.clip(x + 0.1, 0, 1), "likelihoods": {"y": np.ones((1, 1, 1, 1))}}
    values = {}
    for input_range in ("minus_one_one", "zero_one"):
        fn, frozen = losses.build_loss(_loss_config(k_j=0.0, lpips_input_range=input_range))
        values[input_range] = float(fn(frozen, outputs, x)[1]["lpips"])
    assert abs(values["minus_one_one"] - values["zero_one"]) > 1e-3


@pytest.mark.slow
def test_whole_loss_on_the_paper_size_model_is_finite_with_every_term_logged(tiny_clip):
    from tgic_jax.model.taco import TACO, ModelConfig, init_variables

    model = TACO(ModelConfig())  # N=192, M=320, text width 512
    variables = init_variables(model, jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(2, 256, 256, 3)).astype(np.float32)
    text = rng.normal(size=(2, 38, 512)).astype(np.float32)
    loss_fn, frozen = losses.build_loss(_loss_config(), clip_model=tiny_clip)
    clip_text = jax.random.normal(jax.random.key(0), (2, 8))

    @jax.jit
    def step(params):
        rngs = {"noise": jax.random.key(1)}
        out = model.apply({"params": params}, x, text, train=True, rngs=rngs)
        return loss_fn(frozen, out, x, clip_text)

    loss, metrics = step(variables["params"])
    assert np.isfinite(float(loss))
    for name in (
        "bpp",
        "bpp_y",
        "bpp_z",
        "mse",
        "psnr",
        "lpips",
        "clip_contrastive",
        "clip_embed_dist",
        "joint",
    ):
        assert np.isfinite(float(metrics[name])), name
    assert float(metrics["bpp_y"]) > 0 and float(metrics["bpp_z"]) > 0


# ----------------------------------------------------------------------------- config
def test_taco_config_is_the_authors_training():
    from configs.taco import get_config

    c = get_config()
    assert (c.loss.lmbda, c.loss.k_p, c.loss.k_j) == (0.0004, 3.5, 0.0025)
    assert c.loss.lpips_input_range == "zero_one" and c.loss.joint_group_size == 8
    assert c.loss.clip_resize_method == "linear"
    assert (c.loss.clip_embed_weight, c.loss.clip_logit_scale_log) == (40.0, 2.6592)
    assert (c.text.encoder, c.text.max_length) == ("clip", 38)
    assert c.text.path == c.loss.clip_path == "openai/clip-vit-base-patch32"
    assert (c.input.source, c.input.min_short_side, c.input.crop_size) == ("coco_files", 256, 256)
    assert c.input.batch_size_per_device == 8
    o = c.optim
    assert (o.learning_rate, o.aux_learning_rate, o.grad_clip_norm) == (1e-4, 1e-3, 1.0)
    assert (o.epochs, tuple(o.decay_epochs), o.decay_factor) == (50, (45, 48), 0.1)
    assert c.eval.every_epochs == 1 and c.eval.captions.endswith("kodak/captions.json")
    assert c.jax_default_matmul_precision == "highest"


def test_taco_config_confirms_weights_only_for_lambda_0004(caplog):
    from configs.taco import get_config

    with caplog.at_level("WARNING"):
        assert get_config("lmbda=0.0004").loss.weights_confirmed
        assert not caplog.records
        other = get_config("lmbda=0.0016")
    assert not other.loss.weights_confirmed and (other.loss.k_p, other.loss.k_j) == (3.5, 0.0025)
    assert "not confirmed" in caplog.text
    with pytest.raises(ValueError, match="lmbda"):
        get_config("lmbda=0")


def test_a_batch_that_the_joint_groups_do_not_tile_is_an_error_at_start():
    losses.check_joint_group(_loss_config(joint_group_size=8), 16)
    losses.check_joint_group(_loss_config(joint_group_size=8, k_j=0.0), 12)  # no joint term
    with pytest.raises(ValueError, match="not a multiple of loss.joint_group_size=8"):
        losses.check_joint_group(_loss_config(joint_group_size=8), 12)
