"""`tgic export`: a training workdir -> an inference checkpoint (or the authors' format).

Only the wiring of the command line; the work is `train_lib.export_inference` and
`convert.export_authors`.
"""

from __future__ import annotations

import argparse
import sys

from tgic_jax.cli.outputs import OutputRefused, check_output
from tgic_jax.train import trainer as train_lib


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `tgic export`."""
    p.add_argument(
        "--format", choices=["inference", "authors"], default="inference",
        help="authors: the authors' state_dict, to --out *.pth.tar (needs torch), *.npz or "
        "*.safetensors; --workdir may then also be an inference checkpoint",
    )  # fmt: skip
    p.add_argument("--workdir", required=True, help="training workdir (with checkpoints/)")
    p.add_argument("--out", required=True, help="inference checkpoint directory to write")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--select", choices=sorted(train_lib.BEST_BY), default=None,
                   help="export a best-by-evaluation checkpoint instead of a step")  # fmt: skip
    p.add_argument("-f", "--force", action="store_true",
                   help="replace an existing output (inference checkpoint or file)")  # fmt: skip


def run_export(args: argparse.Namespace) -> int:
    """`tgic export` handler."""
    try:
        check_output(args.out, args.force, {"the workdir": args.workdir})
    except OutputRefused as err:  # a usage error, as compress's (status 2)
        print(f"tgic export: error: {err}", file=sys.stderr)
        return 2
    if args.format == "authors":
        from tgic_jax.model.convert import export_authors

        if args.select:
            print("tgic export: --select works with --format tgic only", file=sys.stderr)
            return 2
        print(f"wrote {export_authors(args.workdir, args.out, args.step)}")
        return 0
    path = train_lib.export_inference(args.workdir, args.out, args.step, args.select)
    print(f"wrote {path}")
    return 0
