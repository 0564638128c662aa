"""One interface for "a stream of real batches", whatever the dataset behind it, and the checks
that examples are finite (`check_finite`, naming the bad rows) and that a batch is what an image
model expects (`check_images`, run on the first real batch before anything compiles).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from absl import logging


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
    return self.images[self._draw(key, num)[rows]]

  def labelled_batch(self, key: jax.Array, num: int) -> tuple[np.ndarray, np.ndarray]:
    """(images [num, ...], labels [num]): `batch`'s examples for the same key, with labels."""
    return self.batch(key, num), self.label_batch(key, num)

  def label_batch(self, key: jax.Array, num: int, rows: slice = slice(None)) -> np.ndarray:
    """The labels [num] of `batch`'s examples for the same key and rows."""
    if self.labels is None:
      raise ValueError(f"{self.name} has no labels")
    return self.labels[self._draw(key, num)[rows]]

  def _draw(self, key: jax.Array, num: int) -> np.ndarray:
    if not 1 <= num <= self.num_examples:
      raise ValueError(f"batch of {num} from {self.name}, which has {self.num_examples} examples")
    return np.asarray(jax.random.choice(key, self.num_examples, (num,), replace=False))

  def split(self, num: int, key: jax.Array) -> tuple["ArraySource", "ArraySource"]:
    """(the rest, `num` examples held out), a random partition by `key`: a validation split
    carved from the training examples."""
    if not 1 <= num < self.num_examples:
      raise ValueError(f"a split of {num} from {self.name}, which has {self.num_examples} "
                       "examples (at least one must stay)")
    order = np.asarray(jax.random.permutation(key, self.num_examples))
    part = lambda idx, suffix: ArraySource(f"{self.name}{suffix}", self.images[idx],
                                           None if self.labels is None else self.labels[idx])
    return part(np.sort(order[num:]), ""), part(np.sort(order[:num]), "/validation")

  def carve(self, num: int, key: jax.Array) -> tuple["ArraySource", np.ndarray]:
    """(the rest, the `num` held-out images): split's, as TFDSImageSource.carve returns them."""
    rest, held = self.split(num, key)
    return rest, held.images

  def epoch(self, key: jax.Array, batch_size: int):
    """Yields (images, labels) batches of one shuffled pass; the last partial batch is dropped."""
    order = np.asarray(jax.random.permutation(key, self.num_examples))
    for start in range(0, self.num_examples - batch_size + 1, batch_size):
      idx = order[start:start + batch_size]
      yield self.images[idx], (None if self.labels is None else self.labels[idx])


def carve_validation(source, num: int, seed: int):
  """A problem's split_validation over its training `source` (ArraySource or TFDSImageSource):
  (the rest's batch, the `num` examples [num, ...] carved out by PRNGKey(seed + 4))."""
  rest, held = source.carve(num, jax.random.PRNGKey(seed + 4))
  return rest.batch, held


def carve_validation_labels(source: ArraySource, num: int, seed: int):
  """carve_validation's split, its labels: (the rest's label_batch, the `num` labels [num])."""
  rest, held = source.split(num, jax.random.PRNGKey(seed + 4))
  return rest.label_batch, held.labels


def check_images(x, *, name: str, size: int, channels: int) -> None:
  """Raises ValueError, naming `name`, the bad value and the expectation, unless x is a float
  array [B, size, size, channels] of finite values in [-1, 1] (the range every model here was
  trained on). Logs a warning when no value is negative: [0, 1] data passes the range check but
  is almost surely scaled wrongly.
  """
  x = np.asarray(x)
  want = f"[B, {size}, {size}, {channels}]"
  if x.ndim != 4 or x.shape[1:] != (size, size, channels):
    raise ValueError(f"{name}: images have shape {list(x.shape)}, expected {want} (image size "
                     f"{size}, {channels} channel{'s' * (channels != 1)}) to match the model")
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{name}: images have dtype {x.dtype}, expected floating point in [-1, 1] "
                     "(uint8 pixels p become p / 127.5 - 1)")
  check_finite(x, name=name)
  low, high = float(x.min()), float(x.max())
  if low < -1.0 - 1e-5 or high > 1.0 + 1e-5:
    raise ValueError(f"{name}: image values span [{low:.4g}, {high:.4g}], expected within "
                     "[-1, 1] (uint8 pixels p become p / 127.5 - 1)")
  if low >= 0.0:
    logging.warning("%s: no image value is negative (range [%.4g, %.4g]): are they scaled to "
                    "[0, 1] instead of [-1, 1]?", name, low, high)


def check_finite(x, *, name: str, first_row: int = 0, what: str = "examples") -> None:
  """Raises ValueError naming `name` and the rows of x [N, ...] (numbered from first_row) that
  hold NaN or inf, before they reach a model: a non-finite example is never drawn silently."""
  x = np.asarray(x)
  if x.ndim == 0 or not np.issubdtype(x.dtype, np.inexact):
    return
  bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
  if bad.size:
    rows = ", ".join(str(int(i) + first_row) for i in bad[:10])
    more = f" and {bad.size - 10} more" if bad.size > 10 else ""
    raise ValueError(f"{name}: row{'s' * (bad.size > 1)} {rows}{more} of {len(x)} {what} hold "
                     "NaN or inf; every value must be finite (drop or repair those rows)")
