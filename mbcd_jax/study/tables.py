"""Result tables shaped like the paper's Tables 1-2 from the runner's run directories.

Every finished run directory holds ``run.json`` (what the runner asked for: variant label,
modalities, sources, target, seed) and ``summary.json`` (``train.train_and_evaluate``'s
result). ``collect`` turns them into long rows, one per run and model-selection rule:

  rule 'best_val'  the epoch with the best in-domain validation accuracy, the later epoch on
                   ties (the paper's rule, ``train.select_best``)
  rule 'last'      the last epoch (the port's rule)

``pivot`` makes the paper's layout: one row per (modalities, variant), one column per target
(``A,C→H``, in the runner's protocol order) and an ``Avg`` column, each cell ``mean ± std`` over seeds, where

  cell mean / std    over the seeds of that (row, target), std with ddof=1 (0 for one seed);
  Avg mean           the mean of the per-target means ('–' until every target has a run);
  Avg std            the std over seeds of each seed's average over the targets, using only
                     the seeds that finished every target (so it is the spread of the number a
                     single 3-target study would report).

``with_paper`` puts the paper's own row (``mbcd_jax/study/paper_numbers.py``) under each of ours that
the paper has (same method, modality set and protocol), labelled ``<method> (paper)``.
"""
import csv
import json
import math
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from mbcd_jax import provenance
from mbcd_jax.study import paper_numbers

RULES = ('best_val', 'last')
RULE_TITLES = {'best_val': 'model selected by best source-domain validation accuracy (the '
                           'later epoch on ties)',
               'last': 'last-epoch model'}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """(mean, sample std with ddof=1); the std of a single value is 0."""
  v = np.asarray(list(values), np.float64)
  if v.size == 0:
    return math.nan, math.nan
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def domain_abbrev(name: str) -> str:
  """'human' -> 'H'; 'D1' -> 'D1' (names with digits are kept)."""
  return name if any(c.isdigit() for c in name) else name[:1].upper()


def setting_label(sources: Iterable[str], target: str) -> str:
  """('animal', 'cartoon'), 'human' -> 'A,C→H'."""
  return ','.join(domain_abbrev(s) for s in sources) + '→' + domain_abbrev(target)


def modality_label(mods: Iterable[str]) -> str:
  """('video', 'flow', 'audio') -> 'V+F+A'."""
  return '+'.join(m[:1].upper() for m in mods)


# ---------------------------------------------------------------------------- collection
def run_rows(meta: Mapping, summary: Mapping) -> list[dict]:
  """One finished run -> one long row per selection rule.

  Row fields: variant, modalities, setting, target, seed, rule, epoch (the selected one),
  epochs (the run's length, the resolved recipe's), val (the evaluated
  model's fused source-validation accuracy), fused and each modality (its test accuracies),
  student_fused (the student's fused test accuracy, also for EMA methods), pretrained (the
  pretrained encoder files' weight digests, ``video:<digest>;...``; empty for runs without or
  made before runs recorded them), machine (``<cpu>/<isa>/jax <version>``, what float rounding
  depends on; empty for runs made before runs recorded it).
  """
  who = summary['evaluated']
  mods = summary['modalities']
  rows = []
  for rule in RULES:
    sel = summary[rule]
    row = dict(variant=meta['variant'], modalities=modality_label(mods),
               setting=setting_label(summary['sources'], summary['target']),
               target=summary['target'], seed=int(meta['seed']), rule=rule,
               epoch=sel['epoch'], epochs=summary.get('epochs'), val=sel['val'][f'{who}/fused'],
               fused=sel['test'][f'{who}/fused'],
               student_fused=sel['test'].get('student/fused', math.nan),
               pretrained=';'.join(f'{m}:{d}' for m, d in
                                   sorted(summary.get('pretrained', {}).items())),
               machine=machine_label(summary.get('environment')))
    for m in mods:
      row[m] = sel['test'][f'{who}/{m}']
    rows.append(row)
  return rows


