"""Bytes exchanged between devices against FLOPs, per DDSS step, as the device count grows.

Compiles (does not run) the data-parallel DDSS gradient step (ddss_jax.learn.kid_loss.make_loss_fn
on a mesh) for D simulated CPU devices at a fixed per-device batch, with the sampler's K steps
unrolled so that XLA's static counts are the dynamic ones, and reads from the compiled per-device
program:
  - FLOPs (XLA's cost analysis),
  - every collective (all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute) and
    its result size; the bytes a device sends are estimated for ring algorithms: all-gather
    (D-1)/D x result, all-reduce 2 (D-1)/D x result, reduce-scatter (D-1) x result.
Then it prints, for an accelerator of --peak_tflops and a link of --link_gbps, the time of the
step's compute and of its communication, and extrapolates both to --extrapolate device counts:
FLOPs per device stay constant at a fixed per-device batch (the KID kernel rows are split too,
so they add only B^2 / D), while the bytes grow with the global batch (KID needs every
feature on every device), linearly, at the rate measured at the largest D. The model is
google/ddpm-cifar10-32's architecture and the KID features are the FID Inception's pool3 (random
weights; costs only).

Usage (from the repository root; sets its own simulated device count):
  python -m benchmarks.communication --devices=2,4,8 --per_device_batch=8 --num_steps=5
"""

from __future__ import annotations

import os
import re
import sys

_MAX_DEVICES = max(int(v) for v in next(
    (a.split("=", 1)[1] for a in sys.argv if a.startswith("--devices=")), "2,4,8").split(","))
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={_MAX_DEVICES}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from ddss_jax import samplers  # noqa: E402
from ddss_jax.learn import kid_loss  # noqa: E402
from ddss_jax.models import inception, unet  # noqa: E402
from ddss_jax.problems.base import Problem  # noqa: E402
from ddss_jax.samplers import schedules  # noqa: E402
from ddss_jax.util import parallel  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("devices", ["2", "4", "8"], "Device counts D (simulated CPU devices).")
flags.DEFINE_integer("per_device_batch", 8, "Generated (and real) images per device.")
flags.DEFINE_integer("num_steps", 5, "K.")
flags.DEFINE_float("inception_width", 1.0, "FID Inception width (1.0: the real network).")
flags.DEFINE_float("peak_tflops", 400.0, "Sustained float32-equivalent TFLOP/s of one device.")
flags.DEFINE_float("link_gbps", 100.0, "Bytes/s per device between devices, in GB/s.")
flags.DEFINE_list("extrapolate", ["64", "256", "1024", "4096"], "Device counts to extrapolate to.")

_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1,
          "f64": 8, "s64": 8, "u64": 8}
_COLLECTIVE = re.compile(r"=\s*(\(?[^=]*?\)?)\s+(all-reduce|all-gather|reduce-scatter|all-to-all|"
                         r"collective-permute)(?:-start)?\(")
_SHAPE = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")


def collectives(hlo: str) -> list[tuple[str, int]]:
  """(kind, result bytes) of every collective in a compiled HLO module's text."""
  out = []
  for match in _COLLECTIVE.finditer(hlo):
    result, kind = match.groups()
    size = sum(_BYTES.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
               for dtype, dims in _SHAPE.findall(result))
    out.append((kind, size))
  return out


def sent_bytes(kind: str, size: int, devices: int) -> float:
  """Bytes one device sends for a collective with a result of `size` bytes (ring algorithms)."""
  frac = (devices - 1) / devices
  return {"all-reduce": 2 * frac * size, "all-gather": frac * size,
          "reduce-scatter": (devices - 1) * size}.get(kind, size)


def problem() -> Problem:
  model = unet.UNet2DModel(unet.DDPM_CIFAR10)
  network = inception.FIDInceptionV3(width=FLAGS.inception_width)
  variables = jax.eval_shape(network.init, jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3)))
  return Problem(
      name="cost", schedule=schedules.linear_beta(1000), example_shape=(32, 32, 3),
      eps_apply=lambda p, x, t: model.apply({"params": p}, x, t),
      model_params=jax.eval_shape(lambda: unet.init_params(unet.DDPM_CIFAR10,
                                                           jax.random.PRNGKey(0))),
      feature_apply=lambda v, x: network.apply(v, x)["pool3"], feature_params=variables,
      real_batch=None, evaluate=None, plot=None)


def main(argv):
  del argv
  prob = problem()
  k = FLAGS.num_steps
  sampler = samplers.make("ggdm+pred+time", prob.schedule, k, stride="quadratic", unroll=k)
  print("| devices | global batch | GFLOP per device | collectives | MB sent per device | "
        "FLOP per byte | compute ms | communication ms |")
  print("|---:|---:|---:|---|---:|---:|---:|---:|")
  row = lambda devices, batch, flops, kinds, sent: print(
      f"| {devices} | {batch} | {flops / 1e9:.1f} | {kinds} | {sent / 1e6:.2f} | "
      f"{flops / max(sent, 1):.3g} | {flops / (FLAGS.peak_tflops * 1e12) * 1e3:.2f} | "
      f"{sent / (FLAGS.link_gbps * 1e9) * 1e3:.3f} |", flush=True)
  for devices in [int(d) for d in FLAGS.devices]:
    mesh = parallel.make_mesh(jax.devices()[:devices])
    batch = FLAGS.per_device_batch * devices
    loss = kid_loss.make_loss_fn(sampler, prob, batch, mesh)
    rep, split = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    step = jax.jit(jax.value_and_grad(loss), in_shardings=(rep, rep, rep, split, rep))
    real = jax.ShapeDtypeStruct((batch, 32, 32, 3), jnp.float32)
    compiled = step.lower(sampler.init(), prob.model_params, prob.feature_params, real,
                          jax.random.PRNGKey(0)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost["flops"])
    found = collectives(compiled.as_text())
    sent = sum(sent_bytes(kind, size, devices) for kind, size in found)
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(
        {kind: sum(1 for k_, _ in found if k_ == kind) for kind, _ in found}.items()))
    row(devices, batch, flops, kinds, sent)
  per_example = sent / (batch * (devices - 1) / devices)  # bytes sent per global example
  for big in [int(d) for d in FLAGS.extrapolate]:
    big_batch = FLAGS.per_device_batch * big
    row(big, big_batch, flops, "(extrapolated)", per_example * big_batch * (big - 1) / big)
  even = FLAGS.link_gbps * 1e9 * flops / (FLAGS.peak_tflops * 1e12) / (
      per_example * FLAGS.per_device_batch)
  print(f"\nbytes sent per global example: {per_example / 1e3:.1f} kB; communication time equals "
        f"compute time at about {even:.0f} devices (per-device batch {FLAGS.per_device_batch}, "
        f"{FLAGS.peak_tflops:g} TFLOP/s, {FLAGS.link_gbps:g} GB/s)")


if __name__ == "__main__":
  app.run(main)
