"""Training of the base diffusion model (eps-prediction, Ho et al. 2020), kept frozen afterwards.

DDSS assumes a pre-trained model; where none can be downloaded the project trains its own with
these functions: the simple loss E_{t, eps} |eps_theta(x_t, t) - eps|^2 with t uniform on the
integer times, Adam, and an exponential moving average (EMA) of the weights for sampling. A
class-conditional model (apply_fn(params, x, t, labels)) learns its unconditional branch too:
each label is replaced by the null label with probability `label_dropout` (Ho and Salimans 2022),
which is what classifier-free guidance calls it with (ddss_jax.samplers.guidance).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from absl import logging

from ddss_jax.samplers.diffusion import diffuse
from ddss_jax.samplers.schedules import Schedule
from ddss_jax.util import logs

ApplyFn = Callable[..., jax.Array]   # (params, x, t) or, conditional, (params, x, t, labels)
Batch = tuple   # (x0 [B, ...],) or, conditional, (x0 [B, ...], labels [B] int)


@dataclasses.dataclass(frozen=True)
class LabelDropout:
  """Conditional training: labels replaced by `null_label` with probability `rate`."""
  null_label: int
  rate: float = 0.1


@flax.struct.dataclass
class DenoiserState:
  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: optax.OptState


def denoising_loss(apply_fn: ApplyFn, params: Any, x0: jax.Array, key: jax.Array, *,
                   schedule: Schedule, labels: jax.Array | None = None,
                   dropout: LabelDropout | None = None) -> jax.Array:
  """Mean |eps_pred - eps|^2 over x0 [B, ...], t ~ U{0..T-1}, eps ~ N(0, I); with labels [B],
  the model is called with them, each dropped to the null label with dropout.rate."""
  key_t, key_eps = jax.random.split(key)
  t = jax.random.randint(key_t, x0.shape[:1], 0, schedule.num_timesteps).astype(jnp.float32)
  eps = jax.random.normal(key_eps, x0.shape, x0.dtype)
  x_t = diffuse(x0=x0, eps=eps, logsnr=schedule.logsnr(t))
  if labels is None:
    return jnp.mean((apply_fn(params, x_t, t) - eps) ** 2)
  if dropout is not None:
    dropped = jax.random.bernoulli(jax.random.fold_in(key, 2), dropout.rate, labels.shape)
    labels = jnp.where(dropped, dropout.null_label, labels)
  return jnp.mean((apply_fn(params, x_t, t, labels) - eps) ** 2)


def create_denoiser_state(params: Any, optimizer: optax.GradientTransformation) -> DenoiserState:
  # Copies: the step donates its state, which must neither delete the caller's arrays nor hand
  # the same buffer over twice (params and EMA).
  copy = lambda tree: jax.tree.map(jnp.copy, tree)
  return DenoiserState(step=jnp.zeros((), jnp.int32), params=copy(params),
                       ema_params=copy(params), opt_state=optimizer.init(params))


def make_denoise_step(apply_fn: ApplyFn, schedule: Schedule,
                      optimizer: optax.GradientTransformation, *, ema_decay: float,
                      dropout: LabelDropout | None = None):
  """Returns a jitted step(state, batch, base_key) -> (state, loss); batch is (x0 [B, ...],)
  or (x0, labels [B])."""

  def step(state: DenoiserState, batch: Batch, base_key: jax.Array):
    key = jax.random.fold_in(base_key, state.step)
    x0, *labels = batch
    loss, grads = jax.value_and_grad(
        lambda p: denoising_loss(apply_fn, p, x0, key, schedule=schedule,
                                 labels=labels[0] if labels else None, dropout=dropout)
    )(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = optax.incremental_update(params, state.ema_params, 1.0 - ema_decay)
    return state.replace(step=state.step + 1, params=params, ema_params=ema,
                         opt_state=opt_state), loss

  return jax.jit(step, donate_argnums=(0,))


def train_denoiser(apply_fn: ApplyFn, params: Any, batch_fn: Callable[[int], Any], *,
                   schedule: Schedule, num_steps: int, learning_rate: float,
                   ema_decay: float = 0.999, warmup_steps: int = 0,
                   grad_clip: float | None = None, seed: int = 0,
                   log_every: int = 500, checkpoint_dir: str | None = None,
                   checkpoint_every: int = 1000, stop_after: int | None = None,
                   dropout: LabelDropout | None = None,
                   lr_scales: dict[str, float] | None = None) -> Any:
  """Trains eps-prediction for `num_steps` on batch_fn(step) -> x0 [B, ...] (or, for a
  conditional apply_fn, (x0, labels [B])); returns EMA params.

  Adam with linear warm-up then cosine decay to 10% of `learning_rate`, gradients clipped to
  global norm `grad_clip` (None: no clipping). With `checkpoint_dir`,
  the state is saved by orbax every `checkpoint_every` steps and a rerun resumes from the last
  one; batches and keys derive from the step, so a resumed run equals an uninterrupted one.
  `stop_after` ends this run after that step (checkpointed), the schedule still spanning
  `num_steps`: a later run may resume from it with other settings (batch size, num_steps).
  `lr_scales` {top-level parameter name: factor} multiplies those parameters' learning rate (new
  layers of a fine-tuned model, e.g. a class embedding starting at zero), each with its own Adam.
  """
  if warmup_steps > 0:
    lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, num_steps,
                                            end_value=0.1 * learning_rate)
  else:
    lr = optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.1)
  optimizer = optax.adam(lr)
  if lr_scales:
    scaled = lambda factor: optax.adam(lambda step: factor * lr(step))
    optimizer = optax.multi_transform(
        {"base": optimizer, **{name: scaled(f) for name, f in lr_scales.items()}},
        lambda params: {name: name if name in lr_scales else "base" for name in params})
  if grad_clip is not None:
    optimizer = optax.chain(optax.clip_by_global_norm(grad_clip), optimizer)
  state = create_denoiser_state(params, optimizer)
  manager = None
  if checkpoint_dir is not None:
    manager = ocp.CheckpointManager(
        os.path.abspath(checkpoint_dir),
        # Synchronous saves: each checkpoint is complete before training goes on.
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                             enable_async_checkpointing=False))
    if manager.latest_step() is not None:
      state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(state))
      logging.info("denoiser: resumed at step %d", int(state.step))
  step_fn = make_denoise_step(apply_fn, schedule, optimizer, ema_decay=ema_decay,
                              dropout=dropout)
  base_key = jax.random.PRNGKey(seed)
  clock = logs.StepClock(int(state.step))
  last_step = num_steps if stop_after is None else min(stop_after, num_steps)
  if clock.first_step < last_step:
    logging.info("denoiser step %d: compiling the training step; the first step includes it",
                 clock.first_step + 1)
  for step in range(clock.first_step, last_step):
    batch = batch_fn(step)
    state, loss = step_fn(state, batch if isinstance(batch, tuple) else (batch,), base_key)
    done = step + 1
    if done == clock.first_step + 1:
      jax.block_until_ready(loss)
      logging.info("denoiser step %d: compiled and ran in %.1f s", done, clock.first_done())
    if done % log_every == 0 or done == num_steps:
      rate = clock.rate(done)
      logging.info("denoiser step %d/%d: loss %.4f, %.2f steps/s, about %.0f min left", done,
                   num_steps, float(loss), rate, logs.minutes_left(done, num_steps, rate))
    if manager is not None and (done % checkpoint_every == 0 or done == last_step):
      manager.save(done, args=ocp.args.StandardSave(state))
  if manager is not None:
    manager.wait_until_finished()
  return state.ema_params
