"""experiments/learning_rate_choice.py: its committed pairs differ in the learning rate alone,
every file of theirs is scored as committed, and RESULTS.md is what those scores make (the
machinery's own tests: tests/test_run_choice.py)."""

import os

import pytest

from experiments import learning_rate_choice, run_choice

pytestmark = pytest.mark.slow  # end-to-end runs, subprocesses or committed results


def test_the_committed_pairs_scores_and_results(tmp_path):
  pairs = learning_rate_choice.pairs()
  assert [(k, seed) for k, seed, _ in pairs] == [(5, 0), (10, 0), (15, 0), (15, 1), (20, 0),
                                                (25, 0), (25, 1)]
  assert all(os.path.isfile(p) for _, _, paths in pairs for p in paths)
  run_choice.check_committed(learning_rate_choice.CHOICE, str(tmp_path))
