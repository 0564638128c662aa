"""A small MLP eps-model for low-dimensional data (the 2-D end-to-end problem)."""

from __future__ import annotations

import flax.linen as nn
import jax

from ddss_jax.models.embeddings import sinusoidal_embedding


class MLPEpsModel(nn.Module):
  """eps(x [B, D], t [B]) -> [B, D]: residual SiLU MLP conditioned on a time embedding."""
  width: int = 128
  depth: int = 3
  time_dim: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    emb = sinusoidal_embedding(t, dim=self.time_dim)
    emb = nn.Dense(self.width)(nn.silu(nn.Dense(self.width)(emb)))
    h = nn.Dense(self.width)(x)
    for _ in range(self.depth):
      h = h + nn.Dense(self.width)(nn.silu(nn.LayerNorm()(h) + emb))
    return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(nn.silu(h))
