"""Entry point: python -m ddss_jax.main --config=configs/<name>.py --workdir=DIR [--mode=...].

--mode=train (the default) learns a sampler and evaluates it against the baseline; --mode=evaluate
re-evaluates the sampler a training run saved in DIR (e.g. on 50000 samples instead of a few).

Many hosts: start the same command on every host with --distributed (a TPU pod slice, or a GPU
cluster whose launcher JAX recognises, e.g. SLURM or Open MPI, finds the others itself), or with
--coordinator_address=HOST:PORT --num_processes=N --process_id=I where it does not. The batch
sizes in the config are global; every device of every process takes an equal share.
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ddss_jax import experiment, logs
from ddss_jax.errors import ConfigError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and pictures.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate"],
                  "train: DDSS, then evaluation; evaluate: evaluate workdir/sampler.json.")
flags.DEFINE_bool("allow_config_change", False, "Resume a workdir whose run had another config "
                  "(family, K, model, ...); by default that is refused.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host runs).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for --distributed "
                    "where JAX cannot find it from the environment.")
flags.DEFINE_integer("num_processes", None, "Number of processes, with --coordinator_address.")
flags.DEFINE_integer("process_id", None, "This process's index, with --coordinator_address.")
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed() -> None:
  """jax.distributed.initialize as the flags ask; CPU processes talk through gloo."""
  if not (FLAGS.distributed or FLAGS.coordinator_address):
    return
  # Only the CPU backend reads this: its devices need gloo for cross-process collectives.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                             num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logs.quiet_library_logs()
  initialize_distributed()
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  try:
    if FLAGS.mode == "evaluate":
      experiment.evaluate_workdir(FLAGS.config, FLAGS.workdir)
    else:
      experiment.train_and_evaluate(FLAGS.config, FLAGS.workdir,
                               allow_config_change=FLAGS.allow_config_change)
  except (ConfigError, FloatingPointError) as e:  # the message says it all: no traceback
    raise SystemExit(f"ddss_jax: {type(e).__name__}: {e}") from e


if __name__ == "__main__":
  app.run(main)
