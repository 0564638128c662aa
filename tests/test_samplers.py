"""Samplers against independent references: a float64 NumPy DDIM/DDPM, and unrolled autodiff."""

import functools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddss_jax import samplers
from ddss_jax.samplers import recurrence, schedules, solvers

SCHED = schedules.linear_beta(1000)
LEARNABLE = ("vars", "ggdm", "ggdm+pred", "ggdm+time", "ggdm+pred+time", "dpm-solver++2m+time",
             "unipc+time", "ipndm+time")


def np_abar(t):
  """alpha_bar at a float time in float64: linear interpolation of the log-SNR table, as the
  Schedule does; t < 0 is the end of sampling (alpha_bar = 1)."""
  if t < 0:
    return 1.0
  logsnr = np.interp(t, np.arange(1000), SCHED.logsnrs)
  return 1.0 / (1.0 + np.exp(-logsnr))


def analytic_eps(x, t, xp=jnp):
  """A smooth eps-function of (x, t) that NumPy and JAX evaluate alike."""
  t = t.reshape((-1,) + (1,) * (x.ndim - 1)) / 1000.0
  return xp.tanh(0.7 * x + 0.3 * xp.sin(3.0 * x) * t) + 0.2 * t


def numpy_ddim(x_T, times, eta, noises):
  """Song et al. (2021) eq. 12 in float64, with alpha_bar from the integer-time table."""
  abar = np_abar
  x = np.asarray(x_T, np.float64)
  nexts = list(times[1:]) + [-1]
  for k, (t, t_next) in enumerate(zip(times, nexts)):
    eps = analytic_eps(x, np.full(x.shape[0], float(t)), xp=np)
    x0 = (x - np.sqrt(1 - abar(t)) * eps) / np.sqrt(abar(t))
    sigma = eta * np.sqrt((1 - abar(t_next)) / (1 - abar(t)) * (1 - abar(t) / abar(t_next)))
    x = (np.sqrt(abar(t_next)) * x0 + np.sqrt(1 - abar(t_next) - sigma**2) * eps
         + sigma * noises[k])
  return x


def step_noises(key, num_steps, shape):
  """The documented noise: (key_T, noise_key) = split(key); z_i from fold_in(noise_key, i)."""
  noise_key = jax.random.split(key)[1]
  return [np.asarray(jax.random.normal(jax.random.fold_in(noise_key, i), shape), np.float64)
          for i in range(num_steps)]


@pytest.mark.parametrize("stride,num_steps", [("linear", 10), ("quadratic", 10),
                                              ("quadratic", 4), ("linear", 1)])
