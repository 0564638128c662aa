"""The headline learned sampler's learning rate chosen on the validation split, at every K.

GGDM+PRED+TIME (KID loss) with configs/mnist.py's levers was run at two learning rates: 5e-3
(configs/mnist.py's; the paper tables' row, experiments/samplers/) and 1e-3 (the ablation's
`all_noise_free_slow`, experiments/ablation/samplers/), and at K = 15 and 25 also with training
seed 1 (`all_noise_free_seed1`, `all_noise_free_slow_seed1`). The two runs of a pair differ in the
learning rate alone (checked). Each committed sampler file is scored on its own run's validation
split (ddss_jax.api.score_on_validation: the 500 carved training digits and the noise the run's
validations used, never the held-out digits), and the rule keeps the run with the lower
validation FID, the default 5e-3 on a tie. The chosen run's held-out row is its record's (the
evaluation seeds 1234 and 1334; re-evaluate with experiments.evaluate_samplers), set against the
best fixed sampler at K and at 2K in experiments/results.csv. Run (resumable: each score is kept
as it is made):
  python -m experiments.learning_rate_choice
Writes experiments/learning_rate_choice/scores.csv and RESULTS.md; a pair whose files are not
there yet is named as missing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time

import ml_collections
import numpy as np
from absl import app, flags, logging

from ddss_jax import api, experiment, files, logs, samplers
from ddss_jax import config as config_lib
from ddss_jax.settings import TrainConfig, from_group
from experiments import ablation, paper_report, paper_tables
from experiments.paper_protocol import TABLE_STEPS

HERE = os.path.dirname(os.path.abspath(__file__))
RATES = ("5e-3", "1e-3")
# Config fields that do not change what a run learns (how often it checkpoints; the teacher
# loss's pool folder, unused by the KID loss): a pair may differ in them too.
NOT_LEARNING = ("train.checkpoint_every_steps", "loss.teacher_dir")
SCORE_COLUMNS = ("path", "sha256", "val_fid", "val_kid", "redraw_fids", "seconds")

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("out", os.path.join(HERE, "learning_rate_choice"),
                      "Where scores.csv and RESULTS.md go.")
  flags.DEFINE_string("workdir", "/tmp/ddss_learning_rate_choice", "Scratch folder of the "
                      "problems.")
  flags.DEFINE_string("fixed_results", os.path.join(HERE, "results.csv"),
                      "paper_tables' results.csv: the fixed samplers at K and 2K.")
  flags.DEFINE_integer("redraws", 3, "Each file is also scored on this many other draws of "
                       "validation samples (same split): the score's own noise, and whether "
                       "the choice survives it. The rule uses the run's own draw only.")
  flags.DEFINE_float("full_quality_fid", 0.192, "The model's own quality: its 1000-step "
                     "ancestral FID (docs/results.md: experiments.mnist_base_model "
                     "--ddpm_steps=1000), the far end of the gap the targets measure.")


def pairs(root: str = HERE) -> list[tuple[int, int, tuple[str, str]]]:
  """(K, training seed, (the 5e-3 run's sampler file, the 1e-3 run's)) of every pair."""
  out = [(k, 0, (os.path.join(root, "samplers", f"ggdm+pred+time_kid_K{k}.json"),
                 os.path.join(root, "ablation", "samplers", f"all_noise_free_slow_K{k}.json")))
         for k in TABLE_STEPS]
  out += [(k, 1, tuple(os.path.join(root, "ablation", "samplers", f"{v}_K{k}.json")
                       for v in ("all_noise_free_seed1", "all_noise_free_slow_seed1")))
          for k in (15, 25)]
  return sorted(out)


def record_of(path: str) -> dict:
  """The sampler file's "evaluation" entry (its config, seeds and held-out row)."""
  with open(path, encoding="utf-8") as f:
    record = json.load(f).get("evaluation")
  if record is None:
    raise ValueError(f"{path}: no \"evaluation\" entry (a file paper_tables.py or ablation.py "
                     "wrote to <out>/samplers/)")
  return record


def config_of(path: str) -> dict:
  """The run's config from the sampler file's record, fields added since at their defaults."""
  return config_lib.with_defaults(record_of(path)["config"])


