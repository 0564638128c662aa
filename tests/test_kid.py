"""KID against a float64 NumPy reference of the published formula (Binkowski et al. 2018)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddss_jax.evaluation import metrics


def numpy_kid(a, b):
  """Unbiased MMD^2, kernel (x.y / d + 1)^3, written as explicit sums over index pairs."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  d = a.shape[1]
  k = lambda x, y: (x @ y / d + 1.0) ** 3
  n, m = len(a), len(b)
  saa = sum(k(a[i], a[j]) for i, j in itertools.permutations(range(n), 2))
  sbb = sum(k(b[i], b[j]) for i, j in itertools.permutations(range(m), 2))
  sab = sum(k(a[i], b[j]) for i in range(n) for j in range(m))
  return saa / (n * (n - 1)) + sbb / (m * (m - 1)) - 2 * sab / (n * m)


@pytest.mark.parametrize("n,m,d,shift", [(7, 7, 5, 0.0), (9, 5, 16, 0.5), (4, 12, 3, 2.0)])
def test_kid_matches_numpy_float64(n, m, d, shift):
  rng = np.random.default_rng(n * m + d)
  a = rng.normal(size=(n, d)).astype(np.float32)
  b = (rng.normal(size=(m, d)) + shift).astype(np.float32)
  np.testing.assert_allclose(metrics.kid(a, b), numpy_kid(a, b), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_kid_gradient_matches_finite_differences():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(6, 4))
  b = rng.normal(size=(5, 4)) + 0.3
  grad = np.asarray(jax.grad(metrics.kid)(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)))
  step = 1e-5
  for idx in [(0, 0), (3, 2), (5, 3)]:
    up, down = a.copy(), a.copy()
    up[idx] += step
    down[idx] -= step
    fd = (numpy_kid(up, b) - numpy_kid(down, b)) / (2 * step)
    assert grad[idx] == pytest.approx(fd, rel=1e-3, abs=1e-5)


def test_kid_is_unbiased_near_zero_for_one_distribution():
  key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(key_a, (400, 8))
  b = jax.random.normal(key_b, (300, 8))
  same = float(metrics.kid(a, b))
  different = float(metrics.kid(a, b + 0.5))
  assert abs(same) < 0.02 < different


@pytest.mark.slow
def test_kid_subsets_mean_and_std():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(20, 6)).astype(np.float32)
  b = (rng.normal(size=(15, 6)) + 0.4).astype(np.float32)
  key = jax.random.PRNGKey(2)
  # Subsets of size min(N, M) drawn without replacement: reproduce them for the reference.
  mean, std = metrics.kid_subsets(a, b, key=key, num_subsets=8, subset_size=100)
  values = []
  for subset_key in jax.random.split(key, 8):
    key_a, key_b = jax.random.split(subset_key)
    idx_a = np.asarray(jax.random.permutation(key_a, 20))[:15]
    idx_b = np.asarray(jax.random.permutation(key_b, 15))[:15]
    values.append(numpy_kid(a[idx_a], b[idx_b]))
  assert float(mean) == pytest.approx(np.mean(values), rel=1e-4)
  assert float(std) == pytest.approx(np.std(values), rel=1e-3)
  assert float(std) > 0
  # With equal sizes and whole sets, every subset is a permutation: std 0, mean = KID.
  mean, std = metrics.kid_subsets(a[:15], b, key=key, num_subsets=4)
  assert float(mean) == pytest.approx(numpy_kid(a[:15], b), rel=1e-4)
  assert float(std) < 1e-5


def test_kid_rejects_bad_shapes():
  with pytest.raises(ValueError, match=r"feats_a \[N, D\] and feats_b \[M, D\]"):
    metrics.kid(jnp.zeros((4, 3)), jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match="at least 2 samples"):
    metrics.kid(jnp.zeros((1, 3)), jnp.zeros((4, 3)))


def test_kid_against_a_bank_with_its_within_term_given():
  """The fixed-bank form of the DDSS loss: the bank's own kernel term passed in, not recomputed."""
  rng = np.random.default_rng(3)
  a = rng.normal(size=(6, 4)).astype(np.float32)
  bank = (rng.normal(size=(11, 4)) + 0.3).astype(np.float32)
  within = metrics.within_mean(bank)
  d = bank.shape[1]
  np.testing.assert_allclose(within, sum((bank[i] @ bank[j] / d + 1.0) ** 3 for i, j in
                                         itertools.permutations(range(11), 2)) / 110, rtol=1e-5)
  np.testing.assert_allclose(metrics.kid(a, bank, within_b=within), numpy_kid(a, bank),
                             rtol=1e-4, atol=1e-6)
