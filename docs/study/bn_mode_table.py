"""Paired port-vs-frozen table from the runs' summary.json files."""
import glob, json, math, os, sys
from scipy.stats import binomtest
R = sys.argv[1] if len(sys.argv) > 1 else 'runs'
def load(mode):
  out = {}
  for p in glob.glob(f'{R}/bn_{mode}/mbcd/video_flow_audio/*/seed*/summary.json'):
    d = json.load(open(p)); out[(d['target'], p.split('/')[-2])] = d
  return out
f, p = load('frozen'), load('port')
keys = sorted(set(f) & set(p))
rows = []
for rule in ('best_val', 'last'):
  for who, head in (('teacher', 'fused'), ('student', 'fused'), ('teacher', 'video'), ('teacher', 'flow'), ('teacher', 'audio')):
    k = f'{who}/{head}'
    a = [f[x][rule]['test'][k] for x in keys]; b = [p[x][rule]['test'][k] for x in keys]
    d = [bi - ai for ai, bi in zip(a, b)]
    n = len(d); m = sum(d) / n; se = (sum((x - m) ** 2 for x in d) / (n - 1)) ** .5 / n ** .5 if n > 1 else float('nan')
    w = sum(x > 0 for x in d); l = sum(x < 0 for x in d)
    pv = binomtest(w, w + l).pvalue if w + l else 1.0
    rows.append(f'| {rule} | {k} | {sum(a)/n:.1f} | {sum(b)/n:.1f} | {m:+.1f} ± {se:.1f} | {w}/{l}/{n-w-l} | {pv:.3f} |')
print(f'pairs (target, seed) finished in both arms: {len(keys)}: {keys}')
wt = [f[x]['wall_time_s'] for x in keys], [p[x]['wall_time_s'] for x in keys]
print(f'mean wall time per run: frozen {sum(wt[0])/len(keys):.0f} s, port {sum(wt[1])/len(keys):.0f} s (shared, loaded machine)')
print('| rule | head (test, unseen domain) | frozen | port | port − frozen (mean ± s.e.) | wins/losses/ties | sign test p |')
print('|---|---|---:|---:|---:|---:|---:|')
print('\n'.join(rows))
