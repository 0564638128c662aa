"""The root cause of slow DDSS steps in a compiled loop on XLA:CPU, in isolation.

  python -m benchmarks.conv_in_loop [--batch=64] [--size=32] [--channels=32] [--steps=5]

Times `steps` iterations of "convolution, then its gradient with respect to the input" (3x3,
SAME, NHWC) in four forms, side by side: unrolled; inside `lax.fori_loop` as JAX traces it (the
gradient's kernel labelled [spatial, out, in]); inside the loop after
`ddss_jax.samplers.conv_layout.canonical_convolutions`; and the forward convolution alone in the
loop. Prints each form's median time and the `dim_labels` of its compiled convolutions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import app, flags
from jax import lax

from benchmarks import costs
from ddss_jax.samplers import conv_layout

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 64, "Batch.")
flags.DEFINE_integer("size", 32, "Height and width.")
flags.DEFINE_integer("channels", 32, "Input and output channels.")
flags.DEFINE_integer("steps", 5, "Iterations.")
flags.DEFINE_integer("repeats", 5, "Timed calls (median).")


def conv(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_and_input_gradient(x, w):
  y, vjp = jax.vjp(lambda x_: conv(x_, w), x)
  return jnp.tanh(vjp(y)[0])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  kx, kw = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(kx, (FLAGS.batch, FLAGS.size, FLAGS.size, FLAGS.channels))
  w = 0.1 * jax.random.normal(kw, (3, 3, FLAGS.channels, FLAGS.channels))
  n = FLAGS.steps

  def unrolled(x, w):
    for _ in range(n):
      x = conv_and_input_gradient(x, w)
    return x

  canonical = conv_layout.canonical_convolutions(conv_and_input_gradient)
  forms = {
      "unrolled": unrolled,
      "loop, as traced": lambda x, w: lax.fori_loop(
          0, n, lambda i, h: conv_and_input_gradient(h, w), x),
      "loop, canonical_convolutions": lambda x, w: lax.fori_loop(
          0, n, lambda i, h: canonical(h, w), x),
      "loop, forward convolution only": lambda x, w: lax.fori_loop(
          0, n, lambda i, h: jnp.tanh(conv(h, w)), x),
  }
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; x {list(x.shape)}, "
        f"{n} iterations\n\n| form | ms | compiled convolutions |\n|---|---:|---|")
  for name, fn in forms.items():
    timing = costs.timed(fn, x, w, repeats=FLAGS.repeats)
    labels = ", ".join(sorted(set(timing.conv_labels))) or "library calls"
    print(f"| {name} | {1e3 * timing.seconds:.1f} | {labels} |")

if __name__ == "__main__":
  app.run(main)
