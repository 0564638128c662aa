"""Drawing samples of a frozen model with a sampler: one traceable batch (what the DDSS loss
differentiates), a jitted batch function, and batches of many samples for evaluation and
pictures. Batch b of an evaluation always uses fold_in(PRNGKey(seed), b), whatever the device
count, so every sampler of a table starts from the same noise. A conditional problem's samples
are drawn for a conditioning per example, split over the devices with its batch; a guided
sampler calls the problem's model in the guided form (ddss_jax.samplers.guidance).
"""

from __future__ import annotations

from typing import Any, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from ddss_jax import samplers
from ddss_jax.problems.base import Problem
from ddss_jax.samplers import guidance
from ddss_jax.util import parallel


def generate(sampler: samplers.Sampler, problem: Problem, sampler_params: Any,
             model_params: Any, key: jax.Array, batch_size: int,
             mesh: Mesh | None = None, *, x_T: jax.Array | None = None,
             cond: Any = None) -> jax.Array:
  """[batch_size, ...] samples of the frozen model (traceable: the DDSS loss differentiates it),
  from x_T [batch_size, ...] if given (else drawn from key), for the conditioning `cond` (a
  pytree with leading axis batch_size) where the problem's model is conditional.

  With a mesh, every eps-model input (cond included) and the result are split along the batch
  over its devices (the same samples, computed in parallel).
  """
  constrain = lambda x: parallel.constrain_batch(x, mesh)
  shape = (batch_size,) + tuple(problem.example_shape)
  if cond is None:
    eps_fn = lambda x, t: problem.eps_apply(model_params, constrain(x), t)
  elif sampler.guidance is None:
    eps_fn = lambda x, t, c: problem.eps_apply(model_params, constrain(x), t, c)
  else:
    if problem.conditioning is None:
      raise ValueError(f"a guided sampler needs a conditional model; problem {problem.name!r} "
                       "has none (Problem.conditioning is None)")
    guided_eps = guidance.guided(problem.eps_apply, null_cond=problem.conditioning.null)
    eps_fn = lambda x, t, c, w: guided_eps(model_params, constrain(x), t, c, w)
  if cond is not None:
    cond = jax.tree.map(constrain, cond)
  return constrain(sampler.sample(sampler_params, eps_fn, key, shape, x_T=x_T, cond=cond))


def make_sample_fn(sampler: samplers.Sampler, problem: Problem, batch_size: int,
                   mesh: Mesh | None = None):
  """Returns jitted sample(sampler_params, model_params, key, cond=None) -> [batch_size, ...]."""
  return jax.jit(lambda sampler_params, model_params, key, cond=None: generate(
      sampler, problem, sampler_params, model_params, key, batch_size, mesh, cond=cond))


def sample_batches(sampler: samplers.Sampler, params: Any, problem: Problem, *,
                   num_samples: int, batch_size: int, seed: int,
                   mesh: Mesh | None = None, conds: Any = None,
                   first_batch: int = 0) -> Iterator[np.ndarray]:
  """Yields batches of samples (NumPy, whole batches on every process), num_samples in all;
  batch b uses fold_in(PRNGKey(seed), b) whatever the device count. conds: the conditioning of
  each sample, a pytree with leading axis num_samples (a conditional problem); the last batch's
  rows past num_samples repeat its first rows and are dropped with their samples. first_batch:
  the batch to start at (resuming a drawing whose first batches are kept), the same batches from
  there as a drawing from 0 yields."""
  if mesh is not None and batch_size % mesh.size:
    mesh = None  # a batch that does not split evenly runs unsplit (same samples)
  sample_fn = make_sample_fn(sampler, problem, batch_size, mesh)
  key = jax.random.PRNGKey(seed)
  for b in range(first_batch, -(-num_samples // batch_size)):
    rows = np.arange(b * batch_size, (b + 1) * batch_size) % num_samples
    cond = None if conds is None else jax.tree.map(lambda c: np.asarray(c)[rows], conds)
    batch = sample_fn(params, problem.model_params, jax.random.fold_in(key, b), cond)
    if not batch.is_fully_addressable:  # split over processes: gather the whole batch
      batch = multihost_utils.process_allgather(batch, tiled=True)
    yield np.asarray(batch)[:num_samples - b * batch_size]


def draw_samples(sampler: samplers.Sampler, params: Any, problem: Problem, *,
                 num_samples: int, batch_size: int, seed: int, conds: Any = None) -> np.ndarray:
  """[num_samples, ...] samples held in memory (small problems, pictures, tests)."""
  return np.concatenate(list(sample_batches(sampler, params, problem, num_samples=num_samples,
                                            batch_size=batch_size, seed=seed, conds=conds)))
