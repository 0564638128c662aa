"""Faults injected into DDSS runs: SIGKILL at random moments, unreadable checkpoints, NaNs, and a
workdir that holds another config's run. Each checks what survives and what the user is told."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import tiny
from ddss_jax import run as run_lib, samplers
from ddss_jax.learn import loop
from ddss_jax.samplers import schedules
from ddss_jax.settings import TrainConfig, from_group
from ddss_jax.util import logs
from ddss_jax.util.errors import ConfigError

pytestmark = pytest.mark.slow  # end-to-end runs, subprocesses or committed results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_STEPS = 12
KILL_FLAGS = [f"--config.train.num_train_steps={KILL_STEPS}", "--config.train.log_every_steps=1",
              "--config.train.checkpoint_every_steps=1", "--config.eval.reference_steps=0"]


def _start(workdir):
  """`python -m ddss_jax.main` on the tiny config in a subprocess; its output goes to
  workdir.log (appended), returned by _output."""
  log = open(f"{workdir}.log", "a")
  return subprocess.Popen(
      [sys.executable, "-m", "ddss_jax.main", "--config=configs/tiny.py", f"--workdir={workdir}",
       *KILL_FLAGS], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def _output(workdir):
  return open(f"{workdir}.log").read()[-3000:]


def _train_steps_logged(workdir):
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      return sum('"train/' in line for line in f)
  except FileNotFoundError:
    return 0


def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path):
  """SIGKILL at random moments (start-up, optimisation steps, asynchronous checkpoint writes),
  restart, repeat; the final sampler and every metric equal an uninterrupted run's."""
  straight = _start(tmp_path / "straight")
  assert straight.wait(timeout=600) == 0, _output(tmp_path / "straight")

  rng = random.Random(8)  # the kill schedule; any seed must pass
  workdir, kills = tmp_path / "killed", []
  for attempt in range(5):
    proc = _start(workdir)
    if attempt == 0:  # during start-up: imports, toy-model training, compilation
      time.sleep(rng.uniform(1.0, 4.0))
    else:  # once a random number of further steps has been logged, plus a random delay
      target = min(_train_steps_logged(workdir) + rng.randint(1, 4), KILL_STEPS)
      while _train_steps_logged(workdir) < target and proc.poll() is None:
        time.sleep(0.01)
      time.sleep(rng.uniform(0.0, 0.05))
    if proc.poll() is not None:
      break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = workdir / "checkpoints"  # a temporary folder left: killed during a checkpoint write
    mid_write = ckpt.exists() and any("tmp" in name for name in os.listdir(ckpt))
    kills.append(_train_steps_logged(workdir))
    print(f"kill {attempt}: {kills[-1]} train lines logged, mid-write: {mid_write}")
  final = _start(workdir)
  assert final.wait(timeout=600) == 0, _output(workdir)
  print("train lines logged at each kill:", kills)
  assert sum(0 < k < KILL_STEPS for k in kills) >= 2, kills  # kills landed mid-optimisation

  for name in ("sampler.json", "results.json"):  # bitwise: same text, every digit
    assert (workdir / name).read_text() == (tmp_path / "straight" / name).read_text(), name
  lines = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  train_steps = [l["step"] for l in lines if "train/kid" in l]
  assert train_steps == list(range(1, KILL_STEPS + 1))
  assert [l["step"] for l in lines if "eval/mmd@K=3" in l] == [KILL_STEPS]
  straight_lines = [json.loads(l) for l in open(tmp_path / "straight" / "metrics.jsonl")]
  drop_rate = lambda ls: [{k: v for k, v in l.items() if k != "train/steps_per_sec"} for l in ls]
  assert drop_rate(lines) == drop_rate(straight_lines)


def _tiny(steps, **train_fields):
  config = tiny.get_config()
  config.train.update(num_train_steps=steps, checkpoint_every_steps=1, **train_fields)
  config.eval.reference_steps = 0
  return config


