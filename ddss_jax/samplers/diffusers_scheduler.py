"""A learned sampler as a diffusers scheduler: DDSSScheduler runs a sampler.json in PyTorch.

Needs torch and diffusers (pip install -e '.[diffusers]'); nothing else in ddss_jax imports this
module, and it does not import JAX. It runs the file's per-step coefficients (every family alike,
the non-Markov history of GGDM and the multistep solvers included), as the NumPy reference
(ddss_jax.samplers.numpy_reference) does:

    x0_pred_i = (x_i - c_i eps_i) / b_i   (clipped to [-r, r] where clip_x0 = r > 0)
    x_{i+1}   = mu_i x0_pred_i + sum_{j <= i} nu[i, j] x_j + sigma_i z_i

    scheduler = DDSSScheduler.from_sampler_file("sampler.json")
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=scheduler)
    images = pipe(batch_size=16, num_inference_steps=scheduler.num_inference_steps).images

In a loop of one's own: set_timesteps(), then for t in scheduler.timesteps (the learned float
times, in the model's time units: pass the tensor t to the UNet as is, since UNet2DModel turns a
Python number into an integer), x = scheduler.step(unet(x, t).sample, t, x).prev_sample. A
network predicting x0 or v (the file's model.prediction) is converted to eps inside `step`. A
guided sampler's weights are `scheduler.guidance_weights` [K]: at step i the loop passes
eps_u + w_i (eps_c - eps_u) to `step` (docs/deploy.md shows the loop).
docs/deploy.md has the format and the measured agreement with ddss_jax.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ddss_jax.samplers import numpy_reference, sampler_json


@dataclasses.dataclass
class DDSSSchedulerOutput(BaseOutput):
  """prev_sample: x_{i+1} [B, C, H, W], the next state (the sample after the last step);
  pred_original_sample: this step's x0_pred_i (after the clip)."""
  prev_sample: torch.Tensor
  pred_original_sample: torch.Tensor


