"""Training-free multistep solvers written as GGDM coefficients.

DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) and UniPC (Zhao et al. 2023; data prediction,
order 2, B(h) = e^h - 1 ("bh2"), the UniC corrector after every model call but the last) update
x with the current and previous x0 predictions; iPNDM (Zhang and Chen 2023, the DEIS paper's
improved pseudo numerical method) with the current and previous eps predictions. The previous
ones are linear combinations of the states the model has seen (x0_j = (x_{j+1} - sum_l nu_{j,l}
x_l) / mu_j by step j's own update),
so each step is x_{i+1} = mu_i x0_i + sum_{j <= i} nu_{i,j} x_j: the recurrence of
`ddss_jax.samplers.recurrence.run`, which gives these solvers the same adjoint gradient, evaluation
and sampler.json as every other family. The coefficients are differentiable in the times, which is
what the "+time" families learn.

Conventions: times t [K] are largest first; a, s = alpha_sigma(t); lambda = log(a / s); the last
step goes to sigma = 0 (alpha_bar = 1). For DPM-Solver++ and UniPC it is first order there, so
its output is x0_{K-1}, and the first step is first order too (no previous prediction): what
diffusers' DPMSolverMultistepScheduler and UniPCMultistepScheduler do with lower_order_final and
final_sigmas_type="zero". iPNDM keeps its order at the last step, as the published sampler does.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from ddss_jax.samplers import recurrence
from ddss_jax.samplers.schedules import Schedule

SOLVERS = ("dpm-solver++2m", "unipc", "ipndm")
# Adams-Bashforth weights of eps_i, eps_{i-1}, ... with 1, 2, 3 and 4 predictions known: iPNDM's
# step i uses the row of order min(i + 1, 4).
ADAMS_BASHFORTH = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12),
                   (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def coefficients(name: str, schedule: Schedule, t: jnp.ndarray) -> recurrence.Coefficients:
  """GGDM coefficients of solver `name` (one of SOLVERS) at times t [K], largest first.

  "ipndm": see `_ipndm`. The others: step i (0 <= i < K - 1), with h_i = lambda_{i+1} - lambda_i
  and r_i = h_{i-1} / h_i:
    predictor  x_{i+1} = (s_{i+1} / s_i) xc_i + a_{i+1} (1 - e^{-h_i}) D_i,
               D_i = (1 + 1 / (2 r_i)) x0_i - x0_{i-1} / (2 r_i)  (D_0 = x0_0),
  which is DPM-Solver++(2M) and also UniPC's predictor UniP-2 with bh2. xc_i = x_i for
  DPM-Solver++; UniPC's corrector (1 <= i <= K - 2) replaces the state the model saw by
    xc_i = (s_i / s_{i-1}) xc_{i-1}
           + a_i (1 - e^{-h}) (x0_{i-1} + rho_0 D + rho_1 (x0_i - x0_{i-1})),
  h = lambda_i - lambda_{i-1}, D = (x0_{i-2} - x0_{i-1}) / r_k, r_k = (lambda_{i-2} - lambda_{i-1})
  / h, and (rho_0, rho_1) solving [[1, 1], [r_k, 1]] rho = (b_1, b_2), UniPC's right-hand side
  for B(h) = e^h - 1 (`_unic`); the first correction (i = 1) is first order, rho_1 = 1/2. The
  model is not called at xc_i: x0_i is the prediction at the predictor's x_i, as in UniPC.
  """
  if name not in SOLVERS:
    raise ValueError(f"unknown solver {name!r}; valid choices: {list(SOLVERS)}")
  if name == "ipndm":
    return _ipndm(schedule, t)
  num_steps = t.shape[0]
  a, s = schedule.alpha_sigma(t)
  lam = 0.5 * schedule.logsnr(t)
  eye = jnp.eye(num_steps, dtype=jnp.float32)
  x0s = []             # x0_j (j < i) as combinations of the states
  corrected = eye[0]   # xc_{i-1}; the starting noise is not corrected
  mus, rows = [], []
  for i in range(num_steps):
    # xc_i = state + weight * x0_i; x0_i is the unknown of this step.
    state, weight = eye[i], jnp.zeros((), jnp.float32)
    if name == "unipc" and 1 <= i <= num_steps - 2:
      state, weight = _unic(i, a=a, s=s, lam=lam, x0s=x0s, corrected=corrected)
    if i == num_steps - 1:  # to x_0: s_next = 0, e^{-h} = 0, first order: x_K = x0_{K-1}
      mus.append(jnp.ones((), jnp.float32))
      rows.append(jnp.zeros((num_steps,), jnp.float32))
      break
    h = lam[i + 1] - lam[i]
    phi = a[i + 1] * -jnp.expm1(-h)   # the weight of D_i
    ratio = s[i + 1] / s[i]
    row, mu = ratio * state, ratio * weight + phi
    if i > 0:
      half_inv_r = 0.5 * h / (lam[i] - lam[i - 1])  # 1 / (2 r_i)
      mu = mu + phi * half_inv_r
      row = row - phi * half_inv_r * x0s[i - 1]
    mus.append(mu)
    rows.append(row)
    x0s.append((eye[i + 1] - row) / mu)
    corrected = state + weight * x0s[i]
  return recurrence.Coefficients(t=t, b=a, c=s, mu=jnp.stack(mus), nu=jnp.stack(rows),
                                 sigma=jnp.zeros((num_steps,), jnp.float32))


def _unic(i: int, *, a, s, lam, x0s, corrected):
  """UniPC's corrector at step i as (combination of states, weight of x0_i); see coefficients."""
  h = lam[i] - lam[i - 1]
  b_h = jnp.expm1(-h)                      # B(-h) for bh2; also h phi_1(-h)
  if i == 1:
    rho_0, rho_1 = None, 0.5
  else:
    # With u = -h: g_1 = (e^u - 1) / u - 1 = u phi_2(u), g_2 = g_1 / u - 1/2 = u phi_3(u), and
    # b_n = n! g_n / B(u), B(u) = u phi_1(u): b_1 = phi_2 / phi_1, b_2 = 2 phi_3 / phi_1.
    phi_1, phi_2, phi_3 = (phi(k, u=-h) for k in (1, 2, 3))
    b_1 = phi_2 / phi_1
    b_2 = 2.0 * phi_3 / phi_1
    r_k = (lam[i - 2] - lam[i - 1]) / h
    rho_0 = (b_1 - b_2) / (1.0 - r_k)
    rho_1 = b_1 - rho_0
  ratio = s[i] / s[i - 1]
  scale = -a[i] * b_h                      # a_i (1 - e^{-h}) > 0
  state = ratio * corrected + scale * (1.0 - rho_1) * x0s[i - 1]
  if rho_0 is not None:
    state = state + scale * rho_0 * (x0s[i - 2] - x0s[i - 1]) / r_k
  return state, scale * rho_1


