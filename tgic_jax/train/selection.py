"""Per-epoch selection: evaluate the current params, keep the best by each metric.

Each evaluation adds a row to workdir/eval.csv; params that beat a best are kept as an
inference checkpoint (`checkpoints.inference`, the format `tgic export` writes) in
workdir/best/<name>/, with the evaluation's metrics.json beside its config.json.
`tgic export --select <name>` exports one of them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import sys
from typing import Any

import jax
from etils import epath

from tgic_jax.checkpoints import inference
from tgic_jax.coding.tables import build_tables
from tgic_jax.config import EvalConfig, RunConfig
from tgic_jax.evaluation import sets
from tgic_jax.files import replace_dir
from tgic_jax.model.layers import Params
from tgic_jax.model.taco import TACO, ModelConfig
from tgic_jax.train.metrics_writer import announce

BEST_DIR = "best"
# name -> (metric in the evaluation, True when higher is better); the authors' four.
BEST_BY = {
    "best_psnr": ("psnr_real", True),
    "best_ms_ssim": ("ms_ssim", True),
    "best_bpp": ("bpp_real", False),
    "best_lpips": ("lpips", False),
}
EVAL_CSV = "eval.csv"
EVAL_COLUMNS = (
    "step",
    "epoch",
    "bpp_real",
    "bpp_estimate",
    "psnr_real",
    "psnr",
    "ms_ssim",
    "lpips",
    "lpips_zero_one",
)


# ----------------------------------------------------------------------------- evaluation
def eval_set_of(eval_config) -> sets.EvalSet:
    """The images of config.eval's folder (`sets.captioned_folder_set`, as eval.py lists them)."""
    eval_config = EvalConfig.from_config(eval_config)
    return sets.captioned_folder_set(
        eval_config.folder, eval_config.captions or "", int(eval_config.max_images or 0)
    )


def evaluate_params(
    model: TACO,
    params: Params,
    text_encoder,
    eval_set: sets.EvalSet,
    lpips_fn=None,
    keep_images: int = 0,
) -> dict[str, Any]:
    """`driver.evaluate_means` of the current parameters (a host copy; process 0)."""
    from tgic_jax.coding.caption_coder import CaptionCoder
    from tgic_jax.evaluation import driver  # the codec and LPIPS load only when evaluating

    variables = {"params": jax.device_get(params)}
    codec = CaptionCoder(model, variables, text_encoder, label="train")
    return driver.evaluate_means(codec, eval_set, lpips_fn, keep_images)


def evaluate_and_record(
    model, params, text_encoder, run, lpips_fn, writer, workdir, step: int, epoch: int
) -> None:
    """One evaluation of the loop: TensorBoard, eval.csv and the best checkpoints.

    `run`: the RunConfig (or its ConfigDict): eval's images, model and text for the bests.

    A failing evaluation does not stop training: the run's checkpoints are intact and
    eval.py can evaluate them afterwards, while a days-long run lost to, say, one
    unreadable evaluation image is not. It is reported loudly instead (an ERROR log with
    the traceback and a line on stderr) and writes no eval.csv row: never a mean over the
    images that happened to work.
    """
    run = RunConfig.from_config(run)
    eval_config = run.eval
    try:
        ev = evaluate_params(
            model,
            params,
            text_encoder,
            eval_set_of(eval_config),
            lpips_fn,
            int(eval_config.images_to_log),
        )
    except Exception as err:  # reported below; training goes on (see above)
        logging.exception("evaluation at step %d failed", step)
        print(
            f"[eval] step {step} FAILED, no eval.csv row: {type(err).__name__}: {err}",
            file=sys.stderr,
            flush=True,
        )
        return
    writer.write_images(step, ev.pop("images", []))
    writer.write(step, ev, "eval")
    best = record_evaluation(workdir, run, step, epoch, ev, params)
    if best:
        announce(f"[eval] step {step} new {', '.join(best)}")


# ----------------------------------------------------------------------------- best
def read_best(workdir: str | os.PathLike) -> dict[str, dict]:
    """{name: its metrics.json} of the best checkpoints kept in workdir/best/."""
    out = {}
    for name in BEST_BY:
        path = inference.as_path(workdir) / BEST_DIR / name / "metrics.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
    return out