def test_stride_timesteps_follow_the_public_ddim_code(stride, num_steps):
  if stride == "linear":
    expected = list(range(0, 1000, 1000 // num_steps))[:num_steps]
  else:
    expected = [int(s) for s in np.linspace(0, np.sqrt(800), num_steps) ** 2]
  got = samplers.stride_timesteps(stride, SCHED, num_steps)
  np.testing.assert_array_equal(got, expected[::-1])
  if (stride, num_steps) == ("linear", 10):
    np.testing.assert_array_equal(got, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0])


@pytest.mark.parametrize("num_steps", [1, 2, 7, 25])
def test_logsnr_stride_is_uniform_in_logsnr_from_the_last_time_to_zero(num_steps):
  times = samplers.stride_timesteps("logsnr", SCHED, num_steps)
  assert times[0] == 999 and (num_steps == 1 or times[-1] == 0)
  assert np.all(np.diff(times) < 0)
  lam = [np.log(np_abar(t)) - np.log1p(-np_abar(t)) for t in times]
  np.testing.assert_allclose(np.diff(lam), (lam[-1] - lam[0]) / max(num_steps - 1, 1), rtol=1e-6)


def numpy_dpm_solver_pp_2m(x_T, times):
  """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) in float64, keeping the previous x0 prediction;
  first order at the first step and at the final step to alpha_bar = 1 (sigma = 0)."""
  abar = np_abar
  lam = lambda t: 0.5 * (np.log(abar(t)) - np.log1p(-abar(t)))
  x = np.asarray(x_T, np.float64)
  x0_prev = h_prev = None
  nexts = list(times[1:]) + [-1]
  for t, t_next in zip(times, nexts):
    eps = analytic_eps(x, np.full(x.shape[0], float(t)), xp=np)
    x0 = (x - np.sqrt(1 - abar(t)) * eps) / np.sqrt(abar(t))
    if t_next < 0:
      return x0
    h = lam(t_next) - lam(t)
    if x0_prev is None:
      d = x0
    else:
      r = h_prev / h
      d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
    x = (np.sqrt(1 - abar(t_next)) / np.sqrt(1 - abar(t))) * x + np.sqrt(abar(t_next)) * (
        1 - np.exp(-h)) * d
    x0_prev, h_prev = x0, h
  raise AssertionError("unreachable")


def numpy_unipc(x_T, times):
  """UniPC (Zhao et al. 2023, Algorithms 2 and 3 with B(h) = e^h - 1) in float64, data
  prediction, order 2 (1 at the first step, and at the final step to sigma = 0); the UniC
  corrector after each model call corrects the state, the model is not called again on it."""
  abar = np_abar
  lam = lambda t: 0.5 * (np.log(abar(t)) - np.log1p(-abar(t)))
  alpha, sigma = lambda t: np.sqrt(abar(t)), lambda t: np.sqrt(1 - abar(t))
  x = np.asarray(x_T, np.float64)
  hist = []  # (time, x0 prediction), newest last
  prev_x, prev_order = None, 0
  nexts = list(times[1:]) + [-1]
  for i, (t, t_next) in enumerate(zip(times, nexts)):
    eps = analytic_eps(x, np.full(x.shape[0], float(t)), xp=np)
    x0 = (x - sigma(t) * eps) / alpha(t)
    if prev_x is not None:  # UniC: correct x with x0 at x, order of the previous predictor
      s0, m0 = hist[-1]
      h = lam(t) - lam(s0)
      b_h = np.expm1(-h)
      if prev_order == 1:
        rhos = [0.5]
        diffs = [x0 - m0]
      else:
        s1, m1 = hist[-2]
        rk = (lam(s1) - lam(s0)) / h
        phi = b_h / -h - 1
        b = [phi / b_h, 2 * (phi / -h - 0.5) / b_h]
        rhos = np.linalg.solve([[1.0, 1.0], [rk, 1.0]], b)
        diffs = [(m1 - m0) / rk, x0 - m0]
      x = sigma(t) / sigma(s0) * prev_x - alpha(t) * b_h * (m0 + sum(
          r * d for r, d in zip(rhos, diffs)))
    hist.append((t, x0))
    if t_next < 0:
      return x0
    order = 1 if i == 0 else 2
    h = lam(t_next) - lam(t)
    b_h = np.expm1(-h)
    x_next = sigma(t_next) / sigma(t) * x - alpha(t_next) * b_h * x0
    if order == 2:
      rk = (lam(hist[-2][0]) - lam(t)) / h
      x_next = x_next - alpha(t_next) * b_h * 0.5 * (hist[-2][1] - x0) / rk
    prev_x, prev_order, x = x, order, x_next
  raise AssertionError("unreachable")


def numpy_ipndm(x_T, times):
  """iPNDM as published (Zhang and Chen 2023; the sampler of EDM-model tables) in float64, on the
  EDM form of the model: x~ = x / sqrt(abar), sigma = sqrt(1 / abar - 1), d = eps;
  x~_next = x~ + (sigma_next - sigma) * (Adams-Bashforth of the last <= 4 d, equal-step weights),
  the last step to sigma = 0 at full order."""
  weights = {1: [1], 2: [3, -1], 3: [23, -16, 5], 4: [55, -59, 37, -9]}
  divisors = {1: 1, 2: 2, 3: 12, 4: 24}
  sigmas = [np.sqrt(1 / np_abar(t) - 1) for t in times] + [0.0]
  x = np.asarray(x_T, np.float64) / np.sqrt(np_abar(times[0]))
  ds = []
  for i, t in enumerate(times):
    ds.append(analytic_eps(x * np.sqrt(np_abar(t)), np.full(x.shape[0], float(t)), xp=np))
    order = min(4, i + 1)
    slope = sum(w * d for w, d in zip(weights[order], ds[::-1])) / divisors[order]
    x = x + (sigmas[i + 1] - sigmas[i]) * slope
  return x


SOLVER_REFERENCES = {"dpm-solver++2m": numpy_dpm_solver_pp_2m, "unipc": numpy_unipc,
                     "ipndm": numpy_ipndm}


def test_the_families_properties():
  made = {f: samplers.make(f, SCHED, 4) for f in samplers.FAMILIES}
  assert [f for f, s in made.items() if s.is_ggdm] == [
      "ggdm", "ggdm+pred", "ggdm+time", "ggdm+pred+time"]
  assert [f for f, s in made.items() if s.markov] == ["ddpm", "ddim", "vars"]
  assert {f: s.solver for f, s in made.items() if s.solver} == {
      "dpm-solver++2m": "dpm-solver++2m", "unipc": "unipc", "ipndm": "ipndm",
      "dpm-solver++2m+time": "dpm-solver++2m", "unipc+time": "unipc", "ipndm+time": "ipndm"}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(SOLVER_REFERENCES))
