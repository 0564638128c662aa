"""What a real-scale DDSS run costs: the google/ddpm-cifar10-32 UNet architecture (35.7 M
parameters) with random weights, the full-width FID Inception network with random weights.

Measures, in one process on one device:
  1. a DDSS training step (sampler -> Inception pool3 -> KID -> gradient into the sampler
     parameters, adjoint reverse pass): seconds per step and peak device memory, at each K;
  2. evaluation throughput: K-step sampling plus Inception features, samples per second;
  3. the Inception network alone at full float32 precision (FIDInceptionV3's default) and at the
     device's default matmul precision (precision=None: TF32 on recent NVIDIA GPUs), and how far
     pool3 moves between the two (what TF32 would do to FID features).
The training step can also be timed with a TF32 Inception in the loss (--loss_precisions).
Random weights give the same cost as trained ones; no numbers here are sample quality.

Usage (from the repository root; a GPU is meant, a CPU works with small --batch):
  python -m benchmarks.realscale --num_steps=5,10,20 --batch=128 --eval_batch=500 --out=FILE.json
"""

from __future__ import annotations

import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from ddss_jax import samplers
from ddss_jax.evaluation import metrics
from ddss_jax.models import inception, unet
from ddss_jax.samplers import schedules
from ddss_jax.util import files

FLAGS = flags.FLAGS
flags.DEFINE_list("num_steps", ["5", "10", "20"], "Values of K for the training step.")
flags.DEFINE_list("loss_precisions", ["highest"],
                  "Inception precision in the loss: highest (full float32) and/or default (TF32).")
flags.DEFINE_list("parts", ["train", "eval", "inception"], "Which measurements to run.")
flags.DEFINE_integer("batch", 128, "DDSS batch (generated and real images each).")
flags.DEFINE_integer("eval_batch", 500, "Evaluation batch.")
flags.DEFINE_integer("eval_num_steps", 10, "K for the evaluation throughput.")
flags.DEFINE_integer("repeats", 3, "Timed repetitions after the compiling call.")
flags.DEFINE_string("out", None, "Also write the results as JSON here (rewritten as they come).")

CIFAR10_UNET = unet.DDPM_CIFAR10


def peak_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def timed(fn, *args, repeats: int) -> tuple[float, float]:
  """(first call seconds incl. compilation, mean seconds of the next `repeats` calls)."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return first, (time.perf_counter() - start) / repeats


PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "default": None}


def main(argv):
  del argv
  results = {"device": str(jax.devices()[0]), "backend": jax.default_backend(),
             "batch": FLAGS.batch, "eval_batch": FLAGS.eval_batch}

  def report(name, value):
    results[name] = value
    print(name, json.dumps(value), flush=True)
    if FLAGS.out:
      files.write_json(FLAGS.out, results, indent=1)

  schedule = schedules.linear_beta(1000)
  model = unet.UNet2DModel(CIFAR10_UNET)
  model_params = unet.init_params(CIFAR10_UNET, jax.random.PRNGKey(0))
  variables = inception.FIDInceptionV3().init(jax.random.PRNGKey(1), jnp.zeros((1, 75, 75, 3)))
  network = inception.FIDInceptionV3()
  report("unet_parameters", int(sum(a.size for a in jax.tree.leaves(model_params))))
  shape = (FLAGS.batch, 32, 32, 3)
  real = jax.random.uniform(jax.random.PRNGKey(2), shape, minval=-1.0, maxval=1.0)

  train_cases = [(int(k), p) for p in FLAGS.loss_precisions for k in FLAGS.num_steps]
  for k, precision in train_cases if "train" in FLAGS.parts else []:
    sampler = samplers.make("ggdm+pred+time", schedule, k, stride="quadratic")
    loss_network = inception.FIDInceptionV3(precision=PRECISIONS[precision])

    @jax.jit
    def train_grad(params, model_params, variables, real, key, sampler=sampler,
                   loss_network=loss_network):
      def loss(params):
        eps_fn = functools.partial(lambda p, x, t: model.apply({"params": p}, x, t), model_params)
        generated = sampler.sample(params, eps_fn, key, shape)
        feats = loss_network.apply(variables, generated)["pool3"]
        real_feats = jax.lax.stop_gradient(loss_network.apply(variables, real)["pool3"])
        return metrics.kid(feats, real_feats)
      return jax.value_and_grad(loss)(params)

    first, each = timed(train_grad, sampler.init(), model_params, variables, real,
                        jax.random.PRNGKey(3), repeats=FLAGS.repeats)
    # peak_bytes_in_use is the process's peak so far: increasing K shows growth, if any.
    report(f"train_step_K{k}_{precision}", {"first_call_s": round(first, 2),
                                            "step_s": round(each, 4), "peak_bytes": peak_bytes()})

  k = FLAGS.eval_num_steps
  sampler = samplers.make("ggdm+pred+time", schedule, k, stride="quadratic")
  eval_shape = (FLAGS.eval_batch, 32, 32, 3)

  @jax.jit
  def eval_batch(params, model_params, variables, key):
    eps_fn = functools.partial(lambda p, x, t: model.apply({"params": p}, x, t), model_params)
    out = network.apply(variables, sampler.sample(params, eps_fn, key, eval_shape))
    return out["pool3"], out["logits_unbiased"]

  if "eval" in FLAGS.parts:
    first, each = timed(eval_batch, sampler.init(), model_params, variables,
                        jax.random.PRNGKey(4), repeats=FLAGS.repeats)
    report(f"eval_K{k}", {"first_call_s": round(first, 2), "batch_s": round(each, 4),
                          "samples_per_s": round(FLAGS.eval_batch / each, 1),
                          "minutes_for_50000": round(50000 / FLAGS.eval_batch * each / 60, 2)})
  if "inception" not in FLAGS.parts:
    return

  images = jax.random.uniform(jax.random.PRNGKey(5), eval_shape, minval=-1.0, maxval=1.0)
  outputs = {}
  for precision, value in PRECISIONS.items():
    apply = jax.jit(lambda v, x, net=inception.FIDInceptionV3(precision=value): net.apply(v, x)[
        "pool3"])
    first, each = timed(apply, variables, images, repeats=FLAGS.repeats)
    outputs[precision] = np.asarray(apply(variables, images), np.float64)
    report(f"inception_{precision}", {"images_per_s": round(FLAGS.eval_batch / each, 1)})
  diff = np.abs(outputs["default"] - outputs["highest"])
  scale = np.abs(outputs["highest"]).max()
  report("inception_default_vs_highest", {
      "max_abs_diff_over_max": float(diff.max() / scale),
      "fid_between": metrics.fid_from_features(outputs["default"], outputs["highest"])})


if __name__ == "__main__":
  app.run(main)