def test_unreadable_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
  straight = run_lib.train_and_evaluate(_tiny(6), str(tmp_path / "straight"))
  workdir = tmp_path / "broken"
  run_lib.train_and_evaluate(_tiny(4), str(workdir))
  ckpt = workdir / "checkpoints"
  assert sorted(os.listdir(ckpt)) == ["3", "4"]
  # A write that a crash cut short (every file of step 4 truncated to half), and the temporary
  # folder a kill leaves behind in the middle of an asynchronous save.
  for root, _, files in os.walk(ckpt / "4"):
    for name in files:
      path = os.path.join(root, name)
      data = open(path, "rb").read()
      open(path, "wb").write(data[:len(data) // 2])
  (ckpt / "5.orbax-checkpoint-tmp-1234").mkdir()
  resumed = run_lib.train_and_evaluate(_tiny(6), str(workdir))
  assert resumed == straight
  assert (workdir / "sampler.json").read_text() == (tmp_path / "straight" /
                                                    "sampler.json").read_text()
  # Nothing is deleted: the unreadable step is set aside, the leftovers of the kill cleaned.
  assert [n.split(".")[0] for n in os.listdir(workdir / "checkpoints_unreadable")] == ["4"]
  assert sorted(os.listdir(ckpt)) == ["5", "6"]
  steps = [json.loads(l)["step"] for l in open(workdir / "metrics.jsonl") if "train/kid" in l]
  assert steps == [2, 4, 6]  # log_every_steps = 2: step 4's line was rewritten after step 3


def test_no_readable_checkpoint_stops_and_moves_nothing(tmp_path):
  run_lib.train_and_evaluate(_tiny(2), str(tmp_path))
  for step in ("1", "2"):
    shutil.rmtree(tmp_path / "checkpoints" / step / "default")
  with pytest.raises(RuntimeError, match=r"no checkpoint in .*checkpoints reads back \(steps "
                     r"\[2, 1\]\)"):
    run_lib.train_and_evaluate(_tiny(4), str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
  assert not os.path.exists(tmp_path / "checkpoints_unreadable")


def test_workdir_of_another_config_is_refused(tmp_path):
  run_lib.train_and_evaluate(_tiny(2), str(tmp_path))
  other = _tiny(4)
  other.sampler.num_steps = 4
  with pytest.raises(ConfigError, match=r"config.sampler.num_steps: 3 there, 4 now.*another "
                     r"--workdir, or pass --allow_config_change"):
    run_lib.train_and_evaluate(other, str(tmp_path))
  other.sampler.update(num_steps=3, family="ggdm")
  with pytest.raises(ConfigError, match=r"config.sampler.family: 'ggdm\+pred\+time' there, "
                     r"'ggdm' now"):
    run_lib.train_and_evaluate(other, str(tmp_path))
  # With the flag the run goes on, but a checkpoint of another parameter shape cannot be read:
  # the run stops and leaves every checkpoint where it was.
  with pytest.raises(RuntimeError, match="no checkpoint .* reads back"):
    run_lib.train_and_evaluate(other, str(tmp_path), allow_config_change=True)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def _nan_run(tmp_path, *, steps, bad_steps, **train_fields):
  """run_training on the tiny 2-D problem whose real batch is NaN at the given (1-based) steps."""
  config = _tiny(steps, **train_fields)
  cfg = from_group(TrainConfig, config.train)
  schedule = schedules.linear_beta()
  problem = run_lib.build_problem(config, schedule, str(tmp_path))
  sampler = samplers.make("ggdm+pred+time", schedule, 3)
  optimizer = loop.create_optimizer(cfg)
  step_fn = loop.make_train_step(sampler, problem, optimizer, cfg.batch_size)
  calls = []

  def batch_fn(key, n):
    calls.append(1)
    real = np.asarray(problem.real_batch(key, n))
    return real * np.nan if len(calls) in bad_steps else real

  writer = logs.MetricWriter(str(tmp_path))
  state = loop.create_train_state(sampler.init(), optimizer)
  return loop.run_training(state, step_fn, problem, cfg, str(tmp_path), writer,
                           batch_fn=batch_fn)


def test_nan_stops_the_run_naming_step_and_quantity(tmp_path):
  with pytest.raises(FloatingPointError, match=r"DDSS step 3: non-finite train/grad_norm=nan, "
                     r"train/kid=nan\. The run stopped; its last good state is the checkpoint of "
                     r"step 2"):
    _nan_run(tmp_path, steps=5, bad_steps={3}, log_every_steps=1)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]  # the last good state
  steps = [json.loads(l)["step"] for l in open(tmp_path / "metrics.jsonl")]
  assert steps == [1, 2]


def test_nan_update_is_skipped_and_counted(tmp_path):
  good = _nan_run(tmp_path / "good", steps=2, bad_steps=set(), nonfinite="skip")
  skipped = _nan_run(tmp_path / "skip", steps=3, bad_steps={3}, nonfinite="skip",
                     log_every_steps=1)
  # The skipped update left the parameters as they were after step 2, to the bit.
  jax.tree.map(np.testing.assert_array_equal, skipped.params, good.params)
  lines = [json.loads(l) for l in open(tmp_path / "skip" / "metrics.jsonl")]
  assert [l["train/skipped_updates"] for l in lines] == [0, 0, 1]
  assert np.isnan(lines[2]["train/kid"])
  with pytest.raises(FloatingPointError, match=r"DDSS step 4: 2 non-finite updates skipped in "
                     r"a row"):
    _nan_run(tmp_path / "many", steps=6, bad_steps={3, 4, 5, 6}, nonfinite="skip",
             max_consecutive_skips=2)
