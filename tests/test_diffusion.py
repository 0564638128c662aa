import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddss_jax.samplers import diffusion, schedules


@pytest.fixture
def batch():
  key_x, key_e, key_l = jax.random.split(jax.random.PRNGKey(0), 3)
  x0 = jax.random.normal(key_x, (4, 3, 3, 2))
  eps = jax.random.normal(key_e, x0.shape)
  logsnr = jax.random.uniform(key_l, (4,), minval=-6.0, maxval=6.0)
  return x0, eps, logsnr


def test_conversions_agree_with_the_definitions(batch):
  x0, eps, logsnr = batch
  a = np.sqrt(1 / (1 + np.exp(-np.asarray(logsnr, np.float64))))[:, None, None, None]
  s = np.sqrt(1 - a**2)
  x_t = diffusion.diffuse(x0=x0, eps=eps, logsnr=logsnr)
  np.testing.assert_allclose(x_t, a * x0 + s * eps, rtol=1e-5, atol=1e-6)
  v = a * eps - s * x0
  np.testing.assert_allclose(diffusion.x0_from_eps(x_t=x_t, eps=eps, logsnr=logsnr), x0,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(diffusion.eps_from_x0(x_t=x_t, x0=x0, logsnr=logsnr), eps,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(diffusion.v_from_eps(x_t=x_t, eps=eps, logsnr=logsnr), v,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(diffusion.x0_from_v(x_t=x_t, v=v, logsnr=logsnr), x0,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(diffusion.eps_from_v(x_t=x_t, v=v, logsnr=logsnr), eps,
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_as_eps_fn_adapts_other_parameterisations(batch, prediction):
  x0, eps, logsnr_unused = batch
  sched = schedules.linear_beta()
  t = jnp.array([10.0, 200.5, 600.0, 900.0])
  x_t = diffusion.diffuse(x0=x0, eps=eps, logsnr=sched.logsnr(t))
  # An oracle that knows the true x0 and eps, in the requested parameterisation.
  a, s = diffusion.alpha_sigma(sched.logsnr(t), x0)
  oracle = {"x0": lambda x, t: x0, "v": lambda x, t: a * eps - s * x0}[prediction]
  eps_fn = diffusion.as_eps_fn(oracle, prediction=prediction, logsnr_fn=sched.logsnr)
  np.testing.assert_allclose(eps_fn(x_t, t), eps, rtol=2e-3, atol=2e-3)


def test_unknown_prediction_names_the_choices():
  with pytest.raises(ValueError, match=r"unknown prediction 'score'.*'eps', 'x0', 'v'"):
    diffusion.as_eps_fn(lambda x, t: x, prediction="score", logsnr_fn=lambda t: t)
