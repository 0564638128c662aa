"""The 2-D problem: a ring of Gaussians, an MLP eps-model trained on it here (cached in the
workdir), KID in random Fourier features of the points, MMD and log-density at evaluation.
Seconds to run: the problem the tests and the toy experiments use.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, ClassVar

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from ddss_jax import weights
from ddss_jax.data.toy2d import GaussianRing, rbf_mmd
from ddss_jax.models import denoiser_training
from ddss_jax.models.mlp import MLPEpsModel
from ddss_jax.problems import toy_features
from ddss_jax.problems.base import Problem
from ddss_jax.samplers.schedules import Schedule
from ddss_jax.settings import Group, choice, integer, real, setting
from ddss_jax.util import files, plots

NAME = "toy2d"


@dataclasses.dataclass(frozen=True)
class Config(Group):
  """config.toy2d: the ring, the eps-model trained on it, and the KID features."""
  GROUP: ClassVar[str] = "toy2d"
  num_modes: int = setting(8, "Gaussians on the ring.", integer(1))
  radius: float = setting(1.4, "The ring's radius.", real(above=0))
  std: float = setting(0.1, "Each Gaussian's standard deviation.", real(above=0))
  model_width: int = setting(128, "The MLP eps-model's width.", integer(1))
  model_depth: int = setting(3, "The MLP eps-model's hidden layers.", integer(1))
  model_train_steps: int = setting(4000, "Denoiser training steps "
                                   "(ddss_jax.models.denoiser_training).",
                                   integer(1))
  model_batch_size: int = setting(512, "Denoiser training batch.", integer(1))
  model_learning_rate: float = setting(2e-3, "Denoiser learning rate.", real(above=0))
  model_ema_decay: float = setting(0.995, "EMA of the denoiser's weights.", real(0, below=1))
  features: str = setting("rff", "The KID loss's features: rff (random Fourier) or identity (the "
                          "points).", choice(toy_features.FEATURE_KINDS))
  rff_dim: int = setting(128, "Random Fourier features.", integer(1))
  rff_lengthscale: float = setting(0.3, "Their Gaussian kernel's lengthscale.", real(above=0))


def missing_inputs(cfg: Config) -> list[str]:
  """Nothing: the problem makes its own data and model."""
  del cfg
  return []


def check_across_groups(values: dict[str, Any]) -> None:
  """No constraint spans config.toy2d and other groups."""
  del values


def build(cfg: Config, schedule: Schedule, *, seed: int, workdir: str | None = None,
          mesh: Mesh | None = None) -> Problem:
  """The 2-D problem: a Gaussian ring, an MLP eps-model trained here (cached in workdir; None
  trains it again each time)."""
  del mesh  # small enough for one device
  ring = GaussianRing(num_modes=cfg.num_modes, radius=cfg.radius, std=cfg.std)
  model = MLPEpsModel(width=cfg.model_width, depth=cfg.model_depth)
  eps_apply = lambda params, x, t: model.apply({"params": params}, x, t)
  model_params = _load_or_train_toy_model(cfg, model, eps_apply, ring, schedule, workdir, seed)

  if cfg.features == "rff":
    feature_params = toy_features.init_rff(jax.random.PRNGKey(seed + 1), in_dim=2,
                                       num_features=cfg.rff_dim, lengthscale=cfg.rff_lengthscale)
    feature_apply = toy_features.rff
  else:
    feature_params, feature_apply = {}, toy_features.identity

  def evaluate(samples: np.ndarray) -> dict[str, float]:
    # Fresh ground truth, independent of training keys (those derive from config.train.seed).
    truth = np.asarray(ring.sample(jax.random.PRNGKey(seed + 10_007), len(samples)))
    return {"mmd": rbf_mmd(samples, truth), "log_density": float(np.mean(ring.log_prob(samples)))}

  problem_batch = lambda key, n, rows=slice(None): ring.sample(key, n)[rows]
  return Problem(name="toy2d", schedule=schedule, example_shape=(2,), eps_apply=eps_apply,
                 model_params=model_params, feature_apply=feature_apply,
                 feature_params=feature_params,
                 real_batch=problem_batch,
                 evaluate=evaluate, plot=plots.scatter_panels, plot_samples=2000,
                 # The ring is a distribution, not a finite set: fresh points validate.
                 split_validation=lambda n: (problem_batch, np.asarray(
                     ring.sample(jax.random.PRNGKey(seed + 20_011), n))))


def _load_or_train_toy_model(cfg, model, eps_apply, ring, schedule, workdir, seed):
  """The eps-model cached in workdir (checked against the settings it was trained with, in a
  .json beside it), else trained now and cached."""
  template = model.init(jax.random.PRNGKey(seed), np.zeros((1, 2), np.float32),
                        np.zeros((1,), np.float32))["params"]
  path = workdir and os.path.join(workdir, "toy2d_eps_model.msgpack")
  settings = {"schedule": schedule.name, "num_timesteps": schedule.num_timesteps,
              **{k: getattr(cfg, k) for k in ("num_modes", "radius", "std", "model_width",
                                              "model_depth")}}
  if path and os.path.exists(path):
    _check_toy_settings(path, settings)
    logging.info("toy2d: loading the eps-model from %s", path)
    return weights.load_msgpack(path, template, sha256=None)  # against its .sha256 sidecar
  logging.info("toy2d: training the eps-model (%d steps)", cfg.model_train_steps)
  data_key = jax.random.PRNGKey(seed + 2)
  params = denoiser_training.train_denoiser(
      eps_apply, template, lambda step: ring.sample(jax.random.fold_in(data_key, step),
                                                    cfg.model_batch_size),
      schedule=schedule, num_steps=cfg.model_train_steps, learning_rate=cfg.model_learning_rate,
      ema_decay=cfg.model_ema_decay, seed=seed)
  if path:
    os.makedirs(workdir, exist_ok=True)
    files.write_json(f"{path}.json", settings)
    weights.save_msgpack(params, path)  # atomic: a killed run never leaves a half-written model
  return params


def _check_toy_settings(path: str, settings: dict[str, Any]) -> None:
  """Raises ValueError naming each setting (schedule, data, width, depth) the cached model at
  `path` was trained with that differs from the config's."""
  if not os.path.exists(f"{path}.json"):
    logging.warning("%s has no %s.json of the settings it was trained with; assuming they are "
                    "the config's", path, os.path.basename(path))
    return
  with open(f"{path}.json", encoding="utf-8") as f:
    cached = json.load(f)
  differ = [f"{k}: {cached.get(k)!r} there, {v!r} in the config" for k, v in settings.items()
            if cached.get(k) != v]
  if differ:
    raise ValueError(f"{path} holds an eps-model trained with other settings ("
                     + "; ".join(differ) + "); use another workdir, or delete the file to "
                     "retrain it")
