"""The package's shape: imports run one way (no cycle anywhere in ddss_jax/, experiments/,
benchmarks/, configs/, lazy imports inside functions included), each layer imports only the layers
below it, the sampler maths only itself and the utilities, no module outgrows one concern, every
module says what it holds, the API loads from the top-level name, the names of 0.1 still load
with a warning naming their new home, and no test reaches into a private name."""

import ast
import importlib
import os
import re
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TREES = ("ddss_jax", "experiments", "benchmarks", "configs")


def _modules() -> dict[str, str]:
  """{dotted module name: path} of every .py file in TREES."""
  found = {}
  for tree in TREES:
    for folder, _, files in os.walk(os.path.join(ROOT, tree)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(folder, name)
          dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
          found[dotted.removesuffix(".__init__")] = path
  return found


def import_graph() -> dict[str, set[str]]:
  """{module: the project modules it imports}, from the source (top level and inside functions);
  `from package import name` counts as importing package.name where that is a module."""
  modules = _modules()
  graph = {}
  for module, path in modules.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    edges = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                          + ([base] if base else []))
        targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                   for alias in node.names]
      else:
        continue
      edges.update(t for t in targets if t in modules and t != module)
    graph[module] = edges
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle [a, b, ..., a], or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_no_import_cycle():
  cycle = find_cycle(import_graph())
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


# The package's layers, top to bottom: a module imports only modules of its own layer or below.
# A module's layer is that of the longest prefix that names it.
LAYERS = (
    ("ddss_jax.main", "ddss_jax.tools"),
    ("ddss_jax.run",),
    ("ddss_jax.config",),
    ("ddss_jax.learn",),
    ("ddss_jax.evaluation",),
    ("ddss_jax.problems",),
    ("ddss_jax.settings",),
    ("ddss_jax.models", "ddss_jax.data", "ddss_jax.weights", "ddss_jax.evaluation.metrics"),
    ("ddss_jax.samplers",),
    ("ddss_jax.util", "ddss_jax.configs", "ddss_jax"),
)
MAX_MODULE_LINES = 420


def layer_of(module: str) -> int:
  best = max((len(prefix), i) for i, layer in enumerate(LAYERS) for prefix in layer
             if module == prefix or module.startswith(prefix + "."))
  return best[1]


def test_every_module_has_a_layer():
  for module in _modules():
    if module.startswith("ddss_jax"):
      assert layer_of(module) < len(LAYERS) - 1 or module.startswith(
          ("ddss_jax.util", "ddss_jax.configs")) or module == "ddss_jax", (
              f"{module}: add it to a layer of tests/test_package.py and docs/architecture.md")


def test_each_layer_imports_only_the_layers_below():
  graph = import_graph()
  for module, imported in graph.items():
    if not module.startswith("ddss_jax"):
      continue
    for other in imported:
      assert layer_of(other) >= layer_of(module), (
          f"{module} (layer {layer_of(module)}) imports {other} (layer {layer_of(other)}), "
          "which sits above it")


def test_the_sampler_maths_imports_only_itself_and_the_utilities():
  for module, imported in import_graph().items():
    if module.startswith("ddss_jax.samplers"):
      bad = {m for m in imported
             if not m.startswith(("ddss_jax.samplers", "ddss_jax.util"))}
      assert not bad, f"{module} imports {sorted(bad)}"


def test_the_layering_finds_an_upward_import():
  assert layer_of("ddss_jax.samplers.families") > layer_of("ddss_jax.learn.ddss")
  assert layer_of("ddss_jax.evaluation.metrics.kid") > layer_of("ddss_jax.problems.mnist")
  assert layer_of("ddss_jax.evaluation.drawing") < layer_of("ddss_jax.problems.base")


@pytest.mark.parametrize("module", sorted(m for m in _modules() if m.startswith("ddss_jax")))
def test_every_module_says_what_it_holds(module):
  with open(_modules()[module], encoding="utf-8") as f:
    text = f.read()
  assert ast.get_docstring(ast.parse(text)), f"{module} has no module docstring"
  lines = text.count("\n")
  assert lines <= MAX_MODULE_LINES, (
      f"{module} has {lines} lines (at most {MAX_MODULE_LINES}): split it by concern")


def test_at_most_ten_modules_at_the_root():
  root = [name for name in os.listdir(os.path.join(ROOT, "ddss_jax")) if name.endswith(".py")]
  assert len(root) <= 10, sorted(root)


def test_the_api_loads_from_the_package():
  import ddss_jax  # pylint: disable=import-outside-toplevel
  from ddss_jax import settings  # pylint: disable=import-outside-toplevel
  from ddss_jax.learn import ddss  # pylint: disable=import-outside-toplevel
  assert ddss_jax.learn_sampler is ddss.learn_sampler
  assert ddss_jax.TrainConfig is settings.TrainConfig
  for name in ddss_jax.__all__:
    assert getattr(ddss_jax, name).__name__ == name
  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    ddss_jax.nope  # pylint: disable=pointless-statement


