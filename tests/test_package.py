"""The package's shape: imports run one way (no cycle anywhere in ddss_jax/, experiments/,
benchmarks/, configs/, lazy imports inside functions included), every module says what it holds,
and the API loads from the top-level name."""

import ast
import os
import re

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


def test_the_run_reads_one_way():
  """main -> experiment -> api -> train/evaluate -> sampling -> samplers: none imports upwards."""
  graph = import_graph()
  order = ["ddss_jax.main", "ddss_jax.experiment", "ddss_jax.api", "ddss_jax.train",
           "ddss_jax.sampling", "ddss_jax.samplers"]

  def reaches(start):
    seen, todo = set(), [start]
    while todo:
      for nxt in graph[todo.pop()] - seen:
        seen.add(nxt)
        todo.append(nxt)
    return seen

  for i, lower in enumerate(order):
    assert not set(order[:i]) & reaches(lower), f"{lower} imports a module above it"


@pytest.mark.parametrize("module", sorted(m for m in _modules() if m.startswith("ddss_jax")))
def test_every_module_says_what_it_holds(module):
  with open(_modules()[module], encoding="utf-8") as f:
    docstring = ast.get_docstring(ast.parse(f.read()))
  assert docstring, f"{module} has no module docstring"


def test_the_api_loads_from_the_package():
  import ddss_jax  # pylint: disable=import-outside-toplevel
  from ddss_jax import api, settings  # pylint: disable=import-outside-toplevel
  assert ddss_jax.learn_sampler is api.learn_sampler
  assert ddss_jax.TrainConfig is settings.TrainConfig
  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    ddss_jax.nope  # pylint: disable=pointless-statement


def test_the_module_map_matches_the_tree():
  with open(os.path.join(ROOT, "docs", "module_map.md"), encoding="utf-8") as f:
    page = f.read()
  named = set(re.findall(r"ddss_jax/[\w/]+\.py", page))
  for path in named:
    assert os.path.exists(os.path.join(ROOT, path)), f"docs/module_map.md names {path}"
  for path in _modules().values():
    rel = os.path.relpath(path, ROOT)
    if not rel.startswith("ddss_jax") or rel.endswith("__init__.py") and rel != os.path.join(
        "ddss_jax", "problems", "__init__.py"):
      continue
    folder, name = os.path.split(rel)
    assert rel in named or (f"{folder}/" in page and f"`{name}`" in page), (
        f"docs/module_map.md does not name {rel}")
