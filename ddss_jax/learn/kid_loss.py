"""The KID loss of DDSS: KID between the features of a batch drawn from the sampler and those of
real examples (a fresh batch each step, or a fixed bank drawn once)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ddss_jax import samplers
from ddss_jax.data.source import check_finite
from ddss_jax.evaluation import drawing, metrics
from ddss_jax.problems.base import Problem
from ddss_jax.util import parallel


def make_loss_fn(sampler: samplers.Sampler, problem: Problem, batch_size: int,
                 mesh: Mesh | None = None):
  """loss(sampler_params, model_params, feature_params, real [M, ...], key, reference=None) ->
  KID scalar, against the features of `real`, or against a fixed bank of real features where
  reference = {"features": [M, D], "within": metrics.within_mean of them} (make_reference;
  `real` is then not used).

  With a mesh, every eps-model input and the generated batch are constrained to be split along
  the batch over its devices; the KID of the global batch is unchanged.
  """
  def loss_fn(sampler_params, model_params, feature_params, real, key, reference=None):
    generated = drawing.generate(sampler, problem, sampler_params, model_params, key,
                                 batch_size, mesh)
    feats = problem.feature_apply(feature_params, generated)
    if reference is not None:
      return metrics.kid(feats, reference["features"], within_b=reference["within"])
    real_feats = jax.lax.stop_gradient(problem.feature_apply(feature_params, real))
    return metrics.kid(feats, real_feats)

  return loss_fn


def make_reference(problem: Problem, feature_params: Any, *, size: int, seed: int,
                   mesh: Mesh | None = None) -> dict[str, jax.Array]:
  """The KID loss's fixed real side: the features [size, D] of `size` real training examples
  drawn once with PRNGKey(seed), and their within-bank kernel mean."""
  examples = np.asarray(problem.real_batch(jax.random.PRNGKey(seed), size))
  features_of = jax.jit(problem.feature_apply)
  feats = np.asarray(parallel.padded_apply(lambda x: features_of(feature_params, x), examples,
                                           500, mesh))
  check_finite(feats, name=f"the KID loss's bank: the features of {size} training examples "
               f"drawn with seed {seed}", what="features")
  feats = jnp.asarray(feats)
  return {"features": feats, "within": jax.jit(metrics.within_mean)(feats)}
