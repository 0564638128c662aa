"""Classifier-free guidance in the sampler maths: the guided model form against the two calls it
batches, the fixed, interval and learned weights, gradients against autodiff, a pytree
conditioning through the model forms, and a guided sampler.json in the NumPy reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddss_jax import samplers
from ddss_jax.samplers import model_forms, numpy_reference, sampler_json, schedules
from ddss_jax.samplers.guidance import Guidance, guided, initial_weights

SCHED = schedules.linear_beta(1000)
NULL = 3  # the label that means "no class"
SHAPE = (6, 4)


def conditional_eps(x, t, label, xp=np):
  """A smooth conditional eps of (x, t, label) that NumPy and JAX evaluate alike."""
  t = t.reshape(-1, 1) / 1000.0
  shift = 0.4 * (label.reshape(-1, 1) - 1.5)
  return xp.tanh(0.7 * x + 0.3 * xp.sin(3.0 * x) * t + shift) + 0.2 * t


def jax_conditional(params, x, t, label):
  del params
  return conditional_eps(x, t, label, xp=jnp)


def numpy_guided(x, t, label, w):
  """eps_u + w (eps_c - eps_u) from two separate float64 calls."""
  eps_c = conditional_eps(x, t, np.asarray(label, np.float64))
  eps_u = conditional_eps(x, t, np.full(len(x), float(NULL)))
  return eps_u + w.reshape(-1, 1) * (eps_c - eps_u)


LABELS = jnp.array([0, 1, 2, 0, 1, 2])


def test_the_guided_form_is_one_model_call_on_both_halves():
  calls = []

  def counted(params, x, t, label):
    calls.append(x.shape)
    return jax_conditional(params, x, t, label)

  x = jax.random.normal(jax.random.PRNGKey(0), SHAPE)
  t = jnp.linspace(999.0, 0.0, SHAPE[0])
  w = jnp.array([0.0, 1.0, 2.5, -0.5, 3.0, 7.0])
  got = guided(counted, null_cond=NULL)(None, x, t, LABELS, w)
  assert calls == [(12, 4)]
  np.testing.assert_allclose(got, numpy_guided(np.asarray(x, np.float64), np.asarray(t),
                                                LABELS, np.asarray(w)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["ddim", "ipndm", "ggdm+pred+time"])
def test_weight_one_is_the_conditional_model_and_zero_the_unconditional(family):
  key = jax.random.PRNGKey(1)
  guided_eps = guided(jax_conditional, null_cond=NULL)
  for weight, label in ((1.0, LABELS), (0.0, jnp.full_like(LABELS, NULL))):
    sampler = samplers.make(family, SCHED, 5, stride="linear", guidance=Guidance(weight=weight))
    got = sampler.sample(sampler.init(), lambda x, t, c, w: guided_eps(None, x, t, c, w), key,
                         SHAPE, cond=LABELS)
    plain = samplers.make(family, SCHED, 5, stride="linear")
    want = plain.sample(plain.init(), lambda x, t, c: jax_conditional(None, x, t, c), key,
                        SHAPE, cond=label)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_interval_weights_guide_only_inside_the_noise_levels():
  t = jnp.asarray(samplers.stride_timesteps("linear", SCHED, 10), jnp.float32)
  sigma = np.exp(-0.5 * np.asarray(SCHED.logsnr(t)))
  weights = np.asarray(initial_weights(Guidance(weight=4.0, interval=(0.5, 5.0)), schedule=SCHED,
                                       t=t))
  np.testing.assert_array_equal(weights, np.where((sigma > 0.5) & (sigma <= 5.0), 4.0, 1.0))
  assert 0 < np.sum(weights == 4.0) < 10
  open_above = initial_weights(Guidance(weight=2.0, interval=(0.5, math.inf)), schedule=SCHED,
                               t=t)
  np.testing.assert_array_equal(open_above, np.where(sigma > 0.5, 2.0, 1.0))


def test_learned_weights_get_the_gradient_autodiff_gives():
  guided_eps = guided(jax_conditional, null_cond=NULL)
  eps_fn = lambda x, t, c, w: guided_eps(None, x, t, c, w)
  x_T = jax.random.normal(jax.random.PRNGKey(2), SHAPE)
  target = jax.random.normal(jax.random.PRNGKey(3), SHAPE)
  grads = {}
  for gradient in ("adjoint", "checkpoint"):
    sampler = samplers.make("ggdm+pred+time", SCHED, 4, stride="quadratic", eta=1.0,
                            gradient=gradient,
                            guidance=Guidance(weight=2.0, interval=(0.2, 50.0), learn=True))
    params = sampler.init()
    loss = lambda p: jnp.sum((sampler.sample(p, eps_fn, jax.random.PRNGKey(4), SHAPE, x_T=x_T,
                                             cond=LABELS) - target) ** 2)
    grads[gradient] = jax.grad(loss)(params)
  assert set(params) >= {"guidance", "mu", "nu", "time_logits"}
  assert np.abs(np.asarray(grads["adjoint"]["guidance"])).min() > 0
  for name, value in grads["checkpoint"].items():
    np.testing.assert_allclose(grads["adjoint"][name], value, rtol=1e-4,
                               atol=1e-5 * np.abs(np.asarray(value)).max(), err_msg=name)


def test_conditioning_may_be_a_pytree_and_passes_through_the_model_forms():
  def denoiser(params, x, sigma, cond):
    del params
    scale = 1.0 / (1.0 + sigma.reshape(-1, 1) ** 2)
    return x * scale + 0.1 * cond["embedding"] * cond["label"].reshape(-1, 1)

  model = model_forms.sigma_denoiser(denoiser, sigma_min=0.002, sigma_max=80.0)
  cond = {"label": jnp.arange(6.0), "embedding": jnp.ones((6, 4))}
  null = {"label": 0.0, "embedding": jnp.zeros(4)}
  guided_eps = guided(model.eps_fn, null_cond=null)
  sampler = samplers.make("ddim", model.schedule, 4, guidance=Guidance(weight=1.0))
  got = sampler.sample({}, lambda x, t, c, w: guided_eps(None, x, t, c, w),
                       jax.random.PRNGKey(5), SHAPE, cond=cond)
  plain = samplers.make("ddim", model.schedule, 4)
  want = plain.sample({}, lambda x, t, c: model.eps_fn(None, x, t, c), jax.random.PRNGKey(5),
                      SHAPE, cond=cond)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  unconditional = plain.sample({}, lambda x, t: model.eps_fn(None, x, t, null_rows()),
                               jax.random.PRNGKey(5), SHAPE)
  assert np.abs(np.asarray(want) - np.asarray(unconditional)).max() > 1e-2  # cond is used


def null_rows():
  return {"label": jnp.zeros(6), "embedding": jnp.zeros((6, 4))}


def test_a_guided_sampler_file_runs_in_the_numpy_reference(tmp_path):
  sampler = samplers.make("ggdm+pred+time", SCHED, 5, stride="linear",
                          guidance=Guidance(weight=3.0, interval=(0.1, math.inf), learn=True))
  params = sampler.init()
  params["guidance"] = params["guidance"] + jnp.linspace(-0.5, 0.5, 5)
  path = str(tmp_path / "sampler.json")
  samplers.save(path, sampler, params)
  spec = numpy_reference.load(path)
  assert spec.version == 3 and spec.guidance == {"weight": 3.0, "interval": [0.1, "inf"],
                                                  "learn": True}
  np.testing.assert_allclose(spec.coefficients["w"], params["guidance"], rtol=1e-7)
  loaded, loaded_params = samplers.load(path)
  assert loaded.guidance == sampler.guidance
  np.testing.assert_array_equal(loaded_params["guidance"], params["guidance"])

  key = jax.random.PRNGKey(6)
  guided_eps = guided(jax_conditional, null_cond=NULL)
  got = loaded.sample(loaded_params, lambda x, t, c, w: guided_eps(None, x, t, c, w), key,
                      SHAPE, cond=LABELS)
  noise_key = jax.random.split(key)[1]
  x_T = jax.random.normal(jax.random.split(key)[0], SHAPE)
  noises = [np.asarray(jax.random.normal(jax.random.fold_in(noise_key, i), SHAPE))
            for i in range(5)]
  want = numpy_reference.sample(spec, numpy_guided, x_T=np.asarray(x_T), noises=noises,
                                cond=np.asarray(LABELS))
  np.testing.assert_allclose(got, want, atol=1e-5 * max(1.0, np.abs(want).max()), rtol=0)
  with pytest.raises(ValueError, match="guides a conditional model"):
    numpy_reference.sample(spec, numpy_guided, x_T=np.asarray(x_T), noises=noises)


def test_an_unguided_sampler_file_stays_version_2(tmp_path):
  sampler = samplers.make("ggdm", SCHED, 3)
  data = samplers.to_json(sampler, sampler.init())
  assert data["version"] == 2 and "guidance" not in data and "w" not in data["coefficients"]


@pytest.mark.parametrize("make_kwargs,message", [
    (dict(family="ddim", guidance=Guidance(weight=2.0, learn=True)),
     "family 'ddim' has nothing to learn: guidance learn=True needs a learnable family"),
    (dict(family="ddim", guidance=2.0), "guidance must be None or a ddss_jax.samplers.guidance"),
])
def test_bad_guidance_settings_are_refused(make_kwargs, message):
  family = make_kwargs.pop("family")
  with pytest.raises(ValueError, match=message):
    samplers.make(family, SCHED, 4, **make_kwargs)


@pytest.mark.parametrize("kwargs,message", [
    (dict(weight=math.nan), "guidance weight must be a finite number"),
    (dict(interval=(5.0, 1.0)), r"0 <= low < high, got \(5.0, 1.0\)"),
    (dict(interval=(-1.0, 1.0)), r"0 <= low < high, got \(-1.0, 1.0\)"),
    (dict(learn=1), "guidance learn must be True or False"),
])
def test_bad_guidance_values_are_refused(kwargs, message):
  with pytest.raises(ValueError, match=message):
    Guidance(**kwargs)


def test_a_guided_sampler_needs_the_batch_conditioning():
  sampler = samplers.make("ddim", SCHED, 4, guidance=Guidance(weight=2.0))
  eps_fn = lambda x, t, c, w: x
  with pytest.raises(ValueError, match="a guided sampler needs cond="):
    sampler.sample({}, eps_fn, jax.random.PRNGKey(0), SHAPE)
  with pytest.raises(ValueError, match=r"leading axis B = 6 .* shapes \[\(5,\)\]"):
    sampler.sample({}, eps_fn, jax.random.PRNGKey(0), SHAPE, cond=jnp.zeros(5))


def test_a_bad_guidance_field_in_a_file_is_named(tmp_path):
  sampler = samplers.make("ddim", SCHED, 3, guidance=Guidance(weight=2.0, interval=(0.1, 1.0)))
  data = samplers.to_json(sampler, {})
  data["guidance"]["interval"] = [2.0, 1.0]
  with pytest.raises(ValueError, match=r"field 'guidance.interval' is \[2.0, 1.0\]"):
    sampler_json.from_json(data, source="x.json")
  del data["coefficients"]["w"]
  data["guidance"]["interval"] = None
  with pytest.raises(ValueError, match="field 'coefficients.w' is missing"):
    sampler_json.from_json(data, source="x.json")
