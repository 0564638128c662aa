"""ddss_jax.samplers.model_forms: one analytic model (Gaussian data), written by hand in every form,
gives the same samples under the same sampler, equal to a float64 NumPy DDIM of the closed form; the
time inversion is exact to float32; bad arguments are named."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ddss_jax
from ddss_jax import samplers
from ddss_jax.samplers import model_forms, schedules

MEAN, STD = 0.3, 0.5  # the data: x0 ~ N(MEAN, STD^2 I)
LOGSNR_MAX, LOGSNR_MIN, T = 10.0, -10.0, 1000
LOGSNRS = np.linspace(LOGSNR_MAX, LOGSNR_MIN, T)  # every form below has this grid
SHAPE = (64, 4)


def posterior(x_u, alpha, sigma, xp=jnp):
  """(E[x0 | x_u], E[eps | x_u]) for x_u = alpha x0 + sigma eps; alpha, sigma [B]."""
  alpha, sigma = alpha[:, None], sigma[:, None]
  residual = (x_u - alpha * MEAN) / (alpha**2 * STD**2 + sigma**2)
  return MEAN + alpha * STD**2 * residual, sigma * residual


def vp(logsnr):
  return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


# -- the model in each form, by hand ---------------------------------------------------------------

REFERENCE_SCHEDULE = schedules.Schedule("by hand", 1.0 / (1.0 + np.exp(-LOGSNRS)))


def discrete_eps(params, x, t):
  del params
  a, s = REFERENCE_SCHEDULE.alpha_sigma(t)
  return posterior(x, a, s)[1]


def discrete_x0(params, x, t):
  del params
  a, s = REFERENCE_SCHEDULE.alpha_sigma(t)
  return posterior(x, a, s)[0]


def discrete_v(params, x, t):
  del params
  a, s = REFERENCE_SCHEDULE.alpha_sigma(t)
  x0, eps = posterior(x, a, s)
  return a[:, None] * eps - s[:, None] * x0


def vdm_logsnr(u):  # VDM's linear schedule, gamma = -logsnr linear in u
  return LOGSNR_MAX + (LOGSNR_MIN - LOGSNR_MAX) * u


def vdm_eps(params, x_u, u):
  del params
  return posterior(x_u, *vp(vdm_logsnr(u)))[1]


def score_sde_vp_score(params, x_u, u):  # score_sde: a VP model predicting the score
  del params
  alpha, sigma = vp(vdm_logsnr(u))
  x0, eps = posterior(x_u, alpha, sigma)
  return -eps / sigma[:, None]


def ve_sigma(u):  # a VE path: x_u = x0 + sigma(u) eps
  return jnp.exp(-0.5 * vdm_logsnr(u))


def ve_velocity(params, x_u, u):  # d x_u / du = sigma'(u) eps
  del params
  sigma = ve_sigma(u)
  d_sigma = -0.5 * (LOGSNR_MIN - LOGSNR_MAX) * sigma
  return d_sigma[:, None] * posterior(x_u, jnp.ones_like(u), sigma)[1]


def edm_denoiser(params, x_sigma, sigma):  # D(x0 + sigma eps, sigma) -> x0
  del params
  sigma = sigma[:, None]
  return MEAN + STD**2 / (STD**2 + sigma**2) * (x_sigma - MEAN)


def flow_velocity(params, x_fm, timestep):  # diffusers' convention: timestep = 1000 u
  del params
  u = timestep / 1000.0
  x0, eps = posterior(x_fm, 1.0 - u, u)
  return eps - x0


def all_forms():
  """{name: VPModel} of the one Gaussian model in every form."""
  return {
      "discrete eps": model_forms.discrete(discrete_eps, schedule=REFERENCE_SCHEDULE),
      "discrete x0": model_forms.discrete(discrete_x0, schedule=REFERENCE_SCHEDULE,
                                          prediction="x0"),
      "discrete v": model_forms.discrete(discrete_v, schedule=REFERENCE_SCHEDULE,
                                         prediction="v"),
      "VDM eps": model_forms.continuous(vdm_eps, logsnr_fn=vdm_logsnr, num_timesteps=T),
      "score_sde VP score": model_forms.continuous(
          score_sde_vp_score, alpha_fn=lambda u: vp(vdm_logsnr(u))[0],
          sigma_fn=lambda u: vp(vdm_logsnr(u))[1], prediction="score", num_timesteps=T),
      "VE velocity": model_forms.continuous(ve_velocity, alpha_fn=jnp.ones_like,
                                            sigma_fn=ve_sigma, prediction="velocity"),
      "EDM denoiser": model_forms.sigma_denoiser(edm_denoiser, grid=np.exp(-0.5 * LOGSNRS)),
      "flow matching": model_forms.flow_matching(flow_velocity, time_scale=1000.0,
                                                 grid=1.0 / (1.0 + np.exp(0.5 * LOGSNRS))),
  }


FORMS = all_forms()


def test_every_form_has_the_same_schedule():
  for name, model in FORMS.items():
    np.testing.assert_allclose(model.schedule.logsnrs, LOGSNRS, rtol=0, atol=2e-5, err_msg=name)


def numpy_ddim(x_T, times):
  """DDIM (eta = 0) of the closed-form posterior in float64."""
  logsnr = lambda t: np.interp(t, np.arange(T), LOGSNRS)
  x = np.asarray(x_T, np.float64)
  for k, t in enumerate(times):
    a, s = np.sqrt(1 / (1 + np.exp(-logsnr(t)))), np.sqrt(1 / (1 + np.exp(logsnr(t))))
    x0, eps = posterior(x, np.full(len(x), a), np.full(len(x), s), xp=np)
    a_next = np.sqrt(1 / (1 + np.exp(-logsnr(times[k + 1])))) if k + 1 < len(times) else 1.0
    x = a_next * x0 + np.sqrt(1 - a_next**2) * eps
  return x


def _sample(model, sampler, params, key, x_T):
  eps_fn = lambda x, t: model.eps_fn({}, x, t)
  return np.asarray(jax.jit(lambda p: sampler.sample(p, eps_fn, key, SHAPE, x_T=x_T))(params))


@pytest.mark.slow
@pytest.mark.parametrize("stride", ["quadratic", "logsnr"])
def test_ddim_of_every_form_equals_the_numpy_closed_form(stride):
  """DDIM K = 10; the logsnr stride's times are not integers, so the inversion is exercised."""
  x_T = jax.random.normal(jax.random.PRNGKey(1), SHAPE)
  want = numpy_ddim(x_T, samplers.stride_timesteps(stride, REFERENCE_SCHEDULE, 10))
  for name, model in FORMS.items():
    got = _sample(model, samplers.make("ddim", model.schedule, 10, stride=stride), {},
                  jax.random.PRNGKey(0), x_T)
    # float32 end to end; the inverted times move the model's noise level by ~1e-6.
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ggdm+pred+time", "ddpm", "dpm-solver++2m"])
def test_every_form_gives_the_same_samples(family):
  """A GGDM with perturbed (non-integer, learned) times, DDPM's noise, a multistep solver."""
  x_T = jax.random.normal(jax.random.PRNGKey(1), SHAPE)
  key = jax.random.PRNGKey(2)
  stride = "logsnr" if family == "dpm-solver++2m" else "quadratic"
  reference = samplers.make(family, REFERENCE_SCHEDULE, 6, stride=stride)
  params = jax.tree.map(lambda p: p + 0.05 * jnp.cos(jnp.arange(p.size).reshape(p.shape)),
                        reference.init())
  want = _sample(FORMS["discrete eps"], reference, params, key, x_T)
  for name, model in FORMS.items():
    got = _sample(model, samplers.make(family, model.schedule, 6, stride=stride), params, key,
                  x_T)
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-5, err_msg=name)


