"""Gradient memory and compile time of a K-step sampler: "adjoint" vs "checkpoint".

For each gradient mode and each K, compiles jax.jit(jax.grad(loss)) with
    loss(params, model_params, key) = mean(sampler.sample(params, eps_fn, key, shape) ** 2)
where eps_fn is a small conv net whose weights are a jit argument (not closed over), and
reports XLA's temp buffer size of the compiled program and the lower + compile wall time.

The adjoint reverse pass is designed to keep the K + 1 states and their K + 1 cotangents, so its
temp memory should grow by about 2 |x| per extra step (|x| = bytes of one batch); the checkpointed
scan saves the whole history carry at every step, so its growth per step should itself grow
linearly in K (O(K^2 |x|) in total).

Usage (from the repository root):
  python -m benchmarks.sampler_memory [--num_steps=5,10,20,40] [--out=FILE.md]
"""

from __future__ import annotations

import functools
import math
import time
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import app, flags

from ddss_jax import samplers, schedules
from ddss_jax.models.embeddings import sinusoidal_embedding

FLAGS = flags.FLAGS
flags.DEFINE_list("num_steps", ["5", "10", "20", "40"], "Values of K, increasing.")
flags.DEFINE_list("gradients", list(samplers.recurrence.GRADIENTS), "Gradient modes to compare.")
flags.DEFINE_string("family", "ggdm+pred+time", "Sampler family.")
flags.DEFINE_string("stride", "linear", "Initial stride (quadratic repeats t = 0 for K >= 30).")
flags.DEFINE_integer("batch", 8, "Batch size B.")
flags.DEFINE_integer("size", 32, "Image height and width.")
flags.DEFINE_integer("channels", 1, "Image channels.")
flags.DEFINE_integer("width", 32, "Conv channels of the eps model.")
flags.DEFINE_integer("repeats", 2, "Compiles per point; the fastest compile time is reported.")
flags.DEFINE_string("out", None, "Optional Markdown file to write the header and table to.")

MB = 2.0**20


class ConvEps(nn.Module):
  """A small eps model: 3x3 convs, GroupNorm, SiLU, a per-channel time embedding."""
  width: int = 32
  out_channels: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    emb = nn.Dense(self.width)(sinusoidal_embedding(t, dim=self.width))
    h = nn.Conv(self.width, (3, 3))(x)
    h = h + emb[:, None, None, :]
    for _ in range(2):
      h = nn.Conv(self.width, (3, 3))(nn.silu(nn.GroupNorm(num_groups=8)(h)))
    return nn.Conv(self.out_channels, (3, 3))(nn.silu(nn.GroupNorm(num_groups=8)(h)))


def make_loss(sampler: samplers.Sampler, model: nn.Module, shape: tuple[int, ...]):
  """loss(params, model_params, key): mean squared sample; the model weights are an argument."""
  def loss(params, model_params, key):
    eps_fn = functools.partial(model.apply, model_params)
    return jnp.mean(sampler.sample(params, eps_fn, key, shape) ** 2)
  return loss


def compile_once(sampler: samplers.Sampler, model: nn.Module, model_params,
                 shape: tuple[int, ...]) -> tuple[int, float]:
  """(temp bytes, lower + compile seconds) of jit(grad(loss)) for one sampler."""
  # A fresh loss closure and jit object each time, so nothing is reused from a cache.
  grad_fn = jax.jit(jax.grad(make_loss(sampler, model, shape)))
  args = (sampler.init(), model_params, jax.random.PRNGKey(0))
  start = time.perf_counter()
  compiled = grad_fn.lower(*args).compile()
  seconds = time.perf_counter() - start
  return compiled.memory_analysis().temp_size_in_bytes, seconds


def measure(sampler: samplers.Sampler, model: nn.Module, model_params,
            shape: tuple[int, ...], repeats: int) -> tuple[int, float]:
  """(temp bytes, fastest lower + compile seconds over `repeats` compiles)."""
  results = [compile_once(sampler, model, model_params, shape) for _ in range(max(repeats, 1))]
  return results[0][0], min(seconds for _, seconds in results)


