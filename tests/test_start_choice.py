"""experiments/start_choice.py: its committed pairs differ in the start alone, every file of
theirs is scored as committed, and RESULTS.md is what those scores make (the machinery's own
tests: tests/test_run_choice.py)."""

import os

import pytest

from experiments import run_choice, start_choice

pytestmark = pytest.mark.slow  # end-to-end runs, subprocesses or committed results


def test_the_committed_pairs_scores_and_results(tmp_path):
  pairs = start_choice.pairs()
  assert [(k, seed) for k, seed, _ in pairs] == [(5, 0), (5, 1), (10, 0), (10, 1), (15, 0),
                                                (15, 1), (20, 0), (25, 0)]
  # The default's runs are the paper tables' rows and the ablation's; every pair's files are
  # committed.
  assert all(all(map(os.path.isfile, paths)) for _, _, paths in pairs)
  run_choice.check_committed(start_choice.CHOICE, str(tmp_path))
