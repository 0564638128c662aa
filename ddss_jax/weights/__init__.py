"""Network weights shipped inside the package, as flax msgpack files (they cannot execute code),
each checked against its sha256 on load. `SHIPPED` names each file, its checksum and the exact
command that regenerates it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import flax.serialization

WEIGHTS_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class ShippedWeights:
  filename: str  # inside ddss_jax/weights/
  sha256: str
  command: str   # regenerates the file (run from the repository root)


SHIPPED: dict[str, ShippedWeights] = {
    "mnist_unet": ShippedWeights(
        filename="mnist_unet.msgpack",
        sha256="d62524c82b59c4eef8b44eb581e23a144eab65db7d01beac5d693f4dee76c4e8",
        command="python -m ddss_jax.tools.train_unet --out=ddss_jax/weights/mnist_unet.msgpack"),
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
  publisher gives only a prefix, like the FID Inception .pth). None skips the check, for files a
  run wrote itself.
  """
  digest = hashlib.sha256(data).hexdigest() if data is not None else sha256_of(path)
  expected = None if expected is None else expected.lower()
  if expected is not None and not (digest.startswith(expected) if prefix else digest == expected):
    wanted = f"one starting with {expected}" if prefix else expected
    raise ValueError(f"{path} has sha256 {digest}, expected {wanted}; the file is corrupt or "
                     "not the one named")
  return digest


def save_msgpack(params: Any, path: str) -> str:
  """Writes params as flax msgpack atomically (temp file + rename); returns the file's sha256."""
  data = flax.serialization.to_bytes(params)
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)
  return hashlib.sha256(data).hexdigest()


def load_msgpack(path: str, template: Any, *, sha256: str | None) -> Any:
  """Reads params saved by save_msgpack into the structure of `template`.

  Raises FileNotFoundError if the file is absent and ValueError if its sha256 differs from
  `sha256` (None skips the check, for files a run wrote itself).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"weights file {path} does not exist")
  with open(path, "rb") as f:
    data = f.read()
  check_sha256(path, sha256, data=data)
  return flax.serialization.from_bytes(template, data)


def load_shipped(name: str, template: Any) -> Any:
  """Loads the shipped weights `name` (a key of SHIPPED), verifying the checksum."""
  if name not in SHIPPED:
    raise ValueError(f"unknown shipped weights {name!r}; valid choices: {sorted(SHIPPED)}")
  entry = SHIPPED[name]
  path = os.path.join(WEIGHTS_DIR, entry.filename)
  if not os.path.exists(path):
    raise FileNotFoundError(f"shipped weights {name!r} are missing at {path}; regenerate them "
                            f"with: {entry.command}")
  return load_msgpack(path, template, sha256=entry.sha256)
