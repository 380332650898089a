"""Re-selects every committed study table's best-validation rows by the authors' tie rule.

  python -m docs.study.reselect [--check] [--report=docs/study/reselection.md]

Until ``train.select_best`` (the later epoch on ties, the ``>=`` of every author's script), runs
kept the *first* epoch among equal validation accuracies. The run directories are gone; each
table's ``<name>_runs.csv`` keeps, per run, its best-validation and its last epoch
(``mbcd_jax.study.tables.reselect_ties`` says what that can and cannot decide). For every
``*_runs.csv`` under docs/study/ this:
  1. re-renders the table from the file as it is and compares it with the committed
     ``<name>.md`` / ``<name>.csv`` (so the re-rendering itself is shown to change nothing),
  2. re-selects the best_val rows, adds the ``selection`` / ``reselected_from`` columns, and
     rewrites ``<name>_runs.csv``, ``<name>.csv`` and the tables of ``<name>.md`` (the lines
     above its first table are kept),
  3. writes a report: per table, runs, best_val rows changed, rows left unverified, and each
     row's best-validation Avg before -> after.
Idempotent: a second run changes nothing (and keeps the report of the first). ``--check`` writes nothing and exits 1 if a file
would change.
"""
import argparse
import csv
import glob
import math
import os
import sys

from mbcd_jax.study import tables

OLD_TITLE = 'model selected by best source-domain validation accuracy'
FIRST_TABLE = '**Fused accuracy, '


def _orders(pivot_csv: str, rows):
  """(modalities, variant) -> order and setting -> order from the committed pivot CSV (the
  runs.csv drops them); first appearance in ``rows`` where the CSV does not say."""
  keys, settings = [], []
  if os.path.exists(pivot_csv):
    with open(pivot_csv, newline='') as f:
      reader = csv.DictReader(f)
      settings = [c[:-5] for c in reader.fieldnames if c.endswith(' mean')
                  and c[:-5] not in ('Avg', 'fused', 'video', 'flow', 'audio', 'student_fused')]
      for r in reader:
        k = (r['modalities'], r['variant'])
        if k not in keys and not r.get('table'):
          keys.append(k)
  for r in rows:
    if (r['modalities'], r['variant']) not in keys:
      keys.append((r['modalities'], r['variant']))
    if r['setting'] not in settings:
      settings.append(r['setting'])
  return {k: i for i, k in enumerate(keys)}, {s: i for i, s in enumerate(settings)}


def _with_order(rows, pivot_csv):
  korder, sorder = _orders(pivot_csv, rows)
  return [dict(r, order=korder[(r['modalities'], r['variant'])],
               setting_order=sorder[r['setting']]) for r in rows]


def _body(md: str) -> tuple[str, str]:
  i = md.find(FIRST_TABLE)
  return (md, '') if i < 0 else (md[:i], md[i:])


def _drop_paired(md: str) -> str:
  """``md`` without its paired-difference sections (pages written before they existed)."""
  out = [b for b in md.strip().split('\n\n**') if not b.startswith('Paired difference')]
  return '\n\n**'.join(out).strip()


def _avg(pivot_rows, rule='best_val'):
  return {(r['modalities'], r['variant']): r['cells'].get('Avg', (math.nan,) * 3)[0]
          for r in tables.pivot(pivot_rows, rule)['rows']}


def _csv_numbers(path):
  with open(path, newline='') as f:
    return [[c for c in r] for r in csv.reader(f)]


