"""Sampler files with their evaluation records: written by the studies, re-evaluated to their rows.

The paper tables, the ablation and the guidance study write each learned sampler they evaluate
to <out>/samplers/*.json: the sampler as ddss_jax.samplers.save writes it (samplers.load reads
it), plus an "evaluation" entry with the config it was learned and evaluated with, the
evaluation seeds, the sample count and the row's metrics (and the class metrics of a
conditional problem). This command rebuilds the problem from that config and evaluates the
sampler on the same seed and samples, printing the metrics beside the recorded row (the same
numbers: the same noise, the same network, the same reference digits). Run:
  python -m experiments.lib.records \
    --samplers=experiments/paper_tables/samplers/ggdm+pred+time_kid_K10.json[,...] \
    [--num_samples=1000] [--eval_seed=1234]
The helpers here (the evaluation seeds, evaluating on each, writing the record) are those the
runners use, so the command and the rows cannot drift apart.
"""

from __future__ import annotations

import json
import os

import ml_collections
from absl import app, flags, logging

from ddss_jax import run as run_lib, samplers
from ddss_jax.evaluation import drawing, held_out
from ddss_jax.problems.base import held_out_conditions
from ddss_jax.util import files, logs
from experiments.lib.protocol import SECOND_SEED_OFFSET

METRICS = ("fid", "kid", "kid_std", "precision", "recall")
CLASS_METRICS = ("class_fid", "class_accuracy", "class_accuracy_std", "confident_correct_share")

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_list("samplers", [], "sampler json files written by a study "
                    "(experiments/<study>/samplers/*.json).")
  flags.DEFINE_integer("num_samples", None, "Evaluation samples (default: the recorded count).")
  flags.DEFINE_integer("eval_seed", None, "Evaluation seed (default: the record's first).")
  flags.DEFINE_string("workdir", "/tmp/ddss_evaluate_samplers", "Scratch folder of the problem.")


def eval_seeds(first: int, count: int) -> tuple[int, ...]:
  """The evaluation seeds of a row: the first, then first + SECOND_SEED_OFFSET (count 1 or 2)."""
  if count not in (1, 2):
    raise ValueError(f"--eval_seeds={count}: the rows hold one or two evaluation seeds (1 or 2)")
  return (first, first + SECOND_SEED_OFFSET)[:count]


def evaluate_on_seeds(sampler: samplers.Sampler, params, problem, *, num_samples: int,
                      batch_size: int, seeds, label: str, keep: int = 0,
                      metrics: tuple[str, ...] = METRICS):
  """([the `metrics` of each seed], the first `keep` samples [keep, H, W, C] of the first
  seed)."""
  results, kept = [], None
  conds = (None if problem.conditioning is None
           else held_out_conditions(problem.conditioning, num_samples))
  for i, seed in enumerate(seeds):
    batches = drawing.sample_batches(sampler, params, problem, num_samples=num_samples,
                                     batch_size=batch_size, seed=seed, conds=conds)
    values, samples = held_out.stream(held_out.with_conditions(batches, conds), problem,
                                      num_samples=num_samples, label=f"{label} seed {seed}",
                                      keep=keep if i == 0 else 0)
    results.append({c: float(values[c]) for c in metrics})
    kept = samples if i == 0 else kept
  return results, kept


def write_record(path: str, sampler: samplers.Sampler, params, *, config, num_samples: int,
                 batch_size: int, seeds, row: dict, model=None) -> None:
  """The sampler (samplers.save's content, naming `model`, a ModelInfo, where given) and how
  its row was evaluated, atomically: config is the one it was learned with (its problem group
  rebuilds the evaluation's problem)."""
  record = samplers.to_json(sampler, params, model=model)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  record["evaluation"] = {"config": json.loads(config.to_json_best_effort()),
                          "num_samples": num_samples, "batch_size": batch_size,
                          "seeds": list(seeds), "row": row}
  files.write_json(path, record)


def has_record(path: str) -> bool:
  """Whether the sampler file at `path` holds the "evaluation" entry write_record adds."""
  with open(path, encoding="utf-8") as f:
    return "evaluation" in json.load(f)


def evaluate_record(path: str, *, workdir: str, num_samples: int | None = None,
                    seed: int | None = None) -> tuple[dict, dict]:
  """(metrics, the record's "evaluation" entry) of the sampler in `path`, evaluated on
  num_samples samples (default: the recorded count) from `seed` (default: the first recorded)."""
  with open(path, encoding="utf-8") as f:
    record = json.load(f).get("evaluation")
  if record is None:
    raise ValueError(f"{path}: no \"evaluation\" entry; only the sampler files that the "
                     "studies write to experiments/<study>/samplers/ carry one")
  sampler, params = samplers.load(path)
  config = ml_collections.ConfigDict(record["config"])
  problem = run_lib.build_problem(config, sampler.schedule, workdir)
  [metrics], _ = evaluate_on_seeds(
      sampler, params, problem, num_samples=num_samples or record["num_samples"],
      batch_size=record["batch_size"],
      seeds=[record["seeds"][0] if seed is None else seed], label=os.path.basename(path),
      metrics=METRICS + (() if problem.conditioning is None else CLASS_METRICS))
  return metrics, record


def recorded(record: dict, *, num_samples: int | None, seed: int | None) -> dict | None:
  """The recorded metrics of that seed and sample count (FID and KID only for the second seed),
  or None when the row was not evaluated so."""
  seeds = record["seeds"]
  seed = seeds[0] if seed is None else seed
  if num_samples not in (None, record["num_samples"]) or seed not in seeds:
    return None
  row = record["row"]
  if seed == seeds[0]:
    return {c: row[c] for c in METRICS + CLASS_METRICS if c in row}
  return {"fid": row["fid_2"], "kid": row["kid_2"]}


def main(argv):
  del argv
  logs.quiet_library_logs()
  if not FLAGS.samplers:
    raise ValueError("--samplers: give one or more sampler json files (e.g. "
                     "experiments/paper_tables/samplers/ggdm+pred+time_kid_K10.json)")
  missing = [p for p in FLAGS.samplers if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"--samplers: no such file(s) {missing}")
  if FLAGS.num_samples is not None and FLAGS.num_samples < 2:
    raise ValueError(f"--num_samples={FLAGS.num_samples}: need at least 2 samples (FID)")
  for path in FLAGS.samplers:
    metrics, record = evaluate_record(path, workdir=FLAGS.workdir, num_samples=FLAGS.num_samples,
                                      seed=FLAGS.eval_seed)
    before = recorded(record, num_samples=FLAGS.num_samples, seed=FLAGS.eval_seed)
    logging.info("%s done", path)
    print(path)
    for c in metrics:
      was = "-" if before is None or c not in before else f"{before[c]:.6g}"
      print(f"  {c:24s} now {metrics[c]:.6g}  recorded {was}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
