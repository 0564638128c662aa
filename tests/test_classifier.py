"""The MNIST classifier: shipped weights (checksum, held-out accuracy), its features for the KID
loss (shape, batch independence, gradients w.r.t. the input) and the CLI that trains it."""

import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddss_jax import weights
from ddss_jax.data import mnist
from ddss_jax.models import classifier
from ddss_jax.tools import train_classifier

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def params():
  return classifier.load_shipped_classifier()


def _template():
  return classifier.params_template()


def test_shipped_weights_match_their_checksum(params, tmp_path):
  entry = weights.SHIPPED[classifier.SHIPPED_NAME]
  path = os.path.join(weights.WEIGHTS_DIR, entry.filename)
  assert weights.sha256_of(path) == entry.sha256
  assert os.path.getsize(path) < 1_000_000
  shapes = jax.tree.map(np.shape, params)
  assert shapes == jax.tree.map(np.shape, _template())
  corrupt = tmp_path / entry.filename
  shutil.copy(path, corrupt)
  data = bytearray(corrupt.read_bytes())
  data[len(data) // 2] ^= 0xFF
  corrupt.write_bytes(bytes(data))
  with pytest.raises(ValueError, match="sha256"):
    weights.load_msgpack(str(corrupt), _template(), sha256=entry.sha256)


def test_shipped_classifier_accuracy_on_held_out_digits(params):
  images, labels = mnist.load("test")
  assert classifier.accuracy(params, images, labels) >= 0.97


@pytest.mark.slow
def test_features_are_finite_batch_independent_and_differentiable(params):
  images, _ = mnist.load("test")
  x = jnp.asarray(images[::100])  # one digit of each class
  features_fn = jax.jit(classifier.features_fn)
  feats = features_fn(params, x)
  assert feats.shape == (10, classifier.FEATURE_DIM)
  assert bool(jnp.all(jnp.isfinite(feats)))
  # No batch statistics: an example's features do not depend on the rest of its batch.
  np.testing.assert_allclose(features_fn(params, x[:1]), feats[:1], atol=1e-5)
  assert classifier.logits_fn(params, x).shape == (10, classifier.NUM_CLASSES)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(classifier.features_fn(params, x) ** 2)))(x)
  assert grad.shape == x.shape
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0


def test_features_reject_wrong_shapes(params):
  with pytest.raises(ValueError, match="32, 32, 1"):
    classifier.features_fn(params, jnp.zeros((2, 28, 28, 1)))


def test_random_affine_is_identity_without_augmentation():
  images, _ = mnist.load("test")
  x = jnp.asarray(images[:4])
  same = train_classifier.random_affine(jax.random.key(0), x, max_shift=0.0, max_rotation=0.0,
                                        max_zoom=0.0)
  np.testing.assert_allclose(same, x, atol=1e-6)
  moved = train_classifier.random_affine(jax.random.key(0), x, max_shift=2.0, max_rotation=10.0,
                                         max_zoom=0.1)
  assert moved.shape == x.shape and float(moved.min()) >= -1.0 and float(moved.max()) <= 1.0
  assert float(jnp.abs(moved - x).mean()) > 0.01


@pytest.mark.slow
def test_cli_trains_and_writes_loadable_weights(tmp_path):
  out = tmp_path / "clf.msgpack"
  result = subprocess.run(
      [sys.executable, "-m", "ddss_jax.tools.train_classifier", f"--out={out}", "--epochs=1",
       "--train_subset=128", "--batch_size=64"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  sha256 = weights.sha256_of(str(out))
  assert f"sha256: {sha256}" in result.stdout
  assert "held-out accuracy:" in result.stdout and "training time:" in result.stdout
  loaded = weights.load_msgpack(str(out), _template(), sha256=sha256)
  assert jax.tree.map(np.shape, loaded) == jax.tree.map(np.shape, _template())
