"""Property tests (hypothesis) of config validation: a config, whatever its values, either runs
or raises ConfigError naming a field of the schema, before anything compiles."""

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile

import ml_collections
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from configs import default, tiny
from ddss_jax import config as config_lib, run as run_lib
from ddss_jax.util.errors import ConfigError

DEFAULTS = tiny.get_config().to_dict()
FIELDS = ["problem"] + [f"{group}.{key}" for group, values in DEFAULTS.items()
                        if isinstance(values, dict) for key in values]
CHOICES = sorted({c for checks in config_lib.field_checks().values() for check in checks.values()
                  for c in getattr(check, "choices", ())} | {"toy2d", "mnist", "pretrained"})
# Edge values of every type a config file can hold: each field meets every one of them.
VALUES = st.one_of(
    st.sampled_from([-1, 0, 1, 2, 3, 8, 64, 1000, 1001]),
    st.sampled_from([-1.0, 0.0, 1e-3, 0.5, 0.99, 1.0, 1.5, math.nan, math.inf]),
    st.sampled_from(["", "nope", "/no/such/file", "ab12"] + CHOICES),
    st.sampled_from([None, True, False]))


def _near_default(field):
  """Values near the field's default in tiny.py (its choices, for a name), most of them valid."""
  group, key = field.split(".")
  check, value = config_lib.field_checks()[group][key], DEFAULTS[group][key]
  if hasattr(check, "choices"):
    return st.sampled_from(list(check.choices) + ["nope"])
  if isinstance(value, bool):
    return st.booleans()
  if isinstance(value, int):
    return st.sampled_from(sorted({value - 1, value, value + 1, 2 * value, value // 2}))
  if isinstance(value, float):
    return st.sampled_from([value / 2, value, 2 * value, 0.0, -value])
  return st.just(value)


def _mutated(field, value):
  values = tiny.get_config().to_dict()
  if "." in field:
    group, key = field.split(".")
    values[group][key] = value
  else:
    values[field] = value
  return ml_collections.ConfigDict(values)


def _schema_field(error):
  return error.field in FIELDS or error.field in DEFAULTS


@settings(max_examples=400, deadline=None, derandomize=True)
@given(edits=st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=3))
def test_validate_accepts_or_names_a_field(edits):
  values = tiny.get_config().to_dict()
  for field, value in edits:
    group, _, key = field.partition(".")
    (values[group].__setitem__(key, value) if key else values.__setitem__(group, value))
  try:
    config_lib.validate(values)
  except ConfigError as e:
    assert _schema_field(e), e
    assert str(e).startswith(f"config.{e.field}"), e


@settings(max_examples=200, deadline=None, derandomize=True)
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_a_value_of_the_wrong_type_is_named(field, value):
  """A value whose type the field cannot take fails on that very field."""
  default_value = config_lib.as_dict(tiny.get_config())
  for part in field.split("."):
    default_value = default_value[part]
  number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
  wrong = ((isinstance(default_value, str) and not isinstance(value, str) and value is not None)
           or (isinstance(default_value, bool) and not isinstance(value, bool))
           or (number(default_value) and not number(value)))
  if not wrong:
    return
  with pytest.raises(ConfigError) as error:
    config_lib.validate(_mutated(field, value))
  assert error.value.field == field, error.value


@pytest.mark.slow
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(edit=st.sampled_from([f for f in FIELDS if f != "problem" and not f.startswith(
    ("mnist.", "pretrained."))]).flatmap(lambda f: st.tuples(
        st.just(f), st.one_of(_near_default(f), VALUES))))
def test_a_config_either_runs_or_raises_config_error(edit):
  """End to end on the tiny 2-D problem: the config trains and evaluates to finite numbers,
  raises ConfigError naming the field before anything is written, or (a valid but divergent
  setting, e.g. a huge learning rate) stops at the non-finite guard naming the step."""
  field, value = edit
  config = _mutated(field, value)
  with tempfile.TemporaryDirectory() as workdir:
    try:
      results = run_lib.train_and_evaluate(config, workdir)
    except ConfigError as e:
      assert _schema_field(e) and str(e).startswith(f"config.{e.field}"), e
      assert os.listdir(workdir) == [], "a refused config wrote files"
      event("refused: ConfigError")  # pytest --hypothesis-show-statistics counts the outcomes
      return
    except FloatingPointError as e:
      assert "DDSS step" in str(e) and "non-finite" in str(e), e
      event("stopped: non-finite")
      return
  assert np.isfinite(results["learned"]["mmd"]), results
  event("ran")


def test_every_shipped_config_validates():
  import glob  # pylint: disable=import-outside-toplevel,multiple-imports
  import importlib
  names = [os.path.basename(p)[:-3] for p in glob.glob(
      os.path.join(os.path.dirname(default.__file__), "*.py")) if not p.endswith("__init__.py")]
  assert len(names) >= 8
  for name in names:
    config_lib.validate(importlib.import_module(f"configs.{name}").get_config())


@pytest.mark.slow
def test_a_batch_that_does_not_split_over_the_devices_is_named(tmp_path):
  """On 4 simulated devices, from the command line: refused before anything is written."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  out = subprocess.run(
      [sys.executable, "-m", "ddss_jax.main", "--config=configs/tiny.py",
       f"--workdir={tmp_path / 'run'}", "--config.train.batch_size=18"],
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=env,
      capture_output=True, text=True, timeout=300)
  assert out.returncode == 1
  # The message alone, without a traceback.
  assert out.stderr.strip().splitlines()[-1] == (
      "ddss_jax: ConfigError: config.train.batch_size=18: must be a multiple of the number of "
      "devices (4: 1 process(es) x 4 local device(s))"), out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  assert not os.path.exists(tmp_path / "run" / "config.json")


def test_docs_config_page_matches_the_settings():
  with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                         "config.md"), encoding="utf-8") as f:
    page = f.read()
  assert config_lib.markdown_table() in page, "regenerate docs/config.md: python -m ddss_jax.config"


def test_resume_rules_derive_from_the_settings():
  """How long to train, how often to log and checkpoint, the evaluation, the baseline and where
  the teacher pool is cached; nothing else."""
  assert set(config_lib.resumable_fields()) == {
      "train.num_train_steps", "train.log_every_steps", "train.checkpoint_every_steps",
      "eval.num_samples", "eval.batch_size", "eval.seed", "eval.reference_steps",
      "baseline.family", "baseline.eta", "loss.teacher_dir"}


def test_every_setting_has_a_doc_and_its_default_passes_its_check():
  for group, cls in config_lib.groups().items():
    cls()  # the defaults are valid
    for field in dataclasses.fields(cls):
      assert field.metadata["doc"].endswith("."), f"{group}.{field.name}: a one-line doc"


def test_a_workdir_recorded_before_a_field_existed_resumes_if_the_field_is_at_its_default(
    tmp_path):
  """config.json of a run made before sampler.clip_x0 and sampler.start existed: that run
  behaved as their defaults do, so a config with the defaults resumes it; another value is
  refused, naming the field."""
  config = tiny.get_config()
  config_lib.check_workdir(config, str(tmp_path))
  record = json.loads((tmp_path / config_lib.CONFIG_RECORD).read_text())
  del record["sampler"]["clip_x0"], record["sampler"]["start"]
  (tmp_path / config_lib.CONFIG_RECORD).write_text(json.dumps(record))
  config_lib.check_workdir(config, str(tmp_path))  # resumes
  (tmp_path / config_lib.CONFIG_RECORD).write_text(json.dumps(record))
  config.sampler.start = "select"
  with pytest.raises(ConfigError, match=r"config.sampler.start: 'configured' there, 'select' "
                     "now"):
    config_lib.check_workdir(config, str(tmp_path))


def test_a_solver_start_for_a_family_that_cannot_take_it_is_named():
  config = tiny.get_config()
  config.sampler.family, config.sampler.start = "vars", "unipc"
  with pytest.raises(ConfigError, match=r"sampler.family, .num_steps, .stride, .eta, .start do "
                     r"not make a sampler: start_solver='unipc': only the GGDM families"):
    config_lib.validate(config)
  config.sampler.family = "ggdm+pred+time"
  config_lib.validate(config)


def test_flatten_names_every_leaf_by_its_dotted_field():
  flat = config_lib.flatten(DEFAULTS)
  assert set(flat) == set(FIELDS)
  assert flat["train.seed"] == DEFAULTS["train"]["seed"]
  assert config_lib.flatten({"a": {"b": {"c": 1}}, "d": 2}) == {"a.b.c": 1, "d": 2}


def test_with_defaults_fills_only_the_fields_a_record_lacks():
  record = json.loads(json.dumps(DEFAULTS))
  record["train"]["seed"] = 3
  del record["train"]["validation_draws"]
  filled = config_lib.with_defaults(record)
  assert filled["train"]["seed"] == 3
  assert filled["train"]["validation_draws"] == default.get_config().train.validation_draws == 1
  assert set(config_lib.flatten(filled)) >= set(FIELDS)


def test_a_choice_expands_into_runs_that_differ_in_their_overrides_alone():
  config = tiny.get_config()
  config.choice.among = ("train.learning_rate=1e-3", "sampler.start=unipc sampler.stride=linear",
                         "train.grad_clip=0")
  config_lib.validate(config)
  runs = [config_lib.flatten(r) for r in config_lib.choice_runs(config)]
  base = {**config_lib.flatten(config.to_dict()), "choice.among": []}
  assert runs[0] == base
  for run, changed in zip(runs[1:], ({"train.learning_rate": 1e-3},
                                     {"sampler.start": "unipc", "sampler.stride": "linear"},
                                     {"train.grad_clip": 0.0})):
    assert run == {**base, **changed}
  assert type(runs[3]["train.grad_clip"]) is float  # "0" for a float field is 0.0


@pytest.mark.parametrize("among, message", [
    (("train.lr=1e-3",), r"entry 0 names train.lr, not a config field"),
    (("train.learning_rate=1e-3", "sampler.num_steps=5"),
     r"entry 1 changes sampler.num_steps: every run of a choice shares"),
    (("toy2d.model_width=8",), r"entry 0 changes toy2d.model_width: every run"),
    (("eval.seed=1",), r"entry 0 changes eval.seed"),
    (("train.seed=1",), r"entry 0 changes train.seed"),
    (("train.learning_rate=5e-3",), r"entry 0 changes nothing"),
    (("train.learning_rate=1e-3", "train.learning_rate=0.001"), r"entry 1 repeats entry 0"),
    (("train.learning_rate=-1",), r"entry 0 makes an invalid config: "
     r"config.train.learning_rate=-1.0: must be a finite number > 0"),
    (("sampler.stride=sideways",), r"entry 0 makes an invalid config: "
     r"config.sampler.stride='sideways': valid choices"),
    (("train.learning_rate 1e-3",), r"must be one or more space-separated \"group.key=value\"; "
     r"not 'train.learning_rate'"),
    ("train.learning_rate=1e-3", r"must be a tuple of strings"),
])
def test_a_bad_choice_is_named_before_anything_runs(among, message):
  config = tiny.get_config().to_dict()
  config["choice"]["among"] = among
  with pytest.raises(ConfigError, match=message) as error:
    config_lib.validate(config)
  assert error.value.field == "choice.among"