def check_pair(paths: tuple[str, str]) -> None:
  """ValueError naming both files and the fields where their runs' configs differ in more than
  the learning rate (and the NOT_LEARNING fields)."""
  a, b = (config_lib.flatten(config_of(p)) for p in paths)
  differ = sorted(f for f in set(a) | set(b)
                  if a.get(f) != b.get(f) and f not in NOT_LEARNING + ("train.learning_rate",))
  if differ:
    raise ValueError(f"{paths[0]} and {paths[1]}: the runs differ in {differ}, not in the "
                     "learning rate alone; a pair must differ in train.learning_rate only")


def sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def score(path: str, workdir: str, redraws: int = 0) -> list[dict[str, float]]:
  """[{"fid", "kid"}] of the sampler file on its run's validation split (its config rebuilds
  the problem with the run's training seed, hence the same carve): first with the validation
  noise the run used (draw 0), then `redraws` other draws (1, 2, ...: the draws a run with
  train.validation_draws > 1 averages)."""
  config = ml_collections.ConfigDict(config_of(path))
  sampler, params = samplers.load(path)
  problem = experiment.build_problem(config, sampler.schedule, workdir)
  # One draw per score: the redraws are scored one by one.
  train = from_group(TrainConfig, {**config.train.to_dict(), "validation_draws": 1})
  return [api.score_on_validation(sampler, params, problem, train=train, first_draw=i)
          for i in range(redraws + 1)]


def read_scores(path: str) -> dict[str, dict]:
  """scores.csv's rows by sampler file (as written: relative to the repository)."""
  if not os.path.exists(path):
    return {}
  with open(path, newline="", encoding="utf-8") as f:
    return {row["path"]: row for row in csv.DictReader(f)}


def redraws_of(row: dict) -> list[float]:
  """A scores.csv row's validation FIDs on the other draws of samples ([] where none)."""
  return [float(v) for v in (row.get("redraw_fids") or "").split(";") if v]


def write_scores(path: str, scores: dict[str, dict]) -> None:
  with files.atomic_write(path, newline="") as f:
    writer = csv.DictWriter(f, fieldnames=SCORE_COLUMNS)
    writer.writeheader()
    writer.writerows(scores[p] for p in sorted(scores))


def choose(val_fids: tuple[float, float]) -> int:
  """The rule: the index of the lower validation FID, 0 (the default 5e-3) on a tie."""
  return 1 if val_fids[1] < val_fids[0] else 0


def choose_by_mean(draws: tuple[list[float], list[float]]) -> int:
  """The second rule (written down before any redraw was scored, reported beside the first):
  the index of the lower mean validation FID over all draws, 0 (5e-3) on a tie."""
  return choose((float(np.mean(draws[0])), float(np.mean(draws[1]))))


def held_out_fid(record: dict) -> float:
  """A sampler file's held-out FID averaged over its two evaluation seeds."""
  return (record["row"]["fid"] + record["row"]["fid_2"]) / 2


def held_out_better(records: list[dict]) -> int:
  """The index of the run with the lower held_out_fid (what the rules try to guess without
  seeing it), 0 on a tie."""
  return choose(tuple(map(held_out_fid, records)))


def verdicts(row: dict, fixed: dict | None, fixed_2k: dict | None, *, num_samples: int,
             full_quality_fid: float) -> dict[str, str]:
  """The issue's targets as table cells for a held-out row {"fid", "fid_2", "recall"} against
  the best fixed sampler at K and at 2K (paper_tables rows; "-" where absent): below it by more
  than the seed difference on each seed; the share of the gap to full_quality_fid closed on
  each seed; recall no lower than the fixed sampler's by more than two binomial stds; below the
  best fixed sampler at 2K on each seed."""
  if fixed is None:
    return dict.fromkeys(("beats", "gap", "recall", "beats_2k"), "-")
  _, spread, beats = paper_report.seed_check(row, fixed)  # the paper tables' verdict
  margin = min(fixed["fid"] - row["fid"], fixed["fid_2"] - row["fid_2"])
  gaps = [(fixed[c] - row[c]) / (fixed[c] - full_quality_fid) for c in ("fid", "fid_2")]
  two_std = 2 * math.sqrt(fixed["recall"] * (1 - fixed["recall"]) / num_samples)
  below_2k = fixed_2k is not None and all(row[c] < fixed_2k[c] for c in ("fid", "fid_2"))
  return {"beats": f"{beats} ({margin:+.3f} vs {spread})",
          "gap": " / ".join(f"{100 * g:.0f}%" for g in gaps),
          "recall": (f"{'yes' if row['recall'] >= fixed['recall'] - two_std else 'no'} "
                     f"({row['recall']:.3f} vs {fixed['recall']:.3f} - {two_std:.3f})"),
          "beats_2k": "-" if fixed_2k is None else "yes" if below_2k else "no"}


