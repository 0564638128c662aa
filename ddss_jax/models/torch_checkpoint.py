"""PyTorch checkpoint files (torch.save of a state dict) read into NumPy arrays without torch.

torch.save writes a pickle whose tensors refer to raw storages: in the zip format (torch >= 1.6)
`<name>/data.pkl` beside one file per storage in `<name>/data/`; in the legacy format (before it,
e.g. pytorch-fid's FID Inception weights may be one) a run of pickles followed by the storages'
bytes. A pickle can call any importable function, so this reads it with an unpickler that knows
only the few globals a state dict uses (`ALLOWED_GLOBALS`), each mapped to a NumPy builder; any
other global is refused with an UnsafeCheckpointError naming it, before anything is called.
Nothing here executes code from the file, and nothing imports torch.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle  # only through RestrictedUnpickler, whose find_class allows ALLOWED_GLOBALS
import zipfile
from typing import Any

import numpy as np

# torch.<Name>Storage -> the element type of its bytes. bfloat16 has no NumPy type: its 16 bits
# are the high half of a float32, widened on reading.
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001


class UnsafeCheckpointError(ValueError):
  """The pickle asks for a global that a state dict of tensors never needs."""


class _NoBuild:
  """Refuses pickle's BUILD, which would otherwise set any attribute (a checked offset, say)."""

  def __setstate__(self, state):
    raise UnsafeCheckpointError(f"the checkpoint's pickle sets the state of a "
                                f"{type(self).__name__.lstrip('_')}: refused")


@dataclasses.dataclass(frozen=True)
class _StorageType(_NoBuild):
  """What the global torch.<Name>Storage unpickles to: a marker, not callable."""
  name: str


@dataclasses.dataclass
class _Storage(_NoBuild):
  """A storage named in the pickle; its bytes are filled in once they are read."""
  kind: _StorageType
  key: str
  numel: int
  data: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _PendingTensor(_NoBuild):
  """A tensor rebuilt from a storage whose bytes may not be read yet (the legacy format)."""
  storage: _Storage
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]


def _ints(value: Any, what: str) -> tuple[int, ...]:
  if not isinstance(value, (tuple, list)) or not all(
      isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
    raise UnsafeCheckpointError(f"tensor {what} {value!r} is not a tuple of non-negative ints")
  return tuple(value)


def _check_view(offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                numel: int) -> None:
  """Raises unless every element of the strided view lies inside a storage of `numel`."""
  if len(size) != len(stride):
    raise UnsafeCheckpointError(f"tensor size {size} and stride {stride} differ in length")
  if all(size) and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= numel:
    raise UnsafeCheckpointError(f"tensor of size {size}, stride {stride} at offset {offset} "
                                f"reads past its storage of {numel} elements")


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _PendingTensor:
  """torch._utils._rebuild_tensor(_v2)'s arguments, checked; requires_grad, hooks and metadata
  are dropped (a state dict's values are plain arrays)."""
  del unused
  if not isinstance(storage, _Storage):
    raise UnsafeCheckpointError(f"a tensor's storage is a {type(storage).__name__}, not a storage")
  (offset,) = _ints((storage_offset,), "offset")
  size, stride = _ints(size, "size"), _ints(stride, "stride")
  _check_view(offset, size, stride, storage.numel)
  return _PendingTensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
  """torch._utils._rebuild_parameter: an nn.Parameter is its tensor."""
  del requires_grad, backward_hooks, unused
  if not isinstance(data, _PendingTensor):
    raise UnsafeCheckpointError(f"a parameter wraps a {type(data).__name__}, not a tensor")
  return data


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class RestrictedUnpickler(pickle.Unpickler):
  """An unpickler that resolves only ALLOWED_GLOBALS and the storages' persistent ids."""

  def __init__(self, file, storages: dict[str, _Storage]):
    super().__init__(file)
    self._storages = storages

  def find_class(self, module, name):
    try:
      return ALLOWED_GLOBALS[module, name]
    except KeyError:
      raise UnsafeCheckpointError(
          f"the checkpoint's pickle asks for the global {module}.{name}, which a state dict of "
          f"tensors never needs; refused (allowed: "
          f"{sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS)})") from None

  def persistent_load(self, pid):
    # zip: ('storage', type, key, location, numel); legacy: the same and view_metadata.
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
            and isinstance(pid[1], _StorageType) and isinstance(pid[4], int)):
      raise UnsafeCheckpointError(f"unexpected persistent id {pid!r} (not a tensor storage)")
    if len(pid) == 6 and pid[5] is not None:
      raise UnsafeCheckpointError("storage views (torch < 0.4 checkpoints) are not supported")
    key = str(pid[2])
    if key not in self._storages:
      self._storages[key] = _Storage(pid[1], key, pid[4])
    return self._storages[key]


