"""Checkpoints named by Hugging Face Hub id: told apart from local folders, fetched into
huggingface_hub's cache, or, where that cannot happen, the exact command that gets them.

`config.pretrained.checkpoint` is either a folder (an existing folder always wins) or a hub id
"owner/name" (e.g. google/ddpm-cifar10-32). A hub id is fetched with huggingface_hub (the
optional extra `pip install -e '.[hub]'`) into its cache ($HF_HUB_CACHE, else $HF_HOME/hub,
else ~/.cache/huggingface/hub): the configs (*.json) and the weights, safetensors where the
repository has them, else the PyTorch .bin. Offline ($HF_HUB_OFFLINE or $DDSS_JAX_OFFLINE set to
1) only the cache is read.
"""

from __future__ import annotations

import importlib.util
import os
import re

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "DDSS_JAX_OFFLINE")
CONFIG_PATTERNS = ("*.json",)
WEIGHT_PATTERNS = (("*.safetensors",), ("*.bin",))  # the first that gives weights wins


def offline() -> bool:
  """True when $HF_HUB_OFFLINE or $DDSS_JAX_OFFLINE is set to 1/true/yes/on: no downloads."""
  return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
             for name in OFFLINE_ENV_VARS)


def is_hub_id(checkpoint: str) -> bool:
  """Whether `checkpoint` names a hub repository: no existing folder has that path and it is
  "owner/name". Raises ValueError for a path that is neither an existing folder nor a hub id."""
  if os.path.isdir(checkpoint):
    return False
  if HUB_ID.fullmatch(checkpoint) and ".." not in checkpoint:
    return True
  raise ValueError(
      f"config.pretrained.checkpoint={checkpoint!r} is neither an existing folder nor a Hugging "
      "Face Hub id of the form owner/name (e.g. google/ddpm-cifar10-32): give the path of a "
      "diffusers UNet2DModel folder that exists, or a hub id")


def commands(repo_id: str) -> str:
  """How to get hub repository `repo_id` by hand, for messages."""
  unset = f"unset ${OFFLINE_ENV_VARS[0]} and ${OFFLINE_ENV_VARS[1]}, " if offline() else ""
  return (f"on a machine with network access, {unset}`pip install -e '.[hub]'` and rerun (the "
          f"run downloads {repo_id} into huggingface_hub's cache), or fetch it by hand: "
          f"`hf download {repo_id} --include '*.json' '*.safetensors'` (the same cache; "
          f"`--include '*.bin'` where the repository has no safetensors), or "
          f"`git lfs install && git clone https://huggingface.co/{repo_id} DIR` and pass "
          "--config.pretrained.checkpoint=DIR")


def _first_line(error: Exception) -> str:
  return (str(error).strip().splitlines() or [""])[0].rstrip(".")


def _has_weights(folder: str) -> bool:
  return any(name.endswith((".safetensors", ".bin"))
             for _, _, names in os.walk(folder) for name in names)


def _snapshot(repo_id: str, patterns: tuple[str, ...], local_only: bool) -> str:
  from huggingface_hub import snapshot_download  # pylint: disable=import-outside-toplevel
  return snapshot_download(repo_id, allow_patterns=list(patterns), local_files_only=local_only,
                           cache_dir=os.environ.get("HF_HUB_CACHE") or None)


def fetch(repo_id: str, *, download: bool = True) -> str:
  """The local snapshot folder of hub repository `repo_id`, downloading what is missing unless
  offline() or download=False (the cache only). Raises FileNotFoundError saying what is missing
  and the exact commands to get it."""
  if importlib.util.find_spec("huggingface_hub") is None:
    raise FileNotFoundError(f"checkpoint {repo_id} is a Hugging Face Hub id and huggingface_hub "
                            f"is not installed. To fix it, {commands(repo_id)}")
  local_only = offline() or not download
  try:
    folder = None
    for weights in WEIGHT_PATTERNS:
      folder = _snapshot(repo_id, CONFIG_PATTERNS + weights, local_only)
      if _has_weights(folder):
        return folder
  except Exception as e:  # pylint: disable=broad-except; the hub raises many kinds, all reported
    where = ("the hub" if not local_only else "huggingface_hub's cache (offline: $HF_HUB_OFFLINE "
             "or $DDSS_JAX_OFFLINE is set)" if offline() else "huggingface_hub's cache")
    where += f" (no folder {repo_id} exists in {os.getcwd()}, so it was read as a hub id)"
    raise FileNotFoundError(f"checkpoint {repo_id} could not be read from {where}: "
                            f"{type(e).__name__}: {_first_line(e)}. "
                            f"To fix it, {commands(repo_id)}") from e
  raise FileNotFoundError(f"checkpoint {repo_id}: its snapshot {folder} holds no "
                          f".safetensors or .bin weights. To fix it, {commands(repo_id)}")


def local_folder(checkpoint: str, *, download: bool = True) -> str:
  """The folder of config.pretrained.checkpoint: itself, or its hub snapshot (see fetch)."""
  return fetch(checkpoint, download=download) if is_hub_id(checkpoint) else checkpoint
