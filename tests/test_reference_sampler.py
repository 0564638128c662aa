"""The NumPy float64 reference against closed forms, and the JAX samplers against it: given the
same x_T and per-step noise, every family's JAX sample equals the reference's run of its
sampler.json to ~1e-5."""

import inspect
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ddss_jax import samplers
from ddss_jax.samplers import numpy_reference, sampler_json, schedules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHED = schedules.linear_beta(1000)
SHAPE = (3, 4)


def analytic_eps(x, t, xp=np):
  """A smooth eps-function of (x, t) that NumPy and JAX evaluate alike."""
  t = t.reshape((-1,) + (1,) * (x.ndim - 1)) / 1000.0
  return xp.tanh(0.7 * x + 0.3 * xp.sin(3.0 * x) * t) + 0.2 * t


def jax_noises(key, num_steps, shape):
  """The noise ddss_jax documents: (key_T, noise_key) = split(key); z_i from
  fold_in(noise_key, i)."""
  noise_key = jax.random.split(key)[1]
  return [np.asarray(jax.random.normal(jax.random.fold_in(noise_key, i), shape))
          for i in range(num_steps)]


def assert_close(got, want):
  """Float32 against float64: 1e-5 of the sample's scale (analytic_eps is no trained model, and
  some samplers' x0 predictions at t = T - 1 reach 100)."""
  np.testing.assert_allclose(got, want, atol=1e-5 * max(1.0, np.max(np.abs(want))), rtol=0)


def perturbed(params, seed, scale):
  """Learned-looking parameters: each leaf moved away from its init by scale * N(0, 1)."""
  rng = np.random.default_rng(seed)
  return {name: np.asarray(value) + scale * rng.normal(size=np.shape(value)).astype(np.float32)
          for name, value in params.items()}


CASES = [  # family, stride, perturbation of the init (0: the fixed family's own parameters)
    ("ddim", "quadratic", 0.0), ("ddpm", "linear", 0.0), ("ggdm+pred+time", "quadratic", 0.05),
    ("ggdm", "linear", 0.05), ("dpm-solver++2m", "logsnr", 0.0), ("unipc", "linear", 0.0),
    ("vars", "quadratic", 0.3), ("unipc+time", "linear", 0.2)]


@pytest.mark.parametrize("family,stride,scale", CASES)
def test_jax_samplers_equal_the_reference_on_their_sampler_file(tmp_path, family, stride, scale):
  sampler = samplers.make(family, SCHED, 5, stride=stride)
  params = perturbed(sampler.init(), seed=1, scale=scale)
  path = str(tmp_path / "sampler.json")
  samplers.save(path, sampler, params)
  key = jax.random.PRNGKey(7)
  x_T = np.asarray(jax.random.normal(jax.random.PRNGKey(3), SHAPE))
  got = np.asarray(sampler.sample(params, lambda x, t: analytic_eps(x, t, jax.numpy), key, SHAPE,
                                  x_T=x_T))
  spec = numpy_reference.load(path)
  assert numpy_reference.needs_noise(spec) == sampler.stochastic or family == "ddim"
  want = numpy_reference.sample(spec, analytic_eps, x_T=x_T,
                                noises=jax_noises(key, 5, SHAPE))
  assert np.max(np.abs(want)) > 0.1  # a sample, not a collapse to zero
  assert_close(got, want)


def test_noise_enters_the_stochastic_reference():
  """Different z_i give different samples, and the same z_i the same (ddpm, K = 3)."""
  spec = samplers.to_spec(*_fixed("ddpm", 3))
  x_T = np.ones(SHAPE)
  z = [np.full(SHAPE, 0.5)] * 3
  first = numpy_reference.sample(spec, analytic_eps, x_T=x_T, noises=z)
  np.testing.assert_array_equal(first, numpy_reference.sample(spec, analytic_eps, x_T=x_T,
                                                              noises=z))
  assert np.max(np.abs(first - numpy_reference.sample(spec, analytic_eps, x_T=x_T,
                                                      noises=[-a for a in z]))) > 0.01
  with pytest.raises(ValueError, match="pass noises, 3 arrays"):
    numpy_reference.sample(spec, analytic_eps, x_T=x_T)


