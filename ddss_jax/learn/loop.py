"""Differentiable Diffusion Sampler Search: the optimisation of a K-step sampler's parameters.

One optimisation step draws a batch from the sampler (K frozen-model calls), maps it and a batch
of real examples through the feature network, and takes an optax step on the sampler parameters
along the gradient of KID(generated, real). Nothing else is trained. This module holds the
state, the step, the loop and its checkpoints; ddss_jax.learn.ddss puts them together (with
the loss of ddss_jax.learn.kid_loss or ddss_jax.learn.teacher).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Mesh

from ddss_jax import samplers
from ddss_jax.learn import kid_loss
from ddss_jax.problems.base import Problem
from ddss_jax.settings import TrainConfig
from ddss_jax.util import logs, parallel


@flax.struct.dataclass
class TrainState:
  step: jax.Array        # [] int32
  params: Any            # the sampler's parameters
  opt_state: optax.OptState


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
  """The learning rate at each update (logged as train/learning_rate): a linear warm-up over
  cfg.warmup_steps, then constant or a cosine down to 0 at the last update."""
  updates = max(cfg.num_train_steps // cfg.accumulate_steps, 1)
  if cfg.lr_schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, warmup_steps=cfg.warmup_steps,
        decay_steps=max(updates, cfg.warmup_steps + 1), end_value=0.0)
  if cfg.warmup_steps:
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps),
                                 optax.constant_schedule(cfg.learning_rate)],
                                [cfg.warmup_steps])
  return optax.constant_schedule(cfg.learning_rate)


class ParameterAverageState(NamedTuple):
  inner_state: optax.OptState
  average: Any  # the moving average of the parameters after each update


def parameter_average(inner: optax.GradientTransformation,
                      decay: float) -> optax.GradientTransformation:
  """`inner`, also keeping an exponential moving average of the parameters it produces (started
  at the initial parameters): average <- decay average + (1 - decay) (params + updates)."""
  def init(params):
    return ParameterAverageState(inner.init(params), jax.tree.map(jnp.copy, params))

  def update(updates, state, params=None):
    updates, inner_state = inner.update(updates, state.inner_state, params)
    average = jax.tree.map(lambda a, p, u: decay * a + (1.0 - decay) * (p + u), state.average,
                           params, updates)
    return updates, ParameterAverageState(inner_state, average)

  return optax.GradientTransformation(init, update)


def averaged_params(opt_state: optax.OptState) -> Any | None:
  """The moving average parameter_average keeps inside opt_state, or None without one."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(
      s, ParameterAverageState)) if isinstance(s, ParameterAverageState)]
  return found[0].average if found else None


def create_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  """Adam with global-norm gradient clipping (clip <= 0 disables it) on the learning-rate
  schedule, the steps of the time logits and of learned guidance weights scaled by
  cfg.time_lr_scale and cfg.guidance_lr_scale; with cfg.ema_decay > 0, a
  moving average of the parameters (parameter_average);
  with cfg.accumulate_steps > 1, gradients averaged over that many batches per update
  (optax.MultiSteps). With cfg.nonfinite "skip", wrapped in optax.apply_if_finite: an update
  whose gradients hold a NaN or Inf is not applied (run_training stops after
  cfg.max_consecutive_skips of them in a row)."""
  optimizer = optax.adam(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2)
  # Adam's step does not depend on the gradient's scale, so scaling a group's steps scales
  # its learning rate.
  for name, scale in (("time_logits", cfg.time_lr_scale), ("guidance", cfg.guidance_lr_scale)):
    if scale != 1.0:
      optimizer = optax.chain(optimizer, optax.masked(
          optax.scale(scale), lambda params, name=name: {k: k == name for k in params}))
  if cfg.grad_clip > 0:
    optimizer = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optimizer)
  if cfg.ema_decay > 0:
    optimizer = parameter_average(optimizer, cfg.ema_decay)
  if cfg.accumulate_steps > 1:
    optimizer = optax.MultiSteps(optimizer, every_k_schedule=cfg.accumulate_steps
                                 ).gradient_transformation()
  if cfg.nonfinite == "skip":
    return optax.apply_if_finite(optimizer, max_consecutive_errors=cfg.max_consecutive_skips)
  return optimizer


