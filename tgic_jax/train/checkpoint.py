"""Training checkpoints, through orbax: the train state under <workdir>/checkpoints/<step>.

Orbax writes each step into a temporary directory and renames it when every host has
finished (atomic finalize), so a run killed at any moment leaves only complete steps
(plus temporaries that the run's next manager removes). Readers (export, evaluation) open
a workdir with `read_only_checkpoint_manager`: it never cleans, rotates, creates or locks
anything, so a live run's save in progress is left alone. Inference exports are
`tgic_jax.checkpoints.inference`.
"""

from __future__ import annotations

import errno
import gc
import os
import re
import sys
import uuid

import jax
import orbax.checkpoint as ocp
from etils import epath

from tgic_jax.checkpoints.inference import as_path, to_numpy
from tgic_jax.train.lifecycle.errors import RunError

TRAIN_CHECKPOINTS = "checkpoints"


def train_checkpoint_manager(
    workdir: str | os.PathLike, every_steps: int = 1, keep: int = 3, use_async: bool = True
) -> ocp.CheckpointManager:
    """A manager that keeps `keep` steps and writes asynchronously.

    every_steps: orbax's own save interval. The training loop passes 1 and decides itself
    when to save (`cadence`), so every save it asks for is made, and only those: orbax's
    interval would also save a run's first step.
    """
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(1, int(every_steps)),
        max_to_keep=int(keep) if keep else None,
        enable_async_checkpointing=use_async,
        cleanup_tmp_directories=True,
        create=True,
    )
    return ocp.CheckpointManager(as_path(workdir) / TRAIN_CHECKPOINTS, options=options)


def read_only_checkpoint_manager(workdir: str | os.PathLike) -> ocp.CheckpointManager:
    """A manager that only lists and restores a workdir's finalized steps; it writes nothing.

    The run's own manager removes "temporary directories" when it is created: opened by a
    reader beside a live run, that was the run's save in progress (the run then failed with
    "Save failed: 834/834 params are missing .zarray"). Read-only, orbax skips that, the
    root metadata, rotation and every save.
    """
    options = ocp.CheckpointManagerOptions(
        read_only=True,
        create=False,
        cleanup_tmp_directories=False,
        enable_async_checkpointing=False,
        save_interval_steps=0,
    )
    import logging

    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # orbax warns "Given directory is read only"
    try:
        return ocp.CheckpointManager(as_path(workdir) / TRAIN_CHECKPOINTS, options=options)
    finally:
        absl_logger.setLevel(level)


class CheckpointError(RunError, OSError):
    """A training checkpoint that cannot be written, found or restored (one line)."""


# What a failed write says in words, by errno (tensorstore puts it into its message as
# os_error_code='28'); a file-size limit (ulimit -f) fails as EFBIG.
_ERRNO_WORDS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "a file would exceed the file-size limit (ulimit -f)",
}
_ERRNO_TEXTS = {
    "No space left on device": errno.ENOSPC,
    "File too large": errno.EFBIG,
    "Disk quota exceeded": errno.EDQUOT,
}


