"""The cross-suite table and the suites study's answer, from hand-made suite CSVs."""
import csv
import os

import numpy as np
import pytest

from docs.study import suites_answer
from mbcd_jax.study import suites_table

KEYS = dict(modalities='V+F+A', target='human', rule='last', who='student')


def _write(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fields = list(dict.fromkeys(k for r in rows for k in r))
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fields)
    w.writeheader()
    w.writerows(rows)


def _suites(d, runs):
  """runs: {(variant, seed): (acc, aurc, auroc, {modality: acc without it}, [corrupted accs])}."""
  misd, ood, missing, corr = [], [], [], []
  for (v, seed), (acc, aurc, auroc, miss, cors) in runs.items():
    k = dict(KEYS, variant=v, setting='A,C→H', seed=seed, wall_s=2.0)
    misd += [dict(k, suite='misd', condition='msp', acc=acc, aurc=aurc),
             dict(k, suite='misd', condition='energy', acc=acc, aurc=999.0)]
    ood += [dict(k, suite='ood', condition='new_classes/msp', auroc=auroc),
            dict(k, suite='ood', condition='new_classes/energy', auroc=1.0)]
    missing += [dict(k, suite='missing', condition='none', acc=acc)]
    missing += [dict(k, suite='missing', condition=f'feature:-{m}', acc=a) for m, a in miss.items()]
    missing += [dict(k, suite='missing', condition='feature:-video+flow', acc=0.0),
                dict(k, suite='missing', condition='input:-video', acc=0.0)]
    corr += [dict(k, suite='corruption', condition='clean', acc=acc)]
    corr += [dict(k, suite='corruption', condition=f'video:defocus_blur@{i + 1}', acc=a)
             for i, a in enumerate(cors)]
  for s, rows in (('misd', misd), ('ood', ood), ('missing', missing), ('corruption', corr)):
    _write(os.path.join(d, f'{s}.csv'), rows)


RUNS = {('erm', 0): (80.0, 50.0, 70.0, {'video': 60.0, 'audio': 70.0}, [70.0, 60.0]),
        ('erm', 1): (90.0, 40.0, 80.0, {'video': 70.0, 'audio': 80.0}, [80.0, 70.0]),
        ('mbcd', 0): (84.0, 30.0, 75.0, {'video': 80.0, 'audio': 72.0}, [76.0, 70.0]),
        ('mbcd', 1): (88.0, 45.0, 85.0, {'video': 80.0, 'audio': 84.0}, [82.0, 82.0])}


def test_per_run_columns_and_paired_cells(tmp_path):
  _suites(str(tmp_path), RUNS)
  runs = suites_table.per_run(suites_table.read(str(tmp_path)))
  r = runs[('mbcd', 'V+F+A', 'A,C→H', 0)]
  # The msp rows only; one-modality-missing = mean of the single 'feature:-' rows.
  assert r == {'acc': 84.0, 'aurc': 30.0, 'ood_auroc': 75.0, 'missing': 76.0, 'drop': 8.0,
               'corrupted': 73.0}
  lines = suites_table.table(suites_table.read(str(tmp_path)))
  assert lines[2].startswith('| V+F+A | erm | 2 | 85.0 ± 7.1 |')
  mbcd = lines[3].split(' | ')
  # AURC: diffs -20, +5 -> mean -7.5; lower is better -> 1 win of 2. Drop: erm 15, 15;
  # mbcd 8, 6 -> diffs -7, -9 -> 2 wins of 2.
  assert mbcd[4] == f'37.5 ± {np.std([30, 45], ddof=1):.1f} (-7.5, 1/2, p 1.00)'
  assert mbcd[7] == '7.0 ± 1.4 (-8.0, 2/2, p 0.50)'
  assert suites_table.wall_times(suites_table.read(str(tmp_path)))[0] == (
      '- misd: median 2.0 s per run (range 2.0–2.0, 4 runs)')
  # A small p is printed as a bound, never as 'p 0.00'.
  assert suites_table._cell([1.0] * 9, [1.0] * 9) == '1.0 ± 0.0 (+1.0, 9/9, p < 0.01)'
  # --seeds narrows the runs.
  assert suites_table.table(suites_table.read(str(tmp_path)), seeds={1})[2].startswith(
      '| V+F+A | erm | 1 | 90.0 ± 0.0 |')


def test_a_folder_without_suites_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    suites_table.read(str(tmp_path))


