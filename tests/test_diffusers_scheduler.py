"""DDSSScheduler against ddss_jax: the shipped MNIST UNet exported to a diffusers folder and run by
diffusers with the exported scheduler gives ddss_jax's samples from the same x_T and per-step
noise, in a loop of one's own and inside DDPMPipeline. Needs torch and diffusers (parity)."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ddss_jax import samplers, weights
from ddss_jax.models import diffusers_io, unet
from ddss_jax.samplers import numpy_reference, sampler_json, schedules
from ddss_jax.samplers.sampler_json import ModelInfo

SHAPE = (4, 32, 32, 1)  # NHWC, as ddss_jax samples; diffusers runs NCHW
SCHED = schedules.linear_beta(1000)
MNIST = ModelInfo(source="mnist_unet.msgpack", sha256=weights.SHIPPED["mnist_unet"].sha256)


def _libraries():
  torch = pytest.importorskip("torch", reason="parity needs torch: pip install -e '.[diffusers]'")
  pytest.importorskip("diffusers", reason="parity needs diffusers: pip install -e '.[diffusers]'")
  from ddss_jax.samplers import diffusers_scheduler  # pylint: disable=import-outside-toplevel
  return torch, diffusers_scheduler


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
  """(eps_fn of the Flax UNet, the same UNet loaded by diffusers from its exported folder)."""
  _libraries()
  import diffusers  # pylint: disable=import-outside-toplevel
  params = weights.load_shipped(unet.SHIPPED_NAME, unet.params_template(unet.MNIST_UNET))
  folder = str(tmp_path_factory.mktemp("export") / "mnist_unet")
  diffusers_io.save(folder, unet.MNIST_UNET, params)
  model = unet.UNet2DModel(unet.MNIST_UNET)
  eps_fn = jax.jit(lambda x, t: model.apply({"params": params}, x, t))
  return eps_fn, diffusers.UNet2DModel.from_pretrained(folder).eval()


def _learned_looking(family, tmp_path, *, clip_x0=None):
  """A K = 5 sampler (its parameters moved off the init, as training would) and its file."""
  clip = {} if clip_x0 is None else {"clip_x0": clip_x0}
  sampler = samplers.make(family, SCHED, 5, **clip)
  rng = np.random.default_rng(0)
  params = {name: np.asarray(v) + 0.02 * rng.normal(size=np.shape(v)).astype(np.float32)
            for name, v in sampler.init().items()}
  path = str(tmp_path / "sampler.json")
  samplers.save(path, sampler, params, model=MNIST)
  return sampler, params, path


def _nchw(x):
  """[B, C, H, W] with NCHW strides. (from_numpy of a transposed array keeps NumPy's strides,
  which for C = 1 look channels-last to torch's CPU convolutions: they then round differently.)"""
  torch, _ = _libraries()
  return torch.from_numpy(np.asarray(x, np.float32).transpose(0, 3, 1, 2).copy(order="C"))


@pytest.mark.parity
@pytest.mark.parametrize("family", ["ggdm+pred+time", "ddim"])
def test_a_diffusers_loop_with_the_exported_scheduler_gives_ddss_jax_samples(mnist, tmp_path,
                                                                             family):
  torch, diffusers_scheduler = _libraries()
  eps_fn, torch_unet = mnist
  sampler, params, path = _learned_looking(family, tmp_path)
  key = jax.random.PRNGKey(0)
  x_T = jax.random.normal(jax.random.PRNGKey(1), SHAPE)
  want = np.asarray(sampler.sample(params, eps_fn, key, SHAPE, x_T=x_T))
  noise_key = jax.random.split(key)[1]  # ddss_jax's z_i: fold_in(noise_key, i)
  noises = [jax.random.normal(jax.random.fold_in(noise_key, i), SHAPE) for i in range(5)]

  scheduler = diffusers_scheduler.DDSSScheduler.from_sampler_file(path)
  scheduler.set_timesteps(5)
  np.testing.assert_allclose(scheduler.timesteps.numpy(), np.asarray(sampler.timesteps(params)))
  x = _nchw(x_T) * scheduler.init_noise_sigma
  with torch.no_grad():
    for i, t in enumerate(scheduler.timesteps):
      output = torch_unet(scheduler.scale_model_input(x, t), t).sample
      x = scheduler.step(output, t, x, noise=_nchw(noises[i])).prev_sample
  got = x.numpy().transpose(0, 2, 3, 1)
  assert np.std(want) > 0.3  # digits, not a blank
  assert np.max(np.abs(got - want)) < 1e-4
  with pytest.raises(RuntimeError, match="steps are done; call set_timesteps"):
    scheduler.step(output, t, x)


@pytest.mark.parity
def test_a_guided_sampler_runs_in_diffusers_with_a_class_conditional_unet(tmp_path):
  """The shipped class-conditional UNet exported as a diffusers UNet2DModel with class
  embeddings; a learned-looking guided sampler's file run by the scheduler in a loop that
  batches eps_c and eps_u gives ddss_jax's guided samples."""
  torch, diffusers_scheduler = _libraries()
  import diffusers  # pylint: disable=import-outside-toplevel
  from ddss_jax.samplers.guidance import Guidance, guided  # pylint: disable=import-outside-toplevel
  cfg = unet.MNIST_COND_UNET
  params = weights.load_shipped(unet.COND_SHIPPED_NAME, unet.params_template(cfg))
  folder = str(tmp_path / "conditional_unet")
  diffusers_io.save(folder, cfg, params)
  torch_unet = diffusers.UNet2DModel.from_pretrained(folder).eval()
  model = unet.UNet2DModel(cfg)
  guided_eps = guided(lambda p, x, t, c: model.apply({"params": p}, x, t, c),
                      null_cond=np.int32(unet.NULL_LABEL))
  sampler = samplers.make("ggdm+pred+time", SCHED, 5, guidance=Guidance(weight=3.0, learn=True))
  rng = np.random.default_rng(0)
  sampler_params = {name: np.asarray(v) + 0.02 * rng.normal(size=np.shape(v)).astype(np.float32)
                    for name, v in sampler.init().items()}
  path = str(tmp_path / "sampler.json")
  samplers.save(path, sampler, sampler_params, model=ModelInfo(
      source="mnist_cond_unet.msgpack", sha256=weights.SHIPPED[unet.COND_SHIPPED_NAME].sha256))
  labels = np.array([0, 3, 7, 9])
  key = jax.random.PRNGKey(0)
  x_T = jax.random.normal(jax.random.PRNGKey(1), SHAPE)
  want = np.asarray(jax.jit(lambda p: sampler.sample(
      p, lambda x, t, c, w: guided_eps(params, x, t, c, w), key, SHAPE, x_T=x_T,
      cond=labels))(sampler_params))
  noise_key = jax.random.split(key)[1]
  noises = [jax.random.normal(jax.random.fold_in(noise_key, i), SHAPE) for i in range(5)]

  scheduler = diffusers_scheduler.DDSSScheduler.from_sampler_file(path)
  scheduler.set_timesteps()
  np.testing.assert_allclose(scheduler.guidance_weights.numpy(), sampler_params["guidance"])
  both = torch.from_numpy(np.concatenate([labels, np.full(4, unet.NULL_LABEL)]))
  x = _nchw(x_T)
  with torch.no_grad():
    for i, t in enumerate(scheduler.timesteps):
      eps_c, eps_u = torch_unet(torch.cat([x, x]), t, class_labels=both).sample.chunk(2)
      eps = eps_u + scheduler.guidance_weights[i] * (eps_c - eps_u)
      x = scheduler.step(eps, t, x, noise=_nchw(noises[i])).prev_sample
  got = x.numpy().transpose(0, 2, 3, 1)
  assert np.std(want) > 0.3
  assert np.max(np.abs(got - want)) < 1e-4 * max(1.0, np.max(np.abs(want)))


@pytest.mark.parity
@pytest.mark.parametrize("family", ["ddim", "ggdm+pred+time"])
def test_ddpm_pipeline_runs_the_exported_scheduler(mnist, tmp_path, family):
  """DDPMPipeline(unet, scheduler) draws x_T, then (stochastic samplers) each z_i, from its
  generator; the same draws given to ddss_jax (the JAX sampler for DDIM, the float64 reference
  on the Flax UNet for the stochastic GGDM) give the pipeline's images."""
  torch, diffusers_scheduler = _libraries()
  import diffusers  # pylint: disable=import-outside-toplevel
  from diffusers.utils.torch_utils import randn_tensor  # pylint: disable=import-outside-toplevel
  eps_fn, torch_unet = mnist
  sampler, params, path = _learned_looking(family, tmp_path)
  scheduler = diffusers_scheduler.DDSSScheduler.from_sampler_file(path)
  pipe = diffusers.DDPMPipeline(unet=torch_unet, scheduler=scheduler)
  pipe.set_progress_bar_config(disable=True)
  images = pipe(batch_size=4, generator=torch.Generator().manual_seed(0), num_inference_steps=5,
                output_type="np").images

  generator = torch.Generator().manual_seed(0)
  nchw = (4, 1, 32, 32)
  x_T = randn_tensor(nchw, generator=generator).numpy().transpose(0, 2, 3, 1)
  if sampler.stochastic:
    noises = [randn_tensor(nchw, generator=generator).numpy().transpose(0, 2, 3, 1)
              for _ in range(5)]
    spec = numpy_reference.load(path)
    x_0 = numpy_reference.sample(
        spec, lambda x, t: np.asarray(eps_fn(np.float32(x), np.float32(t)), np.float64),
        x_T=x_T, noises=noises)
  else:
    x_0 = np.asarray(sampler.sample(params, eps_fn, jax.random.PRNGKey(0), SHAPE, x_T=x_T))
  want = np.clip(x_0 / 2 + 0.5, 0, 1)
  assert images.shape == SHAPE and np.std(want) > 0.2
  assert np.max(np.abs(images - want)) < 1e-4
  with pytest.raises(ValueError, match="learned for K=5 steps; pass num_inference_steps=5"):
    pipe(batch_size=1, num_inference_steps=1000)


@pytest.mark.parity
def test_the_scheduler_config_round_trips_through_a_saved_pipeline(mnist, tmp_path):
  """A pipeline's save_pretrained keeps the sampler file as scheduler/scheduler_config.json;
  DDSSScheduler.from_pretrained reads it back, and the reloaded pipeline samples the same."""
  torch, diffusers_scheduler = _libraries()
  import diffusers  # pylint: disable=import-outside-toplevel
  _, _, path = _learned_looking("ggdm+pred+time", tmp_path)
  scheduler = diffusers_scheduler.DDSSScheduler.from_sampler_file(path)
  pipe = diffusers.DDPMPipeline(unet=mnist[1], scheduler=scheduler)
  pipe.save_pretrained(str(tmp_path / "pipe"))
  again = diffusers_scheduler.DDSSScheduler.from_pretrained(str(tmp_path / "pipe"),
                                                            subfolder="scheduler")
  with open(path, encoding="utf-8") as f:
    assert again.config.sampler == json.load(f)
  reloaded = diffusers.DDPMPipeline.from_pretrained(str(tmp_path / "pipe"), scheduler=again)
  images = [p(batch_size=1, generator=torch.Generator().manual_seed(0), num_inference_steps=5,
              output_type="np").images for p in (pipe, reloaded)]
  np.testing.assert_array_equal(images[0], images[1])


@pytest.mark.parity
@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_x0_and_v_networks_are_converted_to_eps(tmp_path, prediction):
  """One DDIM step from the same state: a network's eps output and the equivalent x0 or v
  output (the VP identities) give the same next state."""
  torch, diffusers_scheduler = _libraries()
  sampler = samplers.make("ddim", SCHED, 3)
  paths = {}
  for name in ("eps", prediction):
    paths[name] = str(tmp_path / f"{name}.json")
    samplers.save(paths[name], sampler, {}, model=ModelInfo(prediction=name))
  rng = np.random.default_rng(0)
  x, eps = torch.tensor(rng.normal(size=(2, 1, 4, 4))), torch.tensor(rng.normal(size=(2, 1, 4, 4)))
  t = float(sampler.timesteps({})[0])
  abar = float(numpy_reference.alpha_bar(numpy_reference.load(paths["eps"]), t))
  a, s = abar ** 0.5, (1 - abar) ** 0.5
  x0 = (x - s * eps) / a
  output = x0 if prediction == "x0" else a * eps - s * x0
  steps = {}
  for name, out in (("eps", eps), (prediction, output)):
    scheduler = diffusers_scheduler.DDSSScheduler.from_sampler_file(paths[name])
    scheduler.set_timesteps()
    steps[name] = scheduler.step(out, scheduler.timesteps[0], x).prev_sample.numpy()
  np.testing.assert_allclose(steps[prediction], steps["eps"], atol=1e-9)
  with pytest.raises(ValueError, match="step 0 got timestep=500.0, expected"):
    scheduler.set_timesteps()
    scheduler.step(output, 500.0, x)


@pytest.mark.slow
@pytest.mark.parity
def test_the_scheduler_imports_no_jax():
  _libraries()
  code = ("import sys, ddss_jax.samplers.diffusers_scheduler; "
          "assert 'jax' not in sys.modules, 'jax imported'")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       check=False)
  assert run.returncode == 0, run.stderr


