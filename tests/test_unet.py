"""The UNet port: shapes, config validation, and parity with diffusers' UNet2DModel.

The parity test builds diffusers' UNet2DModel (PyTorch) with random weights, copies them into the
Flax module by name (diffusers_key), and compares outputs. It needs torch and diffusers
(`pip install -e '.[parity]'`) and is skipped, saying so, where they are not installed.
"""

import numpy as np
import pytest

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddss_jax.models import diffusers_io, unet

TINY = unet.UNetConfig(
    sample_size=16, in_channels=2, out_channels=2, block_out_channels=(8, 16, 16),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=2,
    norm_num_groups=4)


@pytest.mark.slow
def test_output_shape_and_time_dependence():
  params = unet.init_params(TINY, jax.random.PRNGKey(0))
  model = unet.UNet2DModel(TINY)
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 16, 2))
  out = jax.jit(model.apply)({"params": params}, x, jnp.array([0.0, 10.5, 999.0]))
  assert out.shape == x.shape and np.all(np.isfinite(out))
  # The output depends smoothly on a float time input (TIME learns it).
  grad_t = jax.jit(jax.grad(lambda t: jnp.sum(model.apply({"params": params}, x, t))))(
      jnp.array([5.0, 500.5, 900.0]))
  assert np.all(np.isfinite(grad_t)) and np.any(grad_t != 0)


def test_bad_configs_name_the_problem():
  with pytest.raises(ValueError, match=r"unsupported block type 'CrossAttnDownBlock2D'"):
    unet.UNetConfig(block_out_channels=(32,), down_block_types=("CrossAttnDownBlock2D",),
                    up_block_types=("UpBlock2D",))
  with pytest.raises(ValueError, match="must have the same length"):
    unet.UNetConfig(block_out_channels=(32, 64))
  with pytest.raises(ValueError, match="multiples of norm_num_groups=32"):
    unet.UNetConfig(block_out_channels=(16,), down_block_types=("DownBlock2D",),
                    up_block_types=("UpBlock2D",))


def test_diffusers_key_mapping():
  assert (unet.diffusers_key(("down_blocks_0", "resnets_1", "conv1", "kernel"))
          == "down_blocks.0.resnets.1.conv1.weight")
  assert (unet.diffusers_key(("mid_block", "attentions_0", "to_out_0", "bias"))
          == "mid_block.attentions.0.to_out.0.bias")
  assert unet.diffusers_key(("conv_norm_out", "scale")) == "conv_norm_out.weight"
  assert (unet.diffusers_key(("time_embedding", "linear_1", "kernel"))
          == "time_embedding.linear_1.weight")


def test_a_zero_class_embedding_leaves_the_unconditional_model_unchanged():
  conditional = unet.UNetConfig(**{**TINY.__dict__, "num_class_embeds": 3})
  params = unet.init_params(conditional, jax.random.PRNGKey(0))
  assert params["class_embedding"]["embedding"].shape == (3, 32)
  assert not np.any(params["class_embedding"]["embedding"])
  plain = {k: v for k, v in params.items() if k != "class_embedding"}
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 2))
  t = jnp.array([10.0, 600.0])
  want = unet.UNet2DModel(TINY).apply({"params": plain}, x, t)
  got = unet.UNet2DModel(conditional).apply({"params": params}, x, t, jnp.array([0, 2]))
  np.testing.assert_array_equal(got, want)
  bumped = jax.tree.map(lambda v: v, params)
  bumped["class_embedding"]["embedding"] = jnp.ones((3, 32))
  moved = unet.UNet2DModel(conditional).apply({"params": bumped}, x, t, jnp.array([0, 2]))
  assert np.abs(np.asarray(moved) - np.asarray(want)).max() > 1e-3
  assert unet.diffusers_key(("class_embedding", "embedding")) == "class_embedding.weight"
  state = diffusers_io.to_state_dict(bumped)
  assert state["class_embedding.weight"].shape == (3, 32)  # [num, dim], as torch's Embedding
  back = diffusers_io.from_state_dict(conditional, state)
  np.testing.assert_array_equal(back["class_embedding"]["embedding"], 1.0)
  with pytest.raises(ValueError, match="num_class_embeds=3 called without class_labels"):
    unet.UNet2DModel(conditional).apply({"params": params}, x, t)


@pytest.mark.parity
@pytest.mark.parametrize("padding,flip,shift,head_dim,classes",
                         [(0, False, 1, None, None), (1, True, 0, 8, None),
                          (0, False, 1, None, 11)])
