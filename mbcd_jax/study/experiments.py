r"""The paper's experiments as commands: protocol runner, ablation grids, result tables.

  # The paper's Table 1 (multi-source; V+A, V+F, F+A, V+F+A; ERM, RNA-Net, SimMMDG, MOOSA,
  # CMRF, MBCD) and Table 2 (single-source V+F+A), on real data, 3 seeds, the paper's numbers
  # beside ours; --methods narrows the rows, --config.train.recipe=authors runs each method
  # with its authors' per-setting epochs and coefficients (mbcd_jax/recipes.py):
  python -m mbcd_jax.study.experiments --config=configs/hac.py --config.data.dir=/data/hac_prepared \
      --grid=table1 --workdir=runs/hac_table1
  python -m mbcd_jax.study.experiments --config=configs/epic.py --config.data.dir=/data/epic_prepared \
      --grid=table2 --workdir=runs/epic_table2
  # Table 1/2-shaped multi-source study (leave one domain out), 3 seeds:
  python -m mbcd_jax.study.experiments --config=configs/hac.py:synthetic --protocol=multi_source \
      --methods=erm,ema,mbcd --seeds=0,1,2 --workdir=runs/study
  # Modality subsets (';' separates sets) and single-source (each domain -> each other):
  python -m mbcd_jax.study.experiments --config=configs/hac.py:synthetic \
      --modalities='video,flow,audio;flow,audio' --methods=erm,mbcd --workdir=runs/subsets
  python -m mbcd_jax.study.experiments --config=configs/hac.py:synthetic --protocol=single_source \
      --methods=mbcd --workdir=runs/single
  # Ablation grids (Table 4, Table 5, leave-one-out, sensitivity sweeps, imbalance knob):
  python -m mbcd_jax.study.experiments --config=configs/hac.py:synthetic --grid=table4 \
      --workdir=runs/table4
  python -m mbcd_jax.study.experiments --config=configs/hac.py:synthetic --grid=sweep_alpha \
      --values=1e-4,1e-3,1e-2 --workdir=runs/alpha
  # Config overrides apply to every run (ml_collections flags):
  python -m mbcd_jax.study.experiments --config=configs/hac.py:synthetic --config.train.epochs=10 ...

Runs land in ``<workdir>/<variant>/<modalities>/<sources>_to_<target>/seed<k>/`` (the variant
directory gets ``__recipe=authors`` for a method whose authors' recipe changes the run); a run is
finished when its ``summary.json`` exists, so re-running the command skips finished runs and
completes the table. The variant directory is named after the config overrides (not the row
label), so tables that share a run share its directory (e.g. ``--grid=table4`` reuses the erm,
ema and mbcd runs of the main table in the same workdir). After the runs, the command's table
is (re)written by ``mbcd_jax.study.tables`` from exactly the runs it planned:
``<workdir>/<table>.md``, ``<table>.csv`` and ``<table>_runs.csv`` (``--table``, default
``results`` for ``--grid=methods``, else the grid name). ``--tables_only`` just rewrites them.

``--parallel=N`` trains N runs at a time in subprocesses; with ``--devices=0,1,2,3`` each
subprocess sees its share of the devices through ``--device_env`` (``CUDA_VISIBLE_DEVICES``
by default; ``TPU_VISIBLE_CHIPS`` etc. for other platforms).

SIGTERM stops the study resumably: the run in progress (or, with ``--parallel``, each child,
to which the signal is passed on) saves a checkpoint at its next step and stops, no further run
starts, and the command exits 75 (``preemption.EXIT_PREEMPTED``) without rewriting the tables;
the same command resumes. Each run directory has one writer at a time (``runlock.py``): a run
already being trained by another process fails with a line naming that process.

The training function is injectable (``run_all(..., train_fn=...)`` in Python, or
``--train_fn=module:function`` on the command line): anything with
``train_fn(config, workdir)`` that writes ``workdir/summary.json`` (its return value is not
used; ``train.train_and_evaluate`` returns ``(state, summary)``).
"""
import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import ml_collections

