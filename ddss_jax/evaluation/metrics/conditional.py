"""Metrics of a conditional sampler: fidelity to the requested class and quality within classes.

- class accuracy: the share of samples a classifier labels as the class they were drawn for,
  with its binomial standard error sqrt(p (1 - p) / n);
- class-conditional FID: the FID of each class's samples against the held-out examples of that
  class, and their mean over the classes (Frechet distance of the per-class Gaussians; with n
  samples per class in D feature dimensions it is biased upwards like FID at n, so compare
  samplers at equal n).
"""

from __future__ import annotations

import numpy as np

from ddss_jax.evaluation.metrics.fid import fid_from_features


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