class DDSSScheduler(SchedulerMixin, ConfigMixin):
  """The K steps of a learned (or fixed) ddss_jax sampler, driven as a diffusers scheduler.

  Its config is the sampler file's JSON (`sampler`), so a pipeline's save_pretrained keeps it in
  scheduler_config.json and DDSSScheduler.from_pretrained reads it back. A stochastic sampler
  (some sigma_i != 0) draws z_i at every step, from `generator` (randn_tensor of the sample's
  shape) unless `step` is given `noise`.
  """
  order = 1

  @register_to_config
  def __init__(self, sampler: dict):
    spec = sampler_json.from_json(sampler, source="DDSSScheduler(sampler=...)")
    self.spec = spec
    self.init_noise_sigma = 1.0
    self.num_inference_steps = spec.num_steps
    self._coefficients = {name: np.asarray(value, np.float64)
                          for name, value in spec.coefficients.items()}
    self._noisy = numpy_reference.needs_noise(spec)
    self._alpha_bars = (None if spec.model.prediction == "eps"
                        else numpy_reference.alpha_bar(spec, self._coefficients["t"]))
    self.timesteps = torch.tensor(self._coefficients["t"], dtype=torch.float32)
    # A guided sampler's w_i (eps = eps_u + w_i (eps_c - eps_u)); None for an unguided one.
    self.guidance_weights = (None if "w" not in self._coefficients
                             else torch.tensor(self._coefficients["w"], dtype=torch.float32))
    self._history: list[torch.Tensor] = []

  @classmethod
  def from_sampler_file(cls, path: str) -> "DDSSScheduler":
    """The scheduler of a sampler.json (checked by ddss_jax.samplers.sampler_json.read, errors
    naming the file and the field)."""
    sampler_json.read(path)
    with open(path, encoding="utf-8") as f:
      return cls(sampler=json.load(f))

  def set_timesteps(self, num_inference_steps: int | None = None,
                    device: str | torch.device | None = None) -> None:
    """Starts a new sample: the K learned times on `device`. num_inference_steps must be K (or
    None): a learned sampler has one number of steps."""
    if num_inference_steps not in (None, self.spec.num_steps):
      raise ValueError(f"num_inference_steps={num_inference_steps!r}, but this sampler was "
                       f"learned for K={self.spec.num_steps} steps; pass "
                       f"num_inference_steps={self.spec.num_steps} (or None)")
    self.timesteps = torch.tensor(self._coefficients["t"], dtype=torch.float32, device=device)
    self._history = []

  def scale_model_input(self, sample: torch.Tensor,
                        timestep: float | torch.Tensor | None = None) -> torch.Tensor:
    """The identity: the model reads x_i unscaled (a VP model; init_noise_sigma = 1)."""
    del timestep
    return sample

  def step(self, model_output: torch.Tensor, timestep: float | torch.Tensor,
           sample: torch.Tensor, generator: torch.Generator | None = None,
           return_dict: bool = True, *, noise: torch.Tensor | None = None):
    """One step: x_{i+1} from the model's output at x_i = sample and every earlier state.

    Args:
      model_output: [B, C, H, W] the network's output at (sample, timestep), in the file's
        model.prediction ("eps", "x0" or "v").
      timestep: self.timesteps[i], i the number of steps taken since set_timesteps.
      sample: x_i [B, C, H, W] (x_0 is the starting noise).
      generator: draws z_i for a stochastic sampler where `noise` is not given.
      noise: z_i [B, C, H, W] explicitly (to reproduce another implementation's noise).
    """
    i = len(self._history)
    if i >= self.spec.num_steps:
      raise RuntimeError(f"the sampler's {self.spec.num_steps} steps are done; call "
                         "set_timesteps to draw another sample")
    expected = float(self._coefficients["t"][i])
    if abs(float(timestep) - expected) > 1e-3 * max(1.0, expected):
      raise ValueError(f"step {i} got timestep={float(timestep)!r}, expected {expected!r} "
                       "(scheduler.timesteps[i], in order, after set_timesteps)")
    if model_output.shape != sample.shape:
      raise ValueError(f"model_output has shape {tuple(model_output.shape)} but sample "
                       f"{tuple(sample.shape)}; learned-variance outputs are not supported")
    # The combination runs in float64 (float32 where the device has no float64), so that the
    # scheduler adds no rounding of its own to the model's: x0_pred divides by b, which is small
    # at the first, noisiest steps, and mu x0_pred + nu x then cancels.
    wide = torch.float32 if sample.device.type == "mps" else torch.float64
    x = sample.to(wide)
    self._history.append(x)
    coeffs = {name: value[i] for name, value in self._coefficients.items()}
    eps = self._eps(model_output.to(wide), x, i)
    x0_pred = (x - float(coeffs["c"]) * eps) / float(coeffs["b"])
    if self.spec.clip_x0:
      x0_pred = x0_pred.clamp(-self.spec.clip_x0, self.spec.clip_x0)
    prev = float(coeffs["mu"]) * x0_pred
    for j in range(i + 1):  # nu's lower triangle: the states so far, x_T first
      prev = prev + float(coeffs["nu"][j]) * self._history[j]
    if self._noisy:
      if noise is None:
        noise = randn_tensor(sample.shape, generator=generator, device=sample.device,
                             dtype=sample.dtype)
      prev = prev + float(coeffs["sigma"]) * noise.to(sample.device, wide)
    prev, x0_pred = prev.to(sample.dtype), x0_pred.to(sample.dtype)
    if not return_dict:
      return (prev,)
    return DDSSSchedulerOutput(prev_sample=prev, pred_original_sample=x0_pred)

  def _eps(self, model_output: torch.Tensor, sample: torch.Tensor, i: int) -> torch.Tensor:
    """eps from the network's output (the VP identities of docs/method.md, section 1)."""
    prediction = self.spec.model.prediction
    if prediction == "eps":
      return model_output
    a, s = float(np.sqrt(self._alpha_bars[i])), float(np.sqrt(1.0 - self._alpha_bars[i]))
    if prediction == "x0":
      return (sample - a * model_output) / s
    return s * sample + a * model_output

  def __len__(self) -> int:
    return self.spec.num_timesteps
