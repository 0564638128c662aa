"""Sample-quality metrics."""

from ddss_jax.metrics.kid import kid, kid_subsets, polynomial_kernel

__all__ = ["kid", "kid_subsets", "polynomial_kernel"]