def test_parity_with_diffusers_unet2dmodel(padding, flip, shift, head_dim, classes):
  torch = pytest.importorskip("torch", reason="parity needs torch: pip install -e '.[parity]'")
  diffusers = pytest.importorskip("diffusers",
                                  reason="parity needs diffusers: pip install -e '.[parity]'")
  cfg = unet.UNetConfig(**{**TINY.__dict__, "downsample_padding": padding,
                           "flip_sin_to_cos": flip, "freq_shift": shift,
                           "attention_head_dim": head_dim, "num_class_embeds": classes})
  torch.manual_seed(0)
  reference = diffusers.UNet2DModel(
      sample_size=cfg.sample_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
      block_out_channels=cfg.block_out_channels, down_block_types=cfg.down_block_types,
      up_block_types=cfg.up_block_types, layers_per_block=cfg.layers_per_block,
      attention_head_dim=cfg.attention_head_dim, norm_num_groups=cfg.norm_num_groups,
      norm_eps=cfg.norm_eps, flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift,
      downsample_padding=cfg.downsample_padding, time_embedding_type="positional",
      num_class_embeds=classes).eval()
  with torch.no_grad():  # random, non-trivial weights everywhere (norm scales included)
    for p in reference.parameters():
      p.copy_(0.2 * torch.randn_like(p))
  params = diffusers_io.from_state_dict(
      cfg, {k: v.numpy() for k, v in reference.state_dict().items()})
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, cfg.in_channels, 16, 16)).astype(np.float32)
  t = np.array([3.0, 777.0], np.float32)
  labels = None if classes is None else np.array([10, 4])
  with torch.no_grad():
    want = reference(torch.from_numpy(x), torch.from_numpy(t),
                     class_labels=None if labels is None else torch.from_numpy(labels)
                     ).sample.numpy()
  got = unet.UNet2DModel(cfg).apply({"params": params}, x.transpose(0, 2, 3, 1), t,
                                    *(() if labels is None else (labels,)))
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, rtol=1e-4,
                             atol=1e-4 * np.abs(want).max())


@pytest.mark.slow
def test_fast_layers_equal_their_reference_formulations():
  """The CPU-fast GroupNorm, 2x upsampling gradient and attention compute what flax's GroupNorm,
  autodiff of jnp.repeat and jax.nn.dot_product_attention compute, to float32 rounding."""
  kx, kg = jax.random.split(jax.random.PRNGKey(0))
  x = 2.0 * jax.random.normal(kx, (2, 6, 4, 24)) + 1.0
  ours, theirs = unet.GroupNorm(8, epsilon=1e-6), nn.GroupNorm(8, epsilon=1e-6)
  variables = {"params": {"scale": jnp.linspace(0.5, 1.5, 24), "bias": jnp.linspace(-1, 1, 24)}}
  f = lambda m: (lambda x: jnp.sum(jnp.sin(m.apply(variables, x))))
  np.testing.assert_allclose(ours.apply(variables, x), theirs.apply(variables, x), atol=2e-5)
  np.testing.assert_allclose(jax.grad(f(ours))(x), jax.grad(f(theirs))(x), atol=2e-5)

  repeat = lambda x: jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  g = jax.random.normal(kg, (2, 12, 8, 24))
  np.testing.assert_array_equal(unet.upsample_nearest2x(x), repeat(x))
  np.testing.assert_allclose(jax.vjp(unet.upsample_nearest2x, x)[1](g)[0],
                             jax.vjp(repeat, x)[1](g)[0], atol=1e-6)

  attention = unet.Attention(groups=8, eps=1e-6, head_dim=8)
  params = attention.init(jax.random.PRNGKey(1), x)

  def reference(x):  # the same layer through jax.nn.dot_product_attention
    p = params["params"]
    h = nn.GroupNorm(8, epsilon=1e-6).apply({"params": p["group_norm"]}, x).reshape(2, 24, 24)
    dense = lambda name, h: h @ p[name]["kernel"] + p[name]["bias"]
    q, k, v = (dense(n, h).reshape(2, 24, 3, 8) for n in ("to_q", "to_k", "to_v"))
    out = jax.nn.dot_product_attention(q, k, v).reshape(2, 24, 24)
    return x + dense("to_out_0", out).reshape(x.shape)

  np.testing.assert_allclose(attention.apply(params, x), reference(x), atol=2e-5)
