"""The whole config: its defaults, its validation before anything compiles, and the workdir's
record of the run it holds. All three derive from the settings classes (ddss_jax.settings and
each problem's Config), where every field is defined once.

`validate(config)` checks every field: its type, its range, known names only (problems,
schedules, sampler families and strides, losses, datasets), and the checks that span groups (K
within the schedule, solvers without noise, a family with something to learn when DDSS runs).
Every failure raises ConfigError naming the field as `config.<group>.<key>`, the bad value and
what is valid; nothing else escapes for a config value.

`check_workdir(config, workdir)` refuses to resume a run of an incompatible config: the workdir's
config.json (written at its first start) must equal this config except in the settings marked
resumable (how long to train, how often to log and checkpoint, how to evaluate).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
from absl import logging

from ddss_jax import problems, samplers, settings
from ddss_jax.samplers import schedules
from ddss_jax.util import files
from ddss_jax.util.errors import ConfigError

CORE_GROUPS = (settings.ScheduleConfig, settings.SamplerConfig, settings.BaselineConfig,
               settings.LossConfig, settings.TrainConfig, settings.EvalConfig,
               settings.ChoiceConfig)


def groups() -> dict[str, type[settings.Group]]:
  """Every config group's settings class: the run's, then each problem's."""
  return {cls.GROUP: cls for cls in (*CORE_GROUPS,
                                     *(module.Config for module in problems.PROBLEMS.values()))}


def default_config() -> ml_collections.ConfigDict:
  """The whole config with every default: `problem` (one of ddss_jax.problems.PROBLEMS; toy2d by
  default) and one group per settings class. configs/default.py returns it."""
  config = ml_collections.ConfigDict()
  config.problem = "toy2d"
  for name, cls in groups().items():
    config[name] = settings.as_config_dict(cls)
  return config


def field_checks() -> dict[str, dict[str, settings.Check]]:
  """{group: {key: its check}} of every setting."""
  return {name: {f.name: f.metadata["check"] for f in dataclasses.fields(cls)}
          for name, cls in groups().items()}


def resumable_fields() -> tuple[str, ...]:
  """"group.key" of every setting a resumed run may change."""
  return tuple(f"{name}.{f.name}" for name, cls in groups().items()
               for f in dataclasses.fields(cls) if f.metadata["resumable"])


def as_dict(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  return config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)


def validate(config: ml_collections.ConfigDict | dict) -> None:
  """Raises ConfigError for the first field of `config` that cannot run (see the module doc)."""
  values = as_dict(config)
  classes = groups()
  valid = ["problem", *classes]
  for key in values:
    if key not in valid:
      raise ConfigError(key, values[key], f"unknown key; valid keys: {valid}")
  settings.choice(problems.PROBLEMS)("problem", values.get("problem"))
  for group, cls in classes.items():
    entries = values.get(group)
    if not isinstance(entries, dict):
      raise ConfigError(group, entries, "must be a config group; configs/default.py has it")
    valid_keys = [f.name for f in dataclasses.fields(cls)]
    for key in entries:
      if key not in valid_keys:
        raise ConfigError(f"{group}.{key}", entries[key], f"unknown key; valid keys: {valid_keys}")
    for key in valid_keys:
      if key not in entries:
        raise ConfigError(f"{group}.{key}", None, "missing; configs/default.py has every key")
    cls(**entries)  # checks every value, in the order of the fields
  _check_across_groups(values)


