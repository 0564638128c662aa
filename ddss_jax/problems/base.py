"""What DDSS needs of a problem: the Problem record (a frozen model, a feature map for the loss,
real data, the held-out evaluation) and the evaluator protocol. The training loop needs nothing
else; ddss_jax.problems builds one from a config, ddss_jax.make_problem from a caller's arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ddss_jax.samplers.sampler_json import ModelInfo
from ddss_jax.samplers.schedules import Schedule
from ddss_jax.util import parallel


class Evaluator(Protocol):
  """Takes samples batch by batch (a conditional problem's with the conditions they were drawn
  for), then returns the held-out metrics {name: float}."""

  def update(self, samples: np.ndarray, cond: Any = None) -> None: ...

  def result(self) -> dict[str, float]: ...


class CollectingEvaluator:
  """Holds every sample and evaluates them at the end: for problems with small N. The
  evaluation gets evaluate(samples) or, where batches came with conditions,
  evaluate(samples, conditions)."""

  def __init__(self, evaluate: Callable[..., dict[str, float]]):
    self._evaluate, self._batches, self._conds = evaluate, [], []

  def update(self, samples: np.ndarray, cond: Any = None) -> None:
    self._batches.append(np.asarray(samples))
    if cond is not None:
      self._conds.append(cond)

  def result(self) -> dict[str, float]:
    samples = np.concatenate(self._batches)
    if not self._conds:
      return self._evaluate(samples)
    conds = jax.tree.map(lambda *c: np.concatenate([np.asarray(x) for x in c]), *self._conds)
    return self._evaluate(samples, conds)


@dataclasses.dataclass(frozen=True)
class Conditioning:
  """What makes a problem conditional. A condition is any pytree of arrays whose leading axis
  runs over examples (class labels [N], embeddings [N, E], ...).

  Attributes:
    null: one example's unconditional input (e.g. the label meaning "no class"): guided samplers
      call the model with it (ddss_jax.samplers.guidance).
    real: (key, n, rows=slice(None)) -> the conditions of real_batch(key, n, rows)'s examples
      (the same draw). A DDSS step draws its samples for the conditions of another draw
      (ddss_jax.learn.kid_loss.conditioned_batch_fn).
    embed: conditions [B, ...] -> [B, E], joined to the features [B, D] wherever samples are
      compared with real examples during learning (the joined KID loss, validation scores): a
      sample far from the real examples of its own condition then costs more than one that
      only looks real.
    held_out: the conditions [M, ...] of the held-out examples: evaluation sample i is drawn
      for row i mod M, so the samples share the held-out label distribution.
    validation: n -> (`real` of the training examples split_validation(n) leaves, the
      conditions [n, ...] of the n it holds out); None where the problem carves no split.
    classes: conditions [B, ...] -> integer classes [B] in [0, num_classes), for the KID
      within classes (loss.conditional); None where conditions have no classes.
    num_classes: how many classes `classes` gives.
  """
  null: Any
  real: Callable[..., Any]
  embed: Callable[[Any], jax.Array]
  held_out: Any
  validation: Callable[[int], tuple[Callable[..., Any], Any]] | None = None
  classes: Callable[[Any], jax.Array] | None = None
  num_classes: int = 0


def join_condition(features: jax.Array, cond: Any,
                   conditioning: Conditioning | None) -> jax.Array:
  """features [B, D] joined with conditioning.embed(cond) [B, E] -> [B, D + E]; the features
  alone where the problem is unconditional."""
  if conditioning is None:
    return features
  return jnp.concatenate([features, conditioning.embed(cond).astype(features.dtype)], axis=-1)


def feature_rms(features: np.ndarray) -> float:
  """The root mean square norm of feature vectors [N, D]: the scale of a label's one-hot
  joined to them."""
  return float(np.sqrt(np.mean(np.sum(np.square(np.asarray(features, np.float64)), axis=-1))))


def rows_of(cond: Any, rows: np.ndarray) -> Any:
  """The given rows of a pytree of conditions [N, ...] (NumPy)."""
  return jax.tree.map(lambda c: np.asarray(c)[rows], cond)


def num_rows(cond: Any) -> int:
  """The leading axis of a pytree of conditions."""
  return int(np.shape(jax.tree.leaves(cond)[0])[0])


def held_out_conditions(conditioning: Conditioning, num_samples: int) -> Any:
  """The conditions [num_samples, ...] of evaluation samples 0 .. num_samples - 1: the held-out
  conditions, cycled."""
  return rows_of(conditioning.held_out,
                 np.arange(num_samples) % num_rows(conditioning.held_out))


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
    evaluate: samples [N, ...] (NumPy) -> held-out metrics {name: float} (a conditional
      problem's: (samples, the conditions they were drawn for) -> metrics), or None where the
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
    conditioning: what a conditional model is conditioned on and where the conditions come from
      (Conditioning); None for an unconditional model.
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
  conditioning: Conditioning | None = None

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
