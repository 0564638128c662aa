"""A choice between two (or more) committed DDSS runs, made on the validation split alone.

Each group is two or more committed sampler files (with their "evaluation" records) whose runs
differ from the first's in the fields a Choice names and nothing else that changes what is
learned; a group of two is a pair. Each file is scored on its own run's validation split
(ddss_jax.score_on_validation: the carved training digits and the noise the run's
validations used, never the held-out digits), and on `redraws` other draws of validation samples
(the same split) for the score's own noise. Two rules choose: the lowest validation FID on the
run's own draw, and the lowest mean over all the draws, the first run of the group (the default)
on a tie. The chosen run's held-out row (its record) is set against the best fixed sampler at K
and at 2K. experiments/learning_rate_choice/, start_choice/ (pairs) and rate_and_start_choice/
(groups of three) are the choices; run(choice) is their main.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import time
from typing import Callable

import ml_collections
import numpy as np
from absl import app, flags, logging

import ddss_jax
from ddss_jax import config as config_lib, run as run_lib, samplers
from ddss_jax.learn import select
from ddss_jax.settings import TrainConfig, from_group
from ddss_jax.util import files, logs
from experiments.lib import verdicts
from experiments.lib.table import best_fixed, read_rows

EXPERIMENTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Config fields that do not change what a run learns (how often it checkpoints; the teacher
# loss's pool folder, unused by the KID loss): the runs of a group may differ in them too.
NOT_LEARNING = ("train.checkpoint_every_steps", "loss.teacher_dir")
SCORE_COLUMNS = ("path", "sha256", "val_fid", "val_kid", "redraw_fids", "seconds")

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Choice:
  """What is chosen between: `labels` name a group's runs (the first is the default, kept on a
  tie); `varied` the config fields the others may differ in from the first, `what` those in
  words; `groups` gives (K, training seed, (the first's file, the others' ...)) of every group,
  each with one file per label; RESULTS.md opens with `title`, then `runs` (what the runs of a
  group are), then the rules; `name` is the study's folder under experiments/ (its run.py, and
  its NOTES.md: what had been seen when each rule was written down)."""
  name: str
  labels: tuple[str, ...]
  varied: tuple[str, ...]
  what: str
  groups: Callable[[], list[tuple[int, int, tuple[str, ...]]]]
  title: str
  runs: str


def define_flags(name: str) -> None:
  flags.DEFINE_string("out", os.path.join(EXPERIMENTS, name),
                      "Where scores.csv and RESULTS.md go.")
  flags.DEFINE_string("workdir", f"/tmp/ddss_{name}", "Scratch folder of the problems.")
  flags.DEFINE_string("fixed_results", os.path.join(EXPERIMENTS, "paper_tables", "results.csv"),
                      "The paper tables' results.csv: the fixed samplers at K and 2K.")
  flags.DEFINE_integer("redraws", 3, "Each file is also scored on this many other draws of "
                       "validation samples (same split): the score's own noise, and whether "
                       "the choice survives it. The rule uses the run's own draw only.")
  flags.DEFINE_float("full_quality_fid", 0.192, "The model's own quality: its 1000-step "
                     "ancestral FID (docs/shipped_networks.md: experiments.shipped_unet.run "
                     "--ddpm_steps=1000), the far end of the gap the targets measure.")


# The name sampler_file gives the paper tables' headline row (GGDM+PRED+TIME, KID loss).
HEADLINE = "headline"


def sampler_file(name: str, k: int, root: str = EXPERIMENTS) -> str:
  """The committed sampler file of run `name` at K: HEADLINE is the paper tables' row
  (experiments/paper_tables/samplers/), any other name an ablation variant
  (experiments/ablation/samplers/)."""
  if name == HEADLINE:
    return os.path.join(root, "paper_tables", "samplers", f"ggdm+pred+time_kid_K{k}.json")
  return os.path.join(root, "ablation", "samplers", f"{name}_K{k}.json")


def groups_at(names: tuple[str, ...], steps: tuple[int, ...], seed: int,
              root: str = EXPERIMENTS) -> list[tuple[int, int, tuple[str, ...]]]:
  """(K, seed, the sampler_file of each name at K) for every K in `steps`: a Choice's groups
  with one training seed."""
  return [(k, seed, tuple(sampler_file(n, k, root) for n in names)) for k in steps]


def record_of(path: str) -> dict:
  """The sampler file's "evaluation" entry (its config, seeds and held-out row)."""
  with open(path, encoding="utf-8") as f:
    record = json.load(f).get("evaluation")
  if record is None:
    raise ValueError(f"{path}: no \"evaluation\" entry (a file the paper tables or the ablation "
                     "wrote to <out>/samplers/)")
  return record


