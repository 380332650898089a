r"""Writes docs/results.md, the embedded benchmark's current answer, from the committed CSVs.

  python -m mbcd_jax.study.results_page            # rewrites docs/results.md and its figure
  python -m mbcd_jax.study.results_page --check    # exits 1 if docs/results.md is not up to date

Every number on the page is computed here from runner ``*_runs.csv`` files committed under
docs/ (``SOURCES``); nothing is typed by hand. A comparison ``A − B`` pairs the runs of A and B
with the same world, target and seed and reports the mean paired difference ± its standard
error, the wins over pairs and the two-sided sign-test p (``tables.sign_test_p``). Its verdict is
fixed here, before any number: *ahead* / *behind* when the sign test over the pairs gives
p < 0.05 in that direction, else *level*. A run found in several files must carry the same
numbers in each (else this stops, naming both).
"""
import argparse
import csv
import dataclasses
import math
import os
import sys

import numpy as np

from mbcd_jax.study import paper_numbers, suites_table, tables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the clone
MB = 'docs/study/paper_regime/v2/machine_b'
PAGE, FIGURE = 'docs/results.md', 'docs/results/main.png'
WORLDS_FIGURE = 'docs/results/worlds.png'
# (group, file): world 0 (the default world every choice was made on), the unseen worlds 3-6
# (drawn after the settings were fixed; docs/study/paper_regime/history.md), and the worlds
# study's fresh worlds (docs/results/worlds_plan.md).
SOURCES = (
    ('w0', f'{MB}/w0_seeds01234_runs.csv'), ('w0', f'{MB}/w0_amd_seeds0123_runs.csv'),
    ('w0', f'{MB}/table4_seed0_runs.csv'),
    ('w0', f'{MB}/s1_t4_human_runs.csv'), ('w0', f'{MB}/s1_t4_animal_runs.csv'),
    ('w0', f'{MB}/s1_t4_cartoon_runs.csv'),
    ('w0', f'{MB}/sweep_beta_seed0_runs.csv'), ('w0', f'{MB}/w0_beta_seed1_runs.csv'),
    ('w0', f'{MB}/sweep_lambda_seed0_runs.csv'), ('w0', f'{MB}/w0_lambda_seed1_runs.csv'),
    ('w3-6', f'{MB}/w3_results_runs.csv'), ('w3-6', f'{MB}/w4_results_runs.csv'),
    ('w3-6', f'{MB}/w5_results_runs.csv'), ('w3-6', f'{MB}/w6_results_runs.csv'),
    ('fresh', 'docs/results/worlds_runs.csv'),
)
# Row labels of the same run in different grids (Table 4's labels, the sweeps' defaults).
ALIASES = {'none (erm)': 'erm', 'ema+amd': 'ema_amd', 'ema+gcc': 'ema_gcc', 'ema+dl': 'ema_dl',
           'mbcd (all)': 'mbcd', 'mbcd ema_beta=0.999': 'mbcd', 'mbcd lambda=1': 'mbcd'}
GROUPS = {'w0': 'world 0', 'w3-6': 'unseen worlds 3–6', 'fresh': 'fresh worlds (100+)'}


@dataclasses.dataclass(frozen=True)
class Comparison:
  label: str
  a: str                 # variant
  b: str                 # baseline variant
  a_col: str = 'fused'   # 'fused': the evaluated model (EMA teacher for EMA methods)
  paper: str = ''        # the paper's number for the same comparison, with where it is from


def _paper_diff(dataset, mods, a, b):
  pa = paper_numbers.TABLE1[(dataset, mods, a)][-1]
  pb = paper_numbers.TABLE1[(dataset, mods, b)][-1]
  return pa - pb


COMPARISONS = (
    Comparison('MBCD student − ERM', 'mbcd', 'erm', 'student_fused'),
    Comparison('MBCD teacher − ERM', 'mbcd', 'erm',
               paper=f'{_paper_diff("hac", "V+F+A", "MBCD", "ERM"):+.2f} (HAC V+F+A, Table 1)'),
    Comparison('EMA teacher − ERM', 'ema', 'erm',
               paper='+4.47 (EPIC F+A, Table 4: EMA only 60.94 vs none 56.47)'),
    Comparison('EMA+AMD teacher − ERM', 'ema_amd', 'erm'),
    Comparison('MBCD teacher − EMA teacher', 'mbcd', 'ema',
               paper='+2.14 (EPIC F+A, Table 4: all 63.08 vs EMA only 60.94)'),
    Comparison('+AMD on EMA', 'ema_amd', 'ema'),
    Comparison('+GCC on EMA', 'ema_gcc', 'ema'),
    Comparison('+DL on EMA', 'ema_dl', 'ema'),
    Comparison('β 0.99 − 0.999 (MBCD teacher)', 'mbcd ema_beta=0.99', 'mbcd'),
    Comparison('λ 0.1 − 1 (MBCD teacher)', 'mbcd lambda=0.1', 'mbcd'),
)


