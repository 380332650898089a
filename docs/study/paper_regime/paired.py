"""Paired comparison of two table rows over (seed, target) pairs, from runners' ``*_runs.csv``.

  python -m docs.study.paper_regime.paired 'mbcd ema_beta=0.99' 'mbcd ema_beta=0.999' \
      docs/study/paper_regime/v2/machine_b/sweep_beta_seed0_runs.csv \
      docs/study/paper_regime/v2/machine_b/w0_beta_seed1_runs.csv

Pools runs that no single workdir holds (seed 0 made on one host, seed 1 on another whose runs
reproduced the first host's bit for bit). Each file has one row per run and selection rule
(``variant, setting, target, seed, rule, ..., fused, student_fused``); a row names its run by
``variant``, which differs between grids for the same run (``--methods`` writes ``ema_gcc``,
``--grid=table4`` writes ``ema+gcc``): ``--alias=ema_gcc:ema+gcc`` reads the second as the
first. A run found in several files must carry the same numbers in each, else this exits
naming both files. Prints, per rule (last epoch, best validation) and per head (``fused``: the
evaluated model, the EMA teacher for EMA methods; ``student_fused``: the student's fused head),
mean A − B ± standard error over the pairs both rows have, wins / ties / pairs, the two-sided
sign-test p over the untied pairs (``mbcd_jax.study.tables.paired``, the runner's own paired
statistics), both rows' means and every pair.
"""
import argparse
import csv
import os
import statistics

from mbcd_jax.study import tables


def load(paths, aliases, seeds=None):
  """One dict per (run, rule), as ``mbcd_jax.study.tables.paired`` reads them, from the files."""
  rows, origin = {}, {}
  for path in paths:
    with open(path) as f:
      for r in csv.DictReader(f):
        if seeds is not None and r['seed'] not in seeds:
          continue
        row = dict(r, variant=aliases.get(r['variant'], r['variant']),
                   fused=float(r['fused']), student_fused=float(r['student_fused']))
        key = (row['variant'], r['seed'], r['setting'], r['rule'])
        val = (row['fused'], row['student_fused'])
        if key in rows and (rows[key]['fused'], rows[key]['student_fused']) != val:
          raise SystemExit(f'{path}: run {key} has {val}, {origin[key]} has '
                           f'{(rows[key]["fused"], rows[key]["student_fused"])}')
        rows[key], origin[key] = row, path
  return list(rows.values())


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('a')
  p.add_argument('b')
  p.add_argument('runs_csv', nargs='+')
  p.add_argument('--seeds', default=None, help='keep only these training seeds, e.g. 0,1')
  p.add_argument('--alias', action='append', default=[],
                 help='NAME:OTHER reads variant OTHER as NAME (repeatable)')
  args = p.parse_args()
  aliases = {}
  for al in args.alias:
    name, _, other = al.partition(':')
    if not other:
      raise SystemExit(f'--alias={al}: expected NAME:OTHER')
    aliases[other] = name
  rows = load(args.runs_csv, aliases, args.seeds.split(',') if args.seeds else None)
  for rule in ('last', 'best_val'):
    for col in ('fused', 'student_fused'):
      st = tables.paired(rows, rule, args.a, args.b, value=col)
      if st is None:
        raise SystemExit(f'no (seed, target) pair has both {args.a!r} and {args.b!r} ({rule})')
      by = {v: {(r['seed'], r['target']): r[col] for r in rows
                if r['variant'] == v and r['rule'] == rule} for v in (args.a, args.b)}
      pairs = sorted(set(by[args.a]) & set(by[args.b]))
      each = ' '.join(f's{s}/{t}:{by[args.a][s, t]:.1f}-{by[args.b][s, t]:.1f}' for s, t in pairs)
      print(f'{rule:8s} {col:13s} {args.a} − {args.b}: {st["mean"]:+.1f} ± {st["sem"]:.1f} '
            f'({st["wins"]} wins, {st["ties"]} ties / {st["n"]}; sign test p {st["p_sign"]:.2f})'
            f'  means {statistics.mean(by[args.a][k] for k in pairs):.1f} vs '
            f'{statistics.mean(by[args.b][k] for k in pairs):.1f}\n    {each}')

if __name__ == '__main__':
  main()