def config_of(path: str) -> dict:
  """The run's config from the sampler file's record, fields added since at their defaults."""
  return config_lib.with_defaults(record_of(path)["config"])


def check_group(paths: tuple[str, ...], choice: Choice) -> None:
  """ValueError unless the group has one file per label; else naming the first file and another
  whose runs' configs differ in more than choice.varied (and the NOT_LEARNING fields)."""
  if len(paths) != len(choice.labels):
    raise ValueError(f"{choice.name}: a group of {len(paths)} files {list(paths)}, not one per "
                     f"label {list(choice.labels)}")
  a = config_lib.flatten(config_of(paths[0]))
  kind = "pair" if len(paths) == 2 else "group"
  for other in paths[1:]:
    b = config_lib.flatten(config_of(other))
    differ = sorted(f for f in set(a) | set(b)
                    if a.get(f) != b.get(f) and f not in NOT_LEARNING + choice.varied)
    if differ:
      raise ValueError(f"{paths[0]} and {other}: the runs differ in {differ}, not in "
                       f"{choice.what} alone; a {kind} must differ in "
                       f"{', '.join(choice.varied)} only")


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
  problem = run_lib.build_problem(config, sampler.schedule, workdir)
  train = from_group(TrainConfig, config.train.to_dict())
  return ddss_jax.score_draws_on_validation(sampler, params, problem, train=train,
                                       draws=redraws + 1)


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


def choose(val_fids: tuple[float, ...]) -> int:
  """The rule: the index of the lowest validation FID, the first such (0, the default, on a
  tie with it)."""
  return int(np.argmin(val_fids))


def choose_by_mean(draws: tuple[list[float], ...]) -> int:
  """The second rule: the index of the lowest mean validation FID over all draws, the first
  such on a tie (select.lowest_mean, what config.choice keeps by)."""
  return select.lowest_mean(draws)


def held_out_fid(record: dict) -> float:
  """A sampler file's held-out FID averaged over its two evaluation seeds."""
  return (record["row"]["fid"] + record["row"]["fid_2"]) / 2


def held_out_better(records: list[dict]) -> int:
  """The index of the run with the lowest held_out_fid (what the rules try to guess without
  seeing it), the first such on a tie."""
  return choose(tuple(map(held_out_fid, records)))