def load(root: str = ROOT) -> list[dict]:
  """Rows of every source, one per (group, world, variant, setting, seed, rule)."""
  rows, origin = {}, {}
  for group, rel in SOURCES:
    path = os.path.join(root, rel)
    if not os.path.exists(path):
      continue
    base = os.path.basename(rel)
    with open(path, newline='') as f:
      for r in csv.DictReader(f):
        world = r.get('world') or (base[1] if base.startswith('w') and base[1].isdigit()
                                   else '0')
        variant = ALIASES.get(r['variant'], r['variant'])
        key = (group, world, variant, r['setting'], r['seed'], r['rule'])
        val = (float(r['fused']), float(r['student_fused']))
        if key in rows and val != rows[key]['values']:
          raise SystemExit(f'{rel}: run {key} has {val}, {origin[key]} has '
                           f'{rows[key]["values"]}')
        rows[key], origin[key] = {'group': group, 'world': world, 'variant': variant,
                                  'setting': r['setting'], 'target': r['target'],
                                  'seed': r['seed'], 'rule': r['rule'], 'values': val,
                                  'fused': val[0], 'student_fused': val[1],
                                  'val': float(r['val']) if r.get('val') else math.nan}, rel
  return list(rows.values())


def diffs(rows, c: Comparison, group: str, rule: str) -> list[tuple]:
  """[(world, setting, seed, a − b)] over the pairs both variants have."""
  def by(variant, col):
    return {(r['world'], r['setting'], r['seed']): r[col] for r in rows
            if r['group'] == group and r['rule'] == rule and r['variant'] == variant}
  a, b = by(c.a, c.a_col), by(c.b, 'fused')
  return [(*k, a[k] - b[k]) for k in sorted(a) if k in b]


def stats(d: list[tuple]) -> dict | None:
  if not d:
    return None
  x = np.array([v[-1] for v in d])
  wins, losses = int((x > 0).sum()), int((x < 0).sum())
  sem = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan
  p = tables.sign_test_p(wins, losses)
  verdict = 'level'
  if p < 0.05:
    verdict = 'ahead' if wins > losses else 'behind'
  return {'mean': float(x.mean()), 'sem': sem, 'n': len(x), 'wins': wins, 'losses': losses,
          'p': p, 'verdict': verdict, 'worlds': len({v[0] for v in d}),
          'seeds': sorted({int(v[2]) for v in d})}


def share_positive(rows, c: Comparison, group: str, rule: str) -> tuple | None:
  """(worlds with a positive mean difference, worlds, Clopper-Pearson 95% interval)."""
  per = {}
  for w, _, _, v in diffs(rows, c, group, rule):
    per.setdefault(w, []).append(v)
  if not per:
    return None
  k, n = sum(np.mean(v) > 0 for v in per.values()), len(per)
  return k, n, clopper_pearson(k, n)


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
  """Exact binomial interval for k successes in n, by bisection on the binomial tails."""
  def cdf(x, p):   # P(X <= x)
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(x + 1))
  def solve(f):
    lo, hi = 0.0, 1.0
    for _ in range(60):
      mid = (lo + hi) / 2
      lo, hi = (mid, hi) if f(mid) else (lo, mid)
    return (lo + hi) / 2
  lower = 0.0 if k == 0 else solve(lambda p: 1 - cdf(k - 1, p) < alpha / 2)
  upper = 1.0 if k == n else solve(lambda p: cdf(k, p) > alpha / 2)
  return lower, upper


def _cell(s: dict | None) -> str:
  if s is None:
    return '–'
  sem = f' ± {s["sem"]:.1f}' if not math.isnan(s['sem']) else ''
  p = 'p < 0.01' if s['p'] < 0.01 else f'p {s["p"]:.2f}'
  return f'{s["mean"]:+.1f}{sem} ({s["wins"]}/{s["n"]}, {p})'