def test_the_sampler_face_is_the_families_api():
  from ddss_jax import samplers  # pylint: disable=import-outside-toplevel
  from ddss_jax.samplers import families  # pylint: disable=import-outside-toplevel
  for name in samplers.__all__:
    assert getattr(samplers, name) is getattr(families, name)
  with pytest.raises(AttributeError, match="no attribute '_time_logits'"):
    getattr(samplers, "_time_logits")


@pytest.mark.parametrize("old", sorted(__import__("ddss_jax").MOVED))
def test_a_moved_module_loads_from_its_old_name_with_a_warning(old):
  import ddss_jax  # pylint: disable=import-outside-toplevel
  new = ddss_jax.MOVED[old]
  with pytest.warns(DeprecationWarning, match=rf"ddss_jax\.{old} moved to {re.escape(new)}"):
    try:
      module = getattr(ddss_jax, old)
    except ModuleNotFoundError as e:  # the diffusers scheduler needs the [diffusers] extra
      assert e.name in ("torch", "diffusers"), e
      return
  assert module is importlib.import_module(new)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert importlib.import_module(new) is module  # the new home loads without a warning


def test_the_documented_old_names_still_import():
  with pytest.warns(DeprecationWarning, match="ddss_jax.reference_sampler moved to "
                    "ddss_jax.samplers.numpy_reference"):
    from ddss_jax import reference_sampler  # pylint: disable=import-outside-toplevel
  assert callable(reference_sampler.sample)
  with pytest.warns(DeprecationWarning, match="ddss_jax.schedules moved"):
    from ddss_jax import schedules  # pylint: disable=import-outside-toplevel
  assert schedules.make("linear", 1000).num_timesteps == 1000


def _private_uses(path: str) -> list[str]:
  """`_name`s a test file takes from ddss_jax: imported, or read off an imported module."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  modules, found = set(), []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ddss_jax"):
      for alias in node.names:
        if alias.name.startswith("_"):
          found.append(f"{node.module}.{alias.name}")
        modules.add(alias.asname or alias.name)
    elif isinstance(node, ast.Import):
      modules.update(a.asname or a.name.split(".")[0] for a in node.names
                     if a.name.startswith("ddss_jax"))
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
        and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
        and node.value.id in modules):
      found.append(f"{node.value.id}.{node.attr}")
  return found


def test_no_test_reaches_into_a_private_name():
  tests = os.path.join(ROOT, "tests")
  for name in sorted(os.listdir(tests)):
    if name.endswith(".py"):
      assert not _private_uses(os.path.join(tests, name)), (name, _private_uses(
          os.path.join(tests, name)))


def test_the_private_name_finder_finds_them(tmp_path):
  path = tmp_path / "t.py"
  path.write_text("from ddss_jax.learn import ddss\nfrom ddss_jax.samplers.families import "
                  "_decode_times\nddss._print_line('x')\n")
  assert _private_uses(str(path)) == ["ddss_jax.samplers.families._decode_times",
                                      "ddss._print_line"]


def test_the_architecture_page_names_every_module():
  with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
    page = f.read()
  for path in re.findall(r"ddss_jax/[\w/]+\.py", page):
    assert os.path.exists(os.path.join(ROOT, path)), f"docs/architecture.md names {path}"
  for module, path in _modules().items():
    if not module.startswith("ddss_jax") or path.endswith("__init__.py"):
      continue
    rel = os.path.relpath(path, ROOT)
    folder = os.path.relpath(os.path.dirname(rel), "ddss_jax")
    name = os.path.basename(rel)
    named = name in page if folder == "." else (
        f"{folder}/" in page and re.search(rf"\b{re.escape(name[:-3])}\b", page))
    assert named, f"docs/architecture.md does not name {rel}"


# The submodules the README and docs/architecture.md document beside ddss_jax.__all__.
DOCUMENTED = ("ddss_jax.samplers", "ddss_jax.evaluation.metrics", "ddss_jax.problems",
              "ddss_jax.models", "ddss_jax.data", "ddss_jax.weights", "ddss_jax.configs")


def test_the_readme_uses_only_the_public_surface():
  import ddss_jax  # pylint: disable=import-outside-toplevel
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
  assert blocks
  documented = lambda name: name == "ddss_jax" or any(
      name == d or name.startswith(d + ".") for d in DOCUMENTED)
  for block in blocks:
    for node in ast.walk(ast.parse(block)):
      if isinstance(node, ast.ImportFrom) and node.module.startswith("ddss_jax"):
        for alias in node.names:
          name = f"{node.module}.{alias.name}"
          assert documented(node.module) and (
              node.module != "ddss_jax" or alias.name in ddss_jax.__all__
              or documented(name)), f"README imports {name}"
      elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
          node.value.id == "ddss_jax"):
        assert node.attr in ddss_jax.__all__ or documented(f"ddss_jax.{node.attr}"), (
            f"README uses ddss_jax.{node.attr}")