def report(lines_in: list[dict], fixed_rows: list[dict], path: str, choice: Choice, *,
           full_quality_fid: float, missing: list[str]) -> str:
  """RESULTS.md, written and returned: one table line per group scored (`lines_in`: K, seed,
  the runs' scores, redraws and records, in the order of choice.labels), the rules, each
  rule's run against the targets, and the files not there yet. Each run after the first is
  compared with the first on the same draws."""
  labels = choice.labels
  a, others, names = labels[0], labels[1:], " / ".join(labels)
  # The words for a pair stay the two-run words the committed pairwise RESULTS.md hold.
  lower, kind, every = ("lower", "a pair", "both") if len(labels) == 2 else (
      "lowest", "a group", "all")
  minus = " / ".join(f"{a} - {b}" for b in others)
  head = (f"| K | training seed | validation FID, {names} | chosen | validation FID over "
          f"the run's draw and the redraws, mean +- std, {names} | {minus} on the same "
          "draw, mean +- std | choice on each redraw | chosen by the mean of the draws | "
          f"held-out better (FID {names}, mean of the seeds) |")
  table = [head, "|---" * 9 + "|"]
  targets = ["| K | training seed | rule | chosen | held-out FID, seed 1 / 2 | recall | best fixed "
             "at K: FID seed 1 / 2 | below it by > seed diff. (margin vs diff.) | gap to 1000 "
             "steps closed | recall within 2 binomial stds | below best fixed at 2K |",
             "|---" * 11 + "|"]
  for line in lines_in:
    k = line["num_steps"]
    fixed, fixed_2k = best_fixed(fixed_rows, k), best_fixed(fixed_rows, 2 * k)
    fixed_text = "-" if fixed is None else (f"{fixed['sampler']} {fixed['fid']:.3f} / "
                                            f"{fixed['fid_2']:.3f}")
    draws = [[line["val_fids"][i], *line["redraws"][i]] for i in range(len(labels))]
    spread = " / ".join(_mean_std(d) for d in draws)
    paired = " / ".join(_mean_std(np.subtract(draws[0], d), sign="+") for d in draws[1:])
    flips = " ".join(labels[choose(scores)] for scores in zip(*line["redraws"])) or "-"
    held = " / ".join(f"{held_out_fid(r):.3f}" for r in line["records"])
    better = f"{labels[held_out_better(line['records'])]} ({held})"
    by_mean = choose_by_mean(draws)
    val_fids = " / ".join(f"{v:.3f}" for v in line["val_fids"])
    table.append(f"| {k} | {line['seed']} | {val_fids} | {labels[line['chosen']]} | {spread} | "
                 f"{paired} | {flips} | {labels[by_mean]} | {better} |")
    for rule, chosen in (("the run's draw", line["chosen"]), ("the mean of the draws", by_mean)):
      record = line["records"][chosen]
      row = record["row"]
      cells = verdicts.targets(row, fixed, fixed_2k, num_samples=record["num_samples"],
                               full_quality_fid=full_quality_fid)
      targets.append(f"| {k} | {line['seed']} | {rule} | {labels[chosen]} | "
                     f"{row['fid']:.3f} / {row['fid_2']:.3f} | {row['recall']:.3f} | "
                     f"{fixed_text} | {cells['beats']} | {cells['gap']} | {cells['recall']} | "
                     f"{cells['beats_2k']} |")
  text = [
      f"# {choice.title}", "",
      f"{choice.runs} Each run's committed sampler is scored on its own validation split (500 "
      "samples against the 500 training digits carved off, the noise its validations used). "
      f"The first rule keeps the {lower} validation FID, {a} on a tie. Each file is also scored "
      "on other draws of validation samples (the same split; noise seeds the run's + 1000, "
      "+ 2000, ...): their spread is the validation score's own noise, and the choice on each "
      "redraw says whether the first rule's choice survives it; the draws are shared (the same "
      f"noise seeds for {every} files of {kind}), so the difference on the same draw is the "
      "comparison's own noise. The second rule, reported beside the first without replacing "
      f"it, keeps the {lower} mean validation FID over all the draws (what had been seen when "
      "each rule was written down: NOTES.md beside this file). The "
      f"held-out better run has the {lower} held-out FID averaged over the two evaluation seeds: "
      "what the rules try to guess without seeing it. Held-out FID and recall are the chosen "
      "run's record (1000 samples against the 1000 held-out digits, evaluation seeds 1234 and "
      "1334). The gap closed is (best fixed - chosen) / (best fixed - "
      f"{full_quality_fid}), the model's 1000-step ancestral FID, on each seed. Generated by "
      f"`python -m experiments.{choice.name}.run`.",
      "", *table, "",
      "The targets for the run each rule chose (held-out digits):", "", *targets, ""]
  if missing:
    text += ["Not scored yet (sampler files missing): " + ", ".join(f"`{m}`" for m in missing)
             + ".", ""]
  body = "\n".join(text)
  with files.atomic_write(path) as f:
    f.write(body)
  return body


def _mean_std(values, sign: str = "") -> str:
  """"0.012 +- 0.034" ("+0.012 +- 0.034" with sign="+"): the mean and the sample std (0 for one
  value)."""
  std = np.std(values, ddof=1) if len(values) > 1 else 0
  return f"{np.mean(values):{sign}.3f} +- {std:.3f}"


