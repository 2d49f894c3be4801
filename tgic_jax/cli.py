"""The `tgic` command line: convert, compress, decompress, evaluate, export.

Each subcommand's work lives in its module; this file only wires arguments to it.
The subcommand modules are imported when the parser is built (about 2 s for --help).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _add_convert_arguments(p: argparse.ArgumentParser) -> None:
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


def _run_convert(args: argparse.Namespace) -> int:
    from tgic_jax.checkpoint import save_inference  # noqa: PLC0415
    from tgic_jax.convert import from_official_state_dict, infer_model_config, load_state_dict_file  # noqa: PLC0415

    if not os.path.isfile(args.input):
        print(f"tgic convert: {args.input}: no such file", file=sys.stderr)
        return 2
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
    )
    print(f"wrote {out} in {time.time() - t0:.1f} s")
    return 0


def parameter_summary(params) -> str:
    """A table of parameter counts per top-level module and the total."""
    import jax  # noqa: PLC0415

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all subcommands."""
    parser = argparse.ArgumentParser(prog="tgic", description="TACO text-guided image codec (JAX)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "convert", help="convert the authors' PyTorch checkpoint to an orbax checkpoint"
    )
    _add_convert_arguments(p)
    p.set_defaults(run=_run_convert)

    from tgic_jax import cli_codec, environment, evaluation, train_lib  # noqa: PLC0415

    commands = [
        ("compress", "compress images to .tgic files (needs each caption)",
         cli_codec.add_compress_arguments, cli_codec.run_compress),
        ("decompress", "decode .tgic files to PNG (no caption needed)",
         cli_codec.add_decompress_arguments, cli_codec.run_decompress),
        ("evaluate", "rate-distortion evaluation with real bitstreams",
         evaluation.add_cli_arguments, evaluation.run_from_args),
        ("export", "export an inference checkpoint from a training workdir",
         train_lib.add_export_arguments, train_lib.run_export),
        ("env", "what this host sees: devices, processes, mesh, TF and GPUs, versions",
         environment.add_env_arguments, environment.run_env),
    ]  # fmt: skip
    for name, help_text, add_arguments, run in commands:
        p = sub.add_parser(name, help=help_text)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tgic` command."""
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # clear one-line errors for bad input
        print(f"tgic {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
