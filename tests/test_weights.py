"""ddss_jax.weights and the safe-loading rules: no pickle anywhere in the source, every weights
file checked against its sha256 (a tampered copy is refused, naming the file and both digests),
and msgpack files of the wrong network refused by array name and shape."""

import ast
import logging
import os
import shutil

import numpy as np
import pytest

from ddss_jax import weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("ddss_jax", "experiments", "benchmarks")
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill"}
# The one module allowed to touch pickle: its Unpickler subclass resolves no global but a state
# dict's few (tests/test_torch_checkpoint.py shows the rest refused).
RESTRICTED_UNPICKLER = (os.path.join("ddss_jax", "models", "torch_checkpoint.py"),
                        {"import pickle", "pickle.Unpickler", "pickle.UnpicklingError"})


def _keyword_is(call: ast.Call, name: str, value) -> bool:
  return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
             for k in call.keywords)


def unsafe_loads(source: str) -> list[tuple[int, str]]:
  """(line, what) of every pickle use, torch.load without weights_only=True, np.load without
  allow_pickle=False and allow_pickle=True in Python `source`."""
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found += [(node.lineno, f"import {a.name}") for a in node.names
                if a.name.split(".")[0] in PICKLE_MODULES]
    elif isinstance(node, ast.ImportFrom):
      module = (node.module or "").split(".")[0]
      if module in PICKLE_MODULES:
        found.append((node.lineno, f"from {node.module} import"))
      elif module in ("torch", "numpy") and any(a.name == "load" for a in node.names):
        found.append((node.lineno, f"from {node.module} import load (call it qualified)"))
    elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in PICKLE_MODULES):
      found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    elif isinstance(node, ast.Call):
      func = node.func
      name = (f"{func.value.id}.{func.attr}" if isinstance(func, ast.Attribute)
              and isinstance(func.value, ast.Name) else None)
      if name == "torch.load" and not _keyword_is(node, "weights_only", True):
        found.append((node.lineno, "torch.load( without weights_only=True"))
      if name in ("np.load", "numpy.load") and not _keyword_is(node, "allow_pickle", False):
        found.append((node.lineno, f"{name}( without allow_pickle=False"))
      if _keyword_is(node, "allow_pickle", True):
        found.append((node.lineno, "allow_pickle=True"))
  return sorted(found)


def test_the_scanner_flags_every_unsafe_form():
  bad = ("import pickle\nfrom dill import loads\nx = pickle.loads(b'')\n"
         "torch.load(f)\ntorch.load(f, weights_only=False)\nnp.load(f)\n"
         "numpy.load(f, allow_pickle=True)\nfrom numpy import load\n")
  assert sorted(line for line, _ in unsafe_loads(bad)) == [1, 2, 3, 4, 5, 6, 7, 7, 8]
  good = ("torch.load(f, map_location='cpu', weights_only=True)\n"
          "np.load(f, allow_pickle=False)\nnp.loadtxt(f)\n")
  assert not unsafe_loads(good)


def test_the_source_never_unpickles():
  found = []
  for top in SCANNED:
    for folder, _, names in os.walk(os.path.join(ROOT, top)):
      for name in sorted(n for n in names if n.endswith(".py")):
        path = os.path.join(folder, name)
        rel = os.path.relpath(path, ROOT)
        allowed = RESTRICTED_UNPICKLER[1] if rel == RESTRICTED_UNPICKLER[0] else set()
        with open(path, encoding="utf-8") as f:
          found += [f"{rel}:{line}: {what}" for line, what in unsafe_loads(f.read())
                    if what not in allowed]
  assert not found, "unsafe loading:\n" + "\n".join(found)


def _flip_one_byte(path):
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("name", sorted(weights.SHIPPED))
def test_a_tampered_shipped_file_is_refused(name, tmp_path, monkeypatch):
  entry = weights.SHIPPED[name]
  shutil.copy(weights.shipped_path(name), tmp_path / entry.filename)
  _flip_one_byte(tmp_path / entry.filename)
  monkeypatch.setattr(weights, "WEIGHTS_DIR", str(tmp_path))
  path = str(tmp_path / entry.filename)
  with pytest.raises(ValueError) as error:
    weights.load_shipped(name, {})  # refused before parsing: the template is never used
  assert str(error.value).startswith(
      f"{path} has sha256 {weights.sha256_of(path)}, expected {entry.sha256}")


def test_written_weights_are_checked_against_their_sidecar(tmp_path):
  params = {"dense": {"kernel": np.arange(6.0, dtype=np.float32).reshape(2, 3)}}
  path = str(tmp_path / "w.msgpack")
  digest = weights.save_msgpack(params, path)
  assert open(path + ".sha256").read() == f"{digest}  w.msgpack\n"  # sha256sum -c reads it
  loaded = weights.load_msgpack(path, params, sha256=None)
  np.testing.assert_array_equal(loaded["dense"]["kernel"], params["dense"]["kernel"])
  _flip_one_byte(path)
  with pytest.raises(ValueError) as error:
    weights.load_msgpack(path, params, sha256=None)
  assert str(error.value).startswith(
      f"{path} has sha256 {weights.sha256_of(path)}, expected {digest}")


def test_unpinned_weights_load_with_a_warning_giving_the_digest(tmp_path, caplog):
  params = {"bias": np.ones(3, np.float32)}
  path = str(tmp_path / "mine.msgpack")
  digest = weights.save_msgpack(params, path)
  os.remove(path + ".sha256")
  with caplog.at_level(logging.WARNING):
    weights.load_msgpack(path, params, sha256=None)
  assert f"trusting it on first use: its sha256 is {digest}" in caplog.text
  assert f"echo '{digest}  mine.msgpack' > {path}.sha256" in caplog.text


def test_arrays_of_another_network_are_refused_by_name_and_shape(tmp_path):
  template = {"conv": {"kernel": np.zeros((3, 3, 1, 8), np.float32),
                       "bias": np.zeros(8, np.float32)}}
  path = str(tmp_path / "other.msgpack")
  weights.save_msgpack({"conv": {"kernel": np.zeros((3, 3, 1, 16), np.float32),
                                 "scale": np.zeros(16, np.float32)}}, path)
  with pytest.raises(ValueError, match=(
      rf"{path} does not hold the expected network: missing conv/bias; unexpected conv/scale; "
      r"conv/kernel has shape \(3, 3, 1, 16\), expected \(3, 3, 1, 8\)")):
    weights.load_msgpack(path, template, sha256=None)
