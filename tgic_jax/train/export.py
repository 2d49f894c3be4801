"""A training workdir -> an inference checkpoint: `export_inference`, and the run's config.json.

`tgic export`, eval.py and the demo call `export_inference`; it reads only the workdir (the
run's config.json and its newest restorable or best-by-metric step), so it is safe beside a
run that is still writing it.
"""

from __future__ import annotations

import json
import os
import sys

import flax
import ml_collections
import numpy as np
from etils import epath

from tgic_jax.checkpoints import inference
from tgic_jax.config import RunConfig
from tgic_jax.train import checkpoint, selection


def write_workdir_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> None:
    """Writes the run's config.json (read back by `load_workdir_config`)."""
    (inference.as_path(workdir) / "config.json").write_text(config.to_json(indent=1))


def load_workdir_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config a training workdir was started with (its config.json)."""
    text = (inference.as_path(workdir) / "config.json").read_text()
    return ml_collections.ConfigDict(json.loads(text))


def export_inference(
    workdir: str | os.PathLike,
    out: str | os.PathLike,
    step: int | None = None,
    select: str | None = None,
) -> epath.Path:
    """Writes an inference checkpoint (params, config, coding tables, integer entropy path).

    No optimizer state.

    select: a kept best checkpoint ('best_psnr', 'best_ms_ssim', 'best_bpp', 'best_lpips')
    instead of the latest (or given) step.
    """
    run = RunConfig.from_json((inference.as_path(workdir) / "config.json").read_text())
    if select:
        if step is not None:
            raise ValueError("give --step or --select, not both")
        params, info = selection.load_best_params(workdir, select)
        step = int(info["step"])
    else:
        params, step = checkpoint.restore_train_params(
            workdir, step, report=lambda line: print(line, file=sys.stderr, flush=True)
        )
    bad = [
        k for k, v in flax.traverse_util.flatten_dict(params).items() if not np.isfinite(v).all()
    ]
    if bad:  # coding tables of NaN pmfs fail deep in the range coder otherwise
        raise ValueError(
            f"step {step} has non-finite parameters ({'/'.join(bad[0])}, "
            f"{len(bad)} arrays): export an earlier --step"
        )
    return selection.save_params(out, run, params, step)