def _seeds(s):
  if s is None:
    return ''
  seeds = s['seeds']
  return f'seed {seeds[0]}' if len(seeds) == 1 else f'seeds {seeds[0]}–{seeds[-1]}'


def table(rows, rule: str) -> list[str]:
  groups = [g for g in GROUPS if any(r['group'] == g for r in rows)]
  head = ['comparison'] + [GROUPS[g] for g in groups] + ['the paper', 'verdict']
  out = ['| ' + ' | '.join(head) + ' |', '|---|' + '---:|' * len(groups) + '---|---|']
  for c in COMPARISONS:
    cells = {g: stats(diffs(rows, c, g, rule)) for g in groups}
    if all(v is None for v in cells.values()):
      continue
    verdicts = [f'{GROUPS[g].split(" (")[0]}: {s["verdict"]}' for g, s in cells.items() if s]
    out.append(f'| {c.label} | ' + ' | '.join(
        f'{_cell(cells[g])}{" <sub>" + _seeds(cells[g]) + "</sub>" if cells[g] else ""}'
        for g in groups) + f' | {c.paper or "–"} | {"; ".join(verdicts)} |')
  return out


def answer(rows) -> str:
  """The one-line answer, from the main comparisons on world 0 and the unseen worlds."""
  parts = []
  for label, rule in (('with the paper\'s model selection (best validation, later epoch on '
                       'ties)', 'best_val'), ('at the last epoch', 'last')):
    t = stats(diffs(rows, COMPARISONS[1], 'w0', rule))
    s = stats(diffs(rows, COMPARISONS[0], 'w0', rule))
    parts.append(f'{label}, MBCD\'s evaluated teacher is {t["verdict"]} with ERM '
                 f'({t["mean"]:+.1f} ± {t["sem"]:.1f} points, {t["wins"]} of {t["n"]} pairs) '
                 f'and its student {s["verdict"]} ({s["mean"]:+.1f} ± {s["sem"]:.1f}, '
                 f'{s["wins"]} of {s["n"]})')
  return ('On the default world at the paper\'s length (2000 steps, 5 seeds × 3 targets), '
          + '; '.join(parts) + '.')


def bullets(rows) -> list[str]:
  out = []
  for rule, name in (('best_val', 'best validation'), ('last', 'last epoch')):
    for c in COMPARISONS[:2]:
      sh = share_positive(rows, c, 'w3-6', rule)
      if sh:
        k, n, (lo, hi) = sh
        out.append(f'- {c.label}, {name}: positive on {k} of {n} unseen worlds '
                   f'(95% interval {100 * lo:.0f}–{100 * hi:.0f}%).')
  sh = [share_positive(rows, c, 'fresh', 'best_val') for c in COMPARISONS[:2]]
  if any(sh):
    for c, s in zip(COMPARISONS[:2], sh):
      if s:
        k, n, (lo, hi) = s
        out.append(f'- Fresh worlds ({c.label}, best validation): positive on {k} of {n} worlds '
                   f'(95% interval {100 * lo:.0f}–{100 * hi:.0f}%; drawn and run by the '
                   '[plan](results/worlds_plan.md), which adds worlds in order while time '
                   'allows).')
  else:
    out.append('- The fresh-worlds study (seeds 100+, drawn by a rule fixed before its runs: '
               '[plan](results/worlds_plan.md)) has no finished world yet.')
  return out


# ---------------------------------------------------------------- the fresh worlds
STATS = 'docs/results/worlds_stats.csv'
PERMUTATIONS = 20000   # Monte Carlo permutations beyond exact enumeration (fixed seed)


def _ranks(v) -> np.ndarray:
  """Average ranks (0-based; ties share their mean rank)."""
  _, inv, counts = np.unique(np.asarray(v, np.float64), return_inverse=True, return_counts=True)
  first = np.cumsum(counts) - counts
  return (first + (counts - 1) / 2)[inv]


def spearman(x, y) -> float:
  """Spearman's rank correlation (average ranks on ties)."""
  rx, ry = _ranks(x), _ranks(y)
  if rx.std() == 0 or ry.std() == 0:
    return math.nan
  return float(np.corrcoef(rx, ry)[0, 1])