def machine_label(env: Mapping | None) -> str:
  """``summary['environment']`` -> 'AMD EPYC/avx2/jax 0.10.2' ('' when not recorded), the ISA as
  'avx512f<=AVX2' when ``XLA_FLAGS`` capped what XLA may use."""
  if not env:
    return ''
  isa = env['cpu']['isa'] or '?'
  cap = provenance.xla_isa_cap(env.get('xla_flags', ''))
  if cap:
    isa = f'{isa}<={cap}'
  return f'{env["cpu"]["model"]}/{isa}/jax {env["libraries"]["jax"]}'


def collect(workdir: str, runs=None) -> list[dict]:
  """Long rows of finished runs (a run is finished when its ``summary.json`` exists).

  Args:
    workdir: searched for run directories (``run.json`` + ``summary.json``) when ``runs`` is
      None.
    runs: optional planned runs (objects with ``run_dir`` and ``meta``, as
      ``experiments.plan`` returns): only these, labelled by the plan's meta (one run can
      appear in several tables under different labels).
  """
  if runs is None:
    found = []
    for root, _, files in sorted(os.walk(workdir)):
      if 'summary.json' in files and 'run.json' in files:
        with open(os.path.join(root, 'run.json')) as f:
          found.append((root, json.load(f)))
  else:
    found = [(r.run_dir, dict(r.meta)) for r in runs]
  rows = []
  for run_dir, meta in found:
    path = os.path.join(run_dir, 'summary.json')
    if not os.path.exists(path):
      continue
    with open(path) as f:
      summary = json.load(f)
    for r in run_rows(meta, summary):
      r['order'] = meta.get('order', 0)
      r['setting_order'] = meta.get('setting_order', 0)
      rows.append(r)
  return rows


# ---------------------------------------------------------------------------- aggregation
def _ordered(values: Iterable) -> list:
  out = []
  for v in values:
    if v not in out:
      out.append(v)
  return out


def pivot(rows: Sequence[Mapping], rule: str, value: str = 'fused') -> dict:
  """The paper's layout for one rule.

  Returns:
    {'columns': [setting labels..., 'Avg'], 'rows': [{'modalities', 'variant',
     'cells': {column: (mean, std, n)}}]} with rows in first-appearance order.
  """
  rows = [r for r in rows if r['rule'] == rule]
  rows = sorted(rows, key=lambda r: r.get('order', 0))
  settings = _ordered(r['setting'] for r in sorted(rows, key=lambda r: r.get('setting_order', 0)))
  keys = _ordered((r['modalities'], r['variant']) for r in rows)
  out = []
  for mods, variant in keys:
    mine = [r for r in rows if (r['modalities'], r['variant']) == (mods, variant)]
    cells, by_seed, means = {}, {}, []
    for s in settings:
      vals = [r[value] for r in mine if r['setting'] == s and value in r]
      if not vals:
        continue
      m, sd = mean_std(vals)
      cells[s] = (m, sd, len(vals))
      means.append(m)
      for r in mine:
        if r['setting'] == s and value in r:
          by_seed.setdefault(r['seed'], {})[s] = r[value]
    present = [s for s in settings if s in cells]
    complete = [np.mean([v[s] for s in present]) for v in by_seed.values()
                if all(s in v for s in present)]
    if means and len(present) == len(settings):   # no Avg over a subset of the targets
      _, sd = mean_std(complete) if complete else (math.nan, math.nan)
      cells['Avg'] = (float(np.mean(means)), sd, len(complete))
    out.append({'modalities': mods, 'variant': variant, 'cells': cells})
  return {'columns': settings + ['Avg'], 'rows': out}


def modality_table(rows: Sequence[Mapping], rule: str, modalities: Sequence[str]) -> dict:
  """Per-head accuracies averaged over targets: rows (modalities, variant), columns fused,
  each modality, and the student's fused accuracy; cells as ``pivot``'s Avg column."""
  columns = ['fused'] + list(modalities) + ['student_fused']
  result = {'columns': columns, 'rows': []}
  first = None
  for col in columns:
    p = pivot(rows, rule, value=col)
    if first is None:
      first = p
      result['rows'] = [{'modalities': r['modalities'], 'variant': r['variant'], 'cells': {}}
                        for r in p['rows']]
    for dst, src in zip(result['rows'], p['rows']):
      if 'Avg' in src['cells']:
        dst['cells'][col] = src['cells']['Avg']
  return result


