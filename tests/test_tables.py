"""Table aggregation against hand-computed means and standard deviations."""
import json
import math
import os

import pytest

from mbcd_jax.study import tables


def _summary(target, sources, fused_best, fused_last, who='teacher', video=50.0):
  def sel(epoch, fused):
    test = {f'{who}/fused': fused, f'{who}/video': video, f'{who}/audio': 40.0,
            'student/fused': fused - 1}
    return {'epoch': epoch, 'val': {f'{who}/fused': 90.0}, 'test': test}
  return {'evaluated': who, 'modalities': ['video', 'audio'], 'sources': sources,
          'target': target, 'best_val': sel(3, fused_best), 'last': sel(5, fused_last)}


def _write(root, variant, target, sources, seed, best, last, order=0, setting_order=0):
  d = os.path.join(root, variant, f'to_{target}', f'seed{seed}')
  os.makedirs(d)
  with open(os.path.join(d, 'run.json'), 'w') as f:
    json.dump({'variant': variant, 'seed': seed, 'order': order,
               'setting_order': setting_order}, f)
  with open(os.path.join(d, 'summary.json'), 'w') as f:
    json.dump(_summary(target, sources, best, last), f)


def test_mean_std_hand_computed():
  m, s = tables.mean_std([60.0, 62.0, 67.0])
  assert m == pytest.approx(63.0)
  # deviations -3, -1, 4: sum of squares 26, ddof=1 -> sqrt(13)
  assert s == pytest.approx(math.sqrt(13.0))
  assert tables.mean_std([5.0]) == (5.0, 0.0)
  assert all(math.isnan(x) for x in tables.mean_std([]))


def test_labels():
  assert tables.setting_label(('animal', 'cartoon'), 'human') == 'A,C→H'
  assert tables.setting_label(('D1',), 'D2') == 'D1→D2'
  assert tables.modality_label(('video', 'flow', 'audio')) == 'V+F+A'


def test_pivot_against_hand_computed(tmp_path):
  root = str(tmp_path)
  # mbcd: target human seeds (60, 62, 67); target animal seeds (50, 54, 52) -> best rule
  for seed, (h, a) in enumerate([(60, 50), (62, 54), (67, 52)]):
    _write(root, 'mbcd', 'human', ['animal', 'cartoon'], seed, h, h - 10, order=1)
    _write(root, 'mbcd', 'animal', ['human', 'cartoon'], seed, a, a - 10, order=1,
           setting_order=1)
  # erm: only two seeds on human and one on animal (seed 0)
  _write(root, 'erm', 'human', ['animal', 'cartoon'], 0, 40, 30)
  _write(root, 'erm', 'human', ['animal', 'cartoon'], 1, 44, 30)
  _write(root, 'erm', 'animal', ['human', 'cartoon'], 0, 20, 10, setting_order=1)
  rows = tables.collect(root)
  assert len(rows) == 9 * 2
  t = tables.pivot(rows, 'best_val')
  assert t['columns'] == ['A,C→H', 'H,C→A', 'Avg']   # protocol order, not directory order
  erm, mbcd = t['rows']   # erm first: order 0
  assert (erm['variant'], mbcd['variant']) == ('erm', 'mbcd')
  m, s, n = mbcd['cells']['A,C→H']
  assert (m, s, n) == (pytest.approx(63.0), pytest.approx(math.sqrt(13.0)), 3)
  m, s, n = mbcd['cells']['H,C→A']
  assert (m, s, n) == (pytest.approx(52.0), pytest.approx(2.0), 3)
  # Avg: mean of target means (63 + 52) / 2 = 57.5; per-seed averages 55, 58, 59.5
  m, s, n = mbcd['cells']['Avg']
  assert m == pytest.approx(57.5)
  assert s == pytest.approx(tables.mean_std([55.0, 58.0, 59.5])[1])
  assert n == 3
  # erm: human (40, 44) -> 42 ± 2.828; animal 20 ± 0; Avg mean 31, std from seed 0 only -> 0
  m, s, n = erm['cells']['A,C→H']
  assert (m, s) == (pytest.approx(42.0), pytest.approx(math.sqrt(8.0)))
  m, s, n = erm['cells']['Avg']
  assert (m, s, n) == (pytest.approx(31.0), 0.0, 1)
  # no Avg for a row that misses a target
  partial = tables.pivot([r for r in rows if not (r['variant'] == 'erm' and r['target'] == 'animal')],
                         'best_val')
  assert 'Avg' not in partial['rows'][0]['cells'] and 'Avg' in partial['rows'][1]['cells']
  # last-epoch rule reads the other selection
  last = tables.pivot(rows, 'last')
  assert last['rows'][1]['cells']['A,C→H'][0] == pytest.approx(53.0)