def permutation_p(x, y, sign: int) -> float:
  """One-sided p of Spearman's rho in the direction ``sign`` (+1: rho > 0) under random
  pairing: exact over all permutations up to 8 points, else ``PERMUTATIONS`` draws (seeded).
  Permuting y permutes its ranks, so every permutation's rho comes from the same two rank
  vectors at once."""
  rho = spearman(x, y)
  if math.isnan(rho):
    return math.nan
  rx, ry = _ranks(x), _ranks(y)
  n = len(ry)
  if n <= 8:
    import itertools  # pylint: disable=g-import-not-at-top
    perms = np.array(list(itertools.permutations(range(n))))
  else:
    rng = np.random.default_rng(0)
    perms = np.stack([rng.permutation(n) for _ in range(PERMUTATIONS)])
  cx = rx - rx.mean()
  cy = ry[perms] - ry.mean()
  r = cy @ cx / (np.linalg.norm(cy, axis=1) * np.linalg.norm(cx))
  return float(np.mean(sign * r >= sign * rho - 1e-12))


def world_stats(root: str) -> dict:
  path = os.path.join(root, STATS)
  if not os.path.exists(path):
    return {}
  with open(path, newline='') as f:
    return {r['world']: r for r in csv.DictReader(f)}


def deficit(stat: dict) -> float:
  """The dominant modality's transfer deficit: the other modalities' mean cross-domain
  agreement minus the dominant one's (``world_check``)."""
  dom = stat['dominant']
  others = [float(v) for k, v in stat.items()
            if k.startswith('agreement/') and k != f'agreement/{dom}' and v != '']
  return float(np.mean(others)) - float(stat[f'agreement/{dom}'])


def erm_accuracy(rows, group: str, rule: str) -> dict:
  """(world, setting, seed) -> ERM's target accuracy."""
  return {(r['world'], r['setting'], r['seed']): r['fused'] for r in rows
          if r['group'] == group and r['rule'] == rule and r['variant'] == 'erm'}


def _p3(p: float) -> str:
  return 'p < 0.001' if p < 0.001 else f'p {p:.3f}'


def hypotheses(rows, root: str, rule: str) -> dict:
  """The plan's H1-H3 for MBCD student − ERM: {'H1': (rho, p, pairs), 'H2': (rho, p, worlds),
  'H3': (rho, p, worlds)}, each present once it has 3 points. H1/H2 predict rho < 0, H3 rho > 0;
  p is the one-sided permutation p in the predicted direction."""
  st = world_stats(root)
  d = diffs(rows, COMPARISONS[0], 'fresh', rule)
  erm_r = erm_accuracy(rows, 'fresh', rule)
  out = {}
  pairs = [(erm_r[e[:3]], e[-1]) for e in d if e[:3] in erm_r]
  if len(pairs) >= 3:
    x, y = zip(*pairs)
    out['H1'] = (spearman(x, y), permutation_p(x, y, -1), len(pairs))
  wl = sorted({e[0] for e in d}, key=int)
  if len(wl) >= 3:
    g = [np.mean([e[-1] for e in d if e[0] == w]) for w in wl]
    a = [np.mean([v for k, v in erm_r.items() if k[0] == w]) for w in wl]
    out['H2'] = (spearman(a, g), permutation_p(a, g, -1), len(wl))
    ws = [w for w in wl if w in st]
    if len(ws) >= 3:
      gd = [g[wl.index(w)] for w in ws]
      dd = [deficit(st[w]) for w in ws]
      out['H3'] = (spearman(dd, gd), permutation_p(dd, gd, +1), len(ws))
  return out