@pytest.mark.parametrize("stride,num_steps", [("linear", 6), ("quadratic", 6), ("logsnr", 6),
                                              ("linear", 25), ("logsnr", 2)])
def test_solvers_match_numpy_references(family, stride, num_steps):
  shape = (5, 3)
  x_T = jax.random.normal(jax.random.PRNGKey(4), shape)
  sampler = samplers.make(family, SCHED, num_steps, stride=stride)
  assert sampler.init() == {} and not sampler.markov and not sampler.stochastic
  got = jax.jit(lambda k: sampler.sample({}, analytic_eps, k, shape, x_T=x_T))(
      jax.random.PRNGKey(3))
  want = SOLVER_REFERENCES[family](x_T, samplers.stride_timesteps(stride, SCHED, num_steps))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  if num_steps > 2 and family != "dpm-solver++2m":  # other than DPM-Solver++(2M)
    dpm = samplers.make("dpm-solver++2m", SCHED, num_steps, stride=stride)
    assert np.abs(np.asarray(got) - np.asarray(dpm.sample({}, analytic_eps, jax.random.PRNGKey(3),
                                                           shape, x_T=x_T))).max() > 1e-4
  # Second order: with three steps or more it differs from DDIM on the same times (with two,
  # the first step and the last one are both first order, i.e. DDIM).
  ddim = samplers.make("ddim", SCHED, num_steps, stride=stride)
  first_order = ddim.sample({}, analytic_eps, jax.random.PRNGKey(3), shape, x_T=x_T)
  assert num_steps == 2 or np.abs(np.asarray(got) - np.asarray(first_order)).max() > 1e-3


@pytest.mark.parametrize("family", ["dpm-solver++2m", "unipc", "unipc+time"])
def test_solvers_reject_repeated_times_and_noise(family):
  with pytest.raises(ValueError, match="needs distinct times; the 'quadratic' stride repeats"):
    samplers.make(family, SCHED, 40, stride="quadratic")
  with pytest.raises(ValueError, match=f"{re.escape(repr(family))} is deterministic; got eta=0.5"):
    samplers.make(family, SCHED, 5, eta=0.5)

@pytest.mark.parametrize("stride", samplers.STRIDES)
@pytest.mark.parametrize("family,eta", [("ddim", 0.0), ("ddpm", 1.0), ("ddim", 0.5)])
def test_fixed_families_match_numpy_ddim(family, eta, stride):
  shape = (5, 3)
  key = jax.random.PRNGKey(3)
  x_T = jax.random.normal(jax.random.PRNGKey(4), shape)
  sampler = samplers.make(family, SCHED, 6, stride=stride, eta=None if family == "ddpm" else eta)
  got = jax.jit(lambda k: sampler.sample({}, analytic_eps, k, shape, x_T=x_T))(key)
  times = samplers.stride_timesteps(stride, SCHED, 6)
  want = numpy_ddim(x_T, times, eta, step_noises(key, 6, shape))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(sampler.timesteps({}), times.astype(np.float32))


@pytest.mark.parametrize("family,eta", [(f, eta) for f in LEARNABLE for eta in (0.0, 1.0)
                                        if eta == 0.0 or not f.endswith("+time")
                                        or f.startswith("ggdm")])  # the solvers: eta = 0 only
def test_learnable_families_at_init_reproduce_ddim_or_ddpm(family, eta):
  """... or, for the learned-time solvers, the solver on its fixed stride."""
  solver = family.removesuffix("+time") if family.endswith("+time") else None
  shape = (6, 2)
  key = jax.random.PRNGKey(7)
  x_T = jax.random.normal(jax.random.PRNGKey(8), shape)
  sampler = samplers.make(family, SCHED, 5, stride="quadratic", eta=eta)
  got = sampler.sample(sampler.init(), analytic_eps, key, shape, x_T=x_T)
  base = solver if solver in solvers.SOLVERS else "ddim"
  reference = samplers.make(base, SCHED, 5, stride="quadratic", eta=eta)
  want = reference.sample({}, analytic_eps, key, shape, x_T=x_T)
  # Fixed times reproduce exactly up to float32 rounding; learned times move t = 0 by
  # MIN_TIME_GAP * (T - 1) ~ 1e-3 (see ddss_jax/samplers/families.py), which shows at the 1e-5
  # level.
  # The solvers weigh the last gap in log-SNR, which moves most near t = 0: 1e-4 there.
  tol = (1e-4 if base != "ddim" else 3e-5) if "+time" in family else 2e-6
  np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
  np.testing.assert_allclose(sampler.timesteps(sampler.init()), reference.timesteps({}),
                             atol=2e-3)


