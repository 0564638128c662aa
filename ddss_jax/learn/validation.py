"""Scores on the validation split a run carves from its training data: what the start selection,
the validations during training and the choice among runs compare, without the held-out data."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from ddss_jax import samplers
from ddss_jax.evaluation import drawing, metrics
from ddss_jax.learn import loop
from ddss_jax.problems.base import Problem, join_condition, num_rows, place, rows_of
from ddss_jax.samplers.sampler_json import ModelInfo
from ddss_jax.settings import TrainConfig
from ddss_jax.util import files, parallel

# The noise seed of validation draw i is the first draw's + i * VALIDATION_DRAW_OFFSET.
VALIDATION_DRAW_OFFSET = 1000


class ValidationScore:
  """score(sampler, params) -> {"kid", "fid"}: train.validation_samples fresh samples (the same
  noise every time: seed train.seed + 5) against the validation split, in the problem's feature
  space; with train.validation_draws > 1 the means over that many draws (seeds
  + VALIDATION_DRAW_OFFSET each). first_draw > 0 starts at a later draw (seed + first_draw *
  VALIDATION_DRAW_OFFSET): other samples against the same split. What the start selection and
  the validations during training compare. A conditional problem's samples are drawn for the
  split's conditions (validation_cond) and compared in the features joined with them, as the
  KID loss compares them."""

  def __init__(self, problem: Problem, validation_split: np.ndarray, cfg: TrainConfig,
               first_draw: int = 0, validation_cond: Any = None):
    self._problem, self._cfg = problem, cfg
    self._first_draw = first_draw
    # Sample i is drawn for the condition of held example i mod validation_size.
    self._cond = None if validation_cond is None else rows_of(
        validation_cond, np.arange(cfg.validation_samples) % num_rows(validation_cond))
    features_of = jax.jit(problem.feature_apply)
    self._features = lambda x, cond: join_condition(
        parallel.padded_apply(lambda b: features_of(problem.feature_params, b),
                              np.asarray(x, np.float32), 500),
        cond, problem.conditioning)
    self._reference = self._features(validation_split, validation_cond)

  @property
  def select_on(self) -> str:
    return self._cfg.select_on

  def per_draw(self, sampler: samplers.Sampler, params: Any) -> list[dict[str, float]]:
    """[{"kid", "fid"}] of each draw alone, in draw order."""
    cfg = self._cfg
    scores = []
    for draw in range(self._first_draw, self._first_draw + cfg.validation_draws):
      samples = drawing.draw_samples(
          sampler, params, self._problem, num_samples=cfg.validation_samples,
          batch_size=min(cfg.batch_size, cfg.validation_samples),
          seed=cfg.seed + 5 + VALIDATION_DRAW_OFFSET * draw, conds=self._cond)
      feats = self._features(samples, self._cond)
      scores.append({"kid": float(metrics.kid(feats, self._reference)),
                     "fid": float(metrics.fid_from_features(feats, self._reference))})
    return scores

  def __call__(self, sampler: samplers.Sampler, params: Any) -> dict[str, float]:
    scores = self.per_draw(sampler, params)
    # One draw's mean is that draw's score, to the bit.
    return {key: float(np.mean([s[key] for s in scores])) for key in ("kid", "fid")}


def validation_score(problem: Problem, train: TrainConfig, first_draw: int,
                      mesh: Mesh | None) -> ValidationScore:
  """The ValidationScore that learn_sampler's validations use, for the split `train` carves."""
  if problem.split_validation is None:
    raise ValueError(f"problem {problem.name!r} cannot carve a validation split from its "
                     "training data (data given as an iterator?)")
  _, validation_split = problem.split_validation(train.validation_size)
  validation_cond = None
  if problem.conditioning is not None:
    _, validation_cond = problem.conditioning.validation(train.validation_size)
  problem = place(problem, mesh or parallel.make_mesh())  # as learn_sampler scores it
  return ValidationScore(problem, validation_split, train, first_draw, validation_cond)


def score_on_validation(sampler: samplers.Sampler, params: Any, problem: Problem, *,
                        train: TrainConfig | None = None, first_draw: int = 0,
                        mesh: Mesh | None = None) -> dict[str, float]:
  """{"fid", "kid"} of (sampler, params) on the validation split that learn_sampler carves with
  `train` (train.validation_size training examples; train.validation_samples samples from seed
  train.seed + 5): the score its validations keep the best parameters by. Runs learned with
  other settings (another learning rate, say) are chosen between on it without touching held-out
  data. The split follows the seed the problem was built with, so build it as the run's was
  (ddss_jax.run.build_problem does, from the run's config). With train.validation_draws > 1, the
  mean over the draws (noise seeds + VALIDATION_DRAW_OFFSET each), as the run's validations took
  it. first_draw > 0 draws other samples against the same split (seed + first_draw *
  VALIDATION_DRAW_OFFSET on): how much the score moves with them is its noise."""
  return validation_score(problem, train or TrainConfig(), first_draw, mesh)(sampler, params)


def score_draws_on_validation(sampler: samplers.Sampler, params: Any, problem: Problem, *,
                              train: TrainConfig | None = None, draws: int = 1,
                              mesh: Mesh | None = None) -> list[dict[str, float]]:
  """[{"fid", "kid"}] of (sampler, params) on the validation split, one per draw of samples
  (draws 0 .. draws - 1, whatever train.validation_draws says): entry d is what
  score_on_validation gives with first_draw=d and one draw. Draw 0 is the noise the run's
  validations used; how the others move is the score's noise."""
  if draws < 1:
    raise ValueError(f"draws={draws}: score at least one draw of samples (draws >= 1)")
  train = dataclasses.replace(train or TrainConfig(), validation_draws=draws)
  return validation_score(problem, train, 0, mesh).per_draw(sampler, params)


class Validation:
  """validate(step, state) for run_training: the (averaged) parameters' ValidationScore; keeps
  the best by train.select_on, in workdir/sampler_best.json (with validation_best.json) where
  there is a workdir, so that a resumed run keeps it too."""

  def __init__(self, sampler: samplers.Sampler, score: ValidationScore, workdir: str | None,
               model_info: ModelInfo = ModelInfo()):
    self._sampler, self._score, self._model_info = sampler, score, model_info
    self._paths = None if workdir is None else (os.path.join(workdir, "sampler_best.json"),
                                                os.path.join(workdir, "validation_best.json"))
    self.best_step, self.best_value, self.best_params = None, np.inf, None
    if self._paths and os.path.exists(self._paths[1]):
      with open(self._paths[1], encoding="utf-8") as f:
        record = json.load(f)
      self.best_step, self.best_value = record["step"], record["value"]
      self.best_params = samplers.load(self._paths[0])[1]

  def __call__(self, step: int, state: loop.TrainState) -> dict[str, float]:
    average = loop.averaged_params(state.opt_state)
    params = state.params if average is None else average
    values = self._score(self._sampler, params)
    select_on = self._score.select_on
    if values[select_on] < self.best_value:
      self.best_step, self.best_value = step, values[select_on]
      self.best_params = jax.tree.map(np.asarray, params)
      if self._paths and jax.process_index() == 0:
        samplers.save(self._paths[0], self._sampler, self.best_params,
                      model=self._model_info)
        files.write_json(self._paths[1], {"step": step, "select_on": select_on,
                                          "value": self.best_value})
    return {"val/kid": values["kid"], "val/fid": values["fid"], "val/best_step": self.best_step}
