"""DDIM(eta) and VARS as recurrence coefficients, in log-SNR form so that float32 keeps their
digits at both ends of the noise range.

A step goes from time t (log-SNR l, a = sqrt(sigmoid(l)), s = sqrt(sigmoid(-l))) to the next,
less noisy time (l_n, a_n, s_n), or to x_0 at the last step (l_n = +inf: a_n = 1, s_n = 0).
DDIM (Song et al. 2021, eq. 12 and 16) writes x_n = a_n x0 + sqrt(s_n^2 - sigma^2) eps + sigma z
with sigma^2 = eta^2 (1 - abar_n) / (1 - abar) (1 - abar / abar_n). Both factors cancel
catastrophically in float32 where alpha_bar is near 1 (1 - alpha_bar = 4e-6 at EDM's
sigma_min = 0.002; alpha_bar = sigmoid(l) rounds to 1 above l ~ 17, sigma below 2.5e-4). With
d = l - l_n <= 0 the same quantities are

    (1 - abar_n) / (1 - abar) (1 - abar / abar_n) = s_n^2 / s^2 * s^2 (1 - e^d) = s_n^2 (-expm1(d))
    q      = sigma^2 / s_n^2 = eta^2 (-expm1(d))                 in [0, eta^2]
    1 - q  = (1 - eta^2) + eta^2 e^d                              (two terms >= 0: no cancellation)
    sigma  = s_n sqrt(q),   nu = sqrt(s_n^2 - sigma^2) / s = (s_n / s) sqrt(1 - q)
    mu     = a_n - nu a = a_n (1 - e^{d/2} sqrt(1 - q)) = -a_n expm1((d + log(1 - q)) / 2)

since a s_n / (s a_n) = e^{d/2}. Every factor is a sigmoid of l, an exp, expm1 or log of
non-negative terms: none subtracts two nearly equal numbers. The recurrence reads
x0_pred = (x - c eps) / b with b = a, c = s; x_next = mu x0_pred + nu x + sigma z.
"""

from __future__ import annotations

import jax.numpy as jnp

from ddss_jax.samplers import recurrence
from ddss_jax.samplers.schedules import Schedule


def coefficients(*, schedule: Schedule, t: jnp.ndarray, eta: float) -> recurrence.Coefficients:
  """DDIM(eta) at times t [K], largest first; eta = 1 is ancestral sampling (DDPM)."""
  l, a, s = _levels(schedule, t)
  d, q, keep = _noise_fraction(l, eta)
  sigma = s[1:] * jnp.sqrt(q)
  nu = s[1:] / s[:-1] * jnp.sqrt(keep)
  mu = a[1:] * -jnp.expm1(0.5 * (d + jnp.log(keep)))
  return _with_last_step(t=t, a=a, s=s, mu=mu, nu=nu, sigma=sigma)


def vars_coefficients(*, schedule: Schedule, t: jnp.ndarray,
                      noise_angle: jnp.ndarray) -> recurrence.Coefficients:
  """VARS at times t [K] with noise_angle [K]: sigma = s_n sin(angle), the eps coefficient
  s_n cos(angle). mu = a_n (1 - e^{d/2} cos) = a_n (2 sin^2(angle / 2) + cos (-expm1(d / 2))),
  two terms >= 0 for angles in [0, pi / 2], smooth in the angle (which is learned)."""
  l, a, s = _levels(schedule, t)
  d = l[:-1] - l[1:]
  angle = noise_angle[:-1]
  cos = jnp.cos(angle)
  sigma = s[1:] * jnp.sin(angle)
  nu = s[1:] / s[:-1] * cos
  mu = a[1:] * (2.0 * jnp.sin(0.5 * angle) ** 2 + cos * -jnp.expm1(0.5 * d))
  return _with_last_step(t=t, a=a, s=s, mu=mu, nu=nu, sigma=sigma)


def noise_angle(*, schedule: Schedule, t: jnp.ndarray, eta: float) -> jnp.ndarray:
  """[K] the VARS angle whose noise equals DDIM(eta)'s: sin^2 = q, cos^2 = 1 - q, taken with
  arctan2 (arcsin(sqrt(q)) loses the angle's digits where q is near 1, at eta = 1 and a large
  step); 0 at the last step, where no noise is possible."""
  _, q, keep = _noise_fraction(schedule.logsnr(t), eta)
  return jnp.append(jnp.arctan2(jnp.sqrt(q), jnp.sqrt(keep)), 0.0)


def _noise_fraction(l: jnp.ndarray, eta: float):
  """(d, q, 1 - q) [K - 1] of the steps between the K log-SNRs l: d = l - l_next <= 0 and
  q = sigma^2 / s_next^2 = eta^2 (-expm1(d)), 1 - q as two terms >= 0."""
  d = l[:-1] - l[1:]
  return d, eta**2 * -jnp.expm1(d), (1.0 - eta**2) + eta**2 * jnp.exp(d)


def _levels(schedule: Schedule, t: jnp.ndarray):
  """(l, a, s) [K] at times t."""
  l = schedule.logsnr(t)
  a, s = schedule.alpha_sigma(t)
  return l, a, s


def _with_last_step(*, t, a, s, mu, nu, sigma) -> recurrence.Coefficients:
  """The coefficients of steps 0..K-2 ([K - 1] each) and the last step, to x_0: x_0 = x0_pred
  (mu = 1, nu = 0, sigma = 0)."""
  last = lambda values, value: jnp.append(values, jnp.asarray(value, values.dtype))
  return recurrence.Coefficients(t=t, b=a, c=s, mu=last(mu, 1.0), nu=jnp.diag(last(nu, 0.0)),
                                 sigma=last(sigma, 0.0))