def test_learned_times_stay_strictly_decreasing_inside_the_range():
  sampler = samplers.make("ggdm+time", SCHED, 12)
  for seed in range(5):
    logits = 4.0 * jax.random.normal(jax.random.PRNGKey(seed), (13,))
    taus = np.asarray(sampler.timesteps({"time_logits": logits}))
    assert np.all(np.diff(taus) < 0) and taus[0] < 999 and taus[-1] > 0


# -- gradients against autodiff of an unrolled Python loop -----------------------------------

def unrolled_reference(sampler, params, eps_fn, key, x_T):
  """The GGDM update of docs/method.md, section 3, written out, k = K..1, as a plain Python loop
  (autodiff applies)."""
  c = sampler.coefficients(params)
  num_steps = sampler.num_steps
  noise_key = jax.random.split(key)[1]
  states = {num_steps: x_T}  # states[k] is x_k
  for k in range(num_steps, 0, -1):
    i = num_steps - k  # row of the coefficient arrays (execution order)
    x_k = states[k]
    eps = eps_fn(x_k, jnp.full(x_k.shape[:1], c.t[i]))
    x0_pred = (x_k - c.c[i] * eps) / c.b[i]
    x_next = c.mu[i] * x0_pred
    for j in range(num_steps, k - 1, -1):  # all previous (noisier) states x_K..x_k
      x_next = x_next + c.nu[i, num_steps - j] * states[j]
    if sampler.stochastic:
      x_next = x_next + c.sigma[i] * jax.random.normal(jax.random.fold_in(noise_key, i),
                                                       x_k.shape)
    states[k - 1] = x_next
  return states[0]


def perturbed(params, key, scale=0.05):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(
      tree, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def conv_eps_model(weights, x, t):
  """A small model whose output depends on t through an embedding (gradient w.r.t. time)."""
  emb = jnp.sin(t[:, None] / 100.0 * weights["freqs"][None, :])  # [B, F]
  h = jnp.tanh(x @ weights["w1"] + emb @ weights["wt"])
  return h @ weights["w2"]


@pytest.mark.slow
@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
@pytest.mark.parametrize("family", LEARNABLE)
def test_gradients_equal_unrolled_autodiff(family, gradient):
  shape = (4, 3)
  keys = jax.random.split(jax.random.PRNGKey(11), 6)
  weights = {"w1": jax.random.normal(keys[0], (3, 8)), "wt": jax.random.normal(keys[1], (4, 8)),
             "w2": 0.3 * jax.random.normal(keys[2], (8, 3)), "freqs": jnp.arange(1.0, 5.0)}
  sampler = samplers.make(family, SCHED, 4, stride="linear", gradient=gradient)
  params = perturbed(sampler.init(), keys[3])
  target = jax.random.normal(keys[4], shape)

  def loss(run, params, x_T, weights):
    x0 = run(params, functools.partial(conv_eps_model, weights), keys[5], x_T)
    return jnp.sum((x0 - target) ** 2) + jnp.sum(jnp.sin(x0))

  ours = lambda p, e, k, x: sampler.sample(p, e, k, shape, x_T=x)
  reference = lambda p, e, k, x: unrolled_reference(sampler, p, e, k, x)
  x_T = jax.random.normal(keys[2], shape)
  # Weights are jit arguments, so eps_fn closes over tracers, as in the train step.
  got = jax.jit(jax.value_and_grad(functools.partial(loss, ours), argnums=(0, 1)))(
      params, x_T, weights)
  want = jax.value_and_grad(functools.partial(loss, reference), argnums=(0, 1))(
      params, x_T, weights)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  # float32 against float32 in another order: an entry far below its array's largest (iPNDM's
  # d loss / d x_T spans -5 to 1800) is known to 1e-5 of that largest, not of itself.
  close = lambda a, b, what: np.testing.assert_allclose(
      a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(np.max(np.abs(b)))), err_msg=what)
  for name in params:
    close(got[1][0][name], want[1][0][name], f"d loss / d {name}")
  close(got[1][1], want[1][1], "d loss / d x_T")
  if "+time" in family:  # the model-time gradient is really exercised
    assert np.max(np.abs(got[1][0]["time_logits"])) > 1e-3


