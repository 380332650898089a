"""docs/results.md is generated from the committed CSVs, and its statistics are right."""
import csv
import os

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mbcd_jax.study import results_page, suites_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_committed_page_is_what_the_csvs_give():
  # Out of date: SystemExit(1) ('python -m mbcd_jax.study.results_page' rewrites it).
  results_page.main(['--check', f'--root={ROOT}'])
  assert os.path.exists(os.path.join(ROOT, results_page.FIGURE))


@pytest.mark.parametrize('k,n', [(0, 4), (3, 4), (4, 4), (5, 12), (1, 1)])
def test_clopper_pearson_matches_scipy(k, n):
  want = scipy_stats.binomtest(k, n).proportion_ci(method='exact')
  np.testing.assert_allclose(results_page.clopper_pearson(k, n), (want.low, want.high),
                             atol=1e-9)


def _write(root, rel, rows):
  path = os.path.join(root, rel)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)


def _row(variant, target, seed, fused, student, rule='last'):
  return dict(variant=variant, setting=f'x→{target[0].upper()}', target=target, seed=seed,
              rule=rule, fused=fused, student_fused=student)


def test_pairs_by_target_and_seed_and_refuses_conflicting_copies(tmp_path, monkeypatch):
  a, b = results_page.SOURCES[0][1], results_page.SOURCES[2][1]
  rows = [_row('erm', 'human', 0, 70.0, 70.0), _row('mbcd', 'human', 0, 72.0, 75.0),
          _row('erm', 'animal', 0, 60.0, 60.0), _row('mbcd', 'animal', 0, 59.0, 61.0),
          _row('mbcd', 'cartoon', 0, 99.0, 99.0)]          # no erm pair: left out
  _write(str(tmp_path), a, rows)
  got = results_page.load(str(tmp_path))
  student = results_page.diffs(got, results_page.COMPARISONS[0], 'w0', 'last')
  teacher = results_page.diffs(got, results_page.COMPARISONS[1], 'w0', 'last')
  assert sorted(d[-1] for d in student) == [1.0, 5.0]
  assert sorted(d[-1] for d in teacher) == [-1.0, 2.0]
  s = results_page.stats(teacher)
  assert (s['mean'], s['wins'], s['losses'], s['verdict']) == (0.5, 1, 1, 'level')
  # Table 4's label of the same run is an alias; a different number for it is refused.
  _write(str(tmp_path), b, [_row('none (erm)', 'human', 0, 71.0, 71.0)])
  with pytest.raises(SystemExit, match='has'):
    results_page.load(str(tmp_path))


def test_spearman_and_its_exact_permutation_p_match_scipy():
  x, y = [1, 2, 3, 4, 5, 6, 7], [2, 1, 4, 3, 7, 5, 6.0]
  assert results_page.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y)[0])
  # One sample, its order permuted against the fixed y: the 7! pairings (two samples would
  # permute both, (7!)^2 evaluations).
  want = scipy_stats.permutation_test(
      (x,), lambda a: scipy_stats.spearmanr(a, y)[0], permutation_type='pairings',
      alternative='greater', n_resamples=np.inf).pvalue
  assert results_page.permutation_p(x, y, +1) == pytest.approx(want)
  # Ties get average ranks (as scipy); a constant side has no correlation.
  assert results_page.spearman([1, 1, 2, 3], [4, 3, 2, 1]) == pytest.approx(
      scipy_stats.spearmanr([1, 1, 2, 3], [4, 3, 2, 1])[0])
  assert np.isnan(results_page.spearman([1, 1, 1], [1, 2, 3]))


def _three_worlds():
  """Worlds 101-103: ERM reaches 60, 70, 80 on every target; MBCD's student gains 3, 2, 1 and
  its teacher equals ERM; the dominant modality's deficit 0.3, 0.2, 0.1."""
  rows, stats_rows = [], []
  for w in (101, 102, 103):
    for t in ('human', 'animal', 'cartoon'):
      erm = 60.0 + 10 * (w - 101)
      for rule in ('best_val', 'last'):
        rows.append(dict(world=w, **_row('erm', t, 0, erm, erm, rule)))
        rows.append(dict(world=w, **_row('mbcd', t, 0, erm, erm + 104 - w, rule)))
    stats_rows.append({'world': w, 'holds': 'True', 'dominant': 'video',
                       'agreement/video': 0.5, 'agreement/flow': 0.5 + 0.1 * (104 - w),
                       'agreement/audio': 0.5 + 0.1 * (104 - w)})
  return rows, stats_rows


def test_fresh_worlds_section_from_hand_made_rows(tmp_path):
  rows, stats_rows = _three_worlds()
  stats_rows.append({'world': 100, 'holds': 'False', 'dominant': 'video', 'agreement/video': 0,
                     'agreement/flow': 0, 'agreement/audio': 0})
  _write(str(tmp_path), 'docs/results/worlds_runs.csv', rows)
  _write(str(tmp_path), results_page.STATS, stats_rows)
  text = '\n'.join(results_page.fresh_section(results_page.load(str(tmp_path)), str(tmp_path)))
  assert 'not run (the principle fails): worlds 100' in text
  # Student gains 3, 2, 1 as ERM rises 60, 70, 80: H1/H2 rho -1; the deficit falls with the
  # gain's fall: H3 rho +1 (3 worlds: exact p 1/6).
  assert '| 101 | 60.0 | +3.0 (3) | +0.0 (3) | 0.300 |' in text
  assert 'MBCD student − ERM, best validation: 3 of 3' in text
  assert 'H2 ρ = -1.00 (p 0.167)' in text and 'H3 ρ = +1.00 (p 0.167)' in text
  assert 'H1 ρ = -' in text