def _ipndm(schedule: Schedule, t: jnp.ndarray) -> recurrence.Coefficients:
  """iPNDM at times t [K]: the probability-flow ODE in y = x / a and rho = s / a = e^{-lambda},
  dy / drho = eps, stepped by Adams-Bashforth with the weights of equal steps whatever the gaps,
    y_{i+1} = y_i + (rho_{i+1} - rho_i) sum_k ADAMS_BASHFORTH[min(i, 3)][k] eps_{i-k},
  the published sampler (in sigma space: x_next = x + (sigma_next - sigma) d, d = (x - D) / sigma,
  with the order-4 weights 55, -59, 37, -9 over 24). rho_{i+1} - rho_i = rho_i expm1(-h_i) keeps
  the step's digits where the gaps are small; the last step goes to rho = 0, a = 1 (expm1 = -1).
  With eps_i = (x_i - a_i x0_i) / s_i the step is x_{i+1} = mu_i x0_i + sum_j nu_{i,j} x_j.
  """
  num_steps = t.shape[0]
  a, s = schedule.alpha_sigma(t)
  lam = 0.5 * schedule.logsnr(t)
  eye = jnp.eye(num_steps, dtype=jnp.float32)
  epss = []   # eps_j (j < i) as combinations of the states
  mus, rows = [], []
  for i in range(num_steps):
    weights = ADAMS_BASHFORTH[min(i, len(ADAMS_BASHFORTH) - 1)]
    last = i == num_steps - 1
    a_next = 1.0 if last else a[i + 1]
    decay = -1.0 if last else jnp.expm1(lam[i] - lam[i + 1])    # e^{-h_i} - 1
    scale = a_next / a[i]
    history = jnp.zeros((num_steps,), jnp.float32)   # sum_{k >= 1} w_k eps_{i-k}
    for k, w in enumerate(weights[1:], start=1):
      history = history + w * epss[i - k]
    # x_{i+1} = scale (x_i + s_i decay (w_0 eps_i + history)), eps_i = (x_i - a_i x0_i) / s_i
    mus.append(-weights[0] * a_next * decay)
    rows.append(scale * ((1.0 + weights[0] * decay) * eye[i] + s[i] * decay * history))
    if not last:   # eps_i from the step's own update
      epss.append(((eye[i + 1] / scale - eye[i]) / (s[i] * decay) - history) / weights[0])
  return recurrence.Coefficients(t=t, b=a, c=s, mu=jnp.stack(mus), nu=jnp.stack(rows),
                                 sigma=jnp.zeros((num_steps,), jnp.float32))


SERIES_TERMS = 16  # |u| < 1: the first omitted term is below 1 / 16! ~ 5e-14 of phi_k


def phi(k: int, *, u: jnp.ndarray) -> jnp.ndarray:
  """phi_k(u) = sum_{j >= 0} u^j / (j + k)! (phi_0 = e^u, phi_{k+1} = (phi_k - 1 / k!) / u), the
  exponential integrators' functions, for k >= 1 and any shape of u.

  The closed form (e^u - sum_{j < k} u^j / j!) / u^k subtracts nearly equal numbers when u is
  small: in float32 its relative error grows like 1e-7 / |u|^k (1e-3 for phi_3 at |u| = 0.05, a
  gap of log-SNR that K = 50 steps reach). Below |u| = 1 the series is used instead (no
  cancellation: its terms shrink by |u| / (j + k) each); above, the closed form loses at most a
  few digits. Both branches are finite everywhere, so gradients through jnp.where stay finite.
  """
  u = jnp.asarray(u, jnp.float32)
  small = jnp.abs(u) < 1.0
  term = jnp.full_like(u, 1.0 / math.factorial(k))
  series = term
  for j in range(1, SERIES_TERMS):
    term = term * u / (j + k)
    series = series + term
  big = jnp.where(small, 1.0, u)
  closed = jnp.exp(big) - sum(big**j / math.factorial(j) for j in range(k))
  return jnp.where(small, series, closed / big**k)
