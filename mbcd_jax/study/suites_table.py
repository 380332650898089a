r"""One table over the four reliability suites: each method's headline numbers beside ERM's.

  python -m mbcd_jax.study.suites_table --suites_dir=docs/study/suites [--baseline=erm] \
      [--seeds=0] [--out=docs/study/suites/summary.md]

Reads the ``<suite>.csv`` files ``python -m mbcd_jax.analysis <suite>`` wrote into
``--suites_dir`` (``mbcd_jax/analysis/suites.py``) and reduces each run — (variant, setting,
seed), one checkpoint rule and model — to one number per column:

  accuracy     clean top-1 on the target (misd's ``msp`` row)
  AURC         misclassification detection by max softmax, ×1000 (lower is better)
  OOD AUROC    OOD detection by max softmax against the first OOD set, ×100
  missing      mean accuracy with one modality zeroed at the fused head's input (the
               benchmark's ``test_HAC_missing.py`` place), over the modalities
  corrupted    mean accuracy over every corruption and severity
  drop         clean accuracy minus ``missing`` (how much one absent modality costs)

Each cell is the mean ± std over the runs, and for a method other than the baseline its mean
paired difference over the runs both have (same setting and seed) with wins / pairs ("a win" is
the better direction) and the two-sided sign-test p (``tables.sign_test_p``). A suite a run
lacks leaves its cells out of that run; the wall time per run of each suite is reported under
the table.
"""
import argparse
import collections
import csv
import math
import os

import numpy as np

from mbcd_jax.study import tables

# (column, label, lower is better)
COLUMNS = (('acc', 'accuracy', False), ('aurc', 'AURC ↓ (×1000)', True),
           ('ood_auroc', 'OOD AUROC', False), ('missing', 'one modality missing', False),
           ('drop', 'drop ↓', True), ('corrupted', 'corrupted', False))
SUITES = ('misd', 'ood', 'missing', 'corruption')
# The suites study (docs/study/suites_plan.md): where its tables are committed and its methods.
STUDY_DIR = 'docs/study/suites'
STUDY_METHODS = ('erm', 'mbcd', 'simmmdg', 'cmrf')
# Its addition: every method at seed 0 (the plan's addendum), in this sub-folder of STUDY_DIR.
EVERY_METHOD_DIR = 'every_method'
EVERY_METHOD_SEEDS = frozenset({0})


def has_tables(suites_dir: str) -> bool:
  """Whether the suites wrote their tables into ``suites_dir`` (misd's CSV, the first suite)."""
  return os.path.exists(os.path.join(suites_dir, f'{SUITES[0]}.csv'))


def read(suites_dir: str) -> dict[str, list[dict]]:
  """{suite: rows} of every suite CSV present in ``suites_dir``."""
  out = {}
  for s in SUITES:
    path = os.path.join(suites_dir, f'{s}.csv')
    if os.path.exists(path):
      with open(path, newline='') as f:
        out[s] = list(csv.DictReader(f))
  if not out:
    raise FileNotFoundError(f'{suites_dir}: no suite CSV ({", ".join(f"{s}.csv" for s in SUITES)})')
  return out


def _key(r: dict) -> tuple:
  return (r['variant'], r['modalities'], r['setting'], int(r['seed']))


def per_run(suites: dict[str, list[dict]]) -> dict[tuple, dict]:
  """(variant, modalities, setting, seed) -> {column: value} (``COLUMNS``)."""
  runs = collections.defaultdict(dict)
  for r in suites.get('misd', ()):
    if r['condition'] == 'msp':
      runs[_key(r)].update(acc=float(r['acc']), aurc=float(r['aurc']))
  ood_first = {}
  for r in suites.get('ood', ()):
    set_, score = r['condition'].split('/', 1)
    if score == 'msp' and ood_first.setdefault(_key(r), set_) == set_:
      runs[_key(r)]['ood_auroc'] = float(r['auroc'])
  miss = collections.defaultdict(dict)
  for r in suites.get('missing', ()):
    miss[_key(r)][r['condition']] = float(r['acc'])
  for k, conds in miss.items():
    # One modality zeroed at the fused head: 'feature:-<m>' with a single name after the '-'.
    one = [v for c, v in conds.items() if c.startswith('feature:-') and '+' not in c]
    if one:
      runs[k]['missing'] = float(np.mean(one))
      if 'none' in conds:
        runs[k]['drop'] = conds['none'] - runs[k]['missing']
  cor = collections.defaultdict(list)
  for r in suites.get('corruption', ()):
    if r['condition'] != 'clean':
      cor[_key(r)].append(float(r['acc']))
  for k, v in cor.items():
    runs[k]['corrupted'] = float(np.mean(v))
  return dict(runs)