def test_the_plans_hypotheses_by_its_majority_rule(tmp_path):
  runs = {}
  for seed in range(9):
    runs[('erm', seed)] = (80.0, 50.0, 70.0, {'video': 60.0, 'audio': 70.0}, [70.0])
    # MBCD: AURC no worse in 5 of 9 (seeds 0-4); video drop smaller in 9, audio drop in 4.
    runs[('mbcd', seed)] = (80.0, 50.0 if seed < 5 else 60.0, 70.0,
                            {'video': 70.0, 'audio': 75.0 if seed < 4 else 70.0}, [70.0])
  d = tmp_path / suites_answer.DIR
  _suites(str(d), runs)
  suites = suites_table.read(str(d))
  assert suites_answer.h1(suites) == (5, 9)
  assert suites_answer.h2(suites) == {'audio': (4, 9), 'video': (9, 9)}
  text = suites_answer.page(str(tmp_path))
  assert '5 of 9 pairs — holds' in text
  assert 'audio 4 of 9 (does not hold), video 9 of 9 (holds) — does not hold' in text
  assert 'erm 9, mbcd 9, simmmdg 0, cmrf 0. **The study is not complete**' in text
  assert suites_answer._verdict(4, 7) == 'undecided (only 7 of 9 pairs)'
  assert suites_answer._verdict(1, 6) == 'does not hold'   # 4 more cannot reach 5


def test_the_best_validation_checkpoint_is_beside_it_and_decides_nothing(tmp_path):
  d = tmp_path / suites_answer.DIR
  _suites(str(d), RUNS)
  assert '## The best-validation checkpoint' not in suites_answer.page(str(tmp_path))
  # At the best checkpoint MBCD's AURC is worse in both pairs: the counts change, the verdict
  # (from the end-of-training rows) does not.
  best = dict(RUNS)
  best[('mbcd', 0)] = (84.0, 60.0, 75.0, {'video': 80.0, 'audio': 72.0}, [76.0, 70.0])
  best[('mbcd', 1)] = (88.0, 55.0, 85.0, {'video': 80.0, 'audio': 84.0}, [82.0, 82.0])
  _suites(str(d / suites_answer.BEST), best)
  text = suites_answer.page(str(tmp_path))
  head, beside = text.split('## The best-validation checkpoint, beside it')
  assert '1 of 2 pairs' in head
  assert 'AURC no worse in 0 of 2 pairs' in beside
  assert 'drop smaller audio 1 of 2, video 2 of 2' in beside
  assert '| V+F+A | mbcd | 2 | 86.0 ± 2.8 (+1.0, 1/2, p 1.00) | 57.5 ± 3.5 (+12.5, 0/2' in beside


def test_the_committed_answer_is_what_its_csvs_give():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if not os.path.exists(os.path.join(root, suites_answer.DIR, 'README.md')):
    pytest.skip('no committed suites answer yet')
  suites_answer.main(['--check', f'--root={root}'])


def test_every_method_at_seed_0_only(tmp_path):
  d = tmp_path / suites_answer.DIR
  _suites(str(d), RUNS)
  every = dict(RUNS)
  every[('nel', 0)] = (70.0, 20.0, 60.0, {'video': 50.0, 'audio': 60.0}, [60.0, 50.0])
  _suites(str(d / suites_answer.EVERY), every)
  # A seed-1 wall time that would move the median if seeds were ignored.
  rows = list(csv.DictReader(open(d / suites_answer.EVERY / 'misd.csv')))
  for r in rows:
    r['wall_s'] = 100.0 if r['seed'] == '1' else r['wall_s']
  _write(str(d / suites_answer.EVERY / 'misd.csv'), rows)
  text = suites_answer.page(str(tmp_path)).split('## Every method, seed 0')[1]
  # One run per method (seed 1 left out); NEL paired with ERM's seed-0 run: AURC 30 lower.
  assert '| V+F+A | erm | 1 | 80.0 ± 0.0 | 50.0 ± 0.0 |' in text
  assert '| V+F+A | nel | 1 | 70.0 ± 0.0 (-10.0, 0/1, p 1.00) | 20.0 ± 0.0 (-30.0, 1/1, p 1.00) |' in text
  assert '- misd: median 2.0 s per run (range 2.0–2.0, 3 runs)' in text
  # The runner's accuracy table is linked only once it is there.
  assert suites_answer.TABLE1 not in text
  (d / suites_answer.EVERY / suites_answer.TABLE1).write_text('# Results\n')
  text = suites_answer.page(str(tmp_path)).split('## Every method, seed 0')[1]
  assert f'({suites_answer.EVERY}/{suites_answer.TABLE1})' in text
