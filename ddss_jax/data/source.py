"""One interface for "a stream of real batches", whatever the dataset behind it."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySource:
  """Real examples held in memory.

  Attributes:
    name: e.g. "mnist5k/train".
    images: [N, ...] float32 in [-1, 1].
    labels: [N] int32, or None.
  """
  name: str
  images: np.ndarray
  labels: np.ndarray | None = None

  @property
  def num_examples(self) -> int:
    return int(self.images.shape[0])

  @property
  def example_shape(self) -> tuple[int, ...]:
    return tuple(self.images.shape[1:])

  def batch(self, key: jax.Array, num: int, rows: slice = slice(None)) -> np.ndarray:
    """[num, ...] examples drawn uniformly without replacement (num <= N) by `key`; only the
    `rows` of them (a process's share of a global batch)."""
    if not 1 <= num <= self.num_examples:
      raise ValueError(f"batch of {num} from {self.name}, which has {self.num_examples} examples")
    idx = np.asarray(jax.random.choice(key, self.num_examples, (num,), replace=False))
    return self.images[idx[rows]]

  def epoch(self, key: jax.Array, batch_size: int):
    """Yields (images, labels) batches of one shuffled pass; the last partial batch is dropped."""
    order = np.asarray(jax.random.permutation(key, self.num_examples))
    for start in range(0, self.num_examples - batch_size + 1, batch_size):
      idx = order[start:start + batch_size]
      yield self.images[idx], (None if self.labels is None else self.labels[idx])