def sign_test_p(wins: int, losses: int) -> float:
  """Two-sided exact sign test: P(a split at least this uneven | no effect), ties dropped."""
  n = wins + losses
  if n == 0:
    return 1.0
  k = min(wins, losses)
  tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
  return min(1.0, 2 * tail)


def paired(rows: Sequence[Mapping], rule: str, variant: str, baseline: str,
           value: str = 'fused', modalities: str | None = None) -> dict | None:
  """``variant`` minus ``baseline`` over the (setting, seed) pairs both finished.

  Seed-to-seed spread on a small target domain is larger than most method effects, but runs
  with the same seed and target share the data order and initialisation, so the paired
  difference is the sharper comparison.

  Returns:
    {'mean', 'std' (ddof=1), 'sem' (std / sqrt(n)), 'n', 'wins', 'losses', 'ties',
     'p_sign' (two-sided sign test)}, or None when no pair exists.
  """
  def by_key(v):
    return {(r['setting'], r['seed']): r[value] for r in rows
            if r['rule'] == rule and r['variant'] == v and value in r
            and (modalities is None or r['modalities'] == modalities)}
  a, b = by_key(variant), by_key(baseline)
  d = np.asarray([a[k] - b[k] for k in a if k in b], np.float64)
  if d.size == 0:
    return None
  m, sd = mean_std(d)
  wins, losses = int((d > 0).sum()), int((d < 0).sum())
  return dict(mean=m, std=sd, sem=sd / math.sqrt(d.size), n=int(d.size), wins=wins,
              losses=losses, ties=int(d.size - wins - losses),
              p_sign=sign_test_p(wins, losses))


def paired_markdown(rows: Sequence[Mapping], rule: str, baseline: str | None = None,
                    value: str = 'fused') -> str:
  """Every row minus a baseline row, paired by (target, seed).

  Baselines: ``baseline`` if given, else each modality group's first row and, when the group
  has one, the ``ema`` row (the paper builds every component on top of EMA, Table 4).
  """
  rows_r = sorted((r for r in rows if r['rule'] == rule), key=lambda r: r.get('order', 0))
  lines = [f'**Paired difference in {value} accuracy vs the baseline row, same target and '
           f'seed ({rule})**', '',
           '| Modalities | Method | baseline | mean Δ ± s.e. | wins / losses / ties | '
           'sign-test p |', '|---|---|---|---:|---:|---:|']
  for mods in _ordered(r['modalities'] for r in rows_r):
    variants = _ordered(r['variant'] for r in rows_r if r['modalities'] == mods)
    bases = ([baseline] if baseline in variants else
             _ordered([variants[0]] + [v for v in variants if v == 'ema']))
    for base, v in ((b, v) for b in bases for v in variants[variants.index(b) + 1:]):
      st = paired(rows_r, rule, v, base, value, mods)
      if st is None:
        continue
      lines.append(f'| {mods} | {v} | {base} | {st["mean"]:+.1f} ± {st["sem"]:.1f} | '
                   f'{st["wins"]} / {st["losses"]} / {st["ties"]} | {st["p_sign"]:.3f} |')
  return '\n'.join(lines) + '\n'


def with_paper(table: dict, protocol: str, dataset: str) -> dict:
  """``table`` (a ``pivot``) with the paper's row after each of ours the paper has.

  A paper row's cells are ``(mean, std, 3)`` for the columns the table has (the paper's three
  seeds) and its printed average in 'Avg' (over all its targets, std nan: not printed). Rows
  whose targets are not the table's (another protocol) are left out.
  """
  rows = []
  for r in table['rows']:
    rows.append(r)
    paper = paper_numbers.lookup(protocol, dataset, r['modalities'], r['variant'])
    # A row of the paper's table only where it has one of our targets (its protocol's).
    if paper is None or not any(c in paper for c in table['columns'] if c != 'Avg'):
      continue
    cells = {c: (*paper[c], 3) for c in table['columns'] if c in paper}
    rows.append({'modalities': r['modalities'], 'variant': f'{r["variant"]} (paper)',
                 'cells': cells, 'digits': 2})
  return {'columns': table['columns'], 'rows': rows}