def report(lines_in: list[dict], fixed_rows: list[dict], path: str, *,
           full_quality_fid: float, missing: list[str]) -> str:
  """RESULTS.md, written and returned: one table line per pair scored (`lines_in`: K, seed,
  the two scores, the two runs' redraws, the two records), the rules, each rule's run against
  the targets, and the files not there yet."""
  head = ("| K | training seed | validation FID, 5e-3 / 1e-3 | chosen | validation FID over "
          "the run's draw and the redraws, mean +- std, 5e-3 / 1e-3 | 5e-3 - 1e-3 on the same "
          "draw, mean +- std | choice on each redraw | chosen by the mean of the draws | "
          "held-out better (FID 5e-3 / 1e-3, mean of the seeds) |")
  table = [head, "|---" * 9 + "|"]
  targets = ["| K | training seed | rule | chosen | held-out FID, seed 1 / 2 | recall | best fixed "
             "at K: FID seed 1 / 2 | below it by > seed diff. (margin vs diff.) | gap to 1000 "
             "steps closed | recall within 2 binomial stds | below best fixed at 2K |",
             "|---" * 11 + "|"]
  for line in lines_in:
    k = line["num_steps"]
    fixed, fixed_2k = ablation.best_fixed(fixed_rows, k), ablation.best_fixed(fixed_rows, 2 * k)
    fixed_text = "-" if fixed is None else (f"{fixed['sampler']} {fixed['fid']:.3f} / "
                                            f"{fixed['fid_2']:.3f}")
    draws = [[line["val_fids"][i], *line["redraws"][i]] for i in (0, 1)]
    spread = " / ".join(f"{np.mean(d):.3f} +- {np.std(d, ddof=1) if len(d) > 1 else 0:.3f}"
                        for d in draws)
    diffs = np.subtract(*draws)
    paired = f"{np.mean(diffs):+.3f} +- {np.std(diffs, ddof=1) if len(diffs) > 1 else 0:.3f}"
    flips = " ".join(RATES[choose(pair)] for pair in zip(*line["redraws"])) or "-"
    held = [held_out_fid(r) for r in line["records"]]
    better = (f"{RATES[held_out_better(line['records'])]} ({held[0]:.3f} / {held[1]:.3f})")
    by_mean = choose_by_mean(draws)
    table.append(f"| {k} | {line['seed']} | {line['val_fids'][0]:.3f} / "
                 f"{line['val_fids'][1]:.3f} | {RATES[line['chosen']]} | {spread} | {paired} | "
                 f"{flips} | {RATES[by_mean]} | {better} |")
    for rule, chosen in (("the run's draw", line["chosen"]), ("the mean of the draws", by_mean)):
      record = line["records"][chosen]
      row = record["row"]
      cells = verdicts(row, fixed, fixed_2k, num_samples=record["num_samples"],
                       full_quality_fid=full_quality_fid)
      targets.append(f"| {k} | {line['seed']} | {rule} | {RATES[chosen]} | {row['fid']:.3f} / "
                     f"{row['fid_2']:.3f} | {row['recall']:.3f} | {fixed_text} | "
                     f"{cells['beats']} | {cells['gap']} | {cells['recall']} | "
                     f"{cells['beats_2k']} |")
  text = [
      "# The learning rate chosen on the validation split",
      "",
      "GGDM+PRED+TIME (KID loss), configs/mnist.py's levers, at 5e-3 (configs/mnist.py's rate: "
      "the paper tables' row) and at 1e-3 (the ablation's `all_noise_free_slow`; at K = 15 "
      "and 25 also both with training seed 1). Each run's committed sampler is scored on its own "
      "validation split (500 samples against the 500 training digits carved off, the noise its "
      "validations used). The first rule keeps the lower validation FID, 5e-3 on a tie. Each "
      "file is also scored on other draws of validation samples (the same split; noise seeds "
      "the run's + 1000, + 2000, ...): their spread is the validation score's own noise, and "
      "the choice on each redraw says whether the first rule's choice survives it; the draws are "
      "shared (the same noise seeds for both files of a pair), so the difference on the same "
      "draw is the comparison's own noise. The second "
      "rule, reported beside the first without replacing it, keeps the lower mean validation "
      "FID over all the draws. Both rules use validation scores alone, but they are not blind "
      "to the held-out digits: the 1e-3 runs were added after the K = 25 row at 5e-3 had been "
      "seen; the first rule was written down after the held-out rows of both rates at K = 5, "
      "10 and 25 had been seen (before any validation score here was computed), the second "
      "after the held-out rows at every K and the first rule's scores had been seen (before "
      "any redraw was scored). The held-out better run has the lower held-out FID averaged "
      "over the two evaluation seeds: what the rules try to guess without seeing it. Held-out "
      "FID and recall are the chosen run's record (1000 samples against the 1000 held-out "
      "digits, evaluation seeds 1234 and 1334). The gap closed is (best fixed - chosen) / "
      f"(best fixed - {full_quality_fid}), the model's 1000-step ancestral FID, on each seed. "
      "Generated by "
      "`python -m experiments.learning_rate_choice`.",
      "", *table, "",
      "The issue's targets for the run each rule chose (held-out digits):", "", *targets, ""]
  if missing:
    text += ["Not scored yet (sampler files missing): " + ", ".join(f"`{m}`" for m in missing)
             + ".", ""]
  body = "\n".join(text)
  with files.atomic_write(path) as f:
    f.write(body)
  return body


