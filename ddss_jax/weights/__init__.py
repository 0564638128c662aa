"""Network weights: the files shipped inside the package and the msgpack files the project writes.

Safe loading, everywhere in the package:
- No pickle. Weights are flax msgpack (plain arrays; reading them cannot execute code) or
  safetensors; PyTorch files are read by ddss_jax.models.torch_checkpoint, whose unpickler builds
  nothing but arrays (or, in tests and tools, torch.load(weights_only=True)), and .npz files with
  np.load(allow_pickle=False) (tests/test_weights.py scans the source for anything else).
- Every weights file is checked against a sha256 before it is parsed. Shipped files: the digest in
  `SHIPPED`, which also names the exact command that regenerates each file. Files the project
  writes (save_msgpack: training tools, a run's cached models, converted Inception weights) get a
  sidecar `<file>.sha256` in sha256sum's format, checked on every load. A file with neither a
  pinned digest nor a sidecar (e.g. a user's own weights) is trusted on first use: load_msgpack
  logs a warning with its sha256 and how to pin it.
- A msgpack file whose arrays do not have the template's structure and shapes is refused with a
  ValueError naming the file and the offending arrays (flax would load other shapes silently).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import flax.serialization
import numpy as np
from absl import logging
from flax.traverse_util import flatten_dict

from ddss_jax.util import files

WEIGHTS_DIR = os.path.dirname(os.path.abspath(__file__))
SIDECAR_SUFFIX = ".sha256"  # <file>.sha256: "<hex digest>  <file name>", as sha256sum writes


@dataclasses.dataclass(frozen=True)
class ShippedWeights:
  filename: str  # inside ddss_jax/weights/
  sha256: str
  command: str   # regenerates the file (run from the repository root)


SHIPPED: dict[str, ShippedWeights] = {
    "mnist_unet": ShippedWeights(
        filename="mnist_unet.msgpack",
        sha256="948f82acf08180d95855361c21ab4263bc9eb1fcfa5830d7772f42136b1e292a",
        # Two runs in one workdir: stopped after 10000 of 25000 steps at batch 256, then
        # resumed to 16000 steps at batch 512 (ddss_jax/tools/train_unet.py).
        command="python -m ddss_jax.tools.train_unet --workdir=/tmp/ddss_mnist_unet "
                "--out=/tmp/mnist_unet_stage1.msgpack --num_steps=25000 --batch_size=256 "
                "--warmup_steps=500 --ema_decay=0.9995 --checkpoint_every=5000 --stop_after=10000"
                " && python -m ddss_jax.tools.train_unet --workdir=/tmp/ddss_mnist_unet "
                "--out=ddss_jax/weights/mnist_unet.msgpack --num_steps=16000 --batch_size=512 "
                "--warmup_steps=500 --ema_decay=0.9995 --checkpoint_every=4000"),
    "mnist_cond_unet": ShippedWeights(
        filename="mnist_cond_unet.msgpack",
        sha256="808374284b23076d60a69895a2dfd1a5cb735902b423ef18d764dc47b3cfae4d",
        # One run, interrupted and resumed from its checkpoint of step 1500 with this command.
        command="python -m ddss_jax.tools.train_unet --num_classes=10 "
                "--init_from=ddss_jax/weights/mnist_unet.msgpack "
                "--workdir=/tmp/ddss_mnist_cond_unet "
                "--out=ddss_jax/weights/mnist_cond_unet.msgpack --num_steps=4000 "
                "--batch_size=128 --learning_rate=5e-4 "
                "--class_embedding_lr_scale=20 --warmup_steps=100 --ema_decay=0.999 "
                "--checkpoint_every=250"),
    "mnist_classifier": ShippedWeights(
        filename="mnist_classifier.msgpack",
        sha256="fd0eb9d77371b0f616d145ab554a8af8bbd0b7cc36a4a8c7e203295fcc52f6dc",
        command="python -m ddss_jax.tools.train_classifier "
                "--out=ddss_jax/weights/mnist_classifier.msgpack"),
}


def sha256_of(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def check_sha256(path: str, expected: str | None, *, prefix: bool = False,
                 data: bytes | None = None) -> str:
  """The sha256 of the file at `path` (or of its bytes `data`, already read).

  Raises ValueError unless it equals `expected` (prefix=True: starts with it, for files whose
  publisher gives only a prefix, like the FID Inception .pth). None skips the check.
  """
  digest = hashlib.sha256(data).hexdigest() if data is not None else sha256_of(path)
  expected = None if expected is None else expected.lower()
  if expected is not None and not (digest.startswith(expected) if prefix else digest == expected):
    wanted = f"one starting with {expected}" if prefix else expected
    raise ValueError(f"{path} has sha256 {digest}, expected {wanted}; the file is corrupt or "
                     "not the one named")
  return digest


def read_sidecar(path: str) -> str | None:
  """The digest in `<path>.sha256`, or None if there is no such file."""
  sidecar = path + SIDECAR_SUFFIX
  if not os.path.exists(sidecar):
    return None
  with open(sidecar, encoding="utf-8") as f:
    fields = f.read().split()
  if not fields:
    raise ValueError(f"{sidecar} is empty; expected '<sha256 of {os.path.basename(path)}>  "
                     f"{os.path.basename(path)}'")
  return fields[0]


def save_msgpack(params: Any, path: str) -> str:
  """Writes params as flax msgpack atomically (temp file + rename), then its sidecar
  `<path>.sha256`; returns the file's sha256. A kill between the two leaves no sidecar (a
  warning on load), never a stale one."""
  data = flax.serialization.to_bytes(params)
  digest = hashlib.sha256(data).hexdigest()
  with files.atomic_write(path, "wb") as f:
    f.write(data)
    if os.path.exists(path + SIDECAR_SUFFIX):  # once the data is written, before the rename
      os.remove(path + SIDECAR_SUFFIX)
  files.write_text(path + SIDECAR_SUFFIX, f"{digest}  {os.path.basename(path)}\n")
  return digest


def read_verified(path: str, sha256: str | None) -> bytes:
  """The bytes of the weights file at `path`, checked against `sha256`, or, when it is None,
  against the sidecar `<path>.sha256`; with neither, a warning gives the digest to pin.

  Raises FileNotFoundError if the file is absent and ValueError naming the path and both digests
  if they differ.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"weights file {path} does not exist")
  with open(path, "rb") as f:
    data = f.read()
  expected = sha256 if sha256 is not None else read_sidecar(path)
  digest = check_sha256(path, expected, data=data)
  if expected is None:
    logging.warning("%s has no pinned sha256 and no %s sidecar; trusting it on first use: its "
                    "sha256 is %s. To pin it: echo '%s  %s' > %s%s", path, SIDECAR_SUFFIX, digest,
                    digest, os.path.basename(path), path, SIDECAR_SUFFIX)
  return data


