"""Checkpoints, through orbax: inference exports (params + config + coding tables).

An inference checkpoint is a directory:
    config.json   the model sizes and the text-encoder config (plain JSON)
    state/        orbax PyTree checkpoint of {"params": ..., "tables": ...}
Both are written into a temporary sibling directory and renamed into place, so a reader
never sees half a checkpoint.

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

from tgic_jax.model.taco import TACO, ModelConfig

FORMAT = "tgic_jax-inference-v1"
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


def _to_numpy(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a), tree)


def save_inference(
    path: str | os.PathLike,
    model_config: ModelConfig,
    params,
    text_config: dict | None = None,
    tables: dict | None = None,
    extra: dict | None = None,
) -> epath.Path:
    """Writes an inference checkpoint atomically; tables default to `build_tables(params)`."""
    from tgic_jax.coding.tables import build_tables  # avoids an import cycle

    path = as_path(path)
    params = _to_numpy(params)
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
        ckptr = ocp.PyTreeCheckpointer()
        ckptr.save(tmp / "state", {"params": params, "tables": _to_numpy(tables)})
        (tmp / "config.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if path.exists():
            old = path.parent / f".{path.name}.old"
            old.rmtree(missing_ok=True)
            path.rename(old)
            tmp.rename(path)
            old.rmtree(missing_ok=True)
        else:
            tmp.rename(path)
    finally:
        tmp.rmtree(missing_ok=True)
    return path


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
    state = ocp.PyTreeCheckpointer().restore(as_path(path) / "state")
    state = jax.tree_util.tree_map(np.asarray, state)
    config = ml_collections.ConfigDict(
        {
            "model": model_config.to_dict(),
            "text": meta.get("text", {}),
            "extra": {k: v for k, v in meta.items() if k not in ("model", "text")},
        }
    )
    return TACO.from_config(model_config), state, config


# ----------------------------------------------------------------------------- training
# Training checkpoints: orbax CheckpointManager under <workdir>/checkpoints/<step>/state.
# Orbax writes each step into a temporary directory and renames it when every host has
# finished (atomic finalize), so a run killed at any moment leaves only complete steps
# (plus temporaries that the next manager removes).
TRAIN_CHECKPOINTS = "checkpoints"

# orbax-checkpoint 0.11.24 reports array sizes through jax.monitoring.record_scalar, which
# jax 0.5.3 does not have yet: without it, restoring a jax.Array checkpoint raises. The
# metric is only telemetry, so a no-op stands in for it on this jax.
if not hasattr(jax.monitoring, "record_scalar"):
    jax.monitoring.record_scalar = lambda *args, **kwargs: None


def train_checkpoint_manager(
    workdir: str | os.PathLike, every_steps: int = 1000, keep: int = 3, use_async: bool = True
) -> ocp.CheckpointManager:
    """A manager that saves every `every_steps` steps, keeps `keep`, writes asynchronously."""
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(1, int(every_steps)),
        max_to_keep=int(keep) if keep else None,
        enable_async_checkpointing=use_async,
        cleanup_tmp_directories=True,
        create=True,
    )
    return ocp.CheckpointManager(as_path(workdir) / TRAIN_CHECKPOINTS, options=options)


def save_train_state(manager: ocp.CheckpointManager, step: int, state, force: bool = False) -> bool:
    """Saves `state` at `step` when the interval says so (or `force`); True if it saved."""
    return manager.save(int(step), args=ocp.args.StandardSave(state), force=force)


def restore_train_state(manager: ocp.CheckpointManager, abstract_state, step: int | None = None):
    """Restores a train state into the shapes/shardings of `abstract_state` (latest step)."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))


def restore_train_params(workdir: str | os.PathLike, step: int | None = None):
    """(params as numpy, step) from a training workdir's latest (or given) checkpoint."""
    manager = train_checkpoint_manager(workdir, use_async=False)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no training checkpoint under {workdir}/{TRAIN_CHECKPOINTS}")
    # Without a target orbax restores the saved tree as nested dicts; only params are read.
    restored = manager.restore(step, args=ocp.args.StandardRestore())
    manager.close()
    return _to_numpy(restored["params"]), int(step)