def test_write_tables_markdown_and_csv(tmp_path):
  root = str(tmp_path)
  for seed, v in enumerate([60.0, 62.0, 67.0]):
    _write(root, 'mbcd', 'human', ['animal', 'cartoon'], seed, v, v)
  paths = tables.write_tables(root)
  md = open(paths['markdown']).read()
  assert '| V+A | mbcd | 63.0 ± 3.6 | 63.0 ± 3.6 |' in md
  csv_text = open(paths['csv']).read()
  assert 'A,C→H mean' in csv_text
  runs = open(paths['runs_csv']).read().splitlines()
  assert len(runs) == 1 + 3 * 2
  # the per-head table averages the uni-modal heads and the student's fused head
  mt = tables.modality_table(tables.collect(root), 'best_val', ['video', 'audio'])
  cells = mt['rows'][0]['cells']
  assert cells['video'][0] == pytest.approx(50.0)
  assert cells['student_fused'][0] == pytest.approx(62.0)


def test_sign_test_against_hand_values():
  # 5 wins, 0 losses: P = 2 * (1/2)^5 = 0.0625; 3 vs 2: 2 * (1+5+10)/32 = 1 (capped)
  assert tables.sign_test_p(5, 0) == pytest.approx(0.0625)
  assert tables.sign_test_p(0, 5) == pytest.approx(0.0625)
  assert tables.sign_test_p(3, 2) == pytest.approx(1.0)
  assert tables.sign_test_p(9, 1) == pytest.approx(2 * 11 / 1024)
  assert tables.sign_test_p(0, 0) == 1.0


def test_paired_difference_hand_computed(tmp_path):
  root = str(tmp_path)
  # erm / mbcd on two targets x two seeds; mbcd - erm = +4, +2, -1, +3 (seed 2 of mbcd only:
  # unpaired, so ignored)
  erm = {('human', 0): 40.0, ('human', 1): 50.0, ('animal', 0): 30.0, ('animal', 1): 35.0}
  mbcd = {('human', 0): 44.0, ('human', 1): 52.0, ('animal', 0): 29.0, ('animal', 1): 38.0,
          ('human', 2): 99.0}
  src = {'human': ['animal', 'cartoon'], 'animal': ['human', 'cartoon']}
  for (t, s), v in erm.items():
    _write(root, 'erm', t, src[t], s, v, v, order=0)
  for (t, s), v in mbcd.items():
    _write(root, 'mbcd', t, src[t], s, v, v, order=1)
  rows = tables.collect(root)
  st = tables.paired(rows, 'best_val', 'mbcd', 'erm')
  d = [4.0, 2.0, -1.0, 3.0]
  sd = math.sqrt(sum((x - 2.0) ** 2 for x in d) / 3)
  assert st['n'] == 4 and st['mean'] == pytest.approx(2.0)
  assert st['std'] == pytest.approx(sd) and st['sem'] == pytest.approx(sd / 2)
  assert (st['wins'], st['losses'], st['ties']) == (3, 1, 0)
  assert st['p_sign'] == pytest.approx(2 * 5 / 16)
  md = tables.paired_markdown(rows, 'best_val')
  assert f'| V+A | mbcd | erm | +2.0 ± {sd / 2:.1f} | 3 / 1 / 0 | 0.625 |' in md
  assert tables.paired(rows, 'best_val', 'mbcd', 'nope') is None


def test_paired_markdown_compares_later_rows_with_first_and_ema(tmp_path):
  root = str(tmp_path)
  for order, (variant, v) in enumerate([('erm', 40.0), ('ema', 42.0), ('mbcd', 47.0)]):
    for seed in (0, 1):
      _write(root, variant, 'human', ['animal', 'cartoon'], seed, v + seed, v + seed,
             order=order)
  md = tables.paired_markdown(tables.collect(root), 'best_val')
  assert '| V+A | ema | erm | +2.0 ± 0.0 | 2 / 0 / 0 | 0.500 |' in md
  assert '| V+A | mbcd | erm | +7.0 ± 0.0 |' in md
  assert '| V+A | mbcd | ema | +5.0 ± 0.0 |' in md
  assert md.count('\n| V+A |') == 3     # no row against itself, no row against a later one


