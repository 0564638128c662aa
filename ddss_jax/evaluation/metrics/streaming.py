"""Feature statistics accumulated batch by batch: what FID and KID need of N samples without
holding them. FID needs the mean and covariance (float64 sums of x and x x^T); KID needs a
uniform random sample of the features (a reservoir of fixed size, seeded).

Reference statistics of a dataset are these, computed once and cached as .npz (see save/load).
"""

from __future__ import annotations

import numpy as np

from ddss_jax.util import files


class FeatureStats:
  """Running count, sum [D] and sum of outer products [D, D] (float64), plus a reservoir of up to
  `sample_size` features for KID (Algorithm R, seeded; uniform over everything seen)."""

  def __init__(self, dim: int, *, sample_size: int = 10_000, seed: int = 0):
    self.dim, self.sample_size = dim, sample_size
    self.count = 0
    self.total = np.zeros(dim)
    self.total_outer = np.zeros((dim, dim))
    self.sample = np.zeros((0, dim), np.float32)
    self._rng = np.random.default_rng(seed)

  def update(self, feats: np.ndarray) -> None:
    """Adds feats [B, D]."""
    feats = np.asarray(feats)
    if feats.ndim != 2 or feats.shape[1] != self.dim:
      raise ValueError(f"FeatureStats({self.dim}) got features of shape {feats.shape}")
    wide = feats.astype(np.float64)
    self.total += wide.sum(axis=0)
    self.total_outer += wide.T @ wide
    room = max(self.sample_size - len(self.sample), 0)
    self.sample = np.concatenate([self.sample, feats[:room].astype(np.float32)])
    # Algorithm R for the rest: item number n (0-based) replaces slot j ~ U{0..n} if j < size.
    for offset in range(room, len(feats)):
      slot = self._rng.integers(0, self.count + offset + 1)
      if slot < self.sample_size:
        self.sample[slot] = feats[offset]
    self.count += len(feats)

  @property
  def mean(self) -> np.ndarray:
    return self.total / self.count

  @property
  def covariance(self) -> np.ndarray:
    """Unbiased covariance [D, D] (as np.cov)."""
    if self.count < 2:
      raise ValueError(f"a covariance needs >= 2 features, have {self.count}")
    mean = self.mean
    return (self.total_outer - self.count * np.outer(mean, mean)) / (self.count - 1)

  def save(self, path: str, **metadata: str) -> None:
    """Writes mu, sigma, the KID sample, the count and string metadata to an .npz, atomically."""
    files.save_npz(path, mu=self.mean, sigma=self.covariance, kid_sample=self.sample,
                   count=np.int64(self.count),
                   **{f"meta_{k}": np.str_(v) for k, v in metadata.items()})


def load_stats(path: str) -> dict[str, np.ndarray]:
  """{"mu", "sigma", "kid_sample", "count", "meta_*"} from a file FeatureStats.save wrote."""
  with np.load(path, allow_pickle=False) as data:
    return {k: data[k] for k in data.files}
