"""The whole config schema, with every default. Other configs derive from it.

Run: python -m ddss_jax.main --config=configs/default.py --workdir=/tmp/ddss
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.problem = "toy2d"         # frozen model + data + features: "toy2d" or "mnist"

  # The frozen model's noise schedule: "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal).
  config.schedule = ml_collections.ConfigDict(dict(name="linear", num_timesteps=1000))

  # The sampler DDSS learns. family: ddpm, ddim, vars, ggdm, ggdm+pred, ggdm+time,
  # ggdm+pred+time. num_steps: K model calls. stride: linear or quadratic (initial times).
  # eta: the DDIM(eta) it starts from (0 = DDIM, 1 = DDPM). gradient: adjoint (O(K |x|)
  # memory) or checkpoint (scan + remat, O(K^2 |x|); a reference). unroll: model calls per
  # compiled loop iteration, 1 to K; same results, K compiles longer but runs convolution
  # gradients about 3x faster on CPU.
  config.sampler = ml_collections.ConfigDict(dict(
      family="ggdm+pred+time", num_steps=4, stride="quadratic", eta=0.0, gradient="adjoint",
      unroll=1))

  # The fixed sampler of the before/after table, run at the same K and stride: "ddim" (with
  # its eta) or "ddpm" (eta = 1 always; the eta here is then not used).
  config.baseline = ml_collections.ConfigDict(dict(family="ddim", eta=0.0))

  # DDSS optimisation: Adam on the sampler parameters, global-norm clipping (<= 0: off).
  # seed: every random stream of the run derives from it (fold_in per step), the frozen toy
  # model's training included. log_every_steps: metric lines in metrics.jsonl and the log.
  # checkpoint_every_steps: orbax checkpoints (the last step always saves one).
  config.train = ml_collections.ConfigDict(dict(
      num_train_steps=300, batch_size=256, learning_rate=5e-3, grad_clip=1.0, b1=0.9, b2=0.99,
      seed=0, log_every_steps=50, checkpoint_every_steps=100))

  # Held-out evaluation on fresh samples (a fixed seed, distinct from training's).
  # reference_steps: also evaluate many-step ancestral sampling (DDPM, linear stride) to show
  # the frozen model's own quality; 0 skips it.
  config.eval = ml_collections.ConfigDict(dict(
      num_samples=2000, batch_size=1000, seed=1234, reference_steps=1000))

  # The embedded image problem: the shipped MNIST UNet and MNIST classifier (their weights
  # paths, None for the files shipped in ddss_jax/weights/), KID mean and std over random
  # subsets (500 of the 1000 samples against 500 of the 1000 held-out digits each).
  config.mnist = ml_collections.ConfigDict(dict(
      unet_weights=ml_collections.config_dict.placeholder(str),
      classifier_weights=ml_collections.config_dict.placeholder(str),
      kid_subsets=100, kid_subset_size=500))

  # The 2-D problem: a ring of Gaussians, an MLP eps-model trained on it by pretrain.py (cached
  # in the workdir), and the KID features: "rff" (random Fourier) or "identity" (the points).
  config.toy2d = ml_collections.ConfigDict(dict(
      num_modes=8, radius=1.4, std=0.1,
      model_width=128, model_depth=3, model_train_steps=4000, model_batch_size=512,
      model_learning_rate=2e-3, model_ema_decay=0.995,
      features="rff", rff_dim=128, rff_lengthscale=0.3))

  return config
