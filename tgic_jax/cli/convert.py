"""`tgic convert`: the authors' PyTorch checkpoint -> a tgic_jax inference checkpoint.

The conversion is `tgic_jax.checkpoints.authors` (state_dict -> config + variables) and
`inference.save_inference`; this module reads the arguments and reports what it did.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from tgic_jax.cli.outputs import OutputRefused, check_output


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `tgic convert`."""
    p.add_argument(
        "input", help="the authors' .pth.tar (needs torch) or an .npz of their state_dict"
    )
    p.add_argument("output_dir", help="where to write the inference checkpoint")
    p.add_argument(
        "--heads", type=int, default=8, help="attention heads (8 in every released model)"
    )
    p.add_argument(
        "--text-encoder",
        default="clip",
        choices=["clip", "minilm"],
        help="text encoder the checkpoint expects (the authors used CLIP ViT-B/32)",
    )
    p.add_argument(
        "--text-path", default="openai/clip-vit-base-patch32", help="hub id or local folder"
    )
    p.add_argument(
        "-f", "--force", action="store_true", help="replace an existing inference checkpoint"
    )


def run_convert(args: argparse.Namespace) -> int:
    """`tgic convert` handler: the authors' checkpoint -> our inference checkpoint."""
    from tgic_jax.checkpoints.authors import (
        from_official_state_dict,
        infer_model_config,
        load_state_dict_file,
    )
    from tgic_jax.checkpoints.inference import save_inference

    if not os.path.isfile(args.input):
        print(f"tgic convert: {args.input}: no such file", file=sys.stderr)
        return 2
    try:
        replacing = check_output(args.output_dir, args.force, {"the input": args.input})
    except OutputRefused as err:  # a usage error, as compress's (status 2)
        print(f"tgic convert: error: {err}", file=sys.stderr)
        return 2
    if replacing:
        print(replacing)
    t0 = time.time()
    state_dict = load_state_dict_file(args.input)
    cfg = infer_model_config(state_dict, args.heads)
    model, variables = from_official_state_dict(state_dict, heads=args.heads)
    print(f"read {len(state_dict)} tensors from {args.input}")
    print(
        f"model: N={cfg.N} M={cfg.M} slices={list(cfg.slices)} "
        f"text width={cfg.text_dim} heads={cfg.heads}"
    )
    summary = parameter_summary(variables["params"])
    print(summary)
    text = {"encoder": args.text_encoder, "path": args.text_path, "max_length": 38}
    out = save_inference(
        args.output_dir,
        cfg,
        variables["params"],
        text_config=text,
        extra={"source": os.path.basename(args.input)},
    )  # with the integer entropy path: its files decode bit for bit on any device
    print(f"wrote {out} in {time.time() - t0:.1f} s")
    return 0


def parameter_summary(params) -> str:
    """A table of parameter counts per top-level module and the total."""
    import jax

    rows = []
    for name in sorted(params):
        leaves = jax.tree_util.tree_leaves(params[name])
        rows.append((name, len(leaves), sum(int(a.size) for a in leaves)))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'module':<{width}}  tensors  parameters"]
    lines += [f"{n:<{width}}  {t:7d}  {c:>10,}" for n, t, c in rows]
    lines.append(
        f"{'total':<{width}}  {sum(r[1] for r in rows):7d}  {sum(r[2] for r in rows):>10,}"
    )
    return "\n".join(lines)
