"""Public DDPM checkpoint folders: load diffusers' files into the Flax UNet and export back.

The configs are the public google/ddpm-* ones with the channel widths scaled down so the PyTorch
reference runs in seconds on a CPU; every other field (block types, layers, attention placement,
embedding flags, padding, norm eps) is the real one. The parity tests need torch and diffusers and
are skipped, saying so, without them.
"""

import json
import os

import numpy as np
import pytest

from ddss_jax.models import diffusers_io, unet
from ddss_jax.samplers import schedules

# google/ddpm-cifar10-32 with block_out_channels (128, 256, 256, 256) -> (32, 64, 64, 64).
CIFAR10_CONFIG = {
    "_class_name": "UNet2DModel", "act_fn": "silu", "attention_head_dim": None,
    "block_out_channels": [32, 64, 64, 64], "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32,
    "out_channels": 3, "sample_size": 32, "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}
# google/ddpm-ema-church-256 with (128, 128, 256, 256, 512, 512) -> (32, 32, 32, 32, 64, 64), run at
# 64x64 instead of 256x256 (the network is fully convolutional; 64 still reaches the 2x2 bottom).
CHURCH_CONFIG = {
    **CIFAR10_CONFIG, "block_out_channels": [32, 32, 32, 32, 64, 64], "sample_size": 256,
    "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D",
                         "AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D",
                       "UpBlock2D"]}
DDPM_SCHEDULER = {"_class_name": "DDPMScheduler", "beta_end": 0.02, "beta_schedule": "linear",
                  "beta_start": 0.0001, "num_train_timesteps": 1000, "prediction_type": "epsilon",
                  "clip_sample": True, "variance_type": "fixed_small"}


def _diffusers():
  torch = pytest.importorskip("torch", reason="parity needs torch: pip install -e '.[parity]'")
  diffusers = pytest.importorskip("diffusers",
                                  reason="parity needs diffusers: pip install -e '.[parity]'")
  return torch, diffusers


def _random_reference(config, seed=0):
  torch, diffusers = _diffusers()
  torch.manual_seed(seed)
  model = diffusers.UNet2DModel.from_config(config).eval()
  with torch.no_grad():  # random, non-trivial weights everywhere (norm scales included)
    for p in model.parameters():
      p.copy_(0.2 * torch.randn_like(p))
  return model


