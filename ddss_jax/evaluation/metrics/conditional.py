"""Metrics of a conditional sampler: fidelity to the requested class and quality within classes.

- class accuracy: the share of samples a classifier labels as the class they were drawn for,
  with its binomial standard error sqrt(p (1 - p) / n);
- class-conditional FID: the FID of each class's samples against the held-out examples of that
  class, and their mean over the classes (Frechet distance of the per-class Gaussians; with n
  samples per class in D feature dimensions it is biased upwards like FID at n, so compare
  samplers at equal n);
- KID within classes: the mean over the classes of the unbiased KID between a class's samples
  and its real examples, traceable and differentiable with fixed shapes (the conditional DDSS
  loss; classes with fewer than two of either side are left out of the mean).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ddss_jax.evaluation.metrics.fid import fid_from_features
from ddss_jax.evaluation.metrics.kid import polynomial_kernel


def class_within_means(feats: jax.Array, members: jax.Array) -> jax.Array:
  """[C] sum_{i != j in class c} k(f_i, f_j) / (n_c (n_c - 1)) of feats [N, D] with one-hot
  class members [N, C] (0 where n_c < 2): each class's KID term of one side."""
  kernel = polynomial_kernel(feats, feats)
  kernel = kernel - jnp.diag(jnp.diag(kernel))
  counts = members.sum(axis=0)
  sums = jnp.einsum("ic,ij,jc->c", members, kernel, members)
  return jnp.where(counts >= 2, sums / jnp.maximum(counts * (counts - 1), 1.0), 0.0)


def kid_within_classes(feats_a: jax.Array, classes_a: jax.Array, feats_b: jax.Array,
                       classes_b: jax.Array, *, num_classes: int,
                       within_b: jax.Array | None = None) -> jax.Array:
  """Mean over the classes c with at least two of each side of KID(feats_a of class c, feats_b
  of class c); feats [N, D] and [M, D], integer classes [N] and [M] in [0, num_classes).
  within_b: class_within_means of side b, where the caller has it already (a fixed bank)."""
  members_a = jax.nn.one_hot(classes_a, num_classes, dtype=feats_a.dtype)
  members_b = jax.nn.one_hot(classes_b, num_classes, dtype=feats_b.dtype)
  count_a, count_b = members_a.sum(axis=0), members_b.sum(axis=0)
  if within_b is None:
    within_b = class_within_means(feats_b, members_b)
  cross = jnp.einsum("ic,ij,jc->c", members_a, polynomial_kernel(feats_a, feats_b), members_b)
  cross = cross / jnp.maximum(count_a * count_b, 1.0)
  valid = (count_a >= 2) & (count_b >= 2)
  per_class = class_within_means(feats_a, members_a) + within_b - 2.0 * cross
  return jnp.sum(jnp.where(valid, per_class, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def class_accuracy(predicted: np.ndarray, requested: np.ndarray) -> tuple[float, float]:
  """(accuracy, its binomial std) of predicted [N] labels against the requested [N] ones."""
  predicted, requested = np.asarray(predicted), np.asarray(requested)
  if predicted.shape != requested.shape or predicted.ndim != 1 or not len(predicted):
    raise ValueError(f"predicted {predicted.shape} and requested {requested.shape} labels must "
                     "be two non-empty [N] arrays")
  accuracy = float(np.mean(predicted == requested))
  return accuracy, float(np.sqrt(accuracy * (1.0 - accuracy) / len(predicted)))


def class_conditional_fid(feats: np.ndarray, labels: np.ndarray, ref_feats: np.ndarray,
                          ref_labels: np.ndarray) -> tuple[float, dict[int, float]]:
  """(mean over classes, {class: FID}) of samples' features [N, D] drawn for labels [N] against
  reference features [M, D] of labels [M]; every class of `labels` must have at least two
  samples and two reference examples."""
  labels, ref_labels = np.asarray(labels), np.asarray(ref_labels)
  per_class = {}
  for label in np.unique(labels):
    mine, theirs = feats[labels == label], ref_feats[ref_labels == label]
    if len(mine) < 2 or len(theirs) < 2:
      raise ValueError(f"class {label}: {len(mine)} samples and {len(theirs)} reference examples;"
                       " a per-class FID needs at least two of each")
    per_class[int(label)] = fid_from_features(mine, theirs)
  return float(np.mean(list(per_class.values()))), per_class
