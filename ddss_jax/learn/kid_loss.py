"""The KID loss of DDSS: KID between the features of a batch drawn from the sampler and those of
real examples (a fresh batch each step, or a fixed bank drawn once). For a conditional problem
the batch is drawn for conditions drawn from the data (conditioned_batch_fn), and KID is taken
within each class, or on features joined with the conditions' embedding
(Problem.conditioning.embed): either way the loss rewards samples that look like real examples
of their own condition."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ddss_jax import samplers
from ddss_jax.data.source import check_finite
from ddss_jax.evaluation import drawing, metrics
from ddss_jax.problems.base import Problem, join_condition
from ddss_jax.util import parallel


def make_loss_fn(sampler: samplers.Sampler, problem: Problem, batch_size: int,
                 mesh: Mesh | None = None, *, conditional: str = "within_classes"):
  """loss(sampler_params, model_params, feature_params, real [M, ...], key, reference=None) ->
  KID scalar, against the features of `real`, or against a fixed bank of real features where
  reference = {"features": [M, D], "within": metrics.within_mean of them} (make_reference;
  `real` is then not used).

  A conditional problem's `real` is {"x": examples [M, ...], "cond": their conditions,
  "sample_cond": the conditions [batch_size, ...] to draw the samples for}
  (conditioned_batch_fn). `conditional` says how the two sides are compared: "within_classes",
  the mean over classes of the KID between a class's samples and its real examples
  (metrics.kid_within_classes; the problem's Conditioning.classes), or "joined", KID on each
  side's features joined with its own conditions' embedding.

  With a mesh, every eps-model input and the generated batch are constrained to be split along
  the batch over its devices; the KID of the global batch is unchanged.
  """
  conditioning = problem.conditioning
  within_classes = conditioning is not None and conditional == "within_classes"
  if within_classes and conditioning.classes is None:
    raise ValueError(f"loss.conditional='within_classes': problem {problem.name!r}'s conditions "
                     "have no classes (Conditioning.classes); use 'joined'")
  if within_classes:
    return _within_classes_loss(sampler, problem, batch_size, mesh)

  def loss_fn(sampler_params, model_params, feature_params, real, key, reference=None):
    sample_cond = None if conditioning is None else real["sample_cond"]
    examples = real if conditioning is None else real["x"]
    generated = drawing.generate(sampler, problem, sampler_params, model_params, key,
                                 batch_size, mesh, cond=sample_cond)
    feats = join_condition(problem.feature_apply(feature_params, generated), sample_cond,
                           conditioning)
    if reference is not None:
      return metrics.kid(feats, reference["features"], within_b=reference["within"])
    real_feats = jax.lax.stop_gradient(join_condition(
        problem.feature_apply(feature_params, examples),
        None if conditioning is None else real["cond"], conditioning))
    return metrics.kid(feats, real_feats)

  return loss_fn


def _within_classes_loss(sampler: samplers.Sampler, problem: Problem, batch_size: int,
                         mesh: Mesh | None):
  """make_loss_fn's KID within classes (reference: make_reference's, with "classes")."""
  conditioning = problem.conditioning

  def loss_fn(sampler_params, model_params, feature_params, real, key, reference=None):
    generated = drawing.generate(sampler, problem, sampler_params, model_params, key,
                                 batch_size, mesh, cond=real["sample_cond"])
    feats = problem.feature_apply(feature_params, generated)
    classes = conditioning.classes(real["sample_cond"])
    if reference is not None:
      return metrics.kid_within_classes(
          feats, classes, reference["features"], reference["classes"],
          num_classes=conditioning.num_classes, within_b=reference["class_within"])
    real_feats = jax.lax.stop_gradient(problem.feature_apply(feature_params, real["x"]))
    return metrics.kid_within_classes(feats, classes, real_feats,
                                      conditioning.classes(real["cond"]),
                                      num_classes=conditioning.num_classes)

  return loss_fn


def make_reference(problem: Problem, feature_params: Any, *, size: int, seed: int,
                   mesh: Mesh | None = None,
                   conditional: str = "within_classes") -> dict[str, jax.Array]:
  """The KID loss's fixed real side: the features [size, D] of `size` real training examples
  drawn once with PRNGKey(seed) and their within-bank kernel mean; a conditional problem's
  joined with their conditions ("joined"), or with their classes and each class's within
  mean ("within_classes": "classes" [size], "class_within" [C])."""
  key = jax.random.PRNGKey(seed)
  examples = np.asarray(problem.real_batch(key, size))
  features_of = jax.jit(problem.feature_apply)
  feats = np.asarray(parallel.padded_apply(lambda x: features_of(feature_params, x), examples,
                                           500, mesh))
  check_finite(feats, name=f"the KID loss's bank: the features of {size} training examples "
               f"drawn with seed {seed}", what="features")
  feats = jnp.asarray(feats)
  conditioning = problem.conditioning
  if conditioning is not None and conditional == "within_classes":
    classes = jnp.asarray(conditioning.classes(conditioning.real(key, size)))
    members = jax.nn.one_hot(classes, conditioning.num_classes, dtype=feats.dtype)
    return {"features": feats, "classes": classes,
            "class_within": jax.jit(metrics.class_within_means)(feats, members)}
  if conditioning is not None:
    feats = join_condition(feats, conditioning.real(key, size), conditioning)
  return {"features": feats, "within": jax.jit(metrics.within_mean)(feats)}


SAMPLE_COND_FOLD = 1  # the samples' conditions come from fold_in(batch key, SAMPLE_COND_FOLD)


def conditioned_batch_fn(problem: Problem):
  """The real batches of a DDSS step, batch_fn(key, n, rows=slice(None)): the problem's
  examples, or a conditional problem's {"x": examples, "cond": their conditions,
  "sample_cond": the conditions of another draw of n real examples, which the step's samples
  are drawn for}. The samples' conditions follow the data's distribution but are independent
  of the real batch's: KID's estimator is unbiased for two independent samples, and the same
  labels on both sides would pair them (joined features of equal labels are close), pulling
  the loss below zero."""
  conditioning = problem.conditioning
  if conditioning is None:
    return problem.real_batch

  def batch_fn(key, n, rows=slice(None)):
    return {"x": problem.real_batch(key, n, rows), "cond": conditioning.real(key, n, rows),
            "sample_cond": conditioning.real(jax.random.fold_in(key, SAMPLE_COND_FOLD), n,
                                             rows)}

  return batch_fn

