"""`tgic export`: a training workdir -> an inference checkpoint (or the authors' format).

The wiring of the command line around `trainer.export_inference`, and the authors' format:
a model from a workdir or an inference checkpoint, written by `authors.save_state_dict_file`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tgic_jax.checkpoints import inference
from tgic_jax.checkpoints.authors import (
    AUTHORS_HEADS,
    ConversionError,
    save_state_dict_file,
    to_official_state_dict,
)
from tgic_jax.cli.outputs import OutputRefused, check_output
from tgic_jax.model.taco import TACO, ModelConfig
from tgic_jax.train import checkpoint as train_checkpoint
from tgic_jax.train import selection, trainer


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `tgic export`."""
    p.add_argument(
        "--format",
        choices=["inference", "authors"],
        default="inference",
        help="authors: the authors' state_dict, to --out *.pth.tar (needs torch), *.npz or "
        "*.safetensors; --workdir may then also be an inference checkpoint",
    )
    p.add_argument("--workdir", required=True, help="training workdir (with checkpoints/)")
    p.add_argument("--out", required=True, help="inference checkpoint directory to write")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument(
        "--select",
        choices=sorted(selection.BEST_BY),
        default=None,
        help="export a best-by-evaluation checkpoint instead of a step",
    )
    p.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="replace an existing output (inference checkpoint or file)",
    )


def run_export(args: argparse.Namespace) -> int:
    """`tgic export` handler."""
    try:
        replacing = check_output(args.out, args.force, {"the workdir": args.workdir})
    except OutputRefused as err:  # a usage error, as compress's (status 2)
        print(f"tgic export: error: {err}", file=sys.stderr)
        return 2
    if replacing:
        print(replacing)
    if args.format == "authors":
        if args.select:
            print("tgic export: --select works with --format tgic only", file=sys.stderr)
            return 2
        print(f"wrote {export_authors(args.workdir, args.out, args.step)}")
        return 0
    path = trainer.export_inference(args.workdir, args.out, args.step, args.select)
    print(f"wrote {path}")
    return 0


def load_model_and_params(source: str | os.PathLike, step: int | None = None):
    """(model, params) from an inference checkpoint or a training workdir (latest or `step`)."""
    source = Path(source)
    if not (source / "config.json").is_file():
        raise FileNotFoundError(
            f"{source}: neither an inference checkpoint nor a training workdir (no config.json)"
        )
    if (source / train_checkpoint.TRAIN_CHECKPOINTS).is_dir():
        cfg = json.loads((source / "config.json").read_text())
        params, _ = train_checkpoint.restore_train_params(source, step)
        return TACO(ModelConfig.from_config(cfg["model"])), params
    if step is not None:
        raise ValueError(f"{source}: --step applies to a training workdir, not a checkpoint")
    model, variables, _ = inference.load_inference(source)
    return model, variables["params"]


def export_authors(
    source: str | os.PathLike, out: str | os.PathLike, step: int | None = None
) -> Path:
    """Writes the authors' checkpoint (see `save_state_dict_file`) of a model trained here."""
    model, params = load_model_and_params(source, step)
    if model.config.heads != AUTHORS_HEADS:
        # The tensors would load (head count is no shape), and silently compute otherwise.
        raise ConversionError(
            f"{source}: the model has {model.config.heads} attention heads; the authors' code "
            f"hard-codes {AUTHORS_HEADS} (num_attn_head), so their model would compute differently"
        )
    return save_state_dict_file(to_official_state_dict(model, {"params": params}), out)
