"""ddss_jax.samplers.conv_layout: the canonical-convolution rewrite computes the same values and
gradients, and leaves no non-canonical convolution inside the sampler's compiled reverse loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ddss_jax import samplers
from ddss_jax.models import unet
from ddss_jax.samplers import conv_layout, schedules

# (dimension numbers, input shape, kernel shape, options): every spec order, strides, dilations,
# grouped and transposed (lhs-dilated) convolutions.
CASES = [
    (("NCHW", "OIHW", "NCHW"), (2, 4, 9, 7), (6, 4, 3, 3), {}),
    (("NHWC", "HWIO", "NHWC"), (2, 9, 7, 4), (3, 3, 4, 6), dict(window_strides=(2, 1))),
    (("NHWC", "HWOI", "NCHW"), (2, 9, 7, 4), (3, 3, 6, 2),
     dict(feature_group_count=2, rhs_dilation=(2, 1))),
    (("NWHC", "OHWI", "CNHW"), (2, 7, 9, 4), (6, 3, 3, 4), dict(lhs_dilation=(2, 2))),
]


def conv(x, w, dn, window_strides=(1, 1), **options):
  return lax.conv_general_dilated(x, w, window_strides, ((1, 1), (1, 1)), dimension_numbers=dn,
                                  **options)


@pytest.mark.slow
@pytest.mark.parametrize("dn,x_shape,w_shape,options", CASES)
def test_canonical_convolutions_compute_the_same_values_and_gradients(dn, x_shape, w_shape,
                                                                      options):
  kx, kw = jax.random.split(jax.random.PRNGKey(0))
  x, w = jax.random.normal(kx, x_shape), jax.random.normal(kw, w_shape)
  # A jitted sub-function (inlined by the rewrite) and a scan (passed through) around the conv.
  inner = jax.jit(lambda x, w: jnp.sin(conv(x, w, dn, **options)))
  fn = lambda x, w: lax.scan(lambda c, _: (c * 0.5, None), inner(x, w), None, length=2)[0]
  canonical = conv_layout.canonical_convolutions(fn)
  np.testing.assert_allclose(jax.jit(canonical)(x, w), fn(x, w), rtol=1e-6, atol=1e-6)
  loss = lambda f: (lambda x, w: jnp.sum(f(x, w) ** 2))
  for got, want in zip(jax.grad(loss(canonical), (0, 1))(x, w), jax.grad(loss(fn), (0, 1))(x, w)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Every convolution of the rewritten function is in canonical order (before XLA's passes).
  text = jax.jit(canonical).lower(x, w).as_text(dialect="hlo")
  assert conv_layout.conv_dimension_labels(text) == ["b01f_01io->b01f"]


def test_rewrite_keeps_pytrees_and_closed_over_values():
  scale = jnp.float32(3.0)
  fn = lambda tree: {"y": tree["a"] * scale, "z": (tree["b"] + 1.0,)}
  out = conv_layout.canonical_convolutions(fn)({"a": jnp.ones(2), "b": jnp.zeros(3)})
  assert set(out) == {"y", "z"} and isinstance(out["z"], tuple)
  np.testing.assert_array_equal(out["y"], [3.0, 3.0])


TINY = unet.UNetConfig(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
                       norm_num_groups=4)


def compiled_gradient(canonical_convs):
  model = unet.UNet2DModel(TINY)
  model_params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)))
  sampler = samplers.make("ggdm+pred+time", schedules.linear_beta(1000), 3, unroll=1,
                          canonical_convs=canonical_convs)

  def loss(params, model_params, key):
    eps_fn = functools.partial(model.apply, model_params)
    return jnp.mean(sampler.sample(params, eps_fn, key, (4, 8, 8, 1)) ** 2)

  args = (sampler.init(), model_params, jax.random.PRNGKey(1))
  grad_fn = jax.jit(jax.value_and_grad(loss))
  return grad_fn(*args), grad_fn.lower(*args).compile().as_text()


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu",
                    reason="reads XLA:CPU's compiled convolutions (GPUs compile to library calls)")
def test_sampler_reverse_loop_runs_only_canonical_convolutions():
  (loss, grads), text = compiled_gradient(True)
  (loss_ref, grads_ref), text_ref = compiled_gradient(False)
  kernels = lambda labels: {label.split("_")[1].split("->")[0] for label in labels}
  # As traced, the input gradients inside the while loop keep [spatial, out, in] kernels, which
  # XLA:CPU runs on its slow generic path; rewritten, every kernel is [spatial, in, out].
  assert "01oi" in kernels(conv_layout.conv_dimension_labels(text_ref))
  assert kernels(conv_layout.conv_dimension_labels(text)) == {"01io"}
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * float(jnp.abs(want).max()))


def test_make_rejects_a_non_boolean_canonical_convs():
  with pytest.raises(ValueError, match="canonical_convs must be True, False or None, got 'yes'"):
    samplers.make("ddim", schedules.linear_beta(1000), 3, canonical_convs="yes")
