"""ddss_jax: Differentiable Diffusion Sampler Search (Watson et al., ICLR 2022) in JAX/Flax."""

__version__ = "0.1.0"