def _check_across_groups(c: dict[str, Any]) -> None:
  steps = c["schedule"]["num_timesteps"]
  sampler, train, loss = c["sampler"], c["train"], c["loss"]
  for field, value in (("sampler.num_steps", sampler["num_steps"]),
                       ("loss.teacher_steps", loss["teacher_steps"]),
                       ("eval.reference_steps", c["eval"]["reference_steps"])):
    settings.integer(0 if field == "eval.reference_steps" else 1, steps)(field, value)
  if sampler["unroll"] > sampler["num_steps"]:
    raise ConfigError("sampler.unroll", sampler["unroll"],
                      f"must be <= sampler.num_steps={sampler['num_steps']}")
  settings.check_learnable(sampler["family"], train["num_train_steps"])
  if loss["name"] == "teacher" and train["batch_size"] > loss["teacher_pool"]:
    raise ConfigError("train.batch_size", train["batch_size"], f"exceeds loss.teacher_pool="
                      f"{loss['teacher_pool']}: each batch takes distinct pairs of the pool")
  for module in problems.PROBLEMS.values():
    module.check_across_groups(c)
  if not problems.is_conditional(c["problem"], c[c["problem"]]):
    if sampler["guidance"] != "none":
      raise ConfigError("sampler.guidance", sampler["guidance"], "guides a conditional model; "
                        f"problem {c['problem']!r} is unconditional as configured: set it to "
                        "'none'" + (" (or mnist.conditional=True)" if c["problem"] == "mnist"
                                    else ""))
  elif loss["name"] == "teacher":
    raise ConfigError("loss.name", "teacher", "takes unconditional problems only; problem "
                      f"{c['problem']!r} is conditional as configured: use 'kid'")
  choice_runs(c)  # each alternative of a choice is a valid config of its own
  # What samplers.make refuses (repeated times at large K, noise in a solver) names the group.
  schedule = schedules.make(c["schedule"]["name"], steps)
  for group, family, eta, num_steps, stride in (
      ("sampler", sampler["family"], sampler["eta"], sampler["num_steps"], sampler["stride"]),
      ("baseline", c["baseline"]["family"], c["baseline"]["eta"], sampler["num_steps"],
       sampler["stride"]),
      ("loss", loss["teacher_family"], 0.0, loss["teacher_steps"], loss["teacher_stride"])):
    if group == "baseline" and family == "ddpm":
      eta = None  # DDPM is eta = 1 by definition; baseline.eta applies to DDIM only
    start = settings.start_solver(sampler["start"]) if group == "sampler" else None
    try:
      samplers.make(family, schedule, num_steps, stride=stride, eta=eta, start_solver=start)
    except ValueError as e:
      fields = dict(sampler="sampler.family, .num_steps, .stride, .eta, .start",
                    baseline="baseline.family, baseline.eta (at sampler.num_steps, .stride)",
                    loss="loss.teacher_family, .teacher_steps, .teacher_stride")[group]
      raise ConfigError(group, f"{family} K={num_steps} {stride} eta={eta}",
                        f"{fields} do not make a sampler: {e}") from e


# What every run of a choice shares: the model and its data, K, the validation split (train.seed
# carves it), the evaluation and the choice itself. Their validation scores compare only so.
CHOICE_SHARED = ("problem", "schedule.", "sampler.num_steps", "train.seed",
                 "train.validation_size", "train.validation_samples", "baseline.", "eval.",
                 "choice.")


def parse_overrides(text: str, values: dict[str, Any]) -> dict[str, Any]:
  """{"train.learning_rate": 0.001, ...} of one choice.among entry ("train.learning_rate=1e-3
  ..."): each value a Python literal (an int where the field holds a float becomes a float), or
  the string as written where it is not one."""
  flat, parsed = flatten(values), {}
  for token in text.split():
    field, value = settings.OVERRIDE.fullmatch(token).groups()
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # a name: "linear", "configured"
    # pylint: disable-next=unidiomatic-typecheck
    if isinstance(flat.get(field), float) and type(value) is int:
      value = float(value)
    parsed[field] = value
  return parsed


