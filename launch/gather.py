r"""Gathers a grid's finished runs into one table (after launch/slurm_grid.sbatch).

  python3 launch/gather.py runs/study            # -> runs/study/grid.csv, runs/study/grid.md

Every ``<root>/<method>/<target>/seed<k>/summary.json`` (launch/make_grid.sh's names) becomes a
row of grid.csv; grid.md has one row per method, one column per target, each cell the mean ±
std (ddof=1) over seeds of the target-domain accuracy of the evaluated model, at the best
source-validation epoch (the paper's rule) and at the last epoch. Unfinished runs are listed.
"""
import csv
import glob
import json
import os
import sys

import numpy as np


def collect(root: str) -> tuple[list[dict], list[str]]:
  rows, missing = [], []
  for d in sorted(glob.glob(os.path.join(root, '*', '*', 'seed*'))):
    method, target, seed = os.path.relpath(d, root).split(os.sep)
    path = os.path.join(d, 'summary.json')
    if not os.path.exists(path):
      missing.append(d)
      continue
    with open(path) as f:
      s = json.load(f)
    rows.append({'method': method, 'target': target, 'seed': int(seed[4:]),
                 'best_val_test': s['best_val']['test'][f'{s["evaluated"]}/fused'],
                 'last_test': s['last']['test'][f'{s["evaluated"]}/fused'],
                 'steps': s['steps'], 'run': d})
  return rows, missing


def cell(values) -> str:
  v = np.asarray(values, float)
  return f'{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.2f} (n={len(v)})'


def main(root: str):
  rows, missing = collect(root)
  if not rows:
    sys.exit(f'gather.py: no finished runs under {root}')
  with open(os.path.join(root, 'grid.csv'), 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  methods = sorted({r['method'] for r in rows})
  targets = sorted({r['target'] for r in rows})
  lines = []
  for key, title in (('best_val_test', 'model selected by best source validation'),
                     ('last_test', 'last-epoch model')):
    lines += [f'## Target-domain accuracy (%), {title}', '',
              '| method | ' + ' | '.join(targets) + ' |',
              '|---|' + '---|' * len(targets)]
    for m in methods:
      cells = [cell([r[key] for r in rows if r['method'] == m and r['target'] == t]) if any(
          r['method'] == m and r['target'] == t for r in rows) else '—' for t in targets]
      lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  if missing:
    lines += [f'Unfinished ({len(missing)}):', ''] + [f'- {d}' for d in missing]
  with open(os.path.join(root, 'grid.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  if len(sys.argv) != 2:
    sys.exit(__doc__)
  main(sys.argv[1])
