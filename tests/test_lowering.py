"""The paper config's train step lowers for GPU (cuda) and TPU, with no such hardware here.

`jax.export` lowers for any platform from abstract shapes: an op that a platform cannot
lower (or a float64 the TPU lacks) fails here, not on a pod. Lowering only: nothing is
compiled or run. The CLIP towers are ViT-B/32's shapes (no weights needed); LPIPS gets
the precision the platform would choose at start (`precision.lpips_float64`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tgic_jax.model import clip
from tgic_jax.model.taco import TACO, ModelConfig
from tgic_jax.train import losses, optim, precision, train_state, train_step

# openai/clip-vit-base-patch32's towers, as the paper config loads them: transformers'
# defaults, but its config.json's legacy eos_token_id (2: the largest id ends the text).
B32_TEXT = clip.TowerConfig.from_dict({"eos_token_id": 2}, clip.TEXT_DEFAULTS)
B32_VISION = clip.TowerConfig.from_dict({}, clip.VISION_DEFAULTS)
CROP = 64  # the model's stride: the smallest image; CLIP resizes to 224 either way


def _abstract(tree):
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), tree)


def _export_train_step(platform: str):
    from configs.taco import get_config

    config = get_config("lmbda=0.0004")
    config.loss.lpips_float64 = precision.lpips_float64(config.loss, platform)
    model = TACO(ModelConfig.from_config(config.model))
    full = clip.CLIP(text=B32_TEXT, vision=B32_VISION, projection_dim=512)
    clip_model = clip.PretrainedCLIP(full, clip.init_shapes(full), None)
    text_tower = clip.CLIP(text=B32_TEXT)  # the conditioning text: no projection

    def text_fn(params, ids, mask):
        out = text_tower.apply({"params": params}, ids, mask, method=clip.CLIP.encode_text)
        return out["last_hidden_state"]

    loss_fn, frozen = losses.build_loss(config.loss, clip_model=clip_model)
    frozen = _abstract({**frozen, "text": clip.init_shapes(text_tower)})
    batch_size = 8  # one joint-term group (loss.joint_group_size)
    optimizer = optim.make_optimizer(config.optim)
    state = jax.eval_shape(functools.partial(train_state.create_train_state, model, optimizer, 0))
    tokens = jax.ShapeDtypeStruct((batch_size, config.text.max_length), jnp.int32)
    batch = {
        "image": jax.ShapeDtypeStruct((batch_size, CROP, CROP, 3), jnp.float32),
        "input_ids": tokens,
        "attention_mask": tokens,
    }
    clip_text_fn = functools.partial(losses.clip_text_embeddings, clip_model)
    step = train_step.make_train_step(model, loss_fn, optimizer, text_fn, clip_text_fn)
    lr = jax.ShapeDtypeStruct((), jnp.float32)
    with jax.default_matmul_precision(config.jax_default_matmul_precision):
        return jax.export.export(jax.jit(step), platforms=(platform,))(state, frozen, batch, lr)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_the_paper_configs_train_step_lowers_for_gpu_and_tpu(platform):
    exported = _export_train_step(platform)
    assert exported.platforms == (platform,)
    text = exported.mlir_module()
    assert "stablehlo.convolution" in text  # the transforms are in the program
    # LPIPS in float64 on the GPU (as the authors' arithmetic), float32 on the TPU.
    assert ("f64" in text) is (platform == "cuda")
