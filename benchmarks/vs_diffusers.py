"""ddss_jax against PyTorch on the same weights: DDIM sampling with the shipped MNIST UNet.

The shipped UNet is exported to a diffusers folder (ddss_jax.models.diffusers_io.save) and loaded
with diffusers' UNet2DModel.from_pretrained; diffusers' DDIMScheduler (eta = 0, "leading"
spacing = the linear stride, final alpha_bar = 1) runs the K steps in PyTorch, ddss_jax's "ddim"
sampler (linear stride) in JAX, from the same starting noise, at the same batch, in one process.
Reported: images per second of each, their ratio, and how far the two samples are apart.

Needs torch and diffusers (`pip install -e '.[parity]'`); used by benchmarks/suite.py.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ddss_jax import samplers
from ddss_jax.models import diffusers_io, unet


def missing() -> str | None:
  """None when torch and diffusers import, else what to install."""
  for name in ("torch", "diffusers"):
    if importlib.util.find_spec(name) is None:
      return f"{name} is not installed (pip install -e '.[parity]')"
  return None


def _interleaved_medians(fns, repeats: int) -> list[float]:
  """Median seconds of each function, timed in turn (a, b, a, b, ...) so that a slow phase of a
  shared machine hits both alike; each is called once first to warm up (JAX: already compiled;
  PyTorch: its allocator and oneDNN primitive caches)."""
  for fn in fns:
    fn()
  seconds = [[] for _ in fns]
  for _ in range(repeats):
    for fn, times in zip(fns, seconds):
      start = time.perf_counter()
      fn()
      times.append(time.perf_counter() - start)
  return [statistics.median(times) for times in seconds]


FAMILIES = ("ddim", "dpm-solver++2m", "unipc")


def _scheduler(family: str, num_timesteps: int):
  """diffusers' scheduler for a ddss_jax family on the linear stride ("leading" spacing), linear
  betas 1e-4..0.02, eps prediction, ending at alpha_bar = 1."""
  import diffusers  # pylint: disable=import-outside-toplevel
  common = dict(num_train_timesteps=num_timesteps, beta_schedule="linear", beta_start=1e-4,
                beta_end=0.02, timestep_spacing="leading", steps_offset=0,
                prediction_type="epsilon")
  if family == "ddim":
    return diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **common)
  if family == "dpm-solver++2m":  # second-order multistep, first order at the last step
    return diffusers.DPMSolverMultistepScheduler(
        algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
        lower_order_final=True, final_sigmas_type="zero", **common)
  if family == "unipc":  # data prediction, order 2, bh2, the corrector at every step
    return diffusers.UniPCMultistepScheduler(
        solver_order=2, predict_x0=True, solver_type="bh2", lower_order_final=True,
        disable_corrector=[], final_sigmas_type="zero", **common)
  raise ValueError(f"unknown family {family!r}; valid choices: {list(FAMILIES)}")


def compare(problem, *, batch_size: int, num_steps: int, repeats: int,
            threads: int | None = None, family: str = "ddim") -> dict[str, Any]:
  """K-step sampling throughput of ddss_jax over diffusers on the shipped MNIST UNet, for "ddim"
  (DDIMScheduler, eta = 0), "dpm-solver++2m" (DPMSolverMultistepScheduler) or "unipc"
  (UniPCMultistepScheduler)."""
  import torch  # pylint: disable=import-outside-toplevel
  from diffusers import UNet2DModel  # pylint: disable=import-outside-toplevel

  threads = threads or os.cpu_count()
  torch.set_num_threads(threads)
  device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
  schedule = problem.schedule
  with tempfile.TemporaryDirectory() as tmp:
    folder = os.path.join(tmp, "mnist_unet")
    diffusers_io.save(folder, unet.MNIST_UNET, problem.model_params)
    model = UNet2DModel.from_pretrained(folder).to(device).eval()
  scheduler = _scheduler(family, schedule.num_timesteps)
  sampler = samplers.make(family, schedule, num_steps, stride="linear")

  def reset():  # multistep schedulers keep state; their own spacings never reach t = 0
    if family == "ddim":
      scheduler.set_timesteps(num_steps)
    elif family == "dpm-solver++2m":
      scheduler.set_timesteps(timesteps=sampler.initial_timesteps.astype(int).tolist())
    else:  # UniPC takes no custom times: set ours and their sigmas (then sigma = 0 at the end)
      scheduler.set_timesteps(num_steps)
      times = sampler.initial_timesteps.astype(np.int64)
      abar = scheduler.alphas_cumprod.numpy().astype(np.float64)[times]
      scheduler.timesteps = torch.from_numpy(times)
      scheduler.sigmas = torch.from_numpy(
          np.append(np.sqrt((1 - abar) / abar), 0.0).astype(np.float32))

  reset()
  step_kwargs = {"eta": 0.0} if family == "ddim" else {}
  if list(scheduler.timesteps.numpy()) != list(sampler.initial_timesteps):
    raise AssertionError(f"diffusers' timesteps {scheduler.timesteps.tolist()} differ from "
                         f"ddss_jax's {sampler.initial_timesteps.tolist()}")

  shape = (batch_size,) + tuple(problem.example_shape)
  x_T = jax.random.normal(jax.random.PRNGKey(0), shape, jnp.float32)
  x_T_torch = torch.from_numpy(np.asarray(x_T).transpose(0, 3, 1, 2).copy()).to(device)

  def torch_sample():
    x = x_T_torch
    reset()
    with torch.inference_mode():
      for t in scheduler.timesteps:
        eps = model(x, t).sample
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    if device == "cuda":
      torch.cuda.synchronize()
    return x

  eps_fn = lambda x, t: problem.eps_apply(problem.model_params, x, t)
  jax_fn = jax.jit(lambda key, x_T: sampler.sample({}, eps_fn, key, shape, x_T=x_T))
  key = jax.random.PRNGKey(1)
  jax_fn = jax_fn.lower(key, x_T).compile()
  jax_sample = lambda: jax.block_until_ready(jax_fn(key, x_T))

  jax_s, torch_s = _interleaved_medians([jax_sample, torch_sample], repeats)
  ours = np.asarray(jax_sample())
  theirs = torch_sample().cpu().numpy().transpose(0, 2, 3, 1)
  return dict(family=family, k=num_steps, batch=batch_size, threads=threads, torch_device=device,
              jax_images_per_s=batch_size / jax_s, torch_images_per_s=batch_size / torch_s,
              ratio=torch_s / jax_s, max_abs_diff=float(np.abs(ours - theirs).max()),
              torch_version=torch.__version__)
