"""What `tgic export`, `convert` and `evaluate` may write to: nothing a user made is lost.

An output that exists is refused unless --force, and --force replaces only what these
commands write: a file, the entries an inference checkpoint consists of
(`inference.CHECKPOINT_ENTRIES`; the folder's other files stay), the files an evaluation
writes (`check_evaluation_output`). A folder that holds or is held by the workdir or the
input is refused always. Each check returns a line saying what --force replaces.
"""

from __future__ import annotations

import os
from pathlib import Path


class OutputRefused(ValueError):
    """Writing the output would delete or overwrite something the user made."""


def _local(path: str | os.PathLike) -> Path | None:
    text = os.fspath(path)
    return None if "://" in text else Path(os.path.abspath(os.path.realpath(text)))


def _overlap(out: Path, other: Path) -> bool:
    return out == other or other in out.parents or out in other.parents


def _is_inference_checkpoint(folder: Path) -> bool:
    from tgic_jax.checkpoints.inference import read_inference_config

    try:
        read_inference_config(folder)
    except (OSError, ValueError):
        return False
    return True


def _check_keep(out: str, target: Path, keep: dict[str, str] | None) -> None:
    for what, path in (keep or {}).items():
        other = _local(path)
        if other is not None and _overlap(target, other):
            raise OutputRefused(
                f"{out}: is, is inside or contains {what} ({path}); write the output somewhere else"
            )


def _listed(names: list[str], folder: Path) -> str:
    return ", ".join(n + ("/" if (folder / n).is_dir() else "") for n in names)


def check_output(out: str, force: bool, keep: dict[str, str] | None = None) -> str:
    """Raises OutputRefused when writing `out` could lose a file; `keep`: {what: path}.

    `keep` names what must never be touched (e.g. {"the workdir": RUN}): `out` may be
    neither it, inside it, nor around it. Returns what --force will replace ("" for a new
    output), in words.
    """
    from tgic_jax.checkpoints.inference import own_entries

    target = _local(out)
    if target is None:  # a URL: no local checks
        return ""
    _check_keep(out, target, keep)
    if target.is_file() or target.is_symlink():
        if not force:
            raise OutputRefused(f"{out}: exists (use --force to replace it)")
        return f"replacing {out}"
    if target.is_dir() and any(target.iterdir()):
        if not _is_inference_checkpoint(target):
            raise OutputRefused(
                f"{out}: a folder that is not empty and is not an inference "
                "checkpoint; nothing was written (name a new folder)"
            )
        if not force:
            raise OutputRefused(
                f"{out}: an inference checkpoint exists there (use --force to replace it)"
            )
        ours, others = own_entries(target)
        kept = f"; keeping {_listed(others, target)}" if others else ""
        return f"replacing the inference checkpoint in {out} ({_listed(ours, target)}){kept}"
    return ""


def check_evaluation_output(out: str, force: bool) -> str:
    """Raises OutputRefused when `out` holds an earlier evaluation's files and not `force`.

    Returns what --force will replace ("" when nothing): `driver.evaluate` removes exactly
    those entries (`driver.OUTPUT_ENTRIES`) before it writes, never the folder's others.
    """
    from tgic_jax.evaluation.driver import existing_outputs

    target = _local(out)
    if target is None:
        return ""
    if target.exists() and not target.is_dir():
        raise OutputRefused(f"{out}: exists and is not a folder (name a folder for --out)")
    found = existing_outputs(target)
    if not found:
        return ""
    shown = _listed([p.name for p in found[:6]], target) + (", ..." if len(found) > 6 else "")
    if not force:
        raise OutputRefused(
            f"{out}: holds an evaluation's files ({shown}); use --force to "
            "replace them, or name another folder"
        )
    return f"replacing the evaluation in {out} ({shown}); other files there are kept"
