"""ddss_jax.util.hub: hub ids told apart from folders, and checkpoints read from a huggingface_hub
cache in offline mode (a cache laid out by hand in tmp_path, as the hub writes it: models--owner--
name/refs/main and snapshots/<revision>/); every failure's message names what to do. No network."""

import os

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from ddss_jax.models import diffusers_io, unet
from ddss_jax.util import hub

TINY_UNET = unet.UNetConfig(
    sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=4)
SCHEDULER = {"_class_name": "DDPMScheduler", "beta_schedule": "linear", "beta_start": 1e-4,
             "beta_end": 0.02, "num_train_timesteps": 1000, "prediction_type": "epsilon"}
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(name="cache")
def fixture_cache(tmp_path, monkeypatch):
  """An offline huggingface_hub cache holding test/tiny-ddpm (a random tiny UNet)."""
  cache = tmp_path / "hf_cache"
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.chdir(tmp_path)
  repo = cache / "models--test--tiny-ddpm"
  params = unet.init_params(TINY_UNET, jax.random.PRNGKey(0))
  diffusers_io.save(str(repo / "snapshots" / REVISION), TINY_UNET, params,
                    schedule_config=SCHEDULER)
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text(REVISION)
  return {"snapshot": str(repo / "snapshots" / REVISION), "params": params}


def test_folders_win_and_owner_name_is_a_hub_id(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert hub.is_hub_id("google/ddpm-cifar10-32")
  assert hub.is_hub_id("user.name/my_model-v2.1")
  (tmp_path / "google" / "ddpm-cifar10-32").mkdir(parents=True)
  assert not hub.is_hub_id("google/ddpm-cifar10-32")  # an existing folder of that name wins
  assert hub.local_folder("google/ddpm-cifar10-32") == "google/ddpm-cifar10-32"
  assert not hub.is_hub_id(str(tmp_path))


@pytest.mark.parametrize("value", ["/data/ddpm-cifar10-32", "ddpm-cifar10-32", "a/b/c",
                                   "google/ddpm cifar", "../models/x", "google/"])
def test_a_path_that_is_neither_is_refused_naming_it(tmp_path, monkeypatch, value):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(ValueError, match=rf"config.pretrained.checkpoint={value!r} is neither an "
                                       r"existing folder nor a Hugging Face Hub id"):
    hub.local_folder(value)


@pytest.mark.slow
def test_a_hub_id_loads_from_the_offline_cache(cache):
  folder = hub.local_folder("test/tiny-ddpm")
  assert folder == cache["snapshot"]
  checkpoint = diffusers_io.load(folder)
  assert checkpoint.config == TINY_UNET
  got, want = flatten_dict(checkpoint.params), flatten_dict(cache["params"])
  assert got.keys() == want.keys()
  for key, value in want.items():
    np.testing.assert_array_equal(got[key], np.asarray(value), err_msg="/".join(key))
  schedule, prediction = diffusers_io.load_schedule(folder)
  assert prediction == "eps" and schedule.num_timesteps == 1000


def test_a_pinned_digest_that_differs_is_refused(cache):
  folder = hub.local_folder("test/tiny-ddpm")
  weights_file = os.path.join(folder, diffusers_io.SAFETENSORS_NAME)
  digest = diffusers_io.sha256_of(weights_file)
  assert diffusers_io.load(folder, sha256=digest).sha256 == digest
  with pytest.raises(ValueError, match=rf"{weights_file} has sha256 {digest}, expected 0{{64}}"):
    diffusers_io.load(folder, sha256="0" * 64)


def test_a_repository_missing_from_the_offline_cache_names_the_commands(cache, tmp_path):
  del cache
  with pytest.raises(FileNotFoundError) as error:
    hub.local_folder("google/ddpm-ema-church-256")
  message = str(error.value)
  for part in ("checkpoint google/ddpm-ema-church-256 could not be read from huggingface_hub's "
               "cache (offline: $HF_HUB_OFFLINE or $DDSS_JAX_OFFLINE is set)",
               f"no folder google/ddpm-ema-church-256 exists in {tmp_path}",
               "LocalEntryNotFoundError", "unset $HF_HUB_OFFLINE and $DDSS_JAX_OFFLINE",
               "hf download google/ddpm-ema-church-256 --include '*.json' '*.safetensors'",
               "git clone https://huggingface.co/google/ddpm-ema-church-256 DIR",
               "--config.pretrained.checkpoint=DIR"):
    assert part in message, part


def test_a_snapshot_without_weights_is_named(cache):
  os.remove(os.path.join(cache["snapshot"], diffusers_io.SAFETENSORS_NAME))
  with pytest.raises(FileNotFoundError, match=rf"checkpoint test/tiny-ddpm: its snapshot "
                                              rf"{cache['snapshot']} holds no .safetensors or "
                                              r".bin weights"):
    hub.local_folder("test/tiny-ddpm")


def test_without_huggingface_hub_the_extra_is_named(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  real = hub.importlib.util.find_spec
  monkeypatch.setattr(hub.importlib.util, "find_spec",
                      lambda name: None if name == "huggingface_hub" else real(name))
  with pytest.raises(FileNotFoundError, match=r"checkpoint google/ddpm-cifar10-32 is a Hugging "
                                              r"Face Hub id and huggingface_hub is not installed. "
                                              r"To fix it, .*pip install -e '.\[hub\]'"):
    hub.local_folder("google/ddpm-cifar10-32")


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("ON", True),
                                            ("0", False), ("", False)])
def test_offline_reads_either_variable(monkeypatch, value, expected):
  for name in hub.OFFLINE_ENV_VARS:
    monkeypatch.delenv(name, raising=False)
  assert not hub.offline()
  for name in hub.OFFLINE_ENV_VARS:
    monkeypatch.setenv(name, value)
    assert hub.offline() is expected
    monkeypatch.delenv(name)


def test_online_fetch_asks_for_safetensors_then_bin(tmp_path, monkeypatch):
  """A repository with only a .bin: the first snapshot (configs and safetensors) has no weights,
  the second asks for the .bin. huggingface_hub's download is replaced by a stand-in."""
  for name in hub.OFFLINE_ENV_VARS:
    monkeypatch.delenv(name, raising=False)
  snapshot = tmp_path / "snapshot"
  calls = []

  def snapshot_download(repo_id, patterns, local_only):
    calls.append((repo_id, patterns, local_only))
    snapshot.mkdir(exist_ok=True)
    (snapshot / "config.json").write_text("{}")
    if "*.bin" in patterns:
      (snapshot / diffusers_io.BIN_NAME).write_bytes(b"weights")
    return str(snapshot)

  monkeypatch.setattr(hub, "_snapshot", snapshot_download)
  assert hub.fetch("google/ddpm-cifar10-32") == str(snapshot)
  assert calls == [("google/ddpm-cifar10-32", ("*.json", "*.safetensors"), False),
                   ("google/ddpm-cifar10-32", ("*.json", "*.bin"), False)]
  calls.clear()
  assert hub.fetch("google/ddpm-cifar10-32", download=False) == str(snapshot)
  assert calls == [("google/ddpm-cifar10-32", ("*.json", "*.safetensors"), True)]
