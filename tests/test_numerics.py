"""Float32 accuracy at the ends of the noise range: on the published grid of every model form, every
family and stride at K from 4 to 50 gives the coefficients (ancestral noise scale included) that a
NumPy float64 evaluation of the textbook formulas gives, to 1e-4 relative (nu: of its step's
largest weight, `step_scale`), and finite samples. The fast tier checks K = 4 and 50, the slow
tier six more; `check_every_k` all of them.

The float64 side is written here from the papers (DDIM's eq. 16 in alpha_bar; DPM-Solver++(2M)
and UniPC-bh2 as updates in the x0 predictions, iPNDM in sigma = s / a with eps, turned into the
recurrence's coefficients by a triangular solve), not the library's code run in x64."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddss_jax import samplers
from ddss_jax.samplers import model_forms, recurrence, schedules

DATA_STD = 0.5
RTOL = 1e-4
FAST_KS = (4, 50)   # the two ends of the range: the largest steps and the smallest
# The slow tier: small and middle K, where the quadratic stride starts repeating t = 0 (29, 30),
# and large K. `check_every_k` runs every K from 4 to 50 (24 minutes here, beside other work).
SLOW_KS = (6, 12, 25, 29, 30, 40)
VARIANTS = (  # (family, eta, start_solver)
    ("ddpm", None, None), ("ddim", 0.0, None), ("ddim", 0.5, None),
    ("dpm-solver++2m", None, None), ("unipc", None, None),
    ("dpm-solver++2m+time", None, None), ("unipc+time", None, None),
    ("ipndm", None, None),
    ("vars", 0.0, None), ("vars", 1.0, None),
    ("ggdm", 0.0, None), ("ggdm", 1.0, None), ("ggdm+pred", 1.0, None),
    ("ggdm+time", 1.0, None), ("ggdm+pred+time", 0.0, None), ("ggdm+pred+time", 1.0, None),
    ("ggdm+pred+time", 0.0, "dpm-solver++2m"), ("ggdm+pred", 0.0, "unipc"))


# -- the model forms on their published grids, each with its exact Gaussian-data model ----------

def _posterior(x_u, alpha, sigma):
  """(E[x0 | x_u], E[eps | x_u]) for x0 ~ N(0, DATA_STD^2 I), x_u = alpha x0 + sigma eps."""
  alpha, sigma = (v.reshape(-1, *(1,) * (x_u.ndim - 1)) for v in (alpha, sigma))
  total = alpha**2 * DATA_STD**2 + sigma**2
  return alpha * DATA_STD**2 * x_u / total, sigma * x_u / total


def _vp_integral(u):  # score_sde's VP: beta from 0.1 to 20, int_0^u beta
  return 0.1 * u + 0.5 * (20.0 - 0.1) * u**2


def _vp_alpha(u):
  return jnp.exp(-0.5 * _vp_integral(u))


def _vp_sigma(u):
  return jnp.sqrt(-jnp.expm1(-_vp_integral(u)))


def _vdm_logsnr(u):  # VDM's linear gamma, gamma_min = -13.3, gamma_max = 5
  return 13.3 - 18.3 * u


def _discrete(schedule):
  def eps(params, x, t):
    del params
    return _posterior(x, *schedule.alpha_sigma(t))[1]
  return model_forms.discrete(eps, schedule=schedule)


def _edm(sigma_min):
  def denoiser(params, x, sigma):
    del params
    return _posterior(x, jnp.ones_like(sigma), sigma)[0]
  return model_forms.sigma_denoiser(denoiser, sigma_min=sigma_min, sigma_max=80.0)


def _score_sde_vp():
  def score(params, x, u):
    del params
    return -_posterior(x, _vp_alpha(u), _vp_sigma(u))[1] / _vp_sigma(u).reshape(-1, 1, 1, 1)
  return model_forms.continuous(score, alpha_fn=_vp_alpha, sigma_fn=_vp_sigma,
                                prediction="score", t_min=1e-5)


def _vdm():
  def eps(params, x, u):
    del params
    l = _vdm_logsnr(u)
    return _posterior(x, jnp.sqrt(jax.nn.sigmoid(l)), jnp.sqrt(jax.nn.sigmoid(-l)))[1]
  return model_forms.continuous(eps, logsnr_fn=_vdm_logsnr)


def _flow():
  def velocity(params, x, time):
    del params
    u = time / 1000.0
    x0, eps = _posterior(x, 1.0 - u, u)
    return eps - x0
  return model_forms.flow_matching(velocity, time_scale=1000.0)


FORMS = {"ddpm linear": lambda: _discrete(schedules.linear_beta()),
         "ddpm cosine": lambda: _discrete(schedules.cosine()),
         "edm 0.002-80": lambda: _edm(0.002), "edm 1e-4-80": lambda: _edm(1e-4),
         "vp continuous t_min 1e-5": _score_sde_vp, "vdm log-snr": _vdm,
         "flow matching": _flow}


@functools.lru_cache(maxsize=None)
def form(name):
  return FORMS[name]()


# -- float64 textbook coefficients ----------------------------------------------------------------

def _logsnr64(schedule, t):
  return np.interp(np.asarray(t, np.float64), np.arange(schedule.num_timesteps), schedule.logsnrs)


def _decode64(time_logits, num_timesteps):
  """The +TIME families' times from their logits: softmax gaps, cumulated, in float64."""
  logits = np.asarray(time_logits, np.float64)
  gaps = np.exp(logits - logits.max())
  gaps /= gaps.sum()
  return (num_timesteps - 1) * np.cumsum(gaps)[:-1][::-1]


