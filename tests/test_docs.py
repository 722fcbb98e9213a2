"""README.md and docs/*.md agree with the code: every rgd import they show imports, every command
line names flags its entry point or tool defines, every relative link leads to a file (and to a
heading of it when it names one).

Fast by construction: imports run in this process; flags are read from the source (the
`flags.DEFINE_*` and `add_argument` calls of the entry point, and of the rgd modules it imports
that define flags, such as rgd/cli.py), not by starting a process per command. Each failure
names the page and line.
"""
import ast
import functools
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.join("docs", f)
                               for f in os.listdir(os.path.join(ROOT, "docs"))
                               if f.endswith(".md"))

# Flags absl itself defines for every program (absl.app, absl.logging), and argparse's help.
ABSL_FLAGS = {"help", "helpshort", "helpfull", "helpxml", "flagfile", "undefok",
              "only_check_args", "pdb", "pdb_post_mortem", "run_with_pdb", "run_with_profiling",
              "profile_file", "use_cprofile_for_profiling", "logtostderr", "alsologtostderr",
              "log_dir", "v", "verbosity", "stderrthreshold", "showprefixforinfo",
              "logger_levels"}
ARGPARSE_FLAGS = {"help"}
# `tools/benchmark.py SUBJECT` runs rgd/bench/SUBJECT.py; one subject hands its flags on to a
# tool.
BENCHMARK_FORWARDS = {"eval_vs_reference": "tools/crosscheck_autoattack.py"}


def _lines(page):
  with open(os.path.join(ROOT, page), encoding="utf-8") as f:
    return f.read().split("\n")


# ----------------------------------------------------------------------------------------------
# Flags, from the source.


def _string_args(call):
  """The string literals a call passes positionally and as `name=`."""
  args = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
  args += [k.value.value for k in call.keywords if k.arg == "name"
           and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)]
  return args


def _defined_in(tree):
  """(absl flags, argparse options, absl boolean flags) defined by the calls under `tree`."""
  absl, argp, boolean = set(), set(), set()
  for node in ast.walk(tree):
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
      continue
    attr = node.func.attr
    strings = _string_args(node)
    if attr.startswith("DEFINE") and strings:
      absl.add(strings[0])
      if attr == "DEFINE_boolean" or attr == "DEFINE_bool":
        boolean.add(strings[0])
    elif attr == "add_argument":
      argp |= {s.lstrip("-") for s in strings if s.startswith("--")}
  return absl, argp, boolean


@functools.lru_cache(maxsize=None)
def _parse(path):
  with open(os.path.join(ROOT, path), encoding="utf-8") as f:
    return ast.parse(f.read(), path)


def _module_path(module):
  base = os.path.join(*module.split("."))
  for path in (base + ".py", os.path.join(base, "__init__.py")):
    if os.path.isfile(os.path.join(ROOT, path)):
      return path
  return None


@functools.lru_cache(maxsize=None)
def flags_of(path):
  """(flag names the program at `path` accepts, boolean absl flags among them, uses absl)."""
  tree = _parse(path)
  absl, argp, boolean = _defined_in(tree)
  # rgd modules it imports, by the name the program calls them.
  imported = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rgd"):
      for a in node.names:
        sub = _module_path(f"{node.module}.{a.name}")
        imported[a.asname or a.name] = sub or _module_path(node.module)
    elif isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith("rgd."):
          imported[a.asname or a.name] = _module_path(a.name)
  called = {(n.func.value.id, n.func.attr) for n in ast.walk(tree) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)}
  for alias, module_path in imported.items():
    if not module_path or module_path == path:
      continue
    module = _parse(module_path)
    # Flags defined when the module is imported, and in the functions of it the program calls.
    top = [n for n in module.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    functions = {n.name: n for n in module.body if isinstance(n, ast.FunctionDef)}
    wanted = [name for name in functions if (alias, name) in called]
    for name in wanted:  # and the module's functions those call (define_flags), transitively
      for n in ast.walk(functions[name]):
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            and n.func.id in functions and n.func.id not in wanted):
          wanted.append(n.func.id)
    parts = top + [functions[name] for name in wanted]
    for part in parts:
      a, _, b = _defined_in(part)
      absl |= a
      boolean |= b
  uses_absl = bool(absl) or any(
      (isinstance(n, ast.ImportFrom) and (n.module or "").startswith("absl")) or
      (isinstance(n, ast.Import) and any(a.name.startswith("absl") for a in n.names))
      for n in ast.walk(tree))
  names = set(absl) | set(argp)
  names |= ABSL_FLAGS if uses_absl else ARGPARSE_FLAGS
  return frozenset(names), frozenset(boolean), uses_absl