def add_slopes(rows: list[dict], image_bytes: int) -> list[dict]:
  """Adds per-extra-step temp growth (vs the first K and vs the previous K) in units of |x|."""
  out = []
  for n, row in enumerate(rows):
    first, prev = rows[0], rows[max(n - 1, 0)]
    slope = lambda ref: ((row["temp"] - ref["temp"]) / (row["k"] - ref["k"]) / image_bytes
                         if row["k"] != ref["k"] else float("nan"))
    out.append(dict(row, slope_first=slope(first), slope_prev=slope(prev),
                    ratio=row["seconds"] / first["seconds"]))
  return out


def fmt(value: float, spec: str) -> str:
  return "-" if math.isnan(value) else format(value, spec)


def markdown_table(rows: list[dict]) -> str:
  """The results as a Markdown table."""
  x = r"\|x\|"  # pipes inside a cell must be escaped in Markdown
  lines = [f"| gradient | K | temp MB | temp per extra step vs first K ({x}) "
           f"| temp per extra step vs previous K ({x}) | compile s | compile ratio vs first K |",
           "|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['gradient']} | {r['k']} | {r['temp'] / MB:.2f} "
                 f"| {fmt(r['slope_first'], '.2f')} | {fmt(r['slope_prev'], '.2f')} "
                 f"| {r['seconds']:.2f} | {r['ratio']:.2f} |")
  return "\n".join(lines)


def header(shape: Sequence[int], image_bytes: int, family: str, stride: str) -> str:
  device = jax.devices()[0]
  return (f"jax {jax.__version__}, backend {jax.default_backend()}, device {device.device_kind}; "
          f"x shape {list(shape)} float32, |x| = {image_bytes} bytes ({image_bytes / MB:.3f} MB); "
          f"family {family}, stride {stride}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  ks = sorted(int(k) for k in FLAGS.num_steps)
  shape = (FLAGS.batch, FLAGS.size, FLAGS.size, FLAGS.channels)
  image_bytes = math.prod(shape) * 4
  schedule = schedules.linear_beta(1000)
  model = ConvEps(width=FLAGS.width, out_channels=FLAGS.channels)
  model_params = model.init(jax.random.PRNGKey(1), jnp.zeros(shape), jnp.zeros(shape[:1]))
  # Warm up each mode at K = 2: the first compile of a code path pays one-off (Python, tracing
  # cache) costs that would otherwise inflate the first K's time and skew the ratios.
  for gradient in FLAGS.gradients:
    compile_once(samplers.make(FLAGS.family, schedule, 2, stride=FLAGS.stride, gradient=gradient),
                 model, model_params, shape)
  print(header(shape, image_bytes, FLAGS.family, FLAGS.stride), flush=True)

  total = time.perf_counter()
  rows = []
  for gradient in FLAGS.gradients:
    mode_rows = []
    for k in ks:
      sampler = samplers.make(FLAGS.family, schedule, k, stride=FLAGS.stride, gradient=gradient)
      temp, seconds = measure(sampler, model, model_params, shape, FLAGS.repeats)
      print(f"  {gradient} K={k}: temp {temp / MB:.2f} MB, compile {seconds:.2f} s", flush=True)
      mode_rows.append(dict(gradient=gradient, k=k, temp=temp, seconds=seconds))
    rows += add_slopes(mode_rows, image_bytes)
  table = markdown_table(rows)
  print(table)
  print(f"total measurement time {time.perf_counter() - total:.1f} s")
  if FLAGS.out:
    with open(FLAGS.out, "w", encoding="utf-8") as f:
      f.write(f"{header(shape, image_bytes, FLAGS.family, FLAGS.stride)}\n\n{table}\n")


if __name__ == "__main__":
  app.run(main)
