"""ddss_jax.models.torch_checkpoint: torch.save files read into NumPy without torch, refusing any
pickle global a state dict does not need. The committed fixtures (tests/data/tiny_state_dict*.pth,
written once by torch 2.13 in the zip and the legacy format) run without torch; the parity test
compares with torch.load on fresh files."""

import io
import os
import pickle  # writes the legacy format's headers
import zipfile

import numpy as np
import pytest

from ddss_jax.models import torch_checkpoint

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
FIXTURES = ("tiny_state_dict.pth", "tiny_state_dict_legacy.pth")


def expected_fixture():
  """The state dict the fixtures hold, built independently with NumPy."""
  fc = (np.arange(6, dtype=np.float32).reshape(2, 3) - 2).astype(np.float16).T
  return {"conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) / 8,
          "bn.running_mean": np.array([0.5, -1.0]), "bn.num_batches_tracked": np.array(7),
          "fc.weight": fc, "fc.bias": np.array([1.5, -2.25], np.float32),  # bfloat16-exact
          "mask": np.array([True, False, True])}


@pytest.mark.parametrize("name", FIXTURES)
def test_the_committed_fixtures_read_exactly(name):
  got = torch_checkpoint.load_state_dict(os.path.join(DATA, name))
  want = expected_fixture()
  assert list(got) == list(want)  # the OrderedDict's order
  for key, value in want.items():
    assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
    np.testing.assert_array_equal(got[key], value, err_msg=key)


def _zip_checkpoint(pickle_bytes: bytes, storages: dict[str, bytes] = None) -> bytes:
  out = io.BytesIO()
  with zipfile.ZipFile(out, "w") as archive:
    archive.writestr("archive/data.pkl", pickle_bytes)
    for key, raw in (storages or {}).items():
      archive.writestr(f"archive/data/{key}", raw)
  return out.getvalue()


# Protocol-0 pickles written by hand: GLOBAL, an arguments tuple, REDUCE.
CALLS_OS_SYSTEM = b"cos\nsystem\n(S'touch pwned'\ntR."
CALLS_BUILTINS_EVAL = b"c__builtin__\neval\n(S'1+1'\ntR."


@pytest.mark.parametrize("payload,name", [(CALLS_OS_SYSTEM, "os.system"),
                                          (CALLS_BUILTINS_EVAL, "__builtin__.eval")])
@pytest.mark.parametrize("form", ["zip", "legacy"])
def test_a_pickle_calling_anything_else_is_refused_naming_the_global(tmp_path, monkeypatch,
                                                                     payload, name, form):
  monkeypatch.chdir(tmp_path)
  if form == "zip":
    data = _zip_checkpoint(payload)
  else:  # the legacy headers (magic number, protocol, sys_info) then the payload
    data = b"".join(pickle.dumps(header, protocol=2)
                    for header in (0x1950a86a20f9469cfc6c, 1001, {})) + payload
  with pytest.raises(torch_checkpoint.UnsafeCheckpointError,
                     match=rf"asks for the global {name}, .* refused"):
    torch_checkpoint.load_bytes(data, path="evil.pth")
  assert not os.path.exists(tmp_path / "pwned")


def test_a_tensor_reading_past_its_storage_is_refused():
  # _rebuild_tensor_v2(storage of 4 floats, offset 2, size (3,), stride (1,)): reads element 4.
  pickle_bytes = (b"ctorch._utils\n_rebuild_tensor_v2\n((S'storage'\nctorch\nFloatStorage\n"
                  b"S'0'\nS'cpu'\nI4\ntQI2\n(I3\nt(I1\ntI00\nNtR.")
  data = _zip_checkpoint(pickle_bytes,
                         {"0": np.zeros(4, np.float32).tobytes()})
  with pytest.raises(torch_checkpoint.UnsafeCheckpointError, match=r"reads past its storage of 4"):
    torch_checkpoint.load_bytes(data)


def test_a_pickle_that_rewrites_a_checked_tensor_is_refused():
  # A valid tensor of the 4-float storage, then BUILD with {'offset': 100}: past the bounds check.
  pickle_bytes = (b"ctorch._utils\n_rebuild_tensor_v2\n((S'storage'\nctorch\nFloatStorage\n"
                  b"S'0'\nS'cpu'\nI4\ntQI0\n(I4\nt(I1\ntI00\nNtR(dS'offset'\nI100\nsb.")
  data = _zip_checkpoint(pickle_bytes, {"0": np.zeros(4, np.float32).tobytes()})
  with pytest.raises(torch_checkpoint.UnsafeCheckpointError,
                     match=r"sets the state of a PendingTensor: refused"):
    torch_checkpoint.load_bytes(data)
  unchanged = _zip_checkpoint(pickle_bytes.replace(b"(dS'offset'\nI100\nsb.", b"."),
                              {"0": np.arange(4, dtype=np.float32).tobytes()})
  np.testing.assert_array_equal(torch_checkpoint.load_bytes(unchanged), [0, 1, 2, 3])


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
  path = tmp_path / "notes.pth"
  path.write_bytes(b"hello, this is text")
  with pytest.raises(ValueError, match=r"notes.pth is not a torch.save checkpoint"):
    torch_checkpoint.load_state_dict(str(path))
  with pytest.raises(ValueError, match=r"is a zip file but not a torch.save checkpoint"):
    torch_checkpoint.load_bytes(_zip_checkpoint(b"N.").replace(b"data.pkl", b"other.pk"))


@pytest.mark.parity
@pytest.mark.parametrize("legacy", [False, True])
def test_equals_torch_load_with_parity(tmp_path, legacy):
  torch = pytest.importorskip("torch", reason="parity needs torch: pip install -e '.[parity]'")
  generator = torch.Generator().manual_seed(0)
  state = {"a": torch.randn(3, 4, 2, 2, generator=generator),
           "b": torch.randn(5, 7, generator=generator).double().t(),  # non-contiguous
           "c": torch.arange(20)[4:9],  # a view at an offset into a shared storage
           "d": torch.randn(4, generator=generator).half(),
           "e": torch.zeros(0, 3), "f": torch.randn(3, generator=generator).bfloat16(),
           "g": torch.nn.Parameter(torch.randn(2, generator=generator))}
  path = str(tmp_path / "state.pth")
  torch.save(state, path, _use_new_zipfile_serialization=not legacy)
  got = torch_checkpoint.load_state_dict(path)
  want = torch.load(path, map_location="cpu", weights_only=True)
  assert list(got) == list(want)
  for key, value in want.items():
    value = value.detach()
    value = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
    np.testing.assert_array_equal(got[key], value, err_msg=key)