def create_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
  # A copy, so that the donating train step never deletes the caller's arrays.
  params = jax.tree.map(jnp.copy, params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def make_train_step(sampler: samplers.Sampler, problem: Problem,
                    optimizer: optax.GradientTransformation, batch_size: int,
                    mesh: Mesh | None = None, *, loss_fn: Callable | None = None,
                    loss_name: str = "kid") -> Callable:
  """Returns jitted step(state, model_params, feature_params, real, base_key, reference=None)
  -> (state, metrics).

  The step's key is fold_in(base_key, state.step), so a resumed run draws the same noise. With a
  mesh (ddss_jax.util.parallel), `real` (an array or a pytree of them, the loss's batch) is split
  along the batch over its devices and everything else (the loss's fixed `reference` too) is
  replicated; the result equals the single-device step. loss_fn: default the KID loss
  (kid_loss.make_loss_fn); its value is logged as train/<loss_name>.
  """
  loss_fn = loss_fn or kid_loss.make_loss_fn(sampler, problem, batch_size, mesh)

  def train_step(state: TrainState, model_params, feature_params, real, base_key,
                 reference=None):
    key = jax.random.fold_in(base_key, state.step)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, model_params, feature_params, real,
                                              key, reference)
    step_metrics = {f"train/{loss_name}": loss, "train/grad_norm": optax.tree.norm(grads)}
    if isinstance(state.opt_state, optax.ApplyIfFiniteState):
      # A non-finite loss makes the update non-finite too, so that it is skipped as well.
      grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(loss), g, jnp.nan), grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if isinstance(opt_state, optax.ApplyIfFiniteState):
      step_metrics["train/skipped_updates"] = opt_state.total_notfinite
      step_metrics["train/skipped_in_a_row"] = opt_state.notfinite_count
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), step_metrics

  if mesh is None:
    return jax.jit(train_step, donate_argnums=(0,))
  rep, batch = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  jitted = jax.jit(train_step, donate_argnums=(0,), in_shardings=(rep, rep, rep, batch, rep, rep),
                   out_shardings=(rep, rep))
  # jit with in_shardings takes every argument positionally, the optional reference too.
  return lambda state, model_params, feature_params, real, base_key, reference=None: jitted(
      state, model_params, feature_params, real, base_key, reference)


def log_progress(step: int, total: int, rate: float) -> None:
  """The default progress report of run_training: one absl INFO line."""
  logging.info("DDSS step %d/%d: %.2f steps/s, about %.1f min left", step, total, rate,
               logs.minutes_left(step, total, rate))


