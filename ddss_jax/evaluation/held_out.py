"""Evaluation at scale: draw N samples in batches and stream each batch into the problem's
evaluator (FID / IS / KID running statistics for the real-scale problems), so that no more than
one batch of images is ever held; the results of several samplers side by side, with pictures.
(Re-evaluating a workdir's saved sampler is ddss_jax.run.evaluate_workdir.)
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from ddss_jax import samplers
from ddss_jax.evaluation import drawing
from ddss_jax.problems.base import Problem, held_out_conditions, rows_of
from ddss_jax.settings import EvalConfig
from ddss_jax.util import logs


def real_batches(problem: Problem, *, num_samples: int, batch_size: int,
                 seed: int) -> Iterator[tuple[np.ndarray, Any]]:
  """Random real training examples in batches (the "data" row of a results table), each with
  its examples' conditions (None for an unconditional problem)."""
  key = jax.random.PRNGKey(seed)
  for b in range(-(-num_samples // batch_size)):
    n, batch_key = min(batch_size, num_samples - b * batch_size), jax.random.fold_in(key, b)
    cond = (None if problem.conditioning is None
            else problem.conditioning.real(batch_key, n))
    yield np.asarray(problem.real_batch(batch_key, n)), cond


def with_conditions(batches: Iterator[np.ndarray], conds: Any
                    ) -> Iterator[tuple[np.ndarray, Any]]:
  """(batch, the conditions of its rows) for consecutive batches of samples drawn for `conds`
  (a pytree with leading axis N, or None)."""
  seen = 0
  for batch in batches:
    yield batch, None if conds is None else rows_of(conds, np.arange(seen, seen + len(batch)))
    seen += len(batch)


def stream(batches: Iterator[tuple[np.ndarray, Any]], problem: Problem, *, num_samples: int,
           label: str, keep: int) -> tuple[dict[str, float], np.ndarray]:
  """Feeds (batch, its conditions or None) pairs to a fresh problem evaluator; returns
  (metrics, the first `keep` samples).

  Logs when the first batch (which compiles the sampler) starts and ends, then progress about
  every 30 seconds: samples per second after the first batch, minutes left.
  """
  evaluator = problem.make_evaluator(num_samples)
  kept, seen = [], 0
  logging.info("%s: compiling the sampler; the first batch includes it", label)
  start = time.perf_counter()
  first = None  # (samples, seconds) of the first batch, compilation included
  for batch, cond in batches:
    if cond is None:
      evaluator.update(batch)
    else:
      evaluator.update(batch, cond)
    if seen < keep:
      kept.append(batch[:keep - seen])
    seen += len(batch)
    now = time.perf_counter()
    if first is None:
      first = (seen, now - start)
      last_log = now
      logging.info("%s: first batch of %d compiled and ran in %.1f s", label, seen, first[1])
    if now - last_log > 30 or (seen == num_samples and seen > first[0]):
      rate = (seen - first[0]) / max(now - start - first[1], 1e-9)
      logging.info("%s: %d/%d samples, %.1f samples/s, about %.1f min left", label, seen,
                   num_samples, rate, (num_samples - seen) / rate / 60)
      last_log = now
  if seen != num_samples:
    raise ValueError(f"{label}: expected {num_samples} samples, got {seen}")
  return evaluator.result(), (np.concatenate(kept) if kept else
                              np.zeros((0,) + tuple(problem.example_shape), np.float32))


def evaluate_samplers(roles: dict[str, tuple[samplers.Sampler, Any]], problem: Problem, *,
                      evaluation: EvalConfig | None = None, workdir: str | None = None,
                      mesh: Mesh | None = None) -> dict[str, dict[str, Any]]:
  """Held-out metrics of each {role: (sampler, params)} and of real training data ("data"),
  streamed over evaluation.num_samples fresh samples, and under "weights" the path and sha256 of
  each weights file the problem read (where it read any).

  Every sampler draws from the same keys, so the pictures start from the same noise; a
  conditional problem's sample i is drawn for held-out condition i mod M. With a
  workdir, writes samples_<role>.png for each role and samples.png with all of them and the data
  side by side.
  """
  cfg = evaluation or EvalConfig()
  if problem.evaluate is None and problem.evaluator_factory is None:
    raise ValueError(f"problem {problem.name!r} has no held-out evaluation: pass eval_data to "
                     "make_problem")
  panels, results = {}, {}
  conds = (None if problem.conditioning is None
           else held_out_conditions(problem.conditioning, cfg.num_samples))
  for role, (sampler, params) in roles.items():
    label = f"{role} ({sampler.family}, K={sampler.num_steps})"
    batches = drawing.sample_batches(sampler, params, problem, num_samples=cfg.num_samples,
                                     batch_size=cfg.batch_size, seed=cfg.seed, mesh=mesh,
                                     conds=conds)
    metrics, kept = stream(with_conditions(batches, conds), problem,
                           num_samples=cfg.num_samples, label=label, keep=problem.plot_samples)
    panels[f"{role}: {sampler.family} K={sampler.num_steps}"] = kept
    results[role] = {"family": sampler.family, "num_steps": sampler.num_steps, **metrics}
  results["data"], data = stream(
      real_batches(problem, num_samples=cfg.num_samples, batch_size=cfg.batch_size,
                   seed=cfg.seed),
      problem, num_samples=cfg.num_samples, label="data", keep=problem.plot_samples)
  if problem.weights:
    results["weights"] = problem.weights
  if workdir is not None and jax.process_index() == 0:
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