def _fixed(family, num_steps, **kwargs):
  sampler = samplers.make(family, SCHED, num_steps, stride="linear", **kwargs)
  return sampler, sampler.init()


def test_one_step_ddim_is_the_x0_prediction_and_clip_clips_it():
  """K = 1 DDIM goes straight to alpha_bar = 1: x_0 = (x_T - s eps) / a, at t = 0."""
  spec = samplers.to_spec(*_fixed("ddim", 1))
  x_T = np.linspace(-3, 3, 12).reshape(SHAPE)
  abar = SCHED.alpha_bars[0]
  x0 = (x_T - np.sqrt(1 - abar) * analytic_eps(x_T, np.zeros(3))) / np.sqrt(abar)
  np.testing.assert_allclose(numpy_reference.sample(spec, analytic_eps, x_T=x_T), x0,
                             rtol=1e-6)
  clipped = numpy_reference.sample(spec.__class__(**{**spec.__dict__, "clip_x0": 1.0}),
                                   analytic_eps, x_T=x_T)
  np.testing.assert_allclose(clipped, np.clip(x0, -1, 1), rtol=1e-6)
  assert np.max(np.abs(x0)) > 2  # the clip acted


@pytest.mark.skipif("clip_x0" not in inspect.signature(samplers.make).parameters,
                    reason="samplers.make has no clip_x0 yet")
@pytest.mark.parametrize("family", ["ddim", "ggdm+pred+time"])
def test_clipped_jax_samplers_equal_the_clipped_reference(tmp_path, family):
  sampler = samplers.make(family, SCHED, 4, clip_x0=1.0)  # pylint: disable=unexpected-keyword-arg
  params = perturbed(sampler.init(), seed=2, scale=0.05 if sampler.init() else 0.0)
  path = str(tmp_path / "sampler.json")
  samplers.save(path, sampler, params)
  spec = numpy_reference.load(path)
  assert spec.clip_x0 == 1.0
  key = jax.random.PRNGKey(1)
  x_T = 3.0 * np.asarray(jax.random.normal(jax.random.PRNGKey(3), SHAPE))
  got = sampler.sample(params, lambda x, t: analytic_eps(x, t, jax.numpy), key, SHAPE, x_T=x_T)
  want = numpy_reference.sample(spec, analytic_eps, x_T=x_T, noises=jax_noises(key, 4, SHAPE))
  assert_close(np.asarray(got), want)


def test_alpha_bar_between_integers_matches_the_schedule():
  spec = samplers.to_spec(*_fixed("ddim", 2))
  t = np.array([0.0, 0.5, 17.25, 998.9, 999.0])
  np.testing.assert_allclose(numpy_reference.alpha_bar(spec, t), SCHED.alpha_bar(t),
                             rtol=2e-6)
  np.testing.assert_allclose(numpy_reference.alpha_bar(spec, np.arange(1000.0)),
                             SCHED.alpha_bars, rtol=1e-12)


@pytest.mark.parametrize("prediction", sampler_json.PREDICTIONS)
def test_eps_from_prediction_inverts_the_forward_process(prediction):
  rng = np.random.default_rng(0)
  x0, eps = rng.normal(size=SHAPE), rng.normal(size=SHAPE)
  abar = np.array([0.9, 0.5, 0.01])
  a, s = np.sqrt(abar)[:, None], np.sqrt(1 - abar)[:, None]
  x = a * x0 + s * eps
  output = {"eps": eps, "x0": x0, "v": a * eps - s * x0}[prediction]
  np.testing.assert_allclose(numpy_reference.eps_from_prediction(output, x, abar,
                                                                 prediction=prediction),
                             eps, atol=1e-12)


@pytest.mark.slow
def test_the_reference_imports_no_jax():
  code = ("import sys, ddss_jax.samplers.numpy_reference; "
          "assert 'jax' not in sys.modules, 'jax imported'")
  run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=False)
  assert run.returncode == 0, run.stderr
