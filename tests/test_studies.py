"""Every study under experiments/ as committed: its RESULTS.md is what its generator makes of its
committed rows, every committed sampler file's evaluation record is its row, and the choices'
scores are of the files as committed. The tests read the studies' data; adding a run edits none.
"""

import csv
import glob
import json
import os

import pytest

from configs import mnist_choice
from ddss_jax import config as config_lib
from experiments.ablation import run as ablation
from experiments.guidance import report as guidance_report
from experiments.learning_rate_choice.run import CHOICE as RATE
from experiments.lib import choice as choice_lib, records
from experiments.paper_tables import run as paper_tables
from experiments.rate_and_start_choice.run import CHOICE as BOTH
from experiments.start_choice.run import CHOICE as START

pytestmark = pytest.mark.slow  # committed results

EXPERIMENTS = choice_lib.EXPERIMENTS
METRICS = ("fid", "kid", "kid_std", "precision", "recall", "fid_2", "kid_2")


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def test_the_paper_tables_results_are_what_the_rows_make(tmp_path):
  assert paper_tables.committed_results(str(tmp_path)) == _read(
      os.path.join(EXPERIMENTS, "paper_tables", "RESULTS.md"))


def test_the_ablation_results_are_what_the_rows_make():
  assert ablation.committed_results() == _read(os.path.join(EXPERIMENTS, "ablation", "RESULTS.md"))


@pytest.mark.parametrize("choice", [RATE, START, BOTH], ids=lambda c: c.name)
def test_a_choice_scores_its_files_as_committed_and_its_results_are_what_they_make(choice,
                                                                                   tmp_path):
  """check_committed: every group whose files are there is scored, on the files as committed
  (sha256), and differs in the choice's fields alone; RESULTS.md is what the scores make."""
  choice_lib.check_committed(choice, str(tmp_path))


def _key(study: str, path: str) -> tuple:
  """The rows' key of a committed sampler file: (sampler, loss, K) for the paper tables'
  <family>_<loss>_K<k>.json, (variant, K) for the ablation's <variant>_K<k>.json, (sampler, K)
  for the guidance study's guided_<rule>_K<k>.json."""
  stem, _, k = os.path.basename(path)[:-len(".json")].rpartition("_K")
  if study == "paper_tables":
    family, _, loss = stem.rpartition("_")
    return family, loss, int(k)
  if study == "guidance":
    return guidance_report.LEARNED_NAMES[stem.removeprefix("guided_")], int(k)
  return stem, int(k)


def _rows(study: str) -> dict[tuple, dict]:
  """Each study's rows of its learned samplers: results.csv, or the guidance screen's."""
  name = "screen.csv" if study == "guidance" else "results.csv"
  with open(os.path.join(EXPERIMENTS, study, name), newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  if study == "paper_tables":
    return {(r["sampler"], r["loss"], int(r["num_steps"])): r for r in rows}
  if study == "guidance":
    return {(r["sampler"], int(r["num_steps"])): r for r in rows
            if r["sampler"] in guidance_report.LEARNED_NAMES.values()}
  return {(r["variant"], int(r["num_steps"])): r for r in rows}


SAMPLER_FILES = sorted(glob.glob(os.path.join(EXPERIMENTS, "*", "samplers", "*.json")))


def test_every_study_with_samplers_is_known():
  assert {os.path.basename(os.path.dirname(os.path.dirname(p))) for p in SAMPLER_FILES} <= {
      "paper_tables", "ablation", "guidance"}


@pytest.mark.parametrize("path", SAMPLER_FILES, ids=lambda p: os.path.relpath(p, EXPERIMENTS))
def test_every_committed_sampler_file_records_its_row(path):
  """The record's metrics are its study's results.csv row (written with 6 significant digits);
  `python -m experiments.lib.records --samplers=<file>` re-evaluates it to them."""
  study = os.path.basename(os.path.dirname(os.path.dirname(path)))
  with open(path, encoding="utf-8") as f:
    record = json.load(f)["evaluation"]
  row = _rows(study)[_key(study, path)]
  for metric in METRICS + records.CLASS_METRICS:
    if metric in record["row"] and record["row"][metric] is not None:
      assert float(row[metric]) == float(f"{record['row'][metric]:.6g}"), (path, metric)
  seeds = [guidance_report.SCREEN_SEED] if study == "guidance" else [1234, 1334]
  assert record["seeds"] == seeds and record["num_samples"] == 1000


def test_configs_mnist_choice_learns_each_seed0_groups_runs():
  """configs/mnist_choice.py at each K learns the seed-0 group's three runs, in its order (up to
  the fields that change nothing learned) and keeps one by the mean over four draws, the run's
  own and three redraws: the second rule's row of its RESULTS.md is what it gives."""
  choice = mnist_choice.get_config()
  assert choice.choice.draws == 4
  groups = [(k, paths) for k, seed, paths in BOTH.groups() if seed == 0]
  assert groups
  for k, paths in groups:
    choice.sampler.num_steps = k
    for path, run in zip(paths, config_lib.choice_runs(choice), strict=True):
      recorded = config_lib.flatten(choice_lib.config_of(path))
      learned = config_lib.flatten(run)
      assert {f for f in recorded if recorded[f] != learned[f]} <= set(
          choice_lib.NOT_LEARNING), path


def test_the_guidance_results_are_what_the_rows_make():
  folder = os.path.join(EXPERIMENTS, "guidance")
  assert guidance_report.results_text(folder) == _read(os.path.join(folder, "RESULTS.md"))
