"""Conversion between the authors' PyTorch state_dict and Flax variables, both ways.

The rule is mechanical: a torch key `a.b.3.c.weight` becomes the Flax path
`a / b_3 / c / <leaf>`, where conv weights [out, in, kh, kw] become kernels
[kh, kw, in, out], transposed-conv weights [in, out, kh, kw] become [kh, kw, in, out]
(taps not flipped: `layers.ConvTranspose` does that), Linear weights are transposed and
LayerNorm weights are `scale`. Sizes (N, M, slices, text width) are read off the shapes;
the number of attention heads cannot be, so it comes from the caller (8 in every
released model). The authors' coder buffers are dropped: our coding tables are rebuilt
from the parameters by `coding.tables.build_tables`.

The way back, `to_official_state_dict`, inverts every step and adds the buffers their
CompressAI 1.2.8 `update(force=True)` would write (`compressai_buffers`), so their
`load_state_dict(strict=True)`, `compress` and `decompress` run on a model trained here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from tgic_jax.checkpoints import compressai_buffers
from tgic_jax.files import write_atomic
from tgic_jax.model.taco import TACO, ModelConfig, init_variables

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
    model = TACO(cfg)
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
    """Reads an `.npz`, a `.safetensors` or the authors' `.pth.tar` (needs torch)."""
    path = str(path)
    if path.endswith(".npz"):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return dict(load_file(path))
    try:
        import torch  # optional dependency, only for .pth files
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


# ------------------------------------------------------------------------- the way back
_INDEXED = re.compile(r"^(.*?)((?:_\d+)+)$")
_LAYOUT = Path(__file__).parents[1] / "assets" / "taco_official_state_dict.tsv"
AUTHORS_SUFFIXES = (".pth.tar", ".pth", ".npz", ".safetensors")
AUTHORS_HEADS = 8  # Injector / Extractor num_attn_head in the authors' analysis transform


def torch_key(path: tuple[str, ...]) -> str:
    """('g_a', 'analysis_transform_1', 'branch_0', 'kernel') -> 'g_a....1.branch.0.weight'.

    The inverse of `flax_path` plus the leaf rename: no torch name in TACO contains
    `_<digits>`, so every such suffix in a Flax name is a ModuleList / Sequential index.
    """
    parts = []
    for i, part in enumerate(path):
        if i == len(path) - 1 and part in ("kernel", "scale"):
            part = "weight"
        m = _INDEXED.match(part)
        if m and m.group(1):
            part = ".".join([m.group(1), *m.group(2).lstrip("_").split("_")])
        parts.append(part)
    return ".".join(parts)


def _torch_leaf(key: str, value: np.ndarray, flax_leaf: str) -> np.ndarray:
    """One Flax array back in PyTorch layout (inverse of `_convert_leaf`)."""
    value = np.asarray(value, dtype=np.float32)
    if flax_leaf == "kernel" and value.ndim == 4:
        # from_official took (2, 3, 0, 1) for transposed convs (self-inverse) and
        # (2, 3, 1, 0) for convs (inverse (3, 2, 0, 1)).
        perm = (2, 3, 0, 1) if _TRANSPOSED_CONV.match(key) else (3, 2, 0, 1)
        return np.ascontiguousarray(value.transpose(perm))
    if flax_leaf == "kernel" and value.ndim == 2:
        return np.ascontiguousarray(value.T)
    return np.ascontiguousarray(value)


def _layout_order() -> dict[str, int]:
    """Rank of each key in the authors' `state_dict()` order (their module registration)."""
    rows = _LAYOUT.read_text().splitlines()[1:]
    return {row.split("\t", 1)[0]: i for i, row in enumerate(rows)}


def to_official_state_dict(model: TACO, variables) -> dict[str, np.ndarray]:
    """Flax variables -> the authors' `state_dict()` after `update(force=True)`, as numpy.

    Every parameter in PyTorch layout under their name, plus the CompressAI 1.2.8 coder
    buffers computed from the parameters (`compressai_buffers`); float32 and int32 as
    theirs. `model` fixes the sizes the tree is checked against.
    """
    params = variables["params"] if "params" in variables else variables
    flat = flatten_dict(jax.tree_util.tree_map(np.asarray, dict(params)))
    expected = flatten_dict(
        jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0)))["params"]
    )
    missing = sorted("/".join(p) for p in expected if p not in flat)
    unexpected = sorted("/".join(p) for p in flat if p not in expected)
    wrong = sorted(
        f"{'/'.join(p)} {np.shape(a)} (expected {expected[p].shape})"
        for p, a in flat.items()
        if p in expected and np.shape(a) != expected[p].shape
    )
    if missing or unexpected or wrong:
        problems = [
            f"{what} {len(items)}: {', '.join(items[:10])}"
            for what, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("mis-shaped", wrong),
            )
            if items
        ]
        raise ConversionError("variables do not match the model: " + " | ".join(problems))

    state: dict[str, np.ndarray] = {}
    for path, value in flat.items():
        key = torch_key(path)
        # Round trip by construction: the key must map back to this very Flax path.
        back = flax_path(key)
        if not key.rsplit(".", 1)[-1].isdigit():
            back = back[:-1] + (path[-1],)
        if back != path:
            raise ConversionError(f"no torch name for Flax parameter {'/'.join(path)}")
        state[key] = _torch_leaf(key, value, path[-1])
    eb = {
        k.removeprefix("entropy_bottleneck."): v
        for k, v in state.items()
        if k.startswith("entropy_bottleneck.")
    }
    state.update(compressai_buffers.gaussian_conditional_buffers())
    state.update(compressai_buffers.entropy_bottleneck_buffers(eb))
    rank = _layout_order()  # keys the paper model lacks (more slices) go last, in tree order
    keys = sorted(state, key=lambda k: rank.get(k, len(rank)))
    return {k: state[k] for k in keys}


def save_state_dict_file(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Writes `state_dict` as its suffix says: .pth.tar / .pth (torch), .npz, .safetensors.

    `.pth.tar` holds `{"state_dict": ...}` with torch tensors, what the authors'
    `torch.load(...)["state_dict"]` reads; it needs torch (the `[torch]` extra).
    """
    path = Path(path)
    name = path.name
    if not name.endswith(AUTHORS_SUFFIXES):
        raise ValueError(f"{path}: unknown format, name it {' / '.join(AUTHORS_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
    if name.endswith((".pth.tar", ".pth")):
        try:
            import torch  # optional dependency, only for .pth files
        except ImportError as e:
            raise ConversionError(
                f"{path}: writing a PyTorch checkpoint needs torch: pip install "
                "'tgic_jax[torch]', or name the output .npz / .safetensors"
            ) from e
        # Copies: restored arrays can be read-only, torch wants writable memory.
        tensors = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
        write_atomic(path, lambda f: torch.save({"state_dict": tensors}, f))
    elif name.endswith(".npz"):
        write_atomic(path, lambda f: np.savez(f, **arrays))
    else:
        from safetensors.numpy import save

        write_atomic(path, save(arrays))
    return path
