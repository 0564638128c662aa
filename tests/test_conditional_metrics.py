"""Class accuracy with its binomial std, and class-conditional FID against per-class Frechet
distances computed with scipy's matrix square root (the pytorch-fid formula)."""

import numpy as np
import pytest
import scipy.linalg

from ddss_jax.evaluation.metrics import conditional


def scipy_fid(a, b):
  mu_a, mu_b = a.mean(0), b.mean(0)
  s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  return (np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b)
          - 2 * np.trace(scipy.linalg.sqrtm(s_a @ s_b).real))


def test_class_accuracy_and_its_binomial_std():
  requested = np.arange(400) % 10
  predicted = requested.copy()
  predicted[:100] = (predicted[:100] + 1) % 10   # 100 of 400 wrong
  accuracy, std = conditional.class_accuracy(predicted, requested)
  assert accuracy == 0.75 and std == pytest.approx(np.sqrt(0.75 * 0.25 / 400))
  assert conditional.class_accuracy(requested, requested) == (1.0, 0.0)
  with pytest.raises(ValueError, match=r"predicted \(3,\) and requested \(4,\)"):
    conditional.class_accuracy(np.zeros(3), np.zeros(4))


def test_class_conditional_fid_is_the_mean_of_the_per_class_distances():
  rng = np.random.default_rng(0)
  labels, ref_labels = np.repeat([0, 1, 2], 60), np.repeat([0, 1, 2], 80)
  means = np.array([[0.0] * 5, [3.0] * 5, [-2.0] * 5])
  feats = rng.normal(size=(180, 5)) + means[labels] + 0.5 * (labels[:, None] == 1)
  ref = rng.normal(size=(240, 5)) * 1.3 + means[ref_labels]
  mean, per_class = conditional.class_conditional_fid(feats, labels, ref, ref_labels)
  want = {c: scipy_fid(feats[labels == c], ref[ref_labels == c]) for c in range(3)}
  assert per_class == pytest.approx(want, rel=1e-6)
  assert mean == pytest.approx(np.mean(list(want.values())), rel=1e-6)
  # Samples of the wrong class are far from their class's reference: a large per-class FID
  # that the unconditional FID of all samples does not show.
  swapped = np.where(labels == 0, 1, np.where(labels == 1, 0, 2))
  worse, _ = conditional.class_conditional_fid(feats, swapped, ref, ref_labels)
  assert worse > mean + 10
  with pytest.raises(ValueError, match="class 3: 1 samples and 0 reference examples"):
    conditional.class_conditional_fid(feats[:3], np.array([0, 0, 3]), ref, ref_labels)


def numpy_kid(a, b):
  k = lambda x, y: (x @ y.T / a.shape[1] + 1.0) ** 3
  off = lambda m: (m.sum() - np.trace(m)) / (len(m) * (len(m) - 1))
  return off(k(a, a)) + off(k(b, b)) - 2.0 * k(a, b).mean()


def test_kid_within_classes_is_the_mean_of_per_class_numpy_kids():
  """Classes with fewer than two of a side are left out; a bank's within terms give the same."""
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(30, 5)), rng.normal(size=(40, 5)) + 0.3
  classes_a = np.array([0] * 10 + [1] * 12 + [2] * 7 + [3])   # class 3: one sample
  classes_b = np.array([0] * 15 + [1] * 5 + [2] * 18 + [4] * 2)
  want = np.mean([numpy_kid(a[classes_a == c], b[classes_b == c]) for c in (0, 1, 2)])
  got = conditional.kid_within_classes(a, classes_a, b, classes_b, num_classes=5)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  import jax  # pylint: disable=import-outside-toplevel
  bank = conditional.class_within_means(b, jax.nn.one_hot(classes_b, 5))
  np.testing.assert_allclose(float(conditional.kid_within_classes(
      a, classes_a, b, classes_b, num_classes=5, within_b=bank)), want, rtol=1e-5)
