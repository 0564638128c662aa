"""Every setting of a run, defined once: its default, a one-line doc, its check, and whether a
resumed run may change it.

A group of settings is a frozen dataclass (SamplerConfig, TrainConfig, ...): what a module
receives, and what a Python caller builds with keyword arguments. Building one checks every
value and raises ConfigError naming `config.<group>.<key>`, the value and what is valid. The
config files' defaults, the validation and the resume rules are derived from these classes
(ddss_jax.config); the problems' groups live beside their builders (ddss_jax.problems).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, ClassVar, TypeVar

import ml_collections

from ddss_jax import samplers
from ddss_jax.samplers import recurrence, schedules, solvers
from ddss_jax.samplers.guidance import Guidance
from ddss_jax.util.errors import ConfigError

Check = Callable[[str, Any], None]
T = TypeVar("T", bound="Group")
SEED_MAX = 2**31 - 1


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def integer(low: int | None = None, high: int | None = None, *, optional: bool = False) -> Check:
  """An int (not a bool) within [low, high]; None too if optional."""
  def check(field, value):
    if optional and value is None:
      return
    if not _is_int(value) or (low is not None and value < low) or (
        high is not None and value > high):
      bounds = " and ".join(b for b in (low is not None and f">= {low}",
                                        high is not None and f"<= {high}") if b)
      raise ConfigError(field, value, "must be an integer" + (f" {bounds}" if bounds else "")
                        + (" or None" if optional else ""))
  return check


def real(low: float | None = None, high: float | None = None, *, above: float | None = None,
         below: float | None = None) -> Check:
  """A finite number (ints are fine) within [low, high] and (above, below)."""
  def check(field, value):
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and (low is None or value >= low)
          and (high is None or value <= high) and (above is None or value > above)
          and (below is None or value < below))
    if not ok:
      bounds = " and ".join(b for b in (low is not None and f">= {low}", above is not None
                                        and f"> {above}", high is not None and f"<= {high}",
                                        below is not None and f"< {below}") if b)
      raise ConfigError(field, value, "must be a finite number" + (f" {bounds}" if bounds else ""))
  return check


def boolean() -> Check:
  """True or False."""
  def check(field, value):
    if not isinstance(value, bool):
      raise ConfigError(field, value, "must be True or False")
  return check


def choice(choices) -> Check:
  """One of the strings `choices`."""
  def check(field, value):
    if not isinstance(value, str) or value not in choices:
      raise ConfigError(field, value, f"valid choices: {list(choices)}")
  check.choices = tuple(choices)
  return check


def text(*, optional: bool = False, pattern: str | None = None) -> Check:
  """A non-empty string (matching `pattern`); None too if optional."""
  def check(field, value):
    if optional and value is None:
      return
    if not isinstance(value, str) or not value or (pattern and not re.fullmatch(pattern, value)):
      raise ConfigError(field, value, "must be a non-empty string" + (
          f" matching {pattern}" if pattern else "") + (" or None" if optional else ""))
  return check


def zero_or_at_least(low: int) -> Check:
  """0 (off) or an integer >= low."""
  def check(field, value):
    if not _is_int(value) or (value != 0 and value < low):
      raise ConfigError(field, value, f"must be 0 (off) or an integer >= {low}")
  return check


def setting(default: Any, doc: str, check: Check, *, resumable: bool = False) -> Any:
  """A field of a settings group. resumable: a resumed run may change it (how long to train,
  how often to log, how to evaluate); any other change is refused (ddss_jax.config)."""
  return dataclasses.field(default=default,
                           metadata={"doc": doc, "check": check, "resumable": resumable})


class Group:
  """A frozen dataclass of settings whose values are checked when it is built."""
  GROUP: ClassVar[str]  # its fields are config.<GROUP>.<key>

  def __post_init__(self):
    for f in dataclasses.fields(self):
      f.metadata["check"](f"{self.GROUP}.{f.name}", getattr(self, f.name))


def from_group(cls: type[T], group: Any) -> T:
  """Builds `cls` from its config group (a ConfigDict or dict); unknown or missing keys and bad
  values raise ConfigError naming the field."""
  values = group.to_dict() if isinstance(group, ml_collections.ConfigDict) else dict(group)
  valid = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(values) - set(valid))
  if unknown:
    raise ConfigError(f"{cls.GROUP}.{unknown[0]}", values[unknown[0]],
                      f"unknown key(s) {unknown} in config.{cls.GROUP}; valid keys: {valid}")
  missing = [key for key in valid if key not in values]
  if missing:
    raise ConfigError(f"{cls.GROUP}.{missing[0]}", None,
                      f"config.{cls.GROUP} lacks key(s) {missing}; configs/default.py has them all")
  return cls(**values)


def as_config_dict(cls: type[Group]) -> ml_collections.ConfigDict:
  """The group's defaults as a ConfigDict; None defaults become typed placeholders so that a
  command-line override can set them."""
  values = {}
  for f in dataclasses.fields(cls):
    if f.default is None:
      kind = int if "int" in str(f.type) else str
      values[f.name] = ml_collections.config_dict.placeholder(kind)
    else:
      values[f.name] = f.default
  return ml_collections.ConfigDict(values)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig(Group):
  """The frozen model's noise schedule."""
  GROUP: ClassVar[str] = "schedule"
  name: str = setting("linear", "linear (Ho et al.) or cosine (Nichol & Dhariwal) betas.",
                      choice(tuple(schedules.SCHEDULES)))
  num_timesteps: int = setting(1000, "T, the frozen model's number of diffusion steps.",
                               integer(2, 100_000))


