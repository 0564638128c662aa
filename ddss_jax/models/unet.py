"""A DDPM-style UNet whose module tree mirrors diffusers' UNet2DModel.

The tree (conv_in, time_embedding.linear_1/2, down_blocks.i.{resnets,attentions,downsamplers},
mid_block, up_blocks.i.{...,upsamplers}, conv_norm_out, conv_out) and every layer's shape follow
diffusers' UNet2DModel with time_embedding_type="positional" and the default ResNet time shift, so
that the public DDPM checkpoints (google/ddpm-cifar10-32, -church-256, -bedroom-256) map onto it
name by name: flax "down_blocks_0/resnets_1/conv1/kernel" is diffusers
"down_blocks.0.resnets.1.conv1.weight" (convolution kernels transposed from OIHW to HWIO, dense
kernels from [out, in] to [in, out]). The layout is NHWC: x [B, H, W, C], t [B] float. With
num_class_embeds (diffusers' class-conditional UNet2DModel, class_embed_type None) the model also
takes class_labels [B] int, whose embedding is added to the time embedding.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

DOWN_BLOCK_TYPES = ("DownBlock2D", "AttnDownBlock2D")
UP_BLOCK_TYPES = ("UpBlock2D", "AttnUpBlock2D")


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """The UNet2DModel config fields this port supports (names as in diffusers' config.json)."""
  sample_size: int = 32
  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: Sequence[int] = (128, 256, 256, 256)
  down_block_types: Sequence[str] = ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D",
                                     "DownBlock2D")
  up_block_types: Sequence[str] = ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")
  layers_per_block: int = 2
  attention_head_dim: int | None = None  # None: one head spanning all channels (DDPM)
  norm_num_groups: int = 32
  norm_eps: float = 1e-6
  flip_sin_to_cos: bool = False
  freq_shift: int = 1
  downsample_padding: int = 0
  num_class_embeds: int | None = None  # class-conditional: labels 0 .. num_class_embeds - 1

  def __post_init__(self):
    num = len(self.block_out_channels)
    if len(self.down_block_types) != num or len(self.up_block_types) != num:
      raise ValueError(f"block_out_channels {tuple(self.block_out_channels)}, down_block_types "
                       f"{tuple(self.down_block_types)} and up_block_types "
                       f"{tuple(self.up_block_types)} must have the same length")
    for kind, valid in ((self.down_block_types, DOWN_BLOCK_TYPES),
                        (self.up_block_types, UP_BLOCK_TYPES)):
      for name in kind:
        if name not in valid:
          raise ValueError(f"unsupported block type {name!r}; valid choices: {list(valid)}")
    for channels in self.block_out_channels:
      if channels % self.norm_num_groups:
        raise ValueError(f"block_out_channels {tuple(self.block_out_channels)} must be multiples "
                         f"of norm_num_groups={self.norm_num_groups}")
    if self.sample_size % 2 ** (num - 1):
      raise ValueError(f"sample_size {self.sample_size} must be divisible by 2^{num - 1}")
    if self.downsample_padding not in (0, 1):
      raise ValueError(f"downsample_padding must be 0 or 1, got {self.downsample_padding}")
    if self.num_class_embeds is not None and (isinstance(self.num_class_embeds, bool) or not
                                              isinstance(self.num_class_embeds, int)
                                              or self.num_class_embeds < 1):
      raise ValueError(f"num_class_embeds must be None or a positive integer, got "
                       f"{self.num_class_embeds!r}")


