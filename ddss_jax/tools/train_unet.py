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

Class-conditional (--num_classes=10): the UNet gets a class embedding of num_classes + 1 rows
(diffusers' num_class_embeds; the last label, num_classes, means "no class"), each training label
is replaced by it with probability --label_dropout, and --init_from starts from unconditional
weights (the shipped UNet's, say) with the class embedding at zero, i.e. from that model exactly.
"""

import dataclasses
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
flags.DEFINE_integer("num_classes", 0, "0: unconditional; C > 0: class-conditional on the "
                     "digits' labels, label C meaning none.")
flags.DEFINE_float("label_dropout", 0.1, "Conditional: the probability a label is replaced by "
                   "the null label (the unconditional branch of classifier-free guidance).")
flags.DEFINE_float("class_embedding_lr_scale", 1.0, "Conditional: the class embedding's learning "
                   "rate over the others' (a zero embedding added to a trained model learns "
                   "slowly at the fine-tuning rate).")
flags.DEFINE_string("init_from", None, "Start from these unconditional weights (flax msgpack of "
                    "the MNIST UNet, e.g. ddss_jax/weights/mnist_unet.msgpack); the class "
                    "embedding starts at zero.")


def initial_params(cfg: unet.UNetConfig, seed: int, init_from: str | None):
  """The UNet's starting weights: random, or the unconditional weights at `init_from` with
  cfg's class embedding (if any) at zero."""
  params = unet.init_params(cfg, jax.random.PRNGKey(seed))
  if init_from is None:
    return params
  plain = dataclasses.replace(cfg, num_class_embeds=None)
  loaded = weights.load_msgpack(init_from, unet.params_template(plain), sha256=None)
  return {**params, **loaded}


def main(argv):
  del argv
  logs.quiet_library_logs()
  conditional = FLAGS.num_classes > 0
  cfg = dataclasses.replace(unet.MNIST_UNET,
                            num_class_embeds=FLAGS.num_classes + 1 if conditional else None)
  model = unet.UNet2DModel(cfg)
  apply_fn = lambda params, x, t, *labels: model.apply({"params": params}, x, t, *labels)
  data = mnist.source("train")
  data_key = jax.random.fold_in(jax.random.PRNGKey(FLAGS.seed), 1)
  draw = data.labelled_batch if conditional else data.batch
  start = time.perf_counter()
  ema_params = denoiser_training.train_denoiser(
      apply_fn, initial_params(cfg, FLAGS.seed, FLAGS.init_from),
      lambda step: draw(jax.random.fold_in(data_key, step), FLAGS.batch_size),
      schedule=schedules.linear_beta(1000), num_steps=FLAGS.num_steps,
      learning_rate=FLAGS.learning_rate, warmup_steps=FLAGS.warmup_steps,
      ema_decay=FLAGS.ema_decay, grad_clip=FLAGS.grad_clip, seed=FLAGS.seed, log_every=50,
      checkpoint_dir=FLAGS.workdir, checkpoint_every=FLAGS.checkpoint_every,
      stop_after=FLAGS.stop_after,
      dropout=(denoiser_training.LabelDropout(null_label=FLAGS.num_classes,
                                              rate=FLAGS.label_dropout) if conditional else None),
      lr_scales=({"class_embedding": FLAGS.class_embedding_lr_scale}
                 if conditional and FLAGS.class_embedding_lr_scale != 1.0 else None))
  digest = weights.save_msgpack(ema_params, FLAGS.out)
  logging.info("wrote %s (sha256 %s) after %.1f min in this run", FLAGS.out, digest,
               (time.perf_counter() - start) / 60)
  print(f"{FLAGS.out} sha256 {digest}")


if __name__ == "__main__":
  app.run(main)