GUIDANCE_RULES = ("none", "fixed", "learned")
SELECT_RULES = ("select", "select_noise_free")  # the starts chosen on the validation split
START_RULES = ("configured",) + SELECT_RULES + solvers.SOLVERS


def start_solver(start: str) -> str | None:
  """samplers.make's start_solver for a sampler.start value: the solver it names, else None."""
  return start if start in solvers.SOLVERS else None


@dataclasses.dataclass(frozen=True)
class SamplerConfig(Group):
  """The sampler DDSS learns and where it starts (DDIM(eta) at the stride unless `start` says)."""
  GROUP: ClassVar[str] = "sampler"
  family: str = setting(
      "ggdm+pred+time", "vars, ggdm, ggdm+pred, ggdm+time, ggdm+pred+time, dpm-solver++2m+time, "
      "unipc+time, ipndm+time (learnable), or ddpm, ddim, dpm-solver++2m, unipc, ipndm (fixed: "
      "no DDSS steps).",
      choice(samplers.FAMILIES))
  num_steps: int = setting(4, "K, the number of model calls.", integer(1))
  stride: str = setting("quadratic", "The fixed (or initial) times: linear, quadratic (DDIM's) "
                        "or logsnr (uniform in log-SNR from T - 1 to 0).",
                        choice(samplers.STRIDES))
  eta: float = setting(0.0, "The DDIM(eta) it starts from: 0 is DDIM, 1 is DDPM.", real(0, 1))
  start: str = setting("configured", "configured: start from DDIM(eta) at the stride; "
                       "dpm-solver++2m, unipc or ipndm (GGDM families): from that solver at "
                       "the stride; select: from the fixed sampler the family represents (each "
                       "stride; DDIM and DDPM, and for GGDM DPM-Solver++(2M) and UniPC; the "
                       "solver of a +time solver family) that scores best "
                       "on the validation split (train.validation_size, validation_samples, "
                       "select_on), recorded in start.json; select_noise_free: the same among "
                       "the candidates that draw no noise (all but DDPM).", choice(START_RULES))
  gradient: str = setting("adjoint", "adjoint (O(K |x|) memory) or checkpoint (scan + remat, "
                          "O(K^2 |x|); a reference).", choice(recurrence.GRADIENTS))
  unroll: int = setting(1, "Model calls per compiled loop iteration, 1 to K: same results; "
                        "compile time and memory grow with it.", integer(1))
  clip_x0: float = setting(0.0, "r > 0 clips every step's x0 prediction to [-r, r] (the public "
                           "DDPM checkpoints' clip_sample: r = 1); 0 is off.", real(low=0))
  guidance: str = setting("none", "Classifier-free guidance of a conditional model: none, "
                          "fixed (guidance_weight at every step, or within the sigma interval) "
                          "or learned (one weight per step, learned with the rest, starting "
                          "there).", choice(GUIDANCE_RULES))
  guidance_weight: float = setting(1.0, "w of eps_u + w (eps_c - eps_u) (diffusers' "
                                   "guidance_scale; 1: the conditional model alone).", real())
  guidance_sigma_min: float = setting(0.0, "Guidance applies where sigma_min < sigma <= "
                                      "sigma_max (sigma = s / a, EDM's noise level), w = 1 "
                                      "elsewhere; both 0: at every step.", real(low=0))
  guidance_sigma_max: float = setting(0.0, "The interval's upper end; 0: no upper end.",
                                      real(low=0))

  @property
  def start_solver(self) -> str | None:
    """The solver a GGDM family starts from (samplers.make's start_solver); None otherwise."""
    return start_solver(self.start)

  @property
  def selects_start(self) -> bool:
    """Whether the start is chosen on the validation split (ddss_jax.learn.select.select_start)."""
    return self.start in SELECT_RULES

  def __post_init__(self):
    super().__post_init__()
    low, high = self.guidance_sigma_min, self.guidance_sigma_max
    if high and low >= high:
      raise ConfigError("sampler.guidance_sigma_max", high, f"must be 0 (no upper end) or > "
                        f"guidance_sigma_min={low}")

  def guidance_of(self, *, learn: bool | None = None) -> Guidance | None:
    """samplers.make's guidance (None: unguided); learn=False: the same weights held fixed (the
    baseline's)."""
    if self.guidance == "none":
      return None
    low, high = self.guidance_sigma_min, self.guidance_sigma_max
    interval = None if low == 0 and high == 0 else (low, high or math.inf)
    return Guidance(weight=self.guidance_weight, interval=interval,
                    learn=self.guidance == "learned" if learn is None else learn)


