"""sampler.json: version 2 written field by field, version 1 files still loading, and every kind
of bad file refused naming the file and the field."""

import json
import os

import numpy as np
import pytest

import ddss_jax
from ddss_jax import samplers
from ddss_jax.samplers import sampler_json, schedules
from ddss_jax.samplers.sampler_json import ModelInfo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V1_GOLDEN = os.path.join(ROOT, "tests", "golden", "mnist_tiny", "sampler_v1.json")
SCHED = schedules.linear_beta(1000)
MODEL = ModelInfo(source="google/ddpm-cifar10-32", sha256="ab" * 32, prediction="eps")


def _saved(tmp_path, family="ggdm+pred+time", num_steps=3, model=MODEL):
  sampler = samplers.make(family, SCHED, num_steps)
  params = {name: value + 0.01 for name, value in sampler.init().items()}
  path = str(tmp_path / "sampler.json")
  samplers.save(path, sampler, params, model=model)
  return path, sampler, params


def test_version_2_records_format_model_clip_and_coefficients(tmp_path):
  path, sampler, params = _saved(tmp_path)
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  assert (data["format"], data["version"]) == ("ddss_jax.sampler", 2)
  assert data["model"] == {"source": "google/ddpm-cifar10-32", "sha256": "ab" * 32,
                           "prediction": "eps"}
  assert data["clip_x0"] is None
  coeffs = sampler.coefficients(params)
  for name in sampler_json.COEFFICIENTS:
    np.testing.assert_array_equal(np.asarray(data["coefficients"][name]),
                                  np.asarray(getattr(coeffs, name), np.float64))
  spec = sampler_json.read(path)
  assert spec.model == MODEL and spec.version == 2 and spec.clip_x0 is None
  loaded, loaded_params = samplers.load(path)
  assert loaded.family == sampler.family
  for name, value in params.items():
    np.testing.assert_array_equal(np.asarray(loaded_params[name]), np.asarray(value))


def test_without_a_model_it_says_unspecified(tmp_path):
  path, _, _ = _saved(tmp_path, family="ddim", model=None)
  with open(path, encoding="utf-8") as f:
    assert json.load(f)["model"] == {"source": "unspecified", "sha256": None,
                                     "prediction": "eps"}


def test_the_version_1_golden_still_loads_with_its_numbers():
  with open(V1_GOLDEN, encoding="utf-8") as f:
    raw = json.load(f)
  assert "format" not in raw
  spec = sampler_json.read(V1_GOLDEN)
  assert spec.version == 1 and spec.model == ModelInfo() and spec.clip_x0 is None
  sampler, params = samplers.load(V1_GOLDEN)
  assert (sampler.family, sampler.num_steps) == ("ggdm+pred+time", 2)
  for name, value in raw["params"].items():
    np.testing.assert_array_equal(np.asarray(params[name], np.float64), value)
  np.testing.assert_array_equal(spec.coefficients["nu"], raw["coefficients"]["nu"])


def test_a_version_1_file_without_alpha_bars_rebuilds_the_schedule(tmp_path):
  with open(V1_GOLDEN, encoding="utf-8") as f:
    raw = json.load(f)
  del raw["schedule"]["alpha_bars"]
  path = tmp_path / "old.json"
  path.write_text(json.dumps(raw))
  sampler, _ = samplers.load(str(path))
  np.testing.assert_array_equal(sampler.schedule.alpha_bars, SCHED.alpha_bars)


def _broken(tmp_path, edit):
  path, _, _ = _saved(tmp_path)
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  edit(data)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(data, f)
  return path


def _set(*keys, value):
  def edit(data):
    for key in keys[:-1]:
      data = data[key]
    data[keys[-1]] = value
  return edit


def _delete(*keys):
  def edit(data):
    for key in keys[:-1]:
      data = data[key]
    del data[keys[-1]]
  return edit


