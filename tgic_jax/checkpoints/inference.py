"""Inference checkpoints, through orbax: the trained parameters, config and coding tables.

An inference checkpoint is a directory:
    config.json   the model sizes and the text-encoder config (plain JSON)
    state/        orbax PyTree checkpoint of {"params": ..., "tables": ...}
Both are written into a temporary sibling directory and renamed into place, so a reader
never sees half a checkpoint. `CHECKPOINT_ENTRIES` names what a checkpoint consists of: a
folder's other files (a user's notes, results) are carried into the new checkpoint when
one is replaced (`tgic export/convert --force`), never deleted.

Every path here goes through `as_path` (etils.epath): `gs://bucket/run` stays a bucket URL
(`pathlib.Path(...).absolute()` made it `<cwd>/gs:/bucket/run`, a local folder on each host).
"""

from __future__ import annotations

import json
import os
import uuid

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from tgic_jax.coding.tables import build_tables
from tgic_jax.files import replace_dir
from tgic_jax.model.taco import TACO, ModelConfig

FORMAT = "tgic_jax-inference-v1"
# Every entry an inference checkpoint consists of (what `save_inference` writes and, when
# it replaces a checkpoint, replaces): the one list `tgic export/convert --force` go by.
CHECKPOINT_ENTRIES = ("config.json", "state")
_FILE_URL = "file://"


def as_path(path: str | os.PathLike) -> epath.Path:
    """A local path made absolute, or a URL (gs://, s3://...) kept as a URL.

    `file:///abs/path` is read as the local path (etils.epath has no `file://` scheme).
    """
    text = os.fspath(path)
    if text.startswith(_FILE_URL):
        text = text[len(_FILE_URL) :]
    if "://" in text:
        return epath.Path(text)
    return epath.Path(os.path.abspath(text))


def to_numpy(tree):
    """The tree with every leaf a host numpy array (what orbax and npz writers take)."""
    return jax.tree_util.tree_map(lambda a: np.asarray(a), tree)


def _one_process_checkpointer() -> ocp.Checkpointer:
    """An orbax checkpointer that this process uses alone, with no barrier across hosts.

    Inference checkpoints hold host arrays written by one process: the export, or process 0
    keeping a best checkpoint while the other hosts wait at a coordination barrier. orbax's
    default barrier is a device collective that those hosts never join, so it would hang.
    """
    me = jax.process_index()
    options = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.Checkpointer(
        ocp.PyTreeCheckpointHandler(multiprocessing_options=options),
        multiprocessing_options=options,
    )


def own_entries(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(entries of `CHECKPOINT_ENTRIES` present in the folder, its other entries), sorted."""
    path = as_path(path)
    if not path.is_dir():
        return [], []
    names = sorted(p.name for p in path.iterdir())
    return [n for n in names if n in CHECKPOINT_ENTRIES], [
        n for n in names if n not in CHECKPOINT_ENTRIES
    ]


def save_inference(
    path: str | os.PathLike,
    model_config: ModelConfig,
    params,
    text_config: dict | None = None,
    tables: dict | None = None,
    extra: dict | None = None,
) -> epath.Path:
    """Writes an inference checkpoint atomically; tables default to `build_tables(params)`.

    Replacing an existing folder replaces only `CHECKPOINT_ENTRIES`: its other entries are
    moved into the new checkpoint before it takes the folder's name.
    """
    path = as_path(path)
    params = to_numpy(params)
    if tables is None:
        tables = build_tables(params)
    meta = {
        "format": FORMAT,
        "model": model_config.to_dict(),
        "text": dict(text_config or {}),
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        _one_process_checkpointer().save(
            tmp / "state", {"params": params, "tables": to_numpy(tables)}
        )
        (tmp / "config.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        _replace_keeping_others(tmp, path)
    finally:
        tmp.rmtree(missing_ok=True)
    return path


def _replace_keeping_others(tmp: epath.Path, path: epath.Path) -> None:
    """`replace_dir(tmp, path)`, the entries of `path` that are not ours moved along first."""
    others = own_entries(path)[1]
    moved = []
    try:
        for name in others:
            (path / name).rename(tmp / name)
            moved.append(name)
        replace_dir(tmp, path)
    except BaseException:
        for name in moved:  # the old folder is still in place: give each entry back
            if (tmp / name).exists() and path.is_dir():
                (tmp / name).rename(path / name)
        raise


def read_inference_config(path: str | os.PathLike) -> dict:
    """The checkpoint's config.json as a dict (clear error when it is not a checkpoint)."""
    cfg_file = as_path(path) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: not a tgic_jax inference checkpoint (no config.json)")
    meta = json.loads(cfg_file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {meta.get('format')!r}")
    return meta


def load_inference(path: str | os.PathLike):
    """-> (model, variables {"params", "tables"}, config ConfigDict with .model and .text)."""
    meta = read_inference_config(path)
    model_config = ModelConfig(**meta["model"])
    state = _one_process_checkpointer().restore(as_path(path) / "state")
    state = jax.tree_util.tree_map(np.asarray, state)
    config = ml_collections.ConfigDict(
        {
            "model": model_config.to_dict(),
            "text": meta.get("text", {}),
            "extra": {k: v for k, v in meta.items() if k not in ("model", "text")},
        }
    )
    return TACO(model_config), state, config
