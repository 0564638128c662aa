"""The teacher loss: the cached pool equals the teacher run from its noise, the loss is the mean
squared difference it says it is, DDSS lowers it, and bad settings fail before anything runs."""

import json
import os

import jax
import numpy as np
import pytest

from configs import tiny
from ddss_jax import run as run_lib, samplers
from ddss_jax.learn import teacher
from ddss_jax.samplers import schedules
from ddss_jax.settings import LossConfig, from_group
from ddss_jax.util.errors import ConfigError


def teacher_config(steps=8, **loss):
  config = tiny.get_config()
  config.loss.update(name="teacher", teacher_steps=20, teacher_pool=48, **loss)
  config.train.update(num_train_steps=steps, learning_rate=2e-2, log_every_steps=1)
  config.eval.reference_steps = 0
  return config


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
  """The tiny 2-D problem and its settings (the frozen MLP is trained once, in seconds)."""
  workdir = str(tmp_path_factory.mktemp("toy"))
  config = teacher_config()
  schedule = schedules.linear_beta()
  problem = run_lib.build_problem(config, schedule, workdir)
  cfg = from_group(LossConfig, config.loss)
  return problem, schedule, cfg, workdir


def test_pool_is_the_teacher_run_from_its_noise_and_is_cached(toy, tmp_path):
  problem, schedule, cfg, _ = toy
  ddim = teacher.make(cfg, schedule)
  assert (ddim.family, ddim.num_steps, ddim.stride) == ("ddim", 20, "linear")
  pool = teacher.load_or_draw_pool(cfg, ddim, problem, str(tmp_path), seed=3, batch_size=32)
  assert pool["x_T"].shape == pool["target"].shape == (48, 2)
  # Batch 1 (rows 32..47) starts from normal(fold_in(PRNGKey(3), 1)).
  x_T = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(3), 1), (16, 2))
  np.testing.assert_array_equal(pool["x_T"][32:], x_T)
  want = ddim.sample({}, lambda x, t: problem.eps_apply(problem.model_params, x, t),
                     jax.random.PRNGKey(9), (16, 2), x_T=x_T)
  np.testing.assert_allclose(pool["target"][32:], want, rtol=1e-5, atol=1e-5)
  # Cached: the same file is read back; other weights get another file.
  path = teacher.pool_path(cfg, problem, str(tmp_path), seed=3)
  assert os.listdir(tmp_path) == [os.path.basename(path)]
  again = teacher.load_or_draw_pool(cfg, None, problem, str(tmp_path), seed=3, batch_size=32)
  np.testing.assert_array_equal(again["target"], pool["target"])
  other = problem.__class__(**{**problem.__dict__, "model_params": jax.tree.map(
      lambda a: a + 1.0, problem.model_params)})
  assert teacher.pool_path(cfg, other, str(tmp_path), seed=3) != path
  # A teacher that clips x0 predictions draws another pool, under another name.
  clipped = teacher.make(cfg, schedule, clip_x0=1.0)
  assert clipped.clip_x0 == 1.0
  clipped_path = teacher.pool_path(cfg, problem, str(tmp_path), seed=3, clip_x0=1.0)
  assert clipped_path == path.replace("_seed3_", "_seed3_clip1_")


def test_batches_draw_distinct_pairs_and_split_by_rows():
  pool = {"x_T": np.arange(10.0)[:, None], "target": -np.arange(10.0)[:, None]}
  draw = teacher.batch_fn(pool)
  batch = draw(jax.random.PRNGKey(0), 6)
  assert len(set(batch["x_T"][:, 0])) == 6
  np.testing.assert_array_equal(batch["target"], -batch["x_T"])  # pairs stay together
  np.testing.assert_array_equal(draw(jax.random.PRNGKey(0), 6, slice(2, 4))["x_T"],
                                batch["x_T"][2:4])
  with pytest.raises(ValueError, match="batch_size=11 exceeds loss.teacher_pool=10"):
    draw(jax.random.PRNGKey(0), 11)


@pytest.mark.parametrize("space", ["data", "features"])
def test_loss_is_the_mean_squared_difference_to_the_teacher(toy, space):
  problem, schedule, _, _ = toy
  student = samplers.make("ggdm", schedule, 20, stride="linear")
  ddim = samplers.make("ddim", schedule, 20, stride="linear")
  eps_fn = lambda x, t: problem.eps_apply(problem.model_params, x, t)
  x_T = jax.random.normal(jax.random.PRNGKey(1), (8, 2))
  target = ddim.sample({}, eps_fn, jax.random.PRNGKey(2), (8, 2), x_T=x_T)
  loss_fn = teacher.make_loss_fn(student, problem, space)
  args = (problem.model_params, problem.feature_params)
  # At init the student is that DDIM: no loss.
  at_init = loss_fn(student.init(), *args, {"x_T": x_T, "target": target}, jax.random.PRNGKey(3))
  assert float(at_init) < 1e-8  # float32 rounding of two ways to write DDIM
  # Elsewhere it is the plain mean squared difference of its own samples to the target.
  params = dict(student.init(), mu=student.init()["mu"] * 1.05)
  key = jax.random.PRNGKey(3)
  got = loss_fn(params, *args, {"x_T": x_T, "target": target}, key)
  mine = student.sample(params, eps_fn, key, (8, 2), x_T=x_T)
  if space == "features":
    mine, target = (problem.feature_apply(problem.feature_params, a) for a in (mine, target))
  want = np.mean((np.asarray(mine, np.float64) - np.asarray(target, np.float64)) ** 2)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert float(got) > 1e-4


@pytest.mark.slow
def test_ddss_with_the_teacher_loss_lowers_it(tmp_path):
  config = teacher_config(steps=20)
  results = run_lib.train_and_evaluate(config, str(tmp_path))
  assert results["loss"] == "teacher"
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  losses = [line["train/teacher"] for line in lines if "train/teacher" in line]
  assert len(losses) == 20 and all("train/kid" not in line for line in lines)
  assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
  assert len([f for f in os.listdir(tmp_path) if f.startswith("teacher_toy2d_ddim_linear20")]) == 1


@pytest.mark.parametrize("edit,match", [
    (dict(name="lpips"), r"config.loss.name='lpips': valid choices: \['kid', 'teacher'\]"),
    (dict(teacher_space="pixels"), r"config.loss.teacher_space='pixels': valid choices: "
     r"\['data', 'features'\]"),
    (dict(teacher_family="ggdm"), r"config.loss.teacher_family='ggdm': valid choices: \['ddpm', "
     r"'ddim', 'dpm-solver\+\+2m', 'unipc', 'ipndm'\]"),
    (dict(teacher_stride="cubic"), r"config.loss.teacher_stride='cubic': valid choices: "
     r"\['linear', 'quadratic', 'logsnr'\]"),
    (dict(teacher_steps=0), r"config.loss.teacher_steps=0: must be an integer >= 1"),
    (dict(teacher_steps=1001), r"config.loss.teacher_steps=1001: must be an integer >= 1 and "
     r"<= 1000"),
    (dict(teacher_pool=8), r"config.train.batch_size=16: exceeds loss.teacher_pool=8"),
])
def test_bad_loss_settings_fail_before_anything_runs(tmp_path, edit, match):
  config = teacher_config()
  config.loss.update(**edit)
  with pytest.raises(ConfigError, match=match):
    run_lib.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path) if os.path.exists(tmp_path) else True