@pytest.mark.slow
def test_adjoint_gradient_memory_grows_by_a_few_batches_per_step():
  """XLA temp memory of the gradient: O(K |x|) with the adjoint, superlinear without it."""
  shape = (8, 16, 16, 1)
  x_bytes = np.prod(shape) * 4
  weights = {"w": jnp.ones((1, 16)) * 0.1, "v": jnp.ones((16, 1)) * 0.1}
  model = lambda w, x, t: jnp.tanh(x @ w["w"] + t[:, None, None, None] / 1000) @ w["v"]

  def temp_bytes(gradient, num_steps):
    sampler = samplers.make("ggdm+pred+time", SCHED, num_steps, stride="linear",
                            gradient=gradient)
    loss = lambda p, w, k: jnp.mean(sampler.sample(p, functools.partial(model, w), k, shape)**2)
    compiled = jax.jit(jax.grad(loss)).lower(sampler.init(), weights,
                                              jax.random.PRNGKey(0)).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  per_step = {g: (temp_bytes(g, 24) - temp_bytes(g, 8)) / 16 / x_bytes
              for g in ("adjoint", "checkpoint")}
  assert per_step["adjoint"] <= 4.0, per_step
  assert per_step["checkpoint"] > 2 * per_step["adjoint"], per_step


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(family="ddim2"), r"unknown sampler family 'ddim2'.*'ggdm\+pred\+time'"),
    (dict(stride="cubic"), r"unknown stride 'cubic'.*\['linear', 'quadratic', 'logsnr'\]"),
    (dict(num_steps=0), r"num_steps must be an integer in \[1, 1000\].*got 0"),
    (dict(num_steps=1001), r"got 1001"),
    (dict(num_steps=2.5), r"got 2.5"),
    (dict(family="ddpm", eta=0.0), r"'ddpm' is DDIM with eta = 1"),
    (dict(eta=1.5), r"eta must be in \[0, 1\], got 1.5"),
    (dict(gradient="unrolled"), r"unknown gradient 'unrolled'.*'adjoint', 'checkpoint'"),
    (dict(clip_x0=-1.0), r"clip_x0 must be None, 0 \(no clipping\) or a finite number r > 0.*"
     r"got -1.0"),
    (dict(clip_x0=float("nan")), r"clip_x0 must be .* got nan"),
    (dict(clip_x0="1"), r"clip_x0 must be .* got '1'"),
])
def test_bad_arguments_raise_value_errors_naming_the_choices(kwargs, match):
  args = dict(family="ggdm", schedule=SCHED, num_steps=4) | kwargs
  with pytest.raises(ValueError, match=match):
    samplers.make(args.pop("family"), args.pop("schedule"), args.pop("num_steps"), **args)


def test_shapes_that_do_not_fit_raise_value_errors():
  sampler = samplers.make("ddim", SCHED, 3)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match=r"x_T has shape \(4, 3\) but shape=\(4, 2\)"):
    sampler.sample({}, analytic_eps, key, (4, 2), x_T=jnp.zeros((4, 3)))
  with pytest.raises(ValueError, match="at least one data axis"):
    sampler.sample({}, analytic_eps, key, (4,))
  with pytest.raises(ValueError, match=r"eps_fn maps x of shape \(4, 2\) to shape \(4, 1\)"):
    sampler.sample({}, lambda x, t: x[:, :1], key, (4, 2))


def test_markov_fast_path_equals_the_general_recurrence():
  """DDIM/DDPM/VARS carry one state; the full-history recurrence must give the same result."""
  shape = (4, 3)
  sampler = samplers.make("vars", SCHED, 5, eta=0.5)
  params = perturbed(sampler.init(), jax.random.PRNGKey(0))
  x_T = jax.random.normal(jax.random.PRNGKey(1), shape)

  def loss(params, markov):
    x0 = recurrence.run(sampler.coefficients(params), analytic_eps, x_T, jax.random.PRNGKey(2),
                        stochastic=True, markov=markov)
    return jnp.sum(x0 ** 2)

  # atol: an angle's gradient is the difference of its mu and nu terms (about 51 and -51 at
  # step 3 here), which float32 resolves to about 1e-5 of their size.
  for fast, general in zip(jax.value_and_grad(loss)(params, True),
                           jax.value_and_grad(loss)(params, False)):
    np.testing.assert_allclose(jax.tree.leaves(fast), jax.tree.leaves(general), rtol=1e-5,
                               atol=5e-4)


