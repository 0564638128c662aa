"""ddss_jax: Differentiable Diffusion Sampler Search (Watson et al., ICLR 2022) in JAX/Flax.

The Python API (ddss_jax.api) is importable from here: make_problem, learn_sampler,
choose_on_validation, evaluate_samplers, LearnedSampler, ModelInfo, and the settings groups
SamplerConfig, TrainConfig, LossConfig, EvalConfig (ddss_jax.settings). They load on first use,
so that `import ddss_jax` stays cheap.
"""

__version__ = "0.1.0"

_API = ("make_problem", "learn_sampler", "choose_on_validation", "evaluate_samplers",
        "LearnedSampler", "ModelInfo")
_SETTINGS = ("SamplerConfig", "TrainConfig", "LossConfig", "EvalConfig", "ScheduleConfig")
__all__ = [*_API, *_SETTINGS]


def __getattr__(name):
  if name in _API:
    from ddss_jax import api  # pylint: disable=import-outside-toplevel
    return getattr(api, name)
  if name in _SETTINGS:
    from ddss_jax import settings  # pylint: disable=import-outside-toplevel
    return getattr(settings, name)
  raise AttributeError(f"module 'ddss_jax' has no attribute {name!r}")
