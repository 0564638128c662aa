"""The MNIST pipeline at toy sizes, for tests: seconds, meaningless numbers. The optimisation's
levers are off, as tests/golden/mnist_tiny was recorded; their own tests turn them on.

Run: python -m ddss_jax.main --config=configs/mnist_tiny.py --workdir=/tmp/ddss_mnist_tiny
"""

from ddss_jax.configs import mnist


def get_config():
  config = mnist.get_config(levers=False)
  config.sampler.num_steps = 2
  config.train.num_train_steps = 2
  config.train.batch_size = 8
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 1
  config.eval.num_samples = 16
  config.eval.batch_size = 8
  config.mnist.kid_subsets = 4
  config.mnist.kid_subset_size = 8
  return config
