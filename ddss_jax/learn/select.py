"""Selection policies on the validation split: which fixed sampler a learned one starts from, and
which of several learned runs is kept."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Protocol, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from ddss_jax import samplers
from ddss_jax.learn.validation import ValidationScore, score_draws_on_validation
from ddss_jax.problems.base import Problem
from ddss_jax.samplers import solvers
from ddss_jax.settings import TrainConfig
from ddss_jax.util import files

# The solvers a GGDM family's start is chosen among, beside DDIM and DDPM.
START_SOLVERS = ("dpm-solver++2m", "unipc")


class Run(Protocol):
  """A learned run as choose_on_validation reads it (a ddss_jax.LearnedSampler is one)."""
  sampler: samplers.Sampler
  params: Any


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
  on a tie: choose_on_validation's rule (experiments/lib/choice.py's second rule too)."""
  return int(np.argmin([float(np.mean(d)) for d in draws]))


def choose_on_validation(runs: Sequence[Run], problem: Problem, *,
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
  skipped for the solvers; each candidate clips x0 predictions and guides as `sampler` does. With
  noise_free, only those that draw no noise (DDPM left out)."""
  if sampler.solver:
    kinds = [sampler.solver]
  else:
    kinds = ["ddim", "ddpm"] + (list(START_SOLVERS) if sampler.is_ggdm else [])
  # A guided sampler starts from a fixed sampler guided by its initial weights.
  guidance = (None if sampler.guidance is None
              else dataclasses.replace(sampler.guidance, learn=False))
  candidates = []
  for stride in samplers.STRIDES:
    for family in kinds:
      try:
        candidates.append(samplers.make(family, sampler.schedule, sampler.num_steps,
                                        stride=stride, clip_x0=sampler.clip_x0,
                                        guidance=guidance))
      except ValueError:  # the solvers need distinct times
        continue
  return [c for c in candidates if not (noise_free and c.stochastic)]


def _start_of(sampler: samplers.Sampler, candidate: samplers.Sampler) -> dict:
  """What `sampler` takes from its start candidate: the stride, eta and (GGDM) start_solver."""
  ggdm_solver = sampler.is_ggdm and candidate.family in solvers.SOLVERS
  return {"stride": candidate.stride, "eta": candidate.eta,
          "start_solver": candidate.family if ggdm_solver else None}


def select_start(sampler: samplers.Sampler, problem: Problem, score: ValidationScore,
                 workdir: str | None, *, noise_free: bool = False) -> samplers.Sampler:
  """`sampler` starting from the best of start_candidates on the validation split.

  Each candidate is scored at its initial parameters by `score` (before any DDSS step); the lowest
  score.select_on value wins, the first in STRIDES order (then DDIM, DDPM, DPM-Solver++(2M),
  UniPC) on a tie. noise_free leaves out the candidates that draw noise (DDPM).

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
                            "noise_free": noise_free,
                            "select_on": score.select_on,
                            "candidates": rows, "chosen": chosen})
  logging.info("start: %s %s stride (eta %g), the best validation %s", best["family"],
               best["stride"], best["eta"], score.select_on)
  return dataclasses.replace(sampler, **chosen)
