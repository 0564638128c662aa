"""Noise schedules of variance-preserving diffusion models.

A discrete model with T training steps defines alpha_bar[i] for integer i = 0..T-1
(Ho et al. 2020). Learned samplers need alpha_bar at *non-integer* times, so a
`Schedule` interpolates linearly in log-SNR, logsnr = log(alpha_bar / (1 - alpha_bar)),
which is smooth and monotone and therefore keeps time differentiable.

Conventions (docs/method.md, section 1): x_t = a(t) x_0 + s(t) eps with
a(t)^2 = alpha_bar(t) = sigmoid(logsnr(t)) and s(t)^2 = 1 - alpha_bar(t) = sigmoid(-logsnr(t)).
Times are in the model's own units, 0..T-1, and are clamped to that range.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
  """A discrete VP schedule with float-time access.

  Attributes:
    name: "linear", "cosine" or another label (for messages and plots).
    alpha_bars: [T] float64 NumPy array, alpha_bar at the integer times 0..T-1: strictly
      decreasing inside (0, 1), T >= 2, checked when the Schedule is built (every schedule,
      named, read from a file or built from a continuous model, comes through here).
  """
  name: str
  alpha_bars: np.ndarray

  def __post_init__(self):
    alpha_bars = np.asarray(self.alpha_bars, np.float64)
    object.__setattr__(self, "alpha_bars", alpha_bars)
    problem = _alpha_bars_problem(alpha_bars)
    if problem:
      raise ValueError(f"schedule {self.name!r}: {problem}; alpha_bar must be strictly "
                       "decreasing inside (0, 1) (alpha_bar[0] < 1 is the least noisy time)")

  @property
  def num_timesteps(self) -> int:
    return int(self.alpha_bars.shape[0])

  @property
  def logsnrs(self) -> np.ndarray:
    """[T] float64 log-SNR at the integer times."""
    return np.log(self.alpha_bars) - np.log1p(-self.alpha_bars)

  def logsnr(self, t: jax.Array) -> jax.Array:
    """log-SNR at float times t (any shape), linear interpolation between integers."""
    t = jnp.asarray(t, jnp.float32)
    grid = jnp.arange(self.num_timesteps, dtype=jnp.float32)
    return jnp.interp(t, grid, jnp.asarray(self.logsnrs, jnp.float32))

  def alpha_bar(self, t: jax.Array) -> jax.Array:
    """alpha_bar at float times t (any shape)."""
    return jax.nn.sigmoid(self.logsnr(t))

  def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a(t), s(t)) = (sqrt(alpha_bar), sqrt(1 - alpha_bar)) at float times t."""
    logsnr = self.logsnr(t)
    return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def linear_beta(num_timesteps: int = 1000, beta_start: float = 1e-4,
                beta_end: float = 0.02) -> Schedule:
  """Ho et al. (2020): beta linear in [beta_start, beta_end], alpha_bar = cumprod(1 - beta)."""
  _check_num_timesteps(num_timesteps)
  if not 0.0 < beta_start <= beta_end < 1.0:
    raise ValueError(
        f"linear_beta needs 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, "
        f"beta_end={beta_end}")
  betas = np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
  return Schedule("linear", np.cumprod(1.0 - betas))


def cosine(num_timesteps: int = 1000, offset: float = 0.008,
           max_beta: float = 0.999) -> Schedule:
  """Nichol & Dhariwal (2021): alpha_bar from a squared cosine, betas clipped at max_beta.

  As in improved-diffusion: beta_i = min(1 - f(i + 1) / f(i), max_beta) with
  f(u) = cos(((u / T) + offset) / (1 + offset) * pi / 2)^2, alpha_bar = cumprod(1 - beta).
  """
  _check_num_timesteps(num_timesteps)
  u = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
  f = np.cos((u + offset) / (1.0 + offset) * math.pi / 2) ** 2
  betas = np.minimum(1.0 - f[1:] / f[:-1], max_beta)
  return Schedule("cosine", np.cumprod(1.0 - betas))


SCHEDULES = {"linear": linear_beta, "cosine": cosine}


def make(name: str, num_timesteps: int = 1000) -> Schedule:
  """Builds a schedule by name ("linear" or "cosine") with its published defaults."""
  if name not in SCHEDULES:
    raise ValueError(f"unknown schedule {name!r}; valid choices: {sorted(SCHEDULES)}")
  return SCHEDULES[name](num_timesteps)


def _alpha_bars_problem(alpha_bars: np.ndarray) -> str | None:
  """What is wrong with a [T] alpha_bar table, naming the first bad index and value; else None."""
  if alpha_bars.ndim != 1 or alpha_bars.shape[0] < 2:
    return f"alpha_bars must be a 1-D array of T >= 2 values, got shape {alpha_bars.shape}"
  outside = np.flatnonzero(~((alpha_bars > 0) & (alpha_bars < 1)))  # NaN fails both
  if outside.size:
    i = int(outside[0])
    return f"alpha_bar[{i}] = {float(alpha_bars[i])!r} is not inside (0, 1)"
  rising = np.flatnonzero(np.diff(alpha_bars) >= 0)
  if rising.size:
    i = int(rising[0]) + 1
    return (f"alpha_bar[{i}] = {float(alpha_bars[i])!r} is not below alpha_bar[{i - 1}] = "
            f"{float(alpha_bars[i - 1])!r}")
  return None


def _check_num_timesteps(num_timesteps: int) -> None:
  if not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 2:
    raise ValueError(f"num_timesteps must be an integer >= 2, got {num_timesteps!r}")
