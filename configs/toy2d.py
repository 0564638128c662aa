"""DDSS end to end on 2-D data: GGDM+PRED+TIME at K = 4 against DDIM at K = 4.

Run: python -m ddss_jax.main --config=configs/toy2d.py --workdir=/tmp/ddss_toy2d
Hardware: a laptop CPU (most of the time goes to training the MLP eps-model; docs/performance.md).
Expected: the learned sampler's held-out MMD well below DDIM's (docs/results.md, "Reading": 2-D
data").
"""

from ddss_jax.configs import default


def get_config():
  config = default.get_config()
  config.problem = "toy2d"
  config.sampler.family = "ggdm+pred+time"
  config.sampler.num_steps = 4
  return config
