"""Trains the MNIST classifier whose features the KID loss on images uses, and saves its params.

  python -m ddss_jax.tools.train_classifier --out=ddss_jax/weights/mnist_classifier.msgpack

Trains on the 4000 "train" digits only (AdamW, warm-up + cosine learning rate, dropout, small
random rotations, zooms and shifts of the digits), reports the accuracy on the 1000 held-out
"test" digits and the wall time, and writes the params with weights.save_msgpack, printing the
file's sha256. Deterministic given --seed on one machine: all randomness comes from JAX keys.
The defaults reproduce the shipped file (weights.SHIPPED["mnist_classifier"]); --train_subset and
--epochs make quick runs for tests.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging

from ddss_jax import weights
from ddss_jax.data import mnist
from ddss_jax.data.source import ArraySource
from ddss_jax.models import classifier

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Path of the msgpack file to write.")
flags.DEFINE_integer("epochs", 30, "Passes over the training digits.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling, augmentation and dropout.")
flags.DEFINE_integer("batch_size", 128, "Digits per step.")
flags.DEFINE_float("learning_rate", 3e-3, "Peak AdamW learning rate.")
flags.DEFINE_float("weight_decay", 0.05, "AdamW decoupled weight decay.")
flags.DEFINE_float("max_shift", 2.0, "Augmentation: random shifts of up to this many pixels.")
flags.DEFINE_float("max_rotation", 10.0, "Augmentation: random rotations of up to this many "
                   "degrees.")
flags.DEFINE_float("max_zoom", 0.1, "Augmentation: random zooms by a factor in [1 -+ this].")
flags.DEFINE_integer("train_subset", 0,
                     "If > 0, train on this many training digits only (quick tests); 0 = all.")
flags.mark_flag_as_required("out")


def random_affine(key: jax.Array, images: jax.Array, *, max_shift: float, max_rotation: float,
                  max_zoom: float) -> jax.Array:
  """images [B, H, W, C], each moved by its own random similarity transform about the centre:
  rotation uniform in +-max_rotation degrees, zoom in [1 - max_zoom, 1 + max_zoom], shift in
  +-max_shift pixels along each axis; bilinear, filled with the background value -1."""
  batch, height, width, channels = images.shape
  key_rot, key_zoom, key_shift = jax.random.split(key, 3)
  angle = jnp.deg2rad(max_rotation) * jax.random.uniform(key_rot, (batch,), minval=-1, maxval=1)
  zoom = 1.0 + max_zoom * jax.random.uniform(key_zoom, (batch,), minval=-1, maxval=1)
  shift = max_shift * jax.random.uniform(key_shift, (batch, 2), minval=-1, maxval=1)
  centre = jnp.array([(height - 1) / 2, (width - 1) / 2])
  rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
  grid = jnp.stack([rows, cols], axis=-1) - centre  # [H, W, 2] output pixel, centred

  def warp(image, angle, zoom, shift):
    cos, sin = jnp.cos(angle) / zoom, jnp.sin(angle) / zoom
    inverse = jnp.array([[cos, -sin], [sin, cos]])  # output -> input: rotate back, unzoom
    source = (grid - shift) @ inverse.T + centre  # [H, W, 2]
    coords = [source[..., 0], source[..., 1]]
    return jnp.stack([jax.scipy.ndimage.map_coordinates(image[..., c], coords, order=1,
                                                        mode="constant", cval=-1.0)
                      for c in range(channels)], axis=-1)

  return jax.vmap(warp)(images, angle, zoom, shift)


def cross_entropy(params: Any, images: jax.Array, labels: jax.Array,
                  dropout_key: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of the training-mode logits of images [B, 32, 32, 1]."""
  logits = classifier.MNISTClassifier().apply({"params": params}, images, train=True,
                                              rngs={"dropout": dropout_key})
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def make_train_step(optimizer: optax.GradientTransformation, *, augment: dict[str, float]):
  """Returns a jitted step(params, opt_state, images, labels, key) -> (params, opt_state, loss)."""

  @jax.jit
  def step(params, opt_state, images, labels, key):
    key_augment, key_dropout = jax.random.split(key)
    images = random_affine(key_augment, images, **augment)
    loss, grads = jax.value_and_grad(cross_entropy)(params, images, labels, key_dropout)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def train(data: ArraySource, *, epochs: int, seed: int, batch_size: int, learning_rate: float,
          weight_decay: float, augment: dict[str, float]) -> Any:
  """Trained params of the default MNISTClassifier on all of `data` (images and labels);
  `augment` holds the keyword arguments max_shift, max_rotation, max_zoom of random_affine."""
  if epochs < 1:
    raise ValueError(f"epochs must be >= 1, got {epochs}")
  if not 1 <= batch_size <= data.num_examples:
    raise ValueError(f"batch_size must be in [1, {data.num_examples}] (the number of training "
                     f"digits), got {batch_size}")
  if sorted(augment) != ["max_rotation", "max_shift", "max_zoom"] or min(augment.values()) < 0:
    raise ValueError(f"augment must give max_rotation, max_shift, max_zoom, each >= 0; "
                     f"got {augment}")
  steps_per_epoch = data.num_examples // batch_size
  total_steps = epochs * steps_per_epoch
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate, warmup_steps=max(1, total_steps // 20),
      decay_steps=total_steps)
  optimizer = optax.adamw(schedule, weight_decay=weight_decay)
  key_init, key_epochs, key_steps = jax.random.split(jax.random.key(seed), 3)
  params = classifier.init_params(key_init)
  opt_state = optimizer.init(params)
  step = make_train_step(optimizer, augment=augment)
  step_count = 0
  for epoch in range(epochs):
    losses = []
    for images, labels in data.epoch(jax.random.fold_in(key_epochs, epoch), batch_size):
      params, opt_state, loss = step(params, opt_state, images, labels,
                                     jax.random.fold_in(key_steps, step_count))
      losses.append(loss)
      step_count += 1
    logging.info("epoch %d/%d: mean training loss %.4f", epoch + 1, epochs,
                 float(jnp.mean(jnp.stack(losses))))
  return params


