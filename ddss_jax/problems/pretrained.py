"""The real-scale problem: a public pre-trained DDPM (a diffusers UNet2DModel, by Hugging Face Hub
id or folder), a tensorflow-datasets image dataset, and the FID Inception network, whose pool3
features are the KID loss and whose features and logits give FID, Inception Score and KID at
evaluation.

Reference statistics of the dataset (mean, covariance and a KID sample of pool3 features) are
computed once, streamed, and cached as .npz named by dataset, split, resolution, example count and
network (preprocessing, width and the weights file's sha256).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, ClassVar

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from ddss_jax.data.source import carve_validation, check_images
from ddss_jax.evaluation import metrics
from ddss_jax.models import diffusers_io, inception, inception_weights, unet
from ddss_jax.problems.base import Problem
from ddss_jax.samplers import diffusion
from ddss_jax.samplers.sampler_json import ModelInfo
from ddss_jax.samplers.schedules import Schedule
from ddss_jax.settings import Group, choice, integer, real, setting, text
from ddss_jax.util import hub, parallel, plots
from ddss_jax.util.errors import ConfigError
from ddss_jax.weights import sha256_of

NAME = "pretrained"


def _data_module():
  # tensorflow-datasets is an extra ([tfds]); the embedded default never imports it.
  from ddss_jax.data import tfds_images  # pylint: disable=import-outside-toplevel
  return tfds_images


LOSS_FEATURES = ("pool3", "logits_unbiased", "logits")
_SHA256 = r"[0-9a-fA-F]{1,64}"


def _dataset(field: str, value: Any) -> None:
  try:  # tensorflow-datasets is an extra; without it, missing_inputs says what to install
    names = sorted(_data_module().DATASETS)
  except ImportError:
    names = None
  if not isinstance(value, str) or (names is not None and value not in names):
    raise ConfigError(field, value, f"valid choices: {names}")


@dataclasses.dataclass(frozen=True)
class Config(Group):
  """config.pretrained: the checkpoint, the dataset, the Inception network and the metrics."""
  GROUP: ClassVar[str] = "pretrained"
  dataset: str = setting("cifar10", "cifar10, imagenet64, lsun_church or lsun_bedroom "
                         "(ddss_jax.data.tfds_images).", _dataset)
  data_dir: str | None = setting(None, "tensorflow-datasets' folder (None: ~/tensorflow_datasets)."
                                 , text(optional=True))
  train_split: str = setting("train", "The real batches of the KID loss.", text())
  reference_split: str = setting("train", "The split of the FID/IS/KID reference statistics "
                                 "(computed once, cached in stats_dir).", text())
  reference_num_examples: int = setting(50000, "Examples in the reference statistics (0: all).",
                                        integer(0))
  image_size: int | None = setting(None, "None: the dataset's default; must equal the "
                                   "checkpoint's sample_size.", integer(8, optional=True))
  checkpoint: str | None = setting(None, "A Hugging Face Hub id (owner/name, fetched into its "
                                   "cache) or a folder of a diffusers UNet2DModel (config.json, "
                                   "weights, scheduler_config.json).", text(optional=True))
  checkpoint_sha256: str | None = setting(None, "Pins the checkpoint's weights file.",
                                          text(optional=True, pattern=_SHA256))
  inception_weights: str | None = setting(None, "The pytorch-fid .pth or its converted .msgpack "
                                          "(None: the cached download).", text(optional=True))
  inception_sha256: str | None = setting(None, "Pins it (None: the published prefix for the .pth,"
                                         " the sidecar for .msgpack).",
                                         text(optional=True, pattern=_SHA256))
  inception_width: float = setting(1.0, "1.0 is the real network (less only for tests).",
                                   real(above=0, high=1))
  inception_preprocess: str = setting("tf", "tf (the TF FID graph's resize and scaling) or "
                                      "pytorch_fid.", choice(inception.PREPROCESS_CHOICES))
  loss_features: str = setting("pool3", "The network output the KID loss compares.",
                               choice(LOSS_FEATURES))
  feature_batch_size: int = setting(250, "Images per Inception call when evaluating.",
                                    integer(1))
  kid_subsets: int = setting(100, "KID mean and std over this many subsets.", integer(1))
  kid_subset_size: int = setting(1000, "Features per KID subset.", integer(2))
  kid_sample_size: int = setting(10000, "Features kept (reservoir) for KID.", integer(2))
  is_splits: int = setting(10, "Inception Score parts.", integer(1))
  stats_dir: str | None = setting(None, "Where reference statistics are cached (None: "
                                  "~/.cache/ddss_jax/stats).", text(optional=True))


def check_across_groups(values: dict[str, Any]) -> None:
  """A KID subset must fit in the reservoir it is drawn from."""
  pre = values["pretrained"]
  if pre["kid_subset_size"] > pre["kid_sample_size"]:
    raise ConfigError("pretrained.kid_subset_size", pre["kid_subset_size"],
                      f"must be <= pretrained.kid_sample_size={pre['kid_sample_size']}")


def _checkpoint_missing(cfg: Config) -> str | None:
  """What is missing of the checkpoint (fetching a hub id first where a network allows)."""
  if cfg.checkpoint is None:
    return ("config.pretrained.checkpoint is not set: set it to the Hugging Face Hub id "
            "(owner/name) or the folder of a diffusers UNet2DModel trained on "
            f"{cfg.dataset} images, e.g. --config.pretrained.checkpoint=/data/my-unet")
  try:
    return diffusers_io.missing_checkpoint_message(hub.local_folder(cfg.checkpoint))
  except (ValueError, FileNotFoundError) as e:
    return str(e)


def _inception_missing(cfg: Config) -> str | None:
  """What is missing of the Inception weights (downloading the cache's copy where allowed)."""
  try:
    inception_weights.ensure_weights(cfg.inception_weights, download=not hub.offline())
  except FileNotFoundError as e:
    offline = cfg.inception_weights is None and hub.offline()
    return str(e) + (" (not downloaded: offline, $HF_HUB_OFFLINE or $DDSS_JAX_OFFLINE is set)"
                     if offline else "")
  return None


def _data_missing(data, cfg: Config, split: str) -> str | None:
  """What is missing of a split, after preparing the dataset where the run can."""
  message = data.missing_data_message(cfg.dataset, split, cfg.data_dir)
  if message is None or not data.get_spec(cfg.dataset).prepared_by_run or hub.offline():
    return message
  logging.info("dataset %s is not prepared: preparing it with tfds (downloads it)", cfg.dataset)
  try:
    data.prepare(cfg.dataset, cfg.data_dir)
  except Exception as e:  # pylint: disable=broad-except; tfds raises many kinds, all reported
    return f"{message} (the run tried to prepare it and failed: {type(e).__name__}: {e})"
  return data.missing_data_message(cfg.dataset, split, cfg.data_dir)


def missing_inputs(cfg: Config) -> list[str]:
  """Every file or dataset the problem needs and does not find, each with how to provide it.

  Fetches first what a network can give, unless offline ($HF_HUB_OFFLINE or $DDSS_JAX_OFFLINE):
  a checkpoint named by hub id (ddss_jax.util.hub), the FID Inception weights into the cache, and
  the datasets tfds can build alone (CIFAR-10, where TensorFlow is installed). The values of
  config.pretrained are checked before, when Config is built.
  """
  missing = [m for m in (_checkpoint_missing(cfg), _inception_missing(cfg)) if m]
  try:
    data = _data_module()
  except ImportError as e:
    return missing + [f"tensorflow-datasets is not installed ({e}): pip install -e '.[tfds]'"]
  data.get_spec(cfg.dataset)  # ValueError naming the valid datasets
  # The training split feeds the loss and the results' "data" row; the reference split is read
  # only until its statistics are cached.
  splits = [cfg.train_split] + (
      [] if os.path.exists(reference_stats_path(cfg)) else [cfg.reference_split])
  missing += [m for m in (_data_missing(data, cfg, split) for split in dict.fromkeys(splits)) if m]
  return missing


def image_size(cfg: Config) -> int:
  return cfg.image_size or _data_module().get_spec(cfg.dataset).image_size


def stats_dir(cfg: Config) -> str:
  return cfg.stats_dir or os.path.join(inception_weights.cache_dir(), "stats")


def reference_stats_path(cfg: Config) -> str:
  """<stats_dir>/<dataset>-<split>-<S>px-<N or all>-inception-<preprocess>-w<width>-<sha>.npz."""
  weights_path = cfg.inception_weights or inception_weights.default_weights_path()
  digest = sha256_of(weights_path)[:12] if os.path.exists(weights_path) else "absent"
  count = cfg.reference_num_examples or "all"
  name = (f"{cfg.dataset}-{cfg.reference_split}-{image_size(cfg)}px-{count}-inception-"
          f"{cfg.inception_preprocess}-w{cfg.inception_width:g}-{digest}.npz")
  return os.path.join(stats_dir(cfg), name)


def compute_reference_stats(cfg: Config, features: Callable, path: str,
                            mesh: Mesh | None = None) -> dict:
  """Streams the reference split through `features`, saves FeatureStats to `path`, loads it."""
  source = _data_module().TFDSImageSource(cfg.dataset, cfg.reference_split,
                                          image_size=image_size(cfg), data_dir=cfg.data_dir,
                                          process_index=0, process_count=1)
  total = min(cfg.reference_num_examples or source.num_examples, source.num_examples)
  logging.info("reference statistics: %d examples of %s/%s at %dpx -> %s", total, cfg.dataset,
               cfg.reference_split, image_size(cfg), path)
  stats = None
  for i, batch in enumerate(source.iterate(cfg.feature_batch_size, num_examples=total)):
    pool3 = parallel.padded_apply(features, batch, cfg.feature_batch_size, mesh)["pool3"]
    if stats is None:
      stats = metrics.FeatureStats(pool3.shape[1], sample_size=cfg.kid_sample_size, seed=0)
    stats.update(pool3)
    if i % 20 == 0:
      logging.info("reference statistics: %d/%d examples", stats.count, total)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  stats.save(path, dataset=cfg.dataset, split=cfg.reference_split,
             image_size=str(image_size(cfg)), network=os.path.basename(path))
  return metrics.load_stats(path)


class InceptionEvaluator:
  """FID, Inception Score and KID of streamed samples against cached reference statistics."""

  def __init__(self, num_samples: int, *, features: Callable, reference: dict,
               cfg: Config, seed: int, mesh: Mesh | None = None):
    self._features, self._reference, self._cfg, self._seed = features, reference, cfg, seed
    self._mesh = mesh
    self._stats = metrics.FeatureStats(reference["mu"].shape[0], sample_size=cfg.kid_sample_size,
                                       seed=seed)
    self._score = metrics.StreamingInceptionScore(num_samples,
                                                  splits=min(cfg.is_splits, num_samples))

  def update(self, samples: np.ndarray) -> None:
    out = parallel.padded_apply(self._features, np.asarray(samples, np.float32),
                                self._cfg.feature_batch_size, self._mesh)
    self._stats.update(out["pool3"])
    self._score.update(out["logits_unbiased"])

  def result(self) -> dict[str, float]:
    ref = self._reference
    fid = metrics.frechet_distance(self._stats.mean, self._stats.covariance, ref["mu"],
                                   ref["sigma"])
    is_mean, is_std = self._score.result()
    kid_mean, kid_std = metrics.kid_subsets(
        self._stats.sample, ref["kid_sample"], key=jax.random.PRNGKey(self._seed),
        num_subsets=self._cfg.kid_subsets, subset_size=self._cfg.kid_subset_size)
    return {"fid": fid, "is": is_mean, "is_std": is_std, "kid": float(kid_mean),
            "kid_std": float(kid_std)}


def _schedule_mismatch(model_schedule: Schedule, schedule: Schedule) -> str | None:
  """None if the two schedules agree; else "" (T differs) or where their noise levels differ."""
  if model_schedule.num_timesteps != schedule.num_timesteps:
    return ""
  differ = np.flatnonzero(~np.isclose(model_schedule.alpha_bars, schedule.alpha_bars, rtol=1e-6))
  if not len(differ):
    return None
  t = int(differ[0])
  return (f", first at alpha_bar[{t}] = {float(schedule.alpha_bars[t]):.6g} vs the checkpoint's "
          f"{float(model_schedule.alpha_bars[t]):.6g}")


def check_model(cfg: Config, model: unet.UNetConfig, model_schedule: Schedule,
                schedule: Schedule) -> None:
  """Raises ValueError, naming the value and what was expected, where the checkpoint (its
  config.json and scheduler_config.json) does not fit config.schedule or the dataset's images:
  the model's time units (T and the noise levels) and its image size and channels. Reads no
  weights and no data."""
  message = _schedule_mismatch(model_schedule, schedule)
  if message is not None:
    raise ValueError(f"config.schedule ({schedule.name}, T={schedule.num_timesteps}) differs from "
                     f"the checkpoint's scheduler_config.json ({model_schedule.name}, "
                     f"T={model_schedule.num_timesteps}){message}; set config.schedule to match "
                     "it")
  if model.out_channels != model.in_channels:
    raise ValueError(f"{cfg.checkpoint}: out_channels={model.out_channels} != "
                     f"in_channels={model.in_channels}; learned-variance models are "
                     "not supported (DDSS needs the mean prediction only)")
  channels = _data_module().CHANNELS
  if model.in_channels != channels:
    raise ValueError(f"{cfg.checkpoint}: in_channels={model.in_channels}, but dataset "
                     f"{cfg.dataset!r} gives {channels}-channel (RGB) images; use a checkpoint "
                     f"trained on {channels}-channel images")
  size = image_size(cfg)
  if size != model.sample_size:
    source = ("config.pretrained.image_size" if cfg.image_size else
              f"dataset {cfg.dataset!r}'s default size (config.pretrained.image_size=None)")
    raise ValueError(f"images of {size}px ({source}) but the checkpoint samples "
                     f"{model.sample_size}px images; set config.pretrained.image_size="
                     f"{model.sample_size}")


def build(cfg: Config, schedule: Schedule, *, seed: int, workdir: str | None = None,
          mesh: Mesh | None = None) -> Problem:
  """The problem of config.pretrained; call missing_inputs first for a readable error.

  Before anything compiles, checks the checkpoint against config.schedule and the data
  (check_model), and the first real batch (check_images: shape, float, within [-1, 1]). With a
  mesh, Inception features (reference statistics, evaluation) run split over its devices.
  """
  del workdir  # reference statistics are cached in cfg.stats_dir, shared between runs
  folder = hub.local_folder(cfg.checkpoint, download=False)  # missing_inputs fetched it
  model_dir = diffusers_io.find_model_dir(folder)
  model_schedule, prediction = diffusers_io.load_schedule(model_dir)
  model_cfg = diffusers_io.read_config(model_dir)
  check_model(cfg, model_cfg, model_schedule, schedule)
  size = image_size(cfg)
  train_source = _data_module().TFDSImageSource(cfg.dataset, cfg.train_split, image_size=size,
                                                data_dir=cfg.data_dir)
  first = train_source.batch(jax.random.PRNGKey(seed), min(8, train_source.num_examples))
  check_images(first, name=f"dataset {cfg.dataset}/{cfg.train_split}", size=size,
               channels=model_cfg.in_channels)
  checkpoint = diffusers_io.load(folder, sha256=cfg.checkpoint_sha256)
  logging.info("pretrained model %s (sha256 %s)", checkpoint.weights_path, checkpoint.sha256)
  model = unet.UNet2DModel(checkpoint.config)
  model_fn = lambda params, x, t: model.apply({"params": params}, x, t)
  eps_apply = model_fn
  if prediction != "eps":
    eps_apply = lambda params, x, t: diffusion.as_eps_fn(
        lambda x_, t_: model_fn(params, x_, t_), prediction=prediction,
        logsnr_fn=schedule.logsnr)(x, t)

  weights_path = inception_weights.ensure_weights(cfg.inception_weights, download=not hub.offline())
  variables = inception_weights.load_weights(weights_path, sha256=cfg.inception_sha256,
                                             width=cfg.inception_width)
  network = inception.FIDInceptionV3(width=cfg.inception_width, preprocess=cfg.inception_preprocess)
  features = inception.features_fn(variables, width=cfg.inception_width,
                                   preprocess=cfg.inception_preprocess)
  path = reference_stats_path(cfg)
  if os.path.exists(path):
    logging.info("reference statistics: cached %s", path)
    reference = metrics.load_stats(path)
  else:
    reference = compute_reference_stats(cfg, features, path, mesh)

  return Problem(
      name=f"pretrained:{cfg.dataset}", schedule=schedule,
      example_shape=(size, size, checkpoint.config.in_channels), eps_apply=eps_apply,
      model_params=checkpoint.params,
      feature_apply=lambda v, x: network.apply(v, x)[cfg.loss_features],
      feature_params=variables, real_batch=train_source.batch, evaluate=None,
      plot=plots.image_grids,
      model_info=ModelInfo(cfg.checkpoint, checkpoint.sha256, prediction),
      weights={"model": {"path": checkpoint.weights_path, "sha256": checkpoint.sha256},
               "features": {"path": weights_path, "sha256": sha256_of(weights_path)}},
      evaluator_factory=lambda n: InceptionEvaluator(n, features=features, reference=reference,
                                                     cfg=cfg, seed=seed + 3, mesh=mesh),
      model_clip_x0=diffusers_io.load_clip_x0(model_dir),
      split_validation=lambda n: carve_validation(train_source, n, seed))