def flag_values() -> dict:
  """run()'s keyword arguments from the flags define_flags defined."""
  return {name: getattr(FLAGS, name)
          for name in ("out", "workdir", "fixed_results", "redraws", "full_quality_fid")}


def run(choice: Choice, *, out: str, workdir: str, fixed_results: str, redraws: int,
        full_quality_fid: float) -> str:
  """Scores every group whose files are there (a file is scored again only where it changed
  since, or where the number of redraws did), writes out/scores.csv after each file and
  out/RESULTS.md at the end; returns RESULTS.md. Every group is checked before anything is
  scored. The arguments are define_flags' flags."""
  logs.quiet_library_logs()
  if not os.path.isfile(fixed_results):
    raise FileNotFoundError(f"--fixed_results={fixed_results}: no such file (the "
                            "results.csv experiments/paper_tables/run.py writes)")
  repo = os.path.dirname(EXPERIMENTS)
  todo, missing = [], []
  for k, seed, paths in choice.groups():
    absent = [os.path.relpath(p, repo) for p in paths if not os.path.isfile(p)]
    if absent:
      missing += absent
      continue
    check_group(paths, choice)
    todo.append((k, seed, paths))
  os.makedirs(out, exist_ok=True)
  scores_path = os.path.join(out, "scores.csv")
  scores = read_scores(scores_path)
  lines = []
  for k, seed, paths in todo:
    for p in paths:
      name, digest = os.path.relpath(p, repo), sha256(p)
      kept = scores.get(name, {})
      if kept.get("sha256") != digest or len(redraws_of(kept)) != redraws:
        start = time.perf_counter()
        own, *others = score(p, workdir, redraws)
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
  return report(lines, read_rows(fixed_results), os.path.join(out, "RESULTS.md"),
                choice, full_quality_fid=full_quality_fid, missing=missing)


def cli(choice: Choice) -> None:
  """The choice's command: its flags, then run() on them, RESULTS.md printed."""
  define_flags(choice.name)

  def main(argv):
    del argv
    print(run(choice, **flag_values()))

  app.run(main)


def check_committed(choice: Choice, scratch: str) -> None:
  """ValueError unless the committed experiments/<choice.name>/ holds a score of every file of
  every group that is there (the file as committed, with define_flags' 3 redraws) and nothing
  else, every such group differs in choice.varied alone, and RESULTS.md is what run() makes of
  those scores (rerun into `scratch`, a folder of its own, with nothing to score)."""
  repo, folder = os.path.dirname(EXPERIMENTS), os.path.join(EXPERIMENTS, choice.name)
  present = [paths for _, _, paths in choice.groups() if all(map(os.path.isfile, paths))]
  if not present:
    raise ValueError(f"{choice.name}: no group's files are committed")
  for paths in present:
    check_group(paths, choice)
  scores = read_scores(os.path.join(folder, "scores.csv"))
  wanted = {os.path.relpath(p, repo) for paths in present for p in paths}
  if set(scores) != wanted:
    raise ValueError(f"{folder}/scores.csv scores {sorted(set(scores) - wanted)} beyond the "
                     f"groups' files and lacks {sorted(wanted - set(scores))}")
  for name, row in scores.items():
    if sha256(os.path.join(repo, name)) != row["sha256"] or len(redraws_of(row)) != 3:
      raise ValueError(f"{folder}/scores.csv: {name} changed since it was scored, or was "
                       f"scored on {len(redraws_of(row))} redraws, not 3")
  os.makedirs(scratch, exist_ok=True)
  with open(os.path.join(folder, "scores.csv"), encoding="utf-8") as f_in, \
      open(os.path.join(scratch, "scores.csv"), "w", encoding="utf-8") as f_out:
    f_out.write(f_in.read())
  made = run(choice, out=scratch, workdir=os.path.join(scratch, "problems"),
             fixed_results=os.path.join(EXPERIMENTS, "paper_tables", "results.csv"), redraws=3,
             full_quality_fid=0.192)
  with open(os.path.join(folder, "RESULTS.md"), encoding="utf-8") as f:
    if f.read() != made:
      raise ValueError(f"{folder}/RESULTS.md is not what `python -m experiments."
                       f"{choice.name}` makes of its scores.csv now: rerun it")
