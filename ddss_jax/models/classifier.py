"""A small CNN classifier of the embedded MNIST digits; its penultimate layer is the feature space
of the KID loss on images ("MNIST classifier features", the analogue of Inception features).

Architecture (inputs [B, 32, 32, 1] in [-1, 1]), every conv 3 x 3 / SAME, then GroupNorm and SiLU:
  32 x 32: conv 32                  -> avg-pool 2
  16 x 16: conv 64, conv 64         -> avg-pool 2
   8 x  8: conv 96, conv 96         -> global mean            = features [B, 96]
  dropout (train only) -> dense 10                            = logits   [B, 10]
GroupNorm normalises each example on its own, so the network has no batch statistics and the
features of an example do not depend on the rest of its batch; average pooling and SiLU keep the
features smooth in the input, for gradients of the KID loss. Dropout acts only when train=True.

API: `MNISTClassifier().apply(variables, x)` gives logits and
`MNISTClassifier().apply(variables, x, method=MNISTClassifier.features)` the features;
`logits_fn(params, x)` and `features_fn(params, x)` do the same from the params pytree.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ddss_jax import weights

NUM_CLASSES = 10
FEATURE_DIM = 96
INPUT_SHAPE = (32, 32, 1)
SHIPPED_NAME = "mnist_classifier"


class MNISTClassifier(nn.Module):
  """logits [B, 10] (and features [B, FEATURE_DIM]) of digits [B, 32, 32, 1] in [-1, 1]."""
  widths: tuple[int, ...] = (32, 64, FEATURE_DIM)
  convs_per_stage: tuple[int, ...] = (1, 2, 2)
  groups: int = 8
  dropout_rate: float = 0.2

  def setup(self):
    if len(self.widths) != len(self.convs_per_stage):
      raise ValueError(f"widths {self.widths} and convs_per_stage {self.convs_per_stage} "
                       "must have the same length (one entry per resolution)")
    self.convs = [[nn.Conv(w, (3, 3), padding="SAME") for _ in range(n)]
                  for w, n in zip(self.widths, self.convs_per_stage)]
    self.norms = [[nn.GroupNorm(num_groups=self.groups) for _ in range(n)]
                  for _, n in zip(self.widths, self.convs_per_stage)]
    self.dropout = nn.Dropout(self.dropout_rate)
    self.head = nn.Dense(NUM_CLASSES)

  def features(self, x: jax.Array) -> jax.Array:
    """[B, widths[-1]] penultimate-layer features of x [B, 32, 32, 1]; the same in train/eval."""
    if x.ndim != 4 or x.shape[1:] != INPUT_SHAPE:
      raise ValueError(f"MNISTClassifier expects images [B, 32, 32, 1], got shape {x.shape}")
    h = x
    for stage, (convs, norms) in enumerate(zip(self.convs, self.norms)):
      if stage > 0:
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
      for conv, norm in zip(convs, norms):
        h = nn.silu(norm(conv(h)))
    return jnp.mean(h, axis=(1, 2))

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """[B, 10] logits of x [B, 32, 32, 1]; train=True applies dropout (needs a "dropout" rng)."""
    h = self.dropout(self.features(x), deterministic=not train)
    return self.head(h)


@jax.jit
def init_params(key: jax.Array) -> Any:
  """Freshly initialised params pytree of the default MNISTClassifier."""
  return MNISTClassifier().init(key, jnp.zeros((1, *INPUT_SHAPE)))["params"]


def params_template() -> Any:
  """Zeros with the structure, shapes and dtypes of the params (a template for loading)."""
  shapes = jax.eval_shape(init_params, jax.random.key(0))
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def logits_fn(params: Any, x: jax.Array) -> jax.Array:
  """[B, 10] inference logits of x [B, 32, 32, 1] in [-1, 1]."""
  return MNISTClassifier().apply({"params": params}, x)


def features_fn(params: Any, x: jax.Array) -> jax.Array:
  """[B, FEATURE_DIM] MNIST classifier features of x [B, 32, 32, 1] in [-1, 1]; differentiable."""
  return MNISTClassifier().apply({"params": params}, x, method=MNISTClassifier.features)


@jax.jit
def _predict(params: Any, x: jax.Array) -> jax.Array:
  return jnp.argmax(logits_fn(params, x), axis=-1)


def accuracy(params: Any, images: jax.Array, labels: jax.Array, *, batch_size: int = 500) -> float:
  """Fraction of images [N, 32, 32, 1] whose argmax logit equals labels [N]."""
  correct = 0
  for start in range(0, images.shape[0], batch_size):
    pred = _predict(params, images[start:start + batch_size])
    correct += int(jnp.sum(pred == labels[start:start + batch_size]))
  return correct / images.shape[0]


def load_shipped_classifier() -> Any:
  """The shipped trained params (ddss_jax/weights/mnist_classifier.msgpack), checksum verified."""
  return weights.load_shipped(SHIPPED_NAME, params_template())
