"""The house rules of the code base, read from the source without importing it.

* Imports run one way: no module imports an entry point, and the pure parts (`rgd/attacks/`,
  `rgd/models/`) import no orchestration (training, evaluation, generated-data tools), no
  runtime plumbing and no entry point. Between packages (and top-level modules) of rgd the
  arrows make no cycle: if rgd.a imports rgd.b, nothing in rgd.b leads back to rgd.a.
* Nothing in the repository points at a file outside it (the steering folder beside the
  checkout, or its recipes file): a user who clones rgd must be able to follow every reference;
  docs/recipes.md is rgd's own.
* `rgd/__init__.py`'s module index names every package and module of the tree.
"""
import ast
import glob
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = {"rgd.train", "rgd.evaluate", "rgd.certify", "rgd.train_generator",
                "rgd.train_corruption_net", "rgd.convert"}
# What a pure part may not import (any depth below these names).
NOT_FOR_PARTS = ("rgd.training", "rgd.evaluation", "rgd.datagen", "rgd.runtime", "rgd.cli",
                 "rgd.interop",
                 "rgd.bench") + tuple(sorted(ENTRY_POINTS))


def _modules():
  for folder, _, files in os.walk(os.path.join(ROOT, "rgd")):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(folder, f)
        name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        yield name.removesuffix(".__init__"), path