from mbcd_jax import config_lib, preemption
from mbcd_jax.study import tables
from mbcd_jax import methods as methods_lib
from mbcd_jax.errors import ConfigError

TrainFn = Callable[[ml_collections.ConfigDict, str], Any]

# ---------------------------------------------------------------------------- grids
GRIDS = ('methods', 'table1', 'table2', 'table4', 'table5', 'leave_one_out', 'sweep_alpha',
         'sweep_beta', 'sweep_lambda', 'imbalance')
# Tables 1-2: the paper's methods (row label = the paper's name, run directory = the method's).
PAPER_METHODS = [('ERM', 'erm'), ('RNA-Net', 'rna'), ('SimMMDG', 'simmmdg'), ('MOOSA', 'moosa'),
                 ('CMRF', 'cmrf'), ('MBCD', 'mbcd')]
# The MMDG benchmark's other peers (its train_JAT.py, train_NEL.py, train_GMP.py; not rows of
# the paper's tables, so without paper numbers): rows of 'table1' / 'table2' when --methods
# names them, before MBCD.
BENCHMARK_PEERS = [('JAT', 'jat'), ('NEL', 'nel'), ('GMP', 'gmp')]
# grid -> (protocol, modality sets in the paper's block order).
PAPER_GRIDS = {
    'table1': ('multi_source', (('video', 'audio'), ('video', 'flow'), ('flow', 'audio'),
                                ('video', 'flow', 'audio'))),
    'table2': ('single_source', (('video', 'flow', 'audio'),)),
}
TABLE4 = [('none (erm)', 'erm'), ('ema', 'ema'), ('ema+amd', 'ema_amd'),
          ('ema+gcc', 'ema_gcc'), ('ema+dl', 'ema_dl'), ('mbcd (all)', 'mbcd')]
TABLE5 = [('no dropout', 'mbcd_no_amd'), ('fixed 0.5', 'mbcd_fixed_dropout'),
          ('adaptive', 'mbcd')]
LEAVE_ONE_OUT = [('mbcd (all)', 'mbcd'), ('- amd', 'mbcd_no_amd'), ('- gcc', 'mbcd_no_gcc'),
                 ('- dl', 'mbcd_no_dl')]