def _set_bytes(storage: _Storage, raw: bytes, byteorder: str) -> None:
  dtype = np.dtype(STORAGE_DTYPES[storage.kind.name]).newbyteorder(
      "<" if byteorder == "little" else ">")
  if len(raw) != storage.numel * dtype.itemsize:
    raise ValueError(f"storage {storage.key} holds {len(raw)} bytes, expected "
                     f"{storage.numel} {storage.kind.name} elements of {dtype.itemsize}")
  storage.data = np.frombuffer(raw, dtype)


def _to_array(tensor: _PendingTensor) -> np.ndarray:
  flat = tensor.storage.data
  itemsize = flat.dtype.itemsize
  # Checked again against the bytes actually read: as_strided itself reads anywhere it is told.
  _check_view(tensor.offset, tensor.size, tensor.stride, flat.shape[0])
  if not all(tensor.size):
    out = np.zeros(tensor.size, flat.dtype)
  else:
    out = np.lib.stride_tricks.as_strided(
        flat[tensor.offset:], shape=tensor.size,
        strides=tuple(s * itemsize for s in tensor.stride)).copy()
  if tensor.storage.kind.name == "BFloat16Storage":
    out = (out.astype(np.uint32) << 16).view(np.float32)
  return out.astype(out.dtype.newbyteorder("="))


def _resolve(obj: Any) -> Any:
  """The unpickled object with every tensor turned into a NumPy array."""
  if isinstance(obj, _PendingTensor):
    return _to_array(obj)
  if isinstance(obj, dict):
    return {key: _resolve(value) for key, value in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(value) for value in obj)
  return obj


def _load_zip(archive: zipfile.ZipFile, path: str) -> Any:
  pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
  if len(pickles) != 1:
    raise ValueError(f"{path} is a zip file but not a torch.save checkpoint (no <name>/data.pkl)")
  root = pickles[0].rsplit("/", 1)[0]
  names = set(archive.namelist())
  byteorder = "little"
  if f"{root}/byteorder" in names:
    byteorder = archive.read(f"{root}/byteorder").decode().strip()
  storages: dict[str, _Storage] = {}
  result = RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
  for key, storage in storages.items():
    name = f"{root}/data/{key}"
    if name not in names:
      raise ValueError(f"{path}: storage file {name} is missing")
    _set_bytes(storage, archive.read(name), byteorder)
  return _resolve(result)


def _load_legacy(f: io.BytesIO, path: str) -> Any:
  def header():
    return RestrictedUnpickler(f, {}).load()

  if header() != _LEGACY_MAGIC or header() != _LEGACY_PROTOCOL:
    raise ValueError(f"{path} is neither a zip nor a legacy torch.save checkpoint")
  sys_info = header()
  byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get(
      "little_endian", True) else "big"
  storages: dict[str, _Storage] = {}
  result = RestrictedUnpickler(f, storages).load()
  keys = header()
  if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
    raise ValueError(f"{path}: the storage list {keys!r} does not match the tensors' storages")
  for key in map(str, keys):  # each: int64 element count, then the elements
    storage = storages[key]
    count = int.from_bytes(f.read(8), byteorder)
    if count != storage.numel:
      raise ValueError(f"{path}: storage {key} has {count} elements, the pickle says "
                       f"{storage.numel}")
    itemsize = np.dtype(STORAGE_DTYPES[storage.kind.name]).itemsize
    _set_bytes(storage, f.read(count * itemsize), byteorder)
  return _resolve(result)


def load_bytes(data: bytes, *, path: str = "<bytes>") -> Any:
  """What torch.load(weights_only=True) returns for the file's bytes, with NumPy arrays for
  tensors (dicts for OrderedDicts). Raises UnsafeCheckpointError (a ValueError) naming any global
  outside ALLOWED_GLOBALS, ValueError for a file that is not a torch checkpoint (`path` names it).
  """
  if zipfile.is_zipfile(io.BytesIO(data)):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
      return _load_zip(archive, path)
  try:
    return _load_legacy(io.BytesIO(data), path)
  except (pickle.UnpicklingError, EOFError) as e:
    raise ValueError(f"{path} is not a torch.save checkpoint: {e}") from e


def load_state_dict(path: str, *, data: bytes | None = None) -> dict[str, np.ndarray]:
  """{name: array} of the state dict saved at `path` (or in its bytes `data`, already read)."""
  if data is None:
    with open(path, "rb") as f:
      data = f.read()
  state = load_bytes(data, path=path)
  if not isinstance(state, dict) or not all(
      isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items()):
    raise ValueError(f"{path} does not hold a state dict (a dict of names to tensors)")
  return state