def subset(data: ArraySource, num: int, *, seed: int) -> ArraySource:
  """`num` examples of data drawn without replacement by `seed` (num <= 0: all of it)."""
  if num <= 0 or num >= data.num_examples:
    return data
  idx = np.sort(np.random.default_rng(seed).choice(data.num_examples, num, replace=False))
  return ArraySource(name=f"{data.name}[{num}]", images=data.images[idx], labels=data.labels[idx])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  data = subset(mnist.source("train"), FLAGS.train_subset, seed=FLAGS.seed)
  print(f"training the MNIST classifier on {data.num_examples} digits of {data.name}, "
        f"{FLAGS.epochs} epochs, seed {FLAGS.seed}, on {jax.devices()[0].platform}")
  start = time.perf_counter()
  params = train(data, epochs=FLAGS.epochs, seed=FLAGS.seed, batch_size=FLAGS.batch_size,
                 learning_rate=FLAGS.learning_rate, weight_decay=FLAGS.weight_decay,
                 augment=dict(max_shift=FLAGS.max_shift, max_rotation=FLAGS.max_rotation,
                              max_zoom=FLAGS.max_zoom))
  params = jax.block_until_ready(params)
  seconds = time.perf_counter() - start
  num_params = sum(int(x.size) for x in jax.tree.leaves(params))
  test_images, test_labels = mnist.load("test")
  acc = classifier.accuracy(params, test_images, test_labels)
  sha256 = weights.save_msgpack(params, FLAGS.out)
  print(f"training time: {seconds:.1f} s")
  print(f"parameters: {num_params}")
  print(f"held-out accuracy: {acc:.4f} ({round(acc * len(test_labels))}/{len(test_labels)} "
        "test digits)")
  print(f"wrote {FLAGS.out}")
  print(f"sha256: {sha256}")


if __name__ == "__main__":
  app.run(main)
