"""A run as a config describes it: the config turned into the API's arguments, DDSS then the
held-out evaluation against the baseline, the results table; and the re-evaluation of a run's
saved sampler. ddss_jax.main calls train_and_evaluate or evaluate_workdir.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
from absl import logging
from jax.sharding import Mesh

from ddss_jax import config as config_lib, problems, samplers
from ddss_jax.evaluation import held_out
from ddss_jax.learn import ddss, select
from ddss_jax.problems.base import Problem, place
from ddss_jax.samplers import schedules
from ddss_jax.settings import (
  BaselineConfig,
  EvalConfig,
  LossConfig,
  SamplerConfig,
  TrainConfig,
  from_group,
)
from ddss_jax.util import files, logs, parallel, plots
from ddss_jax.util.errors import ConfigError, MissingInputs


def problem_config(config: ml_collections.ConfigDict):
  """The typed group of the configured problem (config.<problem>)."""
  module = problems.get(config.problem)
  return from_group(module.Config, config[config.problem])


def missing_inputs(config: ml_collections.ConfigDict) -> list[str]:
  """What the configured problem needs and cannot find (weights, data), each with the remedy."""
  return problems.get(config.problem).missing_inputs(problem_config(config))


def build_problem(config: ml_collections.ConfigDict, schedule: schedules.Schedule,
                  workdir: str, mesh: Mesh | None = None) -> Problem:
  """The configured problem, its frozen weights on every device of the mesh."""
  module = problems.get(config.problem)
  problem = module.build(problem_config(config), schedule, workdir=workdir,
                         seed=config.train.seed, mesh=mesh)
  return problem if mesh is None else place(problem, mesh)


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a validated config gives: the samplers, the schedule, the typed groups, the workdir."""
  sampler: samplers.Sampler
  baseline: samplers.Sampler
  schedule: schedules.Schedule
  loss_cfg: LossConfig
  train_cfg: TrainConfig
  eval_cfg: EvalConfig
  workdir: str
  mesh: Mesh  # all devices of all processes; batches split along it
  sampler_cfg: SamplerConfig  # what `sampler` was made from; its start rule too


def setup(config: ml_collections.ConfigDict, workdir: str, *,
          allow_config_change: bool = False) -> Setup:
  """Checks everything a config can get wrong, and every file it needs, before anything compiles.

  Raises ConfigError (a ValueError) for a bad value, naming the field, the value and what is
  valid (ddss_jax.config), or for a workdir that holds a run of an incompatible config (unless
  allow_config_change); MissingInputs (a FileNotFoundError), with one message listing every
  missing file or dataset and how to provide it. Records the config in workdir/config.json.
  """
  config_lib.validate(config)
  sampler_cfg = from_group(SamplerConfig, config.sampler)
  baseline_cfg = from_group(BaselineConfig, config.baseline)
  schedule = schedules.make(config.schedule.name, config.schedule.num_timesteps)
  sampler = samplers.make(sampler_cfg.family, schedule, sampler_cfg.num_steps,
                          stride=sampler_cfg.stride, eta=sampler_cfg.eta,
                          gradient=sampler_cfg.gradient, unroll=sampler_cfg.unroll,
                          clip_x0=sampler_cfg.clip_x0, start_solver=sampler_cfg.start_solver,
                          guidance=sampler_cfg.guidance_of())
  # "ddpm" is DDIM with eta = 1 by definition; the config's eta applies to "ddim" only. The
  # baseline guides as the sampler does, its weights fixed at the sampler's initial ones.
  baseline = samplers.make(baseline_cfg.family, schedule, sampler_cfg.num_steps,
                           stride=sampler_cfg.stride,
                           eta=None if baseline_cfg.family == "ddpm" else baseline_cfg.eta,
                           clip_x0=sampler_cfg.clip_x0,
                           guidance=sampler_cfg.guidance_of(learn=False))
  # The training split is needed even without DDSS steps: the results' "data" row reads it.
  missing = missing_inputs(config)
  if missing:
    raise MissingInputs("problem", config.problem, missing)
  train_cfg = from_group(TrainConfig, config.train)
  mesh = parallel.make_mesh()
  parallel.check_batch(train_cfg.batch_size, mesh, "train.batch_size")
  config_lib.check_workdir(config, workdir, allow_change=allow_config_change)
  return Setup(sampler, baseline, schedule, from_group(LossConfig, config.loss), train_cfg,
               from_group(EvalConfig, config.eval), os.path.abspath(workdir), mesh, sampler_cfg)


def learn(run: Setup, problem: Problem, writer: logs.MetricWriter) -> ddss.LearnedSampler:
  """DDSS as `run` (from `setup`) says, checkpointed in its workdir (and resumed from it)."""
  # With a selected start learn_sampler makes the sampler itself, from the stride it chooses.
  sampler = run.sampler_cfg if run.sampler_cfg.selects_start else run.sampler
  return ddss.learn_sampler(problem, sampler=sampler, train=run.train_cfg, loss=run.loss_cfg,
                            workdir=run.workdir, mesh=run.mesh,
                            pool_batch_size=run.eval_cfg.batch_size, progress=False,
                            writer=writer)


def write_curves(learned: ddss.LearnedSampler, workdir: str) -> None:
  """workdir/curves.png: the training and validation curves of a run that validated."""
  if learned.best_step is not None and jax.process_index() == 0:
    plots.training_curves(learned.history, os.path.join(workdir, "curves.png"))