def fresh_answer(rows, root: str) -> str | None:
  """The worlds study's answer in one paragraph (best-validation rule, the paper's; the
  hypotheses at the plan's primary rule, the last epoch). A hypothesis is *supported* when its
  one-sided p < 0.05, else *not supported*; fixed here, before any number."""
  comps = [c for c in COMPARISONS[:4] if diffs(rows, c, 'fresh', 'best_val')]
  if not comps:
    return None
  st = world_stats(root)
  checked = len(st)
  parts = []
  for c in comps:
    s = stats(diffs(rows, c, 'fresh', 'best_val'))
    k, n, (lo, hi) = share_positive(rows, c, 'fresh', 'best_val')
    parts.append(f'{c.label} is {s["verdict"]} ({s["mean"]:+.1f} ± {s["sem"]:.1f} points per '
                 f'pair, {s["wins"]} wins of {s["n"]} pairs; positive on {k} of {n} worlds, '
                 f'95% interval {100 * lo:.0f}–{100 * hi:.0f}%)')
  worlds = len({e[0] for e in diffs(rows, comps[0], 'fresh', 'best_val')})
  text = (f'On {worlds} fresh worlds drawn by the plan\'s rule ({checked} checked, the ones that '
          'fail the benchmark\'s principle not run), at the paper\'s length and with its model '
          'selection: ' + '; '.join(parts) + '.')
  h = hypotheses(rows, root, 'last')
  if 'H1' in h:
    rho, p, n = h['H1']
    text += (f' The student\'s gain depends on the world: the plan\'s headroom hypothesis (H1, '
             f'its gain falls as ERM\'s own target accuracy rises) is '
             f'{"supported" if p < 0.05 else "not supported"} (ρ = {rho:+.2f}, {_p3(p)}, {n} '
             'pairs, at the plan\'s primary rule, the last epoch)')
    if 'H3' in h:
      rho3, p3, _ = h['H3']
      text += (f'; the premise hypothesis (H3, the gain rises with the dominant modality\'s '
               f'transfer deficit measured before training) is '
               f'{"supported" if p3 < 0.05 else "not supported"} (ρ = {rho3:+.2f}, {_p3(p3)})')
    text += '.'
  return text


def fresh_section(rows, root: str) -> list[str]:
  """The worlds study: per-world table, shares of worlds, and the plan's hypotheses."""
  if not any(r['group'] == 'fresh' for r in rows):
    return []
  st = world_stats(root)
  comps = [c for c in COMPARISONS[:4] if any(r['group'] == 'fresh' and r['variant'] == c.a
                                             for r in rows)]
  out = ['## Fresh worlds (the worlds study)', '',
         'Worlds drawn by the rule in [results/worlds_plan.md](results/worlds_plan.md) (seeds '
         '100 onward, kept iff `world_check` holds, before any training); seed 0, three '
         'targets each; best-validation rule (later on ties). Each cell: the mean over the '
         "world's targets. Deficit: the dominant modality's transfer deficit from "
         '`world_check` (other modalities\' cross-domain agreement minus its own).', '']
  checked = sorted(st, key=int)
  failed = [w for w in checked if st[w]['holds'] != 'True']
  if failed:
    out += [f'Checked and not run (the principle fails): worlds {", ".join(failed)}.', '']
  head = ['world', 'ERM target acc.'] + [c.label for c in comps] + ['deficit']
  out += ['| ' + ' | '.join(head) + ' |', '|---:|' + '---:|' * (len(head) - 1)]
  erm = erm_accuracy(rows, 'fresh', 'best_val')
  worlds = sorted({r['world'] for r in rows if r['group'] == 'fresh'}, key=int)
  for w in worlds:
    accs = [v for k, v in erm.items() if k[0] == w]
    cells = []
    for c in comps:
      d = [e[-1] for e in diffs(rows, c, 'fresh', 'best_val') if e[0] == w]
      cells.append(f'{np.mean(d):+.1f} ({len(d)})' if d else '–')
    dfc = f'{deficit(st[w]):.3f}' if w in st else '–'
    out.append('| ' + ' | '.join([w, f'{np.mean(accs):.1f}', *cells, dfc]) + ' |')
  out += ['', 'Share of worlds whose mean difference is positive (exact 95% interval):', '']
  if not comps:
    out.append('- none yet: no world has an MBCD run')
  for rule, name in (('best_val', 'best validation'), ('last', 'last epoch')):
    for c in comps:
      sh = share_positive(rows, c, 'fresh', rule)
      if sh:
        k, n, (lo, hi) = sh
        out.append(f'- {c.label}, {name}: {k} of {n} ({100 * lo:.0f}–{100 * hi:.0f}%)')
  out += ['', 'The plan\'s hypotheses (Spearman ρ, one-sided permutation p; H1 over (world, '
          'target) pairs, H2–H3 over worlds; MBCD student − ERM):', '']
  for rule, name in (('last', 'last epoch'), ('best_val', 'best validation')):
    h = hypotheses(rows, root, rule)
    res = ([f'H1 ρ = {h["H1"][0]:+.2f} ({_p3(h["H1"][1])}, {h["H1"][2]} pairs)']
           if 'H1' in h else [])
    res += [f'{k} ρ = {h[k][0]:+.2f} ({_p3(h[k][1])})' for k in ('H2', 'H3') if k in h]
    out.append(f'- {name}: ' + ('; '.join(res) if res else 'too few worlds yet'))
  out += ['', f'![per-world differences](results/{os.path.basename(WORLDS_FIGURE)})', '',
          'Left: each fresh world\'s mean difference over its targets, worlds ordered by ERM\'s '
          'target accuracy; right: every (world, target) pair against ERM\'s accuracy on that '
          'target (H1). Best-validation rule.', '']
  return out + explore(rows, root) + ['']


