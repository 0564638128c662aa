"""The shipped MNIST UNet: its checksum, and that it makes digits the MNIST classifier
recognises."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddss_jax import samplers, weights
from ddss_jax.models import classifier, unet
from ddss_jax.samplers import schedules

pytestmark = pytest.mark.slow  # end-to-end runs, subprocesses or committed results

MIN_CONFIDENT_SHARE = 0.55  # measured 0.70 for these 100 samples (K = 20 DDIM); 0.45 before


def shipped_unet():
  # load_shipped verifies the sha256.
  return weights.load_shipped(unet.SHIPPED_NAME, unet.params_template(unet.MNIST_UNET))


def test_shipped_unet_matches_its_checksum_and_size():
  entry = weights.SHIPPED[unet.SHIPPED_NAME]
  path = f"{weights.WEIGHTS_DIR}/{entry.filename}"
  assert weights.sha256_of(path) == entry.sha256
  params = shipped_unet()
  assert sum(p.size for p in jax.tree.leaves(params)) < 500_000


def test_shipped_unet_makes_recognisable_digits_of_every_class():
  params = shipped_unet()
  model = unet.UNet2DModel(unet.MNIST_UNET)
  sampler = samplers.make("ddim", schedules.linear_beta(1000), 20)
  sample = jax.jit(lambda key: sampler.sample(
      {}, lambda x, t: model.apply({"params": params}, x, t), key, (100, 32, 32, 1)))
  images = sample(jax.random.PRNGKey(0))
  probs = jax.nn.softmax(classifier.logits_fn(classifier.load_shipped_classifier(), images))
  confident = np.asarray(jnp.max(probs, axis=-1) > 0.9)
  classes = np.asarray(jnp.argmax(probs, axis=-1))
  assert confident.mean() >= MIN_CONFIDENT_SHARE, confident.mean()
  assert len(set(classes[confident])) == 10