def timestep_embedding(t: jax.Array, *, dim: int, flip_sin_to_cos: bool, freq_shift: float,
                       max_period: float = 10000.0) -> jax.Array:
  """diffusers' get_timestep_embedding: t [B] float -> [B, dim], [sin | cos] (or [cos | sin])."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32)
                  / (half - freq_shift))
  angles = t.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  if flip_sin_to_cos:
    emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class GroupNorm(nn.Module):
  """GroupNorm over [B, H, W, C] with flax's parameters ("scale", "bias" [C]) and formula (biased
  variance E[x^2] - E[x]^2, floored at 0; epsilon inside the square root).

  The statistics are summed per channel first (a reduction over H and W with the channels kept
  contiguous), then per group: XLA:CPU reduces contiguous channels faster than flax's
  [B, H, W, G, C/G] view, whose innermost axis holds only C/G channels (measured:
  docs/performance.md, "Where the code's choices come from"). The values equal
  flax.linen.GroupNorm's up to float32 rounding.
  """
  num_groups: int
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    per_group = channels // self.num_groups
    scale = self.param("scale", nn.initializers.ones, (channels,))
    bias = self.param("bias", nn.initializers.zeros, (channels,))
    count = x.shape[1] * x.shape[2] * per_group
    group_mean = lambda v: jnp.sum(v, axis=(1, 2)).reshape(-1, self.num_groups, per_group).sum(
        -1) / count                                                     # [B, G]
    mean, mean_sq = group_mean(x), group_mean(x * x)
    var = jnp.maximum(0.0, mean_sq - mean * mean)
    per_channel = lambda v: jnp.repeat(v, per_group, axis=1)[:, None, None, :]  # [B, 1, 1, C]
    mul = jax.lax.rsqrt(per_channel(var) + self.epsilon) * scale
    return (x - per_channel(mean)) * mul + bias


class TimestepEmbedding(nn.Module):
  dim: int

  @nn.compact
  def __call__(self, emb):
    return nn.Dense(self.dim, name="linear_2")(nn.silu(nn.Dense(self.dim, name="linear_1")(emb)))


class ResnetBlock2D(nn.Module):
  """GroupNorm-SiLU-conv, + time projection, GroupNorm-SiLU-conv, 1x1 shortcut if C changes."""
  out_channels: int
  groups: int
  eps: float

  @nn.compact
  def __call__(self, x, temb):
    h = nn.silu(GroupNorm(self.groups, epsilon=self.eps, name="norm1")(x))
    h = nn.Conv(self.out_channels, (3, 3), padding=1, name="conv1")(h)
    h = h + nn.Dense(self.out_channels, name="time_emb_proj")(nn.silu(temb))[:, None, None, :]
    h = nn.silu(GroupNorm(self.groups, epsilon=self.eps, name="norm2")(h))
    h = nn.Conv(self.out_channels, (3, 3), padding=1, name="conv2")(h)
    if x.shape[-1] != self.out_channels:
      x = nn.Conv(self.out_channels, (1, 1), name="conv_shortcut")(x)
    return x + h


class Attention(nn.Module):
  """Spatial self-attention with a residual: GroupNorm, q/k/v projections, output projection."""
  groups: int
  eps: float
  head_dim: int | None

  @nn.compact
  def __call__(self, x):
    batch, height, width, channels = x.shape
    head_dim = self.head_dim or channels
    heads = channels // head_dim
    h = GroupNorm(self.groups, epsilon=self.eps, name="group_norm")(x)
    h = h.reshape(batch, height * width, channels)
    tokens = height * width
    # Heads move into the batch ([B * heads, T, d]; no data moves for one head, as in DDPM), and
    # the scale is folded into q, so that XLA fuses the scaling and normalising of the [T, T]
    # scores into the products (measured: docs/performance.md, "Where the code's choices
    # come from").
    split = lambda a: a.reshape(batch, tokens, heads, head_dim).transpose(0, 2, 1, 3).reshape(
        batch * heads, tokens, head_dim)
    q = split(nn.Dense(channels, name="to_q")(h)) * (1.0 / math.sqrt(head_dim))
    k = split(nn.Dense(channels, name="to_k")(h))
    v = split(nn.Dense(channels, name="to_v")(h))
    weights = jax.nn.softmax(jnp.einsum("bqd,bkd->bqk", q, k), axis=-1)
    out = jnp.einsum("bqk,bkd->bqd", weights, v).reshape(batch, heads, tokens, head_dim)
    out = out.transpose(0, 2, 1, 3).reshape(batch, tokens, channels)
    # diffusers' to_out is a ModuleList [Linear, Dropout]: the Linear is "to_out.0".
    out = nn.Dense(channels, name="to_out_0")(out)
    return x + out.reshape(batch, height, width, channels)


class Downsample2D(nn.Module):
  channels: int
  padding: int

  @nn.compact
  def __call__(self, x):
    if self.padding == 0:  # diffusers pads right/bottom by one, then a valid stride-2 conv
      x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
      return nn.Conv(self.channels, (3, 3), strides=2, padding="VALID", name="conv")(x)
    return nn.Conv(self.channels, (3, 3), strides=2, padding=1, name="conv")(x)


@jax.custom_vjp
def upsample_nearest2x(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, 2H, 2W, C], each pixel repeated 2 x 2 (diffusers' nearest upsampling).

  Its gradient adds the four strided quarters of the cotangent: autodiff of jnp.repeat gives the
  same sums as a reduction over a [B, H, 2, W, 2, C] view, which XLA:CPU runs much slower
  (measured: docs/performance.md, "Where the code's choices come from").
  """
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _upsample_fwd(x):
  return upsample_nearest2x(x), None


