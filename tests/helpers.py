"""What several test files build: the tiny model, its random variables, images, text states."""

from __future__ import annotations

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from tgic_jax.model.taco import TACO, ModelConfig, init_variables

TINY = ModelConfig(N=16, M=24, slices=(2, 2, 4, 4, 12), text_dim=16, heads=8)


def random_variables(model: TACO, seed: int = 0) -> dict:
    """Random but well-scaled variables, without running the (slow) Flax init."""
    shapes = flatten_dict(
        jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0)))["params"]
    )
    rng = np.random.default_rng(seed)
    params = {}
    for path, s in shapes.items():
        leaf, shape = path[-1], s.shape
        if leaf in ("kernel", "in_proj_weight"):
            fan_in = int(np.prod(shape[:-1])) if leaf == "kernel" else shape[-1]
            a = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif leaf in ("bias", "in_proj_bias"):
            a = rng.normal(0.0, 0.05, shape)
        elif leaf == "scale":
            a = np.ones(shape)
        elif leaf == "gamma":
            a = np.full(shape, 0.5)  # the text path matters
        elif leaf.startswith("matrices_"):
            a = np.full(shape, np.log(np.expm1(1.0 / 10.0**0.2 / shape[1])))
        elif leaf.startswith("biases_"):
            a = rng.uniform(-0.5, 0.5, shape)
        elif leaf.startswith("factors_"):
            a = np.zeros(shape)
        elif leaf == "quantiles":
            med = rng.uniform(-0.5, 0.5, (shape[0], 1, 1))  # non-integer medians
            a = med + np.array([-10.0, 0.0, 10.0])
        else:
            raise AssertionError(f"unknown leaf {path}")
        params[path] = np.asarray(a, np.float32)
    return {"params": unflatten_dict(params)}


def tiny_model(seed: int = 0):
    """(model, variables with tables) of the tiny test size."""
    from tgic_jax.coding.tables import build_tables

    model = TACO(TINY)
    v = random_variables(model, seed)
    v["tables"] = build_tables(v["params"])
    return model, v


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth image with texture, float32 [h, w, 3] in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w, 1)
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], -1)
    return np.clip(0.5 + 0.35 * base + 0.1 * rng.normal(size=(h, w, 3)), 0, 1).astype(np.float32)


def text_states(seed: int = 0, tokens: int = 7, dim: int = TINY.text_dim) -> np.ndarray:
    """Random text states of `tokens` x `dim` (what a text encoder would give the model)."""
    return np.random.default_rng(100 + seed).normal(size=(tokens, dim)).astype(np.float32)
