"""The headline learned sampler's learning rate and start chosen together on the validation split.

The two pairwise choices (learning_rate_choice/, start_choice/) each set one alternative against
configs/mnist.py's run. Together they ask what a protocol that learns from three settings and keeps
the one the validation split ranks first would give: at every K with training seed 0 (and with seeds
1 and 2) the group is configs/mnist.py's run (learning rate 5e-3, the start selected among the
noise-free fixed samplers: the paper tables' row), the same at 1e-3 (the ablation's
`all_noise_free_lr1e-3`) and the same from DDIM on the linear stride (the ablation's
`all_ddim_linear`). Each differs from the first in the learning rate or the start alone (checked).
The rules are experiments/lib/choice.py's, unchanged: the lowest validation FID on the run's own
draw, and the lowest mean over that draw and three redraws, configs/mnist.py's run on a tie.
Run (resumable: each score is kept as it is made):
  python -m experiments.rate_and_start_choice.run
Writes scores.csv and RESULTS.md beside this file; a group whose files are not there yet is
named as missing.
"""

from __future__ import annotations

from experiments.lib import choice as choice_lib
from experiments.lib.protocol import TABLE_STEPS

HERE = choice_lib.EXPERIMENTS


def groups(root: str = HERE) -> list[tuple[int, int, tuple[str, str, str]]]:
  """(K, training seed, (configs/mnist.py's run's sampler file, the 1e-3 run's, the
  DDIM-linear run's)) at every K of the paper tables with training seeds 0 and 1 (the
  ablation's `*_seed1` variants), and at K = 10 with training seed 2 (`*_seed2`)."""
  seed0 = (choice_lib.HEADLINE, "all_noise_free_lr1e-3", "all_ddim_linear")
  seed1 = ("all_noise_free_seed1", "all_noise_free_lr1e-3_seed1", "all_ddim_linear_seed1")
  seed2 = ("all_noise_free_seed2", "all_noise_free_lr1e-3_seed2", "all_ddim_linear_seed2")
  return sorted(choice_lib.groups_at(seed0, TABLE_STEPS, 0, root)
                + choice_lib.groups_at(seed1, TABLE_STEPS, 1, root)
                + choice_lib.groups_at(seed2, (10,), 2, root))


CHOICE = choice_lib.Choice(
    name="rate_and_start_choice", labels=("default", "1e-3", "DDIM linear"),
    varied=("train.learning_rate", "sampler.start", "sampler.stride", "sampler.eta"),
    what="the learning rate or the start", groups=groups,
    title="The learning rate and the start chosen together on the validation split",
    runs=("GGDM+PRED+TIME (KID loss), configs/mnist.py's levers, training seed 0 (and 1, "
          "the ablation's `*_seed1` variants of the same three, and 2 at K = 10, `*_seed2`): "
          "configs/mnist.py's run (\"default\": learning rate 5e-3, the start selected on the "
          "validation digits among the fixed samplers without noise; the paper tables' row), "
          "the same at learning rate 1e-3 (\"1e-3\": the ablation's `all_noise_free_lr1e-3`) and "
          "the same from DDIM on the linear stride without a choice (\"DDIM linear\": the "
          "ablation's `all_ddim_linear`)."))


if __name__ == "__main__":
  choice_lib.cli(CHOICE)
