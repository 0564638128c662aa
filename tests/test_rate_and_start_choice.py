"""experiments/rate_and_start_choice.py: its committed groups differ from configs/mnist.py's
run in the learning rate or the start alone, every file of theirs is scored as committed, and
RESULTS.md is what those scores make (the machinery's own tests: tests/test_run_choice.py)."""

import os

from experiments import rate_and_start_choice, run_choice


def test_the_committed_groups_scores_and_results(tmp_path):
  groups = rate_and_start_choice.groups()
  assert [(k, seed) for k, seed, _ in groups] == [(5, 0), (5, 1), (10, 0), (10, 1), (15, 0),
                                                 (15, 1), (20, 0), (25, 0), (25, 1)]
  # Every group with training seed 0 is committed.
  assert all(all(map(os.path.isfile, paths)) for _, seed, paths in groups if seed == 0)
  run_choice.check_committed(rate_and_start_choice.CHOICE, str(tmp_path))
