"""Frozen diffusion models of every common form, turned exactly into what the samplers run: the
eps_fn(params, x, t) of a discrete VP model, t in [0, T - 1], and its Schedule (a `VPModel`).

    model = model_forms.discrete(model_fn, schedule=schedules.make("linear"), prediction="v")
    model = model_forms.continuous(model_fn, logsnr_fn=lambda u: 10 - 20 * u)          # VDM
    model = model_forms.continuous(model_fn, alpha_fn=..., sigma_fn=..., prediction="score",
                                   t_min=1e-3)                                          # score_sde
    model = model_forms.sigma_denoiser(denoiser, sigma_min=0.002, sigma_max=80.0)  # EDM
    model = model_forms.flow_matching(velocity_fn, time_scale=1000.0)  # rectified flow, diffusers
    problem = ddss_jax.make_problem(model=model, model_params=params, ...)

Every model is model_fn(params, x [B, ...], u [B]) -> prediction [B, ...] in its own time u; a
conditional one model_fn(params, x, u, cond), and its eps_fn(params, x, t, cond) passes cond on
unchanged (guiding it: ddss_jax.samplers.guidance).
Predictions (PREDICTIONS): "eps"; "x0"; "v" = a eps - s x0 (a, s of the VP state below);
"score" = grad log p(x_u) = -eps / sigma(u); "velocity" = d x_u / du = alpha'(u) x0 + sigma'(u) eps.

Why the conversion is exact. Each form is a Gaussian path x_u = alpha(u) x0 + sigma(u) eps. With
r = sqrt(alpha^2 + sigma^2), x = x_u / r = a x0 + s eps (a = alpha / r, s = sigma / r) is the VP
state the samplers carry, and logsnr(u) = 2 log(alpha(u) / sigma(u)). At its time t a sampler
assumes logsnr = schedule.logsnr(t); the wrapper finds the model time u whose log-SNR is exactly
that (in closed form, or by bisection with the implicit-function derivative, so that learned
times get gradients), calls the model on (r(u) x, u) and converts its prediction to eps. The model
thus sees the noise level the sampler assumes at integer and non-integer t alike.

Where a discretisation enters: only in the Schedule, a grid of T model times u_0 < ... < u_{T-1}
(least noisy first) that the sampler's integer times stand for. It decides where the strides'
times fall, and its ends bound the sampler: it starts from x_T ~ N(0, I) at u_{T-1}, which is
pure noise only approximately, and its last model call is at u_0. docs/bring_your_own_model.md
gives the grids and what was measured.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ddss_jax.samplers import diffusion
from ddss_jax.samplers.schedules import Schedule

PREDICTIONS = ("eps", "x0", "v", "score", "velocity")
ModelFn = Callable[[Any, jax.Array, jax.Array], jax.Array]
BISECTION_STEPS = 40  # float32 u on [u_0, u_{T-1}] stops moving after about 25


class VPModel(NamedTuple):
  """A model as the samplers run it.

  Attributes:
    eps_fn: (params, x [B, ...], t [B]) -> eps [B, ...]: x the VP state, t in [0, T - 1]; for
      a conditional model (params, x, t, cond).
    schedule: the discrete VP schedule of t (ddss_jax.samplers.schedules.Schedule).
    model_time: t [...] -> the time input the model receives at sampler time t (e.g. EDM's
      sigma); to read a sampler's (learned) times in the model's own units.
  """
  eps_fn: Callable[[Any, jax.Array, jax.Array], jax.Array]
  schedule: Schedule
  model_time: Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class _Path:
  """x_u = alpha(u) x0 + sigma(u) eps, and u from a log-SNR (elementwise, [B] -> [B])."""
  alpha: Callable[[jax.Array], jax.Array]
  sigma: Callable[[jax.Array], jax.Array]
  time_from_logsnr: Callable[[jax.Array], jax.Array]


def discrete(model_fn: ModelFn, *, schedule: Schedule, prediction: str = "eps") -> VPModel:
  """A discrete-time VP model (DDPM, diffusers' UNet2DModel): u = t in [0, T - 1].

  Args:
    model_fn: (params, x [B, ...], t [B]) -> prediction [B, ...].
    schedule: the model's training schedule (at non-integer t, as every Schedule, log-SNR
      interpolated linearly: that is the definition the samplers and this wrapper share).
    prediction: "eps", "x0", "v" or "score" ("velocity" needs a continuous time).
  """
  _check_prediction(prediction, allowed=PREDICTIONS[:4])
  if not isinstance(schedule, Schedule):
    raise ValueError("schedule must be a ddss_jax.samplers.schedules.Schedule, got "
                     f"{type(schedule)}")

  def eps_fn(params, x, t, *cond):
    alpha, sigma = schedule.alpha_sigma(t)
    out = model_fn(params, x, t, *cond)
    return _to_eps(prediction, out, x_u=x, alpha=alpha, sigma=sigma, logsnr=schedule.logsnr(t),
                   d_alpha=None, d_sigma=None)

  return VPModel(eps_fn, schedule, lambda t: jnp.asarray(t, jnp.float32))


def continuous(model_fn: ModelFn, *, prediction: str = "eps",
               logsnr_fn: Callable[[jax.Array], jax.Array] | None = None,
               alpha_fn: Callable[[jax.Array], jax.Array] | None = None,
               sigma_fn: Callable[[jax.Array], jax.Array] | None = None,
               num_timesteps: int = 1000, t_min: float = 0.0, t_max: float = 1.0,
               grid: np.ndarray | None = None,
               time_from_logsnr: Callable[[jax.Array], jax.Array] | None = None) -> VPModel:
  """A continuous-time model, u in [t_min, t_max], given by its log-SNR (VDM: logsnr = -gamma) or
  by its path's alpha(u), sigma(u) (score_sde's VP: alpha = exp(-int beta / 2), sigma =
  sqrt(-expm1(-int beta)), which float32 keeps near t_min where sqrt(1 - alpha^2) does not;
  VE: alpha = 1; any pair, VP or not).

  Args:
    model_fn: (params, x_u [B, ...], u [B]) -> prediction [B, ...].
    prediction: one of PREDICTIONS ("velocity" only with alpha_fn and sigma_fn).
    logsnr_fn, or alpha_fn and sigma_fn: u [B] -> [B], jnp-traceable; the log-SNR must fall
      strictly as u grows. logsnr_fn alone means the VP path (alpha^2 + sigma^2 = 1).
    num_timesteps, t_min, t_max: the grid u_i = linspace(t_min, t_max, T) (its log-SNR must be
      finite: score_sde's VP needs t_min > 0, its sampling_eps = 1e-3).
    grid: [T] model times, least noisy first, instead of the linspace.
    time_from_logsnr: the exact inverse of the log-SNR, logsnr [B] -> u [B], if you have it in
      closed form; by default, bisection (float32: |logsnr(u) - logsnr| about 1e-6 relative).
  """
  _check_prediction(prediction)
  if (logsnr_fn is None) == (alpha_fn is None or sigma_fn is None) or (
      logsnr_fn is not None and (alpha_fn is not None or sigma_fn is not None)):
    raise ValueError("continuous: pass logsnr_fn, or alpha_fn and sigma_fn (not both)")
  if logsnr_fn is not None:
    if prediction == "velocity":
      raise ValueError("continuous: prediction='velocity' needs the path: pass alpha_fn and "
                       "sigma_fn instead of logsnr_fn")
    alpha_fn = lambda u: jnp.sqrt(jax.nn.sigmoid(logsnr_fn(u)))
    sigma_fn = lambda u: jnp.sqrt(jax.nn.sigmoid(-logsnr_fn(u)))
  grid = _grid(grid, num_timesteps, t_min, t_max)
  if time_from_logsnr is None:
    time_from_logsnr = _inverse(lambda u: _logsnr(alpha_fn(u), sigma_fn(u)), grid[0], grid[-1])
  return _wrap(model_fn, _Path(alpha_fn, sigma_fn, time_from_logsnr), prediction, grid,
               name="continuous")


def sigma_denoiser(denoiser: ModelFn, *, sigma_min: float = 0.002, sigma_max: float = 80.0,
                   num_timesteps: int = 1000, rho: float = 7.0, grid: np.ndarray | None = None,
                   prediction: str = "x0") -> VPModel:
  """A denoiser in sigma space, D(x0 + sigma eps, sigma) -> x0 (EDM, k-diffusion), taken as
  given: EDM's preconditioning (c_skip, c_out, c_in, c_noise) belongs inside D.

  The VP state is x = x_sigma / sqrt(1 + sigma^2) and sigma = s / a = exp(-logsnr / 2), in
  closed form. The grid is EDM's: sigma_i^(1 / rho) linear from sigma_min (t = 0) to sigma_max
  (t = T - 1).

  Args:
    denoiser: (params, x_sigma [B, ...], sigma [B]) -> prediction [B, ...].
    sigma_min, sigma_max, num_timesteps, rho: the grid of sigmas; or
    grid: [T] increasing sigmas.
    prediction: "x0" (a denoiser), or what else D returns: one of PREDICTIONS.
  """
  _check_prediction(prediction)
  if grid is None:
    if not 0 < sigma_min < sigma_max or not np.isfinite(sigma_max) or not rho > 0:
      raise ValueError(f"sigma_denoiser needs 0 < sigma_min < sigma_max < inf and rho > 0, got "
                       f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r}, rho={rho!r}")
    _check_num_timesteps(num_timesteps)
    ramp = np.linspace(0.0, 1.0, num_timesteps)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    grid = (low + ramp * (high - low)) ** rho
  grid = _grid(grid, num_timesteps, None, None)
  path = _Path(alpha=jnp.ones_like, sigma=lambda u: u,
               time_from_logsnr=lambda logsnr: jnp.exp(-0.5 * logsnr))
  return _wrap(denoiser, path, prediction, grid, name="sigma_denoiser")


def flow_matching(velocity_fn: ModelFn, *, time_scale: float = 1.0, num_timesteps: int = 1000,
                  t_min: float = 1e-3, t_max: float = 1 - 1e-3, grid: np.ndarray | None = None,
                  prediction: str = "velocity") -> VPModel:
  """A flow-matching model on the linear path x_u = (1 - u) x0 + u eps, u in (0, 1), predicting
  the velocity v = d x_u / du = eps - x0 (rectified flow; diffusers' FlowMatchEulerDiscrete
  models, whose sigma is u and whose timestep input is 1000 u: time_scale=1000).

  The VP state is x = x_u (a + s) and u = s / (a + s) = sigmoid(-logsnr / 2), in closed form.
  u = 1 is pure noise (log-SNR -inf), outside every Schedule: the sampler starts at t_max.

  Args:
    velocity_fn: (params, x_u [B, ...], time_scale * u [B]) -> prediction [B, ...].
    time_scale: what the model's time input is in units of u.
    num_timesteps, t_min, t_max: the grid u_i = linspace(t_min, t_max, T), inside (0, 1); or
    grid: [T] increasing u.
    prediction: "velocity", or another of PREDICTIONS.
  """
  _check_prediction(prediction)
  if grid is None and not 0 < t_min < t_max < 1:
    raise ValueError(f"flow_matching needs 0 < t_min < t_max < 1 (u = 0 is data, u = 1 pure "
                     f"noise), got t_min={t_min!r}, t_max={t_max!r}")
  grid = _grid(grid, num_timesteps, t_min, t_max)
  path = _Path(alpha=lambda u: 1 - u, sigma=lambda u: u,
               time_from_logsnr=lambda logsnr: jax.nn.sigmoid(-0.5 * logsnr))
  return _wrap(velocity_fn, path, prediction, grid, name="flow_matching", time_scale=time_scale)


# -- the one conversion every continuous form shares -----------------------------------------------

def _wrap(model_fn: ModelFn, path: _Path, prediction: str, grid: np.ndarray, *, name: str,
          time_scale: float = 1.0) -> VPModel:
  """(eps_fn, schedule, model_time) of a model on `path`, its Schedule on `grid` [T]."""
  logsnrs = _grid_logsnrs(path.alpha, path.sigma, grid)
  if not np.all(np.isfinite(logsnrs)):
    bad = int(np.flatnonzero(~np.isfinite(logsnrs))[0])
    raise ValueError(f"{name}: the log-SNR at grid[{bad}] = u = {float(grid[bad])!r} is "
                     f"{float(logsnrs[bad])!r}; choose a grid whose noise level is strictly "
                     "between 0 and pure noise (t_min > 0 for a path with sigma(0) = 0)")
  _warn_if_float32_differs(path, grid, logsnrs, name=name)
  schedule = Schedule(name, 1.0 / (1.0 + np.exp(-logsnrs)))

  def model_time(t):
    return time_scale * path.time_from_logsnr(schedule.logsnr(t))

  def eps_fn(params, x, t, *cond):
    logsnr = schedule.logsnr(t)  # [B], exactly the sampler's noise level
    u = path.time_from_logsnr(logsnr)
    alpha, sigma = _path_scales(path, u, logsnr)
    d_alpha = d_sigma = None
    if prediction == "velocity":
      d_alpha = jax.jvp(path.alpha, (u,), (jnp.ones_like(u),))[1]
      d_sigma = jax.jvp(path.sigma, (u,), (jnp.ones_like(u),))[1]
    x_u = x * _per_example(jnp.sqrt(alpha**2 + sigma**2), x)
    out = model_fn(params, x_u, time_scale * u, *cond)
    return _to_eps(prediction, out, x_u=x_u, alpha=alpha, sigma=sigma, logsnr=logsnr,
                   d_alpha=d_alpha, d_sigma=d_sigma)

  return VPModel(eps_fn, schedule, model_time)


def _grid_logsnrs(alpha_fn: Callable[[jax.Array], jax.Array],
                  sigma_fn: Callable[[jax.Array], jax.Array], grid: np.ndarray) -> np.ndarray:
  """[T] float64 log-SNR 2 log(alpha / sigma) of a path at the model times `grid` [T], the
  path's functions evaluated in float64: the schedule's ends then keep the digits that float32
  loses where alpha or sigma is computed as sqrt(1 - x) of an x near 1."""
  with jax.enable_x64(True):
    u = jnp.asarray(np.asarray(grid, np.float64))
    return np.asarray(_logsnr(alpha_fn(u), sigma_fn(u)), np.float64)


def _warn_if_float32_differs(path: _Path, grid: np.ndarray, logsnrs: np.ndarray, *,
                             name: str) -> None:
  """Logs a warning where the path's functions, evaluated in float32 as the sampler runs them,
  miss the float64 log-SNR by more than 1e-3: the model would then receive a time off from the
  noise level the sampler assumes."""
  u = jnp.asarray(grid, jnp.float32)
  float32 = np.asarray(_logsnr(path.alpha(u), path.sigma(u)), np.float64)
  error = np.abs(float32 - logsnrs)
  if np.nanmax(error) > 1e-3:
    i = int(np.nanargmax(error))
    logging.warning(
        "%s: in float32 the path's log-SNR at u = %r is %.6g, in float64 %.6g: the model time "
        "found for a noise level near it is off. Compute alpha and sigma without subtracting "
        "nearly equal numbers (e.g. sigma = sqrt(-expm1(-integral of beta)) rather than "
        "sqrt(1 - alpha^2)), or pass time_from_logsnr.", name, float(grid[i]), float32[i],
        logsnrs[i])


def _path_scales(path: _Path, u: jax.Array, logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(alpha(u), sigma(u)) [B]: the larger of the two from the path's function, the smaller from
  it and the sampler's log-SNR (alpha / sigma = e^{logsnr / 2} exactly). The smaller one is where
  a path function would cancel (sigma = sqrt(1 - alpha^2) where sigma << alpha; 1 - u near
  u = 1); the larger one has all its digits."""
  alpha, sigma = path.alpha(u), path.sigma(u)
  ratio = jnp.exp(-0.5 * jnp.abs(logsnr))  # smaller / larger
  cleaner = logsnr >= 0
  return jnp.where(cleaner, alpha, sigma * ratio), jnp.where(cleaner, alpha * ratio, sigma)


def _to_eps(prediction, out, *, x_u, alpha, sigma, logsnr, d_alpha, d_sigma):
  """eps [B, ...] from the model's prediction `out` at x_u = alpha x0 + sigma eps ([B] each)."""
  if prediction == "eps":
    return out
  alpha, sigma = _per_example(alpha, x_u), _per_example(sigma, x_u)
  if prediction == "x0":
    return (x_u - alpha * out) / sigma
  if prediction == "score":  # grad log N(x_u; alpha x0, sigma^2) = -eps / sigma
    return -sigma * out
  if prediction == "v":  # in VP units: x = x_u / r, eps = s x + a v (ddss_jax.samplers.diffusion)
    return diffusion.eps_from_v(x_t=x_u / jnp.sqrt(alpha**2 + sigma**2), v=out, logsnr=logsnr)
  # velocity: solve x_u = alpha x0 + sigma eps, v = alpha' x0 + sigma' eps for eps.
  d_alpha, d_sigma = _per_example(d_alpha, x_u), _per_example(d_sigma, x_u)
  return (alpha * out - d_alpha * x_u) / (alpha * d_sigma - d_alpha * sigma)


def _logsnr(alpha: jax.Array, sigma: jax.Array) -> jax.Array:
  return 2.0 * (jnp.log(alpha) - jnp.log(sigma))


def _per_example(values: jax.Array, like: jax.Array) -> jax.Array:
  """[B] -> [B, 1, ...] broadcasting against like [B, ...] (scalars pass through)."""
  values = jnp.asarray(values, like.dtype)
  return values.reshape(values.shape + (1,) * (like.ndim - values.ndim)) if values.ndim else values


def _inverse(logsnr_of: Callable[[jax.Array], jax.Array], low: float, high: float
             ) -> Callable[[jax.Array], jax.Array]:
  """logsnr [B] -> u [B] in [low, high] with logsnr_of(u) = logsnr (logsnr_of falling in u), by
  bisection; its derivative is the implicit function's, 1 / logsnr_of'(u)."""

  @jax.custom_jvp
  def inverse(logsnr):
    def halve(_, bounds):
      lo, hi = bounds
      mid = 0.5 * (lo + hi)
      cleaner = logsnr_of(mid) > logsnr  # mid is less noisy than wanted: go up
      return jnp.where(cleaner, mid, lo), jnp.where(cleaner, hi, mid)

    bounds = (jnp.full_like(logsnr, low), jnp.full_like(logsnr, high))
    lo, hi = jax.lax.fori_loop(0, BISECTION_STEPS, halve, bounds)
    return 0.5 * (lo + hi)

  @inverse.defjvp
  def inverse_jvp(primals, tangents):
    u = inverse(primals[0])
    slope = jax.jvp(logsnr_of, (u,), (jnp.ones_like(u),))[1]
    return u, tangents[0] / slope

  return inverse


def _grid(grid, num_timesteps, t_min, t_max) -> np.ndarray:
  """[T] float64 strictly increasing model times."""
  if grid is None:
    _check_num_timesteps(num_timesteps)
    if not t_min < t_max:
      raise ValueError(f"t_min must be below t_max, got t_min={t_min!r}, t_max={t_max!r}")
    return np.linspace(t_min, t_max, num_timesteps)
  grid = np.asarray(grid, np.float64)
  if grid.ndim != 1 or grid.shape[0] < 2 or not np.all(np.isfinite(grid)):
    raise ValueError(f"grid must be a 1-D array of T >= 2 finite model times, got shape "
                     f"{grid.shape}")
  falling = np.flatnonzero(np.diff(grid) <= 0)
  if falling.size:
    i = int(falling[0]) + 1
    raise ValueError(f"grid must increase (least noisy first): grid[{i}] = {float(grid[i])!r} "
                     f"<= grid[{i - 1}] = {float(grid[i - 1])!r}")
  return grid


def _check_num_timesteps(num_timesteps) -> None:
  if (isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer))
      or num_timesteps < 2):
    raise ValueError(f"num_timesteps must be an integer >= 2, got {num_timesteps!r}")


def _check_prediction(prediction: str, allowed: tuple[str, ...] = PREDICTIONS) -> None:
  if prediction not in allowed:
    raise ValueError(f"unknown prediction {prediction!r}; valid choices here: {list(allowed)}")
