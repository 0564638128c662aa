"""Typed, frozen views of the config groups, made where a group enters a module.

configs/default.py holds the whole schema, with every default and a comment for each field; these
dataclasses mirror its groups (no defaults here, so there is one source of truth) and make a
misspelt, unknown or missing key fail at start-up, naming the valid keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import ml_collections

T = TypeVar("T")


class ConfigError(ValueError):
  """A config value that cannot run: names the field (config.<group>.<key>), the value and what
  is valid. Raised before anything compiles (ddss_jax.validation)."""

  def __init__(self, field: str, value: Any, expected: str):
    self.field = field
    super().__init__(f"config.{field}={value!r}: {expected}")


class MissingInputs(ConfigError, FileNotFoundError):
  """Files or datasets the config needs that are absent: one message listing each and how to
  provide it. A ConfigError and a FileNotFoundError."""

  def __init__(self, field: str, value: Any, missing: list[str]):
    self.field = field
    ValueError.__init__(self, f"config.{field}={value!r} cannot start; missing:\n- "
                        + "\n- ".join(missing))


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  family: str
  num_steps: int
  stride: str
  eta: float
  gradient: str
  unroll: int
  canonical_convs: bool


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
  family: str
  eta: float


@dataclasses.dataclass(frozen=True)
class LossConfig:
  name: str
  teacher_family: str
  teacher_steps: int
  teacher_stride: str
  teacher_pool: int
  teacher_space: str
  teacher_dir: str | None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  num_train_steps: int
  batch_size: int
  learning_rate: float
  grad_clip: float
  b1: float
  b2: float
  seed: int
  log_every_steps: int
  checkpoint_every_steps: int
  nonfinite: str
  max_consecutive_skips: int


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  num_samples: int
  batch_size: int
  seed: int
  reference_steps: int


@dataclasses.dataclass(frozen=True)
class Toy2DConfig:
  num_modes: int
  radius: float
  std: float
  model_width: int
  model_depth: int
  model_train_steps: int
  model_batch_size: int
  model_learning_rate: float
  model_ema_decay: float
  features: str
  rff_dim: int
  rff_lengthscale: float


@dataclasses.dataclass(frozen=True)
class MNISTConfig:
  unet_weights: str | None
  classifier_weights: str | None
  kid_subsets: int
  kid_subset_size: int


@dataclasses.dataclass(frozen=True)
class PretrainedConfig:
  dataset: str
  data_dir: str | None
  train_split: str
  reference_split: str
  reference_num_examples: int
  image_size: int | None
  checkpoint: str | None
  checkpoint_sha256: str | None
  inception_weights: str | None
  inception_sha256: str | None
  inception_width: float
  inception_preprocess: str
  loss_features: str
  feature_batch_size: int
  kid_subsets: int
  kid_subset_size: int
  kid_sample_size: int
  is_splits: int
  stats_dir: str | None


def from_group(cls: type[T], group: Any, name: str) -> T:
  """Builds dataclass `cls` from config group `name`; unknown or missing keys raise ConfigError."""
  values = group.to_dict() if isinstance(group, ml_collections.ConfigDict) else dict(group)
  valid = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(values) - set(valid))
  if unknown:
    raise ConfigError(f"{name}.{unknown[0]}", values[unknown[0]],
                      f"unknown key(s) {unknown} in config.{name}; valid keys: {valid}")
  missing = [key for key in valid if key not in values]
  if missing:
    raise ConfigError(f"{name}.{missing[0]}", None,
                      f"config.{name} lacks key(s) {missing}; configs/default.py has them all")
  return cls(**values)
