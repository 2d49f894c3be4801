"""The `tgic` command line: convert, compress, decompress, evaluate, export.

Each subcommand's work lives in its module; this file only wires arguments to it, and
imports only the module of the command being run (`tgic compress` never imports the
training or evaluation code).

Quiet by default: third-party libraries' log lines and warnings (TensorFlow's CUDA plugin
registration, transformers' deprecation and "weights not used" notes, absl/orbax lines) are
silenced; `--verbose` shows them. A persistent JAX compilation cache makes the second call
of a command fast: see `enable_compilation_cache`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

CACHE_ENV = "TGIC_JAX_CACHE"  # a folder, or "0"/"off" to turn the compilation cache off
_FAST_EXIT = False  # set by main for the commands whose work is done when it returns


def _quiet_third_party(verbose: bool) -> None:
    """Silences other libraries' logging before they are imported (unless verbose)."""
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    # TF's CUDA plugin registration lines are logged at ERROR level during its import:
    # level 3 is the only one that hides them. TF is imported only for TFDS inputs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"tgic_jax(\.|$)")
    for name in ("absl", "orbax", "tensorflow", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # JAX derives TF_CPP_MIN_LOG_LEVEL from its logger's level when it is imported
    # (ERROR -> 2, which lets TF's CUDA registration lines through): CRITICAL keeps 3.
    logging.getLogger("jax").setLevel(logging.CRITICAL)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass


def compilation_cache_dir() -> Path | None:
    """Where compiled XLA programs persist between calls; None when turned off.

    $TGIC_JAX_CACHE if set ("0", "off", "" or "none": no cache), else
    $XDG_CACHE_HOME/tgic_jax/jax_cache, else ~/.cache/tgic_jax/jax_cache.
    """
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "0", "off", "none", "false") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "tgic_jax" / "jax_cache"


def enable_compilation_cache(folder: Path | None) -> Path | None:
    """Turns JAX's persistent compilation cache on in `folder` (every program, however small).

    Returns where the codec keeps its exported programs (`programs.Programs`): the
    `programs` subfolder (JAX's cache reads only its own `*-cache` files), or None when
    there is no usable cache folder.
    """
    if folder is None:
        return None
    import jax

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run uncached rather than fail
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Defaults cache only programs that took >= 1 s to compile; the codec's many small
    # programs (per slice anchor/non-anchor) add up to seconds, so keep them all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder / "programs"


def training_cache_dir() -> str | None:
    """Where `train.py` keeps compiled programs; None when turned off.

    $TGIC_JAX_CACHE "off" (or "0", "none", ""): none. Else $JAX_COMPILATION_CACHE_DIR when
    set (JAX reads it itself; a gs:// URL too, shared by a pod's hosts), else the CLI's
    folder (`compilation_cache_dir`).
    """
    env = os.environ.get(CACHE_ENV)
    if env is not None and env.strip().lower() in ("", "0", "off", "none", "false"):
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    folder = compilation_cache_dir()
    return None if folder is None else str(folder)


def enable_training_cache(enabled: bool = True) -> str | None:
    """Turns JAX's persistent compilation cache on for a training run (the folder) or off.

    A rerun (a restarted pod job, a resumed run) then loads its train step instead of
    compiling it again (docs/BENCHMARKS.md, "Compilation cache"). JAX's default threshold
    stays: only programs that took >= 1 s to compile are kept (the train step, the
    evaluation's codec), not the thousands of eager ops of a run.
    """
    import jax

    folder = training_cache_dir() if enabled else None
    if folder is not None and "://" not in folder:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError:  # a read-only home: run uncached rather than fail
            folder = None
    if folder is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_compilation_cache_dir", folder)  # a URL: JAX writes via etils
    return folder


# name -> (help, module, function adding its arguments, function running it); a module is
# imported only when its command is parsed (TensorFlow, orbax, optax load in seconds).
_COMMANDS = {
    "convert": (
        "convert the authors' PyTorch checkpoint to an orbax checkpoint",
        "tgic_jax.cli.convert",
        "add_convert_arguments",
        "run_convert",
    ),
    "compress": (
        "compress images to .tgic files (needs each caption)",
        "tgic_jax.cli.codec_commands",
        "add_compress_arguments",
        "run_compress",
    ),
    "decompress": (
        "decode .tgic files to PNG (no caption needed)",
        "tgic_jax.cli.codec_commands",
        "add_decompress_arguments",
        "run_decompress",
    ),
    "evaluate": (
        "rate-distortion evaluation with real bitstreams",
        "tgic_jax.cli.evaluate",
        "add_cli_arguments",
        "run_from_args",
    ),
    "export": (
        "export an inference checkpoint from a training workdir",
        "tgic_jax.cli.export",
        "add_export_arguments",
        "run_export",
    ),
    "env": (
        "what this host sees: devices, processes, mesh, TF and GPUs, versions",
        "tgic_jax.cli.environment",
        "add_env_arguments",
        "run_env",
    ),
}


def _add_common_arguments(p: argparse.ArgumentParser, top: bool) -> None:
    # SUPPRESS on subcommands: `tgic -v compress` and `tgic compress -v` both work.
    default = False if top else argparse.SUPPRESS
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="also show other libraries' log lines and warnings",
    )
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        default=default,
        help=f"do not use the persistent JAX compilation cache (or set {CACHE_ENV}=off)",
    )
    p.add_argument("--timings", action="store_true", default=default, help=argparse.SUPPRESS)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; the arguments of `command` only (all when None, none if "")."""
    parser = argparse.ArgumentParser(prog="tgic", description="TACO text-guided image codec (JAX)")
    _add_common_arguments(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, module, add_arguments, run) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        _add_common_arguments(p, top=False)
        if command in (None, name):
            mod = importlib.import_module(module)
            getattr(mod, add_arguments)(p)
            p.set_defaults(run=getattr(mod, run))
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in argv (the first word that is one), before any import."""
    for word in argv:
        if word in _COMMANDS:
            return word
        if not word.startswith("-"):
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tgic` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    _quiet_third_party(verbose="-v" in argv or "--verbose" in argv)
    # No command named (`tgic --help`, a typo): the subcommand list needs no module.
    args = build_parser(_command_of(argv) or "").parse_args(argv)
    try:  # a gs:// argument without gcsfs: one line before any work
        from tgic_jax import storage

        storage.check_urls(vars(args).values())
    except OSError as e:
        print(f"tgic {args.command}: error: {e}", file=sys.stderr)
        return 1
    args.program_dir = None
    if not args.no_compile_cache:
        args.program_dir = enable_compilation_cache(compilation_cache_dir())
    args.t_start = t0
    global _FAST_EXIT
    _FAST_EXIT = args.command in ("compress", "decompress")
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # clear one-line errors for bad input
        print(f"tgic {args.command}: error: {e}", file=sys.stderr)
        return 1


def entry() -> None:
    """The `tgic` console script: main(), then a fast exit for the codec commands.

    compress/decompress have written and closed every file when main returns; the normal
    interpreter teardown (XLA's atexit work) would add a second or two.
    """
    rc = main()
    if _FAST_EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    entry()
