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

import gc
import json
import os
import sys
import uuid

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from tgic_jax.model.taco import TACO, ModelConfig
from tgic_jax.train.errors import RunError

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
    return TACO(model_config), state, config


# ----------------------------------------------------------------------------- training
# Training checkpoints: orbax CheckpointManager under <workdir>/checkpoints/<step>/state.
# Orbax writes each step into a temporary directory and renames it when every host has
# finished (atomic finalize), so a run killed at any moment leaves only complete steps
# (plus temporaries that the next manager removes).
TRAIN_CHECKPOINTS = "checkpoints"


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


class CheckpointError(RunError, OSError):
    """A training checkpoint that cannot be written, found or restored (one line)."""


def _reason(err: BaseException) -> str:
    """The first line of an exception, shortened: orbax's messages run to pages."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if len(text) > 120:
        text = text[:120] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def save_train_state(manager: ocp.CheckpointManager, step: int, state, force: bool = False) -> bool:
    """Saves `state` at `step` when the interval says so (or `force`); True if it saved.

    A save that fails (or an earlier asynchronous one that failed since) raises a one-line
    CheckpointError: a run must not train on past a checkpoint it believes it has.
    """
    try:
        manager.check_for_errors()
        return manager.save(int(step), args=ocp.args.StandardSave(state), force=force)
    except Exception as err:  # orbax raises many kinds; all mean the same thing here
        raise CheckpointError(f"saving the checkpoint of step {step} failed: {_reason(err)}; "
                              f"the complete ones are kept") from err  # fmt: skip


class SaveWatch:
    """Finds an asynchronous save that failed in the background, at the step it ends.

    Measured on a full disk: the step-20 save failed in orbax's thread while training went
    on to step 30, and only then ~315 lines of tracebacks. `check` is called every step; it
    costs a flag read while a save runs and one existence test when it has ended.
    """

    def __init__(self, manager: ocp.CheckpointManager):
        self._manager = manager
        self._pending: int | None = None

    def saved(self, step: int) -> None:
        """A save of `step` was started."""
        self._pending = int(step)

    def check(self, at_step: int) -> None:
        """Raises CheckpointError when the last save has ended without its step on disk."""
        if self._pending is None or self._manager.is_saving_in_progress():
            return
        step, self._pending = self._pending, None
        try:
            self._manager.check_for_errors()
        except Exception as err:  # see save_train_state
            raise CheckpointError(f"the checkpoint of step {step} failed to write (found at "
                                  f"step {at_step}): {_reason(err)}") from err  # fmt: skip
        # Orbax logs a failed finalize in its thread and carries on: look for the step.
        if jax.process_count() == 1 and not (self._manager.directory / str(step)).exists():
            raise CheckpointError(f"the checkpoint of step {step} failed to write (found at "
                                  f"step {at_step}); see --verbose for orbax's log")  # fmt: skip


def restore_newest(manager: ocp.CheckpointManager, abstract_state=None, step: int | None = None):
    """(restored tree, its step, [(skipped step, why)]): the newest checkpoint that restores.

    With `step`, that checkpoint only. Measured: one truncated array file in the newest step
    gave ~9,900 tracebacks and no fallback; here a step that fails is skipped (never
    deleted) and the next older one is tried. Raises CheckpointError when none restores.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if step is not None:
        if step not in steps:
            have = ", ".join(map(str, sorted(steps))) or "none"
            raise CheckpointError(f"no checkpoint of step {step} in {manager.directory} "
                                  f"(steps there: {have})")  # fmt: skip
        steps = [step]
    if not steps:
        raise CheckpointError(f"no training checkpoint in {manager.directory}")
    skipped = []
    for candidate in steps:
        args = ocp.args.StandardRestore(abstract_state) if abstract_state is not None else (
            ocp.args.StandardRestore())  # fmt: skip
        try:
            with _orbax_quiet():
                return manager.restore(candidate, args=args), candidate, skipped
        except Exception as err:  # noqa: BLE001 (a damaged step: any error of the reader)
            skipped.append((candidate, _reason(err)))
    shown = "; ".join(f"step {s}: {why}" for s, why in skipped)
    raise CheckpointError(f"no checkpoint in {manager.directory} restores ({shown})")


class _orbax_quiet:
    """A damaged step's restore, reported once by us rather than thousands of times by orbax.

    Orbax and tensorstore log every failing read; and the reads still in flight when the
    restore gives up end on a closed event loop, each printing a traceback through
    `sys.unraisablehook` (~22,000 stderr lines for one truncated file). Both are silenced
    for the restore; its leftovers are collected before the hook is given back.
    """

    def __enter__(self):
        import logging

        self._loggers = [logging.getLogger(n) for n in ("absl", "orbax")]
        self._levels = [lg.level for lg in self._loggers]
        for lg in self._loggers:
            lg.setLevel(logging.CRITICAL)
        self._hook = sys.unraisablehook
        sys.unraisablehook = lambda unraisable: None

    def __exit__(self, *exc):
        gc.collect()
        sys.unraisablehook = self._hook
        for lg, level in zip(self._loggers, self._levels, strict=True):
            lg.setLevel(level)


DAMAGED = "checkpoints_damaged"


def set_aside(manager: ocp.CheckpointManager, step: int) -> epath.Path:
    """Moves a step that does not restore to <workdir>/checkpoints_damaged/ (kept, not reused).

    A resumed run would otherwise save its own step of that number into the same place.
    """
    src = epath.Path(manager.directory) / str(step)
    dst = epath.Path(manager.directory).parent / DAMAGED / str(step)
    if dst.exists():
        dst = dst.parent / f"{step}-{uuid.uuid4().hex[:8]}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.rename(dst)
    return dst


def restore_train_state(manager: ocp.CheckpointManager, abstract_state, step: int | None = None):
    """Restores a train state into the shapes/shardings of `abstract_state` (latest step)."""
    return restore_newest(manager, abstract_state, step)[0]


def restore_train_params(workdir: str | os.PathLike, step: int | None = None, report=None):
    """(params as numpy, step) from a training workdir's newest restorable (or given) step.

    `report(line)` is told of each newer step that did not restore (and was skipped).
    """
    manager = train_checkpoint_manager(workdir, use_async=False)
    try:
        # Without a target orbax restores the saved tree as nested dicts; only params are read.
        restored, step, skipped = restore_newest(manager, None, step)
    finally:
        manager.close()
    for bad, why in skipped:
        if report is not None:
            report(f"checkpoint step {bad} does not restore ({why}): skipped, using step {step}")
    return _to_numpy(restored["params"]), int(step)
