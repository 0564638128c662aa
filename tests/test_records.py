"""experiments/lib/records.py: the evaluation seeds, a record written and re-evaluated to
the same numbers (a fixed sampler at toy sizes), the recorded row of a seed, clear refusals."""

import json

import pytest

from configs import mnist_tiny
from ddss_jax import run as run_lib, samplers
from ddss_jax.samplers import schedules
from experiments.lib import records

pytestmark = pytest.mark.slow  # end-to-end runs, subprocesses or committed results


def test_eval_seeds_are_the_first_and_the_offset_one():
  assert records.eval_seeds(1234, 1) == (1234,)
  assert records.eval_seeds(1235, 2) == (1235, 1335)  # not 1236: a rerun's first
  with pytest.raises(ValueError, match="--eval_seeds=0"):
    records.eval_seeds(1234, 0)


def test_a_record_reevaluates_to_its_row(tmp_path):
  config = mnist_tiny.get_config()
  schedule = schedules.make("linear", 1000)
  sampler = samplers.make("ddim", schedule, 2, stride="quadratic")
  params = sampler.init()
  problem = run_lib.build_problem(config, schedule, str(tmp_path))
  results, kept = records.evaluate_on_seeds(
      sampler, params, problem, num_samples=12, batch_size=8, seeds=(7, 107), label="t", keep=5)
  assert kept.shape == (5, 32, 32, 1) and results[0] != results[1]
  row = {**results[0], "fid_2": results[1]["fid"], "kid_2": results[1]["kid"]}
  path = str(tmp_path / "samplers" / "ddim_K2.json")
  records.write_record(path, sampler, params, config=config, num_samples=12,
                       batch_size=8, seeds=(7, 107), row=row)
  assert samplers.load(path)[0].num_steps == 2 and records.has_record(path)  # a sampler file
  metrics, record = records.evaluate_record(path, workdir=str(tmp_path / "w"))
  assert metrics == results[0] and record["seeds"] == [7, 107]
  assert records.recorded(record, num_samples=None, seed=None) == results[0]
  assert records.recorded(record, num_samples=12, seed=107) == {
      "fid": results[1]["fid"], "kid": results[1]["kid"]}
  assert records.recorded(record, num_samples=None, seed=8) is None
  # Fewer samples: other numbers (the first 8 of the same noise), nothing recorded for them.
  fewer, _ = records.evaluate_record(path, workdir=str(tmp_path / "w"), num_samples=8)
  assert fewer["fid"] != metrics["fid"]


def test_a_plain_sampler_file_is_refused_with_the_reason(tmp_path):
  path = tmp_path / "sampler.json"
  sampler = samplers.make("ddim", schedules.make("linear", 1000), 2, stride="quadratic")
  samplers.save(str(path), sampler, sampler.init())
  assert "evaluation" not in json.loads(path.read_text()) and not records.has_record(str(path))
  with pytest.raises(ValueError, match="no \"evaluation\" entry"):
    records.evaluate_record(str(path), workdir=str(tmp_path))