def _stat(st: dict, name: str, reduce, dominant_only: bool = False) -> float:
  mods = [st['dominant']] if dominant_only else [k.split('/')[1] for k in st
                                                  if k.startswith(f'{name}/')]
  v = [float(st[f'{name}/{m}']) for m in mods if st.get(f'{name}/{m}', '') != '']
  return reduce(v) if v else math.nan


# The worlds' own statistics beside the gain (exploratory, no claim): (label, f(the world's
# worlds_stats.csv row, its ERM rows)).
EXPLORE = (
    ("ERM source val.", lambda st, erm: float(np.mean([r['val'] for r in erm]))),
    ('dominant separability', lambda st, erm: _stat(st, 'separability', np.mean, True)),
    ('dominant agreement', lambda st, erm: _stat(st, 'agreement', np.mean, True)),
    ('deficit', lambda st, erm: deficit(st)),
    ('smallest span margin', lambda st, erm: _stat(st, 'span_margin', min)),
    ('largest shift', lambda st, erm: _stat(st, 'shift', max)),
)


def explore(rows, root: str) -> list[str]:
  """The worlds' statistics (``world_check``'s and ERM's source validation) with each one's
  Spearman ρ against the world's mean student − ERM difference; exploratory, as the plan says."""
  st = world_stats(root)
  d = diffs(rows, COMPARISONS[0], 'fresh', 'best_val')
  worlds = [w for w in sorted({e[0] for e in d}, key=int) if w in st]
  if len(worlds) < 3:
    return []
  gain = [float(np.mean([e[-1] for e in d if e[0] == w])) for w in worlds]
  erm = {w: [r for r in rows if r['group'] == 'fresh' and r['rule'] == 'best_val'
             and r['variant'] == 'erm' and r['world'] == w] for w in worlds}
  table = {label: [f(st[w], erm[w]) for w in worlds] for label, f in EXPLORE}
  head = ['world', 'MBCD student − ERM'] + [label for label, _ in EXPLORE]
  out = ['### The worlds\' own statistics (exploratory)', '',
         'Per world: ERM\'s source validation accuracy (best-validation epoch, mean over '
         'targets) and `world_check`\'s statistics of the data (the dominant modality\'s '
         'within-domain separability and cross-domain agreement, its deficit, the smallest style '
         'span margin and the largest shift over modalities). Last row: Spearman ρ with the '
         'student\'s gain over these worlds — exploratory, no claim (the plan\'s hypotheses are '
         'above).', '',
         '| ' + ' | '.join(head) + ' |', '|---:|' + '---:|' * (len(head) - 1)]
  for i, w in enumerate(worlds):
    out.append(f'| {w} | {gain[i]:+.1f} | '
               + ' | '.join(f'{table[label][i]:.3f}' if label != 'ERM source val.'
                            else f'{table[label][i]:.1f}' for label, _ in EXPLORE) + ' |')
  # No rho for a statistic that is constant or missing on some world.
  rhos = [math.nan if np.isnan(v).any() else spearman(v, gain) for v in table.values()]
  out.append('| ρ | | ' + ' | '.join('–' if math.isnan(r) else f'{r:+.2f}' for r in rhos) + ' |')
  return out + ['']


def reliability_section(root: str) -> list[str]:
  """The MMDG benchmark's four suites on world 0 (the suites study's end-of-training tables),
  one row per method; empty where the study has no tables."""
  d = os.path.join(root, suites_table.STUDY_DIR)
  if not suites_table.has_tables(d):
    return []
  suites = suites_table.read(d)
  runs = suites_table.per_run(suites)
  short = [m for m in suites_table.STUDY_METHODS if 0 < len({k for k in runs if k[0] == m}) < 9]
  return ['## Reliability (the MMDG benchmark\'s four suites)', '',
          'World 0, the paper\'s length, three targets × seeds 0–2, each method\'s evaluated model '
          '(MBCD: its EMA teacher) at the end of training: misclassification detection (AURC of '
          'the max softmax, ×1000, lower is better), OOD detection (AUROC on classes no world '
          'uses), one modality zeroed at the fused head (accuracy and its drop from the clean '
          'one), and the corruptions\' mean accuracy. Each cell: mean ± std over runs; beside a '
          'method, its mean paired difference from ERM, wins / pairs and the sign-test p. '
          + (f'Interim for {", ".join(short)} (fewer than the plan\'s 9 runs). ' if short else '')
          + 'The plan, its hypotheses and the best-validation checkpoint: '
          '[study/suites/README.md](study/suites/README.md); the suites: '
          '[reliability.md](reliability.md).', '',
          *suites_table.table(suites, 'erm', None, list(suites_table.STUDY_METHODS)), '',
          *every_method_section(d)]


