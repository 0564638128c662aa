"""What the paper tables run, shared by the runner (paper_tables), the report (paper_report), the
ablation and the re-evaluation (evaluate_samplers): the K of the tables, the fixed and the learned
samplers, the DDSS protocol of the learned rows and its levers, the evaluation seeds, the parts,
the results.csv columns.
"""

from __future__ import annotations

from ddss_jax.configs import mnist
from ddss_jax.data.mnist import SPLIT_SIZES
from ddss_jax.util.errors import ConfigError

TABLE_STEPS = (5, 10, 15, 20, 25)
FIXED_STEPS = TABLE_STEPS + (30, 40, 50)
# The solvers on the quadratic stride too: where the learned-time solvers start. (They refuse
# its repeated times from K = 30 on; those rows are skipped.)
FIXED = (("ddpm", "linear"), ("ddpm", "quadratic"), ("ddim", "linear"), ("ddim", "quadratic"),
         ("dpm-solver++2m", "linear"), ("dpm-solver++2m", "logsnr"),
         ("dpm-solver++2m", "quadratic"), ("unipc", "linear"), ("unipc", "logsnr"),
         ("unipc", "quadratic"), ("ipndm", "linear"), ("ipndm", "logsnr"),
         ("ipndm", "quadratic"))
# (family, loss, initial stride): every learned sampler starts from the quadratic stride, as
# configs/mnist.py (GGDM families as DDIM there, the learned-time solvers as their solver).
LEARNED = (("vars", "kid", "quadratic"), ("ggdm", "kid", "quadratic"),
           ("ggdm+pred", "kid", "quadratic"), ("ggdm+time", "kid", "quadratic"),
           ("ggdm+pred+time", "kid", "quadratic"), ("ggdm+pred+time", "teacher", "quadratic"),
           ("dpm-solver++2m+time", "kid", "quadratic"), ("unipc+time", "kid", "quadratic"))
# Every learned sampler runs at these K; at the tables' other K only the headline row, GGDM +PRED
# +TIME with the KID loss: a learned row costs about 10 minutes at K = 5 on 2 CPU cores and
# grows with K, and the families are compared at K = 5 and 10 (as the paper's tables do).
ALL_LEARNED_STEPS = (5, 10)
HEADLINE = ("ggdm+pred+time", "kid")
# The teacher of the teacher loss (ddss_jax.learn.teacher's default), evaluated as a row: its
# quality bounds what matching it can reach.
TEACHER_ROW = ("ddim", "linear", 200)
PARTS = ("fixed",) + tuple(f"k{k}" for k in TABLE_STEPS) + ("report",)
# The first seed's columns, then the second evaluation seed's (empty in older files).
COLUMNS = ("sampler", "num_steps", "loss", "fid", "kid", "kid_std", "precision", "recall")
SEED2_COLUMNS = ("fid_2", "kid_2")
# The second evaluation seed is the first plus this: not plus 1, which is the first seed of an
# independent rerun (--seed=1), whose noise must stay apart from this run's.
SECOND_SEED_OFFSET = 100
GRID_STEPS = (5, 10)
GRID_IMAGES = 64

# The DDSS optimisation's levers, as config overrides on configs/mnist.py ("group.key": value):
# name: (what it changes, overrides). The ablation turns each on alone; PROTOCOL below picks those
# the paper tables' learned rows use.
LEVERS = {
    "bank": (f"KID against all {SPLIT_SIZES['train']} training digits' features, computed once",
             {"loss.kid_bank_size": SPLIT_SIZES["train"]}),
    "cosine": ("cosine learning rate to 0, 10 warm-up updates",
               {"train.lr_schedule": "cosine", "train.warmup_steps": 10}),
    "ema": ("EMA of the iterates (decay 0.95) saved and evaluated", {"train.ema_decay": 0.95}),
    "accumulate": ("2 batches of 64 per update (300 batches, 150 updates)",
                   {"train.accumulate_steps": 2, "train.num_train_steps": 300}),
    "validation": ("the best of 6 validations (every 25 of 150 steps, 500 samples against 500 "
                   "carved digits)", {"train.validate_every_steps": 25}),
    "ddpm_start": ("start from ancestral DDPM, linear stride (GGDM represents it exactly)",
                   {"sampler.eta": 1.0, "sampler.stride": "linear"}),
    "select_start": ("start from the fixed sampler the family represents (each stride; DDIM, "
                     "DDPM and, for GGDM, DPM-Solver++(2M) and UniPC) with the best FID on 500 "
                     "carved digits (docs/method.md, section 7)",
                     {"sampler.start": "select"}),
    "lr1e-3": ("learning rate 1e-3 instead of configs/mnist.py's 5e-3 (from UniPC at K = 10, "
             "5e-3 raised the validation KID at every validation)",
             {"train.learning_rate": 1e-3}),
    "time_lr": ("the +TIME logits at 5x the learning rate (at 1x the learned times barely "
                "moved from the start's)", {"train.time_lr_scale": 5.0}),
}

# The DDSS protocol of every learned row of the paper tables: overrides on configs/mnist.py,
# applied after the row's family, K, stride and loss (so a lever may replace the stride or the
# step count). {} is configs/mnist.py as is, its levers on (ON below, the ablation's all_select);
# results.csv files written before they were its default ran with them off (OFF below).
PROTOCOL: dict = {}


def fields_of(config) -> dict:
  """The config's fields as {"group.key": value} (the keys of overrides)."""
  return {f"{group}.{key}": value for group, fields in config.items() if hasattr(fields, "keys")
          for key, value in fields.items()}


def _lever_fields(levers: bool) -> dict:
  """configs/mnist.py's lever fields ("group.key": value), with its levers on or off: the fields
  whose values get_config(levers=True) and get_config(levers=False) disagree on."""
  on, off = fields_of(mnist.get_config(levers=True)), fields_of(mnist.get_config(levers=False))
  return {f: (on if levers else off)[f] for f in on if on[f] != off[f]}


# configs/mnist.py's levers as overrides: ON is its default, OFF the protocol before them
# (`PROTOCOL = OFF` reruns the tables as they were run before).
ON, OFF = _lever_fields(True), _lever_fields(False)


def apply_overrides(config, overrides: dict, *, source: str) -> None:
  """Sets each "group.key": value of overrides on config (in place).

  Raises ConfigError naming the field and `source` (where the overrides come from) for a field
  configs/mnist.py does not have; the values themselves are checked by ddss_jax.run.setup.
  """
  for field, value in overrides.items():
    group, _, key = field.partition(".")
    if group not in config or not hasattr(config[group], "keys") or key not in config[group]:
      raise ConfigError(field, value, f"a config field 'group.key' of configs/mnist.py "
                        f"(from {source})")
    config[group][key] = value


def describe(overrides: dict) -> str:
  """The overrides as Markdown text, "none" for {}."""
  return ", ".join(f"`{k}` = {v!r}" for k, v in overrides.items()) or "none"


def check_choices(flag: str, given, valid) -> None:
  """Raises ValueError naming the flag and the valid choices if any value of `given` is not one."""
  unknown = [v for v in given if v not in valid]
  if unknown:
    raise ValueError(f"--{flag}: unknown {unknown}; valid choices: {list(valid)}")


def learned_at(num_steps: int, learned=LEARNED, all_steps=ALL_LEARNED_STEPS) -> tuple:
  """The (family, loss, stride) of `learned` that the tables run at K = num_steps: all of them at
  `all_steps`, the headline row alone elsewhere."""
  return tuple(row for row in learned if num_steps in all_steps or row[:2] == HEADLINE)
