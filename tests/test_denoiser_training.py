"""Base-model training: the loss against a closed form, and kill-safe resumption."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddss_jax.models import denoiser_training
from ddss_jax.models.mlp import MLPEpsModel
from ddss_jax.samplers import diffusion, schedules


def test_denoising_loss_of_the_bayes_optimal_model_on_gaussian_data():
  """For x0 ~ N(0, I), E[eps | x_t] = s(t) x_t, whose loss is E_t[1 - s(t)^2] = mean(alpha_bar)."""
  sched = schedules.linear_beta()

  def oracle(params, x_t, t):
    del params
    _, s = diffusion.alpha_sigma(sched.logsnr(t), x_t)
    return s * x_t

  x0 = jax.random.normal(jax.random.PRNGKey(0), (20000, 4))
  loss = denoiser_training.denoising_loss(oracle, None, x0, jax.random.PRNGKey(1), schedule=sched)
  assert abs(float(loss) - sched.alpha_bars.mean()) < 0.01


def test_label_dropout_calls_the_unconditional_branch_at_its_rate():
  """A model that predicts s(t) x_t (Bayes-optimal on N(0, I) data) for a label and 0 for the null
  label has loss rate * 1 + (1 - rate) * mean(alpha_bar)."""
  sched = schedules.linear_beta()

  def model(params, x_t, t, labels):
    del params
    _, s = diffusion.alpha_sigma(sched.logsnr(t), x_t)
    return s * x_t * (labels != 10)[:, None]

  x0 = jax.random.normal(jax.random.PRNGKey(0), (20000, 4))
  labels = jnp.arange(20000) % 10
  for rate in (0.0, 0.25):
    loss = denoiser_training.denoising_loss(
        model, None, x0, jax.random.PRNGKey(1), schedule=sched, labels=labels,
        dropout=denoiser_training.LabelDropout(null_label=10, rate=rate))
    assert abs(float(loss) - (rate + (1 - rate) * sched.alpha_bars.mean())) < 0.01


def test_lr_scales_speed_up_the_named_parameters_only():
  """Two copies of one linear model, one of them ("fast") at ten times the learning rate: with
  Adam's steps of about the learning rate, it moves about ten times as far in one step."""
  def apply_fn(params, x, t):
    del t
    return x @ params["slow"] + x @ params["fast"]

  params = {"slow": jnp.zeros((2, 2)), "fast": jnp.zeros((2, 2))}
  batch_fn = lambda step: jax.random.normal(jax.random.PRNGKey(step), (64, 2))
  trained = denoiser_training.train_denoiser(
      apply_fn, params, batch_fn, schedule=schedules.linear_beta(), num_steps=1,
      learning_rate=1e-3, ema_decay=0.0, lr_scales={"fast": 10.0})
  ratio = np.abs(np.asarray(trained["fast"])) / np.abs(np.asarray(trained["slow"]))
  np.testing.assert_allclose(ratio, 10.0, rtol=1e-3)


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(tmp_path):
  model = MLPEpsModel(width=16, depth=1)
  apply_fn = lambda p, x, t: model.apply({"params": p}, x, t)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1,)))["params"]
  batch_fn = lambda step: jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(5), step),
                                            (32, 2))
  kwargs = dict(schedule=schedules.linear_beta(), num_steps=6, learning_rate=1e-2,
                warmup_steps=2, checkpoint_every=3)
  straight = denoiser_training.train_denoiser(apply_fn, params, batch_fn,
                                     checkpoint_dir=str(tmp_path / "straight"), **kwargs)

  def killed_at_step_4(step):
    if step == 4:
      raise KeyboardInterrupt("simulated kill")
    return batch_fn(step)

  with pytest.raises(KeyboardInterrupt):
    denoiser_training.train_denoiser(apply_fn, params, killed_at_step_4,
                            checkpoint_dir=str(tmp_path / "killed"), **kwargs)
  resumed = denoiser_training.train_denoiser(apply_fn, params, batch_fn,
                                    checkpoint_dir=str(tmp_path / "killed"), **kwargs)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_stop_after_then_resume_equals_one_run_and_stage_settings_apply(tmp_path):
  """stop_after checkpoints and ends a run mid-schedule; resuming with the same settings equals
  one uninterrupted run, and resuming with another batch (the shipped UNet's second stage)
  gives other weights from the same first stage."""
  model = MLPEpsModel(width=16, depth=1)
  apply_fn = lambda p, x, t: model.apply({"params": p}, x, t)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1,)))["params"]
  batch_of = lambda size: lambda step: jax.random.normal(
      jax.random.fold_in(jax.random.PRNGKey(5), step), (size, 2))
  kwargs = dict(schedule=schedules.linear_beta(), num_steps=6, learning_rate=1e-2,
                warmup_steps=2, checkpoint_every=100)
  straight = denoiser_training.train_denoiser(apply_fn, params, batch_of(32), **kwargs)
  for name in ("same", "bigger"):
    stage1 = denoiser_training.train_denoiser(apply_fn, params, batch_of(32), stop_after=4,
                                              checkpoint_dir=str(tmp_path / name), **kwargs)
    assert not np.array_equal(jax.tree.leaves(stage1)[0], jax.tree.leaves(straight)[0])
  same = denoiser_training.train_denoiser(apply_fn, params, batch_of(32),
                                          checkpoint_dir=str(tmp_path / "same"), **kwargs)
  bigger = denoiser_training.train_denoiser(apply_fn, params, batch_of(64),
                                            checkpoint_dir=str(tmp_path / "bigger"), **kwargs)
  for a, b, c in zip(jax.tree.leaves(straight), jax.tree.leaves(same), jax.tree.leaves(bigger)):
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
