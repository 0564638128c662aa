"""Frechet distance between Gaussian fits of two feature sets (FID when the features are
Inception pool3; here any feature network, named as what it is).

    d^2 = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))

computed in float64 with a stable square root: (S_a S_b)^(1/2) has the same trace as
(S_a^(1/2) S_b S_a^(1/2))^(1/2), a symmetric PSD matrix whose square root comes from an
eigendecomposition with negative round-off eigenvalues clipped to zero.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean [D], covariance [D, D]) of feats [N, D] in float64 (unbiased covariance)."""
  feats = np.asarray(feats, np.float64)
  if feats.ndim != 2 or feats.shape[0] < 2:
    raise ValueError(f"gaussian_stats needs feats [N >= 2, D], got shape {feats.shape}")
  return feats.mean(axis=0), np.atleast_2d(np.cov(feats, rowvar=False))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray,
                     sigma_b: np.ndarray) -> float:
  """Squared Frechet distance of N(mu_a, sigma_a) and N(mu_b, sigma_b)."""
  mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
  sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
  if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
    raise ValueError(f"mismatched statistics: {mu_a.shape} vs {mu_b.shape}, "
                     f"{sigma_a.shape} vs {sigma_b.shape}")
  root_a = _sqrt_psd(sigma_a)
  cross = _sqrt_psd(root_a @ sigma_b @ root_a)
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b)
               - 2 * np.trace(cross))


def fid_from_features(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
  """Frechet distance between the Gaussian fits of feats_a [N, D] and feats_b [M, D]."""
  return frechet_distance(*gaussian_stats(feats_a), *gaussian_stats(feats_b))
