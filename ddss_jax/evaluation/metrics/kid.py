"""Kernel Inception Distance (Binkowski et al. 2018) on any feature space.

KID is the unbiased estimate of the squared MMD between two feature distributions with the
polynomial kernel k(x, y) = (x . y / D + 1)^3:

    MMD_u^2 = sum_{i != j} k(a_i, a_j) / (N (N - 1)) + sum_{i != j} k(b_i, b_j) / (M (M - 1))
              - 2 sum_{i, j} k(a_i, b_j) / (N M).

`kid` is the differentiable statistic DDSS minimises; `kid_subsets` is the evaluation variant
that averages over random subsets, as clean-fid and torch-fidelity report KID.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def polynomial_kernel(x: jax.Array, y: jax.Array) -> jax.Array:
  """[N, M] kernel matrix (x . y / D + 1)^3 of x [N, D] and y [M, D]."""
  dim = x.shape[-1]
  return (x @ y.T / dim + 1.0) ** 3


def within_mean(feats: jax.Array) -> jax.Array:
  """sum_{i != j} k(f_i, f_j) / (N (N - 1)) of feats [N, D]: KID's term of one side alone."""
  n = feats.shape[0]
  kernel = polynomial_kernel(feats, feats)
  return (jnp.sum(kernel) - jnp.trace(kernel)) / (n * (n - 1))


def kid(feats_a: jax.Array, feats_b: jax.Array, *,
        within_b: jax.Array | None = None) -> jax.Array:
  """Unbiased MMD^2 between feats_a [N, D] and feats_b [M, D] (N, M >= 2); a scalar.

  within_b: within_mean(feats_b), where the caller has it already (a fixed reference bank:
  its M x M kernel is then not recomputed).
  """
  if feats_a.ndim != 2 or feats_b.ndim != 2 or feats_a.shape[1] != feats_b.shape[1]:
    raise ValueError(f"kid needs feats_a [N, D] and feats_b [M, D], got {feats_a.shape} and "
                     f"{feats_b.shape}")
  n, m = feats_a.shape[0], feats_b.shape[0]
  if n < 2 or m < 2:
    raise ValueError(f"kid needs at least 2 samples on each side, got N={n}, M={m}")
  k_aa = polynomial_kernel(feats_a, feats_a)
  k_ab = polynomial_kernel(feats_a, feats_b)
  within_a = (jnp.sum(k_aa) - jnp.trace(k_aa)) / (n * (n - 1))
  if within_b is None:
    k_bb = polynomial_kernel(feats_b, feats_b)
    within_b = (jnp.sum(k_bb) - jnp.trace(k_bb)) / (m * (m - 1))
  return within_a + within_b - 2.0 * jnp.mean(k_ab)


def kid_subsets(feats_a: jax.Array, feats_b: jax.Array, *, key: jax.Array,
                num_subsets: int = 100, subset_size: int = 1000) -> tuple[jax.Array, jax.Array]:
  """(mean, std) of `kid` over random subsets, each drawn without replacement from each side.

  The subset size is min(subset_size, N, M), as in torch-fidelity; std is the population std
  (ddof = 0) of the per-subset values.
  """
  feats_a, feats_b = jnp.asarray(feats_a), jnp.asarray(feats_b)
  size = min(subset_size, feats_a.shape[0], feats_b.shape[0])

  def one(subset_key):
    key_a, key_b = jax.random.split(subset_key)
    idx_a = jax.random.permutation(key_a, feats_a.shape[0])[:size]
    idx_b = jax.random.permutation(key_b, feats_b.shape[0])[:size]
    return kid(feats_a[idx_a], feats_b[idx_b])

  values = jax.lax.map(one, jax.random.split(key, num_subsets))
  return jnp.mean(values), jnp.std(values)
