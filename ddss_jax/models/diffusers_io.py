"""diffusers UNet2DModel checkpoint folders <-> the Flax UNet (ddss_jax.models.unet).

A checkpoint folder is what `UNet2DModel.save_pretrained` writes and what the Hugging Face hub
serves for the public DDPM models (google/ddpm-cifar10-32, google/ddpm-ema-church-256,
google/ddpm-ema-bedroom-256): `config.json` plus `diffusion_pytorch_model.safetensors` (read with
NumPy alone) or `diffusion_pytorch_model.bin` (read by ddss_jax.models.torch_checkpoint, without
torch and without running any code from the file). A pipeline folder (model_index.json, unet/,
scheduler/) works too. The noise schedule comes from `scheduler_config.json` beside the weights
(or in scheduler/).

Weight files are checked against a sha256 when the caller pins one (config.pretrained.
checkpoint_sha256); without one the file is trusted on first use: `load` logs a warning with its
sha256 and how to pin it, and returns the digest so the run records it in its results. The bytes
checked are the bytes parsed (the file is read once).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
from absl import logging
from flax.traverse_util import flatten_dict, unflatten_dict

from ddss_jax.models import torch_checkpoint, unet
from ddss_jax.samplers import schedules
from ddss_jax.util import files
from ddss_jax.weights import check_sha256, sha256_of

CONFIG_NAME = "config.json"
SCHEDULER_CONFIG_NAME = "scheduler_config.json"
SAFETENSORS_NAME = "diffusion_pytorch_model.safetensors"
BIN_NAME = "diffusion_pytorch_model.bin"

_FIELDS = tuple(f.name for f in dataclasses.fields(unet.UNetConfig))
# config.json keys this port does not model, with the values under which it is still exact.
_FIXED = {
    "act_fn": ("silu",), "add_attention": (True,), "attn_norm_num_groups": (None,),
    "center_input_sample": (False,), "class_embed_type": (None,),
    "downsample_type": ("conv",), "upsample_type": ("conv",), "mid_block_scale_factor": (1, 1.0),
    "mid_block_type": ("UNetMidBlock2D",), "resnet_time_scale_shift": ("default",),
    "time_embedding_type": ("positional",), "time_embedding_dim": (None,),
}
_IGNORED = ("dropout", "num_train_timesteps")  # inference only; positional embeddings ignore T
_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


def find_model_dir(path: str) -> str:
  """The folder holding the UNet's config.json: `path` itself or its unet/ subfolder."""
  for candidate in (path, os.path.join(path, "unet")):
    if os.path.isfile(os.path.join(candidate, CONFIG_NAME)):
      return candidate
  raise FileNotFoundError(
      f"no diffusers UNet2DModel checkpoint at {path}: expected {CONFIG_NAME} and "
      f"{SAFETENSORS_NAME} (or {BIN_NAME}) in it or in its unet/ subfolder, e.g. the files of "
      "https://huggingface.co/google/ddpm-cifar10-32")


def missing_checkpoint_message(path: str) -> str | None:
  """None when `path` holds a readable checkpoint (config and weights), else what is missing."""
  try:
    model_dir = find_model_dir(path)
  except FileNotFoundError as e:
    return str(e)
  if not any(os.path.isfile(os.path.join(model_dir, n)) for n in (SAFETENSORS_NAME, BIN_NAME)):
    return (f"{model_dir} has {CONFIG_NAME} but no weights: expected {SAFETENSORS_NAME} or "
            f"{BIN_NAME}")
  return None


