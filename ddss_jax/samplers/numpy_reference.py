"""A NumPy float64 reference that runs any sampler.json: no JAX, the maths written out step by step.

It reads only the file's coefficients (and clip_x0), so it runs every family alike, and is the
oracle the tests hold the JAX sampler and the diffusers scheduler to. The recurrence
(docs/method.md, section 3; docs/deploy.md), steps i = 0..K-1 from x_T = x[0]:

    eps_i      = eps_fn(x[i], t_i)
    x0_pred_i  = (x[i] - c_i eps_i) / b_i, clipped to [-r, r] where clip_x0 = r > 0
    x[i + 1]   = mu_i x0_pred_i + sum_{j <= i} nu[i, j] x[j] + sigma_i z_i

and x[K] is the sample. The noises z_i are the caller's (ddss_jax draws z_i from
fold_in(noise_key, i); tests reproduce them). A conditional model is called as eps_fn(x, t, cond),
and a guided sampler's (coefficients.w) as eps_fn(x, t, cond, w_i): the caller's guided model,
eps_u + w (eps_c - eps_u).

    spec = numpy_reference.load("sampler.json")
    x_0 = numpy_reference.sample(spec, eps_fn, x_T=x_T, noises=[z_0, ..., z_{K-1}])
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ddss_jax.samplers import sampler_json
from ddss_jax.samplers.sampler_json import SamplerSpec


def load(path: str) -> SamplerSpec:
  """The validated content of a sampler file (ddss_jax.samplers.sampler_json.read)."""
  return sampler_json.read(path)


def needs_noise(spec: SamplerSpec) -> bool:
  """Whether any step adds fresh noise (some sigma_i != 0)."""
  return bool(np.any(spec.coefficients["sigma"] != 0))


def sample(spec: SamplerSpec, eps_fn: Callable[..., np.ndarray], *, x_T: np.ndarray,
           noises: Sequence[np.ndarray] | None = None, cond: Any = None) -> np.ndarray:
  """x_0 [B, ...] in float64: K calls of eps_fn(x [B, ...], t [B]) -> eps [B, ...].

  Args:
    spec: a sampler file's content (`load`).
    eps_fn: the model in eps form; t is float64 in the model's time units. With cond:
      eps_fn(x, t, cond); a guided sampler's: eps_fn(x, t, cond, w [B]).
    x_T: [B, ...] the starting noise.
    noises: K arrays [B, ...], z_0 first; needed only where some sigma_i != 0.
    cond: the batch's conditioning (needed by a guided sampler).
  """
  coeffs = spec.coefficients
  num_steps = spec.num_steps
  guided = "w" in coeffs
  if guided and cond is None:
    raise ValueError("this sampler guides a conditional model (coefficients.w): pass cond, the "
                     "batch's conditioning")
  if needs_noise(spec) and (noises is None or len(noises) != num_steps):
    raise ValueError(f"this sampler adds noise at its steps: pass noises, {num_steps} arrays of "
                     f"x_T's shape, got {None if noises is None else len(noises)}")
  states = [np.asarray(x_T, np.float64)]
  for i in range(num_steps):
    x = states[i]
    t = np.full(x.shape[:1], coeffs["t"][i])
    inputs = (() if cond is None else (cond,)) + (
        (np.full(x.shape[:1], coeffs["w"][i]),) if guided else ())
    eps = np.asarray(eps_fn(x, t, *inputs), np.float64)
    if eps.shape != x.shape:
      raise ValueError(f"eps_fn returned shape {eps.shape} for x of shape {x.shape}")
    x0_pred = (x - coeffs["c"][i] * eps) / coeffs["b"][i]
    if spec.clip_x0:
      x0_pred = np.clip(x0_pred, -spec.clip_x0, spec.clip_x0)
    x_next = coeffs["mu"][i] * x0_pred
    for j in range(i + 1):  # only the lower triangle of nu is part of the recurrence
      x_next = x_next + coeffs["nu"][i, j] * states[j]
    if coeffs["sigma"][i] != 0:
      x_next = x_next + coeffs["sigma"][i] * np.asarray(noises[i], np.float64)
    states.append(x_next)
  return states[-1]


def alpha_bar(spec: SamplerSpec, t: np.ndarray) -> np.ndarray:
  """alpha_bar at float times t (any shape) in float64, as ddss_jax's Schedule defines it
  between the integers: log-SNR interpolated linearly, t clamped to [0, T - 1]."""
  if spec.alpha_bars is None:
    raise ValueError("this (early version 1) sampler file has no schedule.alpha_bars; save it "
                     "again with this ddss_jax")
  logsnrs = np.log(spec.alpha_bars) - np.log1p(-spec.alpha_bars)
  logsnr = np.interp(np.asarray(t, np.float64), np.arange(spec.num_timesteps), logsnrs)
  return 1.0 / (1.0 + np.exp(-logsnr))


def eps_from_prediction(output: np.ndarray, x: np.ndarray, alpha_bar_t: np.ndarray, *,
                        prediction: str) -> np.ndarray:
  """eps from a network's output [B, ...] at x [B, ...] whose alpha_bar is alpha_bar_t (a scalar
  or [B] broadcast over the data axes), for prediction "eps", "x0" or "v" (the VP identities
  eps = (x - a x0) / s = s x + a v, docs/method.md, section 1)."""
  if prediction not in sampler_json.PREDICTIONS:
    raise ValueError(f"prediction={prediction!r}; valid choices: {list(sampler_json.PREDICTIONS)}")
  alpha_bar_t = np.asarray(alpha_bar_t, np.float64).reshape((-1,) + (1,) * (np.ndim(x) - 1))
  a, s = np.sqrt(alpha_bar_t), np.sqrt(1.0 - alpha_bar_t)
  if prediction == "x0":
    return (x - a * output) / s
  if prediction == "v":
    return s * x + a * output
  return output
