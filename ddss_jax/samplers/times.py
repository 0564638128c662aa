"""A sampler's K times: the fixed strides, and the +TIME families' parameterisation of learned ones.

Times are model time inputs in [0, T - 1], largest first (docs/method.md, sections 2 and 7).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ddss_jax.samplers.schedules import Schedule

STRIDES = ("linear", "quadratic", "logsnr")
MIN_TIME_GAP = 1e-6


def stride_timesteps(stride: str, schedule: Schedule, num_steps: int) -> np.ndarray:
  """[K] float64 times of a fixed stride, largest first (docs/method.md, section 2).

  linear: t_i = i * (T // K); quadratic: t_i = floor(linspace(0, sqrt(0.8 T), K)^2), as in the
  public DDIM code (with T = 1000 the quadratic stride repeats t = 0 from K = 30 on, as there);
  both integers. logsnr: K times from T - 1 to 0 equally spaced in log-SNR (DPM-Solver's
  "logSNR" steps on a discrete model), generally not integers.
  """
  if stride not in STRIDES:
    raise ValueError(f"unknown stride {stride!r}; valid choices: {list(STRIDES)}")
  num_timesteps = schedule.num_timesteps
  if stride == "linear":
    times = np.arange(num_steps) * (num_timesteps // num_steps)
  elif stride == "quadratic":
    times = np.floor(np.linspace(0.0, np.sqrt(0.8 * num_timesteps), num_steps) ** 2)
  else:  # invert the schedule's piecewise-linear log-SNR (decreasing in t)
    logsnrs = schedule.logsnrs
    targets = np.linspace(logsnrs[0], logsnrs[-1], num_steps)
    times = np.interp(targets, logsnrs[::-1], np.arange(num_timesteps)[::-1])
    times[0], times[-1] = 0.0, float(num_timesteps - 1)  # exact ends; K = 1 is [T - 1]
  return np.asarray(times, np.float64)[::-1].copy()


def time_logits(times: np.ndarray, num_timesteps: int) -> jax.Array:
  """[K + 1] logits whose softmax is the gaps of `times` (largest first) within [0, T - 1]."""
  ascending = np.sort(np.asarray(times, np.float64)) / (num_timesteps - 1)
  gaps = np.diff(np.concatenate([[0.0], ascending, [1.0]]))
  return jnp.asarray(np.log(np.maximum(gaps, MIN_TIME_GAP)), jnp.float32)


def decode_times(logits: jax.Array, num_timesteps: int) -> jax.Array:
  """[K] strictly decreasing times in (0, T - 1) from [K + 1] logits. Each time is summed from
  its nearer end, the gaps below it or 1 - the gaps above: 1 - cumsum would leave the times
  near T - 1 with the sum's rounding, K times float32's, where the log-SNR is steepest."""
  gaps = jax.nn.softmax(logits)
  below = jnp.cumsum(gaps)[:-1]
  above = jnp.cumsum(gaps[::-1])[::-1][1:]
  return (num_timesteps - 1) * jnp.where(below < 0.5, below, 1.0 - above)[::-1]
