"""Trains the embedded default's base model: the MNIST UNet (eps-prediction, linear betas,
T = 1000).

Run (from the repository root; resumable: rerun the same command after an interruption):
  python -m ddss_jax.tools.train_unet --out=/tmp/mnist_unet.msgpack --workdir=/tmp/ddss_mnist_unet

Trains on the 4000 training digits only (ddss_jax.data.mnist), keeps an EMA of the weights and
writes the EMA weights as flax msgpack, printing the file's sha256.

The shipped ddss_jax/weights/mnist_unet.msgpack came from two runs in one workdir (the command
in ddss_jax.weights.SHIPPED; docs/shipped_networks.md gives their measured times
on a GPU and on 2 CPU cores): a run planned for 25000 steps at batch 256, stopped after step
10000, then resumed to 16000 steps at batch 512 (the learning rate then follows the 16000-step
schedule from step 10000).
"""

import time

import jax
from absl import app, flags, logging

from ddss_jax import weights
from ddss_jax.data import mnist
from ddss_jax.models import denoiser_training, unet
from ddss_jax.samplers import schedules
from ddss_jax.util import logs

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "ddss_jax/weights/mnist_unet.msgpack", "Where to write EMA weights.")
flags.DEFINE_string("workdir", "/tmp/ddss_mnist_unet", "Orbax checkpoints, for resuming.")
flags.DEFINE_integer("num_steps", 5000, "Optimisation steps.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Peak Adam learning rate.")
flags.DEFINE_integer("warmup_steps", 200, "Linear warm-up steps.")
flags.DEFINE_float("ema_decay", 0.999, "EMA decay of the weights.")
flags.DEFINE_float("grad_clip", 1.0, "Global-norm gradient clipping.")
flags.DEFINE_integer("seed", 0, "Seed of the initialisation, batches and noise.")
flags.DEFINE_integer("checkpoint_every", 250, "Steps between checkpoints.")
flags.DEFINE_integer("stop_after", None, "End this run after this step (checkpointed), the "
                     "schedule still spanning num_steps; a later run resumes from it.")


def main(argv):
  del argv
  logs.quiet_library_logs()
  cfg = unet.MNIST_UNET
  model = unet.UNet2DModel(cfg)
  apply_fn = lambda params, x, t: model.apply({"params": params}, x, t)
  data = mnist.source("train")
  data_key = jax.random.fold_in(jax.random.PRNGKey(FLAGS.seed), 1)
  start = time.perf_counter()
  ema_params = denoiser_training.train_denoiser(
      apply_fn, unet.init_params(cfg, jax.random.PRNGKey(FLAGS.seed)),
      lambda step: data.batch(jax.random.fold_in(data_key, step), FLAGS.batch_size),
      schedule=schedules.linear_beta(1000), num_steps=FLAGS.num_steps,
      learning_rate=FLAGS.learning_rate, warmup_steps=FLAGS.warmup_steps,
      ema_decay=FLAGS.ema_decay, grad_clip=FLAGS.grad_clip, seed=FLAGS.seed, log_every=50,
      checkpoint_dir=FLAGS.workdir, checkpoint_every=FLAGS.checkpoint_every,
      stop_after=FLAGS.stop_after)
  digest = weights.save_msgpack(ema_params, FLAGS.out)
  logging.info("wrote %s (sha256 %s) after %.1f min in this run", FLAGS.out, digest,
               (time.perf_counter() - start) / 60)
  print(f"{FLAGS.out} sha256 {digest}")


if __name__ == "__main__":
  app.run(main)
