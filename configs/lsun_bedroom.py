"""DDSS for the public DDPM LSUN bedroom model (Ho et al. 2020, google/ddpm-ema-bedroom-256), KID
on FID Inception pool3 features, evaluated by FID / IS / KID on 50000 samples against 50000 training
images centre-cropped and resized to the model's 256x256.

Run:
  python -m ddss_jax.main --config=configs/lsun_bedroom.py --workdir=/tmp/ddss_bedroom \
      --config.pretrained.checkpoint=/data/ddpm-ema-bedroom-256
Hardware: one GPU with 80 GB (an H100) or a TPU slice; the 256px UNet has 114 M parameters.
Compare with: the paper reports no LSUN bedroom number (docs/paper_results.md); compare the
learned sampler with the DDIM baseline at the same K, and with DDIM at 2K, as its CIFAR-10 and
church results do (the learned sampler at K matched the best baseline at about 2K).
"""

from configs import lsun_church


def get_config():
  config = lsun_church.get_config()  # the same model architecture, schedule and budget
  config.pretrained.dataset = "lsun_bedroom"
  return config