def learn_choice(config: ml_collections.ConfigDict, run: Setup, problem: Problem,
                 learned: ddss.LearnedSampler) -> tuple[ddss.LearnedSampler, dict[str, Any]]:
  """The runs config.choice.among adds to the configured one (`learned`, run 0): run i learned
  in workdir/choice/<i>/ (resumed from there; its sampler.json and curves.png written there),
  then all scored on the validation split (select.choose_on_validation, config.choice.draws draws).
  Returns the run kept and the record of the choice, also written to workdir/choice.json."""
  runs, trains = [learned], [run.train_cfg]
  for i, values in enumerate(config_lib.choice_runs(config)[1:], start=1):
    other = setup(ml_collections.ConfigDict(values), os.path.join(run.workdir, "choice", str(i)))
    writer = logs.MetricWriter(other.workdir)
    runs.append(learn(other, problem, writer))
    writer.close()
    trains.append(other.train_cfg)
    if jax.process_index() == 0:
      runs[-1].save(os.path.join(other.workdir, "sampler.json"))
    write_curves(runs[-1], other.workdir)
  chosen = select.choose_on_validation(runs, problem, train=trains, draws=config.choice.draws,
                                       mesh=run.mesh)
  record = {"draws": config.choice.draws, "kept": chosen.kept, "runs": [
      {"overrides": text, "val_fids": list(fids), "val_fid_mean": mean,
       "train_steps": r.train_steps, "best_step": r.best_step}
      for text, fids, mean, r in zip(("",) + tuple(config.choice.among), chosen.fids,
                                     chosen.means, runs)]}
  for i, entry in enumerate(record["runs"]):
    logging.info("choice: run %d (%s): validation FID %.4f over %d draws%s", i,
                 entry["overrides"] or "as configured", entry["val_fid_mean"],
                 config.choice.draws, ", kept" if i == chosen.kept else "")
  if jax.process_index() == 0:
    files.write_json(os.path.join(run.workdir, "choice.json"), record)
  return runs[chosen.kept], record


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False) -> dict[str, Any]:
  """Runs DDSS as configured, evaluates it against the baseline at the same K, writes results.

  Writes to workdir: config.json (the config it ran; a rerun must be compatible, see `setup`),
  checkpoints/ (orbax, resumed from automatically), metrics.jsonl (and tensorboard/ where
  TensorFlow is installed), curves.png (with validations), sampler.json (the learned sampler),
  results.json ({"baseline": {...}, "learned": {...}, ...}), samples_<role>.png and
  samples.png. With config.choice.among also choice/<i>/ (run i's, i >= 1) and choice.json;
  sampler.json and the "learned" row are then the run kept. Returns the results dict.
  """
  run = setup(config, workdir, allow_config_change=allow_config_change)
  writer = logs.MetricWriter(run.workdir)
  problem = build_problem(config, run.schedule, run.workdir, run.mesh)
  if config.choice.among and problem.split_validation is None:
    raise ConfigError("choice.among", tuple(config.choice.among), f"problem {problem.name!r} "
                      "cannot carve a validation split to choose on; set it to ()")
  learned, choice = learn(run, problem, writer), None
  write_curves(learned, run.workdir)
  if config.choice.among:
    learned, choice = learn_choice(config, run, problem, learned)
  eval_cfg = run.eval_cfg
  roles = {"baseline": (run.baseline, run.baseline.init()),
           "learned": (learned.sampler, learned.params)}
  if eval_cfg.reference_steps > 0:  # the frozen model's own quality, for context
    roles["reference"] = (samplers.make("ddpm", run.schedule, eval_cfg.reference_steps,
                                        stride="linear", clip_x0=run.sampler.clip_x0,
                                        guidance=run.baseline.guidance), {})
  results = {"problem": problem.name, "loss": run.loss_cfg.name,
             "train_steps": learned.train_steps,
             **({} if learned.best_step is None else {"best_step": learned.best_step}),
             **({} if choice is None else {"choice": choice}),
             **held_out.evaluate_samplers(roles, problem, evaluation=eval_cfg,
                                          workdir=run.workdir, mesh=run.mesh)}
  # An evaluation of this state that a kill interrupted, or a rerun of a finished run, leaves
  # one line of eval metrics, not two.
  writer.keep(lambda line: line["step"] != learned.train_steps or not any(
      key.startswith("eval/") for key in line))
  held_out.write_eval_metrics(writer, learned.train_steps, results)
  writer.close()
  if jax.process_index() == 0:
    learned.save(os.path.join(run.workdir, "sampler.json"))
    files.write_json(os.path.join(run.workdir, "results.json"), results)
    print(format_table(results))
  return results


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Evaluates the sampler saved in workdir/sampler.json and the configured baseline on
  config.eval.num_samples samples; writes workdir/eval_results_<N>.json and eval/<metric>@K=<K>
  lines in workdir/metrics.jsonl."""
  run = setup(config, workdir)
  path = os.path.join(run.workdir, "sampler.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: train first (--mode=train) with this workdir")
  learned, params = samplers.load(path)
  if learned.num_steps != run.baseline.num_steps:
    raise ValueError(f"{path} holds a K={learned.num_steps} sampler but config.sampler.num_steps="
                     f"{run.baseline.num_steps}; evaluate with the config it was trained with")
  roles = {"learned": (learned, params), "baseline": (run.baseline, run.baseline.init())}
  problem = build_problem(config, run.schedule, run.workdir, run.mesh)
  results = {"problem": problem.name, **held_out.evaluate_samplers(
      roles, problem, evaluation=run.eval_cfg, workdir=run.workdir, mesh=run.mesh)}
  writer = logs.MetricWriter(run.workdir)
  held_out.write_eval_metrics(writer, 0, results)
  writer.close()
  if jax.process_index() == 0:
    files.write_json(os.path.join(run.workdir, f"eval_results_{run.eval_cfg.num_samples}.json"),
                    results)
    print(format_table(results))
  return results


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
