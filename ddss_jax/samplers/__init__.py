"""The sampler maths: everything a K-step sampler is, and nothing of learning or evaluation.

    schedules            the frozen model's noise schedule (linear-beta, cosine) at float t
    diffusion            eps / x0 / v conversions in log-SNR form, the forward process
    model_forms          models of other forms (x0, v, score, EDM, flow matching) as eps-models
    recurrence           the one recurrence every family runs: lax.scan, custom_vjp reverse pass
    solvers              DPM-Solver++(2M), UniPC and iPNDM as GGDM coefficients
    ddim                 DDIM, DDPM and VARS coefficients in log-SNR form
    times                the fixed strides' times and the +TIME parameterisation
    guidance             classifier-free guidance: the guided model form, per-step weights
    families             the families as coefficient maps onto the recurrence; make, save, load
    sampler_json         sampler.json: SamplerSpec, ModelInfo, reading and writing (NumPy only)
    numpy_reference      a NumPy float64 runner of any sampler.json (no JAX)
    diffusers_scheduler  a sampler.json as a diffusers scheduler (torch, diffusers)
    conv_layout          convolutions in the dimension order XLA:CPU runs fast inside loops

The families' API is also here, as `ddss_jax.samplers.make(...)`: the names in __all__, from
`families`, loaded on first use so that the NumPy-only modules import no JAX.
"""

import importlib

__all__ = ["FAMILIES", "FIXED_FAMILIES", "STRIDES", "MIN_TIME_GAP", "Params", "EpsFn", "Sampler",
           "make", "save", "load", "to_spec", "to_json", "from_spec", "stride_timesteps"]


def __getattr__(name):
  if name in __all__:
    return getattr(importlib.import_module("ddss_jax.samplers.families"), name)
  raise AttributeError(f"module 'ddss_jax.samplers' has no attribute {name!r}")