def _programs(words):
  """[(path of a program the command runs, its argument words)]: one, or one per subject of a
  `tools/benchmark.py {a,b,...}` placeholder; [] when the words are no rgd command."""
  if words[:2] == ["python", "-m"] and len(words) > 2 and words[2].startswith("rgd"):
    return [(_module_path(words[2]) or f"<no module {words[2]}>", words[3:])]
  if len(words) > 1 and words[0] == "python" and re.fullmatch(r"tools/\w+\.py", words[1]):
    path, rest = words[1], words[2:]
    if path == "tools/benchmark.py" and rest and not rest[0].startswith("-"):
      subjects = re.fullmatch(r"\{(.*)\}", rest[0])
      subjects = subjects.group(1).split(",") if subjects else [rest[0]]
      return [(BENCHMARK_FORWARDS.get(s, f"rgd/bench/{s}.py"), rest[1:]) for s in subjects
              if s != "..."]
    return [(path, rest)]
  return []


# ----------------------------------------------------------------------------------------------
# Reading the pages.


def _commands(page):
  """(line number, command text) of each `python -m rgd...` / `python tools/...` command: in code
  blocks with backslash continuations joined, and in inline code."""
  lines = _lines(page)
  out = []
  in_block = False
  i = 0
  while i < len(lines):
    line = lines[i]
    if line.lstrip().startswith("```"):
      in_block = not in_block
      i += 1
      continue
    if in_block:
      start, text = i + 1, line
      while text.rstrip().endswith("\\") and i + 1 < len(lines):
        i += 1
        text = text.rstrip()[:-1] + " " + lines[i]
      for m in re.finditer(r"python (-m rgd|tools/)", text):
        out.append((start, text[m.start():]))
    else:
      for code in re.findall(r"`([^`]*)`", line):
        for m in re.finditer(r"python (-m rgd|tools/)", code):
          out.append((i + 1, code[m.start():]))
    i += 1
  return out


def _words(command):
  """The words of one command, up to where it ends (;, &&, |, a comment)."""
  lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
  lexer.whitespace_split = True
  lexer.commenters = "#"
  words = []
  try:
    for w in lexer:
      if w and set(w) <= set(";&|"):
        break
      words.append(w)
  except ValueError:  # an unclosed quote in prose: split on spaces instead
    words = command.split()
  return words


def command_problems(page):
  problems = []
  for line, command in _commands(page):
    words = _words(command)
    for path, args in _programs(words):
      if not os.path.isfile(os.path.join(ROOT, path)):
        problems.append(f"{page}:{line}: `{' '.join(words[:3])}`: no such program ({path})")
        continue
      names, boolean, uses_absl = flags_of(path)
      for w in args:
        if not w.startswith("--") or w == "--":
          continue
        name = w[2:].split("=", 1)[0]
        if not re.fullmatch(r"\w+", name):
          continue  # a placeholder such as --...
        if name in names or (uses_absl and name.startswith("no") and name[2:] in boolean):
          continue
        problems.append(f"{page}:{line}: {path} has no flag --{name}")
  return problems


IMPORT = re.compile(r"(?:^|[`;]|>>> )\s*(from rgd[\w.]* import [^`;#\n]+|import rgd[\w.]*"
                    r"(?: as \w+)?(?:, *rgd[\w.]*)*)")


def _imports(page):
  """(line number, statement) of each rgd import; a parenthesised list may span lines."""
  lines = _lines(page)
  out = []
  for n, line in enumerate(lines, 1):
    for m in IMPORT.finditer(line):
      statement = m.group(1).strip()
      k = n
      while statement.count("(") > statement.count(")") and k < len(lines):
        statement += " " + lines[k].split("#")[0].strip()
        k += 1
      out.append((n, statement.rstrip(" \\")))
  return out


def import_problems(page):
  problems = []
  for line, statement in _imports(page):
    try:
      exec(statement, {})  # pylint: disable=exec-used
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f"{page}:{line}: `{statement}` fails: {type(e).__name__}: {e}")
  return problems