def every_method_section(study_dir: str) -> list[str]:
  """Every method with suite tables at seed 0 (the plan's addendum), one row each with its
  run count; empty where that folder has no tables."""
  d = os.path.join(study_dir, suites_table.EVERY_METHOD_DIR)
  if not suites_table.has_tables(d):
    return []
  seeds = suites_table.EVERY_METHOD_SEEDS
  rows = suites_table.table(suites_table.read(d), 'erm', seeds, None)
  return ['Every method, seed ' + ', '.join(map(str, sorted(seeds))) + ' only (an addition to '
          'the plan; one seed describes, it does not test): the same world, length and suites, '
          '`runs` = targets with a finished run.', '', *rows, '']


def page(rows, root: str = ROOT) -> str:
  reliability = reliability_section(root)
  lines = [
      '# Results on the embedded benchmark', '',
      '<!-- Generated by `python -m mbcd_jax.study.results_page` from the committed CSVs; do not edit. '
      '-->', '',
      f'**Answer.** {answer(rows)}', '',
      *([f'**Across fresh worlds.** {fa} Details: [fresh worlds](#fresh-worlds-the-worlds-study).',
         ''] if (fa := fresh_answer(rows, root)) else []),
      'Each cell: mean paired difference in top-1 accuracy (points) ± its standard error '
      '(wins / pairs, two-sided sign-test p); pairs share world, target and training seed. '
      'Verdict: *ahead* / *behind* where the sign test gives p < 0.05, else *level*. The '
      'teacher is the model MBCD evaluates (the EMA of the student); the student is the network '
      'trained by gradient. The paper\'s column is its own difference of averages on the real '
      'data (`mbcd_jax/study/paper_numbers.py`, docs/method.md); it is there for direction, not '
      'for size.', '',
      '## Model selected by best source validation (the authors\' rule: the later epoch on ties)',
      '', *table(rows, 'best_val'), '',
      '## Last-epoch model', '', *table(rows, 'last'), '',
      *fresh_section(rows, root),
      *reliability,
      '## In short', '', *bullets(rows),
      '- Until the tie rule was adopted the best-validation rule kept the *first* of equal '
      'validation accuracies; the committed tables were re-selected from their runs '
      '([record](study/reselection.md)), which removed most of the best-validation advantage '
      'earlier pages reported for MBCD.', '',
      f'![paired differences per target](results/{os.path.basename(FIGURE)})', '',
      'The figure: every (world, target, seed) pair of the first four comparisons, world 0 and '
      'the unseen worlds side by side; bars are mean ± standard error.', '',
      '## Where the numbers come from', '',
      *[f'- {GROUPS[g]}: ' + ', '.join(f'`{s}`' for gg, s in SOURCES if gg == g)
        for g in GROUPS],
      *([f'- reliability: `{suites_table.STUDY_DIR}/{{misd,ood,missing,corruption}}.csv`'
         + (f' and `{suites_table.STUDY_DIR}/{suites_table.EVERY_METHOD_DIR}/`'
            if suites_table.has_tables(os.path.join(root, suites_table.STUDY_DIR,
                                                    suites_table.EVERY_METHOD_DIR)) else '')]
        if reliability else []),
      '- How the benchmark is built and why: [benchmark.md](benchmark.md); the study behind '
      'these runs, by question: [study/paper_regime/README.md](study/paper_regime/README.md); '
      'every earlier study: [study/README.md](study/README.md).', '']
  return '\n'.join(lines)