@pytest.mark.parametrize("edit,message", [
    (_delete("coefficients", "nu"), "field 'coefficients.nu' is missing"),
    (_delete("model"), "field 'model' is missing"),
    (_delete("schedule", "alpha_bars"), "field 'schedule.alpha_bars' is missing"),
    (_set("coefficients", "nu", value=[[1.0, 0.0, 0.0]] * 2),
     r"field 'coefficients.nu' has shape \(2, 3\), expected \(3, 3\)"),
    (_set("timesteps", value=[900.0, 500.0]),
     r"field 'timesteps' has shape \(2,\), expected \(3,\)"),
    (_set("coefficients", "mu", value=[1.0, float("nan"), 1.0]),
     r"field 'coefficients.mu' holds NaN or Inf \(first at index \(1,\)\)"),
    (_set("params", "log_b", value=[0.0, float("inf"), 0.0]),
     "field 'params.log_b' holds NaN or Inf"),
    (_set("coefficients", "sigma", value=[0.1, "x", 0.0]),
     "field 'coefficients.sigma' is not an array of numbers"),
    (_set("version", value=4), r"field 'version' is 4; this ddss_jax reads versions \[1, 2, 3\]"),
    (_set("version", value=3), r"field 'guidance' is missing"),
    (_set("format", value="other.tool"), "field 'format' is 'other.tool'; expected "
                                         "'ddss_jax.sampler'"),
    (_set("num_steps", value="3"), "field 'num_steps' is '3' \\(str\\); expected int"),
    (_set("clip_x0", value=-1.0), "field 'clip_x0' is -1.0"),
    (_set("model", "prediction", value="score"), "field 'model' is .*prediction='score'"),
    (_set("family", value="ggdm+nope"), "unknown sampler family 'ggdm\\+nope'"),
    (_delete("params", "mu"), r"field 'params' lacks \['mu'\]"),
    (_set("params", "mu", value=[1.0, 1.0]), r"field 'params.mu' has shape \(2,\), expected"),
])
def test_a_bad_file_is_refused_naming_the_file_and_the_field(tmp_path, edit, message):
  path = _broken(tmp_path, edit)
  with pytest.raises(ValueError, match=message) as info:
    samplers.load(path)
  assert str(info.value).startswith(f"{path}: ")


def test_a_truncated_file_is_not_json(tmp_path):
  path, _, _ = _saved(tmp_path)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(ValueError, match=f"{path}: not a JSON file .*truncated"):
    samplers.load(path)


def test_model_info_checks_its_fields():
  with pytest.raises(ValueError, match=r"prediction='score'; valid choices: \['eps', 'x0', 'v'\]"):
    ModelInfo(prediction="score")
  with pytest.raises(ValueError, match="sha256 must be None or 64 lower-case hex"):
    ModelInfo(source="x", sha256="abc")
  with pytest.raises(ValueError, match="source must be a non-empty string"):
    ModelInfo(source="")
  assert ddss_jax.ModelInfo is ModelInfo


def test_make_problem_passes_model_info_to_the_saved_sampler(tmp_path):
  problem = ddss_jax.make_problem(
      eps_fn=lambda params, x, t: x * params, model_params=np.float32(0.5),
      data=np.zeros((8, 2), np.float32), features=lambda p, x: x, model_info=MODEL)
  assert problem.model_info == MODEL
  assert ddss_jax.make_problem(eps_fn=lambda p, x, t: x, model_params=0.0,
                               data=np.zeros((8, 2), np.float32),
                               features=lambda p, x: x).model_info == ModelInfo()
  learned = ddss_jax.LearnedSampler(samplers.make("ddim", SCHED, 2), {}, 0, [],
                                    model_info=problem.model_info)
  learned.save(str(tmp_path / "s.json"))
  assert sampler_json.read(str(tmp_path / "s.json")).model == MODEL
  with pytest.raises(ValueError, match="model_info must be a ddss_jax.ModelInfo"):
    ddss_jax.make_problem(eps_fn=lambda p, x, t: x, model_params=0.0,
                          data=np.zeros((8, 2), np.float32), features=lambda p, x: x,
                          model_info={"source": "x"})
