"""The FID Inception's weights: pytorch-fid's .pth found in (or downloaded once into) the cache,
read without torch (ddss_jax.models.torch_checkpoint) into ddss_jax.models.inception's tree, or
the msgpack that `python -m ddss_jax.tools.convert_inception` writes from it, checked by sha256.
"""

from __future__ import annotations

import os
import urllib.request
from typing import Any

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from ddss_jax import weights
from ddss_jax.models import torch_checkpoint
from ddss_jax.models.inception import variables_template
from ddss_jax.util import files

WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth")
WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
# torch.hub's convention: the file name ends in the first 8 hex digits of the file's sha256. Only
# this prefix is published, so it is all that can be checked for the original .pth.
WEIGHTS_SHA256_PREFIX = "6726825d"
CACHE_ENV_VAR = "DDSS_JAX_CACHE"
SIDECAR_SUFFIX = weights.SIDECAR_SUFFIX  # <file>.msgpack.sha256: the converted file's digest
_LEAF_TO_TORCH = {("params", "kernel"): "weight", ("params", "scale"): "weight",
                  ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
                  ("batch_stats", "var"): "running_var"}


def torch_key(flax_path: tuple[str, ...]) -> str:
  """("params", "Mixed_5b", "branch1x1", "conv", "kernel") -> "Mixed_5b.branch1x1.conv.weight"."""
  return ".".join(flax_path[1:-1] + (_LEAF_TO_TORCH[flax_path[0], flax_path[-1]],))


def from_torch_state_dict(state_dict_numpy: dict[str, np.ndarray]) -> Any:
  """{"params", "batch_stats"} of the full-width network from a pytorch-fid state dict of numpy
  arrays (conv OIHW -> HWIO, fc [out, in] -> [in, out]); BatchNorm's num_batches_tracked is unused.
  """
  template = flatten_dict(variables_template())
  wanted = {torch_key(path): path for path in template}
  given = {k: v for k, v in state_dict_numpy.items() if not k.endswith(".num_batches_tracked")}
  missing, unexpected = sorted(set(wanted) - set(given)), sorted(set(given) - set(wanted))
  if missing or unexpected:
    raise ValueError(f"not an FID Inception state dict: missing keys {missing[:5]} "
                     f"({len(missing)} in all), unexpected keys {unexpected[:5]} "
                     f"({len(unexpected)} in all)")
  out = {}
  for key, path in wanted.items():
    value = np.asarray(given[key], np.float32)
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif value.ndim == 2:
      value = value.T  # [out, in] -> [in, out]
    if value.shape != template[path].shape:
      raise ValueError(f"{key} has shape {value.shape} after transposing, expected "
                       f"{template[path].shape}")
    out[path] = value
  return unflatten_dict(out)


def cache_dir() -> str:
  """$DDSS_JAX_CACHE if set, else ~/.cache/ddss_jax (weights, reference statistics)."""
  return os.environ.get(CACHE_ENV_VAR) or os.path.expanduser("~/.cache/ddss_jax")


def default_weights_path() -> str:
  """WEIGHTS_FILENAME in cache_dir()."""
  return os.path.join(cache_dir(), WEIGHTS_FILENAME)


