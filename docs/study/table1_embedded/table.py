"""Embedded Table 1 (docs/study/table1_embedded/README.md): per-target fused test accuracy of
each method's evaluated model and paired differences vs ERM and vs MBCD, from a runner workdir.

  python docs/study/table1_embedded/table.py <workdir> [modalities=video_flow_audio]
"""
import glob
import json
import os
import statistics
import sys

METHODS = ('erm', 'rna', 'simmmdg', 'moosa', 'cmrf', 'mbcd')
TARGETS = ('human', 'animal', 'cartoon')


def load(workdir, mods):
  out = {}   # (method, target, seed) -> (best-val test, last test)
  for path in glob.glob(os.path.join(workdir, '*', mods, '*', 'seed*', 'summary.json')):
    s = json.load(open(path))
    who = s['evaluated']
    key = (s['method'], s['target'], int(path.split('seed')[-1].split('/')[0]))
    out[key] = (s['best_val']['test'][f'{who}/fused'], s['last']['test'][f'{who}/fused'])
  return out


def main():
  workdir = sys.argv[1]
  mods = sys.argv[2] if len(sys.argv) > 2 else 'video_flow_audio'
  r = load(workdir, mods)
  seeds = sorted({k[2] for k in r})
  print(f'## {mods.replace("_", "+")} — fused test top-1 (%), best-validation epoch '
        f'(last epoch in brackets); seeds {seeds}\n')
  print('| method | ' + ' | '.join(TARGETS) + ' | mean | Δ vs erm (wins) | Δ vs mbcd (wins) |')
  print('|---|' + '---:|' * (len(TARGETS) + 3))
  for m in METHODS:
    cells, vals, d_erm, d_mbcd = [], [], [], []
    for t in TARGETS:
      xs = [r[(m, t, s)] for s in seeds if (m, t, s) in r]
      if not xs:
        cells.append('–')
        continue
      b = statistics.mean(x[0] for x in xs)
      l = statistics.mean(x[1] for x in xs)
      cells.append(f'{b:.1f} ({l:.1f})')
      vals.append(b)
      for s in seeds:
        if (m, t, s) in r and ('erm', t, s) in r:
          d_erm.append(r[(m, t, s)][0] - r[('erm', t, s)][0])
        if (m, t, s) in r and ('mbcd', t, s) in r:
          d_mbcd.append(r[(m, t, s)][0] - r[('mbcd', t, s)][0])
    def diff(d):
      if not d or m in ('erm',) and d is d_erm or m == 'mbcd' and d is d_mbcd:
        return '–'
      sd = statistics.stdev(d) if len(d) > 1 else 0.0
      return f'{statistics.mean(d):+.1f} ± {sd:.1f} ({sum(x > 0 for x in d)}/{len(d)})'
    mean = f'{statistics.mean(vals):.1f}' if len(vals) == len(TARGETS) else '–'
    print(f'| {m} | ' + ' | '.join(cells) + f' | {mean} | {diff(d_erm)} | {diff(d_mbcd)} |')
  print(f'\nruns: {len(r)}; Δ = paired (same target, seed) difference of the best-validation '
        'numbers, mean ± sd over pairs (pairs where the method is ahead / pairs).')


if __name__ == '__main__':
  main()
