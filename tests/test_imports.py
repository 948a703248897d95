"""Imports run one way (config <- model parts <- families <- accounting, training, evaluation
<- entry points), with no cycles, and shared code never names a family."""

import ast
import pathlib
import re

import pytest

import zoo.families  # noqa: F401  (registers every family)
from zoo import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "pallas_kernels")


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
  """Every module of ours that `path` imports, at any depth of the file (a function-level
  import counts: it must not be a way around a cycle)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    names = []
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    for name in names:
      while name and name not in modules:
        name = name.rpartition(".")[0]
      if name:
        found.add(name)
  return found


def _graph() -> dict[str, set[str]]:
  files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
  modules = set(files)
  return {name: _imports(path, modules) - {name} for name, path in files.items()}


def test_no_import_cycles():
  graph = _graph()
  state: dict[str, int] = {}  # 1 visiting, 2 done

  def visit(node, stack):
    state[node] = 1
    for dep in sorted(graph[node]):
      # A package's own __init__ importing its submodules is how a package is built, and
      # a submodule importing its parent package name is not a dependency on its siblings.
      if dep == node.rpartition(".")[0] or node == dep.rpartition(".")[0]:
        continue
      if state.get(dep) == 1:
        raise AssertionError("import cycle: " + " -> ".join(stack + [node, dep]))
      if dep not in state:
        visit(dep, stack + [node])
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node, [])
  print(f"{len(graph)} modules, {sum(len(v) for v in graph.values())} imports, no cycle")


def test_kernels_depend_on_nothing_in_zoo():
  graph = _graph()
  for name, deps in graph.items():
    if name.startswith("pallas_kernels"):
      assert not {d for d in deps if d.startswith("zoo")}, name


SHARED = ["zoo/config", "zoo/models", "zoo/accounting.py", "zoo/training", "zoo/checkpoint.py",
          "zoo/evaluation.py", "zoo/sharding.py", "zoo/data", "zoo/studies", "train.py", "eval.py",
          "study.py"]


@pytest.mark.parametrize("family", [f for f in registry.families() if f.name != "dense"],
                         ids=lambda f: f.name)
def test_shared_code_never_names_a_family(family):
  """No block kind, stack kind or option group of a family appears in shared code as a
  string or an attribute. (The dense baseline is exempt: it is the config's default pattern
  and the blocks other families reuse.)"""
  names = ([b.name for b in family.blocks] + [s.name for s in family.stacks]
           + list(family.options))
  pattern = re.compile("|".join(rf"""(["']{n}["'])|(\.{n}\b)""" for n in names))
  files = [p for entry in SHARED for p in
           ((ROOT / entry).rglob("*.py") if (ROOT / entry).is_dir() else [ROOT / entry])]
  for path in files:
    code = "\n".join(line for line in path.read_text().split("\n")
                     if not line.lstrip().startswith("#"))
    for node in ast.walk(ast.parse(code)):  # docstrings may cite a family as an example
      if isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant):
        code = code.replace(str(node.value.value), "")
    match = pattern.search(code)
    assert not match, f"{path.relative_to(ROOT)} names {family.name}'s {match.group(0)!r}"
