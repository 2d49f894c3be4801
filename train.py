r"""Trains TACO: `python train.py --config configs/taco.py:lmbda=0.0004 --workdir DIR`.

Override config values with `--config.loss.lmbda=0.0016`. Runs resume from DIR (a local
path or a URL such as gs://bucket/run). On several hosts run the same command everywhere:
TPU pods, SLURM job steps and Open MPI are detected; elsewhere add
--coordinator/--num_processes/--process_id (or the TGIC_COORDINATOR / TGIC_NUM_PROCESSES /
TGIC_PROCESS_ID environment variables).

Compiled programs are kept between runs (a rerun skips the train step's compilation):
$JAX_COMPILATION_CACHE_DIR, else ~/.cache/tgic_jax/jax_cache; --nocompile_cache or
TGIC_JAX_CACHE=off turns that off. A gs:// workdir needs the `gcs` extra.

Prints our lines only (a compile notice, `[train] step N/TOTAL ... eta`, checkpoints,
evaluations); `--verbose` adds the config and the libraries' logs (orbax, absl,
TensorFlow). A run that cannot go on prints one line `train.py: error: ...` and exits
non-zero (130 after Ctrl-C, which saves the current step first).
"""

import os
import signal
import sys


def _stop_at_once(signum, frame):
    """SIGTERM / Ctrl-C where nothing is left to save: one line, exit 128 + signal."""
    del frame
    os.write(2, f"{signal.Signals(signum).name}: stopping (nothing trained to save)\n".encode())
    os._exit(128 + signum)


# First of all: from here until the first step, SIGTERM and Ctrl-C end the process at once
# in one line (measured: a Ctrl-C 0.3 s after start, inside an import, was lost and the run
# trained to the end; at 0.5-1.3 s it printed a 40-line traceback). The Python handler
# covers the imports; the start-up guard also a main thread busy in C (a minute-long XLA
# compile). After the loop's own handlers, this one is what they give back.
if __name__ == "__main__":
    signal.signal(signal.SIGINT, _stop_at_once)
    signal.signal(signal.SIGTERM, _stop_at_once)

from tgic_jax.train.startup_signals import StartupSignals  # noqa: E402 (signal, ctypes)

STARTUP = StartupSignals("stopping before the first step (nothing trained to save)")
if __name__ == "__main__":
    STARTUP.__enter__()

VERBOSE = "--verbose" in sys.argv or "--verbose=true" in sys.argv
if not VERBOSE:  # before TensorFlow is imported: its C++ lines (cuFFT, cuDNN, TensorRT) and
    # XLA's ("Very slow compile?" after 2 minutes on a busy CPU) at any level below 3
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from tgic_jax.train import distributed, trainer  # noqa: E402
from tgic_jax.train.errors import RunError  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events, config.json.")
flags.DEFINE_string("coordinator", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.DEFINE_bool("verbose", False, "Also print the config and the libraries' log lines.")
flags.DEFINE_bool(
    "compile_cache",
    True,
    "Keep compiled programs between runs: $JAX_COMPILATION_CACHE_DIR, else "
    "~/.cache/tgic_jax/jax_cache (TGIC_JAX_CACHE=off or --nocompile_cache: none).",
)
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_libraries() -> None:
    """Hides the libraries' INFO lines (~90 of orbax's a run) and their warnings."""
    import logging as std_logging
    import warnings

    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"tgic_jax(\.|$)")
    # orbax logs through absl's logger; ours go to the root logger (warnings still shown).
    logging.set_verbosity(logging.ERROR)
    for name in ("orbax", "tensorflow", "transformers", "jax"):
        std_logging.getLogger(name).setLevel(std_logging.ERROR)
    # A checkpoint write that fails (a full disk) is reported by the run in one line; orbax
    # logs each failed array write with its traceback (~900 lines on a file-size limit,
    # measured), asyncio each task nobody awaited, and its aborted writes end on a closed
    # event loop through sys.unraisablehook.
    ours = lambda record: "/tgic_jax/" in record.pathname or record.pathname == __file__
    logging.get_absl_handler().addFilter(ours)
    std_logging.getLogger("asyncio").setLevel(std_logging.CRITICAL)
    default_hook = sys.unraisablehook

    def unraisable(event):
        if not (
            isinstance(event.exc_value, RuntimeError)
            and str(event.exc_value) == "Event loop is closed"
        ):
            default_hook(event)

    sys.unraisablehook = unraisable


def unknown_override(argv) -> str | None:
    """'unknown config key ...; did you mean ...?' for the first --config.KEY=... no section
    declares (ml_collections' own message spans lines and a traceback)."""
    from tgic_jax import config as config_lib

    known = set(config_lib.known_keys())
    for arg in argv[1:]:
        name = arg.lstrip("-").partition("=")[0]
        if name.startswith("config."):
            key = name.removeprefix("config.")
            if config_lib.RENAMED.get(key, key) not in known:
                return f"--config.{key}: {config_lib.closest(key, known)}"
    return None


def parse_flags(argv):
    """absl's flag parsing, with an error as one line (a config file's error included)."""
    try:
        argv = FLAGS(argv)
        if FLAGS.config is not None:  # ml_collections defers a config file's load error
            FLAGS.config.get("seed")  # to its first use: surface it here
        return argv
    except (AttributeError, KeyError) as err:  # an override of a key the config lacks
        print(f"train.py: error: {unknown_override(argv) or err}", file=sys.stderr, flush=True)
        sys.exit(2)
    except (flags.Error, OSError) as err:
        # ml_collections puts the config file's traceback into the message: its last line
        # is the error itself.
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        where = "--config: " if isinstance(err, OSError) else ""
        print(f"train.py: error: {where}{lines[-1] if lines else err}", file=sys.stderr, flush=True)
        sys.exit(2)


def main(argv):
    """Joins the multi-host run if asked, then trains the config into the workdir."""
    del argv
    from tgic_jax import storage

    try:  # a gs:// workdir without gcsfs: one line, before anything runs
        storage.check_urls([FLAGS.workdir, FLAGS.config.to_dict()])
    except storage.MissingStorageBackend as err:
        print(f"train.py: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    if not FLAGS.verbose:
        _quiet_libraries()
    from tgic_jax.cli.main import enable_training_cache

    enable_training_cache(FLAGS.compile_cache)
    # JAX's preemption notifier (jax.distributed) must find the process's own handlers: the
    # trainer's guard saves it and gives it back, where this guard would remove it.
    STARTUP.close()
    try:
        distributed.maybe_initialize_distributed(
            FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id
        )
        logging.info("config:\n%s", FLAGS.config)
        trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except RunError as err:
        print(f"train.py: error: {err}", file=sys.stderr, flush=True)
        if not FLAGS.verbose:  # said in one line; orbax's writes cut short print at shutdown
            sys.unraisablehook = lambda unraisable: None
        sys.exit(err.exit_code)
    except KeyboardInterrupt:  # before training started: nothing to save
        print(
            "train.py: interrupted before training started; nothing to save",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(130)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