def _upsample_bwd(_, g):
  return (g[:, 0::2, 0::2] + g[:, 0::2, 1::2] + g[:, 1::2, 0::2] + g[:, 1::2, 1::2],)


upsample_nearest2x.defvjp(_upsample_fwd, _upsample_bwd)


class Upsample2D(nn.Module):
  channels: int

  @nn.compact
  def __call__(self, x):
    return nn.Conv(self.channels, (3, 3), padding=1, name="conv")(upsample_nearest2x(x))


def _resnets_and_attentions(cfg: UNetConfig, channels: int, num_layers: int, attention: bool):
  """The `resnets` and (possibly empty) `attentions` lists of a down or up block."""
  resnets = [ResnetBlock2D(channels, cfg.norm_num_groups, cfg.norm_eps) for _ in range(num_layers)]
  attentions = ([Attention(cfg.norm_num_groups, cfg.norm_eps, cfg.attention_head_dim)
                 for _ in range(num_layers)] if attention else [])
  return resnets, attentions


class DownBlock(nn.Module):
  """DownBlock2D / AttnDownBlock2D: returns (h, skip activations)."""
  out_channels: int
  num_layers: int
  attention: bool
  add_downsample: bool
  cfg: UNetConfig

  def setup(self):
    self.resnets, self.attentions = _resnets_and_attentions(
        self.cfg, self.out_channels, self.num_layers, self.attention)
    if self.add_downsample:
      self.downsamplers = [Downsample2D(self.out_channels, self.cfg.downsample_padding)]

  def __call__(self, h, temb):
    skips = []
    for j, resnet in enumerate(self.resnets):
      h = resnet(h, temb)
      if self.attention:
        h = self.attentions[j](h)
      skips.append(h)
    if self.add_downsample:
      h = self.downsamplers[0](h)
      skips.append(h)
    return h, skips


class UpBlock(nn.Module):
  """UpBlock2D / AttnUpBlock2D: each ResNet first concatenates the latest skip activation."""
  out_channels: int
  num_layers: int
  attention: bool
  add_upsample: bool
  cfg: UNetConfig

  def setup(self):
    self.resnets, self.attentions = _resnets_and_attentions(
        self.cfg, self.out_channels, self.num_layers, self.attention)
    if self.add_upsample:
      self.upsamplers = [Upsample2D(self.out_channels)]

  def __call__(self, h, skips, temb):
    for j, resnet in enumerate(self.resnets):
      h = resnet(jnp.concatenate([h, skips.pop()], axis=-1), temb)
      if self.attention:
        h = self.attentions[j](h)
    if self.add_upsample:
      h = self.upsamplers[0](h)
    return h


class MidBlock(nn.Module):
  """UNetMidBlock2D: ResNet, attention, ResNet."""
  channels: int
  cfg: UNetConfig

  def setup(self):
    cfg = self.cfg
    self.resnets = [ResnetBlock2D(self.channels, cfg.norm_num_groups, cfg.norm_eps)
                    for _ in range(2)]
    self.attentions = [Attention(cfg.norm_num_groups, cfg.norm_eps, cfg.attention_head_dim)]

  def __call__(self, h, temb):
    return self.resnets[1](self.attentions[0](self.resnets[0](h, temb)), temb)