@pytest.mark.parity
@pytest.mark.parametrize("family,clip_x0", [("ggdm+pred+time", 0.5), ("unipc", None)])
def test_the_scheduler_equals_the_numpy_reference(tmp_path, family, clip_x0):
  """Any sampler file, clipped or not, stochastic (GGDM, its history) or multistep (UniPC): the
  scheduler's steps equal the float64 reference's on an analytic eps to float32 rounding."""
  torch, diffusers_scheduler = _libraries()
  sampler = samplers.make(family, SCHED, 4, stride="linear")
  rng = np.random.default_rng(0)
  params = {name: np.asarray(v) + 0.02 * rng.normal(size=np.shape(v)).astype(np.float32)
            for name, v in sampler.init().items()}
  spec = dataclasses.replace(samplers.to_spec(sampler, params), clip_x0=clip_x0)
  path = str(tmp_path / "sampler.json")
  sampler_json.save(path, spec)
  eps = lambda x, t: np.tanh(0.7 * x) + 0.2 * t.reshape(-1, 1, 1, 1) / 1000.0
  x_T = rng.normal(size=(2, 1, 4, 4)).astype(np.float32)
  noises = [rng.normal(size=x_T.shape).astype(np.float32) for _ in range(4)]
  want = numpy_reference.sample(numpy_reference.load(path), eps, x_T=x_T, noises=noises)
  scheduler = diffusers_scheduler.DDSSScheduler.from_sampler_file(path)
  scheduler.set_timesteps()
  x = torch.from_numpy(x_T)
  for i, t in enumerate(scheduler.timesteps):
    output = torch.from_numpy(eps(x.numpy(), np.full(2, float(t))).astype(np.float32))
    x = scheduler.step(output, t, x, noise=torch.from_numpy(noises[i])).prev_sample
  assert np.max(np.abs(want)) > 0.1
  np.testing.assert_allclose(x.numpy(), want, atol=2e-5 * np.max(np.abs(want)), rtol=0)
  if clip_x0:  # the clip acted: unclipped, the sample differs
    free = numpy_reference.sample(dataclasses.replace(spec, clip_x0=None), eps, x_T=x_T,
                                  noises=noises)
    assert np.max(np.abs(free - want)) > 1e-2
