"""Sample-quality metrics."""

from ddss_jax.evaluation.metrics.conditional import (
  class_accuracy,
  class_conditional_fid,
  class_within_means,
  kid_within_classes,
)
from ddss_jax.evaluation.metrics.fid import fid_from_features, frechet_distance, gaussian_stats
from ddss_jax.evaluation.metrics.inception_score import StreamingInceptionScore, inception_score
from ddss_jax.evaluation.metrics.kid import kid, kid_subsets, polynomial_kernel, within_mean
from ddss_jax.evaluation.metrics.precision_recall import precision_recall
from ddss_jax.evaluation.metrics.streaming import FeatureStats, load_stats

__all__ = ["FeatureStats", "StreamingInceptionScore", "class_accuracy", "class_conditional_fid",
           "class_within_means", "kid_within_classes",
           "fid_from_features", "frechet_distance",
           "gaussian_stats", "inception_score", "kid", "kid_subsets", "load_stats",
           "polynomial_kernel", "precision_recall", "within_mean"]