def test_markov_sampling_memory_does_not_grow_with_k():
  shape = (8, 16, 16, 1)

  def temp_bytes(num_steps):
    sampler = samplers.make("ddpm", SCHED, num_steps, stride="linear")
    sample = lambda key: sampler.sample({}, analytic_eps, key, shape)
    return jax.jit(sample).lower(jax.random.PRNGKey(0)).compile().memory_analysis(
        ).temp_size_in_bytes

  assert temp_bytes(200) <= temp_bytes(10) + np.prod(shape) * 4


@pytest.mark.parametrize("family,schedule", [
    ("ddim", schedules.cosine(1000)), ("ddpm", schedules.cosine(1000)),
    ("ggdm+pred+time", schedules.cosine(1000)), ("vars", schedules.cosine(1000)),
    ("ggdm+pred+time", schedules.linear_beta(1000, 2e-4, 0.03))])  # non-default betas
def test_saved_sampler_loads_and_samples_the_same(tmp_path, family, schedule):
  sampler = samplers.make(family, schedule, 5)
  params = perturbed(sampler.init(), jax.random.PRNGKey(3)) if sampler.init() else {}
  path = str(tmp_path / "sampler.json")
  samplers.save(path, sampler, params)
  loaded, loaded_params = samplers.load(path)
  key = jax.random.PRNGKey(0)
  np.testing.assert_allclose(loaded.sample(loaded_params, analytic_eps, key, (3, 2)),
                             sampler.sample(params, analytic_eps, key, (3, 2)), rtol=1e-6)
  np.testing.assert_array_equal(loaded.schedule.alpha_bars, schedule.alpha_bars)
  spec = json.load(open(path))
  assert spec["schedule"]["name"] == schedule.name and spec["schedule"]["num_timesteps"] == 1000
  assert len(spec["timesteps"]) == 5 and len(spec["coefficients"]["nu"]) == 5


@pytest.mark.parametrize("family", ["ggdm+pred+time", "ddim"])
def test_unrolled_loops_give_the_same_samples_and_gradients(family):
  shape = (3, 2)
  x_T = jax.random.normal(jax.random.PRNGKey(1), shape)

  def value_and_grad(unroll):
    sampler = samplers.make(family, SCHED, 5, unroll=unroll)
    loss = lambda p, x: jnp.sum(sampler.sample(p, analytic_eps, jax.random.PRNGKey(2), shape,
                                               x_T=x) ** 2)
    return jax.value_and_grad(loss, argnums=(0, 1))(sampler.init(), x_T)

  rolled, unrolled = value_and_grad(1), value_and_grad(5)
  for a, b in zip(jax.tree.leaves(rolled), jax.tree.leaves(unrolled)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="unroll must be a positive integer, got 0"):
    samplers.make(family, SCHED, 5, unroll=0)


# -- x0 clipping (clip_x0) -------------------------------------------------------------------------

def numpy_clipped_ddim(x_T, times, eta, noises, clip):
  """DDIM(eta) in float64 with the x0 prediction clipped to [-clip, clip] and eps re-derived
  from it (Ho et al.'s clip_denoised; diffusers' use_clipped_model_output=True)."""
  abar = np_abar
  x = np.asarray(x_T, np.float64)
  nexts = list(times[1:]) + [-1]
  for k, (t, t_next) in enumerate(zip(times, nexts)):
    eps = analytic_eps(x, np.full(x.shape[0], float(t)), xp=np)
    x0 = np.clip((x - np.sqrt(1 - abar(t)) * eps) / np.sqrt(abar(t)), -clip, clip)
    eps = (x - np.sqrt(abar(t)) * x0) / np.sqrt(1 - abar(t))
    sigma = eta * np.sqrt((1 - abar(t_next)) / (1 - abar(t)) * (1 - abar(t) / abar(t_next)))
    x = (np.sqrt(abar(t_next)) * x0 + np.sqrt(1 - abar(t_next) - sigma**2) * eps
         + sigma * noises[k])
  return x


@pytest.mark.parametrize("family,eta", [("ddim", 0.0), ("ddpm", 1.0), ("ggdm", 0.0),
                                        ("vars", 1.0)])
