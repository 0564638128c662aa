import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddss_jax.samplers import schedules


def test_linear_beta_matches_ho_et_al():
  sched = schedules.linear_beta(1000)
  betas = 1e-4 + (0.02 - 1e-4) * np.arange(1000) / 999
  expected = np.exp(np.cumsum(np.log1p(-betas)))
  np.testing.assert_allclose(sched.alpha_bars, expected, rtol=1e-12)
  # Known value of the DDPM schedule (e.g. diffusers' DDPMScheduler alphas_cumprod[-1]).
  assert sched.alpha_bars[-1] == pytest.approx(4.0358e-5, rel=1e-3)


def test_cosine_matches_improved_diffusion_formula():
  sched = schedules.cosine(1000)
  f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
  betas = [min(1 - f((i + 1) / 1000) / f(i / 1000), 0.999) for i in range(1000)]
  np.testing.assert_allclose(sched.alpha_bars, np.cumprod(1 - np.array(betas)), rtol=1e-12)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_float_time_interpolates_in_logsnr(name):
  sched = schedules.make(name)
  logsnr_table = np.log(sched.alpha_bars / (1 - sched.alpha_bars))
  ints = np.array([0, 1, 17, 500, 998, 999], np.float32)
  np.testing.assert_allclose(sched.logsnr(ints), logsnr_table[ints.astype(int)], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(sched.alpha_bar(ints), sched.alpha_bars[ints.astype(int)], rtol=2e-5)
  # Halfway between two integers the log-SNR is the mean of theirs.
  mid = sched.logsnr(jnp.array([17.5, 640.25]))
  np.testing.assert_allclose(
      mid, [0.5 * (logsnr_table[17] + logsnr_table[18]),
            0.75 * logsnr_table[640] + 0.25 * logsnr_table[641]], rtol=1e-5)
  a, s = sched.alpha_sigma(jnp.array([3.3, 700.7]))
  np.testing.assert_allclose(a**2 + s**2, 1.0, rtol=1e-6)


def test_alpha_bar_is_differentiable_and_decreasing_in_time():
  sched = schedules.linear_beta()
  t = jnp.linspace(0.0, 999.0, 257)
  grads = jax.vmap(jax.grad(sched.alpha_bar))(t)
  assert np.all(np.isfinite(grads)) and np.all(np.asarray(grads) < 0)
  assert np.all(np.diff(np.asarray(sched.alpha_bar(t))) < 0)


def test_bad_schedule_arguments_name_the_choices():
  with pytest.raises(ValueError, match=r"unknown schedule 'sigmoid'.*\['cosine', 'linear'\]"):
    schedules.make("sigmoid")
  with pytest.raises(ValueError, match="num_timesteps"):
    schedules.linear_beta(1)
  with pytest.raises(ValueError, match="beta_start"):
    schedules.linear_beta(1000, beta_start=0.1, beta_end=0.01)


@pytest.mark.parametrize("name,num_timesteps", [
    ("linear", 2), ("linear", 1000), ("linear", 10_000), ("cosine", 2), ("cosine", 1000),
    ("cosine", 100_000)])
def test_every_named_schedule_passes_validation(name, num_timesteps):
  """The cosine schedule's betas clipped at max_beta = 0.999 included: still strictly inside."""
  schedule = schedules.make(name, num_timesteps)
  assert 0 < schedule.alpha_bars[-1] < schedule.alpha_bars[0] < 1
  assert np.all(np.diff(schedule.alpha_bars) < 0)


@pytest.mark.parametrize("alpha_bars,match", [
    ([1.0, 0.5, 0.1], r"alpha_bar\[0\] = 1.0 is not inside \(0, 1\)"),
    ([0.9, 0.5, 0.0], r"alpha_bar\[2\] = 0.0 is not inside \(0, 1\)"),
    ([0.9, -0.5, 0.1], r"alpha_bar\[1\] = -0.5 is not inside"),
    ([0.9, 1.5, 0.1], r"alpha_bar\[1\] = 1.5 is not inside"),
    ([0.9, 0.5, float("nan"), 0.1], r"alpha_bar\[2\] = nan is not inside"),
    ([0.9, 0.5, 0.6, 0.1], r"alpha_bar\[2\] = 0.6 is not below alpha_bar\[1\] = 0.5"),
    ([0.9, 0.5, 0.5], r"alpha_bar\[2\] = 0.5 is not below alpha_bar\[1\] = 0.5"),
    ([0.5], r"alpha_bars must be a 1-D array of T >= 2 values, got shape \(1,\)"),
    ([[0.9, 0.5]], r"alpha_bars must be a 1-D array of T >= 2 values, got shape \(1, 2\)"),
])
def test_bad_alpha_bars_name_the_first_bad_index_and_value(alpha_bars, match):
  with pytest.raises(ValueError, match=r"schedule 'mine': " + match):
    schedules.Schedule("mine", np.asarray(alpha_bars))


def test_a_schedule_whose_alpha_bar_underflows_is_refused():
  # Ho et al.'s betas over 100000 steps drive alpha_bar below the smallest float64.
  with pytest.raises(ValueError, match=r"schedule 'linear': alpha_bar\[\d+\] = .* is not below"):
    schedules.linear_beta(100_000)


def test_a_schedule_keeps_float64_alpha_bars():
  schedule = schedules.Schedule("mine", [0.9, 0.5, 0.1])
  assert schedule.alpha_bars.dtype == np.float64
  np.testing.assert_array_equal(schedule.alpha_bars, [0.9, 0.5, 0.1])
