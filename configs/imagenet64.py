"""DDSS for an ImageNet 64x64 diffusion model, KID on FID Inception pool3 features, evaluated by
FID / IS / KID on 50000 samples against 50000 training images.

Run:
  python -m ddss_jax.main --config=configs/imagenet64.py \
      --config.pretrained.checkpoint=/data/my-imagenet64-unet
Hardware: one GPU with 80 GB (an H100) or a TPU slice.
Checkpoint: there is no public diffusers UNet2DModel for ImageNet 64x64 with the layouts this port
reads, so bring your own diffusers folder (config.json, weights, scheduler_config.json; epsilon,
sample or v prediction; out_channels == in_channels, i.e. no learned variance). The schedule
below is the cosine one of Nichol & Dhariwal, whose ImageNet 64x64 model the paper used; set it
to what your scheduler_config.json says (main refuses a mismatch).
Compare with: the paper's ImageNet 64x64 table, GGDM +PRED +TIME at K=10: FID 37.32, IS 14.76;
DDIM (linear stride) at K=10: FID 40.70, IS 12.23 (docs/paper_results.md); only orderings
and ratios transfer to another base model.
"""

from ddss_jax.configs import cifar10


def get_config():
  config = cifar10.get_config()
  config.schedule.name = "cosine"
  config.sampler.stride = "linear"  # the stronger fixed stride on ImageNet 64 in the paper
  config.train.batch_size = 64
  config.eval.batch_size = 250
  config.pretrained.checkpoint = None  # yours: a hub id or a folder (see above)
  config.pretrained.dataset = "imagenet64"
  config.pretrained.image_size = 64
  return config