def _cell(values, diffs=None, lower=False) -> str:
  m, s = tables.mean_std(values)
  if math.isnan(m):
    return '–'
  text = f'{m:.1f} ± {s:.1f}'
  if diffs:
    d = np.array(diffs)
    better = -d if lower else d
    wins, losses = int((better > 0).sum()), int((better < 0).sum())
    p = tables.sign_test_p(wins, losses)
    text += f' ({d.mean():+.1f}, {wins}/{len(d)}, ' + ('p < 0.01)' if p < 0.01 else f'p {p:.2f})')
  return text


def table(suites: dict[str, list[dict]], baseline: str = 'erm', seeds=None,
          methods=None) -> list[str]:
  """Markdown lines: one row per (modalities, method), the baseline first."""
  runs = {k: v for k, v in per_run(suites).items() if seeds is None or k[3] in seeds}
  order = list(dict.fromkeys(k[0] for k in runs))
  if methods:
    order = [m for m in methods if m in order]
  order.sort(key=lambda m: m != baseline)
  head = ['modalities', 'method', 'runs'] + [label for _, label, _ in COLUMNS]
  out = ['| ' + ' | '.join(head) + ' |', '|---|---|---:|' + '---:|' * len(COLUMNS)]
  for mods in dict.fromkeys(k[1] for k in runs):
    base = {k[2:]: v for k, v in runs.items() if k[0] == baseline and k[1] == mods}
    for m in order:
      mine = {k[2:]: v for k, v in runs.items() if k[0] == m and k[1] == mods}
      if not mine:
        continue
      cells = []
      for col, _, lower in COLUMNS:
        vals = [v[col] for v in mine.values() if col in v]
        diffs = None
        if m != baseline:
          diffs = [v[col] - base[k][col] for k, v in mine.items()
                   if col in v and k in base and col in base[k]]
        cells.append(_cell(vals, diffs, lower))
      out.append(f'| {mods} | {m} | {len(mine)} | ' + ' | '.join(cells) + ' |')
  return out


def wall_times(suites: dict[str, list[dict]], seeds=None) -> list[str]:
  """One line per suite: the median and range of its wall time per run (model load excluded),
  over the runs of ``seeds`` (all if None)."""
  out = []
  for s, rows in suites.items():
    per = {_key(r): float(r['wall_s']) for r in rows
           if r.get('wall_s') and (seeds is None or int(r['seed']) in seeds)}
    if per:
      v = np.array(list(per.values()))
      out.append(f'- {s}: median {np.median(v):.1f} s per run '
                 f'(range {v.min():.1f}–{v.max():.1f}, {len(v)} runs)')
  return out


def markdown(suites_dir: str, baseline: str = 'erm', seeds=None, methods=None) -> str:
  suites = read(suites_dir)
  return '\n'.join([
      f'Each cell: mean ± std over runs; beside a method, its mean paired difference from '
      f'{baseline} (same setting and seed), wins / pairs and the two-sided sign-test p. Columns: '
      '`mbcd_jax/study/suites_table.py`.', '',
      *table(suites, baseline, seeds, methods), '',
      'Wall time of each suite per run:', '', *wall_times(suites, seeds), ''])


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--suites_dir', required=True)
  p.add_argument('--baseline', default='erm')
  p.add_argument('--seeds', default='', help="comma-separated seeds (default: all)")
  p.add_argument('--methods', default='', help='comma-separated, in this order (default: all)')
  p.add_argument('--out', default=None, help='markdown file (default: print)')
  a = p.parse_args(argv)
  seeds = {int(s) for s in a.seeds.split(',') if s} or None
  methods = [m for m in a.methods.split(',') if m] or None
  text = markdown(a.suites_dir, a.baseline, seeds, methods)
  if a.out:
    with open(a.out, 'w') as f:
      f.write(text)
    print(f'wrote {a.out}')
  else:
    print(text)


if __name__ == '__main__':
  main()
