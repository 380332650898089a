"""Paired comparison of two table rows over (seed, target) pairs, from runners' ``*_runs.csv``.

  python docs/study/paper_regime/paired.py 'mbcd ema_beta=0.99' 'mbcd ema_beta=0.999' \
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
sign-test p over the untied pairs, both rows' means and every pair.
"""
import argparse
import csv
import math
import statistics


def load(paths, aliases, seeds=None):
  """{(variant, seed, target, rule): {'fused': x, 'student_fused': y}} from the files."""
  rows, origin = {}, {}
  for path in paths:
    with open(path) as f:
      for r in csv.DictReader(f):
        if seeds is not None and r['seed'] not in seeds:
          continue
        key = (aliases.get(r['variant'], r['variant']), r['seed'], r['target'], r['rule'])
        val = {c: float(r[c]) for c in ('fused', 'student_fused')}
        if key in rows and rows[key] != val:
          raise SystemExit(f'{path}: run {key} has {val}, {origin[key]} has {rows[key]}')
        rows[key], origin[key] = val, path
  return rows


def sign_test(wins: int, n: int) -> float:
  """Two-sided exact sign-test p for ``wins`` of ``n`` untied pairs."""
  if n == 0:
    return 1.0
  k = min(wins, n - wins)
  return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def compare(rows, a, b, rule, col):
  pairs = sorted({k[1:3] for k in rows if k[0] == a and k[3] == rule}
                 & {k[1:3] for k in rows if k[0] == b and k[3] == rule})
  xa = [rows[(a, s, t, rule)][col] for s, t in pairs]
  xb = [rows[(b, s, t, rule)][col] for s, t in pairs]
  d = [x - y for x, y in zip(xa, xb)]
  return pairs, xa, xb, d


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
      pairs, xa, xb, d = compare(rows, args.a, args.b, rule, col)
      if not d:
        raise SystemExit(f'no (seed, target) pair has both {args.a!r} and {args.b!r} ({rule})')
      se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float('nan')
      wins, ties = sum(x > 0 for x in d), sum(x == 0 for x in d)
      each = ' '.join(f's{s}/{t}:{x:.1f}-{y:.1f}' for (s, t), x, y in zip(pairs, xa, xb))
      print(f'{rule:8s} {col:13s} {args.a} − {args.b}: {statistics.mean(d):+.1f} ± {se:.1f} '
            f'({wins} wins, {ties} ties / {len(d)}; sign test p {sign_test(wins, len(d) - ties):.2f})'
            f'  means {statistics.mean(xa):.1f} vs {statistics.mean(xb):.1f}\n    {each}')


if __name__ == '__main__':
  main()
