"""The package's layering, read from the source by ``ast`` (nothing is imported to check it).

- No import cycle among mbcd_jax's modules (imports at a module's top; a package's lazy imports
  of its own modules, as the encoders' registry makes them, are not edges of the graph).
- method/ (the paper's components) imports only method/, ``mbcd_jax.errors`` and the package
  root's constants.
- No subpackage imports a module that imports that subpackage back.
- reference/ (the PyTorch twins; torch at the top) is imported only from tests/ and benchmarks/.
- The old module names kept for users' commands are imported by nothing in the package.
- No ``sys.path`` edits in tests/ or benchmarks/ but the loaders of a user's third-party clone.
"""
import ast
import collections
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, python_env

PKG = os.path.join(ROOT, 'mbcd_jax')
# Old module names that forward to their new place (``python -m mbcd_jax.<name>`` in docs).
ALIASES = {'experiments': 'study', 'worlds': 'study', 'results_page': 'study',
           'pretrain': 'synthetic', 'world_check': 'synthetic'}
# (file, function) where a sys.path edit loads a user's clone of third-party code.
CLONE_LOADERS = {('benchmarks/baselines_harness_rna_simmmdg.py', 'load_script'),
                 ('tests/encoders/make_golden.py', '_vggsound')}


def _modules() -> dict[str, str]:
  """Dotted module name -> file, for every module of the package."""
  out = {}
  for d, _, files in os.walk(PKG):
    for f in files:
      if f.endswith('.py'):
        path = os.path.join(d, f)
        name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
        out[name[:-len('.__init__')] if name.endswith('.__init__') else name] = path
  return out


MODULES = _modules()


def _imported(node: ast.AST, modules) -> set[str]:
  """The mbcd_jax modules an import statement runs: the named module and its packages."""
  names = []
  if isinstance(node, ast.Import):
    names = [a.name for a in node.names]
  elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
    names = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in modules else node.module
             for a in node.names]
  out = set()
  for name in names:
    if name != 'mbcd_jax' and not name.startswith('mbcd_jax.'):
      continue
    while name not in modules and '.' in name:
      name = name.rsplit('.', 1)[0]
    parts = name.split('.')
    out |= {'.'.join(parts[:i]) for i in range(1, len(parts) + 1)}
  return out


def _graph(modules=None, lazy=True) -> dict[str, set[str]]:
  """module -> the package's modules it imports (``lazy``: also inside functions)."""
  modules = modules or MODULES
  graph = collections.defaultdict(set)
  for name, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    nodes = ast.walk(tree) if lazy else tree.body
    for node in nodes:
      graph[name] |= _imported(node, modules)
    if os.path.basename(path) == '__init__.py':   # a package's lazy imports of its own modules
      top = set().union(*(_imported(n, modules) for n in tree.body))
      graph[name] = {t for t in graph[name] if t in top or not t.startswith(name + '.')}
    graph[name].discard(name)
  return graph


def _cycles(graph) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def _subpackage(name: str) -> str | None:
  parts = name.split('.')
  return '.'.join(parts[:2]) if len(parts) > 1 and os.path.isdir(
      os.path.join(PKG, parts[1])) else None


def test_the_cycle_finder_finds_a_planted_cycle():
  graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
  assert _cycles(graph) == [['a', 'b', 'c']]
  assert _cycles({'a': {'b'}, 'b': set()}) == []


def test_no_import_cycles():
  assert _cycles(_graph()) == []


def test_method_imports_only_method_errors_and_the_root():
  allowed = {'mbcd_jax', 'mbcd_jax.errors', 'mbcd_jax.method'}
  bad = {m: sorted(t for t in ts if t not in allowed and not t.startswith('mbcd_jax.method.'))
         for m, ts in _graph().items()
         if m == 'mbcd_jax.method' or m.startswith('mbcd_jax.method.')}
  assert any(m.startswith('mbcd_jax.method.') for m in bad), 'method/ not found'
  assert not {m: ts for m, ts in bad.items() if ts}, bad


def test_no_subpackage_imports_a_module_that_imports_it_back():
  graph = _graph()
  bad = []
  for m, ts in graph.items():
    pkg = _subpackage(m)
    for t in ts:
      if pkg is None or t == pkg or t.startswith(pkg + '.') or t == 'mbcd_jax':
        continue
      back = sorted(u for u in graph.get(t, ()) if u == pkg or u.startswith(pkg + '.'))
      if back:
        bad.append(f'{m} -> {t} -> {back}')
  assert not bad, bad


