"""Quality of the shipped MNIST UNets themselves: many-step ancestral sampling, and DDIM at
several K.

For each sampler draws N samples (same seed) and reports, against the 1000 held-out digits in the
MNIST classifier's feature space: KID (mean and std over subsets), FID, and the share of samples
the classifier labels with confidence > 0.9. With --conditional, the class-conditional UNet's
ancestral samples at each guidance weight, drawn for the held-out digits' labels, with the class
accuracy (the classifier's label is the requested one; binomial std), the share labelled as
requested with confidence > 0.9, and the class-conditional FID. Each batch of samples is kept in
--workdir as it is drawn, so a killed run resumes at the batch it was drawing. Run times:
docs/shipped_networks.md.

Run: python -m experiments.shipped_unet.run [--num_samples=1000] [--ddpm_steps=250]
     [--unet_weights=path.msgpack]  (default: the shipped UNet)
     python -m experiments.shipped_unet.run --conditional --guidance_weights=1,2,4
"""

import hashlib
import os
import time

import jax
import numpy as np
from absl import app, flags, logging

from ddss_jax import run as run_lib, samplers
from ddss_jax.configs import mnist
from ddss_jax.evaluation import drawing
from ddss_jax.problems.base import held_out_conditions
from ddss_jax.samplers import schedules
from ddss_jax.samplers.guidance import Guidance
from ddss_jax.util import files, logs

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_samples", 1000, "Samples per sampler.")
flags.DEFINE_integer("ddpm_steps", 250, "Steps of the ancestral (DDPM, linear stride) reference.")
flags.DEFINE_list("ddim_steps", ["5", "10", "25"], "K of the DDIM (quadratic stride) rows.")
flags.DEFINE_string("unet_weights", None, "A UNet msgpack of the shipped architecture to measure "
                    "instead of the shipped one (config.mnist.unet_weights).")
flags.DEFINE_bool("conditional", False, "Measure the class-conditional UNet (config.mnist."
                  "conditional) at each --guidance_weights, ancestral sampling only.")
flags.DEFINE_list("guidance_weights", ["1", "2", "4"], "w of eps_u + w (eps_c - eps_u) "
                  "(1: the conditional model alone; Ho and Salimans' w' = w - 1).")
flags.DEFINE_string("workdir", "/tmp/ddss_shipped_unet", "Where drawn batches are kept.")

BATCH_SIZE = 250


def main(argv):
  del argv
  logs.quiet_library_logs()
  config = mnist.get_config()
  config.mnist.unet_weights = FLAGS.unet_weights
  config.mnist.conditional = FLAGS.conditional
  schedule = schedules.linear_beta(1000)
  problem = run_lib.build_problem(config, schedule, workdir="/tmp")
  if FLAGS.conditional:
    conditional_rows(problem, schedule, config.eval.seed)
    return
  rows = [("ddpm", FLAGS.ddpm_steps, "linear")] + [("ddim", int(k), "quadratic")
                                                   for k in FLAGS.ddim_steps]
  print("| sampler | K | KID | KID std | FID | confident share | seconds |")
  print("|---|---|---|---|---|---|---|")
  for family, num_steps, stride in rows:
    sampler = samplers.make(family, schedule, num_steps, stride=stride)
    samples, seconds = draw(sampler, f"{family} {stride} K={num_steps}", problem,
                            seed=config.eval.seed)
    m = problem.evaluate(samples)
    logging.info("%s K=%d done in %.0f s", family, num_steps, seconds)
    print(f"| {family} ({stride}) | {num_steps} | {m['kid']:.4f} | {m['kid_std']:.4f} "
          f"| {m['fid']:.3f} | {m['confident_share']:.3f} | {seconds:.0f} |", flush=True)
  data = problem.real_batch(jax.random.PRNGKey(0), FLAGS.num_samples)
  m = problem.evaluate(data)
  print(f"| training digits (real) | - | {m['kid']:.4f} | {m['kid_std']:.4f} | {m['fid']:.3f} "
        f"| {m['confident_share']:.3f} | - |")