def save_params(
    path: str | os.PathLike,
    run,
    params: Params,
    step: int,
    tables: dict | None = None,
    integer_entropy: dict | bool = True,
) -> epath.Path:
    """An inference checkpoint of a run's `params` at `step` (its model and text config;
    `run`: a RunConfig or its ConfigDict).

    Like every inference checkpoint it carries the integer entropy path: `integer_entropy`
    when given (`inference.integer_entropy_of` these params), else (True) calibrated here.
    """
    run = RunConfig.from_config(run)
    model_config = ModelConfig.from_config(run.model)
    text = run.text
    return inference.save_inference(
        path,
        model_config,
        params,
        text_config={**dataclasses.asdict(text), "width": text.width or model_config.text_dim},
        tables=tables,
        extra={"train_step": int(step)},
        integer_entropy=integer_entropy,
    )


def _save_best(folder: epath.Path, run, params: Params, info: dict, coding: tuple) -> None:
    """The checkpoint and its metrics.json, written beside and renamed: never a half folder.

    coding: (tables, integer entropy path) of `params`.
    """
    tmp = folder.parent / (folder.name + ".tmp")
    if tmp.exists():
        tmp.rmtree()
    save_params(tmp, run, params, info["step"], *coding)
    (tmp / "metrics.json").write_text(json.dumps(info, indent=1))
    replace_dir(tmp, folder)


def _coding_of(run, params: Params) -> tuple[dict, dict]:
    """(coding tables, calibrated integer entropy path) of `params`: what every inference
    checkpoint of them stores, computed once for all the bests one evaluation sets."""
    tables = build_tables(params)
    model = TACO(ModelConfig.from_config(RunConfig.from_config(run).model))
    return tables, inference.integer_entropy_of(model, params, tables)


def load_best_params(workdir: str | os.PathLike, name: str) -> tuple[Params, dict]:
    """(params, metrics) of the best checkpoint `name` (e.g. 'best_psnr') of a workdir."""
    if name not in BEST_BY:
        raise ValueError(f"unknown selection {name!r}: one of {sorted(BEST_BY)}")
    folder = inference.as_path(workdir) / BEST_DIR / name
    if not (folder / "metrics.json").is_file():
        raise FileNotFoundError(f"no {name} checkpoint in {folder.parent} (no evaluation yet?)")
    _, variables, _ = inference.load_inference(folder)
    return variables["params"], json.loads((folder / "metrics.json").read_text())


def record_evaluation(
    workdir: str | os.PathLike,
    run,
    step: int,
    epoch: int,
    scalars: dict,
    params: Params,
) -> list:
    """Appends a row to workdir/eval.csv and keeps params that beat a best; returns those.

    `run`: the RunConfig (or its ConfigDict) whose model and text the bests record.
    """
    workdir = inference.as_path(workdir)
    csv_path = workdir / EVAL_CSV
    rows = io.StringIO()
    writer = csv.DictWriter(rows, fieldnames=EVAL_COLUMNS, extrasaction="ignore")
    if not csv_path.is_file():
        writer.writeheader()
    writer.writerow({"step": step, "epoch": epoch, **scalars})
    # Rewritten whole: object stores (gs://) have no append.
    old = csv_path.read_text() if csv_path.is_file() else ""
    csv_path.write_text(old + rows.getvalue())
    best = read_best(workdir)
    improved = []
    params, coding = inference.to_numpy(params), None  # one host copy for every best set
    for name, (key, higher) in BEST_BY.items():
        if key not in scalars:
            continue
        old = best.get(name, {}).get(key)
        if old is None or (scalars[key] > old if higher else scalars[key] < old):
            if coding is None:  # once per evaluation, shared by the bests it sets
                coding = _coding_of(run, params)
            info = {"step": step, "epoch": epoch, **scalars}
            _save_best(workdir / BEST_DIR / name, run, params, info, coding)
            improved.append(name)
    return improved
