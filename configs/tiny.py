"""A seconds-long smoke run of the whole pipeline (tests use it; numbers are meaningless).

Run: python -m ddss_jax.main --config=configs/tiny.py --workdir=/tmp/ddss_tiny
"""

from ddss_jax.configs import default


def get_config():
  config = default.get_config()
  config.sampler.num_steps = 3
  config.train.num_train_steps = 4
  config.train.batch_size = 16
  config.train.log_every_steps = 2
  config.train.checkpoint_every_steps = 2
  config.eval.num_samples = 64
  config.eval.batch_size = 32
  config.eval.reference_steps = 10
  config.toy2d.model_width = 16
  config.toy2d.model_depth = 1
  config.toy2d.model_train_steps = 20
  config.toy2d.model_batch_size = 64
  config.toy2d.rff_dim = 16
  return config
