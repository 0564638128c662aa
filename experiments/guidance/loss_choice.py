"""Which KID a conditional sampler's DDSS loss should be: KID on the classifier's features joined
with each sample's label one-hot (times the features' RMS norm), or KID within each class (the
mean over the classes of the KID of that class's samples against that class's real digits)?
The features alone (no label) are the control: they cannot see a sample of the wrong class.

For each fixed sampler below, draws `--batches` training-sized batches (64 real training digits
with their labels; 64 samples drawn for the labels of another 64, as the DDSS loss draws them,
or for those labels shuffled) and computes every loss on each batch; then evaluates the sampler
on the held-out digits (1000 samples drawn for their labels). A loss is good for DDSS where
its batch mean orders the samplers as the held-out class-conditional FID does (Spearman's rho
over the samplers) and where it separates samplers by more than its batch-to-batch noise (the
gap between the samples drawn for their own labels and for shuffled ones, in batch standard
deviations). Writes loss_choice.csv beside this file.

Run: python -m experiments.guidance.loss_choice [--batches=16]
"""

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from ddss_jax import run as run_lib, samplers
from ddss_jax.configs import mnist
from ddss_jax.evaluation import drawing, metrics
from ddss_jax.learn import kid_loss
from ddss_jax.problems.base import held_out_conditions, join_condition
from ddss_jax.samplers import schedules
from ddss_jax.samplers.guidance import Guidance
from ddss_jax.util import logs
from experiments.guidance import report

FLAGS = flags.FLAGS
flags.DEFINE_integer("batches", 16, "Batches per sampler.")
flags.DEFINE_integer("batch_size", 64, "The DDSS batch (configs/mnist_guided.py's).")
flags.DEFINE_integer("num_steps", 5, "K of the guided DDIM samplers.")
flags.DEFINE_list("sampler_weights", ["0", "1", "2", "4"], "Guidance weights of the samplers.")
flags.DEFINE_float("shuffled_weight", 2.0, "The weight of the sampler drawn for shuffled labels.")
HERE = os.path.dirname(os.path.abspath(__file__))


def per_class_kid(feats, labels, real_feats, real_labels):
  """The mean over classes (with two or more of each) of the KID within the class."""
  values = []
  for label in np.unique(labels):
    mine, theirs = feats[labels == label], real_feats[real_labels == label]
    if len(mine) >= 2 and len(theirs) >= 2:
      values.append(float(metrics.kid(mine, theirs)))
  return float(np.mean(values))


def main(argv):
  del argv
  logs.quiet_library_logs()
  config = mnist.get_config()
  config.mnist.conditional = True
  schedule = schedules.linear_beta(1000)
  problem = run_lib.build_problem(config, schedule, workdir="/tmp")
  conditioning = problem.conditioning
  batch_fn = kid_loss.conditioned_batch_fn(problem)
  features = jax.jit(lambda x: problem.feature_apply(problem.feature_params, x))
  rows = []
  cases = [(float(w), False) for w in FLAGS.sampler_weights] + [(FLAGS.shuffled_weight, True)]
  for weight, shuffled in cases:
    sampler = samplers.make("ddim", schedule, FLAGS.num_steps, stride="quadratic",
                            guidance=Guidance(weight=weight))
    sample = drawing.make_sample_fn(sampler, problem, FLAGS.batch_size)
    values = {name: [] for name in report.LOSSES}
    for b in range(FLAGS.batches):
      real = batch_fn(jax.random.PRNGKey(1000 + b), FLAGS.batch_size)
      labels, requested = np.asarray(real["cond"]), np.asarray(real["sample_cond"])
      drawn_for = np.random.default_rng(b).permutation(requested) if shuffled else requested
      x = sample({}, problem.model_params, jax.random.PRNGKey(b), jnp.asarray(drawn_for))
      feats, real_feats = features(x), features(real["x"])
      values["joined"].append(float(metrics.kid(
          join_condition(feats, requested, conditioning),
          join_condition(real_feats, labels, conditioning))))
      values["per_class"].append(per_class_kid(np.asarray(feats), requested,
                                               np.asarray(real_feats), labels))
      values["features_only"].append(float(metrics.kid(feats, real_feats)))
    conds = held_out_conditions(conditioning, 1000)
    requested = conds
    if shuffled:
      conds = np.random.default_rng(0).permutation(conds)
    held = problem.evaluate(drawing.draw_samples(sampler, {}, problem, num_samples=1000,
                                                 batch_size=250, seed=config.eval.seed,
                                                 conds=conds), requested)
    row = {"weight": weight, "shuffled_labels": shuffled, "fid": held["fid"],
           "class_fid": held["class_fid"], "class_accuracy": held["class_accuracy"],
           **{f"{name}_mean": float(np.mean(v)) for name, v in values.items()},
           **{f"{name}_std": float(np.std(v, ddof=1)) for name, v in values.items()}}
    logging.info("%s", row)
    rows.append(row)
  with open(os.path.join(HERE, "loss_choice.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  print("\n".join(report.loss_choice_section(report.read_loss_choice(HERE))))


if __name__ == "__main__":
  app.run(main)
