"""The guided embedded default: DDSS for the shipped class-conditional MNIST UNet sampled with
classifier-free guidance, the per-step guidance weights learned with the GGDM coefficients and
times, against DDIM with the same guidance at the same K on the 1000 held-out digits' labels.

The loss is KID between samples drawn for the labels of a real batch and those real digits, the
classifier's features joined with each label's one-hot (ddss_jax.learn.kid_loss). The levers are
configs/mnist.py's; the start is chosen among the guided noise-free fixed samplers on 500 carved
training digits.

Run: python -m ddss_jax.main --config=configs/mnist_guided.py --workdir=/tmp/ddss_mnist_guided
Hardware: a laptop CPU (2 cores), within 15 minutes. Expected: docs/guidance.md, "Measured".
"""

from ddss_jax.configs import mnist


def get_config():
  config = mnist.get_config()
  config.mnist.conditional = True
  config.sampler.guidance = "learned"
  config.sampler.guidance_weight = 2.0
  return config
