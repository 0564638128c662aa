"""Feature maps for the KID loss on low-dimensional data.

Images use a trained feature network (ddss_jax.models: the MNIST classifier, Inception); points
use themselves or random Fourier features, whose dot products approximate a Gaussian kernel of
the given lengthscale (Rahimi & Recht 2007):
phi(x) = sqrt(2) cos(x W + b), W ~ N(0, 1 / lengthscale^2), b ~ U[0, 2 pi).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

FEATURE_KINDS = ("identity", "rff")


def init_rff(key: jax.Array, *, in_dim: int, num_features: int,
             lengthscale: float) -> dict[str, jax.Array]:
  """Parameters of a random Fourier feature map: weights [in_dim, F], phases [F]."""
  key_w, key_b = jax.random.split(key)
  return {"weights": jax.random.normal(key_w, (in_dim, num_features)) / lengthscale,
          "phases": jax.random.uniform(key_b, (num_features,), maxval=2 * jnp.pi)}


def rff(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """[B, F] features of points x [B, in_dim]."""
  return jnp.sqrt(2.0) * jnp.cos(x @ params["weights"] + params["phases"])


def identity(params: dict, x: jax.Array) -> jax.Array:
  """[B, prod(...)] the examples themselves, flattened."""
  del params
  return x.reshape(x.shape[0], -1)