def figure(rows, path: str):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  groups = [g for g in ('w0', 'w3-6', 'fresh') if any(r['group'] == g for r in rows)]
  colours = {'w0': 'tab:blue', 'w3-6': 'tab:orange', 'fresh': 'tab:green'}
  for ax, (rule, title) in zip(axes, (('best_val', 'best validation (later on ties)'),
                                      ('last', 'last epoch'))):
    for i, c in enumerate(COMPARISONS[:4]):
      for j, g in enumerate(groups):
        d = diffs(rows, c, g, rule)
        if not d:
          continue
        x0 = i + (j - (len(groups) - 1) / 2) * 0.25
        v = np.array([e[-1] for e in d])
        jitter = np.linspace(-0.06, 0.06, len(v)) if len(v) > 1 else np.zeros(1)
        ax.scatter(x0 + jitter, v, s=10, alpha=0.5, color=colours[g],
                   label=GROUPS[g] if i == 0 else None)
        s = stats(d)
        ax.errorbar([x0 + 0.1], [s['mean']], yerr=[0 if math.isnan(s['sem']) else s['sem']],
                    fmt='o', color='black', ms=4, capsize=3)
    ax.axhline(0, color='grey', lw=0.8)
    ax.set_xticks(range(4), [c.label.replace(' − ', '\n− ') for c in COMPARISONS[:4]],
                  fontsize=8)
    ax.set_title(title, fontsize=10)
  axes[0].set_ylabel('paired difference (points)')
  axes[0].legend(fontsize=8, loc='lower left')
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def worlds_figure(rows, root: str, path: str):
  """Per-world mean differences (left) and every (world, target) pair against ERM's target
  accuracy (right, H1); best-validation rule."""
  comps = [c for c in COMPARISONS[:4] if diffs(rows, c, 'fresh', 'best_val')]
  if not comps:
    return
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  erm = erm_accuracy(rows, 'fresh', 'best_val')
  worlds = sorted({e[0] for e in diffs(rows, comps[0], 'fresh', 'best_val')},
                  key=lambda w: (np.mean([v for k, v in erm.items() if k[0] == w]), w))
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={'width_ratios': [3, 2]})
  colours = ('tab:red', 'tab:blue', 'tab:grey', 'tab:purple')
  for i, (c, col) in enumerate(zip(comps, colours)):
    # Sorted: the pairs' order decides how translucent points overlap, so the file is the
    # same from every process (the rows arrive in hash order).
    d = sorted(diffs(rows, c, 'fresh', 'best_val'))
    xs, ys = [], []
    for j, w in enumerate(worlds):
      v = [e[-1] for e in d if e[0] == w]
      if v:
        xs.append(j + (i - (len(comps) - 1) / 2) * 0.18)
        ys.append(np.mean(v))
    left.bar(xs, ys, width=0.18, color=col, label=c.label)
    if i < 2:
      right.scatter([erm[e[:3]] for e in d if e[:3] in erm],
                    [e[-1] for e in d if e[:3] in erm], s=14, alpha=0.7, color=col,
                    label=c.label)
  left.axhline(0, color='black', lw=0.8)
  left.set_xticks(range(len(worlds)),
                  [f'{w}\n{np.mean([v for k, v in erm.items() if k[0] == w]):.0f}'
                   for w in worlds], fontsize=7)
  left.set_xlabel("world (ERM's mean target accuracy)", fontsize=8)
  left.set_ylabel('mean difference over targets (points)')
  left.legend(fontsize=7)
  right.axhline(0, color='black', lw=0.8)
  right.set_xlabel("ERM's target accuracy (%)", fontsize=8)
  right.set_ylabel('difference (points)')
  h = hypotheses(rows, root, 'best_val')
  if 'H1' in h:
    right.set_title(f'H1: student − ERM, Spearman ρ = {h["H1"][0]:+.2f}', fontsize=9)
  right.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--check', action='store_true', help='exit 1 if the page is out of date')
  p.add_argument('--root', default=ROOT)
  a = p.parse_args(argv)
  rows = load(a.root)
  text = page(rows, a.root)
  path = os.path.join(a.root, PAGE)
  if a.check:
    old = open(path).read() if os.path.exists(path) else ''
    if old != text:
      print(f'{path} is out of date: python -m mbcd_jax.study.results_page')
      sys.exit(1)
    print(f'{path} is up to date')
    return
  with open(path, 'w') as f:
    f.write(text)
  figure(rows, os.path.join(a.root, FIGURE))
  worlds_figure(rows, a.root, os.path.join(a.root, WORLDS_FIGURE))
  print(f'wrote {path}, {os.path.join(a.root, FIGURE)} and {os.path.join(a.root, WORLDS_FIGURE)}')


if __name__ == '__main__':
  main()