def _ddim64(alpha_bar, eta):
  """DDIM(eta) (Song et al. 2021, eq. 12 and 16) in alpha_bar: (mu, nu diagonal, sigma)."""
  ab, ab_next = alpha_bar, np.append(alpha_bar[1:], 1.0)
  sigma = eta * np.sqrt((1 - ab_next) / (1 - ab) * (1 - ab / ab_next))
  nu = np.sqrt(np.maximum(1 - ab_next - sigma**2, 0.0)) / np.sqrt(1 - ab)
  mu = np.sqrt(ab_next) - nu * np.sqrt(ab)
  return mu, np.diag(nu), sigma


def _solver64(name, l):
  """(mu, nu, sigma) of DPM-Solver++(2M) or UniPC-bh2 (data prediction; order 2; first order at
  the first step and at the last, to sigma = 0; UniC after every model call but the last).

  Each state is a vector over the basis (x_T, x0_0, ..., x0_{K-1}), x0_i the model's prediction
  at state x_i; the update is written as in the papers, then expressed in the states."""
  num_steps = len(l)
  a, s, lam = np.sqrt(1 / (1 + np.exp(-l))), np.sqrt(1 / (1 + np.exp(l))), l / 2
  basis = np.eye(num_steps + 1)
  x0 = lambda i: basis[1 + i]
  states = [basis[0]]   # x_0 = x_T, ..., the model inputs
  corrected = basis[0]
  for i in range(num_steps):
    if name == "unipc" and 1 <= i <= num_steps - 2:   # UniC: correct x_i with x0_i
      h = lam[i] - lam[i - 1]
      hh, b_h = -h, np.expm1(-h)
      start = s[i] / s[i - 1] * corrected - a[i] * b_h * x0(i - 1)
      d1_t = x0(i) - x0(i - 1)
      if i == 1:
        corrected = start - a[i] * b_h * 0.5 * d1_t
      else:
        r_1 = (lam[i - 2] - lam[i - 1]) / h
        d1 = (x0(i - 2) - x0(i - 1)) / r_1
        h_phi, factorial, rhs = b_h / hh - 1, 1, []
        for order in (1, 2):
          rhs.append(h_phi * factorial / b_h)
          factorial *= order + 1
          h_phi = h_phi / hh - 1 / factorial
        rho = np.linalg.solve(np.array([[1.0, 1.0], [r_1, 1.0]]), rhs)
        corrected = start - a[i] * b_h * (rho[0] * d1 + rho[1] * d1_t)
    else:
      corrected = states[i]
    if i == num_steps - 1:
      states.append(x0(i))
      break
    h = lam[i + 1] - lam[i]
    d = x0(i)
    if i > 0:
      r = (lam[i] - lam[i - 1]) / h
      d = (1 + 1 / (2 * r)) * x0(i) - x0(i - 1) / (2 * r)
    states.append(s[i + 1] / s[i] * corrected - a[i + 1] * np.expm1(-h) * d)
  return _in_states(states)


