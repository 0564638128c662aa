"""Conversions between the parameterisations of a VP diffusion model, in log-SNR form.

With a = sqrt(sigmoid(logsnr)), s = sqrt(sigmoid(-logsnr)) (so a^2 + s^2 = 1):
    x_t = a x0 + s eps,    v = a eps - s x0,
    x0 = (x_t - s eps) / a = a x_t - s v,    eps = (x_t - a x0) / s = s x_t + a v.
Every function is keyword-only. `logsnr` is a scalar or has shape [B] and broadcasts
against x_t of shape [B, ...].
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


def alpha_sigma(logsnr: jax.Array, like: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(a, s) of `logsnr` [B] or [], reshaped to broadcast against `like` [B, ...]."""
  logsnr = jnp.asarray(logsnr, like.dtype)
  if logsnr.ndim == 1:
    logsnr = logsnr.reshape(logsnr.shape + (1,) * (like.ndim - 1))
  return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def diffuse(*, x0: jax.Array, eps: jax.Array, logsnr: jax.Array) -> jax.Array:
  """x_t = a x0 + s eps. x0, eps: [B, ...]."""
  a, s = alpha_sigma(logsnr, x0)
  return a * x0 + s * eps


def x0_from_eps(*, x_t: jax.Array, eps: jax.Array, logsnr: jax.Array) -> jax.Array:
  a, s = alpha_sigma(logsnr, x_t)
  return (x_t - s * eps) / a


def eps_from_x0(*, x_t: jax.Array, x0: jax.Array, logsnr: jax.Array) -> jax.Array:
  a, s = alpha_sigma(logsnr, x_t)
  return (x_t - a * x0) / s


def v_from_eps(*, x_t: jax.Array, eps: jax.Array, logsnr: jax.Array) -> jax.Array:
  # v = a eps - s x0 with x0 = (x_t - s eps) / a  =>  v = (eps - s x_t) / a.
  a, s = alpha_sigma(logsnr, x_t)
  return (eps - s * x_t) / a


def x0_from_v(*, x_t: jax.Array, v: jax.Array, logsnr: jax.Array) -> jax.Array:
  a, s = alpha_sigma(logsnr, x_t)
  return a * x_t - s * v


def eps_from_v(*, x_t: jax.Array, v: jax.Array, logsnr: jax.Array) -> jax.Array:
  a, s = alpha_sigma(logsnr, x_t)
  return s * x_t + a * v


PREDICTIONS = ("eps", "x0", "v")


def as_eps_fn(model_fn: EpsFn, *, prediction: str, logsnr_fn: Callable[[jax.Array], jax.Array]
              ) -> EpsFn:
  """Adapts a model that predicts `prediction` ("eps", "x0" or "v") to eps_fn(x, t) -> eps.

  Args:
    model_fn: (x [B, ...], t [B] in model time units) -> prediction [B, ...].
    prediction: what model_fn predicts.
    logsnr_fn: t [B] -> logsnr [B], usually `Schedule.logsnr`.
  """
  if prediction not in PREDICTIONS:
    raise ValueError(f"unknown prediction {prediction!r}; valid choices: {list(PREDICTIONS)}")
  if prediction == "eps":
    return model_fn

  def eps_fn(x, t):
    out = model_fn(x, t)
    if prediction == "x0":
      return eps_from_x0(x_t=x, x0=out, logsnr=logsnr_fn(t))
    return eps_from_v(x_t=x, v=out, logsnr=logsnr_fn(t))

  return eps_fn