def main(argv):
  del argv
  logs.quiet_library_logs()
  if not os.path.isfile(FLAGS.fixed_results):
    raise FileNotFoundError(f"--fixed_results={FLAGS.fixed_results}: no such file (the "
                            "results.csv experiments/paper_tables.py writes)")
  repo = os.path.dirname(HERE)
  todo, missing = [], []
  for k, seed, paths in pairs():
    absent = [os.path.relpath(p, repo) for p in paths if not os.path.isfile(p)]
    if absent:
      missing += absent
      continue
    check_pair(paths)  # every pair, before anything is scored
    todo.append((k, seed, paths))
  os.makedirs(FLAGS.out, exist_ok=True)
  scores_path = os.path.join(FLAGS.out, "scores.csv")
  scores = read_scores(scores_path)
  lines = []
  for k, seed, paths in todo:
    for p in paths:
      name, digest = os.path.relpath(p, repo), sha256(p)
      kept = scores.get(name, {})
      # New, changed since, or scored on another number of redraws: scored (again).
      if kept.get("sha256") != digest or len(redraws_of(kept)) != FLAGS.redraws:
        start = time.perf_counter()
        own, *others = score(p, FLAGS.workdir, FLAGS.redraws)
        scores[name] = {"path": name, "sha256": digest, "val_fid": f"{own['fid']:.6g}",
                        "val_kid": f"{own['kid']:.6g}",
                        "redraw_fids": ";".join(f"{o['fid']:.6g}" for o in others),
                        "seconds": f"{time.perf_counter() - start:.0f}"}
        write_scores(scores_path, scores)
        logging.info("%s: validation FID %.4f", name, own["fid"])
    kept = [scores[os.path.relpath(p, repo)] for p in paths]
    val_fids = tuple(float(row["val_fid"]) for row in kept)
    lines.append({"num_steps": k, "seed": seed, "val_fids": val_fids,
                  "redraws": tuple(redraws_of(row) for row in kept),
                  "chosen": choose(val_fids), "records": [record_of(p) for p in paths]})
  print(report(lines, paper_tables.read_rows(FLAGS.fixed_results),
               os.path.join(FLAGS.out, "RESULTS.md"), full_quality_fid=FLAGS.full_quality_fid,
               missing=missing))


if __name__ == "__main__":
  define_flags()
  app.run(main)
