"""The generated pages are what their generator writes from the committed CSVs: the README's
headline table and docs/results.md; the front door and the hand-written reading stay short."""

import os

import pytest

from experiments import report
from experiments.lib.table import read_rows

pytestmark = pytest.mark.slow  # committed results


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def test_the_readme_headline_is_what_the_generator_writes():
  text = _read(report.README)
  assert report.readme(text, read_rows(report.PAPER_ROWS)) == text, (
      "README.md's headline is stale: run python -m experiments.report")


def test_the_results_page_is_what_the_generator_writes():
  page = report.results_page(read_rows(report.PAPER_ROWS), _read(report.READING))
  assert page == _read(report.RESULTS_PAGE), (
      "docs/results.md is stale: run python -m experiments.report")


def test_the_headline_has_a_row_per_k_with_the_learned_sampler():
  lines = report.headline(read_rows(report.PAPER_ROWS))
  assert [line.split(" | ")[0] for line in lines[2:]] == ["| 5", "| 10", "| 15", "| 20", "| 25"]


def test_the_front_door_and_the_reading_stay_short():
  assert os.path.getsize(report.README) <= 8192
  assert os.path.getsize(report.READING) <= 3072


def test_every_study_page_exists():
  for path, _ in report.STUDIES:
    assert os.path.exists(os.path.join(report.ROOT, path)), path


def test_a_readme_without_the_block_is_refused():
  with pytest.raises(ValueError, match="headline block once"):
    report.readme("# no block", [])