def slug(heading):
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
  text = re.sub(r"`|\*\*?|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip())
  return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(lines):
  """Anchors of the headings of a markdown page (GitHub numbers repeats: x, x-1, ...)."""
  seen, out = {}, set()
  in_block = False
  for line in lines:
    if line.lstrip().startswith("```"):
      in_block = not in_block
    m = None if in_block else re.match(r"#{1,6} (.*)", line)
    if m:
      base = slug(m.group(1))
      count = seen.get(base, 0)
      seen[base] = count + 1
      out.add(base if count == 0 else f"{base}-{count}")
  return out


def link_problems(page):
  problems = []
  in_block = False
  for n, line in enumerate(_lines(page), 1):
    if line.lstrip().startswith("```"):
      in_block = not in_block
    if in_block:
      continue
    line = re.sub(r"`[^`]*`", "", line)  # code is not links
    for target in re.findall(r"\]\(([^)\s]+)\)", line):
      if "://" in target or target.startswith("mailto:"):
        continue
      path, _, anchor = target.partition("#")
      full = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path))
      if not path:  # a heading of this page
        if anchor not in anchors(_lines(page)):
          problems.append(f"{page}:{n}: {target}: no heading with that anchor on this page")
      elif full == os.path.normpath(os.path.join(ROOT, page)):
        problems.append(f"{page}:{n}: links to itself ({target}); drop the link or name a "
                        "section with #anchor alone")
      elif not os.path.exists(full):
        problems.append(f"{page}:{n}: link target {target} does not exist")
      elif anchor and full.endswith(".md") and anchor not in anchors(
          _lines(os.path.relpath(full, ROOT))):
        problems.append(f"{page}:{n}: {target}: no heading with anchor #{anchor} in "
                        f"{os.path.relpath(full, ROOT)}")
  return problems


# ----------------------------------------------------------------------------------------------
# The checks, one test per page and kind so that a failure says where at once.


@pytest.mark.parametrize("page", PAGES)
def test_rgd_imports_shown_in_the_docs_import(page):
  problems = import_problems(page)
  assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES)
def test_commands_in_the_docs_use_existing_flags(page):
  problems = command_problems(page)
  assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
  problems = link_problems(page)
  assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------------------------
# The checks catch what they are for.


def test_flags_are_read_from_the_module_and_rgd_cli():
  names, boolean, uses_absl = flags_of("rgd/evaluate.py")
  assert uses_absl
  # --model from cli.define_model_flags(), which rgd.evaluate calls; --model_dir and
  # --gin_bindings from cli.define_flags(), which define_model_flags calls.
  assert {"model_dir", "gin_bindings", "model", "dataset", "helpfull"} <= names
  names, _, uses_absl = flags_of("tools/show_augmentations.py")
  assert not uses_absl and "dataset" in names and "model_dir" not in names
  assert "logdir" in flags_of("tools/profile_step.py")[0]


def test_seeded_mistakes_are_caught(monkeypatch):
  page = "docs/seeded.md"
  text = "\n".join([
      "# Title",
      "## A `code` heading: yes",
      "```sh",
      "python -m rgd.train --gin_file=g.gin \\",
      "  --not_a_flag=1 --model_dir=D  # --also_not_checked in a comment",
      "python tools/benchmark.py input --batch_size=8 --bogus",
      "python -m rgd.evaluate --nojit --jit=false --nomodel_dir",
      "python tools/benchmark.py {train,nope,...} --steps=1",
      "```",
      "Run `python tools/make_tfrecords.py --nonexistent=3`; see [x](seeded.md),",
      "[y](testing.md#no-such-heading), [z](testing.md#layout), [w](#a-code-heading-yes),",
      "[v](missing.md). `from rgd.data import no_such_module` and `import rgd.models`.",
  ])
  real_lines = _lines
  monkeypatch.setitem(globals(), "_lines",
                      lambda p: text.split("\n") if p == page else real_lines(p))
  assert command_problems(page) == [
      f"{page}:4: rgd/train.py has no flag --not_a_flag",
      f"{page}:6: rgd/bench/input.py has no flag --bogus",
      f"{page}:7: rgd/evaluate.py has no flag --nomodel_dir",
      f"{page}:8: `python tools/benchmark.py {{train,nope,...}}`: no such program "
      "(rgd/bench/nope.py)",
      f"{page}:10: tools/make_tfrecords.py has no flag --nonexistent",
  ]
  assert link_problems(page) == [
      f"{page}:10: links to itself (seeded.md); drop the link or name a section with #anchor "
      "alone",
      f"{page}:11: testing.md#no-such-heading: no heading with anchor #no-such-heading in "
      "docs/testing.md",
      f"{page}:12: link target missing.md does not exist",
  ]
  problems = import_problems(page)
  assert len(problems) == 1 and problems[0].startswith(
      f"{page}:12: `from rgd.data import no_such_module` fails: ImportError")


def test_github_anchors():
  assert slug("2. Images to TFRecords: `tools/make_tfrecords.py`") == (
      "2-images-to-tfrecords-toolsmake_tfrecordspy")
  assert slug("Exit status of `rgd.train` and `rgd.evaluate`") == (
      "exit-status-of-rgdtrain-and-rgdevaluate")
