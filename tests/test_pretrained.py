"""The real-scale problem end to end on stand-ins: configs/cifar10.py through main's functions
with a tiny random diffusers checkpoint, a width-reduced random FID Inception network and
tensorflow-datasets' mock CIFAR-10 (tfds.testing.mock_data: random images, no files, no network).
The numbers are meaningless; what is checked is that every stage runs, streams, caches and reports.
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets", reason="needs pip install -e '.[tfds]'")

from ddss_jax import run as run_lib  # noqa: E402
from ddss_jax.configs import cifar10, lsun_church  # noqa: E402
from ddss_jax.data import tfds_images  # noqa: E402
from ddss_jax.models import diffusers_io, inception, inception_weights, unet  # noqa: E402
from ddss_jax.problems import pretrained as pretrained_problem  # noqa: E402
from ddss_jax.samplers import schedules  # noqa: E402
from ddss_jax.settings import from_group  # noqa: E402
from ddss_jax.util.errors import ConfigError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 0.125
TINY_UNET = unet.UNetConfig(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1, norm_num_groups=4)
SCHEDULER = {"_class_name": "DDPMScheduler", "beta_schedule": "linear", "beta_start": 1e-4,
             "beta_end": 0.02, "num_train_timesteps": 1000, "prediction_type": "epsilon"}


@pytest.fixture(name="files")
def fixture_files(tmp_path):
  """A tiny random checkpoint folder and width-reduced random Inception weights (msgpack)."""
  checkpoint = str(tmp_path / "ddpm-tiny")
  diffusers_io.save(checkpoint, TINY_UNET, unet.init_params(TINY_UNET, jax.random.PRNGKey(0)),
                    schedule_config=SCHEDULER)
  inception_path = str(tmp_path / "inception_w0125.msgpack")
  # + a .sha256 sidecar
  inception_weights.save_converted(random_inception_variables(WIDTH), inception_path)
  return {"checkpoint": checkpoint, "inception": inception_path,
          "stats_dir": str(tmp_path / "stats"), "workdir": str(tmp_path / "run")}


def random_inception_variables(width, seed=0):
  """Random weights (kernels scaled by 1/sqrt(fan-in), BatchNorm variance in [0.5, 1.5])."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return (rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(np.float32)
    if name in ("var", "scale"):
      return rng.uniform(0.5, 1.5, size=leaf.shape).astype(np.float32)
    return (0.1 * rng.normal(size=leaf.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, inception.variables_template(width=width))


def tiny_cifar10_flags(files, **extra):
  """main's command line: configs/cifar10.py with test sizes and the stand-in files."""
  overrides = {
      "sampler.num_steps": 3, "train.num_train_steps": 2, "train.batch_size": 8,
      "train.log_every_steps": 1, "train.checkpoint_every_steps": 1, "eval.num_samples": 200,
      "eval.batch_size": 100, "pretrained.checkpoint": files["checkpoint"],
      "pretrained.inception_weights": files["inception"], "pretrained.inception_width": WIDTH,
      "pretrained.stats_dir": files["stats_dir"], "pretrained.reference_num_examples": 60,
      "pretrained.feature_batch_size": 50, "pretrained.kid_sample_size": 100,
      "pretrained.kid_subsets": 5, "pretrained.kid_subset_size": 50,
      # The config's levers at test sizes: a bank and a carved validation split of the mock
      # images, validated at every step; the start as configured (selection: 12 compiles).
      "loss.kid_bank_size": 40, "train.warmup_steps": 1, "train.validate_every_steps": 1,
      "train.validation_size": 20, "train.validation_samples": 16,
      "sampler.start": "configured", **extra}
  return ([f"--config={os.path.join(ROOT, 'configs', 'cifar10.py')}",
           f"--workdir={files['workdir']}"]
          + [f"--config.{key}={value}" for key, value in overrides.items()])


def run_main(args, num_examples=120):
  """python -m ddss_jax.main ARGS in a fresh process, on tfds's mock data (tests/mock_main.py)."""
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  done = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "mock_main.py"),
                         str(num_examples), *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=900, check=False)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