def target_set_note(dataset: str, test_split_only: bool) -> str:
  """One header line: which data of the target domain each row is tested on.

  Ours follow the config (``config_lib.target_test_split_only``); the paper's rows follow
  their code where it is known (``paper_numbers.HAC_TEST_SET``)."""
  ours = "the target domain's test split" if test_split_only else 'the whole target domain'
  if dataset != 'hac':
    return f'Test set: {ours} (every method; on {dataset} the protocol fixes it).'
  theirs = '; '.join(f'{m}: {rule}' for m, rule in paper_numbers.HAC_TEST_SET.items())
  return (f'HAC test set. Our rows: {ours}, for every method (config.data.hac_test_split_only). '
          f'The paper\'s rows, per method: {theirs}.')


# ---------------------------------------------------------------------------- formatting
def fmt_cell(cell, digits: int = 1) -> str:
  if cell is None:
    return '–'
  m, sd, _ = cell
  if math.isnan(m):
    return '–'
  return f'{m:.{digits}f} ± {sd:.{digits}f}' if not math.isnan(sd) else f'{m:.{digits}f}'


def to_markdown(table: dict, title: str = '', digits: int = 1) -> str:
  """A pivot table as a markdown table (rows grouped by modalities)."""
  cols = table['columns']
  lines = [f'**{title}**', ''] if title else []
  lines.append('| Modalities | Method | ' + ' | '.join(cols) + ' |')
  lines.append('|---|---|' + '---:|' * len(cols))
  for r in table['rows']:
    cells = [fmt_cell(r['cells'].get(c), r.get('digits', digits)) for c in cols]
    lines.append(f'| {r["modalities"]} | {r["variant"]} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def to_csv_rows(table: dict, rule: str) -> list[dict]:
  """A pivot table flattened for CSV: one row per (modalities, variant), mean/std/n columns."""
  out = []
  for r in table['rows']:
    row = {'rule': rule, 'modalities': r['modalities'], 'variant': r['variant']}
    for c in table['columns']:
      cell = r['cells'].get(c, (math.nan, math.nan, 0))
      row[f'{c} mean'], row[f'{c} std'], row[f'{c} n'] = cell
    out.append(row)
  return out


def _write_csv(path: str, rows: Sequence[Mapping]):
  fields = _ordered(k for r in rows for k in r)
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)


def render(rows: Sequence[Mapping], title: str = 'Results', *, header: Sequence[str] = (),
           paper: tuple[str, str] | None = None) -> tuple[str, list[dict]]:
  """The markdown page and the pivot CSV rows of long ``rows`` (``collect``'s, or a
  ``<name>_runs.csv`` read back by ``read_runs_csv``); see ``write_tables``."""
  mods = _ordered(m for r in rows for m in ('video', 'flow', 'audio') if m in r)
  md = [f'# {title}', '',
        'Top-1 accuracy (%) on the unseen target domain of the evaluated model (the EMA teacher '
        'for EMA methods), mean ± std over seeds (n per cell in results.csv). '
        'Avg: mean of the per-target means ± std over seeds of the per-seed average.', '']
  md += [f'{line}\n' for line in header]
  csv_rows = []
  for rule in RULES:
    t = pivot(rows, rule)
    if paper is not None and rule == 'best_val':
      t = with_paper(t, *paper)
    md.append(to_markdown(t, f'Fused accuracy, {RULE_TITLES[rule]}'))
    csv_rows += to_csv_rows(t, rule)
    mt = modality_table(rows, rule, mods)
    md.append(to_markdown(mt, f'Per-head test accuracy averaged over targets ({rule}); '
                              'uni-modal heads of the evaluated model; student_fused = '
                              'the student\'s fused head'))
    csv_rows += [{**r, 'table': 'per_head'} for r in to_csv_rows(mt, rule)]
    md.append(paired_markdown(rows, rule))
  return '\n'.join(md), csv_rows


