"""ddss_jax: Differentiable Diffusion Sampler Search (Watson et al., ICLR 2022) in JAX/Flax.

The Python API is `ddss_jax.<name>` for the names in __all__; the sampler maths is the
subpackage ddss_jax.samplers (families, schedules, model forms, solvers, sampler.json, the NumPy
reference and the diffusers scheduler). Every name loads on first use, so that `import ddss_jax`
stays cheap. docs/architecture.md shows the tree.
"""

import importlib
import warnings

__version__ = "0.2.0"

# name -> the module that defines it
_API = {
    "make_problem": "ddss_jax.learn.problem",
    "learn_sampler": "ddss_jax.learn.ddss",
    "LearnedSampler": "ddss_jax.learn.ddss",
    "score_on_validation": "ddss_jax.learn.validation",
    "score_draws_on_validation": "ddss_jax.learn.validation",
    "choose_on_validation": "ddss_jax.learn.select",
    "ValidationChoice": "ddss_jax.learn.select",
    "evaluate_samplers": "ddss_jax.evaluation.held_out",
    "ModelInfo": "ddss_jax.samplers.sampler_json",
    "SamplerConfig": "ddss_jax.settings",
    "TrainConfig": "ddss_jax.settings",
    "LossConfig": "ddss_jax.settings",
    "EvalConfig": "ddss_jax.settings",
    "ScheduleConfig": "ddss_jax.settings",
    "ConfigError": "ddss_jax.util.errors",
    "MissingInputs": "ddss_jax.util.errors",
}
__all__ = list(_API)

# The modules of 0.1 that moved in 0.2: `from ddss_jax import <old>` still works, with a
# DeprecationWarning naming the new home, until 0.3.
MOVED = {
    "api": "ddss_jax",
    "experiment": "ddss_jax.run",
    "schedules": "ddss_jax.samplers.schedules",
    "diffusion": "ddss_jax.samplers.diffusion",
    "model_forms": "ddss_jax.samplers.model_forms",
    "recurrence": "ddss_jax.samplers.recurrence",
    "solvers": "ddss_jax.samplers.solvers",
    "sampler_file": "ddss_jax.samplers.sampler_json",
    "reference_sampler": "ddss_jax.samplers.numpy_reference",
    "diffusers_scheduler": "ddss_jax.samplers.diffusers_scheduler",
    "conv_layout": "ddss_jax.samplers.conv_layout",
    "sampling": "ddss_jax.evaluation.drawing",
    "evaluate": "ddss_jax.evaluation.held_out",
    "metrics": "ddss_jax.evaluation.metrics",
    "train": "ddss_jax.learn.loop",
    "teacher": "ddss_jax.learn.teacher",
    "files": "ddss_jax.util.files",
    "logs": "ddss_jax.util.logs",
    "parallel": "ddss_jax.util.parallel",
    "plots": "ddss_jax.util.plots",
    "hub": "ddss_jax.util.hub",
    "errors": "ddss_jax.util.errors",
    "toy_features": "ddss_jax.problems.toy_features",
    "denoiser_training": "ddss_jax.models.denoiser_training",
}


def __getattr__(name):
  if name in _API:
    return getattr(importlib.import_module(_API[name]), name)
  if name in MOVED:
    warnings.warn(f"ddss_jax.{name} moved to {MOVED[name]} in ddss_jax 0.2; the old name goes in "
                  "0.3", DeprecationWarning, stacklevel=2)
    return importlib.import_module(MOVED[name])
  raise AttributeError(f"module 'ddss_jax' has no attribute {name!r}")
