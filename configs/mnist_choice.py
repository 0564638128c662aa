"""configs/mnist.py learned three times and chosen on the validation split: as configured
(learning rate 5e-3, the start selected among the noise-free fixed samplers), at learning rate
1e-3, and from DDIM on the linear stride; the lowest mean validation FID over four draws of 500
samples is kept and evaluated on the held-out digits.

The runs are the ablation's `all_noise_free`, `all_noise_free_lr1e-3` and `all_ddim_linear`, and
the rule the one experiments/rate_and_start_choice/run.py measured on their committed files: no
learning rate and no start was best at every K, while the mean of the draws picked a run that
beat the best fixed sampler at every K there (docs/results.md, "Reading"). It
learns three times, so it is opt-in: configs/mnist.py's main job stays within 15 minutes.

Run: python -m ddss_jax.main --config=configs/mnist_choice.py --workdir=/tmp/ddss_mnist_choice
  (--config.sampler.num_steps=K for another K).
Hardware: a laptop CPU (2 cores); about three times configs/mnist.py's time. Expected:
README.md, "Results".
"""

from ddss_jax.configs import mnist


def get_config():
  config = mnist.get_config()
  config.choice.among = ("train.learning_rate=1e-3",
                         "sampler.start=configured sampler.stride=linear")
  config.choice.draws = 4
  return config