def test_paper_rows_beside_ours(tmp_path):
  root = str(tmp_path)
  src = {'human': ['animal', 'cartoon'], 'animal': ['human', 'cartoon'],
         'cartoon': ['human', 'animal']}
  for order, variant in enumerate(['ERM', 'EMA', 'MBCD']):
    for si, t in enumerate(src):
      for seed in (0, 1):
        _write(root, variant, t, src[t], seed, 60.0 + order + seed, 50.0, order=order,
               setting_order=si)
  paths = tables.write_tables(root, paper=('multi_source', 'hac'), header=[
      tables.target_set_note('hac', False)])
  md = open(paths['markdown']).read()
  lines = md.splitlines()
  best = lines.index('**Fused accuracy, model selected by best source-domain validation '
                     'accuracy (the later epoch on ties)**')
  body = [l for l in lines[best + 4:best + 9]]
  # ours, then the paper's row of the same method and modality set (V+A, Table 1); EMA has none
  assert body == [
      '| V+A | ERM | 60.5 ± 0.7 | 60.5 ± 0.7 | 60.5 ± 0.7 | 60.5 ± 0.7 |',
      '| V+A | ERM (paper) | 72.96 ± 0.69 | 74.10 ± 3.65 | 51.96 ± 1.73 | 66.34 |',
      '| V+A | EMA | 61.5 ± 0.7 | 61.5 ± 0.7 | 61.5 ± 0.7 | 61.5 ± 0.7 |',
      '| V+A | MBCD | 62.5 ± 0.7 | 62.5 ± 0.7 | 62.5 ± 0.7 | 62.5 ± 0.7 |',
      '| V+A | MBCD (paper) | 80.08 ± 0.44 | 78.81 ± 0.72 | 53.09 ± 1.84 | 70.66 |']
  assert lines[best + 2] == '| Modalities | Method | A,C→H | H,C→A | H,A→C | Avg |'
  # the last-epoch table (not the paper's rule) has no paper rows
  assert md.count('(paper)') == 2
  assert ('HAC test set. Our rows: the whole target domain, for every method '
          '(config.data.hac_test_split_only). The paper\'s rows, per method: ERM: as '
          'configured; RNA-Net: as configured; SimMMDG: whole target domain;') in md
  assert 'MBCD: whole target domain.' in md
  csv_text = open(paths['csv']).read()
  assert 'MBCD (paper)' in csv_text
  # paired differences never use the paper's rows
  assert '(paper)' not in tables.paired_markdown(tables.collect(root), 'best_val')


def test_target_set_note_follows_the_config():
  assert tables.target_set_note('hac', True).startswith(
      "HAC test set. Our rows: the target domain's test split")
  assert tables.target_set_note('epic', True) == (
      "Test set: the target domain's test split (every method; on epic the protocol fixes it).")


def test_paper_rows_only_for_the_columns_we_have():
  t = {'columns': ['D1→D2', 'Avg'],
       'rows': [{'modalities': 'V+F+A', 'variant': 'CMRF', 'cells': {'D1→D2': (50.0, 1.0, 3)}}]}
  out = tables.with_paper(t, 'single_source', 'epic')
  paper = out['rows'][1]
  assert (paper['modalities'], paper['variant'], paper['digits']) == ('V+F+A', 'CMRF (paper)', 2)
  assert paper['cells']['D1→D2'] == (59.35, 0.24, 3) and set(paper['cells']) == {'D1→D2', 'Avg'}
  avg = paper['cells']['Avg']   # the paper's average over all six pairs; no std printed
  assert avg[0] == 59.51 and math.isnan(avg[1])
  assert len(tables.with_paper(t, 'multi_source', 'epic')['rows']) == 1   # no V+F+A D1→D2 in T1


def _run_rows(best_epoch, best_val, last_epoch, last_val, variant='mbcd', seed=0):
  base = dict(variant=variant, modalities='V+F+A', setting='A,C→H', target='human', seed=seed,
              epochs=last_epoch)
  return [dict(base, rule='best_val', epoch=best_epoch, val=best_val, fused=10.0 * best_epoch),
          dict(base, rule='last', epoch=last_epoch, val=last_val, fused=10.0 * last_epoch)]


def test_reselect_ties_takes_the_last_epoch_when_it_ties_the_best():
  out = tables.reselect_ties(_run_rows(3, 100.0, 5, 100.0))
  best = [r for r in out if r['rule'] == 'best_val'][0]
  assert (best['epoch'], best['fused'], best['reselected_from']) == (5, 50.0, 3)
  assert best['selection'] == tables.SELECTION_KNOWN
  # Idempotent: the re-selected rows stay as they are.
  assert tables.reselect_ties(out) == out


def test_reselect_ties_marks_what_a_runs_csv_cannot_decide():
  # Best at epoch 3, last lower: a tie at epoch 4 (not kept) cannot be ruled out.
  out = tables.reselect_ties(_run_rows(3, 90.0, 5, 80.0) + _run_rows(5, 90.0, 5, 90.0, seed=1))
  sel = {(r['seed'], r['rule']): r for r in out}
  assert sel[(0, 'best_val')]['epoch'] == 3
  assert sel[(0, 'best_val')]['selection'] == tables.SELECTION_UNVERIFIED
  assert sel[(1, 'best_val')]['selection'] == tables.SELECTION_KNOWN
  assert 'reselected_from' not in sel[(0, 'best_val')]


def test_reselect_ties_refuses_a_run_without_both_rules():
  with pytest.raises(ValueError, match='one row per rule'):
    tables.reselect_ties(_run_rows(3, 90.0, 5, 80.0)[:1])


def test_committed_study_tables_use_the_tie_rule():
  # docs/study/reselect.py (python -m docs.study.reselect) rewrote every committed table; a table added since by pre-rule runs
  # would show up here.
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  res = subprocess.run([sys.executable, '-m', 'docs.study.reselect', '--check'],
                       capture_output=True, text=True, cwd=os.path.dirname(
                           os.path.dirname(os.path.abspath(__file__))))
  assert res.returncode == 0, res.stdout + res.stderr
