r"""Trains TACO: `python train.py --config configs/taco.py:lmbda=0.0004 --workdir DIR`.

Override config values with `--config.loss.lmbda=0.0016`. Runs resume from DIR (a local
path or a URL such as gs://bucket/run). On several hosts run the same command everywhere:
TPU pods, SLURM job steps and Open MPI are detected; elsewhere add
--coordinator/--num_processes/--process_id (or the TGIC_COORDINATOR / TGIC_NUM_PROCESSES /
TGIC_PROCESS_ID environment variables).
"""

from absl import app, flags, logging
from ml_collections import config_flags

from tgic_jax.train import sharding
from tgic_jax.train import trainer as train_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events, config.json.")
flags.DEFINE_string("coordinator", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    """Joins the multi-host run if asked, then trains the config into the workdir."""
    del argv
    sharding.maybe_initialize_distributed(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
    logging.info("config:\n%s", FLAGS.config)
    train_lib.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
