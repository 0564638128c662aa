"""The whole config schema, with every default. Other configs derive from it.

Run: python -m ddss_jax.main --config=configs/default.py --workdir=/tmp/ddss
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Frozen model + data + features: "toy2d", "mnist" (the embedded default) or "pretrained" (a
  # public diffusers checkpoint, a tensorflow-datasets dataset, the FID Inception network).
  config.problem = "toy2d"

  # The frozen model's noise schedule: "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal).
  config.schedule = ml_collections.ConfigDict(dict(name="linear", num_timesteps=1000))

  # The sampler DDSS learns. family: vars, ggdm, ggdm+pred, ggdm+time, ggdm+pred+time, or the
  # learned-time solvers dpm-solver++2m+time, unipc+time (the fixed ddpm, ddim, dpm-solver++2m,
  # unipc need num_train_steps = 0). num_steps: K model calls. stride: the fixed (or initial)
  # times: linear, quadratic (DDIM's) or logsnr (uniform in log-SNR, from T - 1 to 0).
  # eta: the DDIM(eta) it starts from (0 = DDIM, 1 = DDPM). gradient: adjoint (O(K |x|)
  # memory) or checkpoint (scan + remat, O(K^2 |x|); a reference). unroll: model calls per
  # compiled loop iteration, 1 to K; same results, compile time and memory grow with it.
  # canonical_convs: convolutions in the order XLA:CPU runs fast inside loops (exact; False
  # makes the gradient's convolutions an order of magnitude slower on CPU; for benchmarks).
  config.sampler = ml_collections.ConfigDict(dict(
      family="ggdm+pred+time", num_steps=4, stride="quadratic", eta=0.0, gradient="adjoint",
      unroll=1, canonical_convs=True))

  # The fixed sampler of the before/after table, run at the same K and stride: "ddim" (with
  # its eta), "ddpm" (eta = 1 always; the eta here is then not used), "dpm-solver++2m"
  # (DPM-Solver++(2M)) or "unipc" (UniPC; both deterministic: eta must be 0).
  config.baseline = ml_collections.ConfigDict(dict(family="ddim", eta=0.0))

  # What DDSS minimises. name: "kid" (KID between samples and real training examples in the
  # problem's feature space, the paper's loss) or "teacher" (mean squared difference between the
  # sampler's x_0 and a long fixed sampler's x_0 from the same x_T: teacher_family,
  # teacher_steps, teacher_stride; over a pool of teacher_pool pairs drawn once and cached in
  # teacher_dir (None: the workdir); in teacher_space "data" or "features").
  config.loss = ml_collections.ConfigDict(dict(
      name="kid", teacher_family="ddim", teacher_steps=200, teacher_stride="linear",
      teacher_pool=1024, teacher_space="data",
      teacher_dir=ml_collections.config_dict.placeholder(str)))

  # DDSS optimisation: Adam on the sampler parameters, global-norm clipping (<= 0: off).
  # seed: every random stream of the run derives from it (fold_in per step), the frozen toy
  # model's training included. log_every_steps: metric lines in metrics.jsonl and the log.
  # checkpoint_every_steps: orbax checkpoints (the last step always saves one).
  # nonfinite: what a NaN or Inf in the loss or the gradients does: "stop" the run (naming the
  # step and the quantity; the last checkpoint stays the last good state) or "skip" the update
  # (optax.apply_if_finite; counted as train/skipped_updates), stopping after
  # max_consecutive_skips skipped updates in a row.
  config.train = ml_collections.ConfigDict(dict(
      num_train_steps=300, batch_size=256, learning_rate=5e-3, grad_clip=1.0, b1=0.9, b2=0.99,
      seed=0, log_every_steps=50, checkpoint_every_steps=100, nonfinite="stop",
      max_consecutive_skips=10))

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

  # The real-scale problem (configs/cifar10.py, imagenet64.py, lsun_church.py, lsun_bedroom.py).
  # dataset: cifar10, imagenet64, lsun_church or lsun_bedroom (ddss_jax.data.tfds_images), read
  # from data_dir (None: ~/tensorflow_datasets) with tfds.data_source, no TensorFlow needed.
  # train_split: the real batches of the KID loss. reference_split, reference_num_examples
  # (0: all): the FID/IS/KID reference statistics, computed once and cached in stats_dir (None:
  # ~/.cache/ddss_jax/stats). image_size: None for the dataset's default; must equal the
  # checkpoint's sample_size. checkpoint: a diffusers UNet2DModel folder (config.json, weights,
  # scheduler_config.json); checkpoint_sha256 pins its weights file. inception_weights: the
  # pytorch-fid .pth or its converted .msgpack (None: ~/.cache/ddss_jax/pt_inception-...pth);
  # inception_sha256 pins it (None: the published prefix for the .pth, the sidecar for .msgpack).
  # inception_width: 1.0 is the real network (less only for tests). inception_preprocess: "tf"
  # (the original TF FID graph's resize and scaling) or "pytorch_fid". loss_features: the
  # network output the KID loss compares ("pool3", "logits_unbiased" or "logits").
  # feature_batch_size: images per Inception call when evaluating. KID: kid_subsets subsets of
  # kid_subset_size from reservoirs of kid_sample_size features. is_splits: Inception Score parts.
  config.pretrained = ml_collections.ConfigDict(dict(
      dataset="cifar10", data_dir=ml_collections.config_dict.placeholder(str),
      train_split="train", reference_split="train", reference_num_examples=50000,
      image_size=ml_collections.config_dict.placeholder(int),
      checkpoint=ml_collections.config_dict.placeholder(str),
      checkpoint_sha256=ml_collections.config_dict.placeholder(str),
      inception_weights=ml_collections.config_dict.placeholder(str),
      inception_sha256=ml_collections.config_dict.placeholder(str),
      inception_width=1.0, inception_preprocess="tf", loss_features="pool3",
      feature_batch_size=250, kid_subsets=100, kid_subset_size=1000, kid_sample_size=10000,
      is_splits=10, stats_dir=ml_collections.config_dict.placeholder(str)))

  return config