@dataclasses.dataclass(frozen=True)
class BaselineConfig(Group):
  """The fixed sampler of the before/after table, at the sampler's K and stride."""
  GROUP: ClassVar[str] = "baseline"
  family: str = setting("ddim", "ddim (with eta), ddpm (eta = 1 always), dpm-solver++2m, unipc "
                        "or ipndm (deterministic: eta must be 0).", choice(samplers.FIXED_FAMILIES),
                        resumable=True)
  eta: float = setting(0.0, "DDIM's eta (not used by ddpm).", real(0, 1), resumable=True)


def check_learnable(family: str, num_train_steps: int) -> None:
  """ConfigError naming sampler.family where DDSS steps are asked of a fixed family."""
  if num_train_steps > 0 and family in samplers.FIXED_FAMILIES:
    raise ConfigError("sampler.family", family, "has nothing to learn with "
                      f"train.num_train_steps={num_train_steps}; valid choices: "
                      f"{[f for f in samplers.FAMILIES if f not in samplers.FIXED_FAMILIES]}")


LOSSES = ("kid", "teacher")
CONDITIONAL_LOSSES = ("within_classes", "joined")
TEACHER_SPACES = ("data", "features")


@dataclasses.dataclass(frozen=True)
class LossConfig(Group):
  """What DDSS minimises: KID against real examples (the paper's loss), or the distance to a
  long fixed sampler's output from the same noise (the teacher)."""
  GROUP: ClassVar[str] = "loss"
  name: str = setting("kid", "kid (KID between samples and real training examples in the "
                      "problem's feature space) or teacher.", choice(LOSSES))
  conditional: str = setting("within_classes", "A conditional problem's KID: within_classes "
                             "(the mean over classes of KID between a class's samples and its "
                             "real examples) or joined (KID on the features joined with the "
                             "condition's embedding).", choice(CONDITIONAL_LOSSES))
  kid_bank_size: int = setting(0, "KID against the features of this many real training "
                               "examples, computed once (0: against a fresh real batch each "
                               "step): the loss's noise then comes from the samples alone.",
                               zero_or_at_least(2))
  teacher_family: str = setting("ddim", "The teacher: a fixed family.",
                                choice(samplers.FIXED_FAMILIES))
  teacher_steps: int = setting(200, "The teacher's number of steps.", integer(1))
  teacher_stride: str = setting("linear", "The teacher's stride.", choice(samplers.STRIDES))
  teacher_pool: int = setting(1024, "(x_T, teacher x_0) pairs drawn once and cached.",
                              integer(2))
  teacher_space: str = setting("data", "Where the squared difference is taken: data or the "
                               "problem's features.", choice(TEACHER_SPACES))
  teacher_dir: str | None = setting(None, "Where the pool is cached (None: the workdir).",
                                    text(optional=True), resumable=True)


NONFINITE = ("stop", "skip")
LR_SCHEDULES = ("constant", "cosine")
SELECT_ON = ("fid", "kid")


