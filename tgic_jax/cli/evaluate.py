"""`tgic evaluate` (or `python -m tgic_jax.cli.evaluate`): arguments -> `evaluate_checkpoints`.

Only the wiring of the command line: which set the arguments name, which options they
set. The evaluation itself is `tgic_jax.evaluation.driver` (driver) and `evaluation_summary`.
Exit code: 0 when everything ran, 1 with failures listed, 2 if nothing could run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tgic_jax.cli import outputs, repository
from tgic_jax.evaluation import baselines, driver, plots, sets


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `tgic evaluate`."""
    p.add_argument(
        "--checkpoint",
        nargs="+",
        required=True,
        help="inference checkpoint directories (one per rate point)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--images", default="", help="folder of images (default: Kodak in data/)")
    p.add_argument(
        "--captions",
        default="",
        help="captions JSON {image name: caption or [captions]} (see tgic_jax/captions.py)",
    )
    p.add_argument(
        "--caption-index",
        type=int,
        default=0,
        help="which caption of a list to code (0-based; default 0, the first)",
    )
    p.add_argument(
        "--dataset",
        choices=("folder", "kodak", "clic", "coco"),
        default=None,
        help="folder (with --images), kodak (data/kodak), clic or coco (TFDS)",
    )
    p.add_argument("--split", default=None, help="TFDS split (clic: validation, coco: val)")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir")
    p.add_argument("--max-images", type=int, default=0, help="0: all")
    p.add_argument(
        "--caption-mode",
        choices=sets.CAPTION_MODES,
        default="first",
        help="first caption (default) or best_lpips (oracle, labelled)",
    )
    p.add_argument(
        "--ablation",
        action="store_true",
        help="also code with the empty and the mismatched (shifted) caption",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=driver.VARIANTS,
        default=None,
        help="caption variants to run (default: correct; --ablation: all)",
    )
    p.add_argument(
        "--jpeg-qualities",
        type=int,
        nargs="*",
        default=list(baselines.DEFAULT_QUALITIES),
        help="empty: no JPEG baseline",
    )
    p.add_argument(
        "--anchors",
        nargs="*",
        default=None,
        help="anchor JSON files (default: the shipped ones for the data set)",
    )
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--no-jpeg-lpips", action="store_true", help="skip LPIPS of the JPEG points")
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="time the first coding of each shape too (includes JIT compile)",
    )
    p.add_argument("--no-recon", action="store_true", help="do not write reconstructions")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse larger images")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="replace an earlier evaluation's files in --out (the folder's others are kept)",
    )


def build_eval_set(args) -> sets.EvalSet:
    """The EvalSet named by the CLI arguments."""
    dataset = args.dataset or ("folder" if args.images else "kodak")
    limit = args.max_images or None
    if dataset == "folder":
        if not args.images:
            raise ValueError("--dataset folder needs --images DIR")
        return sets.folder_set(
            args.images,
            args.captions or None,
            limit,
            caption_index=getattr(args, "caption_index", 0),
        )
    if dataset == "kodak":
        return sets.kodak_set(args.images or repository.kodak_dir(), limit)
    return sets.tfds_set(dataset, args.split, args.data_dir, limit, args.caption_mode)


def options_from_args(args: argparse.Namespace) -> driver.EvalOptions:
    """The EvalOptions the CLI arguments ask for."""
    anchors = None
    if args.anchors is not None:
        anchors = [plots.load_anchor(a) for a in args.anchors]
    variants = tuple(args.variants or (driver.VARIANTS if args.ablation else ("correct",)))
    return driver.EvalOptions(
        variants=variants,
        jpeg_qualities=tuple(args.jpeg_qualities or ()),
        lpips=not args.no_lpips,
        jpeg_lpips=not args.no_jpeg_lpips,
        warmup=not args.no_warmup,
        save_recon=not args.no_recon,
        anchors=anchors,
        progress=not args.no_progress,
        max_pixels=args.max_pixels,
    )


def run_from_args(
    args: argparse.Namespace,
    codec_loader: Callable[[str], driver.EvaluatedCodec] = driver.load_codec,
) -> int:
    """`tgic evaluate`: 0 when everything ran, 1 with failures listed, 2 if nothing could."""
    try:
        replacing = outputs.check_evaluation_output(args.out, getattr(args, "force", False))
    except outputs.OutputRefused as err:  # a usage error, as compress's (status 2)
        print(f"tgic evaluate: error: {err}", file=sys.stderr)
        return 2
    try:
        eval_set = build_eval_set(args)
        if replacing:
            print(replacing)
        eval_set.caption_mode = args.caption_mode
        summary = driver.evaluate_checkpoints(
            args.checkpoint, eval_set, args.out, options_from_args(args), codec_loader
        )
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((Path(args.out) / "summary.md").read_text())
    return 1 if summary["failures"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    """python -m tgic_jax.cli.evaluate ... (same as `tgic evaluate`)."""
    parser = argparse.ArgumentParser(
        description="Rate-distortion evaluation of inference checkpoints"
    )
    add_cli_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