def _python_files(*tops):
  for top in tops:
    for d, dirs, files in os.walk(os.path.join(ROOT, top)):
      dirs[:] = [x for x in dirs if not x.startswith(('.', '__pycache__'))]
      for f in files:
        if f.endswith('.py'):
          yield os.path.relpath(os.path.join(d, f), ROOT)


def test_reference_only_from_tests_and_benchmarks():
  bad = []
  for rel in _python_files('mbcd_jax', 'configs', 'docs', 'launch', 'notebooks'):
    if rel.startswith(os.path.join('mbcd_jax', 'reference') + os.sep):
      continue
    with open(os.path.join(ROOT, rel)) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if any(t.startswith('mbcd_jax.reference') for t in _imported(node, MODULES)):
        bad.append(f'{rel}:{node.lineno}')
  assert not bad, bad
  # The checker itself sees such an import.
  node = ast.parse('from mbcd_jax.reference import encoders_torch').body[0]
  assert 'mbcd_jax.reference.encoders_torch' in _imported(node, MODULES)


def test_the_package_never_imports_an_old_name():
  graph = _graph()
  old = {f'mbcd_jax.{a}' for a in ALIASES}
  assert old <= set(MODULES)
  bad = {m: sorted(ts & old) for m, ts in graph.items() if ts & old}
  assert not bad, bad


def _path_edits(rel: str) -> list[tuple[int, str | None]]:
  """(line, enclosing function) of each sys.path edit in a file, also inside string snippets."""
  with open(os.path.join(ROOT, rel)) as f:
    text = f.read()
  edit = re.compile(r'sys\.path(\.(insert|append|extend|remove|pop)\(|\[[^\]]*\]\s*=|\s*[+]?=)')
  lines = [text.count('\n', 0, m.start()) + 1 for m in edit.finditer(text)]
  spans = [(n.lineno, n.end_lineno, n.name) for n in ast.walk(ast.parse(text))
           if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
  out = []
  for line in lines:
    inner = [s for s in spans if s[0] <= line <= s[1]]
    out.append((line, min(inner, key=lambda s: s[1] - s[0])[2] if inner else None))
  return out


def test_no_sys_path_edits_in_tests_and_benchmarks():
  me = os.path.relpath(__file__, ROOT)
  found = {rel: _path_edits(rel) for rel in _python_files('tests', 'benchmarks', 'docs')
           if rel != me}
  bad = [f'{rel}:{line} ({fn})' for rel, edits in found.items() for line, fn in edits
         if (rel, fn) not in CLONE_LOADERS]
  assert not bad, bad
  for rel, fn in CLONE_LOADERS:   # the allowed ones are still there (else: drop them here)
    assert any(f == fn for _, f in found[rel]), (rel, fn)


def test_old_names_are_the_moved_modules():
  """``import mbcd_jax.<old>``, ``from mbcd_jax import <old>`` and the new name: one module
  object (in a fresh process: the import order matters)."""
  code = ''.join(f'import mbcd_jax.{name} as old, mbcd_jax.{pkg}.{name} as new\n'
                 f'from mbcd_jax import {name} as via_from\n'
                 f'assert old is new is via_from, (old, new, via_from)\n'
                 f'assert new.__name__ == "mbcd_jax.{pkg}.{name}"\n'
                 for name, pkg in sorted(ALIASES.items()))
  res = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=python_env(JAX_PLATFORMS='cpu'),
                       capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.parametrize('name, expect', [('results_page', '--check'),
                                          ('experiments', '--grid')])
def test_python_m_old_name_runs_the_moved_module(name, expect):
  """``--help`` of the moved module (absl's exits 1 after printing it, argparse's 0)."""
  res = subprocess.run([sys.executable, '-m', f'mbcd_jax.{name}', '--help'], cwd=ROOT,
                       env=python_env(JAX_PLATFORMS='cpu'), capture_output=True, text=True,
                       timeout=120)
  assert res.returncode in (0, 1) and 'Traceback' not in res.stderr, res.stderr[-2000:]
  assert expect in res.stdout + res.stderr