@dataclasses.dataclass(frozen=True)
class TrainConfig(Group):
  """The DDSS optimisation: Adam on the sampler parameters."""
  GROUP: ClassVar[str] = "train"
  num_train_steps: int = setting(300, "DDSS optimisation steps.", integer(0), resumable=True)
  batch_size: int = setting(256, "Samples per step (and real examples for the KID loss); global "
                            "over all devices.", integer(2))
  learning_rate: float = setting(5e-3, "Adam's (peak) learning rate.", real(above=0))
  lr_schedule: str = setting("constant", "constant, or cosine: from the peak down to 0 at the "
                             "last update.", choice(LR_SCHEDULES))
  warmup_steps: int = setting(0, "Updates of linear warm-up from 0 to the peak learning rate.",
                              integer(0))
  time_lr_scale: float = setting(1.0, "The learning rate of the +TIME logits relative to the "
                                 "other parameters' (no effect without +time).", real(above=0))
  guidance_lr_scale: float = setting(1.0, "The learning rate of learned guidance weights relative "
                                     "to the other parameters' (no effect unless "
                                     "sampler.guidance is learned).", real(above=0))
  ema_decay: float = setting(0.0, "Decay of the exponential moving average of the sampler "
                             "parameters that is saved and evaluated (0: the last iterate).",
                             real(0, below=1))
  accumulate_steps: int = setting(1, "Batches whose gradients are averaged into one update "
                                  "(optax.MultiSteps); num_train_steps counts batches.",
                                  integer(1))
  validate_every_steps: int = setting(0, "Evaluate the (averaged) parameters on the validation "
                                      "split at the start, every this many steps and at the "
                                      "end, and keep the best (0: keep the last).", integer(0))
  validation_size: int = setting(500, "Training examples carved out as the validation split "
                                 "(with validate_every_steps > 0 or sampler.start select; the "
                                 "loss never sees them).", integer(2))
  validation_samples: int = setting(500, "Fresh samples per validation, the same noise each "
                                    "time.", integer(2))
  validation_draws: int = setting(1, "Draws of validation_samples samples per validation, "
                                  "each with its own fixed noise (seed train.seed + 5 + 1000 "
                                  "i); the scores are their means, so the best step is kept on "
                                  "less sampling noise.", integer(1))
  select_on: str = setting("fid", "The validation metric the best parameters minimise.",
                           choice(SELECT_ON))
  grad_clip: float = setting(1.0, "Global-norm gradient clipping; <= 0 turns it off.", real())
  b1: float = setting(0.9, "Adam's b1.", real(0, below=1))
  b2: float = setting(0.99, "Adam's b2.", real(0, below=1))
  seed: int = setting(0, "Every random stream of the run derives from it (fold_in per step).",
                      integer(0, SEED_MAX))
  log_every_steps: int = setting(50, "Metric lines in metrics.jsonl and the log.", integer(1),
                                 resumable=True)
  checkpoint_every_steps: int = setting(100, "Orbax checkpoints (the last step always saves "
                                        "one).", integer(1), resumable=True)
  nonfinite: str = setting("stop", "A NaN or Inf in the loss or gradients: stop the run (the "
                           "last checkpoint stays the last good state) or skip the update.",
                           choice(NONFINITE))
  max_consecutive_skips: int = setting(10, "With nonfinite skip: stop after this many skipped "
                                       "updates in a row.", integer(1))


@dataclasses.dataclass(frozen=True)
class EvalConfig(Group):
  """Held-out evaluation on fresh samples."""
  GROUP: ClassVar[str] = "eval"
  num_samples: int = setting(2000, "Samples per sampler.", integer(2), resumable=True)
  batch_size: int = setting(1000, "Samples per batch.", integer(1), resumable=True)
  seed: int = setting(1234, "The evaluation's noise (distinct from training's).",
                      integer(0, SEED_MAX), resumable=True)
  reference_steps: int = setting(1000, "Also evaluate ancestral DDPM with this many linear "
                                 "steps, the frozen model's own quality; 0 skips it.", integer(0),
                                 resumable=True)


# One "group.key=value" of an alternative run (choice.among); the value is a Python literal, or
# taken as a string where it is not one.
OVERRIDE = re.compile(r"([a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)=(\S+)")


def overrides(field: str, value: Any) -> None:
  """A tuple (or list) of strings, each one or more space-separated "group.key=value"."""
  if not isinstance(value, (tuple, list)):
    raise ConfigError(field, value, "must be a tuple of strings such as "
                      "(\"train.learning_rate=1e-3\", \"sampler.start=configured "
                      "sampler.stride=linear\"); () is one run")
  for i, text_ in enumerate(value):
    tokens = text_.split() if isinstance(text_, str) else []
    bad = [t for t in tokens if not OVERRIDE.fullmatch(t)]
    if not tokens or bad:
      raise ConfigError(field, value, f"entry {i} ({text_!r}) must be one or more space-separated "
                        f"\"group.key=value\"{f'; not {bad[0]!r}' if bad else ''}")


@dataclasses.dataclass(frozen=True)
class ChoiceConfig(Group):
  """Other runs learned beside the configured one; the validation split keeps one of them."""
  GROUP: ClassVar[str] = "choice"
  among: tuple = setting((), "Alternatives to the configured run (run 0), each a string of "
                         "overrides (\"train.learning_rate=1e-3\"); run i is learned in "
                         "workdir/choice/<i>/, every run is scored on the validation split, "
                         "and the lowest mean validation FID over `draws` draws is kept and "
                         "evaluated (run 0 on a tie). They may not change the model, K, "
                         "train.seed, the validation split or the evaluation. (): one run.",
                         overrides)
  draws: int = setting(4, "Draws of validation samples each run of a choice is scored on "
                       "(train.validation_samples each, noise seeds as train.validation_draws'); "
                       "the mean decides.", integer(1))
