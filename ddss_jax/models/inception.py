"""The FID Inception network (the TF 2015-12-05 Inception-v3 graph) as a Flax module.

The network of the original TensorFlow FID code as pytorch-fid and torch-fidelity port it:
torchvision's Inception-v3 with FID's mixed blocks (the avg-pool branches of Mixed_5*, 6b-e and 7b
do not count the zero padding; Mixed_7c's pool branch is a MAX pool), BatchNorm eps 1e-3 with the
running statistics, 2048-d pool3 features and a 2048 -> 1008 fc. The tree mirrors their state
dicts name by name (inception_weights.torch_key): params "Mixed_5b/branch1x1/conv/kernel" is
"Mixed_5b.branch1x1.conv.weight" (OIHW -> HWIO), "bn/scale" and "bn/bias" are "bn.weight" and
"bn.bias", batch_stats "bn/mean" and "bn/var" are "bn.running_mean" and "bn.running_var", and
"fc/kernel" is "fc.weight" transposed.

Images [B, H, W, 3] in [-1, 1], any H, W, become pixels p = (x + 1) * 127.5, resized to 299 x 299:
  preprocess="tf"           like TF1 resize_bilinear(align_corners=False), then (p - 128) / 128
  preprocess="pytorch_fid"  like torch F.interpolate(bilinear, align_corners=False), p / 127.5 - 1
Out: {"pool3": [B, 2048], "logits_unbiased": [B, 1008], "logits": [B, 1008]}, differentiable in
the images. Its weights: ddss_jax.models.inception_weights.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.lax import Precision

PREPROCESS_CHOICES = ("tf", "pytorch_fid")
INPUT_SIZE = 299
NUM_LOGITS = 1008


# ----------------------------------------------------------------------------- resizing


def _lerp_axis(x: jax.Array, *, axis: int, lo: np.ndarray, hi: np.ndarray, frac: np.ndarray,
               torch_form: bool) -> jax.Array:
  """Linear interpolation of x along `axis` between rows lo and hi [N] with weights frac [N]."""
  a, b = jnp.take(x, lo, axis=axis), jnp.take(x, hi, axis=axis)
  shape = [1] * x.ndim
  shape[axis] = frac.shape[0]
  frac = jnp.asarray(frac.reshape(shape))
  if torch_form:  # ATen's upsample_bilinear2d: w0 * a + w1 * b, w0 = 1 - w1
    return a * (1 - frac) + b * frac
  return a + (b - a) * frac  # TF1's ResizeBilinear (and torch-fidelity's "slow" port)


def _tf1_coords(in_size: int, out_size: int):
  """TF1 align_corners=False: source index i * in / out (no half-pixel centres), float32."""
  src = np.arange(out_size, dtype=np.float32) * np.float32(in_size / out_size)
  lo = src.astype(np.int64)
  return lo, np.minimum(lo + 1, in_size - 1), src - lo.astype(np.float32)


def _torch_coords(in_size: int, out_size: int):
  """torch align_corners=False: half-pixel centres, (i + 0.5) * in / out - 0.5 clipped at 0."""
  scale = np.float32(in_size) / np.float32(out_size)
  # ATen's float32 scale * (i + 0.5) - 0.5 compiles to a fused multiply-add (one rounding): the
  # exact float64 product, rounded once, reproduces it (unfused, lambdas differ by 10 ulps).
  src = np.float32(np.float64(scale) * (np.arange(out_size) + 0.5) - 0.5)
  src = np.maximum(src, np.float32(0))
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  frac = np.clip(src - lo.astype(np.float32), 0, 1).astype(np.float32)
  return lo, np.minimum(lo + 1, in_size - 1), frac


def _resize(images: jax.Array, *, height: int, width: int, coords, torch_form: bool) -> jax.Array:
  if images.ndim != 4:
    raise ValueError(f"resize expects images [B, H, W, C], got shape {images.shape}")
  # Along W first, then H: the order of TF1's kernel (and the same sums as ATen's).
  lo, hi, frac = coords(images.shape[2], width)
  out = _lerp_axis(images, axis=2, lo=lo, hi=hi, frac=frac, torch_form=torch_form)
  lo, hi, frac = coords(images.shape[1], height)
  return _lerp_axis(out, axis=1, lo=lo, hi=hi, frac=frac, torch_form=torch_form)


def resize_bilinear_tf1(images: jax.Array, *, height: int, width: int) -> jax.Array:
  """TF1 tf.image.resize_bilinear(align_corners=False) of images [B, H, W, C] -> [B, h, w, C]."""
  return _resize(images, height=height, width=width, coords=_tf1_coords, torch_form=False)


def resize_bilinear_torch(images: jax.Array, *, height: int, width: int) -> jax.Array:
  """torch F.interpolate(mode="bilinear", align_corners=False, antialias=False), NHWC."""
  return _resize(images, height=height, width=width, coords=_torch_coords, torch_form=True)


def check_preprocess(preprocess: str) -> None:
  if preprocess not in PREPROCESS_CHOICES:
    raise ValueError(f"unknown Inception preprocess {preprocess!r}; valid choices: "
                     f"{list(PREPROCESS_CHOICES)}")


def preprocess_images(x: jax.Array, *, preprocess: str) -> jax.Array:
  """Images [B, H, W, 3] in [-1, 1] -> the network's input [B, 299, 299, 3]."""
  check_preprocess(preprocess)
  pixels = (x + 1) * 127.5
  if preprocess == "tf":
    pixels = resize_bilinear_tf1(pixels, height=INPUT_SIZE, width=INPUT_SIZE)
    return (pixels - 128) / 128
  pixels = resize_bilinear_torch(pixels, height=INPUT_SIZE, width=INPUT_SIZE)
  return pixels / 127.5 - 1


