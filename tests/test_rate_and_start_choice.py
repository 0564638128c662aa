"""experiments/rate_and_start_choice.py: its committed groups differ from configs/mnist.py's
run in the learning rate or the start alone, every file of theirs is scored as committed, and
RESULTS.md is what those scores make (the machinery's own tests: tests/test_run_choice.py)."""

import os

import pytest

from configs import mnist_choice
from ddss_jax import config as config_lib
from experiments import rate_and_start_choice, run_choice

pytestmark = pytest.mark.slow  # end-to-end runs, subprocesses or committed results


def test_the_committed_groups_scores_and_results(tmp_path):
  groups = rate_and_start_choice.groups()
  assert [(k, seed) for k, seed, _ in groups] == [(5, 0), (5, 1), (10, 0), (10, 1), (10, 2),
                                                 (15, 0), (15, 1), (20, 0), (20, 1), (25, 0),
                                                 (25, 1)]
  # Every group with training seed 0 is committed.
  assert all(all(map(os.path.isfile, paths)) for _, seed, paths in groups if seed == 0)
  run_choice.check_committed(rate_and_start_choice.CHOICE, str(tmp_path))


def test_configs_mnist_choice_learns_each_seed0_groups_runs():
  """configs/mnist_choice.py at each K learns the seed-0 group's three runs, in its order (up to
  the fields that change nothing learned) and keeps one by the mean over four draws, the run's
  own and three redraws: the second rule's row of RESULTS.md is what it gives."""
  choice = mnist_choice.get_config()
  assert choice.choice.draws == 4
  for k, seed, paths in rate_and_start_choice.groups():
    if seed == 0:
      choice.sampler.num_steps = k
      for path, run in zip(paths, config_lib.choice_runs(choice), strict=True):
        recorded = config_lib.flatten(run_choice.config_of(path))
        learned = config_lib.flatten(run)
        assert {f for f in recorded if recorded[f] != learned[f]} <= set(
            run_choice.NOT_LEARNING), path
