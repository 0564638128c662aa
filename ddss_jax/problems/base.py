"""A DDSS problem: a frozen diffusion model, a feature map for the loss, real data, and the
held-out evaluation. `build(name, ...)` makes one; the train loop needs nothing else.

Each build_* checks, before anything compiles, that the model fits the data and the schedule
(image size, channels, value range, T) and that every weights file is the one expected (sha256,
array names and shapes; ddss_jax.weights), raising ValueError that names the bad value.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Protocol

import jax
import numpy as np
from absl import logging

from ddss_jax import features, logs, metrics, parallel, plots, pretrain, weights
from ddss_jax.config_groups import MNISTConfig, Toy2DConfig
from ddss_jax.data import mnist
from ddss_jax.data.source import check_images
from ddss_jax.data.toy2d import GaussianRing, rbf_mmd
from ddss_jax.models import classifier, unet
from ddss_jax.models.mlp import MLPEpsModel
from ddss_jax.schedules import Schedule


class Evaluator(Protocol):
  """Takes samples batch by batch, then returns the held-out metrics {name: float}."""

  def update(self, samples: np.ndarray) -> None: ...

  def result(self) -> dict[str, float]: ...


class CollectingEvaluator:
  """Holds every sample and evaluates them at the end: for problems with small N."""

  def __init__(self, evaluate: Callable[[np.ndarray], dict[str, float]]):
    self._evaluate, self._batches = evaluate, []

  def update(self, samples: np.ndarray) -> None:
    self._batches.append(np.asarray(samples))

  def result(self) -> dict[str, float]:
    return self._evaluate(np.concatenate(self._batches))


@dataclasses.dataclass(frozen=True)
class Problem:
  """Everything DDSS needs about the model and the data. Weights are passed, never closed over.

  Attributes:
    name: the problem's name.
    schedule: the frozen model's noise schedule.
    example_shape: shape of one example, e.g. (2,) or (32, 32, 1).
    eps_apply: (model_params, x [B, ...], t [B]) -> eps [B, ...].
    model_params: the frozen model's weights.
    feature_apply: (feature_params, x [B, ...]) -> features [B, D]; the KID loss's space.
    feature_params: the feature map's weights.
    real_batch: (key, n, rows=slice(None)) -> the `rows` of n real training examples drawn by
      key (each process reads only its rows of a global batch).
    evaluate: samples [N, ...] (NumPy) -> held-out metrics {name: float}, or None where the
      problem streams (evaluator_factory).
    plot: ({title: samples}, path) -> None, writes a picture.
    evaluator_factory: num_samples -> a streaming Evaluator; None: collect, then `evaluate`.
    plot_samples: how many samples of each sampler the pictures show.
    weights: {role: {"path", "sha256"}} of every weights file read from outside the run (the
      results record them); empty where the run trained its own model.
  """
  name: str
  schedule: Schedule
  example_shape: tuple[int, ...]
  eps_apply: Callable[[Any, jax.Array, jax.Array], jax.Array]
  model_params: Any
  feature_apply: Callable[[Any, jax.Array], jax.Array]
  feature_params: Any
  real_batch: Callable[..., jax.Array]
  evaluate: Callable[[np.ndarray], dict[str, float]] | None
  plot: Callable[[dict[str, np.ndarray], str], None]
  evaluator_factory: Callable[[int], Evaluator] | None = None
  plot_samples: int = 64
  weights: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

  def make_evaluator(self, num_samples: int) -> Evaluator:
    if self.evaluator_factory is not None:
      return self.evaluator_factory(num_samples)
    return CollectingEvaluator(self.evaluate)


def build_toy2d(cfg: Toy2DConfig, schedule: Schedule, workdir: str, *, seed: int) -> Problem:
  """The 2-D problem: a Gaussian ring, an MLP eps-model trained here (cached in workdir)."""
  if cfg.features not in features.FEATURE_KINDS:
    raise ValueError(f"unknown toy2d.features {cfg.features!r}; valid choices: "
                     f"{list(features.FEATURE_KINDS)}")
  ring = GaussianRing(num_modes=cfg.num_modes, radius=cfg.radius, std=cfg.std)
  model = MLPEpsModel(width=cfg.model_width, depth=cfg.model_depth)
  eps_apply = lambda params, x, t: model.apply({"params": params}, x, t)
  model_params = _load_or_train_toy_model(cfg, model, eps_apply, ring, schedule, workdir, seed)

  if cfg.features == "rff":
    feature_params = features.init_rff(jax.random.PRNGKey(seed + 1), in_dim=2,
                                       num_features=cfg.rff_dim, lengthscale=cfg.rff_lengthscale)
    feature_apply = features.rff
  else:
    feature_params, feature_apply = {}, features.identity

  def evaluate(samples: np.ndarray) -> dict[str, float]:
    # Fresh ground truth, independent of training keys (those derive from config.train.seed).
    truth = np.asarray(ring.sample(jax.random.PRNGKey(seed + 10_007), len(samples)))
    return {"mmd": rbf_mmd(samples, truth), "log_density": float(np.mean(ring.log_prob(samples)))}

  return Problem(name="toy2d", schedule=schedule, example_shape=(2,), eps_apply=eps_apply,
                 model_params=model_params, feature_apply=feature_apply,
                 feature_params=feature_params,
                 real_batch=lambda key, n, rows=slice(None): ring.sample(key, n)[rows],
                 evaluate=evaluate,
                 plot=plots.scatter_panels, plot_samples=2000)


def _load_or_train_toy_model(cfg, model, eps_apply, ring, schedule, workdir, seed):
  """The eps-model cached in workdir (checked against the settings it was trained with, in a
  .json beside it), else trained now and cached."""
  template = model.init(jax.random.PRNGKey(seed), np.zeros((1, 2), np.float32),
                        np.zeros((1,), np.float32))["params"]
  path = os.path.join(workdir, "toy2d_eps_model.msgpack")
  settings = {"schedule": schedule.name, "num_timesteps": schedule.num_timesteps,
              **{k: getattr(cfg, k) for k in ("num_modes", "radius", "std", "model_width",
                                              "model_depth")}}
  if os.path.exists(path):
    _check_toy_settings(path, settings)
    logging.info("toy2d: loading the eps-model from %s", path)
    return weights.load_msgpack(path, template, sha256=None)  # against its .sha256 sidecar
  logging.info("toy2d: training the eps-model (%d steps)", cfg.model_train_steps)
  data_key = jax.random.PRNGKey(seed + 2)
  params = pretrain.train_denoiser(
      eps_apply, template, lambda step: ring.sample(jax.random.fold_in(data_key, step),
                                                    cfg.model_batch_size),
      schedule=schedule, num_steps=cfg.model_train_steps, learning_rate=cfg.model_learning_rate,
      ema_decay=cfg.model_ema_decay, seed=seed)
  os.makedirs(workdir, exist_ok=True)
  logs.write_json(f"{path}.json", settings)
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


def build_mnist(cfg: MNISTConfig, schedule: Schedule, *, seed: int) -> Problem:
  """The embedded image default: the shipped MNIST UNet (frozen), the shipped MNIST classifier's
  features for the KID loss and the evaluation, 4000 training digits, 1000 held-out digits."""
  if schedule.name != "linear" or schedule.num_timesteps != 1000:
    raise ValueError(f"the MNIST UNet was trained with the linear schedule, T = 1000; got "
                     f"{schedule.name!r}, T = {schedule.num_timesteps}")
  model = unet.UNet2DModel(unet.MNIST_UNET)
  train_source, test_source = mnist.source("train"), mnist.source("test")
  for source in (train_source, test_source):
    check_images(source.images, name=source.name, size=unet.MNIST_UNET.sample_size,
                 channels=unet.MNIST_UNET.in_channels)
  # User files: checked against their .sha256 sidecar when there is one, else trusted on first
  # use (a warning gives the digest); load_msgpack refuses arrays of other names or shapes.
  unet_path = cfg.unet_weights or weights.shipped_path(unet.SHIPPED_NAME)
  template = unet.params_template(unet.MNIST_UNET)
  if cfg.unet_weights is None:
    model_params = weights.load_shipped(unet.SHIPPED_NAME, template)
  else:
    model_params = weights.load_msgpack(cfg.unet_weights, template, sha256=None)
  classifier_path = cfg.classifier_weights or weights.shipped_path(classifier.SHIPPED_NAME)
  if cfg.classifier_weights is None:
    feature_params = classifier.load_shipped_classifier()
  else:
    feature_params = weights.load_msgpack(cfg.classifier_weights, classifier.params_template(),
                                          sha256=None)

  feats_fn = jax.jit(classifier.features_fn)
  logits_fn = jax.jit(classifier.logits_fn)

  def batched(fn, images):  # in chunks of 500, one compilation
    return parallel.padded_apply(lambda x: fn(feature_params, x), images, 500)

  test_feats = batched(feats_fn, test_source.images)

  def evaluate(samples: np.ndarray) -> dict[str, float]:
    """KID (subset mean, std), FID and k-NN precision/recall (k = 3) against the 1000 held-out
    digits in the MNIST classifier's feature space, and the share of samples the classifier
    labels with confidence > 0.9."""
    feats = batched(feats_fn, samples)
    kid_mean, kid_std = metrics.kid_subsets(
        feats, test_feats, key=jax.random.PRNGKey(seed + 3), num_subsets=cfg.kid_subsets,
        subset_size=cfg.kid_subset_size)
    confidence = jax.nn.softmax(batched(logits_fn, samples), axis=-1).max(axis=-1)
    precision, recall = metrics.precision_recall(test_feats, feats)
    return {"kid": float(kid_mean), "kid_std": float(kid_std),
            "fid": metrics.fid_from_features(feats, test_feats),
            "precision": precision, "recall": recall,
            "confident_share": float(np.mean(confidence > 0.9))}

  return Problem(name="mnist", schedule=schedule, example_shape=train_source.example_shape,
                 eps_apply=lambda params, x, t: model.apply({"params": params}, x, t),
                 model_params=model_params, feature_apply=classifier.features_fn,
                 feature_params=feature_params, real_batch=train_source.batch,
                 evaluate=evaluate, plot=plots.image_grids,
                 weights={"model": {"path": unet_path, "sha256": weights.sha256_of(unet_path)},
                          "features": {"path": classifier_path,
                                       "sha256": weights.sha256_of(classifier_path)}})


PROBLEMS = ("toy2d", "mnist", "pretrained")  # pretrained: ddss_jax.pretrained


def check_name(name: str) -> None:
  if name not in PROBLEMS:
    raise ValueError(f"unknown problem {name!r}; valid choices: {list(PROBLEMS)}")
