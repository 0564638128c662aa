"""What a DDSS step and a K-step sampler cost on the embedded default (the shipped MNIST UNet and
classifier), measured as ratios of programs timed side by side in one process.

Used by benchmarks/suite.py (which writes BENCHMARKS.md); each function returns rows (dicts).
Every program is compiled ahead of time (`jit(...).lower(...).compile()`), run once to warm up,
then timed `repeats` times; the median is reported.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from configs import mnist
from ddss_jax import samplers
from ddss_jax.evaluation import drawing, metrics
from ddss_jax.learn import kid_loss, loop
from ddss_jax.models import unet
from ddss_jax.problems import mnist as mnist_problem
from ddss_jax.problems.base import Conditioning, Problem
from ddss_jax.samplers import conv_layout, schedules
from ddss_jax.samplers.guidance import Guidance
from ddss_jax.settings import TrainConfig, from_group

FAMILY = "ggdm+pred+time"
STRIDE = "linear"  # the quadratic stride repeats t = 0 from K = 30 on; the cost is the same
# The reverse-pass designs compared (recurrence.run's options), the default first.
DESIGNS = {
    "loop": dict(unroll=1, canonical_convs=True),
    "loop_as_traced": dict(unroll=1, canonical_convs=False),
    "unrolled": dict(unroll=None, canonical_convs=True),  # unroll = K
}
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@dataclasses.dataclass(frozen=True)
class Bench:
  """The frozen networks and a real batch of the embedded default."""
  problem: Problem
  batch_size: int
  real: jax.Array

  @property
  def image_bytes(self) -> int:
    """|x|: bytes of one float32 image batch."""
    return self.batch_size * int(np.prod(self.problem.example_shape)) * 4


def build(batch_size: int) -> Bench:
  """The problem of configs/mnist.py (its schedule, shipped networks and data)."""
  config = mnist.get_config()
  schedule = schedules.make(config.schedule.name, config.schedule.num_timesteps)
  problem = mnist_problem.build(from_group(mnist_problem.Config, config.mnist), schedule,
                                 seed=0)
  real = jnp.asarray(problem.real_batch(jax.random.PRNGKey(1), batch_size))
  return Bench(problem, batch_size, real)


def make_sampler(bench: Bench, num_steps: int, design: str = "loop", family: str = FAMILY,
                 gradient: str = "adjoint") -> samplers.Sampler:
  options = dict(DESIGNS[design])
  options["unroll"] = options["unroll"] or num_steps
  return samplers.make(family, bench.problem.schedule, num_steps, stride=STRIDE,
                       gradient=gradient, **options)


@dataclasses.dataclass
class Timing:
  compile_s: float
  seconds: float            # median of the timed calls
  temp_bytes: int           # XLA's temp buffers of the compiled program
  flops: float | None       # XLA's cost analysis (a loop body counts once), where available
  conv_labels: list[str]    # dim_labels of each convolution in the compiled program

  @property
  def noncanonical(self) -> int:
    """Convolutions whose kernel is not in [spatial, in, out] order (XLA:CPU's slow path)."""
    return sum(not conv_layout.has_canonical_kernel(label) for label in self.conv_labels)


def timed(fn: Callable, *args, repeats: int) -> Timing:
  """Compiles fn for args, warms it up, and times `repeats` calls."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(*args))
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    seconds.append(time.perf_counter() - start)
  return Timing(compile_s, statistics.median(seconds),
                compiled.memory_analysis().temp_size_in_bytes, _flops(compiled),
                conv_layout.convolution_labels(compiled.as_text()))


def _flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) if cost and "flops" in cost else None


def ddss_step_fn(bench: Bench, sampler: samplers.Sampler) -> Callable:
  """(sampler params, model params, feature params, real, key) -> (KID, gradient)."""
  return jax.value_and_grad(kid_loss.make_loss_fn(sampler, bench.problem, bench.batch_size))


def sample_fn(bench: Bench, sampler: samplers.Sampler) -> Callable:
  return lambda params, model_params, key: drawing.generate(
      sampler, bench.problem, params, model_params, key, bench.batch_size)


def step_args(bench: Bench, sampler: samplers.Sampler) -> tuple:
  p = bench.problem
  return (sampler.init(), p.model_params, p.feature_params, bench.real, jax.random.PRNGKey(0))


def model_flops(bench: Bench) -> dict[str, float | None]:
  """FLOPs of the loop-free parts, from XLA's cost analysis: one model call, one model call with
  its input gradient (what each reverse step runs), and features + KID with their gradient.
  (XLA counts a loop body once, so the sampler's FLOPs are K times these.)"""
  p = bench.problem
  x = jax.random.normal(jax.random.PRNGKey(2), bench.real.shape)
  t = jnp.full((bench.batch_size,), 500.0)
  call = jax.jit(p.eps_apply).lower(p.model_params, x, t).compile()
  vjp = lambda mp, x, t: jax.vjp(lambda x_, t_: p.eps_apply(mp, x_, t_), x, t)[1](x)
  vjp = jax.jit(vjp).lower(p.model_params, x, t).compile()
  feats = lambda fp, g, r: metrics.kid(p.feature_apply(fp, g), p.feature_apply(fp, r))
  feats = jax.jit(jax.value_and_grad(feats, 1)).lower(p.feature_params, x, bench.real).compile()
  return dict(call=_flops(call), call_and_input_gradient=_flops(vjp), features=_flops(feats))


def gradient_cost(bench: Bench, num_steps: list[int], designs: list[str], repeats: int,
                  on_row: Callable[[list[dict[str, Any]]], None] = lambda rows: None
                  ) -> list[dict[str, Any]]:
  """DDSS step time over K-step sampling time, per K and design (target <= 4). `on_row(rows)`
  is called after each row."""
  flops = model_flops(bench)
  known = None not in flops.values()
  rows = []
  for k in num_steps:
    for design in designs:
      sampler = make_sampler(bench, k, design)
      args = step_args(bench, sampler)
      step = timed(ddss_step_fn(bench, sampler), *args, repeats=repeats)
      sample = timed(sample_fn(bench, sampler), args[0], args[1], args[4], repeats=repeats)
      rows.append(dict(design=design, k=k, step_s=step.seconds, sample_s=sample.seconds,
                       ratio=step.seconds / sample.seconds, compile_s=step.compile_s,
                       temp_mb=step.temp_bytes / 2**20, convolutions=len(step.conv_labels),
                       noncanonical_convolutions=step.noncanonical,
                       step_flops=(k * (flops["call"] + flops["call_and_input_gradient"])
                                   + flops["features"]) if known else None,
                       sample_flops=k * flops["call"] if known else None))
      print(f"  gradient cost: {rows[-1]}", flush=True)
      on_row(rows)
  return rows


def memory(bench: Bench, num_steps: list[int], gradients: list[str]) -> list[dict[str, Any]]:
  """Temp memory and compile time of the compiled DDSS step per K (compiled, not run)."""
  rows = []
  # The first compile of a code path pays one-off tracing costs: warm each path up at K = 2.
  for gradient in gradients:
    sampler = make_sampler(bench, 2, gradient=gradient)
    jax.jit(ddss_step_fn(bench, sampler)).lower(*step_args(bench, sampler)).compile()
  for gradient in gradients:
    for k in num_steps:
      sampler = make_sampler(bench, k, gradient=gradient)
      fn = jax.jit(ddss_step_fn(bench, sampler))
      start = time.perf_counter()
      compiled = fn.lower(*step_args(bench, sampler)).compile()
      seconds = time.perf_counter() - start
      rows.append(dict(gradient=gradient, k=k, temp=compiled.memory_analysis().temp_size_in_bytes,
                       compile_s=seconds))
      print(f"  memory: {rows[-1]}", flush=True)
  for row in rows:
    first = next(r for r in rows if r["gradient"] == row["gradient"])
    previous = [r for r in rows if r["gradient"] == row["gradient"] and r["k"] < row["k"]]
    slope = lambda ref: (row["temp"] - ref["temp"]) / (row["k"] - ref["k"]) / bench.image_bytes
    row["per_step_first"] = slope(first) if row is not first else None
    row["per_step_previous"] = slope(previous[-1]) if previous else None
    row["compile_ratio"] = row["compile_s"] / first["compile_s"]
  return rows


def compile_count(bench: Bench, num_steps: int, num_train_steps: int) -> dict[str, Any]:
  """XLA compilations while running `num_train_steps` optimisation steps (the train step of
  loop.make_train_step, its state donated and replaced each step): should be 1."""
  compiles = []

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if event == COMPILE_EVENT:
      compiles.append(event)

  sampler = make_sampler(bench, num_steps)
  optimizer = loop.create_optimizer(from_group(TrainConfig, mnist.get_config().train))
  step_fn = loop.make_train_step(sampler, bench.problem, optimizer, bench.batch_size)
  state = loop.create_train_state(sampler.init(), optimizer)
  key, p = jax.random.PRNGKey(0), bench.problem
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    for step in range(num_train_steps):
      real = jnp.asarray(p.real_batch(jax.random.PRNGKey(100 + step), bench.batch_size))
      state, step_metrics = step_fn(state, p.model_params, p.feature_params, real, key)
      jax.block_until_ready(step_metrics)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  # Small helper programs (the fresh real batch, the state's copy) compile too; count the step's.
  return dict(k=num_steps, train_steps=num_train_steps, step_compiles=step_fn._cache_size(),
              all_compiles=len(compiles))


def overhead(bench: Bench, num_steps: int, families: list[str],
             repeats: int) -> list[dict[str, Any]]:
  """K-step sampling time over K times one model call at the same batch (target <= 1.05), and
  over a compiled loop of K bare model calls (the sampler's own arithmetic alone)."""
  p = bench.problem
  x = jax.random.normal(jax.random.PRNGKey(2), (bench.batch_size,) + tuple(p.example_shape))
  t = jnp.full((bench.batch_size,), 500.0)
  call = timed(p.eps_apply, p.model_params, x, t, repeats=repeats)
  bare = lambda params, x, t: jax.lax.fori_loop(0, num_steps,
                                                lambda i, x: p.eps_apply(params, x, t), x)
  bare_loop = timed(bare, p.model_params, x, t, repeats=repeats)
  rows = []
  for family in families:
    sampler = make_sampler(bench, num_steps, family=family)
    sample = timed(sample_fn(bench, sampler), sampler.init(), p.model_params,
                   jax.random.PRNGKey(0), repeats=repeats)
    rows.append(dict(family=family, k=num_steps, sample_s=sample.seconds, call_s=call.seconds,
                     ratio=sample.seconds / (num_steps * call.seconds),
                     bare_loop_s=bare_loop.seconds,
                     ratio_bare_loop=sample.seconds / bare_loop.seconds))
    print(f"  overhead: {rows[-1]}", flush=True)
  return rows


def feature_share(bench: Bench, gradient_rows: list[dict[str, Any]],
                  repeats: int) -> list[dict[str, Any]]:
  """Time of the feature network and KID (real features, generated features, KID, and their
  backward pass) as a share of the DDSS step of the default design at each K."""
  p = bench.problem
  generated = jax.random.normal(jax.random.PRNGKey(3), bench.real.shape)

  def loss(generated, feature_params, real):
    real_feats = jax.lax.stop_gradient(p.feature_apply(feature_params, real))
    return metrics.kid(p.feature_apply(feature_params, generated), real_feats)

  part = timed(jax.value_and_grad(loss), generated, p.feature_params, bench.real,
               repeats=repeats)
  return [dict(k=row["k"], features_s=part.seconds, step_s=row["step_s"],
               share=part.seconds / row["step_s"])
          for row in gradient_rows if row["design"] == "loop"]


def conditional_problem(bench: Bench) -> Problem:
  """The bench's problem with a class-conditional UNet: the shipped weights plus a class
  embedding of 11 rows (10 digits and "none", label 10), random (the cost does not depend on
  the values)."""
  cfg = dataclasses.replace(unet.MNIST_UNET, num_class_embeds=11)
  model = unet.UNet2DModel(cfg)
  params = dict(bench.problem.model_params)
  params["class_embedding"] = {"embedding": 0.1 * jax.random.normal(
      jax.random.PRNGKey(6), (11, 4 * cfg.block_out_channels[0]))}
  return dataclasses.replace(
      bench.problem, eps_apply=lambda p, x, t, c: model.apply({"params": p}, x, t, c),
      model_params=params, conditioning=Conditioning(
          null=jnp.asarray(10), real=None, embed=lambda labels: jax.nn.one_hot(labels, 10),
          held_out=None, classes=lambda labels: labels, num_classes=10))


def guidance_cost(bench: Bench, num_steps: list[int], repeats: int) -> list[dict[str, Any]]:
  """The guided DDSS step (class-conditional UNet, both predictions in one call on 2B, learned
  per-step weights) over the unconditional one at the same batch and K (target <= 2.2)."""
  conditional = conditional_problem(bench)
  labels = jnp.arange(bench.batch_size) % 10
  p = bench.problem
  rows = []
  for k in num_steps:
    plain = make_sampler(bench, k)
    guided = samplers.make(FAMILY, p.schedule, k, stride=STRIDE,
                           guidance=Guidance(weight=2.0, learn=True))

    guided_loss = kid_loss.make_loss_fn(guided, conditional, bench.batch_size)
    step = timed(ddss_step_fn(bench, plain), *step_args(bench, plain), repeats=repeats)
    guided_step = timed(jax.value_and_grad(guided_loss), guided.init(),
                        conditional.model_params, p.feature_params,
                        {"x": bench.real, "cond": labels, "sample_cond": labels},
                        jax.random.PRNGKey(0), repeats=repeats)
    rows.append(dict(k=k, step_s=step.seconds, guided_step_s=guided_step.seconds,
                     ratio=guided_step.seconds / step.seconds,
                     guided_compile_s=guided_step.compile_s))
    print(f"  guidance cost: {rows[-1]}", flush=True)
  return rows
