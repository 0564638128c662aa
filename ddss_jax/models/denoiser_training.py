"""Training of the base diffusion model (eps-prediction, Ho et al. 2020), kept frozen afterwards.

DDSS assumes a pre-trained model; where none can be downloaded the project trains its own with
these functions: the simple loss E_{t, eps} |eps_theta(x_t, t) - eps|^2 with t uniform on the
integer times, Adam, and an exponential moving average (EMA) of the weights for sampling.
"""

from __future__ import annotations

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

ApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


@flax.struct.dataclass
class DenoiserState:
  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: optax.OptState


def denoising_loss(apply_fn: ApplyFn, params: Any, x0: jax.Array, key: jax.Array, *,
                   schedule: Schedule) -> jax.Array:
  """Mean |eps_pred - eps|^2 over x0 [B, ...], t ~ U{0..T-1}, eps ~ N(0, I)."""
  key_t, key_eps = jax.random.split(key)
  t = jax.random.randint(key_t, x0.shape[:1], 0, schedule.num_timesteps).astype(jnp.float32)
  eps = jax.random.normal(key_eps, x0.shape, x0.dtype)
  x_t = diffuse(x0=x0, eps=eps, logsnr=schedule.logsnr(t))
  return jnp.mean((apply_fn(params, x_t, t) - eps) ** 2)


def create_denoiser_state(params: Any, optimizer: optax.GradientTransformation) -> DenoiserState:
  # Copies: the step donates its state, which must neither delete the caller's arrays nor hand
  # the same buffer over twice (params and EMA).
  copy = lambda tree: jax.tree.map(jnp.copy, tree)
  return DenoiserState(step=jnp.zeros((), jnp.int32), params=copy(params),
                       ema_params=copy(params), opt_state=optimizer.init(params))


def make_denoise_step(apply_fn: ApplyFn, schedule: Schedule,
                      optimizer: optax.GradientTransformation, *, ema_decay: float):
  """Returns a jitted step(state, x0 [B, ...], base_key) -> (state, loss)."""

  def step(state: DenoiserState, x0: jax.Array, base_key: jax.Array):
    key = jax.random.fold_in(base_key, state.step)
    loss, grads = jax.value_and_grad(
        lambda p: denoising_loss(apply_fn, p, x0, key, schedule=schedule))(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = optax.incremental_update(params, state.ema_params, 1.0 - ema_decay)
    return state.replace(step=state.step + 1, params=params, ema_params=ema,
                         opt_state=opt_state), loss

  return jax.jit(step, donate_argnums=(0,))


def train_denoiser(apply_fn: ApplyFn, params: Any, batch_fn: Callable[[int], jax.Array], *,
                   schedule: Schedule, num_steps: int, learning_rate: float,
                   ema_decay: float = 0.999, warmup_steps: int = 0,
                   grad_clip: float | None = None, seed: int = 0,
                   log_every: int = 500, checkpoint_dir: str | None = None,
                   checkpoint_every: int = 1000, stop_after: int | None = None) -> Any:
  """Trains eps-prediction for `num_steps` on batch_fn(step) -> x0 [B, ...]; returns EMA params.

  Adam with linear warm-up then cosine decay to 10% of `learning_rate`, gradients clipped to
  global norm `grad_clip` (None: no clipping). With `checkpoint_dir`,
  the state is saved by orbax every `checkpoint_every` steps and a rerun resumes from the last
  one; batches and keys derive from the step, so a resumed run equals an uninterrupted one.
  `stop_after` ends this run after that step (checkpointed), the schedule still spanning
  `num_steps`: a later run may resume from it with other settings (batch size, num_steps).
  """
  if warmup_steps > 0:
    lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, num_steps,
                                            end_value=0.1 * learning_rate)
  else:
    lr = optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.1)
  optimizer = optax.adam(lr)
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
  step_fn = make_denoise_step(apply_fn, schedule, optimizer, ema_decay=ema_decay)
  base_key = jax.random.PRNGKey(seed)
  clock = logs.StepClock(int(state.step))
  last_step = num_steps if stop_after is None else min(stop_after, num_steps)
  if clock.first_step < last_step:
    logging.info("denoiser step %d: compiling the training step; the first step includes it",
                 clock.first_step + 1)
  for step in range(clock.first_step, last_step):
    state, loss = step_fn(state, batch_fn(step), base_key)
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
