"""k-NN precision and recall (Kynkaanniemi et al. 2019) on any feature space.

"Improved Precision and Recall Metric for Assessing Generative Models" (NeurIPS 2019) estimates
each distribution's support as the union of balls around its samples, the radius of a sample's
ball being the Euclidean distance to its k-th nearest neighbour in the same set:

    precision = fraction of fake samples inside at least one real sample's ball (fidelity),
    recall    = fraction of real samples inside at least one fake sample's ball (coverage).

Convention (that of torch-fidelity 0.4.0's "prc", k = 3 by default): the k-th neighbour excludes
the sample itself (torch-fidelity takes the (k+1)-th smallest distance of a row that includes the
zero self-distance) but counts duplicates of it; balls are closed (distance <= radius). Distances
are compared squared, which is the same order as Euclidean ones. Pairwise distances are computed
batch_size rows at a time, so peak memory is about batch_size x max(N, M) float32 values.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes in the distance matmuls on GPU/TPU


def _sq_dists(rows: jax.Array, ref: jax.Array, ref_sq: jax.Array) -> jax.Array:
  """[B, N] squared distances of rows [B, D] to ref [N, D], ref_sq [N] = |ref|^2, clipped at 0."""
  cross = jnp.matmul(rows, ref.T, precision=_HIGHEST)
  return jnp.maximum(jnp.sum(rows * rows, axis=1)[:, None] + ref_sq[None, :] - 2.0 * cross, 0.0)


def _knn_radii(feats: jax.Array, k: int, batch_size: int) -> jax.Array:
  """[N] squared distance of each row of feats [N, D] to its k-th nearest other row."""
  sq = jnp.sum(feats * feats, axis=1)
  others = jnp.arange(feats.shape[0])

  def rows(chunk):
    x, idx = chunk
    d = _sq_dists(x, feats, sq)
    d = jnp.where(others[None, :] == idx[:, None], jnp.inf, d)  # exclude self exactly
    return -jax.lax.top_k(-d, k)[0][:, -1]

  return _chunked(rows, (feats, others), batch_size)


def _covered(queries: jax.Array, ref: jax.Array, radii: jax.Array, batch_size: int) -> jax.Array:
  """Number of queries [M, D] inside at least one closed ball (ref [N, D], squared radii [N])."""
  sq = jnp.sum(ref * ref, axis=1)
  inside = _chunked(lambda x: jnp.any(_sq_dists(x, ref, sq) <= radii[None, :], axis=1), queries,
                    batch_size)
  return jnp.sum(inside, dtype=jnp.int32)


def _chunked(fn, xs, batch_size: int):
  """fn (on [B, ...] leading blocks) applied to xs in blocks of at most batch_size rows."""
  return jax.lax.map(lambda x: fn(jax.tree.map(lambda a: a[None], x))[0], xs,
                     batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("k", "batch_size"))
def _counts(real: jax.Array, fake: jax.Array, k: int, batch_size: int):
  center = jnp.mean(real, axis=0)  # distances are shift-invariant; smaller norms, less cancellation
  real, fake = real - center, fake - center
  precision = _covered(fake, real, _knn_radii(real, k, batch_size), batch_size)
  recall = _covered(real, fake, _knn_radii(fake, k, batch_size), batch_size)
  return precision, recall


def precision_recall(real_feats, fake_feats, *, k: int = 3,
                     batch_size: int = 1000) -> tuple[float, float]:
  """(precision, recall) of fake_feats [M, D] against real_feats [N, D]; N, M >= k + 1.

  Both are Python floats in [0, 1]: count / M and count / N. Features are cast to float32.
  """
  for name, value in (("k", k), ("batch_size", batch_size)):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
      raise ValueError(f"precision_recall needs a positive int {name}, got {value!r}")
  real, fake = jnp.asarray(real_feats, jnp.float32), jnp.asarray(fake_feats, jnp.float32)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"precision_recall needs real_feats [N, D] and fake_feats [M, D], got "
                     f"{real.shape} and {fake.shape}")
  for name, feats in (("real_feats", real), ("fake_feats", fake)):
    if feats.shape[0] < k + 1:
      raise ValueError(f"precision_recall needs at least k + 1 = {k + 1} rows in {name}, got "
                       f"{feats.shape[0]}")
  covered_fake, covered_real = _counts(real, fake, int(k), int(batch_size))
  return int(covered_fake) / fake.shape[0], int(covered_real) / real.shape[0]
