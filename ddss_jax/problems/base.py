"""What DDSS needs of a problem: the Problem record (a frozen model, a feature map for the loss,
real data, the held-out evaluation) and the evaluator protocol. The training loop needs nothing
else; ddss_jax.problems builds one from a config, ddss_jax.make_problem from a caller's arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import jax
import numpy as np
from jax.sharding import Mesh

from ddss_jax.samplers.sampler_json import ModelInfo
from ddss_jax.samplers.schedules import Schedule
from ddss_jax.util import parallel


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
    eps_apply: (model_params, x [B, ...], t [B]) -> eps [B, ...]; a conditional model's
      (model_params, x, t, cond) -> eps, cond a pytree with leading axis B.
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
    split_validation: n -> (real_batch of the training examples left, n held-out training
      examples [n, ...]): a validation split carved from the training data (never from the
      evaluation's); None where the problem cannot carve one.
    model_info: the frozen model as sampler.json records it (source, sha256, what the network
      predicts), so that a sampler learned on this problem names what it runs with.
    model_clip_x0: the x0 clipping the model's own sampler settings ask for (a checkpoint's
      scheduler_config.json clip_sample: its range, or 0.0 for clip_sample=False); None where
      they say nothing. learn_sampler logs a line where config.sampler.clip_x0 differs.
    null_cond: a conditional model's unconditional input (one example's, e.g. the label meaning
      "no class"), which guided samplers call it with; None for an unconditional model.
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
  split_validation: Callable[[int], tuple[Callable[..., Any], np.ndarray]] | None = None
  model_info: ModelInfo = ModelInfo()
  model_clip_x0: float | None = None
  null_cond: Any = None

  def make_evaluator(self, num_samples: int) -> Evaluator:
    if self.evaluator_factory is not None:
      return self.evaluator_factory(num_samples)
    return CollectingEvaluator(self.evaluate)


def place(problem: Problem, mesh: Mesh) -> Problem:
  """The problem with its frozen weights on every device of the mesh (moved once)."""
  replicated = parallel.replicated(mesh)
  return dataclasses.replace(problem,
                             model_params=jax.device_put(problem.model_params, replicated),
                             feature_params=jax.device_put(problem.feature_params, replicated))
