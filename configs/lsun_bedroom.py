"""DDSS for the public DDPM LSUN bedroom model (Ho et al. 2020, google/ddpm-ema-bedroom-256), KID
on FID Inception pool3 features, evaluated by FID / IS / KID on 50000 samples against 50000 training
images centre-cropped and resized to the model's 256x256.

Run (as configs/lsun_church.py):
  python -m ddss_jax.main --config=configs/lsun_bedroom.py
Hardware: one GPU with 80 GB (an H100) or a TPU slice; the 256px UNet has 114 M parameters.
Compare with: the paper reports no LSUN bedroom number (docs/paper_results.md); compare the
learned sampler with the DDIM baseline at the same K, and with DDIM at 2K, as its CIFAR-10 and
church results do (the learned sampler at K matched the best baseline at about 2K).
"""

from ddss_jax.configs import lsun_church


def get_config():
  config = lsun_church.get_config()  # the same model architecture, schedule and budget
  config.pretrained.checkpoint = "google/ddpm-ema-bedroom-256"  # sha256 not pinned
  config.pretrained.dataset = "lsun_bedroom"
  return config
