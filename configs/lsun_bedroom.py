"""DDSS for the public DDPM LSUN bedroom model (Ho et al. 2020, google/ddpm-ema-bedroom-256), KID
on FID Inception pool3 features, evaluated by FID / IS / KID on 50000 samples against 50000 training
images centre-cropped and resized to the model's 256x256.

Run:
  python -m ddss_jax.main --config=configs/lsun_bedroom.py --workdir=/tmp/ddss_bedroom \
      --config.pretrained.checkpoint=/data/ddpm-ema-bedroom-256
Hardware: one GPU with 80 GB (an H100) or a TPU slice; the 256px UNet has 114 M parameters.
Compare with: the paper reports no LSUN bedroom number (../shared/PAPER_RESULTS.md); compare the
learned sampler with the DDIM baseline at the same K, and with DDIM at 2K, as its CIFAR-10 and
church results do (the learned sampler at K matched the best baseline at about 2K).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.problem = "pretrained"
  config.schedule.name = "linear"
  config.schedule.num_timesteps = 1000
  config.sampler.family = "ggdm+pred+time"
  config.sampler.num_steps = 10
  config.sampler.stride = "quadratic"
  config.baseline.family = "ddim"
  config.train.num_train_steps = 2000
  config.train.batch_size = 32
  config.train.learning_rate = 5e-3
  config.train.log_every_steps = 25
  config.train.checkpoint_every_steps = 100
  config.eval.num_samples = 50000
  config.eval.batch_size = 100
  config.eval.reference_steps = 0
  config.pretrained.dataset = "lsun_bedroom"
  config.pretrained.reference_num_examples = 50000
  config.pretrained.image_size = 256
  config.pretrained.feature_batch_size = 100
  return config
