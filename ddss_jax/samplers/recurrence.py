"""The generalised sampler recurrence that every sampler family runs, with O(K |x|) gradients.

Every family in `ddss_jax.samplers` is this recurrence with particular coefficients
(docs/method.md, section 3). States are stored in execution order, `history[0] = x_T` (noise)
to `history[K] = x_0` (output). Step i = 0..K-1 calls the model once on history[i]:

    eps_i    = eps_fn(history[i], t_i)        (eps_fn(history[i], t_i, w_i) with guidance)
    x0_pred  = (history[i] - c_i eps_i) / b_i         then clipped to [-r, r] if clip_x0 = r
    history[i + 1] = mu_i x0_pred + sum_{j <= i} nu_{i,j} history[j] + sigma_i z_i

with z_i ~ N(0, I) drawn from fold_in(noise_key, i) and held fixed through the backward pass
(reparameterisation trick). Clipping (the public DDPM checkpoints' clip_sample) acts on the one
x0 prediction every family reads; the eps a step implies is then the clipped prediction's,
(x - b clip(x0_pred)) / c, as in Ho et al.'s sampler and diffusers' DDPMScheduler.

Gradient memory. A `lax.scan` whose carry holds the history saves that whole carry at every
step, even under `jax.checkpoint`: O(K^2 |x|). `gradient="adjoint"` (the default) avoids it
with an explicit reverse pass (`jax.custom_vjp`): the forward pass keeps the K + 1 states once;
walking back, step i recomputes its model call with `jax.vjp` (one call's activations alive at
a time) and the cotangent of state i is completed as
    g_i = d(step i)/d(history[i]) + sum_{i' >= i} nu_{i',i} g_{i'+1},
reading the already-final cotangents of the later states. Memory: 2 (K + 1) |x| plus one
model call. `gradient="checkpoint"` is plain autodiff of a scan of `jax.checkpoint`-ed steps,
kept as an independent reference and for the memory benchmark.

The model is frozen: no gradient flows into anything `eps_fn` closes over (its weights, the
conditioning). Gradients do flow into the model's inputs t_i, which the TIME families learn, and
w_i, the guidance weight of a guided model (ddss_jax.samplers.guidance), where it is learned.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ddss_jax.samplers import conv_layout

GRADIENTS = ("adjoint", "checkpoint")


class Coefficients(NamedTuple):
  """Per-step coefficients, step 0 first (the noisiest state). K = number of model calls."""
  t: jax.Array      # [K] model time inputs, in the model's time units
  b: jax.Array      # [K] x0_pred = (x - c eps) / b
  c: jax.Array      # [K]
  mu: jax.Array     # [K] weight of x0_pred
  nu: jax.Array     # [K, K] nu[i, j]: weight of history[j] in history[i + 1]; used for j <= i
  sigma: jax.Array  # [K] scale of the fresh noise z_i
  w: jax.Array | None = None  # [K] guidance weight the model is called with; None: no guidance


class _Options(NamedTuple):
  """Static (hashable) choices of one run."""
  stochastic: bool
  markov: bool
  unroll: int
  canonical_convs: bool
  clip_x0: float | None = None  # r > 0: x0_pred clipped to [-r, r]


def run(coeffs: Coefficients, eps_fn: Callable, x_T: jax.Array, noise_key: jax.Array, *,
        stochastic: bool, markov: bool = False, gradient: str = "adjoint",
        unroll: int = 1, canonical_convs: bool = True,
        clip_x0: float | None = None) -> jax.Array:
  """Runs the K-step recurrence from x_T [B, ...] and returns x_0 [B, ...].

  Args:
    coeffs: the per-step coefficients (differentiable).
    eps_fn: (x [B, ...], t [B]) -> eps [B, ...], or (x, t, w [B]) -> eps where coeffs.w is
      given (a guided model); treated as frozen.
    x_T: [B, ...] starting noise (differentiable).
    noise_key: PRNG key of the per-step noise; unused when `stochastic` is False.
    stochastic: whether sigma_i z_i is added (False skips drawing noise altogether).
    markov: promise that nu is diagonal (DDPM, DDIM, VARS): sampling then carries one state,
      O(|x|) memory and O(K |x|) work instead of O(K^2 |x|); off-diagonal nu is ignored.
    gradient: "adjoint" (O(K |x|) memory) or "checkpoint" (scan + remat, O(K^2 |x|)).
    unroll: steps per iteration of the compiled loops (lax.scan's unroll). Memory stays O(K |x|)
      and results are the same; larger values trade compile time for speed where a backend runs
      straight-line code faster than a loop.
    canonical_convs: run the model's convolutions, and those of its gradient in the reverse
      pass, in the canonical order XLA:CPU needs for its fast path inside loops
      (`ddss_jax.samplers.conv_layout`); exact, so results do not change. False leaves them as
      traced (what that costs: docs/performance.md).
    clip_x0: None or 0: no clipping; r > 0: every step's x0 prediction is clipped to [-r, r]
      before the update reads it. The adjoint gradient is that of the clipped recurrence: zero
      through an entry while it is clipped.
  """
  if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
    raise ValueError(f"unroll must be a positive integer, got {unroll!r}")
  opts = _Options(stochastic=stochastic, markov=markov, unroll=unroll,
                  canonical_convs=bool(canonical_convs), clip_x0=check_clip_x0(clip_x0))
  if gradient not in GRADIENTS:
    raise ValueError(f"unknown gradient {gradient!r}; valid choices: {list(GRADIENTS)}")
  nu = jnp.diag(jnp.diag(coeffs.nu)) if markov else jnp.tril(coeffs.nu)
  coeffs = coeffs._replace(nu=nu)
  if gradient == "checkpoint":
    return _forward(eps_fn, opts, coeffs, x_T, noise_key, (), remat=True)[0]
  inputs_example = (jnp.zeros(x_T.shape[:1], x_T.dtype),) * (1 if coeffs.w is None else 2)
  # closure_convert hoists what eps_fn closes over (model weights, the conditioning, possibly jit
  # tracers) into explicit arguments, as custom_vjp requires. stop_gradient makes the
  # frozen-model contract explicit, so the zero cotangents returned for them below are exact.
  converted, consts = jax.closure_convert(eps_fn, x_T, *inputs_example)
  consts = [jax.lax.stop_gradient(c) for c in consts]
  return _run_adjoint(converted, opts, coeffs, x_T, noise_key, *consts)


def trajectory(coeffs: Coefficients, eps_fn: Callable, x_T: jax.Array, noise_key: jax.Array, *,
               stochastic: bool, markov: bool = False,
               clip_x0: float | None = None) -> jax.Array:
  """[K + 1, B, ...] every state of the recurrence `run` computes, x_T first and x_0 last (not
  differentiated: for comparing samplers step by step)."""
  opts = _Options(stochastic=stochastic, markov=markov, unroll=1, canonical_convs=False,
                  clip_x0=check_clip_x0(clip_x0))
  return _forward(eps_fn, opts, coeffs, x_T, noise_key, (), keep_history=True)[1]


def check_clip_x0(clip_x0: float | None) -> float | None:
  """clip_x0 as the recurrence takes it: None (no clipping, for None or 0) or a float r > 0."""
  if clip_x0 is None:
    return None
  if (isinstance(clip_x0, bool) or not isinstance(clip_x0, (int, float, np.floating, np.integer))
      or not math.isfinite(clip_x0) or clip_x0 < 0):
    raise ValueError(f"clip_x0 must be None, 0 (no clipping) or a finite number r > 0 (x0 "
                     f"predictions clipped to [-r, r]), got {clip_x0!r}")
  return float(clip_x0) if clip_x0 > 0 else None


def _noise(noise_key, i, like):
  return jax.random.normal(jax.random.fold_in(noise_key, i), like.shape, like.dtype)


def _model_inputs(t, w, x):
  """The per-example model inputs of a step: (t [B],), or (t [B], w [B]) with guidance."""
  per_example = lambda v: jnp.full(x.shape[:1], v, x.dtype)
  return (per_example(t),) if w is None else (per_example(t), per_example(w))


def _step(eps_fn, opts, coeffs_i, i, x, past, noise_key):
  """x_{i+1} = mu x0_pred(x) + past + sigma z_i, where past = sum_j nu_ij x_j."""
  t, b, c, mu, _, sigma, w = coeffs_i
  eps = eps_fn(x, *_model_inputs(t, w, x))
  if opts.clip_x0 is None:  # mu (x - c eps) / b in this order: results stay bit-identical
    x_next = mu * (x - c * eps) / b + past
  else:
    x_next = mu * jnp.clip((x - c * eps) / b, -opts.clip_x0, opts.clip_x0) + past
  if opts.stochastic:
    x_next = x_next + sigma * _noise(noise_key, i, x)
  return x_next


def _forward(eps_fn, opts, coeffs, x_T, noise_key, consts, *, remat=False, keep_history=False):
  """(x_0 [B, ...], history [K + 1, B, ...] or None). `remat` checkpoints each step."""
  num_steps = coeffs.t.shape[0]
  model = lambda x, *inputs: eps_fn(x, *inputs, *consts)
  if opts.canonical_convs:
    model = conv_layout.canonical_convolutions(model)
  maybe_remat = jax.checkpoint if remat else (lambda f: f)
  xs = (jnp.arange(num_steps), tuple(coeffs))

  if opts.markov:
    @maybe_remat
    def markov_body(x, inputs):
      i, coeffs_i = inputs
      x_next = _step(model, opts, coeffs_i, i, x, coeffs_i[4] * x, noise_key)
      return x_next, (x_next if keep_history else None)

    # Only nu's diagonal [K] is read, so not even the K x K matrix is carried through the scan.
    diagonal = tuple(coeffs._replace(nu=jnp.diag(coeffs.nu)))
    x_0, states = jax.lax.scan(markov_body, x_T, (jnp.arange(num_steps), diagonal),
                               unroll=opts.unroll)
    return x_0, (jnp.concatenate([x_T[None], states]) if keep_history else None)

  @maybe_remat
  def body(history, inputs):
    i, coeffs_i = inputs
    # nu_row has K entries for history[0..K-1]; history[K] (the output) never feeds a step. A
    # zero weight for it avoids slicing the history, which would copy K |x| per step.
    past = jnp.tensordot(jnp.append(coeffs_i[4], 0.0), history, axes=1)
    x_next = _step(model, opts, coeffs_i, i, history[i], past, noise_key)
    return history.at[i + 1].set(x_next), None

  history = jnp.zeros((num_steps + 1,) + x_T.shape, x_T.dtype).at[0].set(x_T)
  history, _ = jax.lax.scan(body, history, xs, unroll=opts.unroll)
  return history[-1], history


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _run_adjoint(eps_fn, opts, coeffs, x_T, noise_key, *consts):
  return _forward(eps_fn, opts, coeffs, x_T, noise_key, consts)[0]


def _adjoint_fwd(eps_fn, opts, coeffs, x_T, noise_key, *consts):
  x_0, history = _forward(eps_fn, opts, coeffs, x_T, noise_key, consts, keep_history=True)
  return x_0, (coeffs, noise_key, consts, history)


def _adjoint_bwd(eps_fn, opts, residuals, g_out):
  # With opts.markov, nu is diagonal and this general reverse pass handles it exactly.
  coeffs, noise_key, consts, history = residuals
  num_steps = coeffs.t.shape[0]
  flat_history = history.reshape(num_steps + 1, -1)  # [K + 1, prod(B, ...)], a view, no copy

  def body(g_states, inputs):
    """Reverse step i: rows i + 1..K of g_states are final; makes row i final."""
    i, coeffs_i = inputs
    t, b, c, mu, _, sigma, w = coeffs_i
    g_next = g_states[i + 1]
    x = history[i]
    # Rematerialise this step's model call; only its activations are alive now.
    eps, g_x0_pred, g_x_model, *g_inputs = model_vjp(x, _model_inputs(t, w, x), mu * g_next,
                                                       b, c, *consts)
    x0_pred = (x - c * eps) / b
    x0_used = x0_pred
    if opts.clip_x0 is not None:
      x0_used = jnp.clip(x0_pred, -opts.clip_x0, opts.clip_x0)
    grads_i = Coefficients(
        t=jnp.sum(g_inputs[0]),
        b=-jnp.vdot(g_x0_pred, x0_pred) / b,
        c=-jnp.vdot(g_x0_pred, eps) / b,
        mu=jnp.vdot(g_next, x0_used),
        # d nu[i, j] = <g_next, history[j]>, kept for j <= i by the tril below.
        nu=(flat_history @ g_next.reshape(-1))[:-1],
        sigma=(jnp.vdot(g_next, _noise(noise_key, i, x)) if opts.stochastic
               else jnp.zeros_like(sigma)),
        w=None if w is None else jnp.sum(g_inputs[1]))
    # Later steps i' >= i read history[i] with weight nu[i', i]; their g_{i'+1} are final,
    # and rows <= i of g_states are still zero, so one contraction over all rows is exact.
    later = jnp.concatenate([jnp.zeros((1,), coeffs.nu.dtype), coeffs.nu[:, i]])
    g_i = g_x0_pred / b + g_x_model + jnp.tensordot(later, g_states, axes=1)
    return g_states.at[i].set(g_i), grads_i

  def model_vjp(x, inputs, g_x0_used, b, c, *consts):
    """(eps, the cotangent of the unclipped x0_pred, those of x and of each model input) from
    the cotangent of the x0 prediction the update used."""
    eps, vjp = jax.vjp(lambda x_, *inputs_: eps_fn(x_, *inputs_, *consts), x, *inputs)
    g_x0_pred = g_x0_used
    if opts.clip_x0 is not None:  # clip's derivative: 1 inside [-r, r], 0 where it clipped
      inside = jnp.abs((x - c * eps) / b) <= opts.clip_x0
      g_x0_pred = jnp.where(inside, g_x0_used, 0.0)
    return (eps, g_x0_pred, *vjp(-(c / b) * g_x0_pred))

  if opts.canonical_convs:
    model_vjp = conv_layout.canonical_convolutions(model_vjp)
  g_states = jnp.zeros_like(history).at[-1].set(g_out)
  g_states, grads = jax.lax.scan(body, g_states, (jnp.arange(num_steps), tuple(coeffs)),
                                 reverse=True, unroll=opts.unroll)
  grads = grads._replace(nu=jnp.tril(grads.nu))
  g_consts = [jnp.zeros_like(c) for c in consts]
  return (grads, g_states[0], None, *g_consts)


_run_adjoint.defvjp(_adjoint_fwd, _adjoint_bwd)