def from_msgpack(template: Any, data: bytes, *, path: str) -> Any:
  """Params of msgpack bytes `data` (read from `path`) in the structure of `template`.

  Raises ValueError naming `path` and every missing, unexpected or mis-shaped array.
  """
  state = flax.serialization.msgpack_restore(data)
  want = flatten_dict(flax.serialization.to_state_dict(template))
  got = flatten_dict(state) if isinstance(state, dict) else {(): state}
  problems = [f"missing {'/'.join(k)}" for k in want if k not in got]
  problems += [f"unexpected {'/'.join(k)}" for k in got if k not in want]
  problems += [f"{'/'.join(k)} has shape {np.shape(got[k])}, expected {np.shape(v)}"
               for k, v in want.items() if k in got and np.shape(got[k]) != np.shape(v)]
  if problems:
    raise ValueError(f"{path} does not hold the expected network: " + "; ".join(problems[:8])
                     + (f"; and {len(problems) - 8} more" if len(problems) > 8 else ""))
  return flax.serialization.from_state_dict(template, state)


def load_msgpack(path: str, template: Any, *, sha256: str | None) -> Any:
  """Reads params saved by save_msgpack into the structure of `template`.

  sha256: the expected digest; None: the sidecar's, if any (read_verified). Raises
  FileNotFoundError if the file is absent, ValueError if the digest differs or the arrays are not
  the template's (names and shapes).
  """
  return from_msgpack(template, read_verified(path, sha256), path=path)


def shipped_path(name: str) -> str:
  """The path of the shipped weights `name` (a key of SHIPPED); ValueError naming the valid ones."""
  if name not in SHIPPED:
    raise ValueError(f"unknown shipped weights {name!r}; valid choices: {sorted(SHIPPED)}")
  return os.path.join(WEIGHTS_DIR, SHIPPED[name].filename)


def load_shipped(name: str, template: Any) -> Any:
  """Loads the shipped weights `name` (a key of SHIPPED), verifying the checksum."""
  path = shipped_path(name)
  if not os.path.exists(path):
    raise FileNotFoundError(f"shipped weights {name!r} are missing at {path}; regenerate them "
                            f"with: {SHIPPED[name].command}")
  return load_msgpack(path, template, sha256=SHIPPED[name].sha256)