def test_clipped_samplers_match_numpy(family, eta):
  shape = (64, 3)
  key = jax.random.PRNGKey(3)
  x_T = 2.0 * jax.random.normal(jax.random.PRNGKey(4), shape)
  sampler = samplers.make(family, SCHED, 6, stride="linear", clip_x0=1.0,
                          eta=None if family == "ddpm" else eta)
  assert sampler.clip_x0 == 1.0
  got = sampler.sample(sampler.init(), analytic_eps, key, shape, x_T=x_T)
  times = samplers.stride_timesteps("linear", SCHED, 6)
  noises = step_noises(key, 6, shape)
  want = numpy_clipped_ddim(x_T, times, eta, noises, 1.0)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  assert np.max(np.abs(got)) <= 1.0 + 1e-5  # the last step outputs the clipped prediction
  unclipped = numpy_ddim(x_T, times, eta, noises)
  assert np.max(np.abs(unclipped - want)) > 0.1  # clipping did act


def test_clip_x0_zero_or_none_is_no_clipping():
  for off in (None, 0, 0.0):
    assert samplers.make("ddim", SCHED, 4, clip_x0=off).clip_x0 is None
  shape = (8, 3)
  x_T = 2.0 * jax.random.normal(jax.random.PRNGKey(4), shape)
  key = jax.random.PRNGKey(0)
  plain = samplers.make("ddim", SCHED, 4).sample({}, analytic_eps, key, shape, x_T=x_T)
  off = samplers.make("ddim", SCHED, 4, clip_x0=0.0).sample({}, analytic_eps, key, shape,
                                                           x_T=x_T)
  np.testing.assert_array_equal(plain, off)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ggdm+pred+time", "vars", "dpm-solver++2m+time"])
def test_clipped_adjoint_gradient_equals_checkpoint_autodiff(family):
  """The reverse pass masks the cotangent where a prediction was clipped: it must equal plain
  autodiff of the clipped recurrence (gradient="checkpoint")."""
  shape = (16, 3)
  keys = jax.random.split(jax.random.PRNGKey(11), 6)
  weights = {"w1": jax.random.normal(keys[0], (3, 8)), "wt": jax.random.normal(keys[1], (4, 8)),
             "w2": 0.3 * jax.random.normal(keys[2], (8, 3)), "freqs": jnp.arange(1.0, 5.0)}
  x_T = 1.5 * jax.random.normal(keys[4], shape)
  target = jax.random.normal(keys[3], shape)
  grads = {}
  for gradient, clip in (("adjoint", 0.8), ("checkpoint", 0.8), ("adjoint", None)):
    sampler = samplers.make(family, SCHED, 4, stride="linear", gradient=gradient, clip_x0=clip)
    params = perturbed(sampler.init(), keys[5], scale=0.02)

    def loss(params, x_T):
      eps_fn = functools.partial(conv_eps_model, weights)
      x0 = sampler.sample(params, eps_fn, keys[5], shape, x_T=x_T)
      return jnp.sum((x0 - target) ** 2) + jnp.sum(jnp.sin(x0))

    grads[gradient, clip] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x_T)
  got, want, unclipped = grads["adjoint", 0.8], grads["checkpoint", 0.8], grads["adjoint", None]
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  for name in got[1][0]:
    np.testing.assert_allclose(got[1][0][name], want[1][0][name], rtol=1e-4, atol=1e-5,
                               err_msg=f"d loss / d {name}")
  np.testing.assert_allclose(got[1][1], want[1][1], rtol=1e-4, atol=1e-5, err_msg="d / d x_T")
  # Clipping changed the gradient (so the mask was exercised).
  assert np.max(np.abs(got[1][1] - unclipped[1][1])) > 1e-2


def _diffusers_or_skip():
  torch = pytest.importorskip("torch", reason="parity needs torch: pip install -e '.[parity]'")
  diffusers = pytest.importorskip("diffusers",
                                  reason="parity needs diffusers: pip install -e '.[parity]'")
  return torch, diffusers


def _our_states(sampler, key, x_T):
  """[K + 1, B, ...] the states of sampler on analytic_eps from x_T: x_T first, x_0 last."""
  noise_key = jax.random.split(key)[1]  # as Sampler.sample splits its key
  states = recurrence.trajectory(sampler.coefficients({}), lambda x, t: analytic_eps(x, t), x_T,
                                 noise_key, stochastic=sampler.stochastic, markov=True,
                                 clip_x0=sampler.clip_x0)
  return np.asarray(states)


