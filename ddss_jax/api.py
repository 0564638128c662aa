"""The Python API: learn a fast sampler for your own frozen model, data and features, and
evaluate samplers side by side.

    import ddss_jax
    problem = ddss_jax.make_problem(model=unet, model_params=params, data=train_images,
                                    features="mnist_classifier", eval_data=test_images)
    learned = ddss_jax.learn_sampler(
        problem, sampler=ddss_jax.SamplerConfig(family="ggdm+pred+time", num_steps=5),
        train=ddss_jax.TrainConfig(num_train_steps=150, batch_size=64))
    x0 = learned.sample(lambda x, t: unet.apply({"params": params}, x, t), key, (16, 28, 28, 1))
    table = ddss_jax.evaluate_samplers({"learned": (learned.sampler, learned.params)}, problem)

Every setting has its default in ddss_jax.settings; the command line (ddss_jax.main ->
ddss_jax.experiment) turns a config file into exactly these calls.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Callable, Iterable, Sequence

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from clu import parameter_overview
from jax.sharding import Mesh

from ddss_jax import (evaluate, files, logs, metrics, model_forms, parallel, plots, samplers,
                      sampling, schedules, solvers, teacher)
from ddss_jax import train as train_lib
from ddss_jax.data.source import ArraySource, carve_validation
from ddss_jax.errors import ConfigError
from ddss_jax.problems.base import Problem
from ddss_jax.sampler_file import ModelInfo
from ddss_jax.settings import (EvalConfig, LossConfig, SamplerConfig, TrainConfig,
                               check_learnable)

FEATURE_NETWORKS = ("mnist_classifier", "inception_pool3")


@dataclasses.dataclass(frozen=True)
class LearnedSampler:
  """What learn_sampler returns.

  Attributes:
    sampler: the sampler (family, K, schedule, stride); its code is pure, its state is `params`.
    params: the learned parameters, a pytree of arrays: with train.validate_every_steps > 0 the
      best on the validation split; else the moving average of the iterates where
      train.ema_decay > 0, else the last iterate.
    train_steps: the DDSS steps taken (a resumed run's earlier steps included).
    history: the logged metric lines, each {"step": int, "train/kid": float, ...}.
    last_params: the last iterate (the same as params without an average or a validation).
    best_step: the step whose parameters params are, with a validation.
    model_info: the frozen model it was learned for (the problem's), recorded by `save`.
  """
  sampler: samplers.Sampler
  params: Any
  train_steps: int
  history: list[dict[str, float]]
  last_params: Any = None
  best_step: int | None = None
  model_info: ModelInfo = ModelInfo()

  def sample(self, eps_fn: samplers.EpsFn, key: jax.Array, shape: tuple[int, ...], *,
             x_T: jax.Array | None = None) -> jax.Array:
    """[B, ...] samples: K calls of eps_fn(x [B, ...], t [B]) -> eps [B, ...]."""
    return self.sampler.sample(self.params, eps_fn, key, shape, x_T=x_T)

  def save(self, path: str) -> None:
    """sampler.json as the command line writes it, naming the model it was learned for (reload
    with ddss_jax.samplers.load; run it outside JAX: docs/deploy.md)."""
    samplers.save(path, self.sampler, self.params, model=self.model_info)


def _eps_apply(eps_fn, model, schedule, num_timesteps
               ) -> tuple[Callable[[Any, jax.Array, jax.Array], jax.Array], schedules.Schedule]:
  """(eps_apply, the model's Schedule) of make_problem's model arguments."""
  if (eps_fn is None) == (model is None):
    raise ValueError("make_problem: pass exactly one of eps_fn=(params, x [B, ...], t [B]) -> "
                     "eps [B, ...] and model=<a flax.linen.Module called as model(x, t), or a "
                     "ddss_jax.model_forms.VPModel>")
  if isinstance(model, model_forms.VPModel):
    if schedule is not None:
      raise ValueError("make_problem: a model_forms.VPModel carries its schedule; drop "
                       f"schedule={schedule!r}")
    return model.eps_fn, model.schedule
  if schedule is None:
    schedule = "linear"
  if isinstance(schedule, str):
    schedule = schedules.make(schedule, num_timesteps)
  if model is None:
    return eps_fn, schedule
  if not isinstance(model, nn.Module):
    raise ValueError(f"make_problem: model={type(model).__name__} is neither a flax.linen.Module "
                     "nor a ddss_jax.model_forms.VPModel; wrap it with ddss_jax.model_forms, or "
                     "pass eps_fn=(params, x, t) -> eps")
  return (lambda params, x, t: model.apply({"params": params}, x, t)), schedule


def _feature_network(name: str) -> tuple[Callable, Any]:
  """(feature_apply, feature_params) of a built-in feature network."""
  if name == "mnist_classifier":
    from ddss_jax.models import classifier  # pylint: disable=import-outside-toplevel
    return classifier.features_fn, classifier.load_shipped_classifier()
  if name == "inception_pool3":
    from ddss_jax.models import inception  # pylint: disable=import-outside-toplevel
    variables = inception.load_weights(inception.ensure_weights(None))
    network = inception.FIDInceptionV3()
    return (lambda v, x: network.apply(v, x)["pool3"]), variables
  raise ValueError(f"make_problem: features={name!r}; valid built-in feature networks: "
                   f"{list(FEATURE_NETWORKS)}, or a function (feature_params, x [B, ...]) -> "
                   "[B, D]")


def _real_batch(data, name: str, seed: int):
  """(real_batch(key, n, rows=slice(None)), example shape, split_validation or None) of an array
  or a batch iterator."""
  if isinstance(data, (np.ndarray, jax.Array)):
    source = ArraySource(name, np.asarray(data, np.float32))
    return (source.batch, source.example_shape,
            lambda num: carve_validation(source, num, seed))
  iterator = iter(data)
  buffered = [np.asarray(next(iterator), np.float32)]
  example_shape = tuple(buffered[0].shape[1:])
  seen = [0]

  def real_batch(key, n, rows=slice(None)):
    del key  # an iterator decides its own order; a resumed run does not replay it
    have = sum(len(b) for b in buffered)
    while have < n:
      try:
        buffered.append(np.asarray(next(iterator), np.float32))
      except StopIteration:
        raise ValueError(f"data: the iterator ran out after {seen[0] + have} examples; "
                         f"{n} more were asked for (give it more, or fewer steps)") from None
      have += len(buffered[-1])
    joined = np.concatenate(buffered)
    buffered[:] = [joined[n:]]
    seen[0] += n
    return joined[:n][rows]

  return real_batch, example_shape, None


def make_problem(*, model_params: Any, data: np.ndarray | Iterable[np.ndarray],
                 features: str | Callable[[Any, jax.Array], jax.Array],
                 feature_params: Any = None, eps_fn: Callable | None = None,
                 model: nn.Module | model_forms.VPModel | None = None,
                 schedule: str | schedules.Schedule | None = None, num_timesteps: int = 1000,
                 eval_data: np.ndarray | None = None, name: str = "custom", seed: int = 0,
                 kid_subsets: int = 100, kid_subset_size: int = 500,
                 model_info: ModelInfo | None = None) -> Problem:
  """A DDSS problem from your frozen model, data and features.

  Args:
    model_params: the frozen model's weights (passed to every call, never closed over).
    data: real training examples [N, ...] (float, the model's data range, e.g. [-1, 1]), drawn
      at random; or an iterable of arrays [b, ...] of examples, taken in its order (b need not
      be the batch size).
    features: the KID loss's feature map, a function (feature_params, x [B, ...]) -> [B, D], or
      a built-in network: "mnist_classifier" (the shipped MNIST classifier's 96-d features) or
      "inception_pool3" (the FID Inception's 2048-d pool3; its weights must be in the cache).
    feature_params: the feature function's weights (ignored for a built-in network).
    eps_fn: (model_params, x [B, ...], t [B]) -> eps [B, ...], t in [0, T - 1]; or
    model: a flax.linen.Module called as model(x, t) with {"params": model_params}, or a model
      of another form (x0, v, score or velocity prediction; continuous time; EDM's sigma;
      flow matching) wrapped by ddss_jax.model_forms, which brings its schedule.
    schedule, num_timesteps: the frozen model's noise schedule (a name and T, or a Schedule;
      default "linear"); not with a model_forms.VPModel.
    eval_data: held-out examples [M, ...] for evaluate_samplers (KID, FID, precision and recall
      in the feature space); None: the problem can be trained on, not evaluated.
    name, seed: the problem's name in results; the seed of the evaluation's KID subsets and of
      the validation split carved from an array of data.
    kid_subsets, kid_subset_size: KID mean and std over random subsets at evaluation.
    model_info: the frozen model as a saved sampler records it, ModelInfo(source=<hub id or
      path>, sha256=<weights' digest>, prediction=<what the network outputs: "eps", "x0" or
      "v">); None: "unspecified".
  """
  eps_apply, schedule = _eps_apply(eps_fn, model, schedule, num_timesteps)
  if model_info is not None and not isinstance(model_info, ModelInfo):
    raise ValueError(f"make_problem: model_info must be a ddss_jax.ModelInfo(source=, sha256=, "
                     f"prediction=) or None, got {type(model_info).__name__}")
  if isinstance(features, str):
    feature_apply, feature_params = _feature_network(features)
  else:
    feature_apply = features
  real_batch, example_shape, split = _real_batch(data, f"{name}/train", seed)
  plot = plots.image_grids if len(example_shape) == 3 else plots.scatter_panels
  evaluate_fn = None
  if eval_data is not None:
    evaluate_fn = _feature_evaluation(feature_apply, feature_params,
                                      np.asarray(eval_data, np.float32), seed=seed,
                                      kid_subsets=kid_subsets, kid_subset_size=kid_subset_size)
  return Problem(name=name, schedule=schedule, example_shape=example_shape, eps_apply=eps_apply,
                 model_params=model_params, feature_apply=feature_apply,
                 feature_params=feature_params, real_batch=real_batch, evaluate=evaluate_fn,
                 plot=plot, split_validation=split, model_info=model_info or ModelInfo())


def _feature_evaluation(feature_apply, feature_params, eval_data: np.ndarray, *, seed: int,
                        kid_subsets: int, kid_subset_size: int):
  """samples [N, ...] -> KID (subset mean, std), FID and k-NN precision/recall (k = 3) against
  eval_data in the feature space."""
  features_of = jax.jit(feature_apply)
  batched = lambda x: parallel.padded_apply(lambda b: features_of(feature_params, b), x, 500)
  reference = batched(eval_data)

  def evaluate_fn(samples: np.ndarray) -> dict[str, float]:
    feats = batched(samples)
    size = min(kid_subset_size, len(feats), len(reference))
    kid_mean, kid_std = metrics.kid_subsets(feats, reference, key=jax.random.PRNGKey(seed),
                                            num_subsets=kid_subsets, subset_size=size)
    precision, recall = metrics.precision_recall(reference, feats)
    return {"kid": float(kid_mean), "kid_std": float(kid_std),
            "fid": metrics.fid_from_features(feats, reference), "precision": precision,
            "recall": recall}

  return evaluate_fn


def _print_progress(step: int, total: int, rate: float) -> None:
  _print_line(f"DDSS step {step}/{total}: {rate:.2f} steps/s, about "
              f"{logs.minutes_left(step, total, rate):.1f} min left")


def _print_line(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def place(problem: Problem, mesh: Mesh) -> Problem:
  """The problem with its frozen weights on every device of the mesh (moved once)."""
  replicated = parallel.replicated(mesh)
  return dataclasses.replace(problem,
                             model_params=jax.device_put(problem.model_params, replicated),
                             feature_params=jax.device_put(problem.feature_params, replicated))


def learn_sampler(problem: Problem, *, sampler: SamplerConfig | samplers.Sampler | None = None,
                  train: TrainConfig | None = None, loss: LossConfig | None = None,
                  workdir: str | None = None, mesh: Mesh | None = None,
                  pool_batch_size: int | None = None,
                  progress: bool | Callable[[int, int, float], None] = True,
                  writer: logs.MetricWriter | None = None) -> LearnedSampler:
  """Learns a sampler of problem's frozen model by DDSS.

  Args:
    problem: from make_problem (or ddss_jax.problems for the built-in ones).
    sampler: the family, K and stride to learn (SamplerConfig, default ggdm+pred+time at K = 4)
      or a Sampler made by ddss_jax.samplers.make.
    train: the optimisation (TrainConfig: steps, batch, learning rate, seed, ...).
    loss: KID (the default) or the teacher loss (LossConfig).
    workdir: None keeps nothing on disk; a folder gets the command line's orbax checkpoints
      (a rerun resumes from the newest), metrics.jsonl and TensorBoard events.
    mesh: the devices the batch is split over (default: every device of every process).
    pool_batch_size: batch size for drawing the teacher loss's pool (default train.batch_size).
    progress: True prints each logged step (rate, time left, compilation left out) and when
      compilation starts and ends to stderr; False logs them at INFO; or a function (step,
      total, steps per second), with the compilation lines logged at INFO.
    writer: where metrics go (default a MetricWriter of workdir, closed at the end).

  Returns:
    LearnedSampler: the sampler, its learned parameters and the training history.
  """
  train = train or TrainConfig()
  loss = loss or LossConfig()
  select = None  # the sampler.start rule that chooses the start, if one does
  if not isinstance(sampler, samplers.Sampler):
    cfg = sampler or SamplerConfig()
    select = cfg.start if cfg.selects_start else None
    sampler = samplers.make(cfg.family, problem.schedule, cfg.num_steps, stride=cfg.stride,
                            eta=cfg.eta, gradient=cfg.gradient, unroll=cfg.unroll,
                            clip_x0=cfg.clip_x0, start_solver=cfg.start_solver)
  check_learnable(sampler.family, train.num_train_steps)
  _note_clipping(problem, sampler)
  mesh = mesh or parallel.make_mesh()
  parallel.check_batch(train.batch_size, mesh, "train.batch_size")
  teacher_sampler = teacher.make(loss, problem.schedule, clip_x0=sampler.clip_x0)
  pool_dir = loss.teacher_dir or workdir
  if teacher_sampler is not None and pool_dir is None:
    raise ConfigError("loss.teacher_dir", None, "the teacher loss caches its pool in a folder: "
                      "pass workdir or loss.teacher_dir")
  if progress is True:
    logs.quiet_library_logs()
  report = {True: _print_progress, False: train_lib.log_progress}.get(progress, progress)
  own_writer = writer is None
  if workdir is not None:
    os.makedirs(workdir, exist_ok=True)
  writer = writer or logs.MetricWriter(workdir)

  held_out = None
  if train.validate_every_steps > 0 or select:
    if problem.split_validation is None:
      field, value, remedy = (("train.validate_every_steps", train.validate_every_steps,
                               "set it to 0") if train.validate_every_steps > 0 else
                              ("sampler.start", select, "use 'configured'"))
      raise ConfigError(field, value, f"problem {problem.name!r} cannot carve a validation "
                        f"split from its training data (data given as an iterator?); {remedy}")
    try:
      real_batch, held_out = problem.split_validation(train.validation_size)
    except ValueError as e:  # more than the training data holds
      raise ConfigError("train.validation_size", train.validation_size, str(e)) from e
    problem = dataclasses.replace(problem, real_batch=real_batch)
  problem = place(problem, mesh)
  score = None if held_out is None else ValidationScore(problem, held_out, train)
  if select:
    sampler = select_start(sampler, problem, score, workdir,
                           noise_free=select == "select_noise_free")
  optimizer = train_lib.create_optimizer(train)
  initial_params = sampler.init()
  state = jax.device_put(train_lib.create_train_state(initial_params, optimizer),
                         parallel.replicated(mesh))
  logging.info("sampler %s, K=%d, %s stride, %s loss; parameters:\n%s", sampler.family,
               sampler.num_steps, sampler.stride, loss.name,
               parameter_overview.get_parameter_overview(initial_params))
  loss_fn, batch_fn, reference = _loss_inputs(problem, sampler, teacher_sampler, train, loss,
                                              pool_dir, pool_batch_size, mesh)
  train_step = train_lib.make_train_step(sampler, problem, optimizer, train.batch_size, mesh,
                                         loss_fn=loss_fn, loss_name=loss.name)
  validation = (None if train.validate_every_steps == 0
                else Validation(sampler, score, workdir, problem.model_info))
  state = train_lib.run_training(state, train_step, problem, train, workdir, writer, mesh,
                                 batch_fn=batch_fn, reference=reference, progress=report,
                                 validate=validation,
                                 say=_print_line if progress is True else logging.info)
  history = writer.lines()
  if own_writer:
    writer.close()
  average = train_lib.averaged_params(state.opt_state)
  params = state.params if average is None else average
  if validation is not None and validation.best_params is not None:
    params = validation.best_params
  return LearnedSampler(sampler, params, int(state.step), history, last_params=state.params,
                        best_step=None if validation is None else validation.best_step,
                        model_info=problem.model_info)


def _note_clipping(problem: Problem, sampler: samplers.Sampler) -> None:
  """One log line where the model's own sampler settings (a checkpoint's clip_sample) and the
  sampler disagree on clipping x0 predictions."""
  wanted = problem.model_clip_x0
  if wanted is None or (wanted or None) == sampler.clip_x0:
    return
  logging.warning(
      "problem %s: the model's scheduler_config.json says clip_sample=%s%s, but the sampler %s; "
      "set config.sampler.clip_x0=%s (Python: SamplerConfig(clip_x0=%s)) to sample as the model "
      "was meant to", problem.name, bool(wanted), f" (range {wanted:g})" if wanted else "",
      f"clips x0 predictions to [-{sampler.clip_x0:g}, {sampler.clip_x0:g}]"
      if sampler.clip_x0 else "does not clip (clip_x0=0)", wanted, wanted)


def _loss_inputs(problem: Problem, sampler: samplers.Sampler,
                 teacher_sampler: samplers.Sampler | None, train: TrainConfig, loss: LossConfig,
                 pool_dir: str | None, pool_batch_size: int | None, mesh: Mesh):
  """(loss_fn or None for KID, batch_fn, the KID loss's fixed reference or None)."""
  if train.num_train_steps == 0:
    return None, problem.real_batch, None
  if teacher_sampler is not None:
    pool = teacher.load_or_draw_pool(loss, teacher_sampler, problem, pool_dir,
                                     seed=train.seed + 1,
                                     batch_size=pool_batch_size or train.batch_size)
    return (teacher.make_loss_fn(sampler, problem, loss.teacher_space, mesh),
            teacher.batch_fn(pool), None)
  reference = None
  if loss.kid_bank_size:
    try:
      reference = train_lib.make_reference(problem, problem.feature_params,
                                           size=loss.kid_bank_size, seed=train.seed + 3,
                                           mesh=mesh)
    except ValueError as e:  # more than the training data holds
      raise ConfigError("loss.kid_bank_size", loss.kid_bank_size, str(e)) from e
    reference = jax.device_put(reference, parallel.replicated(mesh))
  return None, problem.real_batch, reference


# The noise seed of validation draw i is the first draw's + i * VALIDATION_DRAW_OFFSET.
VALIDATION_DRAW_OFFSET = 1000


class ValidationScore:
  """score(sampler, params) -> {"kid", "fid"}: train.validation_samples fresh samples (the same
  noise every time: seed train.seed + 5) against the validation split, in the problem's feature
  space; with train.validation_draws > 1 the means over that many draws (seeds
  + VALIDATION_DRAW_OFFSET each). first_draw > 0 starts at a later draw (seed + first_draw *
  VALIDATION_DRAW_OFFSET): other samples against the same split. What the start selection and
  the validations during training compare."""

  def __init__(self, problem: Problem, held_out: np.ndarray, cfg: TrainConfig,
               first_draw: int = 0):
    self._problem, self._cfg = problem, cfg
    self._first_draw = first_draw
    features_of = jax.jit(problem.feature_apply)
    self._features = lambda x: parallel.padded_apply(
        lambda b: features_of(problem.feature_params, b), np.asarray(x, np.float32), 500)
    self._reference = self._features(held_out)

  @property
  def select_on(self) -> str:
    return self._cfg.select_on

  def per_draw(self, sampler: samplers.Sampler, params: Any) -> list[dict[str, float]]:
    """[{"kid", "fid"}] of each draw alone, in draw order."""
    cfg = self._cfg
    scores = []
    for draw in range(self._first_draw, self._first_draw + cfg.validation_draws):
      samples = sampling.draw_samples(
          sampler, params, self._problem, num_samples=cfg.validation_samples,
          batch_size=min(cfg.batch_size, cfg.validation_samples),
          seed=cfg.seed + 5 + VALIDATION_DRAW_OFFSET * draw)
      feats = self._features(samples)
      scores.append({"kid": float(metrics.kid(feats, self._reference)),
                     "fid": float(metrics.fid_from_features(feats, self._reference))})
    return scores

  def __call__(self, sampler: samplers.Sampler, params: Any) -> dict[str, float]:
    scores = self.per_draw(sampler, params)
    # One draw's mean is that draw's score, to the bit.
    return {key: float(np.mean([s[key] for s in scores])) for key in ("kid", "fid")}


def _validation_score(problem: Problem, train: TrainConfig, first_draw: int,
                      mesh: Mesh | None) -> ValidationScore:
  """The ValidationScore that learn_sampler's validations use, for the split `train` carves."""
  if problem.split_validation is None:
    raise ValueError(f"problem {problem.name!r} cannot carve a validation split from its "
                     "training data (data given as an iterator?)")
  _, held_out = problem.split_validation(train.validation_size)
  problem = place(problem, mesh or parallel.make_mesh())  # as learn_sampler scores it
  return ValidationScore(problem, held_out, train, first_draw)


def score_on_validation(sampler: samplers.Sampler, params: Any, problem: Problem, *,
                        train: TrainConfig | None = None, first_draw: int = 0,
                        mesh: Mesh | None = None) -> dict[str, float]:
  """{"fid", "kid"} of (sampler, params) on the validation split that learn_sampler carves with
  `train` (train.validation_size training examples; train.validation_samples samples from seed
  train.seed + 5): the score its validations keep the best parameters by. Runs learned with
  other settings (another learning rate, say) are chosen between on it without touching held-out
  data. The split follows the seed the problem was built with, so build it as the run's was
  (experiment.build_problem does, from the run's config). With train.validation_draws > 1, the
  mean over the draws (noise seeds + VALIDATION_DRAW_OFFSET each), as the run's validations took
  it. first_draw > 0 draws other samples against the same split (seed + first_draw *
  VALIDATION_DRAW_OFFSET on): how much the score moves with them is its noise."""
  return _validation_score(problem, train or TrainConfig(), first_draw, mesh)(sampler, params)


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
  return _validation_score(problem, train, 0, mesh).per_draw(sampler, params)


@dataclasses.dataclass(frozen=True)
class ValidationChoice:
  """What choose_on_validation found: `fids[i][d]`, run i's validation FID on draw d; `kept`,
  the run with the lowest mean (the first such on a tie)."""
  fids: tuple[tuple[float, ...], ...]
  kept: int

  @property
  def means(self) -> tuple[float, ...]:
    return tuple(float(np.mean(f)) for f in self.fids)


def lowest_mean(draws: Sequence[Sequence[float]]) -> int:
  """The index of the run whose scores over the draws have the lowest mean, the first such
  on a tie: choose_on_validation's rule (experiments/run_choice.py's second rule too)."""
  return int(np.argmin([float(np.mean(d)) for d in draws]))


def choose_on_validation(runs: Sequence[LearnedSampler], problem: Problem, *,
                         train: TrainConfig | Sequence[TrainConfig] | None = None,
                         draws: int = 4, mesh: Mesh | None = None) -> ValidationChoice:
  """Keeps one of several runs learned for the same problem (other learning rates, starts,
  families) on the validation split alone: each is scored by score_on_validation on `draws`
  draws of samples (draw 0 is the noise its validations used), and the lowest mean FID wins,
  the first run on a tie (put the default first). One draw's FID moves with its noise by about
  as much as good settings differ; the draws are the same for every run, so the comparison is
  fairer than the spread suggests. `train` is each run's TrainConfig (one for all, or one per
  run): its seed and validation_size carve the split, which must be the same for every run."""
  trains = [train or TrainConfig()] * len(runs) if not isinstance(train, Sequence) else train
  if len(trains) != len(runs) or not runs:
    raise ValueError(f"{len(runs)} runs and {len(trains)} TrainConfigs: give one per run, or one")
  split = {(t.seed, t.validation_size, t.validation_samples) for t in trains}
  if len(split) > 1:
    raise ValueError(f"the runs' train.seed, validation_size, validation_samples differ "
                     f"({sorted(split)}): their validation splits or samples would differ")
  fids = tuple(tuple(s["fid"] for s in score_draws_on_validation(
      run.sampler, run.params, problem, train=t, draws=draws, mesh=mesh))
                for run, t in zip(runs, trains))
  return ValidationChoice(fids=fids, kept=lowest_mean(fids))


def start_candidates(sampler: samplers.Sampler, *,
                     noise_free: bool = False) -> list[samplers.Sampler]:
  """The fixed samplers that `sampler`'s family represents at its initial parameters: DDIM
  (eta 0) and ancestral DDPM (eta 1) at each stride for VARS and the GGDM families, and for the
  GGDM families also DPM-Solver++(2M) and UniPC at each stride (a multistep solver is a GGDM);
  the solver at each stride for the solvers with learned times. Strides that repeat a time are
  skipped for the solvers; each candidate clips x0 predictions as `sampler` does. With
  noise_free, only those that draw no noise (DDPM left out)."""
  if sampler.solver:
    kinds = [sampler.solver]
  else:
    kinds = ["ddim", "ddpm"] + (list(solvers.SOLVERS) if sampler.is_ggdm
                                else [])
  candidates = []
  for stride in samplers.STRIDES:
    for family in kinds:
      try:
        candidates.append(samplers.make(family, sampler.schedule, sampler.num_steps,
                                        stride=stride, clip_x0=sampler.clip_x0))
      except ValueError:  # the solvers need distinct times
        continue
  return [c for c in candidates if not (noise_free and c.stochastic)]


def _start_of(sampler: samplers.Sampler, candidate: samplers.Sampler) -> dict:
  """What `sampler` takes from its start candidate: the stride, eta and (GGDM) start_solver."""
  ggdm_solver = sampler.is_ggdm and candidate.family in solvers.SOLVERS
  return {"stride": candidate.stride, "eta": candidate.eta,
          "start_solver": candidate.family if ggdm_solver else None}


START_RULE = ("each fixed sampler the family represents (start_candidates) is scored on the "
              "validation split (ValidationScore, before any DDSS step); the lowest select_on "
              "value wins, the first in STRIDES order (then DDIM, DDPM, DPM-Solver++(2M), "
              "UniPC) on a tie; select_noise_free leaves out the candidates that draw noise "
              "(DDPM)")


def select_start(sampler: samplers.Sampler, problem: Problem, score: ValidationScore,
                 workdir: str | None, *, noise_free: bool = False) -> samplers.Sampler:
  """`sampler` starting from the best of start_candidates on the validation split (START_RULE).

  The choice and every candidate's scores go to workdir/start.json; a rerun in the same workdir
  reads the choice back instead of scoring again (so a resumed run keeps its start).
  """
  path = None if workdir is None else os.path.join(workdir, "start.json")
  if path is not None and os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      chosen = json.load(f)["chosen"]
    logging.info("start: %s (read back from %s)", chosen, path)
    # start.json files written before the solver starts have no start_solver: DDIM(eta).
    return dataclasses.replace(sampler, stride=chosen["stride"], eta=chosen["eta"],
                               start_solver=chosen.get("start_solver"))
  rows = []
  for candidate in start_candidates(sampler, noise_free=noise_free):
    values = score(candidate, candidate.init())
    rows.append({"family": candidate.family, **_start_of(sampler, candidate), **values})
    logging.info("start candidate %s, %s stride: validation KID %.5f, FID %.4f",
                 candidate.family, candidate.stride, values["kid"], values["fid"])
  best = min(rows, key=lambda row: row[score.select_on])  # min keeps the first of equals
  chosen = {key: best[key] for key in ("stride", "eta", "start_solver")}
  if path is not None and jax.process_index() == 0:
    files.write_json(path, {"family": sampler.family, "num_steps": sampler.num_steps,
                            "rule": START_RULE, "noise_free": noise_free,
                            "select_on": score.select_on,
                            "candidates": rows, "chosen": chosen})
  logging.info("start: %s %s stride (eta %g), the best validation %s", best["family"],
               best["stride"], best["eta"], score.select_on)
  return dataclasses.replace(sampler, **chosen)


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

  def __call__(self, step: int, state: train_lib.TrainState) -> dict[str, float]:
    average = train_lib.averaged_params(state.opt_state)
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


def evaluate_samplers(roles: dict[str, tuple[samplers.Sampler, Any]], problem: Problem, *,
                      evaluation: EvalConfig | None = None, workdir: str | None = None,
                      mesh: Mesh | None = None) -> dict[str, dict[str, Any]]:
  """Held-out metrics of each {role: (sampler, params)} and of real training data ("data"),
  streamed over evaluation.num_samples fresh samples (the same noise for every sampler). With a
  workdir, also samples_<role>.png and samples.png (all side by side)."""
  cfg = evaluation or EvalConfig()
  if problem.evaluate is None and problem.evaluator_factory is None:
    raise ValueError(f"problem {problem.name!r} has no held-out evaluation: pass eval_data to "
                     "make_problem")
  return evaluate.evaluate_samplers(roles, problem, cfg, workdir, mesh)
