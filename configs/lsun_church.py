"""DDSS for the public DDPM LSUN church model (Ho et al. 2020, google/ddpm-ema-church-256), KID on
FID Inception pool3 features, evaluated by FID / IS / KID on 50000 samples against 50000 training
images centre-cropped and resized to the model's 256x256.

Run (the checkpoint is fetched by hub id, as configs/cifar10.py says; the LSUN data needs a
manual tfds build first, docs/realscale.md):
  python -m ddss_jax.main --config=configs/lsun_church.py
Hardware: one GPU with 80 GB (an H100) or a TPU slice; the 256px UNet has 114 M parameters.
Compare with: the paper's LSUN church numbers, GGDM +PRED +TIME FID 11.6 at K=10 and 4.82 at
K=20 against 51.1 and 14.9 for the strongest DDPM/DDIM baseline (docs/paper_results.md). The
paper ran its own 128x128 model; for it set image_size=128 and point checkpoint at a 128px folder.
With the public 256px model, compare the learned/baseline ratio, not the absolute FID.
"""

from ddss_jax.configs import cifar10


def get_config():
  config = cifar10.get_config()  # the same schedule (linear, T = 1000), sampler and K = 10
  config.train.num_train_steps = 2000
  config.train.batch_size = 32
  config.train.warmup_steps = 100
  # 256px: a bank of 2000 images (1.6 GB in float32 while their features are computed), and a
  # smaller validation: the start selection alone samples validation_samples x K x 12 calls.
  config.loss.kid_bank_size = 2000
  config.train.validate_every_steps = 250
  config.train.validation_size = 500
  config.train.validation_samples = 500
  config.train.log_every_steps = 25
  config.train.checkpoint_every_steps = 100
  config.eval.batch_size = 100
  config.pretrained.checkpoint = "google/ddpm-ema-church-256"  # sha256 not pinned, as cifar10's
  config.pretrained.dataset = "lsun_church"
  config.pretrained.image_size = 256
  config.pretrained.feature_batch_size = 100
  return config