@pytest.mark.slow
def test_cifar10_config_runs_through_main_on_mock_data(files):
  """main --mode=train, then main --mode=evaluate, on tfds's mock CIFAR-10."""
  run_main(tiny_cifar10_flags(files))
  results = json.load(open(os.path.join(files["workdir"], "results.json")))
  weights_file = os.path.join(files["checkpoint"], diffusers_io.SAFETENSORS_NAME)
  assert results["weights"]["model"] == {  # unpinned: trusted on first use, and recorded
      "path": weights_file, "sha256": diffusers_io.sha256_of(weights_file)}
  with open(os.path.join(files["workdir"], "sampler.json"), encoding="utf-8") as f:
    assert json.load(f)["model"] == {  # what the learned sampler runs with, for deployment
        "source": files["checkpoint"], "sha256": diffusers_io.sha256_of(weights_file),
        "prediction": "eps"}
  assert results["weights"]["features"]["path"] == files["inception"]
  stats_files = os.listdir(files["stats_dir"])
  assert len(stats_files) == 1 and stats_files[0].startswith("cifar10-train-32px-60-inception-tf")
  reference = np.load(os.path.join(files["stats_dir"], stats_files[0]))
  assert int(reference["count"]) == 60 and reference["mu"].shape == (256,)
  assert reference["kid_sample"].shape == (60, 256)

  assert results["train_steps"] == 2
  for role in ("learned", "baseline", "data"):
    entry = results[role]
    assert set(entry) >= {"fid", "is", "is_std", "kid", "kid_std"}, entry
    assert all(np.isfinite(entry[m]) for m in ("fid", "is", "is_std", "kid", "kid_std"))
    assert entry["fid"] > 0 and 1.0 <= entry["is"] <= 1008
  lines = [json.loads(l) for l in open(os.path.join(files["workdir"], "metrics.jsonl"))]
  assert [l["step"] for l in lines if "train/kid" in l] == [1, 2]
  # Validated at the start and after each step, on the 20 images carved from the mock train split.
  assert [l["step"] for l in lines if "val/fid" in l] == [0, 1, 2]
  assert all(np.isfinite(l["val/kid"]) for l in lines if "val/kid" in l)
  assert {"eval/fid@K=3", "eval/is@K=3", "eval/kid@K=3", "eval/ddim/fid@K=3"} <= set(lines[-1])
  assert os.path.exists(os.path.join(files["workdir"], "samples.png"))

  # The evaluate mode re-reads sampler.json and reuses the cached reference statistics.
  run_main(tiny_cifar10_flags(files, **{"eval.num_samples": 120}) + ["--mode=evaluate"])
  again = json.load(open(os.path.join(files["workdir"], "eval_results_120.json")))
  assert os.listdir(files["stats_dir"]) == stats_files
  assert again["learned"]["num_steps"] == 3 and np.isfinite(again["learned"]["fid"])
  assert os.path.exists(os.path.join(files["workdir"], "eval_results_120.json"))
  # Same sampler, same noise keys, same reference: the first 120 of the 200 samples again, so
  # the KID subsets differ but the IS of the shared samples' parts must be plausible.
  assert 1.0 <= again["learned"]["is"] <= 1008


def test_missing_inputs_are_listed_together_before_compiling(tmp_path, monkeypatch):
  """Offline, with empty caches: each config's own checkpoint, the Inception weights and the data
  are listed, each with its remedy, and nothing is written."""
  monkeypatch.setenv(inception_weights.CACHE_ENV_VAR, str(tmp_path / "cache"))
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
  monkeypatch.setenv("DDSS_JAX_OFFLINE", "1")
  monkeypatch.chdir(tmp_path)
  for module, repo_id in ((cifar10, "google/ddpm-cifar10-32"),
                          (lsun_church, "google/ddpm-ema-church-256")):
    config = module.get_config()
    config.pretrained.data_dir = str(tmp_path / "no_data")
    with pytest.raises(FileNotFoundError) as error:
      run_lib.setup(config, str(tmp_path / "run"))
    message = str(error.value)
    assert f"checkpoint {repo_id} could not be read from huggingface_hub's cache" in message
    assert f"git clone https://huggingface.co/{repo_id} DIR" in message
    assert message.count("huggingface.co/google/") == 1  # no other model suggested
    assert (inception_weights.WEIGHTS_FILENAME in message
            and inception_weights.WEIGHTS_URL in message)
    assert "(not downloaded: offline" in message
    assert config.pretrained.dataset in message and str(tmp_path / "no_data") in message
    assert not os.path.exists(tmp_path / "run")  # nothing was written, nothing compiled