def test_fresh_answer_and_figure_from_hand_made_rows(tmp_path):
  rows, stats_rows = _three_worlds()
  _write(str(tmp_path), 'docs/results/worlds_runs.csv', rows)
  _write(str(tmp_path), results_page.STATS, stats_rows)
  loaded = results_page.load(str(tmp_path))
  text = results_page.fresh_answer(loaded, str(tmp_path))
  # 9 wins of 9 pairs: sign-test p 0.004 -> ahead; mean 2.0, sem std([3,3,3,2,2,2,1,1,1])/3.
  sem = np.std([3, 3, 3, 2, 2, 2, 1, 1, 1], ddof=1) / 3
  assert f'MBCD student − ERM is ahead (+2.0 ± {sem:.1f} points per pair, 9 wins of 9' in text
  assert 'positive on 3 of 3 worlds' in text
  assert 'MBCD teacher − ERM is level (+0.0 ± 0.0 points per pair, 0 wins of 9' in text
  # H1 over 9 pairs: rho -1, permutation p far below 0.05; H3 over 3 worlds: exact p 1/6.
  assert 'H1, its gain falls as ERM\'s own target accuracy rises) is supported (ρ = -1.00' in text
  assert 'is not supported (ρ = +1.00, p 0.167)' in text
  h = results_page.hypotheses(loaded, str(tmp_path), 'last')
  assert h['H1'][2] == 9 and h['H1'][1] < 0.01 and h['H2'][2] == 3
  path = tmp_path / 'worlds.png'
  results_page.worlds_figure(loaded, str(tmp_path), str(path))
  assert path.stat().st_size > 10_000
  # The worlds' statistics beside the gain (3, 2, 1): the deficit 0.3, 0.2, 0.1 -> rho +1;
  # Statistics these rows lack (ERM's validation, separability) have no rho.
  ex = '\n'.join(results_page.explore(loaded, str(tmp_path)))
  assert '| 101 | +3.0 |' in ex and '| 0.300 |' in ex
  rho_row = ex.split('| ρ | | ')[1].split(' | ')
  assert rho_row[3] == '+1.00' and rho_row[0] == rho_row[1] == rho_row[2] == '–'
  # No fresh runs: no paragraph, no figure.
  assert results_page.fresh_answer([], str(tmp_path)) is None
  results_page.worlds_figure([], str(tmp_path), str(tmp_path / 'none.png'))
  assert not (tmp_path / 'none.png').exists()


def test_reliability_section_from_the_suites_csvs(tmp_path):
  assert results_page.reliability_section(str(tmp_path)) == []
  rel = suites_table.STUDY_DIR
  keys = dict(modalities='V+F+A', setting='A,C→H', target='human', rule='last', who='student')
  runs = {('erm', 0): (80.0, 50.0), ('erm', 1): (90.0, 40.0), ('mbcd', 0): (84.0, 30.0)}
  rows = {s: [] for s in ('misd', 'ood', 'missing', 'corruption')}
  for (v, seed), (acc, aurc) in runs.items():
    k = dict(keys, variant=v, seed=seed)
    rows['misd'].append(dict(k, suite='misd', condition='msp', acc=acc, aurc=aurc))
    rows['ood'].append(dict(k, suite='ood', condition='new_classes/msp', auroc=70.0))
    rows['missing'].append(dict(k, suite='missing', condition='none', acc=acc))
    rows['corruption'].append(dict(k, suite='corruption', condition='clean', acc=acc))
  for s, r in rows.items():
    _write(str(tmp_path), f'{rel}/{s}.csv', r)
  text = '\n'.join(results_page.reliability_section(str(tmp_path)))
  # Both methods short of the plan's 9 runs: the section says so; MBCD's AURC is 20 lower than
  # ERM's on the one shared pair (a win, lower is better).
  assert 'Interim for erm, mbcd' in text
  assert '| V+F+A | erm | 2 | 85.0 ± 7.1 | 45.0 ± 7.1 |' in text
  assert '| V+F+A | mbcd | 1 | 84.0 ± 0.0 (+4.0, 1/1, p 1.00) | 30.0 ± 0.0 (-20.0, 1/1, p 1.00) |' in text
  assert 'Every method, seed' not in text
  # Every method at seed 0: a row per method from the sub-folder, seed 1 left out.
  rows['misd'].append(dict(keys, variant='nel', seed=0, suite='misd', condition='msp', acc=70.0,
                           aurc=35.0))
  _write(str(tmp_path), f'{rel}/{suites_table.EVERY_METHOD_DIR}/misd.csv', rows['misd'])
  text = '\n'.join(results_page.reliability_section(str(tmp_path)))
  every = text.split('Every method, seed 0 only')[1]
  assert '| V+F+A | erm | 1 | 80.0 ± 0.0 | 50.0 ± 0.0 |' in every
  assert '| V+F+A | nel | 1 | 70.0 ± 0.0 (-10.0, 0/1, p 1.00) | 35.0 ± 0.0 (-15.0, 1/1, p 1.00) |' in every
