"""Pretrained checkpoint folders (transformers' layout) -> Flax parameter trees, without torch.

A folder holds `config.json` and `model.safetensors` or `pytorch_model.bin`, the layout
`from_pretrained` reads. Our towers (`clip.py`, `bert.py`) name their modules after the
PyTorch modules, so the mapping is mechanical (the rule of `checkpoints/authors.py`): the torch key
`text_model.encoder.layers.3.mlp.fc1.weight` is the Flax path
`text_model / encoder / layers_3 / mlp / fc1 / kernel`. Leaves: Linear and Conv weights
become `kernel` (transposed to Flax layout), LayerNorm weights `scale`, Embedding weights
`embedding`; other parameters (CLIP's `class_embedding`, `logit_scale`) keep their name.

`pytorch_model.bin` is read by a restricted unpickler of torch's zip format that admits
only tensors, storages and OrderedDict (no code runs), so torch is not needed either.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from tgic_jax.model.layers import Params

# transformers' config defaults of the towers we read (CLIP text, CLIP vision, BERT): a
# config.json that transformers saved leaves out the fields equal to them.
TRANSFORMERS_DEFAULTS = json.loads(
    (Path(__file__).parents[1] / "assets" / "towers" / "transformers_defaults.json").read_text()
)
_INDEXED = re.compile(r"^(.*)_(\d+)$")  # Flax `layers_3` <-> torch `layers.3`
# Legacy BERT checkpoints (TF-converted) name LayerNorm parameters gamma / beta.
_LEGACY = {".gamma": ".weight", ".beta": ".bias"}


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be read into the expected parameter tree."""


def resolve_folder(path: str | os.PathLike) -> Path:
    """A local folder as is, else a hub id downloaded into the Hugging Face cache."""
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    from huggingface_hub import hf_hub_download  # declared (tokenizers needs it too)

    repo, errors = str(path), []
    config = Path(hf_hub_download(repo, "config.json"))
    for name in ("model.safetensors", "pytorch_model.bin"):
        try:
            hf_hub_download(repo, name)
            return config.parent
        except Exception as err:  # noqa: BLE001 - the hub's not-found errors differ by version
            errors.append(f"{name}: {type(err).__name__}: {err}")
    raise FileNotFoundError(f"{path}: no weights could be fetched ({'; '.join(errors)})")


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's config.json as a dict."""
    return json.loads((Path(folder) / "config.json").read_text())