def write_tables(workdir: str, out_dir: str | None = None, title: str = 'Results', *,
                 runs=None, name: str = 'results', header: Sequence[str] = (),
                 paper: tuple[str, str] | None = None) -> dict:
  """Writes ``<name>.md``, ``<name>.csv`` (the pivot tables, both rules) and
  ``<name>_runs.csv`` (every run's long rows) into ``out_dir`` (default ``workdir``), from the
  runs ``collect(workdir, runs)`` finds. ``header``: lines under the title (how the runs were
  made); ``paper``: ``(protocol, dataset)`` to show the paper's rows in the fused-accuracy
  tables of the 'best_val' rule (the paper's). Returns the file paths."""
  out_dir = out_dir or workdir
  os.makedirs(out_dir, exist_ok=True)
  rows = collect(workdir, runs)
  paths = {'markdown': os.path.join(out_dir, f'{name}.md'),
           'csv': os.path.join(out_dir, f'{name}.csv'),
           'runs_csv': os.path.join(out_dir, f'{name}_runs.csv')}
  if not rows:
    with open(paths['markdown'], 'w') as f:
      f.write(f'# {title}\n\nNo finished runs under {workdir}.\n')
    return paths
  md, csv_rows = render(rows, title, header=header, paper=paper)
  with open(paths['markdown'], 'w') as f:
    f.write(md)
  _write_csv(paths['csv'], csv_rows)
  _write_csv(paths['runs_csv'], [{k: v for k, v in r.items() if 'order' not in k} for r in rows])
  return paths


# ---------------------------------------------------------------------------- re-selection
# Columns of a runs.csv that hold numbers (the rest are labels).
_INT_COLUMNS = ('seed', 'epoch', 'epochs')
_FLOAT_COLUMNS = ('val', 'fused', 'student_fused', 'video', 'flow', 'audio')
# ``selection`` column of re-selected best_val rows.
SELECTION_KNOWN = 'later_on_ties'
SELECTION_UNVERIFIED = 'unverified'


def read_runs_csv(path: str) -> list[dict]:
  """A ``<name>_runs.csv`` back as long rows (numbers parsed; empty cells dropped)."""
  rows = []
  with open(path, newline='') as f:
    for r in csv.DictReader(f):
      row = {}
      for k, v in r.items():
        if v == '' or v is None:
          continue
        row[k] = int(v) if k in _INT_COLUMNS else float(v) if k in _FLOAT_COLUMNS else v
      rows.append(row)
  return rows


def reselect_ties(rows: Sequence[Mapping]) -> list[dict]:
  """Best-validation rows re-selected by the later-epoch-on-ties rule, from a run's two rows.

  Runs made before ``train.select_best`` kept the *first* epoch among equal validation
  accuracies. A runs.csv keeps only the selected and the last epoch of a run, not its
  history, so the later-on-ties choice is known exactly in two cases: the last epoch's
  validation equals the best (then the rule selects the last epoch: its row becomes the
  best_val row), or the best already is the last epoch. Otherwise a tie between the first best
  epoch and an unkept later epoch cannot be ruled out: the row stays and is marked.

  Returns:
    a copy of ``rows``; every best_val row gets ``selection``: ``SELECTION_KNOWN`` or
    ``SELECTION_UNVERIFIED``, and ``reselected_from`` (the old epoch) where it changed.
  Raises:
    ValueError: a run without exactly one row per rule (naming it).
  """
  label = ('variant', 'modalities', 'setting', 'seed')
  runs: dict[tuple, dict] = {}
  for i, r in enumerate(rows):
    runs.setdefault(tuple(r[k] for k in label), {}).setdefault(r['rule'], []).append(i)
  out = [dict(r) for r in rows]
  for key, by_rule in runs.items():
    if sorted(by_rule) != sorted(RULES) or any(len(v) != 1 for v in by_rule.values()):
      raise ValueError(f'run {dict(zip(label, key))}: expected one row per rule {RULES}, '
                       f'got {({k: len(v) for k, v in by_rule.items()})}')
    b, l = by_rule['best_val'][0], by_rule['last'][0]
    best, last = out[b], out[l]
    if last['val'] == best['val'] and last['epoch'] != best['epoch']:
      out[b] = {**last, 'rule': 'best_val', 'selection': SELECTION_KNOWN,
                'reselected_from': best['epoch']}
    elif 'reselected_from' in best:   # re-selected before: the rows already say so
      pass
    else:
      known = last['epoch'] == best['epoch']
      best['selection'] = SELECTION_KNOWN if known else SELECTION_UNVERIFIED
  return out