def _ipndm64(l):
  """(mu, nu, sigma) of iPNDM: x / a stepped in sigma = s / a by Adams-Bashforth of the eps
  predictions eps_i = (x_i - a_i x0_i) / s_i, order min(i + 1, 4), to sigma = 0 at full order."""
  num_steps = len(l)
  a, s = np.sqrt(1 / (1 + np.exp(-l))), np.sqrt(1 / (1 + np.exp(l)))
  weights = [[1], [3 / 2, -1 / 2], [23 / 12, -16 / 12, 5 / 12],
             [55 / 24, -59 / 24, 37 / 24, -9 / 24]]
  basis = np.eye(num_steps + 1)
  states, epss = [basis[0]], []
  a_next, sigma_next = np.append(a[1:], 1.0), np.append(s[1:] / a[1:], 0.0)
  for i in range(num_steps):
    epss.append((states[i] - a[i] * basis[1 + i]) / s[i])
    slope = sum(w * e for w, e in zip(weights[min(i, 3)], epss[::-1]))
    states.append(a_next[i] * (states[i] / a[i] + (sigma_next[i] - s[i] / a[i]) * slope))
  return _in_states(states)


def _in_states(states):
  """(mu, nu, sigma) from the states x_0 = x_T, ..., x_K over the basis (x_T, x0_0, ...): step i
  is x_{i+1} = mu_i x0_i + sum_{j <= i} nu_{i,j} x_j."""
  num_steps = len(states) - 1
  x0 = lambda i: np.eye(num_steps + 1)[1 + i]
  mu, nu = np.zeros(num_steps), np.zeros((num_steps, num_steps))
  for i in range(num_steps):
    row = states[i + 1]
    mu[i] = row[1 + i]
    rest = row - mu[i] * x0(i)
    assert np.all(rest[i + 1:] == 0)
    in_states = np.array([states[j][:i + 1] for j in range(i + 1)])  # lower triangular
    nu[i, :i + 1] = np.linalg.solve(in_states.T, rest[:i + 1])
  return mu, nu, np.zeros(num_steps)


def reference(sampler, params, model_times):
  """Coefficients (t, b, c, mu, nu, sigma) of `sampler` at `params` (its init) in float64: the
  times from the stride or the +TIME logits, the formulas at `model_times` [K], the float32
  times the model is called at (near T - 1 one float32 ulp of t, 6e-5, is 3e-4 of log-SNR on
  the cosine schedule's steep end: a time no float32 sampler can give the model)."""
  schedule = sampler.schedule
  if sampler.learns_time:
    t = _decode64(params["time_logits"], schedule.num_timesteps)
  else:
    t = samplers.stride_timesteps(sampler.stride, schedule, sampler.num_steps)
  l = _logsnr64(schedule, model_times)
  alpha_bar = 1 / (1 + np.exp(-l))
  b, c = np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar)
  if sampler.is_ggdm:  # mu, nu, sigma (and +PRED's b, c) are parameters set at the stride's times
    l = _logsnr64(schedule, np.float32(samplers.stride_timesteps(sampler.stride, schedule,
                                                                 sampler.num_steps)))
    if sampler.learns_pred:
      b, c = np.sqrt(1 / (1 + np.exp(-l))), np.sqrt(1 / (1 + np.exp(l)))
  solver = sampler.solver or sampler.start_solver
  if solver == "ipndm":
    mu, nu, sigma = _ipndm64(l)
  elif solver is not None:
    mu, nu, sigma = _solver64(solver, l)
  else:
    mu, nu, sigma = _ddim64(1 / (1 + np.exp(-l)), sampler.eta)
  return dict(t=t, b=b, c=c, mu=mu, nu=nu, sigma=sigma)


