r"""How far the embedded benchmark's answer generalises: the same comparison on many fresh worlds.

  # Check, then train every world that satisfies the benchmark's principle (erm and mbcd, seed 0,
  # the three multi-source targets, the README's default otherwise); resumable: a finished run
  # is skipped, a finished world's rows are merged into the CSV as soon as it is done.
  python -m mbcd_jax.study.worlds --worlds=100-107 --workdir=runs/worlds --out=docs/results
  # More methods on the same worlds (ema, ema_amd), or more worlds (108-111):
  python -m mbcd_jax.study.worlds --worlds=100-107 --methods=ema,ema_amd --workdir=runs/worlds ...

A world is the benchmark drawn with ``config.data.synthetic.world_seed``; the rule that picks
them (docs/results/worlds_plan.md) is fixed before any run: the given seeds in order, each
checked by ``world_check`` before training, kept if and only if the principle holds. Writes into
``--out``:
  worlds_stats.csv  one row per checked world: whether the principle holds, its failures, the
                    data settings' digest (a changed setting re-checks), and
                    ``world_check.Report.stats`` (separability, cross-domain agreement, style
                    shift and span margin per modality)
  worlds_runs.csv   the runner's ``<table>_runs.csv`` rows (every rule it writes) plus a
                    ``world`` column, merged by (world, variant, setting, seed, rule) as each
                    run finishes; a run it holds is done (a new machine resumes from it)
Runs land in ``<workdir>/w<seed>/`` (the runner's layout below that). ``--parallel`` trains
that many runs at a time (``experiments.run_all``).
"""
import csv
import hashlib
import json
import os
import sys
from typing import Sequence

import ml_collections

from mbcd_jax import config_lib
from mbcd_jax.synthetic import world_check
from mbcd_jax.study import experiments, tables

STATS_CSV, RUNS_CSV = 'worlds_stats.csv', 'worlds_runs.csv'
RUN_KEY = ('world', 'variant', 'setting', 'seed', 'rule')


def parse_worlds(text: str) -> list[int]:
  """'100-103,110' -> [100, 101, 102, 103, 110] (order kept: the draw order)."""
  out = []
  for part in (p.strip() for p in text.split(',') if p.strip()):
    lo, _, hi = part.partition('-')
    out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
  return out


def world_config(base: ml_collections.ConfigDict, world: int) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(base.to_dict())
  config.data.synthetic.world_seed = int(world)
  return config


