"""Pools the paper-regime study's worlds: per-world means and paired differences.

  python docs/study/paper_regime/worlds_table.py [--seeds=0] docs/study/paper_regime/w*_runs.csv

Each file is a runner's ``<table>_runs.csv`` (one row per run and selection rule), named after
its world (``w0_…``, ``w0s12_…``: world 0; the seeds come from the rows); ``--seeds`` keeps only
those training seeds (e.g. seed 0, so that every world weighs the same when pooling). Pairs are
(world, target, seed); Δ = mean ± standard error over pairs, with wins / pairs. ``fused`` is the
evaluated model (EMA teacher for ema / mbcd, the student for erm), ``student_fused`` the
student's fused head.
"""
import csv
import os
import re
import statistics
import sys

COMPARISONS = (('ema', 'erm', 'fused'), ('mbcd', 'erm', 'fused'), ('mbcd', 'ema', 'fused'),
               ('ema', 'erm', 'student_fused'), ('mbcd', 'erm', 'student_fused'))


def load(paths, seeds=None):
  rows = []
  for p in paths:
    m = re.match(r'(w\d+)', os.path.basename(p))
    if not m:
      raise SystemExit(f'{p}: the file name must start with its world (w0_..., w3_...)')
    with open(p) as f:
      for r in csv.DictReader(f):
        if seeds is None or r['seed'] in seeds:
          r['world'] = m.group(1)
          rows.append(r)
  return rows


def cell(rows, world, variant, rule, col):
  v = [float(r[col]) for r in rows
       if r['world'] == world and r['variant'] == variant and r['rule'] == rule]
  return statistics.mean(v) if v else float('nan')


def paired(rows, a, b, rule, col):
  key = lambda r: (r['world'], r['target'], r['seed'])
  va = {key(r): float(r[col]) for r in rows if r['variant'] == a and r['rule'] == rule}
  vb = {key(r): float(r[col]) for r in rows if r['variant'] == b and r['rule'] == rule}
  d = [va[k] - vb[k] for k in sorted(set(va) & set(vb))]
  if not d:
    return 'n/a'
  se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float('nan')
  return f'{statistics.mean(d):+.1f} ± {se:.1f} ({sum(x > 0 for x in d)}/{len(d)})'


def main(args):
  seeds = None
  if args and args[0].startswith('--seeds='):
    seeds = set(args[0].split('=', 1)[1].split(','))
    args = args[1:]
  rows = load(args, seeds)
  worlds = sorted({r['world'] for r in rows})
  for rule in ('best_val', 'last'):
    print(f'\n### Rule: {rule}\n')
    print('| world | erm | ema | mbcd | mbcd student | ' +
          ' | '.join(f'{a} − {b} ({c})' for a, b, c in COMPARISONS) + ' |')
    print('|---|' + '---:|' * (4 + len(COMPARISONS)))
    for w in worlds + ['all']:
      sub = rows if w == 'all' else [r for r in rows if r['world'] == w]
      ws = worlds if w == 'all' else [w]
      means = [statistics.mean(cell(sub, x, v, rule, c) for x in ws)
               for v, c in (('erm', 'fused'), ('ema', 'fused'), ('mbcd', 'fused'),
                            ('mbcd', 'student_fused'))]
      print(f'| {w} | ' + ' | '.join(f'{m:.1f}' for m in means) + ' | ' +
            ' | '.join(paired(sub, a, b, rule, c) for a, b, c in COMPARISONS) + ' |')


if __name__ == '__main__':
  main(sys.argv[1:])