@pytest.mark.slow
def test_learned_time_gradients_agree_across_forms():
  """The bisection's implicit-function derivative gives the model-time gradient the samplers
  learn times with: the same as the discrete form's, which has no inversion."""
  x_T = jax.random.normal(jax.random.PRNGKey(1), SHAPE)
  grads = {}
  for name in ("discrete eps", "score_sde VP score", "EDM denoiser", "flow matching"):
    model = FORMS[name]
    sampler = samplers.make("ggdm+pred+time", model.schedule, 5)
    eps_fn = lambda x, t, model=model: model.eps_fn({}, x, t)
    loss = lambda p, sampler=sampler, eps_fn=eps_fn: jnp.sum(
        sampler.sample(p, eps_fn, jax.random.PRNGKey(0), SHAPE, x_T=x_T) ** 2)
    grads[name] = jax.grad(loss)(sampler.init())["time_logits"]
  assert np.max(np.abs(grads["discrete eps"])) > 1e-2
  for name, grad in grads.items():
    np.testing.assert_allclose(grad, grads["discrete eps"], rtol=2e-3, atol=2e-3, err_msg=name)


def test_many_step_samples_have_the_data_mean_and_std():
  """DDIM with 200 steps from N(0, I) at logsnr = -10 reaches N(MEAN, STD^2) up to the start's
  bias (a = 0.0067) and the sampling error: checked on 20000 draws of each coordinate."""
  shape = (5000, 4)
  for name in ("flow matching", "EDM denoiser", "VDM eps"):
    model = FORMS[name]
    sampler = samplers.make("ddim", model.schedule, 200, stride="logsnr")
    x0 = sampler.sample({}, lambda x, t, model=model: model.eps_fn({}, x, t),
                        jax.random.PRNGKey(3), shape)
    assert abs(float(jnp.mean(x0)) - MEAN) < 0.01, name  # 4 standard errors: 0.0035 each
    assert abs(float(jnp.std(x0)) - STD) < 0.01, name


