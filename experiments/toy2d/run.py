"""The 2-D before/after table (docs/results_reading.md, "2-D data") over several seeds.

Each seed retrains the MLP eps-model, reruns DDSS (configs/toy2d.py) and evaluates on fresh
samples. Run time: experiments/NOTES.md.

Run: python -m experiments.toy2d.run --workdir=/tmp/ddss_toy2d_seeds [--seeds=0,1,2,3]
"""

import os

import numpy as np
from absl import app, flags

from ddss_jax import run as run_lib
from ddss_jax.configs import toy2d

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Parent directory; one subdirectory per seed.")
flags.DEFINE_list("seeds", ["0", "1", "2", "3"], "Seeds (config.train.seed).")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  per_seed = []
  for seed in map(int, FLAGS.seeds):
    config = toy2d.get_config()
    config.train.seed = seed
    workdir = os.path.join(FLAGS.workdir, f"seed{seed}")
    per_seed.append(run_lib.train_and_evaluate(config, workdir))
  roles = ["baseline", "learned", "reference", "data"]
  metrics = ["mmd", "log_density"]
  print(f"\nheld-out metrics, mean (min, max) over seeds {FLAGS.seeds}:")
  print("| sampler | " + " | ".join(metrics) + " |\n" + "|---" * (len(metrics) + 1) + "|")
  for role in roles:
    cells = []
    for metric in metrics:
      values = np.array([r[role][metric] for r in per_seed])
      cells.append(f"{values.mean():.4g} ({values.min():.4g}, {values.max():.4g})")
    print(f"| {run_lib.row_label(role, per_seed[0][role])} | " + " | ".join(cells) + " |")
  ratio = [r["learned"]["mmd"] / r["baseline"]["mmd"] for r in per_seed]
  print(f"\nMMD ratio learned / DDIM per seed: {np.round(ratio, 3).tolist()}")


if __name__ == "__main__":
  app.run(main)
