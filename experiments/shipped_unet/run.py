"""Quality of the shipped MNIST UNets themselves: many-step ancestral sampling, and DDIM at
several K.

For each sampler draws N samples (same seed) and reports, against the 1000 held-out digits in the
MNIST classifier's feature space: KID (mean and std over subsets), FID, and the share of samples
the classifier labels with confidence > 0.9. With --conditional, the class-conditional UNet's
ancestral samples at each guidance weight, drawn for the held-out digits' labels, with the class
accuracy (the classifier's label is the requested one; binomial std), the share labelled as
requested with confidence > 0.9, and the class-conditional FID. Run time: experiments/README.md.

Run: python -m experiments.shipped_unet.run [--num_samples=1000] [--ddpm_steps=250]
     [--unet_weights=path.msgpack]  (default: the shipped UNet)
     python -m experiments.shipped_unet.run --conditional --guidance_weights=1,2,4
"""

import time

import jax
from absl import app, flags, logging

from ddss_jax import run as run_lib, samplers
from ddss_jax.configs import mnist
from ddss_jax.evaluation import drawing
from ddss_jax.problems.base import held_out_conditions
from ddss_jax.samplers import schedules
from ddss_jax.samplers.guidance import Guidance
from ddss_jax.util import logs

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
    start = time.perf_counter()
    samples = drawing.draw_samples(sampler, {}, problem, num_samples=FLAGS.num_samples,
                                   batch_size=250, seed=config.eval.seed)
    seconds = time.perf_counter() - start
    m = problem.evaluate(samples)
    logging.info("%s K=%d done in %.0f s", family, num_steps, seconds)
    print(f"| {family} ({stride}) | {num_steps} | {m['kid']:.4f} | {m['kid_std']:.4f} "
          f"| {m['fid']:.3f} | {m['confident_share']:.3f} | {seconds:.0f} |", flush=True)
  data = problem.real_batch(jax.random.PRNGKey(0), FLAGS.num_samples)
  m = problem.evaluate(data)
  print(f"| training digits (real) | - | {m['kid']:.4f} | {m['kid_std']:.4f} | {m['fid']:.3f} "
        f"| {m['confident_share']:.3f} | - |")


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
    start = time.perf_counter()
    samples = drawing.draw_samples(sampler, {}, problem, num_samples=FLAGS.num_samples,
                                   batch_size=250, seed=seed, conds=labels)
    seconds = time.perf_counter() - start
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
