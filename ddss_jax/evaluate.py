"""Evaluation at scale: draw N samples in batches and stream each batch into the problem's
evaluator (FID / IS / KID running statistics for the real-scale problems), so that no more than
one batch of images is ever held. Also a mode of main:

  python -m ddss_jax.main --config=configs/cifar10.py --workdir=DIR --mode=evaluate

evaluates the sampler a training run saved in DIR/sampler.json (and the baseline at the same K)
on config.eval.num_samples samples and writes DIR/eval_results_<N>.json and eval/<metric>@K=<K>
lines in DIR/metrics.jsonl.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from ddss_jax import logs, parallel, problems, samplers
from ddss_jax.config_groups import EvalConfig


def generate(sampler: samplers.Sampler, problem: problems.Problem, sampler_params: Any,
             model_params: Any, key: jax.Array, batch_size: int,
             mesh: Mesh | None = None, *, x_T: jax.Array | None = None) -> jax.Array:
  """[batch_size, ...] samples of the frozen model (traceable: the DDSS loss differentiates it),
  from x_T [batch_size, ...] if given (else drawn from key).

  With a mesh, every eps-model input and the result are split along the batch over its devices
  (the same samples, computed in parallel).
  """
  eps_fn = lambda x, t: problem.eps_apply(model_params, parallel.constrain_batch(x, mesh), t)
  shape = (batch_size,) + tuple(problem.example_shape)
  return parallel.constrain_batch(
      sampler.sample(sampler_params, eps_fn, key, shape, x_T=x_T), mesh)


def make_sample_fn(sampler: samplers.Sampler, problem: problems.Problem, batch_size: int,
                   mesh: Mesh | None = None):
  """Returns jitted sample(sampler_params, model_params, key) -> [batch_size, ...]."""
  return jax.jit(lambda sampler_params, model_params, key: generate(
      sampler, problem, sampler_params, model_params, key, batch_size, mesh))


def sample_batches(sampler: samplers.Sampler, params: Any, problem: problems.Problem, *,
                   num_samples: int, batch_size: int, seed: int,
                   mesh: Mesh | None = None) -> Iterator[np.ndarray]:
  """Yields batches of samples (NumPy, whole batches on every process), num_samples in all;
  batch b uses fold_in(PRNGKey(seed), b) whatever the device count."""
  if mesh is not None and batch_size % mesh.size:
    mesh = None  # a batch that does not split evenly runs unsplit (same samples)
  sample_fn = make_sample_fn(sampler, problem, batch_size, mesh)
  key = jax.random.PRNGKey(seed)
  for b in range(-(-num_samples // batch_size)):
    batch = sample_fn(params, problem.model_params, jax.random.fold_in(key, b))
    if not batch.is_fully_addressable:  # split over processes: gather the whole batch
      batch = multihost_utils.process_allgather(batch, tiled=True)
    yield np.asarray(batch)[:num_samples - b * batch_size]


def draw_samples(sampler: samplers.Sampler, params: Any, problem: problems.Problem, *,
                 num_samples: int, batch_size: int, seed: int) -> np.ndarray:
  """[num_samples, ...] samples held in memory (small problems, pictures, tests)."""
  return np.concatenate(list(sample_batches(sampler, params, problem, num_samples=num_samples,
                                            batch_size=batch_size, seed=seed)))


def real_batches(problem: problems.Problem, *, num_samples: int, batch_size: int,
                 seed: int) -> Iterator[np.ndarray]:
  """Random real training examples in batches (the "data" row of a results table)."""
  key = jax.random.PRNGKey(seed)
  for b in range(-(-num_samples // batch_size)):
    yield np.asarray(problem.real_batch(jax.random.fold_in(key, b),
                                        min(batch_size, num_samples - b * batch_size)))


def stream(batches: Iterator[np.ndarray], problem: problems.Problem, *, num_samples: int,
           label: str, keep: int) -> tuple[dict[str, float], np.ndarray]:
  """Feeds batches to a fresh problem evaluator; returns (metrics, the first `keep` samples).

  Logs progress (samples per second, minutes left) about every 30 seconds.
  """
  evaluator = problem.make_evaluator(num_samples)
  kept, seen = [], 0
  start = last_log = time.perf_counter()
  for batch in batches:
    evaluator.update(batch)
    if seen < keep:
      kept.append(batch[:keep - seen])
    seen += len(batch)
    now = time.perf_counter()
    if now - last_log > 30 or seen == num_samples:
      rate = seen / (now - start)
      logging.info("%s: %d/%d samples, %.1f samples/s, about %.1f min left", label, seen,
                   num_samples, rate, (num_samples - seen) / rate / 60)
      last_log = now
  if seen != num_samples:
    raise ValueError(f"{label}: expected {num_samples} samples, got {seen}")
  return evaluator.result(), np.concatenate(kept)


def evaluate_samplers(roles: dict[str, tuple[samplers.Sampler, Any]], problem: problems.Problem,
                      cfg: EvalConfig, workdir: str,
                      mesh: Mesh | None = None) -> dict[str, dict[str, Any]]:
  """Held-out metrics of each (sampler, params) and of real data, and under "weights" the path and
  sha256 of each weights file the problem read (where it read any); writes pictures.

  Every sampler draws from the same keys, so the pictures start from the same noise. Writes
  samples_<role>.png for each role and samples.png with all of them and the data side by side.
  """
  panels, results = {}, {}
  for role, (sampler, params) in roles.items():
    label = f"{role} ({sampler.family}, K={sampler.num_steps})"
    batches = sample_batches(sampler, params, problem, num_samples=cfg.num_samples,
                             batch_size=cfg.batch_size, seed=cfg.seed, mesh=mesh)
    metrics, kept = stream(batches, problem, num_samples=cfg.num_samples, label=label,
                           keep=problem.plot_samples)
    panels[f"{role}: {sampler.family} K={sampler.num_steps}"] = kept
    results[role] = {"family": sampler.family, "num_steps": sampler.num_steps, **metrics}
  results["data"], data = stream(
      real_batches(problem, num_samples=cfg.num_samples, batch_size=cfg.batch_size,
                   seed=cfg.seed),
      problem, num_samples=cfg.num_samples, label="data", keep=problem.plot_samples)
  if problem.weights:
    results["weights"] = problem.weights
  if jax.process_index() == 0:
    for role, (title, samples) in zip(roles, panels.items()):
      problem.plot({title: samples}, os.path.join(workdir, f"samples_{role}.png"))
    problem.plot({**panels, "data": data}, os.path.join(workdir, "samples.png"))
  return results


def write_eval_metrics(writer: logs.MetricWriter, step: int, results: dict[str, Any]) -> None:
  """eval/<metric>@K=<K> for the learned sampler, eval/<family>/<metric>@K=<K> for the baseline."""
  scalars = {}
  for role in ("learned", "baseline"):
    if role not in results:
      continue
    entry = results[role]
    prefix = "eval" if role == "learned" else f"eval/{entry['family']}"
    scalars.update({f"{prefix}/{m}@K={entry['num_steps']}": v for m, v in entry.items()
                    if m not in ("family", "num_steps")})
  writer.write(step, scalars)


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Evaluates the sampler saved in workdir/sampler.json and the configured baseline."""
  from ddss_jax import train  # pylint: disable=import-outside-toplevel  (train imports us)
  setup = train.setup(config, workdir)
  path = os.path.join(setup.workdir, "sampler.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: train first (--mode=train) with this workdir")
  learned, params = samplers.load(path)
  if learned.num_steps != setup.baseline.num_steps:
    raise ValueError(f"{path} holds a K={learned.num_steps} sampler but config.sampler.num_steps="
                     f"{setup.baseline.num_steps}; evaluate with the config it was trained with")
  roles = {"learned": (learned, params), "baseline": (setup.baseline, setup.baseline.init())}
  problem = train.build_problem(config, setup.schedule, setup.workdir, setup.mesh)
  results = {"problem": problem.name, **evaluate_samplers(roles, problem, setup.eval_cfg,
                                                          setup.workdir, setup.mesh)}
  writer = logs.MetricWriter(setup.workdir)
  write_eval_metrics(writer, 0, results)
  writer.close()
  if jax.process_index() == 0:
    logs.write_json(os.path.join(setup.workdir,
                                 f"eval_results_{setup.eval_cfg.num_samples}.json"), results)
    print(train.format_table(results))
  return results
