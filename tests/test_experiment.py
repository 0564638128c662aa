"""ddss_jax.run's choice (config.choice.among): its runs are the runs their configs give
alone, the lowest mean validation FID is kept and evaluated, a rerun resumes every run, and a
problem without a validation split is refused before anything learns. The rest of
ddss_jax/run.py runs in every test of the command line (test_main, test_reliability, test_api)."""

import dataclasses
import json
import os

import numpy as np
import pytest

from configs import tiny
from ddss_jax import run as run_lib, samplers
from ddss_jax.util.errors import ConfigError

pytestmark = pytest.mark.slow  # end-to-end runs, subprocesses or committed results

OTHER = "train.learning_rate=0.05 sampler.stride=linear"


def _config(among=()):
  config = tiny.get_config()
  config.train.validate_every_steps = 2
  config.train.validation_size = 64
  config.train.validation_samples = 64
  config.eval.reference_steps = 0
  config.choice.among = among
  config.choice.draws = 2
  return config


def _params(path):
  return samplers.load(str(path))[1]


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))


def test_a_choice_keeps_the_lowest_mean_validation_fid_of_runs_learned_as_alone(tmp_path):
  results = run_lib.train_and_evaluate(_config((OTHER,)), str(tmp_path / "choice"))
  record = results["choice"]
  with open(tmp_path / "choice" / "choice.json", encoding="utf-8") as f:
    assert json.load(f) == record
  assert [r["overrides"] for r in record["runs"]] == ["", OTHER]
  means = [r["val_fid_mean"] for r in record["runs"]]
  assert means[0] != means[1] and record["kept"] == int(np.argmin(means))
  for entry in record["runs"]:
    assert len(entry["val_fids"]) == 2 and entry["val_fid_mean"] == np.mean(entry["val_fids"])
  # Each run of the choice is what its config learns alone.
  run_lib.train_and_evaluate(_config(), str(tmp_path / "alone"))
  other = _config()
  other.train.learning_rate, other.sampler.stride = 0.05, "linear"
  run_lib.train_and_evaluate(other, str(tmp_path / "other_alone"))
  configured = _params(tmp_path / "alone" / "sampler.json")
  alternative = _params(tmp_path / "choice" / "choice" / "1" / "sampler.json")
  _assert_same(alternative, _params(tmp_path / "other_alone" / "sampler.json"))
  # The run kept is the one sampler.json holds and the "learned" row evaluates.
  _assert_same(_params(tmp_path / "choice" / "sampler.json"),
               (configured, alternative)[record["kept"]])
  with open(tmp_path / ("alone", "other_alone")[record["kept"]] / "results.json",
            encoding="utf-8") as f:
    assert results["learned"] == json.load(f)["learned"]
  # A rerun resumes every run: nothing learns again, the same choice.
  again = run_lib.train_and_evaluate(_config((OTHER,)), str(tmp_path / "choice"))
  assert again["choice"] == record and again["learned"] == results["learned"]


def test_a_choice_needs_a_validation_split(tmp_path, monkeypatch):
  build = run_lib.build_problem
  monkeypatch.setattr(run_lib, "build_problem", lambda *args: dataclasses.replace(
      build(*args), split_validation=None))
  learned = []
  monkeypatch.setattr(run_lib, "learn", lambda *args: learned.append(args))
  config = _config((OTHER,))
  config.train.validate_every_steps = 0
  with pytest.raises(ConfigError, match=r"config.choice.among=.*cannot carve a validation split"):
    run_lib.train_and_evaluate(config, str(tmp_path))
  assert not learned and not os.path.exists(tmp_path / "checkpoints")
