"""The headline learned sampler's learning rate chosen on the validation split, at every K.

GGDM+PRED+TIME (KID loss) with configs/mnist.py's levers was run at two learning rates: 5e-3
(configs/mnist.py's; the paper tables' row, experiments/samplers/) and 1e-3 (the ablation's
`all_noise_free_slow`, experiments/ablation/samplers/), and at K = 15 and 25 also with training
seed 1 (`all_noise_free_seed1`, `all_noise_free_slow_seed1`). The two runs of a pair differ in the
learning rate alone (checked). Each committed sampler file is scored on its own run's validation
split (run_choice.py: the 500 carved training digits and the noise the run's validations used,
never the held-out digits), and the rule keeps the run with the lower validation FID, the
default 5e-3 on a tie. The chosen run's held-out row is its record's (the evaluation seeds 1234
and 1334; re-evaluate with experiments.evaluate_samplers), set against the best fixed sampler at
K and at 2K in experiments/results.csv. Run (resumable: each score is kept as it is made):
  python -m experiments.learning_rate_choice
Writes experiments/learning_rate_choice/scores.csv and RESULTS.md; a pair whose files are not
there yet is named as missing.
"""

from __future__ import annotations

from experiments import run_choice
from experiments.paper_protocol import TABLE_STEPS

HERE = run_choice.HERE


def pairs(root: str = HERE) -> list[tuple[int, int, tuple[str, str]]]:
  """(K, training seed, (the 5e-3 run's sampler file, the 1e-3 run's)) of every pair."""
  return sorted(run_choice.groups_at((run_choice.HEADLINE, "all_noise_free_slow"), TABLE_STEPS,
                                     0, root)
                + run_choice.groups_at(("all_noise_free_seed1", "all_noise_free_slow_seed1"),
                                       (15, 25), 1, root))


CHOICE = run_choice.Choice(
    name="learning_rate_choice", labels=("5e-3", "1e-3"), varied=("train.learning_rate",),
    what="the learning rate", groups=pairs,
    title="The learning rate chosen on the validation split",
    runs=("GGDM+PRED+TIME (KID loss), configs/mnist.py's levers, at 5e-3 (configs/mnist.py's "
          "rate: the paper tables' row) and at 1e-3 (the ablation's `all_noise_free_slow`; at "
          "K = 15 and 25 also both with training seed 1)."),
    blindness=("Both rules use validation scores alone, but they are not blind to the held-out "
               "digits: the 1e-3 runs were added after the K = 25 row at 5e-3 had been seen; "
               "the first rule was written down after the held-out rows of both rates at K = 5, "
               "10 and 25 had been seen (before any validation score here was computed), the "
               "second after the held-out rows at every K and the first rule's scores had been "
               "seen (before any redraw was scored)."))


if __name__ == "__main__":
  run_choice.cli(CHOICE)