SWEEPS = {  # grid -> (config fields set to each value, default values)
    'sweep_alpha': (('method.alpha',), (1e-5, 1e-4, 1e-3, 1e-2)),
    'sweep_beta': (('method.ema_beta',), (0.9, 0.95, 0.99, 0.995)),
    'sweep_lambda': (('method.lambda_mm', 'method.lambda_um'), (0.1, 0.5, 1.0, 2.0)),
    'imbalance': (('data.synthetic.dominance',), (1.0, 1.5, 2.0, 3.0)),
}


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of a table: a label and the config overrides (dotted keys) that make it."""
  label: str
  overrides: tuple  # ((key, value), ...)

  def slug(self, base: ml_collections.ConfigDict | None = None) -> str:
    """Directory name from the overrides that differ from ``base`` (not from the label), so
    that the same training run is shared by every table that contains it: Table 4's
    'none (erm)' row reuses the main table's erm runs, the imbalance grid's dominance=2 row
    (the default) reuses them too."""
    parts = []
    for key, value in self.overrides:
      if base is not None and key != 'method.name' and _get(base, key) == value:
        continue
      if key == 'method.name':
        parts.append(str(value))
      else:
        parts.append(f'{key.split(".")[-1]}={value:g}' if isinstance(value, float)
                     else f'{key.split(".")[-1]}={value}')
    return '__'.join(parts) or 'default'


def _get(config, key: str):
  node = config
  for p in key.split('.'):
    if p not in node:
      return None
    node = node[p]
  return node


def variants(grid: str, methods: Sequence[str] | None = ('erm', 'ema', 'mbcd'),
             values: Sequence[float] | None = None) -> list[Variant]:
  """The table rows of ``grid``.

  ``methods`` is used by 'methods' (one row each), the sweeps (each method x value; default
  for sweeps: mbcd) and 'imbalance' (each method x dominance); for 'table1' / 'table2' it
  narrows ``PAPER_METHODS`` (None: all six) or adds ``BENCHMARK_PEERS``. ``values`` replaces a
  sweep's default values. The imbalance grid's dominance=1 row is the balanced control.
  """
  if grid == 'methods':
    return [Variant(m, (('method.name', m),)) for m in methods]
  if grid in PAPER_GRIDS:
    rows = PAPER_METHODS[:-1] + BENCHMARK_PEERS + PAPER_METHODS[-1:]
    known = [m for _, m in rows]
    unknown = sorted(set(methods or ()) - set(known))
    if unknown:
      raise ValueError(f'--methods: {unknown} are not in --grid={grid}; its methods: '
                       f'{", ".join(known)}')
    wanted = [m for _, m in PAPER_METHODS] if methods is None else methods
    return [Variant(label, (('method.name', m),)) for label, m in rows if m in wanted]
  fixed = {'table4': TABLE4, 'table5': TABLE5, 'leave_one_out': LEAVE_ONE_OUT}
  if grid in fixed:
    return [Variant(label, (('method.name', m),)) for label, m in fixed[grid]]
  if grid in SWEEPS:
    keys, default = SWEEPS[grid]
    out = []
    for m in methods:
      for v in (values or default):
        name = keys[0].split('.')[-1].removesuffix('_mm')
        out.append(Variant(f'{m} {name}={v:g}',
                           (('method.name', m),) + tuple((k, float(v)) for k in keys)))
    return out
  raise ValueError(f'--grid: unknown grid {grid!r}; known: {", ".join(GRIDS)}')


# ---------------------------------------------------------------------------- planning
@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One training run: where it goes and how its config differs from the base config."""
  run_dir: str
  overrides: tuple   # ((dotted key, value), ...), applied in order
  meta: tuple        # ((key, value), ...) written to run.json for the tables

  @property
  def finished(self) -> bool:
    return os.path.exists(os.path.join(self.run_dir, 'summary.json'))


def protocol_settings(protocol: str, domains: Sequence[str],
                      targets: Sequence[str] | None = None) -> list[tuple[tuple, str]]:
  """[(sources, target)]: multi_source = leave one domain out; single_source = every ordered
  pair of distinct domains. ``targets`` restricts the target domains."""
  domains = tuple(domains)
  if protocol == 'multi_source':
    out = [(tuple(d for d in domains if d != t), t) for t in domains]
  elif protocol == 'single_source':
    out = [((s,), t) for s in domains for t in domains if s != t]
  else:
    raise ValueError(f"--protocol must be 'multi_source' or 'single_source', got {protocol!r}")
  if targets:
    unknown = set(targets) - set(domains)
    if unknown:
      raise ValueError(f'--targets: unknown domain(s) {sorted(unknown)}; known: {domains}')
    out = [(s, t) for s, t in out if t in targets]
  return out


def plan(workdir: str, base: ml_collections.ConfigDict, *, protocol: str = 'multi_source',
         variant_list: Sequence[Variant], modality_sets: Sequence[Sequence[str]],
         seeds: Sequence[int], targets: Sequence[str] | None = None,
         modalities_first: bool = False) -> list[RunSpec]:
  """Every run of the study, variants x modality sets x settings x seeds, in table order.

  ``base`` gives the domains, and the values an override can equal without changing the run
  (see ``Variant.slug``). ``modalities_first``: modality sets x variants instead, the row
  order of the paper's Table 1 (a block of methods per modality set).
  """
  domains = base.data.domains
  settings = protocol_settings(protocol, domains, targets)
  pairs = [(vi, v, mi, mods) for vi, v in enumerate(variant_list)
           for mi, mods in enumerate(modality_sets)]
  if modalities_first:
    pairs.sort(key=lambda p: (p[2], p[0]))
  runs = []
  for vi, v, mi, mods in pairs:
    order = mi * len(variant_list) + vi if modalities_first else vi
    for si, (sources, target) in enumerate(settings):
      for seed in seeds:
        runs.append(run_spec(workdir, base, v, mods, sources, target, seed,
                             order=order, setting_order=si))
  return runs