def cosine_logsnr(u):  # Nichol & Dhariwal's cosine in continuous time (VDM-style)
  return -2.0 * jnp.log(jnp.tan(0.5 * jnp.pi * u))


def score_sde_vp_alpha(u, beta_min=0.1, beta_max=20.0):
  return jnp.exp(-0.25 * u**2 * (beta_max - beta_min) - 0.5 * u * beta_min)


@pytest.mark.parametrize("name,logsnr_of,kwargs", [
    ("cosine", cosine_logsnr, dict(logsnr_fn=cosine_logsnr, t_min=0.01, t_max=0.99)),
    ("score_sde VP", lambda u: 2 * jnp.log(score_sde_vp_alpha(u))
     - jnp.log1p(-score_sde_vp_alpha(u) ** 2),
     dict(alpha_fn=score_sde_vp_alpha,
          sigma_fn=lambda u: jnp.sqrt(1 - score_sde_vp_alpha(u) ** 2), t_min=1e-3)),
])
def test_the_model_sees_the_noise_level_the_sampler_assumes(name, logsnr_of, kwargs):
  """At random non-integer t, the model time's log-SNR equals the schedule's to float32 (the
  bisection); the grid's linear interpolation in u instead would be off by much more."""
  model = model_forms.continuous(lambda p, x, u: x, **kwargs)
  t = jax.random.uniform(jax.random.PRNGKey(0), (4096,), maxval=T - 1)
  u = model.model_time(t)
  wanted = model.schedule.logsnr(t)
  error = np.max(np.abs(np.asarray(logsnr_of(u) - wanted)) / np.maximum(1, np.abs(wanted)))
  assert error < 5e-5, name  # float32: the user's sigma = sqrt(1 - alpha^2) near t_min
  naive_u = kwargs["t_min"] + (kwargs.get("t_max", 1.0) - kwargs["t_min"]) * t / (T - 1)
  naive = np.max(np.abs(np.asarray(logsnr_of(naive_u) - wanted)))
  assert naive > 10 * error, name


