"""The problems a config can name, one module each: its config group (`Config`), its builder
(`build`), the files it needs (`missing_inputs`) and its checks across groups. A new dataset is
one new module here and one line in PROBLEMS.

  toy2d       a ring of 2-D Gaussians and an MLP eps-model trained on it (seconds)
  mnist       the embedded default: real MNIST digits, the shipped UNet and classifier
  pretrained  a diffusers UNet2DModel checkpoint, a tensorflow-datasets dataset, Inception
"""

from __future__ import annotations

from types import ModuleType

from ddss_jax.problems import mnist, pretrained, toy2d
from ddss_jax.problems.base import CollectingEvaluator, Evaluator, Problem
from ddss_jax.util.errors import ConfigError

PROBLEMS: dict[str, ModuleType] = {m.NAME: m for m in (toy2d, mnist, pretrained)}

__all__ = ["PROBLEMS", "CollectingEvaluator", "Evaluator", "Problem", "get", "is_conditional"]


def is_conditional(name: str, group: dict) -> bool:
  """Whether problem `name`, configured by its group's values, has a conditional model."""
  module = get(name)
  return hasattr(module, "is_conditional") and module.is_conditional(module.Config(**group))


def get(name: str) -> ModuleType:
  """The module of problem `name`; ConfigError naming config.problem and the valid names."""
  if name not in PROBLEMS:
    raise ConfigError("problem", name, f"valid choices: {list(PROBLEMS)}")
  return PROBLEMS[name]
