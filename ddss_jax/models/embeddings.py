"""Time embeddings shared by the diffusion models."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def sinusoidal_embedding(t: jax.Array, *, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Transformer-style embedding of float times t [B] -> [B, dim] (cos half, then sin half).

  Non-integer t is fine: the embedding is smooth in t, so a model's time input can be learned.
  """
  if dim % 2:
    raise ValueError(f"sinusoidal_embedding needs an even dim, got {dim}")
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = t.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)