def draw(sampler, name: str, problem, *, seed: int, conds=None) -> tuple[np.ndarray, float]:
  """[num_samples, ...] samples of `sampler` (described by `name`) and the seconds their batches
  took to draw, compilation included. Each batch is kept in a folder of FLAGS.workdir named
  by a digest of the name, the seed, the sample count, the model's weights and the conditioning,
  and the batches found there are not drawn again (drawing.sample_batches' batch b does not depend
  on the batches before it)."""
  digest = hashlib.sha256(repr((name, seed, FLAGS.num_samples, BATCH_SIZE)).encode())
  for leaf in jax.tree.leaves((problem.model_params, conds)):
    digest.update(np.asarray(leaf).tobytes())
  folder = os.path.join(FLAGS.workdir, digest.hexdigest()[:16])
  os.makedirs(folder, exist_ok=True)
  path = lambda b: os.path.join(folder, f"batch_{b}.npz")
  kept = []
  while os.path.exists(path(len(kept))):
    with np.load(path(len(kept)), allow_pickle=False) as f:
      kept.append((f["samples"], float(f["seconds"])))
  if kept:
    logging.info("%s: %d batches kept in %s", name, len(kept), folder)
  batches = drawing.sample_batches(sampler, {}, problem, num_samples=FLAGS.num_samples,
                                   batch_size=BATCH_SIZE, seed=seed, conds=conds,
                                   first_batch=len(kept))
  start = time.perf_counter()
  for b, batch in enumerate(batches, start=len(kept)):
    seconds = time.perf_counter() - start
    files.save_npz(path(b), samples=batch, seconds=seconds)
    kept.append((batch, seconds))
    logging.info("%s: batch %d drawn in %.0f s", name, b, seconds)
    start = time.perf_counter()
  return np.concatenate([s for s, _ in kept]), sum(t for _, t in kept)


def conditional_rows(problem, schedule, seed: int) -> None:
  """The conditional UNet's ancestral rows, one per guidance weight, and the real digits'."""
  labels = held_out_conditions(problem.conditioning, FLAGS.num_samples)
  print("| w | K | KID | FID | class-conditional FID | class accuracy | confident and "
        "correct | seconds |")
  print("|---|---|---|---|---|---|---|---|")
  for weight in FLAGS.guidance_weights:
    # w = 1 is the conditional model alone: one call a step, not the guided form's two.
    guidance = None if float(weight) == 1.0 else Guidance(weight=float(weight))
    sampler = samplers.make("ddpm", schedule, FLAGS.ddpm_steps, stride="linear",
                            guidance=guidance)
    samples, seconds = draw(sampler, f"ddpm linear K={FLAGS.ddpm_steps} w={weight}", problem,
                            seed=seed, conds=labels)
    m = problem.evaluate(samples, labels)
    logging.info("w=%s done in %.0f s", weight, seconds)
    print(f"| {float(weight):g} | {FLAGS.ddpm_steps} | {m['kid']:.4f} | {m['fid']:.3f} "
          f"| {m['class_fid']:.3f} | {m['class_accuracy']:.3f} +- {m['class_accuracy_std']:.3f} "
          f"| {m['confident_correct_share']:.3f} | {seconds:.0f} |", flush=True)
  key = jax.random.PRNGKey(0)
  data = problem.real_batch(key, FLAGS.num_samples)
  m = problem.evaluate(data, problem.conditioning.real(key, FLAGS.num_samples))
  print(f"| training digits (real) | - | {m['kid']:.4f} | {m['fid']:.3f} | {m['class_fid']:.3f} "
        f"| {m['class_accuracy']:.3f} +- {m['class_accuracy_std']:.3f} "
        f"| {m['confident_correct_share']:.3f} | - |")


if __name__ == "__main__":
  app.run(main)
