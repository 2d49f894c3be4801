r"""Evaluates a training run: `python eval.py --workdir DIR`.

Exports the workdir's latest training checkpoint to DIR/inference (params + coding
tables), then codes config.eval's images (default: Kodak in data/kodak) to real files and
writes the per-image CSV/JSON, summary, RD plots and reconstructions to DIR/eval. The images
are the run's config.eval (DIR/config.json); `--config configs/taco.py` (and its
`--config.eval.*` overrides) replaces it.
`--checkpoint A B ...` evaluates existing inference checkpoints instead (one per rate
point); `--ablation` adds the empty and mismatched captions. The same evaluation is
`tgic evaluate --checkpoint CKPT --images DIR --captions JSON --out DIR`.

The workdir is read only (safe beside the run that trains it). An existing DIR/inference
or an earlier evaluation in the output is refused unless `--force`, which replaces only
what eval.py writes (the user's other files there are kept). Anything that stops it is one
line `eval.py: error: ...` and exit status 2.
"""

import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from tgic_jax.evaluation import driver, sets

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file whose eval section replaces the run's (default: DIR/config.json)."
)
flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/, config.json).")
flags.DEFINE_list("checkpoint", None, "Inference checkpoints to evaluate instead of exporting.")
flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/eval).")
flags.DEFINE_bool("ablation", False, "Also code with the empty and the mismatched caption.")
flags.DEFINE_bool("lpips", True, "Compute LPIPS-Alex.")
flags.DEFINE_bool("force", False, "Replace DIR/inference and an earlier evaluation's files.")
flags.mark_flags_as_required(["workdir"])


def _fail(message) -> None:
    print(f"eval.py: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _eval_config(workdir):
    """config.eval of --config when given, else of the run's config.json, else the defaults."""
    from tgic_jax.config import EvalConfig, RunConfig

    if FLAGS.config is not None:
        return RunConfig.from_config(FLAGS.config).eval
    path = workdir / "config.json"
    if not path.is_file():  # --checkpoint without a run: the defaults (Kodak)
        return EvalConfig()
    return RunConfig.from_json(path.read_text()).eval


def main(argv):
    """Evaluates the given checkpoints, or the run's exported last one, on the configured images."""
    del argv
    from tgic_jax import storage
    from tgic_jax.checkpoints.inference import as_path
    from tgic_jax.cli import outputs

    try:  # a gs:// path without gcsfs: one line before any work
        storage.check_urls([FLAGS.workdir, FLAGS.checkpoint, FLAGS.out])
        if storage.scheme_of(FLAGS.workdir) and not FLAGS.out:
            raise ValueError(f"--workdir {FLAGS.workdir} is a URL: give --out, a local folder")
    except (ValueError, OSError) as err:
        _fail(err)
    workdir = as_path(FLAGS.workdir)  # gs:// stays a URL
    checkpoints = FLAGS.checkpoint
    out = Path(FLAGS.out or workdir / "eval")
    # Every refusal before any work (and before anything is written).
    try:
        if not checkpoints:
            if not (workdir / "config.json").is_file():
                raise FileNotFoundError(
                    f"{workdir}: not a training workdir (no config.json); give --workdir of a "
                    "run, or --checkpoint to evaluate inference checkpoints"
                )
            replacing = outputs.check_output(str(workdir / "inference"), FLAGS.force)
            if replacing:
                print(replacing)
        replacing = outputs.check_evaluation_output(str(out), FLAGS.force)
        if replacing:
            print(replacing)
    except (outputs.OutputRefused, OSError) as err:
        _fail(err)
    try:
        eval_cfg = _eval_config(workdir)
    except (ValueError, OSError) as err:
        _fail(err)
    limit = eval_cfg.max_images or None
    options = driver.EvalOptions(
        variants=driver.VARIANTS if FLAGS.ablation else ("correct",), lpips=FLAGS.lpips
    )
    try:
        if eval_cfg.folder:  # listed as the run's per-epoch evaluation listed it
            from tgic_jax.train import selection

            eval_set = selection.eval_set_of(eval_cfg)
        else:
            eval_set = sets.kodak_set(Path(__file__).parent / "data" / "kodak", limit)
        if not checkpoints:
            from tgic_jax.train import trainer

            checkpoints = [str(trainer.export_inference(workdir, workdir / "inference"))]
        summary = driver.evaluate_checkpoints(checkpoints, eval_set, out, options)
    except (ValueError, OSError) as err:  # nothing could run: one clear line, exit code 2
        _fail(err)
    print((out / "summary.md").read_text())
    sys.exit(1 if summary["failures"] else 0)


if __name__ == "__main__":
    app.run(main)
