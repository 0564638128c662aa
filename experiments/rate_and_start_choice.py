"""The headline learned sampler's learning rate and start chosen together on the validation split.

The two pairwise choices (learning_rate_choice.py, start_choice.py) each set one alternative
against configs/mnist.py's run. Together they ask what a protocol that learns from three
settings and keeps the one the validation split ranks first would give: at every K with training
seed 0 (and with seeds 1 and 2) the group is configs/mnist.py's run (learning rate
5e-3, the start selected among the noise-free fixed samplers: the paper tables' row), the same
at 1e-3 (the ablation's `all_noise_free_slow`) and the same from DDIM on the linear stride (the
ablation's `all_ddim_linear`). Each differs from the first in the learning rate or the start
alone (checked). The rules are run_choice.py's, unchanged: the lowest validation FID on the
run's own draw, and the lowest mean over that draw and three redraws, configs/mnist.py's run on
a tie.
Run (resumable: each score is kept as it is made):
  python -m experiments.rate_and_start_choice
Writes experiments/rate_and_start_choice/scores.csv and RESULTS.md; a group whose files are not
there yet is named as missing.
"""

from __future__ import annotations

from experiments import run_choice
from experiments.paper_protocol import TABLE_STEPS

HERE = run_choice.HERE


def groups(root: str = HERE) -> list[tuple[int, int, tuple[str, str, str]]]:
  """(K, training seed, (configs/mnist.py's run's sampler file, the 1e-3 run's, the
  DDIM-linear run's)) at every K of the paper tables with training seeds 0 and 1 (the
  ablation's `*_seed1` variants), and at K = 10 with training seed 2 (`*_seed2`)."""
  seed0 = (run_choice.HEADLINE, "all_noise_free_slow", "all_ddim_linear")
  seed1 = ("all_noise_free_seed1", "all_noise_free_slow_seed1", "all_ddim_linear_seed1")
  seed2 = ("all_noise_free_seed2", "all_noise_free_slow_seed2", "all_ddim_linear_seed2")
  return sorted(run_choice.groups_at(seed0, TABLE_STEPS, 0, root)
                + run_choice.groups_at(seed1, TABLE_STEPS, 1, root)
                + run_choice.groups_at(seed2, (10,), 2, root))


CHOICE = run_choice.Choice(
    name="rate_and_start_choice", labels=("default", "1e-3", "DDIM linear"),
    varied=("train.learning_rate", "sampler.start", "sampler.stride", "sampler.eta"),
    what="the learning rate or the start", groups=groups,
    title="The learning rate and the start chosen together on the validation split",
    runs=("GGDM+PRED+TIME (KID loss), configs/mnist.py's levers, training seed 0 (and 1, "
          "the ablation's `*_seed1` variants of the same three, and 2 at K = 10, `*_seed2`): "
          "configs/mnist.py's run (\"default\": learning rate 5e-3, the start selected on the "
          "validation digits among the fixed samplers without noise; the paper tables' row), "
          "the same at learning rate 1e-3 (\"1e-3\": the ablation's `all_noise_free_slow`) and "
          "the same from DDIM on the linear stride without a choice (\"DDIM linear\": the "
          "ablation's `all_ddim_linear`)."),
    blindness=("Neither rule is blind at training seed 0: the rules are the two pairwise "
               "choices' (learning_rate_choice.py, start_choice.py), unchanged, but the groups "
               "of three were written down after every seed-0 run's held-out row had been seen, "
               "and after the pairwise choices' validation scores at every K but K = 20 and 25 "
               "of the start: they say what choosing among the three would have given. The "
               "groups with training seed 1 at K = 15 and 25 were written down, with this "
               "reading, before either DDIM-linear run with seed 1 had started (the other two "
               "runs' held-out rows had been seen): the protocol holds there if the run the "
               "mean of the draws keeps is below the best fixed sampler at K by more than the "
               "seed difference and closes at least half of the gap to the 1000-step FID on "
               "both evaluation seeds. The groups with training seed 1 at K = 5 and 10 were "
               "written down, with the same reading, before either 1e-3 run with seed 1 had "
               "started (the other two runs' held-out rows and validation scores had been "
               "seen). The group with training seed 1 at K = 20 was written down, with the "
               "same reading, before any of its three runs had started, and so was the group with "
               "training seed 2 at K = 10, after the protocol had held at every K with seed "
               "1."))


if __name__ == "__main__":
  run_choice.cli(CHOICE)