def run_training(state: TrainState, train_step: Callable, problem: Problem,
                 cfg: TrainConfig, workdir: str | None, writer: logs.MetricWriter,
                 mesh: Mesh | None = None, *, batch_fn: Callable | None = None,
                 reference: Any = None,
                 progress: Callable[[int, int, float], None] = log_progress,
                 validate: Callable[[int, TrainState], dict[str, float]] | None = None,
                 say: Callable[[str], None] = logging.info) -> TrainState:
  """Runs train_step up to cfg.num_train_steps, resuming from workdir/checkpoints if present
  (workdir None: no checkpoints).

  Batches (batch_fn(key, batch_size[, rows]), default the problem's real examples) and step keys
  derive from (cfg.seed, step), so a resumed run repeats exactly what the uninterrupted run would
  have done, and metrics.jsonl loses the lines of steps after the checkpoint it resumes from (a
  killed run logs each step once). With a mesh, each process passes its rows of the batch and
  they are assembled into one batch split over the mesh. A NaN or Inf in the loss or gradients
  raises FloatingPointError naming the step and the quantity (cfg.nonfinite "stop"; the last
  checkpoint written is the last good state), or skips the update (cfg.nonfinite "skip") and
  raises after cfg.max_consecutive_skips in a row. Every logged step calls progress(step,
  cfg.num_train_steps, steps per second), the speed leaving out the first step, which compiles;
  say(line) announces that compilation and how long it took. Before the first step (a run that
  starts at step 0), every cfg.validate_every_steps steps and after the last, validate(step,
  state) gives metric lines of their own.
  """
  batch_fn = batch_fn or problem.real_batch
  directory = manager = None
  if workdir is not None:
    directory = os.path.join(workdir, "checkpoints")
    manager, state = restore_checkpoint(directory, state)
  writer.keep(lambda line: line["step"] <= int(state.step))
  base_key, data_key = jax.random.split(jax.random.PRNGKey(cfg.seed))
  learning_rate = learning_rate_schedule(cfg)
  clock = logs.StepClock(int(state.step))
  if validate is not None and clock.first_step == 0:
    # The start is a candidate too: the parameters kept are never worse on validation than it.
    writer.write(0, validate(0, state))
  if clock.first_step < cfg.num_train_steps:
    say(f"DDSS step {clock.first_step + 1}/{cfg.num_train_steps}: compiling the training step "
        "(sampler and its gradient); the first step includes it")
  while int(state.step) < cfg.num_train_steps:
    step = int(state.step)
    if mesh is None:
      real = batch_fn(jax.random.fold_in(data_key, step), cfg.batch_size)
    else:  # this process reads its rows only; they join the other processes' on the mesh
      rows = batch_fn(jax.random.fold_in(data_key, step), cfg.batch_size,
                      parallel.process_rows(cfg.batch_size))
      real = jax.tree.map(lambda r: parallel.shard_batch(np.asarray(r), mesh, cfg.batch_size),
                          rows)
    state, step_metrics = train_step(state, problem.model_params, problem.feature_params, real,
                                     base_key, reference)
    step_metrics = {k: float(v) for k, v in step_metrics.items()}  # waits for the step
    done = step + 1
    if done == clock.first_step + 1:
      say(f"DDSS step {done}/{cfg.num_train_steps}: compiled and ran in {clock.first_done():.1f}"
          " s; the time left leaves compilation out")
    step_metrics["train/learning_rate"] = float(learning_rate(step // cfg.accumulate_steps))
    check_finite(step_metrics, done, cfg, manager, directory)
    if done % cfg.log_every_steps == 0 or done == cfg.num_train_steps:
      rate = clock.rate(done)
      step_metrics["train/steps_per_sec"] = rate
      writer.write(done, step_metrics)
      progress(done, cfg.num_train_steps, rate)
    if validate is not None and (done % cfg.validate_every_steps == 0
                                 or done == cfg.num_train_steps):
      writer.write(done, validate(done, state))
    if manager is not None and (done % cfg.checkpoint_every_steps == 0
                                or done == cfg.num_train_steps):
      manager.save(done, args=ocp.args.StandardSave(state))
  if manager is not None:
    manager.wait_until_finished()
  return state


def check_finite(step_metrics: dict[str, float], step: int, cfg: TrainConfig,
                 manager: ocp.CheckpointManager | None, directory: str | None) -> None:
  """FloatingPointError for a non-finite loss or gradient at DDSS step `step` (1-based, as
  logged), or, with cfg.nonfinite "skip", for too many skipped updates in a row. manager None:
  the run keeps no checkpoints."""
  bad = {k: v for k, v in step_metrics.items() if not np.isfinite(v)}
  skipped = int(step_metrics.get("train/skipped_in_a_row", 0))
  if bad and skipped:
    logging.warning("DDSS step %d: non-finite %s; the update was skipped (%d in a row)", step,
                    bad, skipped)
  if (bad and cfg.nonfinite == "stop") or skipped >= cfg.max_consecutive_skips:
    what = (f"non-finite {', '.join(f'{k}={v}' for k, v in bad.items())}" if bad and
            cfg.nonfinite == "stop" else f"{skipped} non-finite updates skipped in a row")
    last = None
    if manager is not None:
      manager.wait_until_finished()
      last = manager.latest_step()
    kept = (f"its last good state is the checkpoint of step {last} in {directory}, which a rerun "
            "resumes from" if last is not None else "no checkpoint was written yet")
    raise FloatingPointError(
        f"DDSS step {step}: {what}. The run stopped; {kept}. A lower train.learning_rate or "
        "train.grad_clip may help; train.nonfinite='skip' skips such updates instead.")


def _open_checkpoints(directory: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      max_to_keep=2, create=True, cleanup_tmp_directories=True))


def restore_checkpoint(directory: str, state: TrainState
                       ) -> tuple[ocp.CheckpointManager, TrainState]:
  """(manager, the newest checkpoint's state, or `state` where there is none).

  orbax writes each checkpoint into a temporary folder and renames it when complete, so a kill
  mid-write leaves no partial step (its leftovers are cleaned up). A step that does not read
  back (truncated or corrupt files) is moved to checkpoints_unreadable/ with a warning and the
  one before it is used; if none reads, nothing is moved and the first error is raised.
  """
  manager = _open_checkpoints(directory)
  failures = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(state))
    except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
      logging.warning("checkpoint %d in %s does not read back (%s: %s)", step, directory,
                      type(e).__name__, str(e)[:500])
      failures.append((step, e))
      continue
    if failures and jax.process_index() == 0:
      aside = os.path.join(os.path.dirname(directory), "checkpoints_unreadable")
      os.makedirs(aside, exist_ok=True)
      for bad, _ in failures:
        target = os.path.join(aside, f"{bad}.{int(time.time())}")
        os.replace(os.path.join(directory, str(bad)), target)
        logging.warning("moved unreadable checkpoint %d to %s; resuming from step %d", bad,
                        target, step)
      manager.close()
      manager = _open_checkpoints(directory)
    logging.info("resumed from checkpoint at step %d", int(restored.step))
    return manager, restored
  if failures:
    step, error = failures[0]
    raise RuntimeError(f"no checkpoint in {directory} reads back (steps "
                       f"{[s for s, _ in failures]}); the newest, {step}, failed with: {error}. "
                       "If the config changed since they were written, use another --workdir."
                       ) from error
  return manager, state