# ----------------------------------------------------------------------------- the network


class BasicConv2d(nn.Module):
  """Conv (no bias) -> BatchNorm(eps 1e-3, running statistics) -> ReLU; torch padding (ph, pw)."""
  features: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)
  precision: Precision | None = Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    (ph, pw) = self.padding
    x = nn.Conv(self.features, self.kernel, strides=self.stride, padding=((ph, ph), (pw, pw)),
                use_bias=False, precision=self.precision, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x):  # TF's average pool does not count the zero padding
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class _Block(nn.Module):
  """Base of the mixed blocks: `conv(name, channels, kernel, ...)` scales channels by width."""
  width: float
  precision: Precision | None

  def conv(self, name: str, channels: int, kernel, *, stride: int = 1, padding=(0, 0)):
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    padding = (padding, padding) if isinstance(padding, int) else padding
    return BasicConv2d(scaled(channels, self.width), kernel, stride, padding, self.precision,
                       name=name)


class InceptionA(_Block):
  """Mixed_5b/c/d (35 x 35): 1x1, 5x5, double 3x3 and avg-pool branches."""
  pool_features: int = 32

  @nn.compact
  def __call__(self, x):
    b1 = self.conv("branch1x1", 64, 1)(x)
    b5 = self.conv("branch5x5_2", 64, 5, padding=2)(self.conv("branch5x5_1", 48, 1)(x))
    b3 = self.conv("branch3x3dbl_1", 64, 1)(x)
    b3 = self.conv("branch3x3dbl_3", 96, 3, padding=1)(
        self.conv("branch3x3dbl_2", 96, 3, padding=1)(b3))
    bp = self.conv("branch_pool", self.pool_features, 1)(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
  """Mixed_6a (35 -> 17): stride-2 3x3, double 3x3 and max-pool branches."""

  @nn.compact
  def __call__(self, x):
    b3 = self.conv("branch3x3", 384, 3, stride=2)(x)
    bd = self.conv("branch3x3dbl_1", 64, 1)(x)
    bd = self.conv("branch3x3dbl_2", 96, 3, padding=1)(bd)
    bd = self.conv("branch3x3dbl_3", 96, 3, stride=2)(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(_Block):
  """Mixed_6b-e (17 x 17): factorised 7x7 branches of c7 channels and an avg-pool branch."""
  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = self.conv("branch1x1", 192, 1)(x)
    b7 = self.conv("branch7x7_1", c7, 1)(x)
    b7 = self.conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7)
    b7 = self.conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
    bd = self.conv("branch7x7dbl_1", c7, 1)(x)
    for i, (channels, kernel) in enumerate([(c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)),
                                            (192, (1, 7))], start=2):
      padding = (kernel[0] // 2, kernel[1] // 2)
      bd = self.conv(f"branch7x7dbl_{i}", channels, kernel, padding=padding)(bd)
    bp = self.conv("branch_pool", 192, 1)(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
  """Mixed_7a (17 -> 8): stride-2 3x3, 7x7-then-3x3 and max-pool branches."""

  @nn.compact
  def __call__(self, x):
    b3 = self.conv("branch3x3_2", 320, 3, stride=2)(self.conv("branch3x3_1", 192, 1)(x))
    b7 = self.conv("branch7x7x3_1", 192, 1)(x)
    b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
    b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
    b7 = self.conv("branch7x7x3_4", 192, 3, stride=2)(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(_Block):
  """Mixed_7b/c (8 x 8): 1x1, split 3x3 and split double-3x3 branches and a pool branch.

  The FID graph pools the pool branch with an average (zero padding not counted) in Mixed_7b and
  with a 3x3 stride-1 MAX in Mixed_7c (max_pool=True), unlike the paper and torchvision.
  """
  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    b1 = self.conv("branch1x1", 320, 1)(x)
    b3 = self.conv("branch3x3_1", 384, 1)(x)
    b3 = jnp.concatenate([self.conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
                          self.conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3)], axis=-1)
    bd = self.conv("branch3x3dbl_1", 448, 1)(x)
    bd = self.conv("branch3x3dbl_2", 384, 3, padding=1)(bd)
    bd = jnp.concatenate([self.conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                          self.conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd)], axis=-1)
    if self.max_pool:  # padding with -inf, as torch's max_pool2d(padding=1)
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3(x)
    bp = self.conv("branch_pool", 192, 1)(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FC(nn.Module):
  """fc: pool3 [B, D] -> (logits_unbiased, logits) [B, 1008]; bias added as torch-fidelity does."""
  precision: Precision | None

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], NUM_LOGITS))
    bias = self.param("bias", nn.initializers.zeros_init(), (NUM_LOGITS,))
    unbiased = jnp.dot(x, kernel, precision=self.precision)
    return unbiased, unbiased + bias