class UNet2DModel(nn.Module):
  """eps(x [B, H, W, in_channels], t [B], class_labels [B] int where the config has
  num_class_embeds) -> [B, H, W, out_channels]."""
  cfg: UNetConfig

  def setup(self):
    cfg = self.cfg
    chans = tuple(cfg.block_out_channels)
    last = len(chans) - 1
    self.conv_in = nn.Conv(chans[0], (3, 3), padding=1)
    self.time_embedding = TimestepEmbedding(4 * chans[0])
    if cfg.num_class_embeds is not None:
      # Zeros: a class embedding added to an unconditional model leaves it unchanged at first.
      self.class_embedding = nn.Embed(cfg.num_class_embeds, 4 * chans[0],
                                      embedding_init=nn.initializers.zeros)
    self.down_blocks = [
        DownBlock(chans[i], cfg.layers_per_block, kind == "AttnDownBlock2D", i < last, cfg)
        for i, kind in enumerate(cfg.down_block_types)]
    self.mid_block = MidBlock(chans[-1], cfg)
    self.up_blocks = [
        UpBlock(chans[last - i], cfg.layers_per_block + 1, kind == "AttnUpBlock2D", i < last, cfg)
        for i, kind in enumerate(cfg.up_block_types)]
    self.conv_norm_out = GroupNorm(cfg.norm_num_groups, epsilon=cfg.norm_eps)
    self.conv_out = nn.Conv(cfg.out_channels, (3, 3), padding=1)

  def __call__(self, x: jax.Array, t: jax.Array,
               class_labels: jax.Array | None = None) -> jax.Array:
    cfg = self.cfg
    if (class_labels is None) != (cfg.num_class_embeds is None):
      raise ValueError(f"UNet2DModel with num_class_embeds={cfg.num_class_embeds} called "
                       f"{'without' if class_labels is None else 'with'} class_labels")
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
    temb = self.time_embedding(timestep_embedding(
        t, dim=cfg.block_out_channels[0], flip_sin_to_cos=cfg.flip_sin_to_cos,
        freq_shift=cfg.freq_shift))
    if class_labels is not None:
      temb = temb + self.class_embedding(jnp.asarray(class_labels, jnp.int32))
    h = self.conv_in(x)
    skips = [h]
    for block in self.down_blocks:
      h, block_skips = block(h, temb)
      skips += block_skips
    h = self.mid_block(h, temb)
    for block in self.up_blocks:
      h = block(h, skips, temb)
    return self.conv_out(nn.silu(self.conv_norm_out(h)))


# The embedded default's base model: 32x32x1 digits, attention at 16x16, small enough that DDSS
# through K calls of it fits the main job's CPU budget (size: docs/performance.md).
MNIST_UNET = UNetConfig(
    sample_size=32, in_channels=1, out_channels=1, block_out_channels=(16, 32, 32),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
    norm_num_groups=8)


# google/ddpm-cifar10-32's config.json (Ho et al. 2020; 35.7 M parameters): the benchmarks' model.
DDPM_CIFAR10 = UNetConfig(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=2,
    norm_num_groups=32, norm_eps=1e-6, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0)


# The class-conditional MNIST UNet: MNIST_UNET with 11 class embeddings, digits 0-9 and
# NULL_LABEL for "no class" (classifier-free guidance's unconditional branch).
NULL_LABEL = 10
MNIST_COND_UNET = dataclasses.replace(MNIST_UNET, num_class_embeds=NULL_LABEL + 1)

SHIPPED_NAME = "mnist_unet"  # ddss_jax/weights/mnist_unet.msgpack
COND_SHIPPED_NAME = "mnist_cond_unet"  # ddss_jax/weights/mnist_cond_unet.msgpack


def init_params(cfg: UNetConfig, key: jax.Array):
  """Parameters of UNet2DModel(cfg) for one [1, S, S, in_channels] example."""
  x = jnp.zeros((1, cfg.sample_size, cfg.sample_size, cfg.in_channels), jnp.float32)
  labels = () if cfg.num_class_embeds is None else (jnp.zeros((1,), jnp.int32),)
  return UNet2DModel(cfg).init(key, x, jnp.zeros((1,), jnp.float32), *labels)["params"]


_MODULE_LISTS = ("down_blocks", "up_blocks", "resnets", "attentions", "downsamplers", "upsamplers",
                 "to_out")


def params_template(cfg: UNetConfig):
  """Zeros with the structure, shapes and dtypes of the params (a template for loading)."""
  shapes = jax.eval_shape(lambda key: init_params(cfg, key), jax.random.PRNGKey(0))
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def diffusers_key(flax_path: Sequence[str]) -> str:
  """The diffusers state-dict key of a flax parameter path, e.g.
  ("down_blocks_0", "resnets_1", "conv1", "kernel") -> "down_blocks.0.resnets.1.conv1.weight".
  """
  parts = []
  for name in flax_path[:-1]:
    head, _, index = name.rpartition("_")
    # Only diffusers' ModuleLists are indexed; "linear_1" is a plain attribute name.
    parts += [head, index] if head in _MODULE_LISTS else [name]
  leaf = {"kernel": "weight", "scale": "weight", "bias": "bias",
          "embedding": "weight"}[flax_path[-1]]
  return ".".join(parts + [leaf])
