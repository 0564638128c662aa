"""The headline learned sampler's learning rate chosen on the validation split, at every K.

GGDM+PRED+TIME (KID loss) with configs/mnist.py's levers was run at two learning rates: 5e-3
(configs/mnist.py's; the paper tables' row, experiments/paper_tables/samplers/) and 1e-3 (the
ablation's `all_noise_free_lr1e-3`, experiments/ablation/samplers/), and at K = 15 and 25 also with
training seed 1 (`all_noise_free_seed1`, `all_noise_free_lr1e-3_seed1`). The two runs of a pair
differ in the learning rate alone (checked). Each committed sampler file is scored on its own
run's validation split (experiments/lib/choice.py: the 500 carved training digits and the noise
the run's validations used, never the held-out digits), and the rule keeps the run with the
lower validation FID, the default 5e-3 on a tie. The chosen run's held-out row is its record's
(the evaluation seeds 1234 and 1334; re-evaluate with experiments.lib.records), set against the
best fixed sampler at K and at 2K in experiments/paper_tables/results.csv. Run (resumable: each
score is kept as it is made):
  python -m experiments.learning_rate_choice.run
Writes scores.csv and RESULTS.md beside this file; a pair whose files are not there yet is
named as missing.
"""

from __future__ import annotations

from experiments.lib import choice as choice_lib
from experiments.lib.protocol import TABLE_STEPS

HERE = choice_lib.EXPERIMENTS


def pairs(root: str = HERE) -> list[tuple[int, int, tuple[str, str]]]:
  """(K, training seed, (the 5e-3 run's sampler file, the 1e-3 run's)) of every pair."""
  return sorted(choice_lib.groups_at((choice_lib.HEADLINE, "all_noise_free_lr1e-3"), TABLE_STEPS,
                                     0, root)
                + choice_lib.groups_at(("all_noise_free_seed1", "all_noise_free_lr1e-3_seed1"),
                                       (15, 25), 1, root))


CHOICE = choice_lib.Choice(
    name="learning_rate_choice", labels=("5e-3", "1e-3"), varied=("train.learning_rate",),
    what="the learning rate", groups=pairs,
    title="The learning rate chosen on the validation split",
    runs=("GGDM+PRED+TIME (KID loss), configs/mnist.py's levers, at 5e-3 (configs/mnist.py's "
          "rate: the paper tables' row) and at 1e-3 (the ablation's `all_noise_free_lr1e-3`; at "
          "K = 15 and 25 also both with training seed 1)."))


if __name__ == "__main__":
  choice_lib.cli(CHOICE)
