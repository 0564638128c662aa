"""learn_sampler: DDSS of a problem's frozen model, and the LearnedSampler it returns."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable

import jax
from absl import logging
from clu import parameter_overview
from jax.sharding import Mesh

from ddss_jax import samplers
from ddss_jax.learn import kid_loss, loop, teacher
from ddss_jax.learn.select import select_start
from ddss_jax.learn.validation import Validation, ValidationScore
from ddss_jax.problems.base import Problem, place
from ddss_jax.samplers.sampler_json import ModelInfo
from ddss_jax.settings import LossConfig, SamplerConfig, TrainConfig, check_learnable
from ddss_jax.util import logs, parallel
from ddss_jax.util.errors import ConfigError


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
             x_T: jax.Array | None = None, cond: Any = None) -> jax.Array:
    """[B, ...] samples: K calls of eps_fn(x [B, ...], t [B]) -> eps [B, ...] (with cond, of
    eps_fn(x, t, cond), or a guided sampler's eps_fn(x, t, cond, w): Sampler.sample)."""
    return self.sampler.sample(self.params, eps_fn, key, shape, x_T=x_T, cond=cond)

  def save(self, path: str) -> None:
    """sampler.json as the command line writes it, naming the model it was learned for (reload
    with ddss_jax.samplers.load; run it outside JAX: docs/deploy.md)."""
    samplers.save(path, self.sampler, self.params, model=self.model_info)

def _print_progress(step: int, total: int, rate: float) -> None:
  _print_line(f"DDSS step {step}/{total}: {rate:.2f} steps/s, about "
              f"{logs.minutes_left(step, total, rate):.1f} min left")


def _print_line(line: str) -> None:
  print(line, file=sys.stderr, flush=True)

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
                            clip_x0=cfg.clip_x0, start_solver=cfg.start_solver,
                            guidance=cfg.guidance_of())
  check_learnable(sampler.family, train.num_train_steps)
  note_clipping(problem, sampler)
  mesh = mesh or parallel.make_mesh()
  parallel.check_batch(train.batch_size, mesh, "train.batch_size")
  teacher_sampler = teacher.make(loss, problem.schedule, clip_x0=sampler.clip_x0)
  pool_dir = loss.teacher_dir or workdir
  if teacher_sampler is not None and pool_dir is None:
    raise ConfigError("loss.teacher_dir", None, "the teacher loss caches its pool in a folder: "
                      "pass workdir or loss.teacher_dir")
  if progress is True:
    logs.quiet_library_logs()
  report = {True: _print_progress, False: loop.log_progress}.get(progress, progress)
  own_writer = writer is None
  if workdir is not None:
    os.makedirs(workdir, exist_ok=True)
  writer = writer or logs.MetricWriter(workdir)

  validation_split = validation_cond = None
  if train.validate_every_steps > 0 or select:
    if problem.split_validation is None:
      field, value, remedy = (("train.validate_every_steps", train.validate_every_steps,
                               "set it to 0") if train.validate_every_steps > 0 else
                              ("sampler.start", select, "use 'configured'"))
      raise ConfigError(field, value, f"problem {problem.name!r} cannot carve a validation "
                        f"split from its training data (data given as an iterator?); {remedy}")
    try:
      real_batch, validation_split = problem.split_validation(train.validation_size)
    except ValueError as e:  # more than the training data holds
      raise ConfigError("train.validation_size", train.validation_size, str(e)) from e
    problem = dataclasses.replace(problem, real_batch=real_batch)
    if problem.conditioning is not None:
      real_cond, validation_cond = problem.conditioning.validation(train.validation_size)
      problem = dataclasses.replace(problem, conditioning=dataclasses.replace(
          problem.conditioning, real=real_cond))
  problem = place(problem, mesh)
  score = None if validation_split is None else ValidationScore(
      problem, validation_split, train, validation_cond=validation_cond)
  if select:
    sampler = select_start(sampler, problem, score, workdir,
                           noise_free=select == "select_noise_free")
  optimizer = loop.create_optimizer(train)
  initial_params = sampler.init()
  state = jax.device_put(loop.create_train_state(initial_params, optimizer),
                         parallel.replicated(mesh))
  logging.info("sampler %s, K=%d, %s stride, %s loss; parameters:\n%s", sampler.family,
               sampler.num_steps, sampler.stride, loss.name,
               parameter_overview.get_parameter_overview(initial_params))
  loss_fn, batch_fn, reference = _loss_inputs(problem, sampler, teacher_sampler, train, loss,
                                              pool_dir, pool_batch_size, mesh)
  train_step = loop.make_train_step(sampler, problem, optimizer, train.batch_size, mesh,
                                    loss_fn=loss_fn, loss_name=loss.name)
  validation = (None if train.validate_every_steps == 0
                else Validation(sampler, score, workdir, problem.model_info))
  state = loop.run_training(state, train_step, problem, train, workdir, writer, mesh,
                            batch_fn=batch_fn, reference=reference, progress=report,
                            validate=validation,
                            say=_print_line if progress is True else logging.info)
  history = writer.lines()
  if own_writer:
    writer.close()
  average = loop.averaged_params(state.opt_state)
  params = state.params if average is None else average
  if validation is not None and validation.best_params is not None:
    params = validation.best_params
  return LearnedSampler(sampler, params, int(state.step), history, last_params=state.params,
                        best_step=None if validation is None else validation.best_step,
                        model_info=problem.model_info)


def note_clipping(problem: Problem, sampler: samplers.Sampler) -> None:
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
  if teacher_sampler is not None and problem.conditioning is not None:
    raise ConfigError("loss.name", loss.name, f"problem {problem.name!r} is conditional; the "
                      "teacher loss takes unconditional problems only: use 'kid'")
  if teacher_sampler is not None:
    pool = teacher.load_or_draw_pool(loss, teacher_sampler, problem, pool_dir,
                                     seed=train.seed + 1,
                                     batch_size=pool_batch_size or train.batch_size)
    return (teacher.make_loss_fn(sampler, problem, loss.teacher_space, mesh),
            teacher.batch_fn(pool), None)
  reference = None
  if loss.kid_bank_size:
    try:
      reference = kid_loss.make_reference(problem, problem.feature_params,
                                          size=loss.kid_bank_size, seed=train.seed + 3,
                                          mesh=mesh, conditional=loss.conditional)
    except ValueError as e:  # more than the training data holds
      raise ConfigError("loss.kid_bank_size", loss.kid_bank_size, str(e)) from e
    reference = jax.device_put(reference, parallel.replicated(mesh))
  loss_fn = None if problem.conditioning is None else kid_loss.make_loss_fn(
      sampler, problem, train.batch_size, mesh, conditional=loss.conditional)
  return loss_fn, kid_loss.conditioned_batch_fn(problem), reference