def config_from_json(config: dict[str, Any]) -> unet.UNetConfig:
  """A UNetConfig from a diffusers config.json dict, refusing anything the port does not model."""
  if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
    raise ValueError(f"config _class_name is {config['_class_name']!r}; only 'UNet2DModel' "
                     "checkpoints load")
  kwargs = {}
  for key, value in config.items():
    if key.startswith("_") or key in _IGNORED:
      continue
    if key in _FIXED:
      if value not in _FIXED[key]:
        raise ValueError(f"config {key}={value!r} is not supported; valid choices: "
                         f"{list(_FIXED[key])}")
    elif key in _FIELDS:
      kwargs[key] = tuple(value) if isinstance(value, list) else value
    else:
      raise ValueError(f"config key {key!r} is unknown to this port; known keys: "
                       f"{sorted(_FIELDS + tuple(_FIXED) + _IGNORED)}")
  if kwargs.get("sample_size") is None:
    raise ValueError("config sample_size is missing or null; set it to the image size the model "
                     "was trained at")
  if isinstance(kwargs["sample_size"], tuple):
    height, width = kwargs["sample_size"]
    if height != width:
      raise ValueError(f"config sample_size {kwargs['sample_size']} is not square")
    kwargs["sample_size"] = height
  return unet.UNetConfig(**kwargs)


def config_to_json(cfg: unet.UNetConfig) -> dict[str, Any]:
  """The config.json dict diffusers needs to rebuild UNet2DModel(cfg)."""
  out = {"_class_name": "UNet2DModel"}
  out.update({k: list(v) if isinstance(v, tuple) else v
              for k, v in dataclasses.asdict(cfg).items()})
  out.update({k: v[0] for k, v in _FIXED.items()})
  return out


def from_state_dict(cfg: unet.UNetConfig, state_dict: dict[str, np.ndarray]) -> Any:
  """Flax params of UNet2DModel(cfg) from a diffusers state dict (name-by-name, exact shapes).

  Convolution kernels go from OIHW to HWIO and dense kernels from [out, in] to [in, out]. Raises
  ValueError naming any missing, unexpected or mis-shaped tensor.
  """
  template = flatten_dict(unet.params_template(cfg))
  out, problems = {}, []
  for path, leaf in template.items():
    key = unet.diffusers_key(path)
    if key not in state_dict:
      problems.append(f"missing {key}")
      continue
    value = np.asarray(state_dict[key], np.float32)
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 2 and path[-1] == "kernel":  # not an embedding table [num, dim]
      value = value.T
    if value.shape != leaf.shape:
      problems.append(f"{key} has shape {value.shape} after transposing, expected {leaf.shape}")
    out[path] = value
  expected = {unet.diffusers_key(p) for p in template}
  problems += [f"unexpected {key}" for key in sorted(set(state_dict) - expected)]
  if problems:
    raise ValueError("checkpoint does not match the config: " + "; ".join(problems[:10])
                     + (f"; and {len(problems) - 10} more" if len(problems) > 10 else ""))
  return unflatten_dict(out)


def to_state_dict(params: Any) -> dict[str, np.ndarray]:
  """The diffusers state dict of Flax UNet params (the inverse of from_state_dict)."""
  out = {}
  for path, value in flatten_dict(params).items():
    value = np.asarray(value, np.float32)
    if value.ndim == 4:
      value = value.transpose(3, 2, 0, 1)
    elif value.ndim == 2 and path[-1] == "kernel":
      value = value.T
    out[unet.diffusers_key(path)] = np.ascontiguousarray(value)
  return out


def _read_weights(weights_path: str, data: bytes) -> dict[str, np.ndarray]:
  """A state dict from the bytes of a safetensors file or of a .bin (torch_checkpoint: no torch,
  no code runs); NumPy only."""
  if weights_path.endswith(".safetensors"):
    from safetensors.numpy import load  # pylint: disable=import-outside-toplevel
    return load(data)
  return torch_checkpoint.load_state_dict(weights_path, data=data)


def _scheduler_config(path: str) -> tuple[str, dict[str, Any]]:
  """(file, contents) of scheduler_config.json in `path`, its scheduler/ or parent folder."""
  candidates = [os.path.join(d, SCHEDULER_CONFIG_NAME)
                for d in (path, os.path.join(path, "scheduler"), os.path.dirname(path.rstrip("/")),
                          os.path.join(os.path.dirname(path.rstrip("/")), "scheduler"))]
  found = [c for c in candidates if os.path.isfile(c)]
  if not found:
    raise FileNotFoundError(f"no {SCHEDULER_CONFIG_NAME} found; looked at {candidates}")
  with open(found[0], encoding="utf-8") as f:
    return found[0], json.load(f)


