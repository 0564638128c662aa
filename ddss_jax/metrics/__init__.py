"""Sample-quality metrics."""

from ddss_jax.metrics.fid import fid_from_features, frechet_distance, gaussian_stats
from ddss_jax.metrics.kid import kid, kid_subsets, polynomial_kernel

__all__ = ["fid_from_features", "frechet_distance", "gaussian_stats", "kid", "kid_subsets",
           "polynomial_kernel"]