def test_the_readme_numbers_of_the_grids():
  """The default grids: EDM's sigmas from sigma_min to sigma_max with rho = 7, flow matching's
  u from 1e-3 to 0.999 (where t = 0 and t = T - 1 land)."""
  edm = model_forms.sigma_denoiser(edm_denoiser)
  sigmas = np.asarray(edm.model_time(jnp.asarray([0.0, 999.0])))
  np.testing.assert_allclose(sigmas, [0.002, 80.0], rtol=1e-4)
  flow = model_forms.flow_matching(flow_velocity, time_scale=1000.0)
  np.testing.assert_allclose(np.asarray(flow.model_time(jnp.asarray([0.0, 999.0]))), [1.0, 999.0],
                             rtol=1e-4)


@pytest.mark.parametrize("make,match", [
    (lambda: model_forms.discrete(discrete_eps, schedule=REFERENCE_SCHEDULE,
                                  prediction="velocity"),
     r"unknown prediction 'velocity'; valid choices here: \['eps', 'x0', 'v', 'score'\]"),
    (lambda: model_forms.discrete(discrete_eps, schedule="linear"), "must be a ddss_jax"),
    (lambda: model_forms.continuous(vdm_eps), "pass logsnr_fn, or alpha_fn and sigma_fn"),
    (lambda: model_forms.continuous(vdm_eps, logsnr_fn=vdm_logsnr, alpha_fn=jnp.ones_like),
     "not both"),
    (lambda: model_forms.continuous(vdm_eps, logsnr_fn=vdm_logsnr, prediction="velocity"),
     "needs the path"),
    (lambda: model_forms.continuous(vdm_eps, alpha_fn=score_sde_vp_alpha,
                                    sigma_fn=lambda u: jnp.sqrt(1 - score_sde_vp_alpha(u)**2)),
     r"the log-SNR at grid\[0\] = u = 0.0 is inf; choose a grid"),
    (lambda: model_forms.continuous(vdm_eps, logsnr_fn=lambda u: u),
     r"schedule 'continuous': alpha_bar\[1\] = .* is not below alpha_bar\[0\]"),
    (lambda: model_forms.flow_matching(flow_velocity, t_max=1.0),
     r"0 < t_min < t_max < 1 .* t_max=1.0"),
    (lambda: model_forms.sigma_denoiser(edm_denoiser, sigma_min=0.0), "0 < sigma_min"),
    (lambda: model_forms.sigma_denoiser(edm_denoiser, grid=[1.0, 0.5]),
     r"grid must increase .* grid\[1\] = 0.5 <= grid\[0\] = 1.0"),
    (lambda: model_forms.continuous(vdm_eps, logsnr_fn=vdm_logsnr, num_timesteps=1),
     "num_timesteps must be an integer >= 2"),
])
def test_bad_arguments_say_what_is_valid(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_make_problem_takes_a_wrapped_model():
  model = FORMS["EDM denoiser"]
  data = np.zeros((8, 4), np.float32)
  problem = ddss_jax.make_problem(model=model, model_params={}, data=data,
                                  features=lambda p, x: x)
  assert problem.schedule is model.schedule and problem.eps_apply is model.eps_fn
  with pytest.raises(ValueError, match="carries its schedule; drop schedule='linear'"):
    ddss_jax.make_problem(model=model, model_params={}, data=data, features=lambda p, x: x,
                          schedule="linear")
  with pytest.raises(ValueError,
                     match="neither a flax.linen.Module nor a ddss_jax.samplers.model_forms"):
    ddss_jax.make_problem(model=functools.partial(edm_denoiser, {}), model_params={}, data=data,
                          features=lambda p, x: x)