def _errno_of(err: BaseException) -> int | None:
    """The errno of a failed write anywhere in the exception's chain, else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(getattr(err, "errno", None), int) and err.errno in _ERRNO_WORDS:
            return err.errno
        text = str(err)
        found = re.search(r"os_error_code='?(\d+)", text)
        if found and int(found[1]) in _ERRNO_WORDS:
            return int(found[1])
        for words, code in _ERRNO_TEXTS.items():
            if words in text:
                return code
        err = err.__cause__ or err.__context__
    return None


def _reason(err: BaseException) -> str:
    """The first line of an exception, shortened (orbax's messages run to pages), after
    "disk full" (or the file-size limit) when that is why it failed."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if len(text) > 120:
        text = text[:120] + "..."
    shown = f"{type(err).__name__}: {text}" if text else type(err).__name__
    code = _errno_of(err)
    return f"{_ERRNO_WORDS[code]}: {shown}" if code is not None else shown


def save_train_state(manager: ocp.CheckpointManager, step: int, state, force: bool = False) -> bool:
    """Saves `state` at `step` when the interval says so (or `force`); True if it saved.

    A save that fails (or an earlier asynchronous one that failed since) raises a one-line
    CheckpointError: a run must not train on past a checkpoint it believes it has.
    """
    try:
        return manager.save(int(step), args=ocp.args.StandardSave(state), force=force)
    except Exception as err:  # orbax raises many kinds; all mean the same thing here
        raise CheckpointError(
            f"saving the checkpoint of step {step} failed: {_reason(err)}; "
            f"the complete ones are kept"
        ) from err


class SaveWatch:
    """Finds an asynchronous save that failed in the background, at the step it ends.

    Orbax writes in its own threads, so a full disk surfaces there, steps later, unless
    someone asks. `check` is called every step; it costs a flag read while a save runs and
    one existence test when it has ended.
    """

    def __init__(self, manager: ocp.CheckpointManager):
        self._manager = manager
        self._pending: int | None = None

    def save(self, step: int, state, force: bool = False) -> bool:
        """`save_train_state`, after making sure the previous save did not fail (an error of
        the previous save is named after its own step, not this one)."""
        if self._pending is not None:
            # Orbax's save would wait for it too, and would report its failure as its own.
            self._verdict(step, wait=True)
        else:
            self._raise_if_failed(step)
        started = save_train_state(self._manager, step, state, force)
        if started:
            self._pending = int(step)
        return started

    def _raise_if_failed(self, at_step: int, wait: bool = False) -> None:
        try:
            if wait:
                self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as err:  # see save_train_state
            which = (
                f"the checkpoint of step {self._pending}"
                if self._pending is not None
                else "a checkpoint of an earlier step"
            )
            raise CheckpointError(
                f"{which} failed to write (found at step {at_step}): {_reason(err)}"
            ) from err

    def finish(self, at_step: int) -> None:
        """Waits for the saves in flight; raises CheckpointError if one failed (the run's
        last save included: its error would otherwise end the process in a traceback)."""
        if self._pending is not None:
            self._verdict(at_step, wait=True)
        else:
            self._raise_if_failed(at_step, wait=True)

    def check(self, at_step: int) -> None:
        """Raises CheckpointError when the last save has ended without its step on disk."""
        if self._pending is None or self._manager.is_saving_in_progress():
            return
        self._verdict(at_step)

    def _verdict(self, at_step: int, wait: bool = False) -> None:
        """Raises CheckpointError if the ended (or, with `wait`, awaited) save failed: an
        error, or no step on disk."""
        self._raise_if_failed(at_step, wait)
        step, self._pending = self._pending, None
        # Orbax logs a failed finalize in its thread and carries on: look for the step.
        if jax.process_count() == 1 and not (self._manager.directory / str(step)).exists():
            raise CheckpointError(
                f"the checkpoint of step {step} failed to write (found at "
                f"step {at_step}); see --verbose for orbax's log"
            )


def restore_newest(manager: ocp.CheckpointManager, abstract_state=None, step: int | None = None):
    """(restored tree, its step, [(skipped step, why)]): the newest checkpoint that restores.

    With `step`, that checkpoint only. A step that fails (a truncated array file) is
    skipped, never deleted, and the next older one is tried, so one damaged step does not
    block the run. Raises CheckpointError when none restores.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if step is not None:
        if step not in steps:
            have = ", ".join(map(str, sorted(steps))) or "none"
            raise CheckpointError(
                f"no checkpoint of step {step} in {manager.directory} (steps there: {have})"
            )
        steps = [step]
    if not steps:
        raise CheckpointError(f"no training checkpoint in {manager.directory}")
    skipped = []
    for candidate in steps:
        args = (
            ocp.args.StandardRestore(abstract_state)
            if abstract_state is not None
            else (ocp.args.StandardRestore())
        )
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


def _listing(workdir) -> list[int]:
    """The finalized steps a fresh read-only manager sees now."""
    manager = read_only_checkpoint_manager(workdir)
    try:
        return manager.all_steps()
    finally:
        manager.close()


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


def restore_train_params(workdir: str | os.PathLike, step: int | None = None, report=None):
    """(params as numpy, step) from a training workdir's newest restorable (or given) step.

    Read-only (`read_only_checkpoint_manager`): safe beside the run that writes the workdir.
    `report(line)` is told of each newer step that did not restore (and was skipped).
    """
    if not (as_path(workdir) / TRAIN_CHECKPOINTS).is_dir():
        raise CheckpointError(
            f"{workdir}: no training checkpoints (no {TRAIN_CHECKPOINTS}/ "
            "folder): not a training workdir, or no step saved yet"
        )
    # A live run deletes its old steps (it keeps ckpt.keep), maybe the ones being read: list
    # again while the listing moves. Under load a restore outlasted three listings (a run
    # saving every 2 steps, keeping 3, beside a busy machine), hence the generous bound.
    attempts = 20
    for attempt in range(attempts):
        manager = read_only_checkpoint_manager(workdir)
        listed = sorted(manager.all_steps())
        try:
            # Without a target orbax restores the saved tree as nested dicts; only params
            # are read.
            restored, found, skipped = restore_newest(manager, None, step)
            break
        except CheckpointError:  # give up when nothing changed meanwhile: really damaged
            if attempt == attempts - 1 or sorted(_listing(workdir)) == listed:
                raise
        finally:
            manager.close()
    # Steps the run deleted while they were read are not damaged: say nothing of them.
    skipped = [(bad, why) for bad, why in skipped if (manager.directory / str(bad)).exists()]
    step = found
    for bad, why in skipped:
        if report is not None:
            report(f"checkpoint step {bad} does not restore ({why}): skipped, using step {step}")
    return to_numpy(restored["params"]), int(step)