def test_the_pre_flight_fetches_what_a_network_gives(tmp_path, monkeypatch, files):
  """Online: the hub id, the Inception weights and CIFAR-10 are fetched before anything is
  listed as missing (the downloads themselves are replaced by stand-ins here)."""
  monkeypatch.setenv(inception_weights.CACHE_ENV_VAR, str(tmp_path / "cache"))
  for name in ("HF_HUB_OFFLINE", "DDSS_JAX_OFFLINE"):
    monkeypatch.delenv(name, raising=False)
  fetched, prepared = [], []
  monkeypatch.setattr(pretrained_problem.hub, "fetch",
                      lambda repo_id, download=True: fetched.append(repo_id) or files["checkpoint"])

  def download(dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    open(dst, "wb").write(b"weights")
    return dst

  def prepare_without_tensorflow(name, data_dir):
    prepared.append(name)
    raise ImportError("tfds builds datasets with TensorFlow, which is not installed")

  monkeypatch.setattr(inception_weights, "download_weights", download)
  monkeypatch.setattr(tfds_images, "prepare", prepare_without_tensorflow)
  cfg = _pretrained_cfg("google/ddpm-cifar10-32", data_dir=str(tmp_path / "no_data"))
  missing = pretrained_problem.missing_inputs(cfg)
  assert fetched == ["google/ddpm-cifar10-32"] and prepared == ["cifar10"]
  assert os.path.exists(tmp_path / "cache" / inception_weights.WEIGHTS_FILENAME)
  assert len(missing) == 1 and missing[0].startswith("dataset 'cifar10'")
  assert missing[0].endswith("(the run tried to prepare it and failed: ImportError: tfds builds "
                             "datasets with TensorFlow, which is not installed)")

  prepared.clear()  # LSUN needs manual downloads: the run does not try
  lsun = dataclasses.replace(cfg, dataset="lsun_church")
  assert [m for m in pretrained_problem.missing_inputs(lsun) if "tried to prepare" in m] == []
  assert prepared == []


@pytest.mark.parametrize("field,value,match", [
    ("loss_features", "pool4", r"config.pretrained.loss_features='pool4': valid choices: "
     r"\['pool3'"),
    ("inception_preprocess", "keras", r"config.pretrained.inception_preprocess='keras': valid "
     r"choices: \['tf', 'pytorch_fid'\]"),
    ("dataset", "mnist", r"config.pretrained.dataset='mnist': valid choices: \['cifar10', "
     r"'imagenet64', 'lsun_bedroom', 'lsun_church'\]"),
    ("kid_subset_size", 20000, r"config.pretrained.kid_subset_size=20000: must be <= "
     r"pretrained.kid_sample_size=10000"),
])
def test_bad_values_are_named(tmp_path, field, value, match):
  config = cifar10.get_config()
  config.pretrained[field] = value
  with pytest.raises(ConfigError, match=match):
    run_lib.setup(config, str(tmp_path))


# --- Mismatches between the checkpoint, config.schedule and the data, found before compiling ---

def _pretrained_cfg(checkpoint, **changes):
  cfg = from_group(pretrained_problem.Config, cifar10.get_config().pretrained)
  return dataclasses.replace(cfg, checkpoint=checkpoint, **changes)


def _zeros_checkpoint(path, unet_cfg=TINY_UNET, **scheduler):
  """A checkpoint folder with zero weights (params_template: no slow init)."""
  diffusers_io.save(path, unet_cfg, unet.params_template(unet_cfg),
                    schedule_config={**SCHEDULER, **scheduler})
  return path


@pytest.mark.parametrize("unet_changes,scheduler,cfg_changes,match", [
    ({}, {"num_train_timesteps": 500}, {},
     r"config.schedule \(linear, T=1000\) differs from the checkpoint's scheduler_config.json "
     r"\(linear, T=500\); set config.schedule to match it"),
    ({}, {"beta_end": 0.012}, {},
     r"\(linear, T=1000\), first at alpha_bar\[1\] = 0.99978 vs the checkpoint's 0.999788"),
    ({"in_channels": 1, "out_channels": 1}, {}, {},
     r"in_channels=1, but dataset 'cifar10' gives 3-channel \(RGB\) images"),
    ({"out_channels": 6}, {"variance_type": "learned_range"}, {},
     r"out_channels=6 != in_channels=3; learned-variance models are not supported"),
    ({}, {}, {"image_size": 64},
     r"images of 64px \(config.pretrained.image_size\) but the checkpoint samples 32px images; "
     r"set config.pretrained.image_size=32"),
])
def test_checkpoint_mismatches_are_named_before_anything_is_read(tmp_path, unet_changes,
                                                                 scheduler, cfg_changes, match):
  unet_cfg = dataclasses.replace(TINY_UNET, **unet_changes)
  path = _zeros_checkpoint(str(tmp_path / "ckpt"), unet_cfg, **scheduler)
  os.remove(os.path.join(path, diffusers_io.SAFETENSORS_NAME))  # the weights are never read
  cfg = _pretrained_cfg(path, data_dir=str(tmp_path / "no_data"), **cfg_changes)
  with pytest.raises(ValueError, match=match):
    pretrained_problem.build(cfg, schedules.linear_beta(1000), seed=0)


@pytest.mark.parametrize("batch,match", [
    (np.full((8, 32, 32, 3), 255, np.uint8), r"images have dtype uint8, expected floating point "
                                             r"in \[-1, 1\]"),
    (np.linspace(0, 255, 8 * 32 * 32 * 3, dtype=np.float32).reshape(8, 32, 32, 3),
     r"image values span \[0, 255\], expected within \[-1, 1\]"),
    (np.zeros((8, 32, 32, 1), np.float32), r"images have shape \[8, 32, 32, 1\], expected "
                                           r"\[B, 32, 32, 3\]"),
])
def test_a_first_real_batch_that_does_not_fit_is_named(tmp_path, monkeypatch, batch, match):

  class Source:  # a data source gone wrong (say, a new dataset's scaling)
    num_examples = 10

    def __init__(self, *args, **kwargs):
      del args, kwargs

    def batch(self, key, num, rows=slice(None)):
      del key
      return batch[:num][rows]

  monkeypatch.setattr(tfds_images, "TFDSImageSource", Source)
  path = _zeros_checkpoint(str(tmp_path / "ckpt"))
  os.remove(os.path.join(path, diffusers_io.SAFETENSORS_NAME))  # checked before weights are read
  with pytest.raises(ValueError, match=r"dataset cifar10/train: " + match):
    pretrained_problem.build(_pretrained_cfg(path), schedules.linear_beta(1000), seed=0)