def load_clip_x0(path: str) -> float | None:
  """The x0 clipping scheduler_config.json asks for: clip_sample_range (default 1) where
  clip_sample is true, 0.0 where it is false, None where the file does not say."""
  _, config = _scheduler_config(path)
  if "clip_sample" not in config:
    return None
  return float(config.get("clip_sample_range", 1.0)) if config["clip_sample"] else 0.0


def load_schedule(path: str) -> tuple[schedules.Schedule, str]:
  """(schedule, prediction) from scheduler_config.json in `path`, its scheduler/ or parent folder.

  prediction is "eps", "x0" or "v" (ddss_jax.samplers.diffusion.as_eps_fn's names).
  """
  found, config = _scheduler_config(path)
  if config.get("trained_betas") is not None:
    raise ValueError(f"{found}: trained_betas are not supported; use a named beta_schedule")
  num = int(config.get("num_train_timesteps", 1000))
  kind = config.get("beta_schedule", "linear")
  if kind == "linear":
    schedule = schedules.linear_beta(num, config.get("beta_start", 1e-4),
                                     config.get("beta_end", 0.02))
  elif kind == "squaredcos_cap_v2":  # diffusers' name for Nichol & Dhariwal's cosine
    schedule = schedules.cosine(num)
  else:
    raise ValueError(f"{found}: beta_schedule {kind!r} is not supported; valid choices: "
                     "['linear', 'squaredcos_cap_v2']")
  prediction = config.get("prediction_type", "epsilon")
  if prediction not in _PREDICTIONS:
    raise ValueError(f"{found}: prediction_type {prediction!r} is not supported; valid choices:"
                     f" {list(_PREDICTIONS)}")
  return schedule, _PREDICTIONS[prediction]


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  config: unet.UNetConfig
  params: Any
  weights_path: str
  sha256: str


def read_config(path: str) -> unet.UNetConfig:
  """The UNetConfig of the checkpoint folder at `path` (its config.json only; no weights read)."""
  with open(os.path.join(find_model_dir(path), CONFIG_NAME), encoding="utf-8") as f:
    return config_from_json(json.load(f))


def load(path: str, *, sha256: str | None = None) -> Checkpoint:
  """Reads a diffusers UNet2DModel folder; raises ValueError naming the file and both digests if
  `sha256` is given and differs. Without it, logs a warning with the digest to pin."""
  model_dir = find_model_dir(path)
  cfg = read_config(model_dir)
  weights_path = next((os.path.join(model_dir, n) for n in (SAFETENSORS_NAME, BIN_NAME)
                       if os.path.isfile(os.path.join(model_dir, n))), None)
  if weights_path is None:
    raise FileNotFoundError(missing_checkpoint_message(path))
  with open(weights_path, "rb") as f:
    data = f.read()
  digest = check_sha256(weights_path, sha256, data=data)
  if sha256 is None:
    logging.warning("%s is not pinned; trusting it on first use: its sha256 is %s. Pin it with "
                    "--config.pretrained.checkpoint_sha256=%s (or load(..., sha256=)) so that a "
                    "changed or corrupt file is refused", weights_path, digest, digest)
  return Checkpoint(cfg, from_state_dict(cfg, _read_weights(weights_path, data)), weights_path,
                    digest)


def save(path: str, cfg: unet.UNetConfig, params: Any, *,
         schedule_config: dict[str, Any] | None = None) -> str:
  """Writes a folder diffusers' UNet2DModel.from_pretrained reads; returns the weights' sha256.

  The folder is written beside `path` and renamed into place, so a killed export leaves no
  half-written checkpoint. `schedule_config`, if given, is written as scheduler_config.json.
  """
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  with files.atomic_folder(path) as tmp:
    files.write_json(os.path.join(tmp, CONFIG_NAME), config_to_json(cfg))
    if schedule_config is not None:
      files.write_json(os.path.join(tmp, SCHEDULER_CONFIG_NAME), schedule_config)
    save_file(to_state_dict(params), os.path.join(tmp, SAFETENSORS_NAME),
              metadata={"format": "pt"})
    digest = sha256_of(os.path.join(tmp, SAFETENSORS_NAME))
  return digest
