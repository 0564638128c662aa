"""Frechet distance against scipy's matrix square root (the pytorch-fid formula) and closed
forms."""

import numpy as np
import pytest
import scipy.linalg

from ddss_jax.evaluation import metrics


def scipy_frechet(mu1, s1, mu2, s2):
  """As pytorch-fid computes it: sqrtm of the product, real part."""
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("dim", [1, 5, 32])
def test_matches_scipy_sqrtm(dim):
  rng = np.random.default_rng(dim)
  a = rng.normal(size=(200, dim))
  b = rng.normal(size=(150, dim)) @ rng.normal(size=(dim, dim)) * 0.5 + 0.3
  got = metrics.fid_from_features(a, b)
  want = scipy_frechet(*metrics.gaussian_stats(a), *metrics.gaussian_stats(b))
  assert got == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_closed_form_for_isotropic_gaussians():
  # N(m1, s1^2 I) vs N(m2, s2^2 I) in D dims: |m1 - m2|^2 + D (s1 - s2)^2.
  dim = 4
  got = metrics.frechet_distance(np.zeros(dim), 4.0 * np.eye(dim), np.ones(dim), np.eye(dim))
  assert got == pytest.approx(dim * 1.0 + dim * (2.0 - 1.0) ** 2)


def test_rank_deficient_covariances_stay_finite_and_nonnegative():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(10, 64))  # N < D: singular covariance
  # Round-off of the clipped eigenvalues, against a trace of about 64.
  assert metrics.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-4)
  assert metrics.fid_from_features(a, rng.normal(size=(12, 64))) > 0


def test_bad_shapes():
  with pytest.raises(ValueError, match="needs feats"):
    metrics.gaussian_stats(np.zeros((1, 3)))