def run_spec(workdir: str, base: ml_collections.ConfigDict, variant: Variant,
             modalities: Sequence[str], sources: Sequence[str], target: str, seed: int, *,
             order: int = 0, setting_order: int = 0) -> RunSpec:
  """One run of a study: ``<workdir>/<variant slug>/<modalities>/<sources>_to_<target>/
  seed<k>`` and the overrides that make its config from ``base``."""
  mods, sources = tuple(modalities), tuple(sources)
  run_dir = os.path.join(workdir, variant.slug(base) + _recipe_suffix(base, variant),
                         '_'.join(mods),
                         f'{"+".join(sources)}_to_{target}', f'seed{seed}')
  overrides = variant.overrides + (('data.modalities', mods), ('data.sources', sources),
                                   ('data.target', target), ('seed', int(seed)))
  meta = (('variant', variant.label), ('order', order), ('setting_order', setting_order),
          ('modalities', list(mods)),
          ('sources', list(sources)), ('target', target), ('seed', int(seed)),
          ('overrides', [[k, list(x) if isinstance(x, tuple) else x]
                         for k, x in variant.overrides]))
  return RunSpec(run_dir, overrides, meta)


def _recipe_suffix(base: ml_collections.ConfigDict, variant: Variant) -> str:
  """'__recipe=authors' for a run the recipe changes (a method with authors' recipes), so it
  never reuses the shared recipe's run directory; '' otherwise (MBCD, ERM: 'authors' is
  'shared', the runs are the same)."""
  recipe = _get(base, 'train.recipe') or 'shared'
  ext = methods_lib.EXTENSIONS.get(dict(variant.overrides).get('method.name', base.method.name))
  if recipe == 'shared' or ext is None or ext.recipes is None:
    return ''
  return f'__recipe={recipe}'


def make_config(base: ml_collections.ConfigDict, run: RunSpec) -> ml_collections.ConfigDict:
  """The base config with the run's overrides applied (a copy; validated)."""
  config = ml_collections.ConfigDict(base.to_dict())
  with config.unlocked():
    for key, value in run.overrides:
      node = config
      *parents, leaf = key.split('.')
      for p in parents:
        node = node[p]
      node[leaf] = value
    config.train.progress = False
  config = config_lib.normalize(config)
  config_lib.validate(config)
  return config


# ---------------------------------------------------------------------------- running
def _default_train_fn() -> TrainFn:
  from mbcd_jax import train  # pylint: disable=g-import-not-at-top
  return train.train_and_evaluate


def resolve_train_fn(train_fn: TrainFn | str | None) -> TrainFn:
  """A callable, a 'module:function' path, or None (``train.train_and_evaluate``)."""
  if train_fn is None:
    return _default_train_fn()
  if isinstance(train_fn, str):
    module, _, attr = train_fn.partition(':')
    return getattr(importlib.import_module(module), attr)
  return train_fn