def scaled(channels: int, width: float) -> int:
  """Channel count of a layer at a width multiplier (width 1.0: the real network)."""
  return max(1, int(round(channels * width)))


class FIDInceptionV3(nn.Module):
  """{"pool3": [B, 2048 * width], "logits_unbiased", "logits": [B, 1008]} of x [B, H, W, 3].

  Attributes:
    width: channel multiplier; 1.0 is the real network (other values only for fast tests).
    preprocess: "tf" (the original TF FID graph, torch-fidelity) or "pytorch_fid".
    precision: of the convolutions and fc. HIGHEST (full float32) matches the float32 references
      (1e-5); None, the backend's default, means TF32 on NVIDIA GPUs: faster but less accurate
      features, for a training loss, not for reported FIDs (measured: docs/performance.md).
  """
  width: float = 1.0
  preprocess: str = "tf"
  precision: Precision | None = Precision.HIGHEST

  def __post_init__(self):
    check_preprocess(self.preprocess)
    if not self.width > 0:
      raise ValueError(f"width must be positive, got {self.width}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"FIDInceptionV3 expects images [B, H, W, 3], got shape {x.shape}")
    w, p = self.width, self.precision
    stem = lambda name, c, k, **kw: BasicConv2d(scaled(c, w), (k, k), precision=p, name=name, **kw)
    h = preprocess_images(x.astype(jnp.float32), preprocess=self.preprocess)  # [B, 299, 299, 3]
    h = stem("Conv2d_1a_3x3", 32, 3, stride=2)(h)                  # [B, 149, 149, 32]
    h = stem("Conv2d_2a_3x3", 32, 3)(h)                            # [B, 147, 147, 32]
    h = stem("Conv2d_2b_3x3", 64, 3, padding=(1, 1))(h)            # [B, 147, 147, 64]
    h = stem("Conv2d_3b_1x1", 80, 1)(_max_pool_3x3_stride2(h))     # [B, 73, 73, 80]
    h = _max_pool_3x3_stride2(stem("Conv2d_4a_3x3", 192, 3)(h))   # [B, 35, 35, 192]
    h = InceptionA(w, p, 32, name="Mixed_5b")(h)                   # [B, 35, 35, 256]
    h = InceptionA(w, p, 64, name="Mixed_5c")(h)                   # [B, 35, 35, 288]
    h = InceptionA(w, p, 64, name="Mixed_5d")(h)
    h = InceptionB(w, p, name="Mixed_6a")(h)                       # [B, 17, 17, 768]
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      h = InceptionC(w, p, c7, name=name)(h)
    h = InceptionD(w, p, name="Mixed_7a")(h)                       # [B, 8, 8, 1280]
    h = InceptionE(w, p, False, name="Mixed_7b")(h)                # [B, 8, 8, 2048]
    h = InceptionE(w, p, True, name="Mixed_7c")(h)
    pool3 = jnp.mean(h, axis=(1, 2))                               # [B, 2048]
    logits_unbiased, logits = FC(p, name="fc")(pool3)              # [B, 1008]
    return {"pool3": pool3, "logits_unbiased": logits_unbiased, "logits": logits}


@functools.partial(jax.jit, static_argnames=("width", "preprocess"))
def _apply(variables: Any, images: jax.Array, *, width: float, preprocess: str):
  return FIDInceptionV3(width=width, preprocess=preprocess).apply(variables, images)


def features_fn(variables: Any, *, width: float = 1.0, preprocess: str = "tf"):
  """A jitted function images [B, H, W, 3] in [-1, 1] -> the output dict of FIDInceptionV3.

  The weights enter the jitted computation as an argument (not baked in as constants); one
  compilation per input shape. For a loss, call FIDInceptionV3(...).apply inside your own jit.
  """
  check_preprocess(preprocess)
  return lambda images: _apply(variables, images, width=width, preprocess=preprocess)


def variables_template(*, width: float = 1.0) -> Any:
  """Zeros with the structure, shapes and dtypes of {"params", "batch_stats"} at `width`."""
  shapes = jax.eval_shape(FIDInceptionV3(width=width).init, jax.random.key(0),
                          jnp.zeros((1, 8, 8, 3), jnp.float32))
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