def assert_close(got, want, what, *, scale=None):
  """|got - want| <= RTOL |scale|, scale = want by default; where scale is 0 (the last step's
  noise, nu's upper triangle), |got| <= 1e-6."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  scale = np.abs(want if scale is None else np.broadcast_to(scale, want.shape))
  assert np.all(np.isfinite(got)), f"{what}: non-finite {got}"
  error = np.abs(got - want)
  bound = np.where(scale == 0, 1e-6, RTOL * scale)
  worst = np.unravel_index(np.argmax(error / bound), error.shape)
  assert np.all(error <= bound), (f"{what}[{', '.join(map(str, worst))}]: {got[worst]!r}, "
                                  f"float64 {want[worst]!r}, error {error[worst]:.3g} > "
                                  f"{bound[worst]:.3g}")


def step_scale(mu, nu):
  """[K, 1] each step's largest weight, max(|mu_i|, |nu[i, j]|): x_{i+1} = mu_i x0_i + sum_j
  nu[i, j] x_j mixes states and predictions of one scale, so an error in nu[i, j] counts against
  the step's largest weight. In the solvers' state form a weight can be a difference of terms 60
  times larger (DPM-Solver++'s x0_{i-1} term against s_{i+1} / s_i x_i at the clean end; the
  papers' updates have it too), and their weights on states far back are 1e-21 beside 0.5:
  neither float32 nor float64 gives those to a relative precision."""
  return np.maximum(np.abs(mu), np.max(np.abs(nu), axis=1))[:, None]


def _samplers_at(name, stride, num_steps):
  schedule = form(name).schedule
  for family, eta, start in VARIANTS:
    try:
      yield samplers.make(family, schedule, num_steps, stride=stride, eta=eta, start_solver=start)
    except ValueError as e:  # the solvers need distinct times: quadratic repeats t = 0 at K >= 30
      assert "distinct times" in str(e)


@functools.lru_cache(maxsize=None)
def _sample_fn(name, num_steps):
  eps_fn = functools.partial(form(name).eps_fn, None)
  x_T = jax.random.normal(jax.random.PRNGKey(0), (16, 4, 4, 1))
  return jax.jit(lambda coeffs, key: recurrence.run(coeffs, eps_fn, x_T, key, stochastic=True))


def check_grid(name, stride, ks, *, sample=True):
  """Every variant's coefficients against float64 at each K of `ks` on one grid and stride, and
  (with `sample`) finite samples from each."""
  for num_steps in ks:
    for sampler in _samplers_at(name, stride, num_steps):
      params = sampler.init()
      coeffs = sampler.coefficients(params)._asdict()
      coeffs["nu"] = np.tril(coeffs["nu"])
      want = reference(sampler, params, coeffs["t"])
      what = f"{name} {sampler.family} eta={sampler.eta} {stride} K={num_steps}"
      for field in ("t", "b", "c", "mu", "sigma"):
        assert_close(coeffs[field], want[field], f"{what} {field}")
      assert_close(coeffs["nu"], want["nu"], f"{what} nu",
                   scale=step_scale(want["mu"], want["nu"]))
      if sampler.family == "vars":  # the angle whose noise is DDIM(eta)'s: sigma = r sin(angle)
        radius = np.append(want["c"][1:], 0.0)   # r = sqrt(1 - alpha_bar_next)
        angle = np.arcsin(want["sigma"] / np.where(radius > 0, radius, 1.0))
        assert_close(params["noise_angle"], angle, f"{what} noise_angle")
      if sample:
        x_0 = _sample_fn(name, num_steps)(sampler.coefficients(params), jax.random.PRNGKey(1))
        assert np.all(np.isfinite(np.asarray(x_0))), f"{what}: non-finite samples"


def check_every_k():
  """The whole sweep, K = 4 to 50 on every grid and stride: `python -c "import sys;
  sys.path.insert(0, 'tests'); import test_numerics; test_numerics.check_every_k()"`."""
  for num_steps in range(4, 51):
    for name in sorted(FORMS):
      for stride in samplers.STRIDES:
        check_grid(name, stride, [num_steps])


@pytest.mark.parametrize("stride", samplers.STRIDES)
@pytest.mark.parametrize("name", sorted(FORMS))
def test_every_family_keeps_its_digits_in_float32(name, stride):
  check_grid(name, stride, FAST_KS)


@pytest.mark.slow
@pytest.mark.parametrize("num_steps", SLOW_KS)
def test_every_family_keeps_its_digits_in_float32_at_more_k(num_steps):
  """Every grid and stride at this K; samples drawn on one grid, a different one each K."""
  names = sorted(FORMS)
  for name in names:
    for stride in samplers.STRIDES:
      check_grid(name, stride, [num_steps],
                 sample=name == names[SLOW_KS.index(num_steps) % len(names)])


def test_the_edm_reproduction_gives_the_float64_noise_scale():
  model = model_forms.sigma_denoiser(lambda p, x, s: 0.5 * x, sigma_min=1e-4, sigma_max=80.0)
  sampler = samplers.make("ddpm", model.schedule, 25, stride="quadratic")
  sigma = np.asarray(sampler.coefficients({}).sigma)
  want = reference(sampler, {}, sampler.timesteps({}))["sigma"]
  assert_close(sigma, want, "sigma")
  np.testing.assert_allclose(sigma[-3:], [5.5e-05, 2.8e-05, 0.0], rtol=0.02)


def _euler_ancestral64(x, sigmas, noises, eta):
  """k-diffusion's sample_euler_ancestral (eta = 1) and sample_euler (eta = 0) in sigma space,
  NumPy float64, with the exact denoiser of N(0, DATA_STD^2) data; the last step goes to 0."""
  for i, sigma in enumerate(sigmas):
    denoised = DATA_STD**2 * x / (DATA_STD**2 + sigma**2)
    following = sigmas[i + 1] if i + 1 < len(sigmas) else 0.0
    up = min(following, eta * np.sqrt(following**2 * (sigma**2 - following**2) / sigma**2))
    down = np.sqrt(following**2 - up**2)
    x = x + (x - denoised) / sigma * (down - sigma) + up * noises[i]
  return x


@pytest.mark.parametrize("sigma_min", [0.002, 1e-4])
def test_ancestral_sampling_on_an_edm_model_matches_sigma_space(sigma_min):
  """DDPM on EDM's grid equals Euler-ancestral in sigma space from the same noises, as closely as
  DDIM equals Euler: the noise scale keeps its digits where 1 - alpha_bar is 1e-8."""
  model = form("edm 0.002-80" if sigma_min == 0.002 else "edm 1e-4-80")
  x_T = jax.random.normal(jax.random.PRNGKey(3), (256, 8))
  noise_key = jax.random.PRNGKey(4)
  errors = {}
  for family, eta in (("ddim", 0.0), ("ddpm", 1.0)):
    sampler = samplers.make(family, model.schedule, 25, stride="quadratic")
    x_0 = recurrence.run(sampler.coefficients({}), functools.partial(model.eps_fn, None), x_T,
                         noise_key, stochastic=True)
    sigmas = np.asarray(model.model_time(sampler.timesteps({})), np.float64)
    noises = [np.asarray(jax.random.normal(jax.random.fold_in(noise_key, i), x_T.shape),
                         np.float64) for i in range(25)]
    want = _euler_ancestral64(np.asarray(x_T, np.float64) * np.sqrt(1 + sigmas[0]**2), sigmas,
                              noises, eta)
    errors[family] = np.max(np.abs(np.asarray(x_0) - want)) / np.std(want)
  assert errors["ddim"] < 1e-5 and errors["ddpm"] < 1e-5, errors


def test_the_grid_log_snr_is_exact_and_a_float32_cancellation_is_reported(caplog):
  integral = _vp_integral(np.array([1e-5, 1.0]))
  want = -integral - np.log(-np.expm1(-integral))   # 2 log(alpha / sigma) in closed form
  logsnrs = form("vp continuous t_min 1e-5").schedule.logsnrs
  np.testing.assert_allclose(logsnrs[[0, -1]], want, rtol=1e-9)
  caplog.clear()
  model_forms.continuous(lambda p, x, u: x, alpha_fn=_vp_alpha,
                         sigma_fn=lambda u: jnp.sqrt(1 - _vp_alpha(u)**2), t_min=1e-5)
  assert "in float32 the path's log-SNR at u = 1e-05" in caplog.text, caplog.text
  assert "sqrt(-expm1(" in caplog.text
  caplog.clear()
  _score_sde_vp()
  assert "float32" not in caplog.text