def _prepare(base, run: RunSpec) -> ml_collections.ConfigDict:
  config = make_config(base, run)
  os.makedirs(run.run_dir, exist_ok=True)
  with open(os.path.join(run.run_dir, 'run.json'), 'w') as f:
    json.dump(dict(run.meta), f, indent=2)
  with open(os.path.join(run.run_dir, 'run_config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  return config


def check_pretrained(base: ml_collections.ConfigDict, runs: Sequence[RunSpec]) -> list[str]:
  """Refuses to add runs to a study whose finished runs loaded other pretrained weights.

  A table pairs runs (same target and seed), so every run in it must start from the same
  pretrained encoders. The cache behind ``pretrained='synthetic'`` (or a file path) can hold
  other weights than when the finished runs were made (another machine, another cache
  directory, a code change that alters the upstream training); each run records the digests of
  the files it loaded (``summary.json['pretrained']``), compared here with the files the
  unfinished runs would load.

  Returns:
    notes for the log (finished runs that predate the digests cannot be checked).
  Raises:
    ValueError: naming the modality, both digests, a finished run and the file.
  """
  from mbcd_jax.synthetic import pretrain  # pylint: disable=g-import-not-at-top
  from mbcd_jax.encoders import convert  # pylint: disable=g-import-not-at-top
  recorded, unrecorded = {}, 0
  for r in runs:
    path = os.path.join(r.run_dir, 'summary.json')
    if not os.path.exists(path):
      continue
    with open(path) as f:
      digests = json.load(f).get('pretrained')
    if digests is None:
      unrecorded += 1
    for m, d in (digests or {}).items():
      recorded.setdefault(m, (d, r.run_dir))
  notes = [f'{unrecorded} finished run(s) predate the pretrained-weight digests: their encoder '
           'weights cannot be checked against the new runs'] if unrecorded else []
  if not recorded:
    return notes
  seen = {}
  for r in runs:
    if r.finished:
      continue
    config = config_lib.normalize(make_config(base, r))
    model_config = pretrain.resolve(config)
    for m in config.data.modalities:
      path = model_config.encoders[m].get('pretrained') or ''
      if not path or m not in recorded:
        continue
      if path not in seen:
        seen[path] = convert.weights_digest(path)
      old, where = recorded[m]
      if seen[path] != old:
        raise ValueError(
            f'{r.run_dir}: its {m} encoder would load {path} (weights digest {seen[path]}), '
            f'but finished runs of this study loaded other weights ({old}, e.g. {where}); the '
            f'tables would pair runs from different encoders. Use the cache that made them '
            f'(${pretrain.CACHE_ENV} or config.model.pretrain.cache_dir) or another workdir.')
  return notes


def run_all(base: ml_collections.ConfigDict, runs: Sequence[RunSpec], *,
            train_fn: TrainFn | str | None = None, parallel: int = 1,
            devices: Sequence[str] = (), device_env: str = 'CUDA_VISIBLE_DEVICES',
            log: Callable[[str], None] = print) -> dict:
  """Trains every unfinished run (skips those with a summary.json).

  Args:
    base: the base config; each run applies its overrides to a copy.
    train_fn: ``fn(config, run_dir)`` (default ``train.train_and_evaluate``); with
      ``parallel > 1`` it must be None or a 'module:function' string (it runs in subprocesses).
    parallel: runs at a time (subprocesses when > 1).
    devices: device ids to split among the ``parallel`` subprocesses (via ``device_env``).
  Returns:
    {'skipped': [...], 'done': [...], 'failed': [(run_dir, error)], 'wall_time_s': float,
    'preempted': None, or one line: a SIGTERM stopped the runner (the run in progress saved
    a checkpoint; running the same command again resumes it and goes on)}.
  Raises:
    ValueError: the unfinished runs would load other pretrained weights than the finished
      ones (``check_pretrained``), before any run starts.
  """
  result = {'skipped': [], 'done': [], 'failed': [], 'wall_time_s': 0.0, 'preempted': None}
  t0 = time.time()
  if not all(r.finished for r in runs):
    for note in check_pretrained(base, runs):
      log(note)
  pending = []
  for r in runs:
    (result['skipped'] if r.finished else pending).append(r if not r.finished else r.run_dir)
  log(f'{len(runs)} runs: {len(result["skipped"])} finished, {len(pending)} to train')
  if parallel > 1 and train_fn is not None and not isinstance(train_fn, str):
    raise ValueError("parallel > 1 needs train_fn as a 'module:function' string or None")
  # SIGTERM (a scheduler's eviction, a stopped study phase) for the whole sequence: the run in
  # progress saves at its next step and stops, and no further run starts.
  with preemption.Notice() as notice:
    if parallel <= 1:
      _run_in_process(base, pending, resolve_train_fn(train_fn), notice, result, log)
    else:
      _run_subprocesses(base, pending, train_fn, parallel, devices, device_env, notice, result,
                        log)
  result['wall_time_s'] = time.time() - t0
  return result


def _run_in_process(base, pending, fn, notice, result, log):
  """``parallel=1``: one run after another in this process; the first notice ends the loop."""
  for i, r in enumerate(pending):
    if notice.requested:
      result['preempted'] = f'SIGTERM: stopped before {r.run_dir}'
      break
    if r.finished:   # finished meanwhile (another runner on the same workdir)
      result['skipped'].append(r.run_dir)
      continue
    log(f'[{i + 1}/{len(pending)}] {r.run_dir}')
    t1 = time.time()
    try:
      fn(_prepare(base, r), r.run_dir)
      result['done'].append(r.run_dir)
      log(f'    done in {time.time() - t1:.0f} s')
    except preemption.Preempted as e:
      # Not a failure: the run is resumable, and so is the study (same command).
      result['preempted'] = f'checkpoint at step {e.step} saved in {e.path}'
      log(f'    PREEMPTED: {e}')
      break
    except Exception as e:  # pylint: disable=broad-except
      # One broken run must not lose the rest of a long study; reported at the end.
      result['failed'].append((r.run_dir, f'{type(e).__name__}: {e}'))
      log(f'    FAILED: {type(e).__name__}: {e}')
  if notice.requested and not result['preempted']:
    # The notice came after the last step (the final eval or save): that run finished.
    result['preempted'] = 'SIGTERM: stopped after the last run in progress finished'


def _run_subprocesses(base, pending, train_fn, parallel, devices, device_env, notice, result,
                      log):
  """``parallel>1``: a child process per run; a notice is passed on to every child (each
  saves and exits ``EXIT_PREEMPTED``) and no further child starts."""
  groups = [[] for _ in range(parallel)]
  for i, d in enumerate(devices):
    groups[i % parallel].append(str(d))
  free = list(range(parallel))
  active = {}   # slot -> (Popen, RunSpec, start time)
  queue = list(pending)
  forwarded = False
  while queue or active:
    if notice.requested and not forwarded:
      forwarded = True
      result['preempted'] = (f'SIGTERM: passed on to {len(active)} run(s); '
                             f'{len(queue)} not started')
      queue = []
      for proc, *_ in active.values():
        proc.send_signal(signal.SIGTERM)
    while queue and free:
      r = queue.pop(0)
      if r.finished:   # finished meanwhile (another runner on the same workdir)
        result['skipped'].append(r.run_dir)
        continue
      slot = free.pop(0)
      _prepare(base, r)
      cmd = [sys.executable, '-m', 'mbcd_jax.study.experiments', f'--run_one={r.run_dir}']
      if train_fn:
        cmd.append(f'--train_fn={train_fn}')
      env = dict(os.environ)
      if groups[slot]:
        env[device_env] = ','.join(groups[slot])
      # Appended, not truncated: a second runner on the study must not wipe a live child's log
      # before the run lock refuses its own child.
      logf = open(os.path.join(r.run_dir, 'stdout.log'), 'a')
      active[slot] = (subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT),
                      r, time.time(), logf)
      log(f'[slot {slot}] {r.run_dir}')
    time.sleep(0.2)
    for slot, (proc, r, t1, logf) in list(active.items()):
      if proc.poll() is None:
        continue
      logf.close()
      del active[slot]
      free.append(slot)
      if proc.returncode == 0 and r.finished:
        result['done'].append(r.run_dir)
        log(f'    done in {time.time() - t1:.0f} s: {r.run_dir}')
      elif proc.returncode == preemption.EXIT_PREEMPTED:
        log(f'    PREEMPTED (checkpoint saved): {r.run_dir}')
      elif forwarded and proc.returncode == -signal.SIGTERM:
        # Killed by the signal before its handler was installed (still importing): it had
        # not started training, so its last checkpoint, if any, is intact.
        log(f'    STOPPED before training began: {r.run_dir}')
      else:
        result['failed'].append((r.run_dir, f'exit {proc.returncode}, see stdout.log'))
        log(f'    FAILED (exit {proc.returncode}): {r.run_dir}/stdout.log')


def run_one(run_dir: str, train_fn: TrainFn | str | None = None):
  """Subprocess entry: trains the config the parent wrote to ``run_dir/run_config.json``."""
  with open(os.path.join(run_dir, 'run_config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with preemption.Notice():   # a SIGTERM while the run builds stops it at its first step
    resolve_train_fn(train_fn)(config_lib.normalize(config), run_dir)


# ---------------------------------------------------------------------------- command line
def table_options(base: ml_collections.ConfigDict, protocol: str, *, paper: bool,
                  title: str = 'Results', name: str = 'results') -> dict:
  """``tables.write_tables`` keywords for a study on ``base``: the paper's numbers beside ours
  for the paper's grids on real data (its numbers are of the real datasets, not of the
  synthetic benchmark), and the header lines saying how the runs were made."""
  d = base.data
  header = [f'Recipe: config.train.recipe={base.train.recipe!r} (epochs of each run: '
            f'{name}_runs.csv).',
            tables.target_set_note(d.dataset, config_lib.target_test_split_only(d))]
  on_real = paper and d.source == 'prepared'
  if paper and not on_real:
    header.append('The paper\'s numbers are left out: these runs are on the synthetic '
                  'benchmark, not on the real dataset.')
  return dict(title=title, name=name, header=header,
              paper=(protocol, d.dataset) if on_real else None)


def parse_modality_sets(text: str | None, default: Sequence[str]) -> list[tuple[str, ...]]:
  """'video,flow,audio;flow,audio' -> [('video', 'flow', 'audio'), ('flow', 'audio')]."""
  if not text:
    return [tuple(default)]
  return [tuple(m for m in s.split(',') if m) for s in text.split(';') if s.strip()]


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if f.run_one:
    try:
      run_one(f.run_one, f.train_fn)
    except preemption.Preempted as e:
      print(f'mbcd_jax: {e}', file=sys.stderr)
      sys.exit(preemption.EXIT_PREEMPTED)
    return
  if f.config is None or f.workdir is None:
    raise SystemExit('--config and --workdir are required')
  # Each run resolves its own recipe (config.train.recipe) once its method is set.
  base = config_lib.normalize(f.config, recipe=False)
  paper_grid = PAPER_GRIDS.get(f.grid)
  if paper_grid and f['protocol'].present and f.protocol != paper_grid[0]:
    raise SystemExit(f'--grid={f.grid} is the {paper_grid[0]} protocol; drop --protocol')
  if paper_grid:
    methods = [m for m in f.methods.split(',') if m] if f.methods else None
  else:
    methods_default = 'erm,ema,mbcd' if f.grid in ('methods', 'imbalance') else 'mbcd'
    methods = [m for m in (f.methods or methods_default).split(',') if m]
  values = [float(v) for v in f.values.split(',')] if f.values else None
  vlist = variants(f.grid, methods, values)
  protocol, modality_sets = paper_grid or (
      f.protocol, parse_modality_sets(None, base.data.modalities))
  if f.modalities:
    modality_sets = parse_modality_sets(f.modalities, base.data.modalities)
  runs = plan(f.workdir, base, protocol=protocol, variant_list=vlist,
              modality_sets=modality_sets, seeds=[int(s) for s in f.seeds.split(',')],
              targets=[t for t in (f.targets or '').split(',') if t] or None,
              modalities_first=paper_grid is not None)
  # Catches config mistakes (and settings without an authors' recipe) before hours of training.
  try:
    configs = [make_config(base, r) for r in runs]
  except ConfigError as e:
    raise SystemExit(f'mbcd_jax.study.experiments: error: {" ".join(str(e).split())}') from None
  name = f.table or ('results' if f.grid == 'methods' else f.grid)
  table_kw = table_options(base, protocol, paper=paper_grid is not None, title=f.title, name=name)
  if f.tables_only:
    print(tables.write_tables(f.workdir, runs=runs, **table_kw))
    return
  if f.dry_run:
    for r, c in zip(runs, configs):
      print(('done  ' if r.finished else 'todo  ') + f'{r.run_dir}  epochs={c.train.epochs}')
    return
  result = run_all(base, runs, train_fn=f.train_fn, parallel=f.parallel,
                   devices=[d for d in (f.devices or '').split(',') if d],
                   device_env=f.device_env)
  if result['preempted']:
    # Within the scheduler's grace period: no tables (the next invocation writes them).
    print(f'mbcd_jax.study.experiments: preempted: {result["preempted"]}; re-run the same command '
          'to resume', file=sys.stderr)
    sys.exit(preemption.EXIT_PREEMPTED)
  paths = tables.write_tables(f.workdir, runs=runs, **table_kw)
  print(f'\n{len(result["done"])} trained, {len(result["skipped"])} skipped, '
        f'{len(result["failed"])} failed in {result["wall_time_s"]:.0f} s')
  for d, e in result['failed']:
    print(f'  failed: {d}: {e}')
  print(f'tables: {paths["markdown"]}, {paths["csv"]}')
  if result['failed']:
    sys.exit(1)


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Base config file (configs/*.py[:arg]).',
                                  lock_config=False)
  flags.DEFINE_string('workdir', None, 'Study directory (one sub-directory per run).')
  flags.DEFINE_enum('protocol', 'multi_source', ['multi_source', 'single_source'],
                    'Leave-one-domain-out, or each domain -> each other domain.')
  flags.DEFINE_enum('grid', 'methods', list(GRIDS), 'Which rows: --methods, the paper\'s '
                    'Tables 1-2 (table1: multi-source, 4 modality sets; table2: single-source '
                    'V+F+A; both set the protocol and modality sets), or an ablation grid.')
  flags.DEFINE_string('methods', None, 'Comma-separated presets (mbcd_jax/methods.py); '
                      'default erm,ema,mbcd (methods, imbalance), mbcd (sweeps), all six of '
                      'the paper (table1, table2: narrows them; the MMDG benchmark\'s other '
                      'peers, experiments.BENCHMARK_PEERS, are added by name).')
  flags.DEFINE_string('values', None, 'Comma-separated sweep values (replace the defaults).')
  flags.DEFINE_string('modalities', None, "Modality sets separated by ';' (default: config's; "
                      "table1/table2: the paper's).")
  flags.DEFINE_string('seeds', '0,1,2', 'Comma-separated training seeds.')
  flags.DEFINE_string('targets', None, 'Restrict to these target domains (comma-separated).')
  flags.DEFINE_integer('parallel', 1, 'Runs at a time (subprocesses when > 1).')
  flags.DEFINE_string('devices', None, 'Device ids split among the parallel subprocesses.')
  flags.DEFINE_string('device_env', 'CUDA_VISIBLE_DEVICES', 'Env var that pins the devices.')
  flags.DEFINE_string('train_fn', None, "Training function 'module:function' (default "
                      'mbcd_jax.train:train_and_evaluate).')
  flags.DEFINE_string('title', 'Results', 'Title of the markdown table file.')
  flags.DEFINE_string('table', None, 'Table file name in the workdir (default: results for '
                      '--grid=methods, else the grid name): <table>.md, <table>.csv, '
                      '<table>_runs.csv.')
  flags.DEFINE_bool('dry_run', False, 'List the runs (done / todo) and exit.')
  flags.DEFINE_bool('tables_only', False, 'Only rewrite the tables from finished runs.')
  flags.DEFINE_string('run_one', None, 'Internal: train one prepared run directory.')


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
