"""The DDSS loop: end to end on 2-D data, resumption, no recompilation, config validation."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default, tiny, toy2d
from ddss_jax import run as run_lib, samplers
from ddss_jax.evaluation import drawing, metrics
from ddss_jax.learn import kid_loss, loop
from ddss_jax.problems import toy2d as toy2d_problem
from ddss_jax.problems.base import Problem
from ddss_jax.samplers import schedules
from ddss_jax.settings import TrainConfig, from_group
from ddss_jax.util import logs
from ddss_jax.util.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_ddss_beats_ddim_on_held_out_2d_metrics(tmp_path):
  """The shipped 2-D config: learned GGDM+PRED+TIME at K = 4 against DDIM at K = 4."""
  results = run_lib.train_and_evaluate(toy2d.get_config(), str(tmp_path))
  ddim, learned = results["baseline"], results["learned"]
  assert (ddim["family"], learned["family"]) == ("ddim", "ggdm+pred+time")
  print(json.dumps(results, indent=1))
  assert learned["mmd"] <= 0.7 * ddim["mmd"]          # at least 30% lower held-out MMD
  assert learned["log_density"] > ddim["log_density"]  # samples sit where the density is
  assert os.path.exists(tmp_path / "samples.png")


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tmp_path):
  config = tiny.get_config()
  straight = run_lib.train_and_evaluate(config, str(tmp_path / "straight"))
  config.train.num_train_steps = 2
  run_lib.train_and_evaluate(config, str(tmp_path / "resumed"))
  config.train.num_train_steps = 4
  resumed = run_lib.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed["train_steps"] == straight["train_steps"] == 4
  assert resumed == straight
  assert (open(tmp_path / "resumed" / "sampler.json").read()
          == open(tmp_path / "straight" / "sampler.json").read())
  lines = [json.loads(l) for l in open(tmp_path / "resumed" / "metrics.jsonl")]
  # Train lines at steps 2 and 4, an eval line after each run.
  assert [l["step"] for l in lines] == [2, 2, 4, 4]
  assert set(lines[-1]) == {"step", "eval/mmd@K=3", "eval/log_density@K=3",
                            "eval/ddim/mmd@K=3", "eval/ddim/log_density@K=3"}
  assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["2", "4"]


def test_train_step_compiles_once(tmp_path):
  config = tiny.get_config()
  schedule = schedules.linear_beta()
  problem = run_lib.build_problem(config, schedule, str(tmp_path))
  traces = []
  counted = Problem(**{**problem.__dict__, "eps_apply": lambda *a: (
      traces.append(1), problem.eps_apply(*a))[1]})
  sampler = samplers.make("ggdm+pred+time", schedule, 3)
  optimizer = loop.create_optimizer(from_group(TrainConfig, config.train))
  state = loop.create_train_state(sampler.init(), optimizer)
  step = loop.make_train_step(sampler, counted, optimizer, batch_size=8)
  for i in range(3):
    real = problem.real_batch(jax.random.PRNGKey(i), 8)
    state, _ = step(state, problem.model_params, problem.feature_params, real,
                    jax.random.PRNGKey(0))
    if i == 0:
      traced_after_first = len(traces)
  assert traced_after_first > 0 and len(traces) == traced_after_first
  assert int(state.step) == 3


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.sampler.update(family="ggdm+pred+tme"),
     r"config.sampler.family='ggdm\+pred\+tme': valid choices: \['ddpm', 'ddim'"),
    (lambda c: c.sampler.update(num_steps=0), r"config.sampler.num_steps=0: must be an integer "
     r">= 1"),
    (lambda c: c.sampler.update(num_steps=1001), r"config.sampler.num_steps=1001: must be an "
     r"integer >= 1 and <= 1000"),
    (lambda c: c.sampler.update(family="ddim"), r"config.sampler.family='ddim': has nothing to "
     r"learn with train.num_train_steps=4"),
    (lambda c: setattr(c, "problem", "mnist3d"),
     r"config.problem='mnist3d': valid choices: \['toy2d', 'mnist', 'pretrained'\]"),
    (lambda c: c.schedule.update(name="sigmoid"), r"config.schedule.name='sigmoid': valid "
     r"choices: \['linear', 'cosine'\]"),
    (lambda c: c.train.update(batch_size=1), r"config.train.batch_size=1: must be an integer "
     r">= 2"),
    (lambda c: c.toy2d.update(features="pixels"), r"config.toy2d.features='pixels': valid "
     r"choices: \['identity', 'rff'\]"),
    (lambda c: c.train.update(nonfinite="ignore"), r"config.train.nonfinite='ignore': valid "
     r"choices: \['stop', 'skip'\]"),
    (lambda c: c.sampler.update(num_steps=3, unroll=4), r"config.sampler.unroll=4: must be <= "
     r"sampler.num_steps=3"),
])
def test_bad_configs_fail_before_anything_compiles(tmp_path, edit, match):
  config = tiny.get_config()
  edit(config)
  with pytest.raises(ConfigError, match=match):
    run_lib.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")
  assert not os.path.exists(tmp_path / "config.json")


def test_config_groups_reject_unknown_and_missing_keys():
  config = default.get_config()
  config.train.learning_rte = 1.0
  with pytest.raises(ValueError, match=r"unknown key\(s\) \['learning_rte'\] in config.train"):
    from_group(TrainConfig, config.train)
  with pytest.raises(ValueError, match=r"config.toy2d lacks key\(s\) \['std'\]"):
    from_group(toy2d_problem.Config, {k: v for k, v in config.toy2d.items() if k != "std"})


@pytest.mark.slow
def test_main_runs_from_the_command_line(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "ddss_jax.main", "--config=configs/tiny.py",
       f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "| baseline: ddim K=3 |" in out.stdout
  assert "| learned: ggdm+pred+time K=3 |" in out.stdout
  results = json.load(open(tmp_path / "results.json"))
  assert results["train_steps"] == 4
  assert set(results) == {"problem", "loss", "train_steps", "baseline", "learned", "reference",
                          "data"}
  assert results["loss"] == "kid"
  for name in ["sampler.json", "samples.png", "samples_baseline.png", "samples_learned.png",
               "samples_reference.png", "metrics.jsonl"]:
    assert os.path.exists(tmp_path / name), name


@pytest.mark.parametrize("schedule,warmup", [("constant", 0), ("constant", 3), ("cosine", 0),
                                             ("cosine", 2)])
def test_learning_rate_schedule_is_warmup_then_constant_or_cosine(schedule, warmup):
  cfg = TrainConfig(num_train_steps=20, accumulate_steps=2, learning_rate=0.1,
                    lr_schedule=schedule, warmup_steps=warmup)
  lr = loop.learning_rate_schedule(cfg)
  updates = 10  # 20 batches, 2 per update
  for t in range(updates + 1):
    if t < warmup:
      expected = 0.1 * t / warmup
    elif schedule == "constant":
      expected = 0.1
    else:
      expected = 0.05 * (1 + math.cos(math.pi * (t - warmup) / (updates - warmup)))
    assert float(lr(t)) == pytest.approx(expected, abs=1e-7), t


def test_parameter_average_is_an_ema_of_the_iterates():
  """Against a NumPy loop: average_0 = params_0, average <- d average + (1 - d) params_t."""
  optimizer = loop.parameter_average(optax.sgd(0.1), 0.8)
  params = {"w": jnp.array([1.0, -2.0])}
  state = optimizer.init(params)
  iterate, average = np.array([1.0, -2.0]), np.array([1.0, -2.0])
  for t in range(5):
    grads = {"w": jnp.array([t + 1.0, 0.5])}
    updates, state = optimizer.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    iterate = iterate - 0.1 * np.array([t + 1.0, 0.5])
    average = 0.8 * average + 0.2 * iterate
    np.testing.assert_allclose(params["w"], iterate, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loop.averaged_params(state)["w"], average, rtol=1e-6, atol=1e-6)
  assert loop.averaged_params(optax.adam(0.1).init(params)) is None


def test_accumulated_batches_make_one_update_of_their_mean_gradient():
  cfg = TrainConfig(num_train_steps=4, accumulate_steps=2, grad_clip=0.0, nonfinite="skip",
                    ema_decay=0.5)
  optimizer = loop.create_optimizer(cfg)
  reference = optax.adam(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2)
  params = ref_params = {"w": jnp.array([0.3, -0.1])}
  state, ref_state = optimizer.init(params), reference.init(ref_params)
  grads = [jnp.array([1.0, 2.0]), jnp.array([3.0, -1.0])]
  for g in grads:
    updates, state = optimizer.update({"w": g}, state, params)
    params = optax.apply_updates(params, updates)
  ref_updates, _ = reference.update({"w": (grads[0] + grads[1]) / 2}, ref_state, ref_params)
  np.testing.assert_allclose(params["w"], optax.apply_updates(ref_params, ref_updates)["w"],
                             rtol=1e-6)
  np.testing.assert_allclose(loop.averaged_params(state)["w"],
                             0.5 * ref_params["w"] + 0.5 * params["w"], rtol=1e-6)


@pytest.mark.slow
def test_kid_loss_against_a_fixed_bank_of_real_features(tmp_path):
  config = tiny.get_config()
  schedule = schedules.linear_beta()
  problem = run_lib.build_problem(config, schedule, str(tmp_path))
  reference = kid_loss.make_reference(problem, problem.feature_params, size=40, seed=5)
  real = problem.real_batch(jax.random.PRNGKey(5), 40)
  bank = problem.feature_apply(problem.feature_params, real)
  np.testing.assert_allclose(reference["features"], bank, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(reference["within"], metrics.within_mean(bank), rtol=1e-5)
  sampler = samplers.make("ggdm+pred+time", schedule, 3)
  loss_fn = kid_loss.make_loss_fn(sampler, problem, 16)
  key = jax.random.PRNGKey(0)
  with_bank = loss_fn(sampler.init(), problem.model_params, problem.feature_params, real[:16], key,
                      reference)
  generated = drawing.generate(sampler, problem, sampler.init(), problem.model_params, key, 16)
  feats = problem.feature_apply(problem.feature_params, generated)
  np.testing.assert_allclose(with_bank, metrics.kid(feats, bank), rtol=1e-4, atol=1e-6)


def test_progress_says_when_compiling_and_leaves_it_out_of_the_time_left(tmp_path, monkeypatch):
  """A fake step that takes 60 s the first time (compiling) and 2 s after: the reported speed
  is 0.5 steps/s, not (n - 1) / (60 + 2 (n - 1)); the two compilation lines come first."""
  clock = {"t": 0.0}
  monkeypatch.setattr(logs.StepClock, "now", staticmethod(lambda: clock["t"]))
  config = tiny.get_config()
  config.train.update(num_train_steps=5, log_every_steps=1)
  cfg = from_group(TrainConfig, config.train)
  problem = run_lib.build_problem(config, schedules.linear_beta(), str(tmp_path))
  state = loop.create_train_state({"w": jnp.zeros(())}, optax.sgd(0.1))

  def fake_step(state, model_params, feature_params, real, key, reference=None):
    clock["t"] += 60.0 if int(state.step) == 0 else 2.0
    return state.replace(step=state.step + 1), {"train/kid": jnp.float32(0.5)}

  said, reports = [], []
  loop.run_training(state, fake_step, problem, cfg, None, logs.MetricWriter(None),
                    progress=lambda *args: reports.append(args), say=said.append)
  assert said[0].startswith("DDSS step 1/5: compiling the training step")
  assert said[1].startswith("DDSS step 1/5: compiled and ran in 60.0 s")
  assert [r[0] for r in reports] == [1, 2, 3, 4, 5]
  assert reports[0][2] == pytest.approx(1 / 60)
  assert [r[2] for r in reports[1:]] == pytest.approx([0.5] * 4)


@pytest.mark.parametrize("setting,group", [("time_lr_scale", "time_logits"),
                                           ("guidance_lr_scale", "guidance")])
def test_group_lr_scale_scales_only_that_groups_steps(setting, group):
  params = {"mu": jnp.ones(3), group: jnp.zeros(4)}
  grads = {"mu": jnp.asarray([0.5, -1.0, 2.0]), group: jnp.asarray([1.0, -3.0, 0.2, 4.0])}

  def first_update(scale):
    optimizer = loop.create_optimizer(TrainConfig(**{setting: scale}, grad_clip=0.0))
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return updates

  base, scaled = first_update(1.0), first_update(5.0)
  np.testing.assert_array_equal(scaled["mu"], base["mu"])
  np.testing.assert_allclose(scaled[group], 5.0 * base[group], rtol=1e-6)
  # Adam's first step is -lr * g / (|g| + eps): the learning rate times the sign.
  np.testing.assert_allclose(base[group], -5e-3 * np.sign(grads[group]), rtol=1e-5)


def test_time_and_guidance_lr_scales_together():
  params = {"mu": jnp.ones(2), "time_logits": jnp.zeros(2), "guidance": jnp.zeros(2)}
  grads = jax.tree.map(jnp.ones_like, params)
  optimizer = loop.create_optimizer(TrainConfig(time_lr_scale=3.0, guidance_lr_scale=20.0,
                                                grad_clip=0.0))
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  np.testing.assert_allclose(updates["mu"], -5e-3, rtol=1e-5)
  np.testing.assert_allclose(updates["time_logits"], -1.5e-2, rtol=1e-5)
  np.testing.assert_allclose(updates["guidance"], -0.1, rtol=1e-5)