def read_state_dict(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """The folder's weights as {torch key: numpy array} (safetensors, else pytorch_model.bin)."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        from safetensors.numpy import load_file

        state = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        state = read_torch_zip(folder / "pytorch_model.bin")
    else:
        sharded = sorted(p.name for p in folder.glob("*.index.json"))
        note = f" (sharded checkpoints, {sharded[0]}, are not read)" if sharded else ""
        raise FileNotFoundError(
            f"{folder} has neither model.safetensors nor pytorch_model.bin{note}."
        )
    renamed = {}
    for key, value in state.items():
        for old, new in _LEGACY.items():
            if key.endswith(old):
                key = key[: -len(old)] + new
        renamed[key] = value
    return renamed


def _torch_key(path: tuple[str, ...]) -> tuple[str, str]:
    """(torch key, leaf kind) of one Flax parameter path."""
    parts = []
    for name in path[:-1]:
        match = _INDEXED.match(name)
        parts.extend(match.groups() if match else (name,))
    leaf = path[-1]
    torch_leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(leaf, leaf)
    return ".".join(parts + [torch_leaf]), leaf


def _to_flax_layout(array: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and array.ndim == 2:  # Linear [out, in] -> [in, out]
        return array.T
    if leaf == "kernel" and array.ndim == 4:  # Conv [out, in, kh, kw] -> [kh, kw, in, out]
        return array.transpose(2, 3, 1, 0)
    return array


def state_dict_to_params(
    state_dict: dict[str, np.ndarray], shapes: Params, prefixes: tuple[str, ...] = ("",)
) -> Params:
    """Fills the tree `shapes` (e.g. `jax.eval_shape` of an init) from torch-named weights.

    Keys absent from the tree are ignored (a full CLIP folder read for its text tower);
    a missing key or a shape mismatch raises `CheckpointError` naming it. `prefixes` are
    tried in order for every key (BERT weights saved from a task head carry `bert.`).
    """

    def fill(path, shape):
        names = tuple(getattr(k, "key", str(k)) for k in path)
        key, leaf = _torch_key(names)
        for prefix in prefixes:
            if prefix + key in state_dict:
                array = _to_flax_layout(np.asarray(state_dict[prefix + key]), leaf)
                if array.shape != tuple(shape.shape):
                    raise CheckpointError(
                        f"{prefix + key}: shape {array.shape} in Flax layout, the config "
                        f"asks for {tuple(shape.shape)}"
                    )
                return np.asarray(array, np.float32)
        raise CheckpointError(f"weight {key} missing from the checkpoint (tried {prefixes})")

    return jax.tree_util.tree_map_with_path(fill, shapes)


def params_to_state_dict(params: Params, prefix: str = "") -> dict[str, np.ndarray]:
    """The inverse of `state_dict_to_params`: torch-named numpy arrays in torch layout."""
    out = {}
    for path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
        key, leaf = _torch_key(tuple(getattr(k, "key", str(k)) for k in path))
        array = np.asarray(value)
        if leaf == "kernel" and array.ndim == 2:
            array = array.T
        elif leaf == "kernel" and array.ndim == 4:
            array = array.transpose(3, 2, 0, 1)
        out[prefix + key] = np.ascontiguousarray(array)
    return out


# ------------------------------------------------------------ torch's zip format, no torch
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def _rebuild_tensor(storage, offset, size, stride, *unused) -> np.ndarray:
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view)


def _rebuild_parameter(data, *unused) -> np.ndarray:
    return data


class _StorageType:
    def __init__(self, name: str):
        self.dtype = _STORAGE_DTYPES.get(name)
        if name == "BFloat16Storage":
            import ml_dtypes  # a dependency of jax

            self.dtype = ml_dtypes.bfloat16
        self.name = name


class _TorchUnpickler(pickle.Unpickler):
    """Admits tensors, storages and OrderedDict; any other global is refused (no code runs)."""

    def __init__(self, file, archive: zipfile.ZipFile, root: str):
        super().__init__(file)
        self.archive, self.root, self.storages = archive, root, {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        raise pickle.UnpicklingError(f"pytorch_model.bin refers to {module}.{name}: not read")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage" or storage_type.dtype is None:
            raise pickle.UnpicklingError(f"unsupported storage {storage_type.name}")
        if key not in self.storages:
            raw = self.archive.read(f"{self.root}/data/{key}")
            self.storages[key] = np.frombuffer(raw, storage_type.dtype)
        return self.storages[key]


def read_torch_zip(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A `torch.save` state_dict (zip format, torch >= 1.6) as numpy arrays, without torch."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is a legacy (pre-1.6) torch pickle; convert it with "
            "`torch.save(torch.load(p), p)` or to model.safetensors."
        )
    with zipfile.ZipFile(path) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        root = pkl.rsplit("/", 1)[0]
        order = f"{root}/byteorder"
        if order in archive.namelist() and archive.read(order).strip() != b"little":
            raise CheckpointError(f"{path} was saved big-endian")
        with archive.open(pkl) as file:
            return dict(_TorchUnpickler(file, archive, root).load())


def save_folder(folder: str | os.PathLike, config, params: Params) -> Path:
    """Writes `config` (a transformers config: tests, fixtures) and `params` as a standard
    checkpoint folder."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    save_file(params_to_state_dict(params), str(folder / "model.safetensors"), {"format": "pt"})
    return folder
