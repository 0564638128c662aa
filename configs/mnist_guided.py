"""The guided embedded default: DDSS for the shipped class-conditional MNIST UNet sampled with
classifier-free guidance, the per-step guidance weights learned with the GGDM coefficients and
times, against DDIM with the same guidance at the same K on the 1000 held-out digits' labels.

The loss is KID within classes: the mean over the digits of the KID between the samples drawn
for a digit and real training digits of that class (ddss_jax.learn.kid_loss). The levers are
configs/mnist.py's, over 100 steps instead of 150; the start is chosen among the guided
noise-free fixed samplers on 500 carved training digits.

Run: python -m ddss_jax.main --config=configs/mnist_guided.py --workdir=/tmp/ddss_mnist_guided
Hardware: a laptop CPU (2 cores), within 15 minutes. Expected: docs/guidance.md, "Measured".
"""

from ddss_jax.configs import mnist


def get_config():
  config = mnist.get_config()
  config.mnist.conditional = True
  config.sampler.guidance = "learned"
  config.sampler.guidance_weight = 2.0
  # A guided step costs two model evaluations: 100 steps keep the run within 15 minutes.
  config.train.num_train_steps = 100
  return config