def choice_runs(values: ml_collections.ConfigDict | dict) -> list[dict[str, Any]]:
  """The nested config dicts of a choice's runs: the configured run, then one per
  choice.among entry with its overrides applied; each with choice.among emptied. Raises
  ConfigError (config.choice.among, naming the entry) for an entry that names no field, changes
  a field every run must share (CHOICE_SHARED, a problem's group), changes nothing, repeats
  another, or makes an invalid config."""
  base = json.loads(json.dumps(as_dict(values)))
  among = base["choice"]["among"]
  base["choice"]["among"] = []
  runs, fields = [base], flatten(base)
  problem_groups = tuple(f"{name}." for name, cls in groups().items() if cls not in CORE_GROUPS)
  for i, text in enumerate(among):
    def refuse(why, text=text, i=i):
      return ConfigError("choice.among", text, f"entry {i} {why}")
    run = copy.deepcopy(base)
    for field, value in parse_overrides(text, base).items():
      if field not in fields:
        raise refuse(f"names {field}, not a config field (docs/config.md lists them)")
      if field.startswith(CHOICE_SHARED + problem_groups):
        raise refuse(f"changes {field}: every run of a choice shares the model, K, train.seed, "
                     "the validation split and the evaluation")
      group, key = field.split(".")
      run[group][key] = value
    if flatten(run) == fields:
      raise refuse("changes nothing")
    if run in runs[1:]:
      raise refuse(f"repeats entry {runs.index(run) - 1}")
    try:
      validate(run)
    except ConfigError as e:
      raise refuse(f"makes an invalid config: {e}") from e
    runs.append(run)
  return runs


CONFIG_RECORD = "config.json"
# Fields earlier versions recorded that no longer exist; a workdir holding one still resumes.
RETIRED_FIELDS = ("sampler.canonical_convs",)  # now ddss_jax.samplers.conv_layout.backend_default()


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"train.seed": 0, ...}: a nested config dict's leaves by their dotted field names."""
  flat = {}
  for key, value in values.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def with_defaults(values: dict[str, Any]) -> dict[str, Any]:
  """A nested config dict (a run's record, say) with every field it lacks at its default: a
  field added after the record was written, which its run behaved as."""
  def merge(defaults, given):
    return {**defaults, **{k: merge(defaults[k], v) if isinstance(v, dict)
                           and isinstance(defaults.get(k), dict) else v
                           for k, v in given.items()}}
  return merge(json.loads(json.dumps(as_dict(default_config()))), values)


def check_workdir(config: ml_collections.ConfigDict | dict, workdir: str, *,
                  allow_change: bool = False) -> None:
  """Refuses (ConfigError) a workdir whose config.json records a run this config cannot resume;
  records this config there otherwise (process 0, atomically). allow_change: warn instead."""
  path = os.path.join(workdir, CONFIG_RECORD)
  record = json.loads(json.dumps(as_dict(config)))  # as the file will hold it
  now = flatten(record)
  resumable = resumable_fields()
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      before = flatten(json.load(f))
    # A field the record lacks was added after that run, which behaved as its default did.
    defaults = flatten(json.loads(json.dumps(as_dict(default_config()))))
    before = {**{k: defaults[k] for k in set(now) - set(before) if k in defaults}, **before}
    changed = sorted(k for k in set(now) | set(before) if now.get(k, "<absent>") !=
                     before.get(k, "<absent>") and k not in resumable and k not in RETIRED_FIELDS)
    if changed:
      diff = "; ".join(f"config.{k}: {before.get(k, '<absent>')!r} there, "
                       f"{now.get(k, '<absent>')!r} now" for k in changed)
      if not allow_change:
        raise ConfigError(changed[0], now.get(changed[0]), f"{workdir} holds a run of another "
                          f"config ({diff}); use another --workdir, or pass "
                          "--allow_config_change to resume it anyway")
      logging.warning("resuming %s with a changed config (--allow_config_change): %s", workdir,
                      diff)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    files.write_json(path, record)


def markdown_table() -> str:
  """Every setting as a Markdown table: field, default, resumable, doc (docs/config.md)."""
  lines = ["| field | default | may change on resume | what it is |", "|---|---|---|---|",
           "| `problem` | `'toy2d'` | no | One of " + ", ".join(problems.PROBLEMS) + ". |"]
  for name, cls in groups().items():
    for f in dataclasses.fields(cls):
      lines.append(f"| `{name}.{f.name}` | `{f.default!r}` | "
                   f"{'yes' if f.metadata['resumable'] else 'no'} | {f.metadata['doc']} |")
  return "\n".join(lines)


if __name__ == "__main__":
  print(markdown_table())