def data_fingerprint(config: ml_collections.ConfigDict) -> str:
  """Digest of the data settings a world's check depends on (its seed included)."""
  d = config.data
  blob = json.dumps({'synthetic': d.synthetic.to_dict(), 'classes': d.num_classes,
                     'domains': list(d.domains), 'modalities': list(d.modalities)},
                    sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_world(base: ml_collections.ConfigDict, world: int) -> dict:
  """The world's ``worlds_stats.csv`` row (the principle checked on its data statistics)."""
  config = world_config(base, world)
  report = world_check.check_config(config)
  return {'world': world, 'holds': report.ok, 'failures': ' | '.join(report.failures),
          'data': data_fingerprint(config), **report.stats}


def _read(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def merge_csv(path: str, rows: Sequence[dict], key: Sequence[str]):
  """Writes ``path`` as its old rows with ``rows`` replacing those of the same ``key``
  (compared as text), sorted by key; columns: the old file's, then new ones."""
  def k(r):
    return tuple(str(r[c]) for c in key)
  old = _read(path)
  fields = list(old[0].keys()) if old else []
  for r in rows:
    fields += [c for c in r if c not in fields]
  merged = {k(r): r for r in old}
  merged.update({k(r): r for r in rows})
  def order(item):
    return tuple(int(x) if x.lstrip('-').isdigit() else x for x in item[0])
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    w.writerows(r for _, r in sorted(merged.items(), key=order))
  os.replace(tmp, path)


def world_runs(base, world: int, workdir: str, methods: Sequence[str], seeds: Sequence[int]):
  config = world_config(base, world)
  return config, experiments.plan(
      os.path.join(workdir, f'w{world}'), config,
      variant_list=experiments.variants('methods', list(methods)),
      modality_sets=[tuple(config.data.modalities)], seeds=list(seeds))


def committed(out: str) -> set:
  """(world, variant, setting, seed) of every run whose rows ``worlds_runs.csv`` holds: done,
  whatever machine made it (run directories do not travel between machines; the CSV does)."""
  return {(r['world'], r['variant'], r['setting'], r['seed'])
          for r in _read(os.path.join(out, RUNS_CSV))}


def _key(world, r) -> tuple:
  meta = dict(r.meta)
  return (str(world), meta['variant'],
          tables.setting_label(meta['sources'], meta['target']), str(meta['seed']))


def collect(runs, world: int, out: str) -> int:
  """Merges the finished ``runs``' rows into ``worlds_runs.csv``; returns how many runs."""
  rows = [{'world': world, **{k: v for k, v in r.items() if 'order' not in k}}
          for r in tables.collect(None, runs)]
  if rows:
    merge_csv(os.path.join(out, RUNS_CSV), rows, RUN_KEY)
  return len(rows) // len(tables.RULES)


def run(base: ml_collections.ConfigDict, worlds: Sequence[int], *, workdir: str, out: str,
        methods: Sequence[str] = ('erm', 'mbcd'), seeds: Sequence[int] = (0,),
        parallel: int = 1, train_fn=None, collect_only: bool = False, log=print) -> dict:
  """Checks and trains ``worlds`` in order (see the module docstring). A run whose rows are
  already in ``worlds_runs.csv`` is not trained again; every finished run's rows are merged as
  soon as it finishes. ``collect_only``: merge the finished runs under ``workdir``, train and
  check nothing.

  Returns:
    {'held': [...], 'failed_check': [...], 'failed_runs': [(run_dir, error)]}.
  """
  result = {'held': [], 'failed_check': [], 'failed_runs': []}
  if collect_only:
    for world in worlds:
      _, runs = world_runs(base, world, workdir, methods, seeds)
      n = collect(runs, world, out)
      log(f'world {world}: {n} finished runs merged')
    return result
  known = {int(r['world']): r for r in _read(os.path.join(out, STATS_CSV))}
  for i, world in enumerate(worlds):
    stats = known.get(world)
    if stats is None or stats.get('data') != data_fingerprint(world_config(base, world)):
      log(f'world {world}: checking the principle')
      stats = check_world(base, world)
      merge_csv(os.path.join(out, STATS_CSV), [stats], ('world',))
    holds = str(stats['holds']) == 'True'
    if not holds:
      log(f'world {world}: principle FAILS ({stats["failures"]}); not run (the draw rule)')
      result['failed_check'].append(world)
      continue
    result['held'].append(world)
    config, runs = world_runs(base, world, workdir, methods, seeds)
    log(f'world {world} ({i + 1}/{len(worlds)}): principle holds; {len(runs)} runs')
    done = committed(out)
    todo = [r for r in runs if _key(world, r) not in done]
    if len(todo) < len(runs):
      log(f'world {world}: {len(runs) - len(todo)} runs already in {RUNS_CSV}')
    # One run at a time (``parallel`` at a time) so that each lands in the CSV when it ends.
    for i in range(0, len(todo), max(1, parallel)):
      chunk = todo[i:i + max(1, parallel)]
      res = experiments.run_all(config, chunk, train_fn=train_fn, parallel=parallel, log=log)
      result['failed_runs'] += res['failed']
      collect(chunk, world, out)
      if res.get('preempted'):
        return result
  return result


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  base = config_lib.normalize(f.config, recipe=False)
  res = run(base, parse_worlds(f.worlds), workdir=f.workdir, out=f.out,
            methods=[m for m in f.methods.split(',') if m],
            seeds=[int(s) for s in f.seeds.split(',')], parallel=f.parallel,
            train_fn=f.train_fn, collect_only=f.collect_only)
  print(f'worlds run: {res["held"]}; failed the check: {res["failed_check"]}; '
        f'failed runs: {len(res["failed_runs"])}')
  for d, e in res['failed_runs']:
    print(f'  failed: {d}: {e}')
  if res['failed_runs']:
    sys.exit(1)


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', 'configs/hac.py:synthetic', 'Base config file.',
                                  lock_config=False)
  flags.DEFINE_string('worlds', '100-107', "World seeds in draw order ('100-107,110').")
  flags.DEFINE_string('workdir', 'runs/worlds', 'Runs go to <workdir>/w<seed>/.')
  flags.DEFINE_string('out', 'docs/results', 'Where worlds_stats.csv / worlds_runs.csv go.')
  flags.DEFINE_string('methods', 'erm,mbcd', 'Comma-separated methods.')
  flags.DEFINE_string('seeds', '0', 'Comma-separated training seeds.')
  flags.DEFINE_integer('parallel', 1, 'Runs at a time.')
  flags.DEFINE_string('train_fn', None, "'module:function' (default train.train_and_evaluate).")
  flags.DEFINE_bool('collect_only', False, 'Merge the finished runs under --workdir into '
                    'worlds_runs.csv; train and check nothing.')
  app.run(main)
