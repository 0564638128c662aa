"""Run by tests/test_parallel.py in a fresh process with 8 simulated CPU devices (XLA_FLAGS).

Builds a tiny image problem (a random UNet eps-model, random conv features, random "real" data),
then computes, for the same global batch, the DDSS loss, its gradient and one optimizer step on a
1-device mesh, on no mesh, and on the 8-device mesh, and guided class-conditional samples of a
learned-guidance sampler with their gradient (the labels split with their batch); prints the
largest differences as JSON.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from ddss_jax import samplers
from ddss_jax.evaluation import drawing
from ddss_jax.learn import kid_loss, loop
from ddss_jax.models import unet
from ddss_jax.problems.base import Conditioning, Problem
from ddss_jax.samplers import schedules
from ddss_jax.samplers.guidance import Guidance
from ddss_jax.settings import TrainConfig
from ddss_jax.util import parallel

BATCH = 16
CFG = unet.UNetConfig(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
                      down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                      up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
                      norm_num_groups=4)


def tiny_problem() -> Problem:
  model = unet.UNet2DModel(CFG)
  feature_kernel = jax.random.normal(jax.random.PRNGKey(7), (3, 3, 1, 16)) / 3.0

  def features(kernel, x):  # tanh, a conv, ReLU, spatial mean: [B, 8, 8, 1] -> [B, 16]
    h = jax.lax.conv_general_dilated(jnp.tanh(x), kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.mean(jax.nn.relu(h), axis=(1, 2))

  return Problem(
      name="tiny", schedule=schedules.linear_beta(1000), example_shape=(8, 8, 1),
      eps_apply=lambda p, x, t: model.apply({"params": p}, x, t),
      model_params=unet.init_params(CFG, jax.random.PRNGKey(0)), feature_apply=features,
      feature_params=feature_kernel,
      real_batch=lambda key, n, rows=slice(None): jax.random.uniform(
          key, (n, 8, 8, 1), minval=-1, maxval=1)[rows],
      evaluate=None, plot=None)


def run(mesh):
  problem = tiny_problem()
  sampler = samplers.make("ggdm+pred+time", problem.schedule, 3, stride="quadratic")
  cfg = TrainConfig(num_train_steps=1, batch_size=BATCH, learning_rate=1e-2, grad_clip=1.0,
                    b1=0.9, b2=0.99, seed=0, log_every_steps=1, checkpoint_every_steps=1,
                    nonfinite="stop", max_consecutive_skips=10)
  optimizer = loop.create_optimizer(cfg)
  real = np.asarray(problem.real_batch(jax.random.PRNGKey(3), BATCH))
  key = jax.random.PRNGKey(4)
  loss_fn = kid_loss.make_loss_fn(sampler, problem, BATCH, mesh)
  grad_fn = jax.jit(jax.value_and_grad(loss_fn))
  state = loop.create_train_state(sampler.init(), optimizer)
  step = loop.make_train_step(sampler, problem, optimizer, BATCH, mesh)
  if mesh is not None:
    real = parallel.shard_batch(real[parallel.process_rows(BATCH)], mesh, BATCH)
    state = jax.device_put(state, parallel.replicated(mesh))
  loss, grads = grad_fn(sampler.init(), problem.model_params, problem.feature_params, real,
                        jax.random.fold_in(key, 0))
  state, _ = step(state, problem.model_params, problem.feature_params, real, key)
  return {"loss": np.asarray(loss), "grads": jax.tree.map(np.asarray, grads),
          "params": jax.tree.map(np.asarray, state.params),
          "real_spec": str(real.sharding.spec) if mesh is not None else None}


def run_guided(mesh):
  """Guided samples of a class-conditional UNet (labels 0..2, 3 = none) and the gradient of
  their mean square w.r.t. the sampler's parameters, learned guidance weights included."""
  cfg = unet.UNetConfig(**{**CFG.__dict__, "num_class_embeds": 4})
  model = unet.UNet2DModel(cfg)
  params = unet.init_params(cfg, jax.random.PRNGKey(0))
  params["class_embedding"]["embedding"] = jax.random.normal(jax.random.PRNGKey(1), (4, 32))
  problem = Problem(
      name="tiny-conditional", schedule=schedules.linear_beta(1000), example_shape=(8, 8, 1),
      eps_apply=lambda p, x, t, c: model.apply({"params": p}, x, t, c), model_params=params,
      feature_apply=None, feature_params=None, real_batch=None, evaluate=None, plot=None,
      conditioning=Conditioning(null=jnp.asarray(3), real=None, embed=None, held_out=None))
  sampler = samplers.make("ggdm+pred+time", problem.schedule, 3,
                          guidance=Guidance(weight=2.0, learn=True))
  labels = jnp.arange(BATCH) % 3
  if mesh is not None:
    labels = jax.device_put(labels, parallel.batch_sharding(mesh))
  value = lambda p: jnp.mean(drawing.generate(sampler, problem, p, params, jax.random.PRNGKey(5),
                                              BATCH, mesh, cond=labels) ** 2)
  loss, grads = jax.jit(jax.value_and_grad(value))(sampler.init())
  return {"loss": np.asarray(loss), "grads": jax.tree.map(np.asarray, grads),
          "params": {}}


def max_diffs(a, b):
  out = {}
  for name in ("loss", "grads", "params"):
    if not jax.tree.leaves(b[name]):
      continue
    diffs = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a[name],
                                         b[name]))
    scales = jax.tree.leaves(jax.tree.map(lambda y: float(np.max(np.abs(y))), b[name]))
    out[name] = {"max_abs_diff": max(diffs), "max_abs": max(scales)}
  return out


def main():
  assert jax.device_count() == 8, jax.devices()
  single = run(None)
  one = run(parallel.make_mesh(jax.devices()[:1]))
  eight = run(parallel.make_mesh())
  # Evaluation features: chunks split over the 8 devices give the unsplit outputs.
  images = np.random.default_rng(0).normal(size=(20, 8, 8, 1)).astype(np.float32)
  features = jax.jit(lambda x: {"mean": jnp.mean(jnp.tanh(x), axis=(1, 2, 3)),
                                "corner": x[:, 0, 0]})
  split = parallel.padded_apply(features, images, 16, parallel.make_mesh())
  whole = parallel.padded_apply(features, images, 16)
  report = {"devices": jax.device_count(), "eight_real_spec": eight["real_spec"],
            "features_split_vs_whole": max(float(np.max(np.abs(split[k] - whole[k])))
                                           for k in whole),
            "features_shape": list(split["corner"].shape),
            "one_device_mesh_vs_no_mesh": max_diffs(one, single),
            "eight_vs_one": max_diffs(eight, one),
            "guided_eight_vs_one": max_diffs(run_guided(parallel.make_mesh()),
                                             run_guided(parallel.make_mesh(jax.devices()[:1]))),
            "loss": float(one["loss"])}
  json.dump(report, sys.stdout)


if __name__ == "__main__":
  main()