@pytest.mark.parity
@pytest.mark.parametrize("family", ["ddim", "ddpm"])
def test_clipped_ddim_and_ddpm_match_diffusers_step_for_step(family, monkeypatch):
  """DDIMScheduler(clip_sample=True).step(..., use_clipped_model_output=True) and
  DDPMScheduler(clip_sample=True) (its per-step noise replaced by ours) on the same model."""
  torch, diffusers = _diffusers_or_skip()
  num_steps, shape = 10, (32, 3)
  key = jax.random.PRNGKey(5)
  x_T = 2.0 * jax.random.normal(jax.random.PRNGKey(6), shape)
  sampler = samplers.make(family, SCHED, num_steps, stride="linear", clip_x0=1.0)
  ours = _our_states(sampler, key, x_T)
  common = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                beta_end=0.02, clip_sample=True, clip_sample_range=1.0,
                timestep_spacing="leading", steps_offset=0)
  if family == "ddim":
    scheduler = diffusers.DDIMScheduler(set_alpha_to_one=True, **common)
    step = lambda eps, t, x, i: scheduler.step(eps, t, x, eta=0.0,
                                               use_clipped_model_output=True).prev_sample
  else:
    scheduler = diffusers.DDPMScheduler(variance_type="fixed_small", **common)
    noises = step_noises(key, num_steps, shape)
    module = diffusers.schedulers.scheduling_ddpm
    current = {}
    monkeypatch.setattr(module, "randn_tensor", lambda *a, **k: torch.from_numpy(
        noises[current["i"]].astype(np.float32)))

    def step(eps, t, x, i):
      current["i"] = i
      return scheduler.step(eps, t, x).prev_sample

  scheduler.set_timesteps(num_steps)
  np.testing.assert_array_equal(scheduler.timesteps.numpy(), sampler.timesteps({}))
  x = torch.from_numpy(np.array(x_T))
  clipped_steps = 0
  for i, t in enumerate(scheduler.timesteps):
    eps = analytic_eps(x, torch.full((shape[0],), float(t)), xp=torch)
    x0 = scheduler.step(eps, t, x).pred_original_sample if family == "ddim" else None
    clipped_steps += int(x0 is not None and bool((x0.abs() == 1.0).any()))
    x = step(eps, t, x, i)
    np.testing.assert_allclose(ours[i + 1], x.numpy(), rtol=1e-4, atol=1e-4,
                               err_msg=f"step {i} (t = {int(t)})")
  if family == "ddim":
    assert clipped_steps >= 3  # the clipping was active, not a no-op


@pytest.mark.parametrize("solver", solvers.SOLVERS)
def test_ggdm_started_from_a_solver_draws_its_samples(solver):
  """A multistep solver is a GGDM: GGDM and GGDM+PRED made with start_solver reproduce it."""
  schedule = schedules.linear_beta()
  eps_fn = lambda x, t: 0.3 * x + 0.01 * t[:, None]
  key = jax.random.PRNGKey(3)
  want = samplers.make(solver, schedule, 7, stride="linear").sample({}, eps_fn, key, (32, 2))
  for family in ("ggdm", "ggdm+pred"):
    ggdm = samplers.make(family, schedule, 7, stride="linear", start_solver=solver)
    np.testing.assert_allclose(ggdm.sample(ggdm.init(), eps_fn, key, (32, 2)), want,
                               rtol=1e-5, atol=1e-5)
  ddim = samplers.make("ddim", schedule, 7, stride="linear").sample({}, eps_fn, key, (32, 2))
  assert np.abs(np.asarray(want) - np.asarray(ddim)).max() > 1e-3  # a different start


def test_start_solver_is_refused_where_it_cannot_apply():
  schedule = schedules.linear_beta()
  with pytest.raises(ValueError, match="only the GGDM families start from a solver; family "
                     "'vars'"):
    samplers.make("vars", schedule, 5, start_solver="unipc")
  with pytest.raises(ValueError, match=r"unknown start_solver 'heun'; valid choices: "
                     r"\['dpm-solver\+\+2m', 'unipc', 'ipndm'\]"):
    samplers.make("ggdm", schedule, 5, start_solver="heun")
  with pytest.raises(ValueError, match="start_solver 'unipc' is deterministic; got eta=1.0"):
    samplers.make("ggdm", schedule, 5, start_solver="unipc", eta=1.0)
  with pytest.raises(ValueError, match="start_solver 'unipc' needs distinct times"):
    samplers.make("ggdm", schedule, 30, stride="quadratic", start_solver="unipc")
