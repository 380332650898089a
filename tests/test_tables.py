"""Table aggregation against hand-computed means and standard deviations."""
import json
import math
import os

import pytest

from mbcd_jax import tables


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