def process(runs_csv: str, write: bool) -> dict:
  name = runs_csv[:-len('_runs.csv')]
  md_path, pivot_csv = name + '.md', name + '.csv'
  rows = _with_order(tables.read_runs_csv(runs_csv), pivot_csv)
  rep = {'table': os.path.relpath(runs_csv, ROOT), 'runs': sum(r['rule'] == 'last' for r in rows)}
  # 1. The re-rendering alone reproduces the committed files?
  old_md = open(md_path).read() if os.path.exists(md_path) else ''
  head, old_body = _body(old_md)
  body, csv_rows = tables.render(rows)
  body = _body(body)[1].replace(tables.RULE_TITLES['best_val'], OLD_TITLE)
  rep['md_reproduced'] = bool(old_body) and body.strip() == old_body.strip()
  if old_body and not rep['md_reproduced'] and _drop_paired(body) == _drop_paired(old_body):
    rep['md_reproduced'] = 'paired'   # an older page: the same tables, no paired sections
  if os.path.exists(pivot_csv):
    tmp = pivot_csv + '.tmp'
    tables._write_csv(tmp, csv_rows)   # pylint: disable=protected-access
    rep['csv_reproduced'] = _csv_numbers(tmp) == _csv_numbers(pivot_csv)
    os.remove(tmp)
  else:
    rep['csv_reproduced'] = None
  # 2. Re-select.
  new = tables.reselect_ties(rows)
  rep['changed'] = sum(a['epoch'] != b['epoch'] for a, b in zip(rows, new))
  rep['reselected'] = sum('reselected_from' in r for r in new)
  rep['unverified'] = sum(r.get('selection') == tables.SELECTION_UNVERIFIED for r in new)
  before, after = _avg(rows), _avg(new)
  rep['avg'] = [(k, before[k], after[k]) for k in before]
  if write:
    new_body, new_csv = tables.render(new)
    new_body = _body(new_body)[1]
    if old_body:
      with open(md_path, 'w') as f:
        f.write(head + new_body)
    tables._write_csv(pivot_csv, new_csv)   # pylint: disable=protected-access
    with open(runs_csv, newline='') as f:
      fields = next(csv.reader(f))
    fields += [k for k in ('selection', 'reselected_from') if k not in fields]
    with open(runs_csv, 'w', newline='') as f:
      w = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
      w.writeheader()
      w.writerows(new)
  return rep


def report(reps) -> str:
  lines = ['# Best-validation rows re-selected by the later-epoch-on-ties rule', '',
           'Written by `python -m docs.study.reselect` (see its docstring). Runs made before the '
           'tie rule kept the first epoch among equal validation accuracies; each table\'s '
           '`*_runs.csv` keeps a run\'s best-validation and last epoch, not its history, so a '
           'row is re-selected exactly when the last epoch ties the best (it becomes the '
           'selected epoch) and is **unverified** when the best epoch is earlier and the last '
           'lower (a later tie between them cannot be ruled out; such rows keep the first-on-'
           'ties epoch and say `selection=unverified` in the runs.csv). '
           '"re-rendered" says whether rendering the committed runs.csv with today\'s code gave '
           'back the committed table before any change (md / csv).', '',
           f'{len(reps)} tables, {sum(r["runs"] for r in reps)} runs, '
           f'{sum(r["reselected"] for r in reps)} best-validation rows re-selected, '
           f'{sum(r["unverified"] for r in reps)} unverified.', '',
           '| table | runs | re-selected | unverified | re-rendered (md / csv) | '
           'best-val Avg before → after |', '|---|---:|---:|---:|---|---|']
  def yn(x):
    return {None: '–', 'paired': 'yes (no paired sections then)', True: 'yes'}.get(x, 'no')
  for r in reps:
    avg = '; '.join(f'{v}: {b:.1f} → {a:.1f}' for (m, v), b, a in r['avg']
                    if not (math.isnan(b) and math.isnan(a)))
    lines.append(f'| `{r["table"]}` | {r["runs"]} | {r["reselected"]} | {r["unverified"]} | '
                 f'{yn(r["md_reproduced"])} / {yn(r["csv_reproduced"])} | {avg or "(no Avg)"} |')
  return '\n'.join(lines) + '\n'


ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--check', action='store_true')
  p.add_argument('--report', default=os.path.join(ROOT, 'docs', 'study', 'reselection.md'))
  a = p.parse_args()
  files = sorted(glob.glob(os.path.join(ROOT, 'docs', 'study', '**', '*_runs.csv'),
                           recursive=True))
  reps = [process(f, write=not a.check) for f in files]
  if a.check:
    pending = [r['table'] for r in reps if r['changed']]
    print('\n'.join(pending) or 'nothing to re-select')
    sys.exit(1 if pending else 0)
  if not any(r['changed'] for r in reps):
    print(f'nothing to re-select; {a.report} (the first re-selection\'s record) kept')
    return
  with open(a.report, 'w') as f:
    f.write(report(reps))
  print(report(reps))


if __name__ == '__main__':
  main()
