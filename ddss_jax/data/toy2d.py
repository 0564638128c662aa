"""A known 2-D distribution: an equal-weight ring of isotropic Gaussians.

Its samples and its exact log-density are available, so sample quality is measured exactly.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp


@dataclasses.dataclass(frozen=True)
class GaussianRing:
  """`num_modes` Gaussians of std `std` at equal angles on a circle of radius `radius`."""
  num_modes: int = 8
  radius: float = 1.4
  std: float = 0.1

  @property
  def means(self) -> np.ndarray:
    """[num_modes, 2] float64."""
    angles = 2 * np.pi * np.arange(self.num_modes) / self.num_modes
    return self.radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)

  def sample(self, key: jax.Array, num: int) -> jax.Array:
    """[num, 2] float32 samples."""
    key_mode, key_noise = jax.random.split(key)
    modes = jax.random.randint(key_mode, (num,), 0, self.num_modes)
    means = jnp.asarray(self.means, jnp.float32)[modes]
    return means + self.std * jax.random.normal(key_noise, (num, 2), jnp.float32)

  def log_prob(self, x: np.ndarray) -> np.ndarray:
    """[N] exact log-density (float64) of x [N, 2]."""
    x = np.asarray(x, np.float64)
    sq = np.sum((x[:, None, :] - self.means[None]) ** 2, axis=-1)  # [N, modes]
    log_comp = -0.5 * sq / self.std**2 - np.log(2 * np.pi * self.std**2)
    return logsumexp(log_comp, axis=-1) - np.log(self.num_modes)


def rbf_mmd(x: np.ndarray, y: np.ndarray, *, bandwidths=(0.05, 0.1, 0.2, 0.5, 1.0)) -> float:
  """Unbiased MMD^2 (float64) with a sum of Gaussian kernels exp(-|x - y|^2 / (2 h^2)).

  The held-out metric of the 2-D problem; independent of the features DDSS trains on.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

  def gram(a, b):
    sq = np.sum((a[:, None] - b[None]) ** 2, axis=-1)
    return sum(np.exp(-sq / (2 * h**2)) for h in bandwidths)

  n, m = len(x), len(y)
  k_xx, k_yy, k_xy = gram(x, x), gram(y, y), gram(x, y)
  return float((k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
               + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1)) - 2 * k_xy.mean())