def rgd_imports(path):
  """Every rgd module a file imports, at any depth of the file (functions included)."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.split(".")[0] == "rgd"}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rgd":
      found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
  return found


def _under(name, prefixes):
  return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_no_module_imports_an_entry_point():
  offenders = [(m, i) for m, path in _modules() for i in rgd_imports(path)
               if _under(i, ENTRY_POINTS) and i != m]
  assert not offenders, offenders


@pytest.mark.parametrize("package", ["rgd.attacks", "rgd.models"])
def test_pure_parts_import_no_orchestration_or_runtime(package):
  offenders = [(m, i) for m, path in _modules() if _under(m, [package])
               for i in rgd_imports(path) if _under(i, NOT_FOR_PARTS)]
  assert not offenders, offenders


def _unit(name):
  """The package (rgd.data) or top-level module (rgd.errors) a module belongs to."""
  return ".".join(name.split(".")[:2])


def package_graph(modules):
  """{unit: {unit it imports: [(module, imported name)]}} over (name, path) pairs; imports of
  the root package `rgd` itself (its docstring index) are no arrow."""
  graph = {}
  for m, path in modules:
    for i in rgd_imports(path):
      a, b = _unit(m), _unit(i)
      if a != b and b != "rgd" and a != "rgd":
        graph.setdefault(a, {}).setdefault(b, []).append((m, i))
  return graph


def package_cycles(graph):
  """The strongly connected groups of more than one unit (Tarjan), each sorted, with one
  import of each arrow inside it as evidence."""
  index, low, stack, on_stack, groups = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, {}):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      group = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        group.append(w)
        if w == v:
          break
      if len(group) > 1:
        groups.append(sorted(group))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return [{(a, b): min(graph[a][b]) for a in g for b in graph.get(a, {}) if b in g}
          for g in groups]


def test_no_import_cycle_between_packages():
  cycles = package_cycles(package_graph(_modules()))
  assert not cycles, cycles


def test_the_cycle_check_catches_a_seeded_cycle(tmp_path):
  # rgd.data -> rgd.runtime -> rgd.datagen -> rgd.data: a cycle of three, found as one group;
  # rgd.errors, imported by all, is in none.
  files = {"rgd.data.x": "from rgd.runtime import fileio\nfrom rgd import errors\n",
           "rgd.runtime.fileio": "def f():\n  from rgd.datagen import writer\n",
           "rgd.datagen.writer": "import rgd.data.tfrecord\nimport rgd.errors\n",
           "rgd.errors": "", "rgd": "from rgd import errors\n"}
  modules = []
  for name, text in files.items():
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    modules.append((name, str(path)))
  (cycle,) = package_cycles(package_graph(modules))
  assert set(cycle) == {("rgd.data", "rgd.runtime"), ("rgd.runtime", "rgd.datagen"),
                        ("rgd.datagen", "rgd.data")}
  assert cycle[("rgd.runtime", "rgd.datagen")] == ("rgd.runtime.fileio", "rgd.datagen")
  assert package_cycles(package_graph(modules[1:])) == []


def test_the_rules_catch_a_seeded_violation(tmp_path):
  bad = tmp_path / "cascade.py"
  bad.write_text("def f():\n  from rgd.evaluation import cascade\n  import rgd.train\n")
  found = rgd_imports(str(bad))
  assert _under("rgd.evaluation.cascade", NOT_FOR_PARTS) and "rgd.evaluation.cascade" in found
  assert "rgd.train" in found and _under("rgd.train", ENTRY_POINTS)


def test_nothing_points_outside_the_repository():
  files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
  # Spelt in parts so that this file does not name what it forbids.
  outside, recipes = "../" + "shared", "RECI" + "PES.md"
  pattern = re.compile(re.escape(outside) + "|" + re.escape(recipes))
  offenders = []
  for f in files:
    if f.startswith("tests/fixtures/") or not os.path.isfile(os.path.join(ROOT, f)):
      continue
    try:
      text = open(os.path.join(ROOT, f), encoding="utf-8").read()
    except UnicodeDecodeError:
      continue
    offenders += [f"{f}:{n}" for n, line in enumerate(text.splitlines(), 1)
                  if pattern.search(line)]
  assert not offenders, offenders


def test_module_index_names_every_package():
  import rgd  # pylint: disable=g-import-not-at-top
  index = rgd.__doc__
  packages = sorted(d for d in os.listdir(os.path.join(ROOT, "rgd"))
                    if os.path.isfile(os.path.join(ROOT, "rgd", d, "__init__.py")))
  modules = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "rgd"))
                   if f.endswith(".py") and f != "__init__.py")
  missing = [p for p in packages if f"{p}/" not in index]
  missing += [m for m in modules if not re.search(rf"\b{m}\b", index)]
  assert not missing, missing


def test_links_in_readme_and_docs_lead_to_files():
  offenders = []
  pages = ["README.md"] + [os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                           if f.endswith(".md")]
  for page in pages:
    text = open(os.path.join(ROOT, page)).read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code is not links
    text = re.sub(r"`[^`\n]*`", "", text)
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
      if "://" in target:
        continue
      if not os.path.exists(os.path.join(ROOT, os.path.dirname(page), target)):
        offenders.append(f"{page} -> {target}")
  assert not offenders, offenders


def _unbound_names(path):
  """Names a module reads that nothing in it binds (no import, def, class, assignment, argument,
  except or match name, builtin): a missing import. Loose on purpose (a name bound anywhere in
  the file counts), so it never flags correct code; it catches a tool whose entry line calls a
  name it never imported, which no in-process test of its main() runs."""
  import builtins  # pylint: disable=g-import-not-at-top
  tree = ast.parse(open(path).read(), path)
  bound = set(dir(builtins)) | {"__file__", "__name__", "__doc__"}
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      bound.add(node.name)
    elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
      bound.add(node.id)
    elif isinstance(node, ast.arg):
      bound.add(node.arg)
    elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
      bound.add(node.name)
  return sorted({n.id for n in ast.walk(tree)
                 if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound)


@pytest.mark.parametrize("path", sorted(
    glob.glob(os.path.join(ROOT, "rgd", "**", "*.py"), recursive=True) +
    glob.glob(os.path.join(ROOT, "tools", "*.py"))))
def test_every_name_read_is_bound(path):
  assert _unbound_names(path) == [], path


def test_the_unbound_name_check_catches_a_missing_import(tmp_path):
  path = tmp_path / "tool.py"
  path.write_text("import sys\n\ndef main(argv):\n  return np.zeros(len(argv))\n\n"
                  "if __name__ == '__main__':\n  cli.run(main, 'tool', argv=sys.argv)\n")
  assert _unbound_names(str(path)) == ["cli", "np"]
