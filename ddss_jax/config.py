"""Config validation before anything compiles, and the workdir's record of the run it holds.

`validate(config)` checks every field of configs/default.py's schema: its type, its range, known
names only (problems, schedules, sampler families and strides, losses, datasets), and the checks
that span groups (K within the schedule, solvers without noise, a family with something to learn
when DDSS runs). Every failure raises ConfigError naming the field as `config.<group>.<key>`, the
bad value and what is valid; nothing else escapes for a config value.

`check_workdir(config, workdir)` refuses to resume a run of an incompatible config: the workdir's
config.json (written at its first start) must equal this config except in the fields that only
say how long to train, how often to log and checkpoint, and how to evaluate.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Callable

import jax
import ml_collections
from absl import logging

from ddss_jax import (features, logs, pretrained, problems, recurrence, samplers, schedules,
                      teacher)
from ddss_jax.config_groups import ConfigError
from ddss_jax.models import inception

Check = Callable[[str, Any], None]
SEED_MAX = 2**31 - 1
NONFINITE = ("stop", "skip")


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def integer(low: int | None = None, high: int | None = None, *, optional: bool = False) -> Check:
  def check(field, value):
    if optional and value is None:
      return
    if not _is_int(value) or (low is not None and value < low) or (
        high is not None and value > high):
      bounds = " and ".join(b for b in (low is not None and f">= {low}",
                                        high is not None and f"<= {high}") if b)
      raise ConfigError(field, value, "must be an integer" + (f" {bounds}" if bounds else "")
                        + (" or None" if optional else ""))
  return check


def real(low: float | None = None, high: float | None = None, *, above: float | None = None,
         below: float | None = None) -> Check:
  """A finite number (ints are fine) within [low, high] and (above, below)."""
  def check(field, value):
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and (low is None or value >= low)
          and (high is None or value <= high) and (above is None or value > above)
          and (below is None or value < below))
    if not ok:
      bounds = " and ".join(b for b in (low is not None and f">= {low}", above is not None
                                        and f"> {above}", high is not None and f"<= {high}",
                                        below is not None and f"< {below}") if b)
      raise ConfigError(field, value, "must be a finite number" + (f" {bounds}" if bounds else ""))
  return check


def choice(choices) -> Check:
  def check(field, value):
    if not isinstance(value, str) or value not in choices:
      raise ConfigError(field, value, f"valid choices: {list(choices)}")
  check.choices = tuple(choices)
  return check


def boolean(field: str, value: Any) -> None:
  if not isinstance(value, bool):
    raise ConfigError(field, value, "must be True or False")


def text(*, optional: bool = False, pattern: str | None = None) -> Check:
  def check(field, value):
    if optional and value is None:
      return
    if not isinstance(value, str) or not value or (pattern and not re.fullmatch(pattern, value)):
      raise ConfigError(field, value, "must be a non-empty string" + (
          f" matching {pattern}" if pattern else "") + (" or None" if optional else ""))
  return check


def _datasets() -> list[str] | None:
  try:  # tensorflow-datasets is an extra; without it, missing_inputs says what to install
    from ddss_jax.data import tfds_images  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return sorted(tfds_images.DATASETS)


def dataset(field: str, value: Any) -> None:
  names = _datasets()
  if not isinstance(value, str) or (names is not None and value not in names):
    raise ConfigError(field, value, f"valid choices: {names}")


_SHA256 = r"[0-9a-fA-F]{1,64}"
FIELDS: dict[str, dict[str, Check]] = {
    "schedule": dict(name=choice(tuple(schedules.SCHEDULES)), num_timesteps=integer(2, 100_000)),
    "sampler": dict(family=choice(samplers.FAMILIES), num_steps=integer(1),
                    stride=choice(samplers.STRIDES), eta=real(0, 1),
                    gradient=choice(recurrence.GRADIENTS), unroll=integer(1),
                    canonical_convs=boolean),
    "baseline": dict(family=choice(samplers.FIXED_FAMILIES), eta=real(0, 1)),
    "loss": dict(name=choice(teacher.LOSSES), teacher_family=choice(samplers.FIXED_FAMILIES),
                 teacher_steps=integer(1), teacher_stride=choice(samplers.STRIDES),
                 teacher_pool=integer(2), teacher_space=choice(teacher.SPACES),
                 teacher_dir=text(optional=True)),
    "train": dict(num_train_steps=integer(0), batch_size=integer(2), learning_rate=real(above=0),
                  grad_clip=real(), b1=real(0, below=1), b2=real(0, below=1),
                  seed=integer(0, SEED_MAX), log_every_steps=integer(1),
                  checkpoint_every_steps=integer(1), nonfinite=choice(NONFINITE),
                  max_consecutive_skips=integer(1)),
    "eval": dict(num_samples=integer(2), batch_size=integer(1), seed=integer(0, SEED_MAX),
                 reference_steps=integer(0)),
    "toy2d": dict(num_modes=integer(1), radius=real(above=0), std=real(above=0),
                  model_width=integer(1), model_depth=integer(1), model_train_steps=integer(1),
                  model_batch_size=integer(1), model_learning_rate=real(above=0),
                  model_ema_decay=real(0, below=1), features=choice(features.FEATURE_KINDS),
                  rff_dim=integer(1), rff_lengthscale=real(above=0)),
    "mnist": dict(unet_weights=text(optional=True), classifier_weights=text(optional=True),
                  kid_subsets=integer(1), kid_subset_size=integer(2, 1000)),
    "pretrained": dict(
        dataset=dataset, data_dir=text(optional=True), train_split=text(),
        reference_split=text(), reference_num_examples=integer(0),
        image_size=integer(8, optional=True), checkpoint=text(optional=True),
        checkpoint_sha256=text(optional=True, pattern=_SHA256),
        inception_weights=text(optional=True),
        inception_sha256=text(optional=True, pattern=_SHA256),
        inception_width=real(above=0, high=1),
        inception_preprocess=choice(inception.PREPROCESS_CHOICES),
        loss_features=choice(pretrained.LOSS_FEATURES),
        feature_batch_size=integer(1), kid_subsets=integer(1), kid_subset_size=integer(2),
        kid_sample_size=integer(2), is_splits=integer(1), stats_dir=text(optional=True)),
}


def as_dict(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  return config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)


def validate(config: ml_collections.ConfigDict | dict) -> None:
  """Raises ConfigError for the first field of `config` that cannot run (see the module doc)."""
  values = as_dict(config)
  valid = ["problem", *FIELDS]
  for key in values:
    if key not in valid:
      raise ConfigError(key, values[key], f"unknown key; valid keys: {valid}")
  choice(problems.PROBLEMS)("problem", values.get("problem"))
  for group, checks in FIELDS.items():
    entries = values.get(group)
    if not isinstance(entries, dict):
      raise ConfigError(group, entries, "must be a config group; configs/default.py has it")
    for key in entries:
      if key not in checks:
        raise ConfigError(f"{group}.{key}", entries[key],
                          f"unknown key; valid keys: {list(checks)}")
    for key, check in checks.items():
      if key not in entries:
        raise ConfigError(f"{group}.{key}", None, "missing; configs/default.py has every key")
      check(f"{group}.{key}", entries[key])
  _check_across_groups(values)


def _check_across_groups(c: dict[str, Any]) -> None:
  steps = c["schedule"]["num_timesteps"]
  sampler, train, loss = c["sampler"], c["train"], c["loss"]
  for field, value in (("sampler.num_steps", sampler["num_steps"]),
                       ("loss.teacher_steps", loss["teacher_steps"]),
                       ("eval.reference_steps", c["eval"]["reference_steps"])):
    integer(0 if field == "eval.reference_steps" else 1, steps)(field, value)
  if sampler["unroll"] > sampler["num_steps"]:
    raise ConfigError("sampler.unroll", sampler["unroll"],
                      f"must be <= sampler.num_steps={sampler['num_steps']}")
  if train["num_train_steps"] > 0 and sampler["family"] in samplers.FIXED_FAMILIES:
    raise ConfigError("sampler.family", sampler["family"], "has nothing to learn with "
                      f"train.num_train_steps={train['num_train_steps']}; valid choices: "
                      f"{[f for f in samplers.FAMILIES if f not in samplers.FIXED_FAMILIES]}")
  if loss["name"] == "teacher" and train["batch_size"] > loss["teacher_pool"]:
    raise ConfigError("train.batch_size", train["batch_size"], f"exceeds loss.teacher_pool="
                      f"{loss['teacher_pool']}: each batch takes distinct pairs of the pool")
  if c["problem"] == "mnist" and c["mnist"]["kid_subset_size"] > c["eval"]["num_samples"]:
    raise ConfigError("mnist.kid_subset_size", c["mnist"]["kid_subset_size"],
                      f"must be <= eval.num_samples={c['eval']['num_samples']}")
  pre = c["pretrained"]
  if pre["kid_subset_size"] > pre["kid_sample_size"]:
    raise ConfigError("pretrained.kid_subset_size", pre["kid_subset_size"],
                      f"must be <= pretrained.kid_sample_size={pre['kid_sample_size']}")
  # What samplers.make refuses (repeated times at large K, noise in a solver) names the group.
  schedule = schedules.make(c["schedule"]["name"], steps)
  for group, family, eta, num_steps, stride in (
      ("sampler", sampler["family"], sampler["eta"], sampler["num_steps"], sampler["stride"]),
      ("baseline", c["baseline"]["family"], c["baseline"]["eta"], sampler["num_steps"],
       sampler["stride"]),
      ("loss", loss["teacher_family"], 0.0, loss["teacher_steps"], loss["teacher_stride"])):
    if group == "baseline" and family == "ddpm":
      eta = None  # DDPM is eta = 1 by definition; baseline.eta applies to DDIM only
    try:
      samplers.make(family, schedule, num_steps, stride=stride, eta=eta)
    except ValueError as e:
      fields = dict(sampler="sampler.family, .num_steps, .stride, .eta",
                    baseline="baseline.family, baseline.eta (at sampler.num_steps, .stride)",
                    loss="loss.teacher_family, .teacher_steps, .teacher_stride")[group]
      raise ConfigError(group, f"{family} K={num_steps} {stride} eta={eta}",
                        f"{fields} do not make a sampler: {e}") from e


# Fields a resumed run may change: how long to train, logging and checkpoint intervals, the
# evaluation, the baseline it is compared with and where the teacher pool is cached.
RESUMABLE_CHANGES = ("train.num_train_steps", "train.log_every_steps",
                     "train.checkpoint_every_steps", "eval.", "baseline.", "loss.teacher_dir")
CONFIG_RECORD = "config.json"


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in values.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def check_workdir(config: ml_collections.ConfigDict | dict, workdir: str, *,
                  allow_change: bool = False) -> None:
  """Refuses (ConfigError) a workdir whose config.json records a run this config cannot resume;
  records this config there otherwise (process 0, atomically). allow_change: warn instead."""
  path = os.path.join(workdir, CONFIG_RECORD)
  record = json.loads(json.dumps(as_dict(config)))  # as the file will hold it
  now = _flat(record)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      before = _flat(json.load(f))
    changed = sorted(k for k in set(now) | set(before) if now.get(k, "<absent>") !=
                     before.get(k, "<absent>") and not k.startswith(RESUMABLE_CHANGES))
    if changed:
      diff = "; ".join(f"config.{k}: {before.get(k, '<absent>')!r} there, "
                       f"{now.get(k, '<absent>')!r} now" for k in changed)
      if not allow_change:
        raise ConfigError(changed[0], now.get(changed[0]), f"{workdir} holds a run of another "
                          f"config ({diff}); use another --workdir, or pass "
                          "--allow_config_change to resume it anyway")
      logging.warning("resuming %s with a changed config (--allow_config_change): %s", workdir,
                      diff)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    logs.write_json(path, record)
