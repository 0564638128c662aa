"""Differentiable Diffusion Sampler Search: learn a K-step sampler by minimising KID.

One optimisation step draws a batch from the sampler (K frozen-model calls), maps it and a batch
of real examples through the feature network, and takes an optax step on the sampler parameters
along the gradient of KID(generated, real). Nothing else is trained. config.loss.name = "teacher"
replaces KID by the distance to a long sampler's output from the same noise (ddss_jax.teacher).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from clu import parameter_overview
from jax.sharding import Mesh

from ddss_jax import (evaluate, logs, metrics, parallel, pretrained, problems, samplers, schedules,
                      teacher, validation)
from ddss_jax.config_groups import (BaselineConfig, EvalConfig, LossConfig, MissingInputs,
                                    MNISTConfig, PretrainedConfig, SamplerConfig, TrainConfig, Toy2DConfig,
                                    from_group)


@flax.struct.dataclass
class TrainState:
  step: jax.Array        # [] int32
  params: Any            # the sampler's parameters
  opt_state: optax.OptState


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
  """The learning rate at each step (constant; logged as train/learning_rate)."""
  return optax.constant_schedule(cfg.learning_rate)


def create_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  """Adam with global-norm gradient clipping (clip <= 0 disables it). With cfg.nonfinite "skip",
  wrapped in optax.apply_if_finite: an update whose gradients hold a NaN or Inf is not applied
  (run_training stops after cfg.max_consecutive_skips of them in a row)."""
  adam = optax.adam(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2)
  if cfg.grad_clip > 0:
    adam = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adam)
  if cfg.nonfinite == "skip":
    return optax.apply_if_finite(adam, max_consecutive_errors=cfg.max_consecutive_skips)
  return adam


def create_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
  # A copy, so that the donating train step never deletes the caller's arrays.
  params = jax.tree.map(jnp.copy, params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def make_loss_fn(sampler: samplers.Sampler, problem: problems.Problem, batch_size: int,
                 mesh: Mesh | None = None):
  """loss(sampler_params, model_params, feature_params, real [M, ...], key) -> KID scalar.

  With a mesh, every eps-model input and the generated batch are constrained to be split along
  the batch over its devices; the KID of the global batch is unchanged.
  """
  def loss_fn(sampler_params, model_params, feature_params, real, key):
    generated = evaluate.generate(sampler, problem, sampler_params, model_params, key,
                                  batch_size, mesh)
    feats = problem.feature_apply(feature_params, generated)
    real_feats = jax.lax.stop_gradient(problem.feature_apply(feature_params, real))
    return metrics.kid(feats, real_feats)

  return loss_fn


def make_train_step(sampler: samplers.Sampler, problem: problems.Problem,
                    optimizer: optax.GradientTransformation, batch_size: int,
                    mesh: Mesh | None = None, *, loss_fn: Callable | None = None,
                    loss_name: str = "kid") -> Callable:
  """Returns jitted step(state, model_params, feature_params, real, base_key) -> (state, metrics).

  The step's key is fold_in(base_key, state.step), so a resumed run draws the same noise. With a
  mesh (ddss_jax.parallel), `real` (an array or a pytree of them, the loss's batch) is split
  along the batch over its devices and everything else is replicated; the result equals the
  single-device step. loss_fn: default the KID loss (make_loss_fn); its value is logged as
  train/<loss_name>.
  """
  loss_fn = loss_fn or make_loss_fn(sampler, problem, batch_size, mesh)

  def train_step(state: TrainState, model_params, feature_params, real, base_key):
    key = jax.random.fold_in(base_key, state.step)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, model_params, feature_params, real,
                                              key)
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
  return jax.jit(train_step, donate_argnums=(0,), in_shardings=(rep, rep, rep, batch, rep),
                 out_shardings=(rep, rep))


def missing_inputs(config: ml_collections.ConfigDict) -> list[str]:
  """What the configured problem needs and cannot find (weights, data), each with the remedy."""
  if config.problem == "pretrained":
    return pretrained.missing_inputs(
        from_group(PretrainedConfig, config.pretrained, "pretrained"))
  if config.problem == "mnist":
    mnist_cfg = from_group(MNISTConfig, config.mnist, "mnist")
    return [f"config.mnist.{name}: {path} does not exist"
            for name, path in (("unet_weights", mnist_cfg.unet_weights),
                               ("classifier_weights", mnist_cfg.classifier_weights))
            if path is not None and not os.path.exists(path)]
  return []


def build_problem(config: ml_collections.ConfigDict, schedule: schedules.Schedule,
                  workdir: str, mesh: Mesh | None = None) -> problems.Problem:
  problems.check_name(config.problem)
  if config.problem == "pretrained":
    return pretrained.build_pretrained(
        from_group(PretrainedConfig, config.pretrained, "pretrained"), schedule,
        seed=config.train.seed, mesh=mesh)
  if config.problem == "mnist":
    return problems.build_mnist(from_group(MNISTConfig, config.mnist, "mnist"), schedule,
                                seed=config.train.seed)
  return problems.build_toy2d(from_group(Toy2DConfig, config.toy2d, "toy2d"), schedule, workdir,
                              seed=config.train.seed)


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a validated config gives: the samplers, the schedule, the typed groups, the workdir."""
  sampler: samplers.Sampler
  baseline: samplers.Sampler
  teacher: samplers.Sampler | None  # the loss's teacher (config.loss.name = "teacher")
  schedule: schedules.Schedule
  loss_cfg: LossConfig
  train_cfg: TrainConfig
  eval_cfg: EvalConfig
  workdir: str
  mesh: Mesh  # all devices of all processes; batches split along it


def setup(config: ml_collections.ConfigDict, workdir: str, *,
          allow_config_change: bool = False) -> Setup:
  """Checks everything a config can get wrong, and every file it needs, before anything compiles.

  Raises ConfigError (a ValueError) for a bad value, naming the field, the value and what is
  valid (ddss_jax.validation), or for a workdir that holds a run of an incompatible config
  (unless allow_config_change); FileNotFoundError, with one message listing every missing file
  or dataset and how to provide it. Records the config in workdir/config.json.
  """
  validation.validate(config)
  sampler_cfg = from_group(SamplerConfig, config.sampler, "sampler")
  baseline_cfg = from_group(BaselineConfig, config.baseline, "baseline")
  train_cfg = from_group(TrainConfig, config.train, "train")
  eval_cfg = from_group(EvalConfig, config.eval, "eval")
  loss_cfg = from_group(LossConfig, config.loss, "loss")
  problems.check_name(config.problem)
  schedule = schedules.make(config.schedule.name, config.schedule.num_timesteps)
  teacher_sampler = teacher.make(loss_cfg, schedule)
  sampler = samplers.make(sampler_cfg.family, schedule, sampler_cfg.num_steps,
                          stride=sampler_cfg.stride, eta=sampler_cfg.eta,
                          gradient=sampler_cfg.gradient, unroll=sampler_cfg.unroll,
                          canonical_convs=sampler_cfg.canonical_convs)
  # "ddpm" is DDIM with eta = 1 by definition; the config's eta applies to "ddim" only.
  baseline = samplers.make(baseline_cfg.family, schedule, sampler_cfg.num_steps,
                           stride=sampler_cfg.stride,
                           eta=None if baseline_cfg.family == "ddpm" else baseline_cfg.eta)
  # The training split is needed even without DDSS steps: the results' "data" row reads it.
  missing = missing_inputs(config)
  if missing:
    raise MissingInputs("problem", config.problem, missing)
  mesh = parallel.make_mesh()
  parallel.check_batch(train_cfg.batch_size, mesh, "train.batch_size")
  validation.check_workdir(config, workdir, allow_change=allow_config_change)
  return Setup(sampler, baseline, teacher_sampler, schedule, loss_cfg, train_cfg, eval_cfg,
               os.path.abspath(workdir), mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False) -> dict[str, Any]:
  """Runs DDSS as configured, evaluates it against the baseline at the same K, writes results.

  Writes to workdir: config.json (the config it ran; a rerun must be compatible, see `setup`),
  checkpoints/ (orbax, resumed from automatically), metrics.jsonl (and tensorboard/ where
  TensorFlow is installed), sampler.json (the learned sampler), results.json ({"baseline":
  {...}, "learned": {...}, ...}), samples_<role>.png and samples.png. Returns the results dict.
  """
  run = setup(config, workdir, allow_config_change=allow_config_change)
  writer = logs.MetricWriter(run.workdir)
  problem, state = optimise(run, config, writer)
  sampler, schedule, eval_cfg = run.sampler, run.schedule, run.eval_cfg

  roles = {"baseline": (run.baseline, run.baseline.init()), "learned": (sampler, state.params)}
  if eval_cfg.reference_steps > 0:  # the frozen model's own quality, for context
    roles["reference"] = (samplers.make("ddpm", schedule, eval_cfg.reference_steps,
                                        stride="linear"), {})
  results = {"problem": problem.name, "loss": run.loss_cfg.name, "train_steps": int(state.step),
             **evaluate.evaluate_samplers(roles, problem, eval_cfg, run.workdir, run.mesh)}
  # An evaluation of this state that a kill interrupted, or a rerun of a finished run, leaves
  # one line of eval metrics, not two.
  writer.keep(lambda line: line["step"] != int(state.step) or not any(
      key.startswith("eval/") for key in line))
  evaluate.write_eval_metrics(writer, int(state.step), results)
  writer.close()
  if jax.process_index() == 0:
    samplers.save(os.path.join(run.workdir, "sampler.json"), sampler, state.params)
    logs.write_json(os.path.join(run.workdir, "results.json"), results)
    print(format_table(results))
  return results


def optimise(run: Setup, config: ml_collections.ConfigDict,
             writer: logs.MetricWriter) -> tuple[problems.Problem, TrainState]:
  """Builds the problem and runs DDSS as `run` (from `setup`) says; returns the problem (its
  frozen weights on every device) and the final state (resumed from checkpoints if present)."""
  sampler, train_cfg = run.sampler, run.train_cfg
  os.makedirs(run.workdir, exist_ok=True)
  problem = build_problem(config, run.schedule, run.workdir, run.mesh)
  replicated = parallel.replicated(run.mesh)
  problem = dataclasses.replace(  # the frozen weights go to every device once
      problem, model_params=jax.device_put(problem.model_params, replicated),
      feature_params=jax.device_put(problem.feature_params, replicated))
  optimizer = create_optimizer(train_cfg)
  initial_params = sampler.init()
  state = jax.device_put(create_train_state(initial_params, optimizer), replicated)
  logging.info("sampler %s, K=%d, %s stride, %s loss; parameters:\n%s", sampler.family,
               sampler.num_steps, sampler.stride, run.loss_cfg.name,
               parameter_overview.get_parameter_overview(initial_params))
  loss_fn, batch_fn = None, problem.real_batch
  if run.teacher is not None and train_cfg.num_train_steps > 0:
    pool = teacher.load_or_draw_pool(
        run.loss_cfg, run.teacher, problem, run.loss_cfg.teacher_dir or run.workdir,
        seed=train_cfg.seed + 1, batch_size=run.eval_cfg.batch_size)
    loss_fn = teacher.make_loss_fn(sampler, problem, run.loss_cfg.teacher_space, run.mesh)
    batch_fn = teacher.batch_fn(pool)
  train_step = make_train_step(sampler, problem, optimizer, train_cfg.batch_size, run.mesh,
                               loss_fn=loss_fn, loss_name=run.loss_cfg.name)
  state = run_training(state, train_step, problem, train_cfg, run.workdir, writer, run.mesh,
                       batch_fn=batch_fn)
  return problem, state


def run_training(state: TrainState, train_step: Callable, problem: problems.Problem,
                 cfg: TrainConfig, workdir: str, writer: logs.MetricWriter,
                 mesh: Mesh | None = None, *, batch_fn: Callable | None = None) -> TrainState:
  """Runs train_step up to cfg.num_train_steps, resuming from workdir/checkpoints if present.

  Batches (batch_fn(key, batch_size[, rows]), default the problem's real examples) and step keys
  derive from (cfg.seed, step), so a resumed run repeats exactly what the uninterrupted run would
  have done, and metrics.jsonl loses the lines of steps after the checkpoint it resumes from (a
  killed run logs each step once). With a mesh, each process passes its rows of the batch and
  they are assembled into one batch split over the mesh. A NaN or Inf in the loss or gradients
  raises FloatingPointError naming the step and the quantity (cfg.nonfinite "stop"; the last
  checkpoint written is the last good state), or skips the update (cfg.nonfinite "skip") and
  raises after cfg.max_consecutive_skips in a row.
  """
  batch_fn = batch_fn or problem.real_batch
  directory = os.path.join(workdir, "checkpoints")
  manager, state = restore_checkpoint(directory, state)
  writer.keep(lambda line: line["step"] <= int(state.step))
  base_key, data_key = jax.random.split(jax.random.PRNGKey(cfg.seed))
  learning_rate = learning_rate_schedule(cfg)
  first_step, start = int(state.step), time.perf_counter()
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
                                     base_key)
    step_metrics = {k: float(v) for k, v in step_metrics.items()}
    step_metrics["train/learning_rate"] = float(learning_rate(step))
    done = step + 1
    check_finite(step_metrics, done, cfg, manager, directory)
    if done % cfg.log_every_steps == 0 or done == cfg.num_train_steps:
      rate = (done - first_step) / (time.perf_counter() - start)
      step_metrics["train/steps_per_sec"] = rate
      writer.write(done, step_metrics)
      logging.info("DDSS step %d/%d, about %.1f min left", done, cfg.num_train_steps,
                   (cfg.num_train_steps - done) / rate / 60)
    if done % cfg.checkpoint_every_steps == 0 or done == cfg.num_train_steps:
      manager.save(done, args=ocp.args.StandardSave(state))
  manager.wait_until_finished()
  return state