def _eps_both(reference, checkpoint, size, seed=0):
  torch, _ = _diffusers()
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(2, 3, size, size)).astype(np.float32)
  t = np.array([5.0, 871.0], np.float32)
  with torch.no_grad():
    want = reference(torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()
  got = unet.UNet2DModel(checkpoint.config).apply(
      {"params": checkpoint.params}, x.transpose(0, 2, 3, 1), t)
  return np.asarray(got).transpose(0, 3, 1, 2), want


@pytest.mark.parity
@pytest.mark.parametrize("config,size,safe", [(CIFAR10_CONFIG, 32, True),
                                              (CHURCH_CONFIG, 64, False)])
def test_public_checkpoint_layout_loads_with_parity(tmp_path, config, size, safe):
  reference = _random_reference(config)
  reference.save_pretrained(str(tmp_path), safe_serialization=safe)
  with open(tmp_path / "scheduler_config.json", "w", encoding="utf-8") as f:
    json.dump(DDPM_SCHEDULER, f)
  weights = tmp_path / (diffusers_io.SAFETENSORS_NAME if safe else diffusers_io.BIN_NAME)
  assert weights.exists()
  checkpoint = diffusers_io.load(str(tmp_path))
  assert checkpoint.sha256 == diffusers_io.sha256_of(str(weights))
  got, want = _eps_both(reference, checkpoint, size)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  schedule, prediction = diffusers_io.load_schedule(str(tmp_path))
  assert prediction == "eps"
  np.testing.assert_allclose(schedule.alpha_bars, schedules.linear_beta(1000).alpha_bars)


@pytest.mark.parity
def test_export_is_read_by_diffusers(tmp_path):
  _, diffusers = _diffusers()
  import jax  # pylint: disable=import-outside-toplevel
  cfg = diffusers_io.config_from_json(CIFAR10_CONFIG)
  params = unet.init_params(cfg, jax.random.PRNGKey(3))
  digest = diffusers_io.save(str(tmp_path / "export"), cfg, params,
                             schedule_config=DDPM_SCHEDULER)
  reference = diffusers.UNet2DModel.from_pretrained(str(tmp_path / "export")).eval()
  checkpoint = diffusers_io.Checkpoint(cfg, params, "", digest)
  got, want = _eps_both(reference, checkpoint, 32, seed=1)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  # And our own loader reads the export back exactly.
  again = diffusers_io.load(str(tmp_path / "export"), sha256=digest)
  for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_state_dict_round_trip_without_torch():
  import jax  # pylint: disable=import-outside-toplevel
  cfg = diffusers_io.config_from_json(CIFAR10_CONFIG)
  params = unet.init_params(cfg, jax.random.PRNGKey(0))
  state = diffusers_io.to_state_dict(params)
  assert state["down_blocks.1.attentions.0.to_q.weight"].shape == (64, 64)
  assert state["conv_in.weight"].shape == (32, 3, 3, 3)  # OIHW, as PyTorch stores it
  back = diffusers_io.from_state_dict(cfg, state)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  del state["conv_out.bias"]
  state["extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(ValueError, match=r"missing conv_out.bias; unexpected extra.weight"):
    diffusers_io.from_state_dict(cfg, state)


def test_pipeline_folder_and_pinned_checksum(tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  cfg = diffusers_io.config_from_json(CIFAR10_CONFIG)
  params = unet.init_params(cfg, jax.random.PRNGKey(0))
  diffusers_io.save(str(tmp_path / "unet"), cfg, params)
  os.makedirs(tmp_path / "scheduler")
  with open(tmp_path / "scheduler" / "scheduler_config.json", "w", encoding="utf-8") as f:
    json.dump({**DDPM_SCHEDULER, "beta_schedule": "squaredcos_cap_v2"}, f)
  assert diffusers_io.missing_checkpoint_message(str(tmp_path)) is None
  assert diffusers_io.load(str(tmp_path)).config == cfg
  schedule, _ = diffusers_io.load_schedule(str(tmp_path / "unet"))
  np.testing.assert_allclose(schedule.alpha_bars, schedules.cosine(1000).alpha_bars)
  with pytest.raises(ValueError, match="has sha256 .* expected 00ff"):
    diffusers_io.load(str(tmp_path), sha256="00ff")


TINY_CONFIG = {**CIFAR10_CONFIG, "block_out_channels": [8, 16], "norm_num_groups": 4,
               "layers_per_block": 1, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
               "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}


def test_a_tampered_pinned_checkpoint_is_refused_and_an_unpinned_one_logged(tmp_path, caplog):
  cfg = diffusers_io.config_from_json(TINY_CONFIG)
  digest = diffusers_io.save(str(tmp_path), cfg, unet.params_template(cfg))  # zeros: quick
  path = str(tmp_path / diffusers_io.SAFETENSORS_NAME)
  with caplog.at_level("WARNING"):
    assert diffusers_io.load(str(tmp_path)).sha256 == digest
  assert f"{path} is not pinned; trusting it on first use: its sha256 is {digest}" in caplog.text
  assert f"--config.pretrained.checkpoint_sha256={digest}" in caplog.text
  data = bytearray(open(path, "rb").read())
  data[-5] ^= 0xFF  # in the last tensor's bytes: still a readable safetensors file
  open(path, "wb").write(bytes(data))
  with pytest.raises(ValueError) as error:
    diffusers_io.load(str(tmp_path), sha256=digest)
  assert str(error.value).startswith(
      f"{path} has sha256 {diffusers_io.sha256_of(path)}, expected {digest}")


def test_bad_and_missing_checkpoints_say_what_is_wrong(tmp_path):
  message = diffusers_io.missing_checkpoint_message(str(tmp_path))
  assert "config.json" in message and "google/ddpm-cifar10-32" in message
  with open(tmp_path / "config.json", "w", encoding="utf-8") as f:
    json.dump(CIFAR10_CONFIG, f)
  assert "no weights" in diffusers_io.missing_checkpoint_message(str(tmp_path))
  with pytest.raises(ValueError, match=r"resnet_time_scale_shift='scale_shift'.*\['default'\]"):
    diffusers_io.config_from_json({**CIFAR10_CONFIG, "resnet_time_scale_shift": "scale_shift"})
  with pytest.raises(ValueError, match="config key 'cross_attention_dim' is unknown"):
    diffusers_io.config_from_json({**CIFAR10_CONFIG, "cross_attention_dim": 768})
  with pytest.raises(ValueError, match="only 'UNet2DModel'"):
    diffusers_io.config_from_json({**CIFAR10_CONFIG, "_class_name": "UNet2DConditionModel"})
  with open(tmp_path / "scheduler_config.json", "w", encoding="utf-8") as f:
    json.dump({**DDPM_SCHEDULER, "beta_schedule": "scaled_linear"}, f)
  with pytest.raises(ValueError, match=r"beta_schedule 'scaled_linear'.*'squaredcos_cap_v2'"):
    diffusers_io.load_schedule(str(tmp_path))


@pytest.mark.parametrize("fields,want", [({"clip_sample": True}, 1.0),
                                         ({"clip_sample": True, "clip_sample_range": 2.5}, 2.5),
                                         ({"clip_sample": False}, 0.0), ({}, None)])
def test_clip_sample_is_read_from_scheduler_config(tmp_path, fields, want):
  config = {k: v for k, v in DDPM_SCHEDULER.items() if k != "clip_sample"} | fields
  (tmp_path / "scheduler").mkdir()
  with open(tmp_path / "scheduler" / "scheduler_config.json", "w", encoding="utf-8") as f:
    json.dump(config, f)
  assert diffusers_io.load_clip_x0(str(tmp_path)) == want
