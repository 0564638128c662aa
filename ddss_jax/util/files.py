"""Atomic writes: every file the project writes goes through atomic_write.

The content goes to a temporary file in the same folder (so the rename never crosses file
systems), named with the JAX process index and the process id so that several hosts or processes
writing the same path never share one; when the with-block ends normally the temporary file
replaces `path` in one os.replace, so a reader sees the old file or the new one, never a part.
When the block raises, the temporary file is removed and `path` is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from typing import IO, Any, Iterator

import numpy as np


def _process_index() -> int:
  """jax.process_index() where JAX is imported (multi-host runs), else 0; JAX is not imported
  here so that a tool writing a report does not start a JAX backend."""
  jax = sys.modules.get("jax")
  return jax.process_index() if jax is not None else 0


def temporary_path(path: str) -> str:
  """The temporary name beside `path` that this process writes before the rename."""
  return f"{path}.{_process_index()}-{os.getpid()}.tmp"


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", *, fsync: bool = False,
                 newline: str | None = None) -> Iterator[IO[Any]]:
  """with atomic_write(path) as f: f.write(...) -- `path` gets the content when the block ends.

  mode is "w" (text, UTF-8; newline as open's) or "wb" (bytes). fsync=True also flushes the
  content to the disk before the rename, for files that must survive a power cut, not only a
  killed process. The file object's .name is the temporary path (to check a digest before the
  rename, say).
  """
  if mode not in ("w", "wt", "wb"):
    raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
  tmp = temporary_path(path)
  binary = "b" in mode
  try:
    with open(tmp, mode, encoding=None if binary else "utf-8",
              newline=None if binary else newline) as f:
      yield f
      if fsync:
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  with atomic_write(path) as f:
    f.write(text)


def write_bytes(path: str, data: bytes) -> None:
  with atomic_write(path, "wb") as f:
    f.write(data)


def write_json(path: str, obj: Any, *, indent: int | None = 2) -> None:
  """json.dump(obj, f, indent=indent) to `path`, atomically."""
  with atomic_write(path) as f:
    json.dump(obj, f, indent=indent)


def save_npz(path: str, **arrays: Any) -> None:
  """np.savez(path, **arrays), atomically; `path` is used as given (np.savez adds ".npz" to a
  name without it, here it is the caller's to choose)."""
  with atomic_write(path, "wb") as f:
    np.savez(f, **arrays)


@contextlib.contextmanager
def atomic_folder(path: str) -> Iterator[str]:
  """with atomic_folder(path) as tmp: write files into the folder tmp -- it replaces the folder
  `path` (and whatever was there) when the block ends; when it raises, tmp is removed and `path`
  left as it was. For a set of files read together (a checkpoint folder)."""
  path = path.rstrip("/")
  tmp = temporary_path(path)
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    yield tmp
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
