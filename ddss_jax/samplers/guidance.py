"""Classifier-free guidance: the guided model form and the per-step weights a sampler uses.

A conditional model takes a conditioning input per example, eps_fn(params, x [B, ...], t [B],
cond), cond any pytree of arrays with leading axis B (class labels, embeddings). Guided by
weight w it is

    eps = eps_u + w (eps_c - eps_u),    eps_c = eps_fn(.., cond), eps_u = eps_fn(.., null),

diffusers' convention: w = 1 is the conditional model alone, w = 0 the unconditional one. Ho and
Salimans (2022) write (1 + w') eps_c - w' eps_u, so w = 1 + w'; k-diffusion and EDM2 combine
denoisers, D_u + w (D_c - D_u), which is the same w (at one x, x0 is affine in eps).

A sampler made with a `Guidance` calls the guided model with a weight w_i at each step i:
  - fixed:    w_i = weight at every step;
  - interval: w_i = weight where the step's noise level sigma = s / a (EDM's sigma) lies in
              (low, high], and 1 (no guidance: the conditional model) elsewhere, as in
              Kynkaanniemi et al. (2024), "Applying guidance in a limited interval";
  - learned:  w_i is a parameter of the sampler, params["guidance"] [K], stored as is (no
              transform: any real weight is a valid sampler), initialised at the fixed or
              interval weights of the initial times, and optimised with the rest by DDSS.

    guided_eps = guidance.guided(model.eps_fn, null_cond=jnp.asarray(10))   # label 10: none
    sampler = samplers.make("ggdm+pred+time", model.schedule, 5,
                            guidance=guidance.Guidance(weight=3.0, learn=True))
    x_0 = sampler.sample(params, lambda x, t, cond, w: guided_eps(model_params, x, t, cond, w),
                         key, (B, 32, 32, 1), cond=labels)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from ddss_jax.samplers.schedules import Schedule

ConditionalEpsFn = Callable[..., jax.Array]   # (params, x, t, cond) -> eps


@dataclasses.dataclass(frozen=True)
class Guidance:
  """How a sampler guides a conditional model (see the module docstring).

  Attributes:
    weight: w of eps_u + w (eps_c - eps_u) (1: the conditional model alone).
    interval: None (every step), or (low, high): the weight applies where low < sigma <= high,
      sigma = s / a the step's noise level; 1 elsewhere. high may be math.inf.
    learn: whether the K weights are parameters of the sampler (params["guidance"]).
  """
  weight: float = 1.0
  interval: tuple[float, float] | None = None
  learn: bool = False

  def __post_init__(self):
    if (isinstance(self.weight, bool) or not isinstance(self.weight, (int, float))
        or not math.isfinite(self.weight)):
      raise ValueError(f"guidance weight must be a finite number (1: the conditional model "
                       f"alone, 0: the unconditional one), got {self.weight!r}")
    object.__setattr__(self, "weight", float(self.weight))
    if self.interval is not None:
      try:
        low, high = (float(v) for v in self.interval)
      except (TypeError, ValueError):
        raise ValueError(f"guidance interval must be None or (low, high), noise levels sigma = "
                         f"s / a with 0 <= low < high, got {self.interval!r}") from None
      if not (0.0 <= low < high) or math.isnan(high):
        raise ValueError(f"guidance interval must be None or (low, high), noise levels sigma = "
                         f"s / a with 0 <= low < high, got {self.interval!r}")
      object.__setattr__(self, "interval", (low, high))
    if not isinstance(self.learn, bool):
      raise ValueError(f"guidance learn must be True or False, got {self.learn!r}")

  def to_json(self) -> dict[str, Any]:
    """The sampler file's "guidance" object (math.inf as the string "inf")."""
    interval = None if self.interval is None else [
        "inf" if math.isinf(v) else v for v in self.interval]
    return {"weight": self.weight, "interval": interval, "learn": self.learn}

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> "Guidance":
    """The inverse of to_json; ValueError names what is wrong."""
    if not isinstance(data, dict) or set(data) != {"weight", "interval", "learn"}:
      raise ValueError(f"must be an object with the fields weight, interval, learn; got {data!r}")
    interval = data["interval"]
    if isinstance(interval, list):
      interval = tuple(math.inf if v == "inf" else v for v in interval)
    return cls(weight=data["weight"], interval=interval, learn=data["learn"])


def initial_weights(guidance: Guidance, *, schedule: Schedule, t: jax.Array) -> jax.Array:
  """[K] the weight of each step at times t [K]: guidance.weight, or inside its interval of
  sigma = s / a = exp(-logsnr / 2) that weight and 1 outside."""
  weight = jnp.full(t.shape, guidance.weight, jnp.float32)
  if guidance.interval is None:
    return weight
  low, high = guidance.interval
  sigma = jnp.exp(-0.5 * schedule.logsnr(t))
  return jnp.where((sigma > low) & (sigma <= high), weight, 1.0)


def guided(eps_fn: ConditionalEpsFn, *, null_cond: Any) -> Callable[..., jax.Array]:
  """The guided model (params, x [B, ...], t [B], cond, w [B]) -> eps_u + w (eps_c - eps_u).

  Both predictions come from one call of eps_fn on the batch of 2B: [x, x], [t, t],
  [cond, null], where null is `null_cond` (one example's unconditional input, a pytree like one
  row of cond: e.g. the label that means "no class") broadcast to cond's shape.
  """
  def guided_eps(params, x, t, cond, w):
    batch = x.shape[0]
    cond = jax.tree.map(jnp.asarray, cond)   # NumPy int64 labels become JAX's int32
    null = jax.tree.map(lambda n, c: jnp.broadcast_to(jnp.asarray(n, c.dtype), c.shape),
                        null_cond, cond)
    both = jax.tree.map(lambda c, n: jnp.concatenate([c, n]), cond, null)
    eps = eps_fn(params, jnp.concatenate([x, x]), jnp.concatenate([t, t]), both)
    eps_c, eps_u = eps[:batch], eps[batch:]
    return eps_u + w.reshape((-1,) + (1,) * (x.ndim - 1)) * (eps_c - eps_u)

  return guided_eps
