"""Entry point: python -m ddss_jax.main --config=configs/<name>.py --workdir=DIR [--mode=...].

--mode=train (the default) learns a sampler and evaluates it against the baseline; --mode=evaluate
re-evaluates the sampler a training run saved in DIR (e.g. on 50000 samples instead of a few).
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ddss_jax import evaluate, logs, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and pictures.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate"],
                  "train: DDSS, then evaluation; evaluate: evaluate workdir/sampler.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logs.quiet_library_logs()
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  if FLAGS.mode == "evaluate":
    evaluate.evaluate_workdir(FLAGS.config, FLAGS.workdir)
  else:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
