"""The headline learned sampler's start chosen after learning from it, on the validation split.

configs/mnist.py chooses the start before learning: the noise-free fixed sampler with the best
validation FID. The ablation's `all_ddim_linear` rows learn from DDIM on the linear stride
instead, with nothing else changed (checked), and at K = 5 land far lower on the held-out
digits. Could the validation split have told, after the walk? Each pair is the default's run (the
paper tables' row; at K = 5, 10 and 15 also training seed 1, the ablation's
`all_noise_free_seed1`) and the DDIM-linear run with the same training seed; each committed
sampler file is scored on its own run's validation split (experiments/lib/choice.py), and the
rule keeps the lower validation FID, the default on a tie. A rule that walks from both starts
doubles the DDSS steps; this says what it would buy. Run (resumable: each score is kept as it is
made):
  python -m experiments.start_choice.run
Writes scores.csv and RESULTS.md beside this file; a pair whose files are not there yet is named
as missing.
"""

from __future__ import annotations

from experiments.lib import choice as choice_lib
from experiments.lib.protocol import TABLE_STEPS

HERE = choice_lib.EXPERIMENTS


def pairs(root: str = HERE) -> list[tuple[int, int, tuple[str, str]]]:
  """(K, training seed, (the default's run's sampler file, the DDIM-linear run's)) of every
  pair."""
  return sorted(choice_lib.groups_at((choice_lib.HEADLINE, "all_ddim_linear"), TABLE_STEPS, 0,
                                     root)
                + choice_lib.groups_at(("all_noise_free_seed1", "all_ddim_linear_seed1"),
                                       (5, 10, 15), 1, root))


CHOICE = choice_lib.Choice(
    name="start_choice", labels=("selected", "DDIM linear"),
    varied=("sampler.start", "sampler.stride", "sampler.eta"), what="the start", groups=pairs,
    title="The start chosen on the validation split, after learning from it",
    runs=("GGDM+PRED+TIME (KID loss), configs/mnist.py's levers, from the start configs/mnist.py "
          "selects on the validation digits among the fixed samplers without noise (\"selected\": "
          "the paper tables' row; at K = 5, 10 and 15 also with training seed 1, the ablation's "
          "`all_noise_free_seed1`) and from DDIM on the linear stride without a choice (\"DDIM "
          "linear\": the ablation's `all_ddim_linear` and `all_ddim_linear_seed1`)."))


if __name__ == "__main__":
  choice_lib.cli(CHOICE)
