"""Conversion of the authors' PyTorch state_dict to Flax variables.

The rule is mechanical: a torch key `a.b.3.c.weight` becomes the Flax path
`a / b_3 / c / <leaf>`, where conv weights [out, in, kh, kw] become kernels
[kh, kw, in, out], transposed-conv weights [in, out, kh, kw] become [kh, kw, in, out]
(taps not flipped: `layers.ConvTranspose` does that), Linear weights are transposed and
LayerNorm weights are `scale`. Sizes (N, M, slices, text width) are read off the shapes;
the number of attention heads cannot be, so it comes from the caller (8 in every
released model). The authors' coder buffers are dropped: our coding tables are rebuilt
from the parameters by `coding_tables.build_tables`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from tgic_jax.model import TACO, ModelConfig, init_variables

# CompressAI's coder state, recomputed here from the parameters.
BUFFERS = {
    "gaussian_conditional._offset",
    "gaussian_conditional._quantized_cdf",
    "gaussian_conditional._cdf_length",
    "gaussian_conditional.scale_table",
    "gaussian_conditional.scale_bound",
    "gaussian_conditional.likelihood_lower_bound.bound",
    "gaussian_conditional.lower_bound_scale.bound",
    "entropy_bottleneck._offset",
    "entropy_bottleneck._quantized_cdf",
    "entropy_bottleneck._cdf_length",
    "entropy_bottleneck.target",
    "entropy_bottleneck.likelihood_lower_bound.bound",
}
_TRANSPOSED_CONV = re.compile(
    r"^(g_s\.synthesis_transform\.(1|5|10|14)|h_s\.increase\.\d+)\.weight$"
)


class ConversionError(ValueError):
    """The state_dict does not describe a TACO model."""


def infer_model_config(state_dict: Mapping[str, np.ndarray], heads: int = 8) -> ModelConfig:
    """N, M, slices and text width from the tensor shapes."""
    needed = [
        "g_a.analysis_transform.0.weight",
        "g_a.analysis_transform.16.weight",
        "g_a.analysis_transform.8.text_feature_dim_proj.weight",
        "local_context.0.weight",
    ]
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise ConversionError(f"not a TACO state_dict: missing {', '.join(missing)}")
    slices, i = [], 0
    while f"local_context.{i}.weight" in state_dict:
        slices.append(int(np.shape(state_dict[f"local_context.{i}.weight"])[1]))
        i += 1
    return ModelConfig(
        N=int(np.shape(state_dict["g_a.analysis_transform.0.weight"])[0]),
        M=int(np.shape(state_dict["g_a.analysis_transform.16.weight"])[0]),
        slices=tuple(slices),
        text_dim=int(
            np.shape(state_dict["g_a.analysis_transform.8.text_feature_dim_proj.weight"])[1]
        ),
        heads=heads,
    )


def flax_path(torch_key: str) -> tuple[str, ...]:
    """'g_a.analysis_transform.1.branch.0.weight' -> ('g_a', 'analysis_transform_1', ...)."""
    out: list[str] = []
    for part in torch_key.split("."):
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return tuple(out)


def _convert_leaf(key: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """(flax leaf name, array in Flax layout) for one torch tensor."""
    leaf = key.rsplit(".", 1)[-1]
    value = np.asarray(value, dtype=np.float32)
    if leaf != "weight":
        return leaf, value
    if value.ndim == 4:
        perm = (2, 3, 0, 1) if _TRANSPOSED_CONV.match(key) else (2, 3, 1, 0)
        return "kernel", np.ascontiguousarray(value.transpose(perm))
    if value.ndim == 2:
        return "kernel", np.ascontiguousarray(value.T)
    return "scale", value  # LayerNorm


def from_official_state_dict(
    state_dict: Mapping[str, np.ndarray], heads: int = 8
) -> tuple[TACO, dict]:
    """The authors' state_dict (key -> numpy array) -> (model, {"params": ...})."""
    state_dict = {k: np.asarray(v) for k, v in state_dict.items()}
    cfg = infer_model_config(state_dict, heads)
    model = TACO.from_config(cfg)
    expected = flatten_dict(
        jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0)))["params"]
    )

    converted, unexpected = {}, []
    for key, value in state_dict.items():
        if key in BUFFERS:
            continue
        leaf, array = _convert_leaf(key, value)
        path = flax_path(key)
        if not key.rsplit(".", 1)[-1].isdigit():  # e.g. entropy_bottleneck.matrices.0 stays
            path = path[:-1] + (leaf,)
        if path not in expected:
            unexpected.append(key)
            continue
        converted[path] = (key, array)

    missing = sorted(".".join(p) for p in expected if p not in converted)
    wrong = [
        f"{key} {np.shape(state_dict[key])} (expected {expected[p].shape} in Flax layout)"
        for p, (key, a) in converted.items()
        if a.shape != expected[p].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {', '.join(missing[:20])}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {', '.join(sorted(unexpected)[:20])}")
    if wrong:
        problems.append(f"mis-shaped {len(wrong)}: {'; '.join(wrong[:20])}")
    if problems:
        raise ConversionError(f"state_dict does not match TACO{cfg}: " + " | ".join(problems))
    params = unflatten_dict({p: a for p, (_, a) in converted.items()})
    return model, {"params": params}


def load_state_dict_file(path: str) -> dict[str, np.ndarray]:
    """Reads an `.npz` or the authors' `.pth.tar` (needs the optional torch extra)."""
    path = str(path)
    if path.endswith(".npz"):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    try:
        import torch  # noqa: PLC0415 - optional dependency, only for .pth files
    except ImportError as e:
        raise ConversionError(
            "reading a PyTorch checkpoint needs torch: pip install 'tgic_jax[torch]' "
            "(or convert it to .npz elsewhere)"
        ) from e
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path}: no state_dict inside (got {type(obj).__name__})")
    # DDP checkpoints prefix every key with 'module.'
    return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in obj.items()}
