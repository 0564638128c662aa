"""The teacher loss: match the K-step sampler's output to a long, accurate sampler's output from
the same starting noise (config.loss.name = "teacher"; the default "kid" needs none of this).

A pool of (x_T, teacher x_0) pairs is drawn once with a many-step fixed sampler (DDIM with 200
linear steps by default) and cached as an .npz file named by everything that determines it,
the frozen model's weights included. Each DDSS step takes a random batch of pairs, samples from
their x_T with the learned sampler and minimises the mean squared difference to the teacher's
x_0, in data space or in the problem's feature space.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ddss_jax import samplers
from ddss_jax.evaluation import drawing
from ddss_jax.problems.base import Problem
from ddss_jax.settings import LossConfig
from ddss_jax.util import files


def make(cfg: LossConfig, schedule, *, clip_x0: float | None = None
         ) -> samplers.Sampler | None:
  """The teacher sampler of config.loss (None for the KID loss), clipping its x0 predictions as
  the learned sampler does (config.sampler.clip_x0); its values were checked when `cfg` was
  built."""
  teacher = samplers.make(cfg.teacher_family, schedule, cfg.teacher_steps,
                          stride=cfg.teacher_stride, clip_x0=clip_x0)
  return teacher if cfg.name == "teacher" else None


def pool_path(cfg: LossConfig, problem: Problem, directory: str, *, seed: int,
              clip_x0: float | None = None) -> str:
  """Where the pool for these settings is cached: the name carries the teacher (and its x0
  clipping, where on), the pool size, the seed and a digest of the frozen model's weights."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(problem.model_params):
    digest.update(np.asarray(leaf).tobytes())
  return os.path.join(directory, f"teacher_{problem.name}_{cfg.teacher_family}_"
                      f"{cfg.teacher_stride}{cfg.teacher_steps}_n{cfg.teacher_pool}_seed{seed}_"
                      + ("" if clip_x0 is None else f"clip{clip_x0:g}_")
                      + f"{digest.hexdigest()[:12]}.npz")


def load_or_draw_pool(cfg: LossConfig, teacher: samplers.Sampler, problem: Problem,
                      directory: str, *, seed: int, batch_size: int) -> dict[str, np.ndarray]:
  """{"x_T": [N, ...], "target": [N, ...]}: the cached pool, or drawn now (and cached, atomically).

  x_T of batch b is normal(fold_in(PRNGKey(seed), b)); the teacher runs from it, in batches of
  batch_size.
  """
  path = pool_path(cfg, problem, directory, seed=seed,
                   clip_x0=None if teacher is None else teacher.clip_x0)
  shape = (cfg.teacher_pool,) + tuple(problem.example_shape)
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as f:
      pool = {"x_T": f["x_T"], "target": f["target"]}
    if all(a.shape == shape for a in pool.values()):
      logging.info("teacher pool from %s", path)
      return pool
    logging.warning("%s holds arrays of shape %s, not %s: drawing it again", path,
                    pool["x_T"].shape, shape)
  run = jax.jit(lambda params, x_T: drawing.generate(teacher, problem, {}, params,
                                                     jax.random.PRNGKey(0), x_T.shape[0],
                                                     x_T=x_T))
  key = jax.random.PRNGKey(seed)
  starts, targets = [], []
  for b in range(-(-cfg.teacher_pool // batch_size)):
    rows = min(batch_size, cfg.teacher_pool - b * batch_size)
    x_T = jax.random.normal(jax.random.fold_in(key, b), (rows,) + shape[1:], jnp.float32)
    starts.append(np.asarray(x_T))
    targets.append(np.asarray(run(problem.model_params, x_T)))
    logging.info("teacher pool: %d/%d pairs (%s, K=%d)", b * batch_size + rows,
                 cfg.teacher_pool, teacher.family, teacher.num_steps)
  pool = {"x_T": np.concatenate(starts), "target": np.concatenate(targets)}
  os.makedirs(directory, exist_ok=True)
  files.save_npz(path, **pool)
  return pool


def batch_fn(pool: dict[str, np.ndarray]) -> Callable[..., dict[str, np.ndarray]]:
  """(key, batch_size, rows=None) -> {"x_T", "target"}: pairs drawn without replacement; with
  rows (a slice), only those rows of the batch (this process's share)."""
  size = len(pool["x_T"])

  def draw(key: jax.Array, batch_size: int, rows: slice | None = None) -> dict[str, np.ndarray]:
    if batch_size > size:
      raise ValueError(f"train.batch_size={batch_size} exceeds loss.teacher_pool={size}")
    idx = np.asarray(jax.random.permutation(key, size)[:batch_size])
    if rows is not None:
      idx = idx[rows]
    return {name: values[idx] for name, values in pool.items()}

  return draw


def make_loss_fn(sampler: samplers.Sampler, problem: Problem, space: str,
                 mesh=None) -> Callable[..., jax.Array]:
  """loss(sampler_params, model_params, feature_params, batch {"x_T", "target"}, key, reference)
  -> mean
  squared difference between the sampler's x_0 from batch["x_T"] and the teacher's, per element
  of the data (space "data") or of the features ("features")."""
  def loss_fn(sampler_params, model_params, feature_params, batch: dict[str, Any], key,
              reference=None):
    del reference  # the teacher's pairs are the whole target
    x_T = batch["x_T"]
    generated = drawing.generate(sampler, problem, sampler_params, model_params, key,
                                 x_T.shape[0], mesh, x_T=x_T)
    target = batch["target"]
    if space == "features":
      generated = problem.feature_apply(feature_params, generated)
      target = jax.lax.stop_gradient(problem.feature_apply(feature_params, target))
    return jnp.mean((generated - target) ** 2)

  return loss_fn