def check_finite(step_metrics: dict[str, float], step: int, cfg: TrainConfig,
                 manager: ocp.CheckpointManager, directory: str) -> None:
  """FloatingPointError for a non-finite loss or gradient at DDSS step `step` (1-based, as
  logged), or, with cfg.nonfinite "skip", for too many skipped updates in a row."""
  bad = {k: v for k, v in step_metrics.items() if not np.isfinite(v)}
  skipped = int(step_metrics.get("train/skipped_in_a_row", 0))
  if bad and skipped:
    logging.warning("DDSS step %d: non-finite %s; the update was skipped (%d in a row)", step,
                    bad, skipped)
  if (bad and cfg.nonfinite == "stop") or skipped >= cfg.max_consecutive_skips:
    manager.wait_until_finished()
    what = (f"non-finite {', '.join(f'{k}={v}' for k, v in bad.items())}" if bad and
            cfg.nonfinite == "stop" else f"{skipped} non-finite updates skipped in a row")
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


def row_label(role: str, entry: dict[str, Any]) -> str:
  """"learned: ggdm+pred+time K=5" for a sampler's results entry, the role alone for data."""
  return f"{role}: {entry['family']} K={entry['num_steps']}" if "family" in entry else role


def format_table(results: dict[str, Any]) -> str:
  """A Markdown table: one row per evaluated sampler (and the data), one column per metric."""
  rows = {role: entry for role, entry in results.items()
          if isinstance(entry, dict) and role in ("baseline", "learned", "reference", "data")}
  names = list(rows["data"])
  lines = ["| sampler | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
  lines += [f"| {row_label(role, e)} | " + " | ".join(f"{e[n]:.5g}" for n in names) + " |"
            for role, e in rows.items()]
  return "\n".join(lines)