def load_weights(path: str, *, sha256: str | None = None, verify: bool = True,
                 width: float = 1.0) -> Any:
  """{"params", "batch_stats"} from the original .pth or a .msgpack written by convert_inception.

  Args:
    path: a .pth (read without torch by torch_checkpoint, which builds nothing but arrays) or
      a .msgpack.
    sha256: expected hex digest of the file, or a prefix of it. None: WEIGHTS_SHA256_PREFIX for a
      .pth; for a .msgpack the digest in the sidecar file `<path>.sha256` written beside it by
      convert_inception.
    verify: False skips the check (files a test or run wrote itself).
    width: the network's width multiplier; a .msgpack of a width-reduced test network loads only
      with its own width (the .pth is always the full network).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(missing_weights_message(path))
  with open(path, "rb") as f:
    data = f.read()
  is_msgpack = path.endswith(".msgpack")
  if verify:
    weights.check_sha256(
        path, sha256 or (_read_sidecar(path) if is_msgpack else WEIGHTS_SHA256_PREFIX),
        prefix=True, data=data)
  if is_msgpack:
    try:  # names and shapes: from_bytes alone would accept other shapes
      return weights.from_msgpack(variables_template(width=width), data, path=path)
    except ValueError as e:
      raise ValueError(f"{e} (not the network of width {width:g}?)") from e
  return from_torch_state_dict(torch_checkpoint.load_state_dict(path, data=data))


def save_converted(variables: Any, path: str) -> str:
  """Writes variables as msgpack and its sha256 to `<path>.sha256` (sha256sum's format); returns
  the digest. load_weights(path) then verifies the file against that sidecar.
  """
  return weights.save_msgpack(variables, path)


def _read_sidecar(path: str) -> str:
  digest = weights.read_sidecar(path)
  if digest is None:
    raise FileNotFoundError(f"{path}{SIDECAR_SUFFIX} (the sha256 of {path}) does not exist; "
                            "rewrite both with python -m ddss_jax.tools.convert_inception, or "
                            "pass sha256=")
  return digest


def missing_weights_message(path: str | None) -> str | None:
  """None if the weights file (path, or the cache's when None) exists; else what to do about it.

  Downloads nothing: for a pre-flight check before anything is compiled.
  """
  target = path or default_weights_path()
  if os.path.exists(target):
    return None
  return (f"FID Inception weights file {target} is missing. Download {WEIGHTS_URL} "
          f"(its sha256 starts with {WEIGHTS_SHA256_PREFIX}), e.g. `mkdir -p {cache_dir()} && "
          f"curl -L -o {default_weights_path()} {WEIGHTS_URL}`, to {default_weights_path()} "
          f"(the cache, where a run with network access downloads it itself; set "
          f"${CACHE_ENV_VAR} to move it), or anywhere and set the config field "
          "inception_weights to its path. Optionally convert it once to a msgpack: "
          f"python -m ddss_jax.tools.convert_inception --src {target} "
          f"--dst {os.path.splitext(target)[0]}.msgpack")


def download_weights(dst: str, *, url: str = WEIGHTS_URL,
                     sha256_prefix: str = WEIGHTS_SHA256_PREFIX, timeout: float = 60) -> str:
  """Fetches url into dst atomically (a temporary file beside it, renamed once its sha256 starts
  with sha256_prefix); returns dst. Raises OSError (urllib's URLError) if the fetch fails and
  ValueError naming both digests if the bytes are not the file named; dst is then left as it was.
  """
  os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
  with urllib.request.urlopen(url, timeout=timeout) as response, \
      files.atomic_write(dst, "wb") as f:
    while chunk := response.read(1 << 20):
      f.write(chunk)
    f.flush()
    weights.check_sha256(f.name, sha256_prefix, prefix=True)  # raising removes the temporary
  return dst


def ensure_weights(path: str | None, *, download: bool = True) -> str:
  """The path of the FID Inception weights, downloading them once into the cache if needed.

  path given: returned if the file exists, else FileNotFoundError (no download: a named file
  that is missing is a mistake to report). path None: the cache's copy, downloaded from
  WEIGHTS_URL (and sha256-checked) on first use unless download=False; FileNotFoundError saying
  what to do if that fails.
  """
  message = missing_weights_message(path)
  if message is None:
    return path or default_weights_path()
  if path is None and download:
    try:
      return download_weights(default_weights_path())
    except (OSError, ValueError) as e:  # URLError is an OSError; ValueError: bad checksum
      raise FileNotFoundError(f"{message} (download failed: {e})") from e
  raise FileNotFoundError(message)
