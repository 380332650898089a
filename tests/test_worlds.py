"""The worlds study runner: the draw rule (check, keep iff it holds), resume, merged CSVs."""
import csv
import json
import os

from mbcd_jax.study import worlds
from mbcd_jax.analysis import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINED = []


def fake_train(config, workdir):
  """A deterministic summary per (world, method, target); no training."""
  TRAINED.append(workdir)
  world = config.data.synthetic.world_seed
  who = 'teacher' if config.method.name != 'erm' else 'student'
  acc = 50.0 + world + 5 * (config.method.name == 'mbcd') + len(config.data.target)
  sel = {'epoch': 2, 'val': {f'{who}/fused': 90.0},
         'test': {f'{who}/fused': acc, 'student/fused': acc + 1,
                  **{f'{who}/{m}': 30.0 for m in config.data.modalities}}}
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump({'method': config.method.name, 'evaluated': who, 'epochs': 2,
               'modalities': list(config.data.modalities), 'sources': list(config.data.sources),
               'target': config.data.target, 'best_val': sel, 'last': sel}, f)


def _rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def _small(config):
  # Fewer examples keep the check fast (its statistics are per-domain percentiles).
  config.data.synthetic.train_per_domain, config.data.synthetic.test_per_domain = 80, 24
  return config


def test_parse_worlds_keeps_the_draw_order():
  assert worlds.parse_worlds('3-5,1,10') == [3, 4, 5, 1, 10]


def test_worlds_that_hold_are_trained_and_merged_those_that_fail_are_not(tmp_path):
  base, scratch = (_small(common.load_config(os.path.join(ROOT, f'configs/hac.py:{arg}')))
                   for arg in ('synthetic', 'synthetic,scratch'))
  # The scratch styles (one per domain) put targets outside the sources' span: checked and
  # recorded, never trained.
  out, work = str(tmp_path / 'out'), str(tmp_path / 'runs')
  res = worlds.run(scratch, [1], workdir=work, out=out, train_fn=fake_train, log=lambda s: 0)
  assert res['failed_check'] == [1] and not TRAINED
  stats = _rows(os.path.join(out, worlds.STATS_CSV))
  assert stats[0]['holds'] == 'False' and 'outside the sources' in stats[0]['failures']

  TRAINED.clear()
  res = worlds.run(base, [0, 3], workdir=work, out=out, train_fn=fake_train, log=lambda s: 0)
  assert res['held'] == [0, 3] and len(TRAINED) == 2 * 2 * 3   # worlds x methods x targets
  rows = _rows(os.path.join(out, worlds.RUNS_CSV))
  assert len(rows) == 2 * 2 * 3 * 2                             # x rules
  mbcd = [r for r in rows if r['world'] == '3' and r['variant'] == 'mbcd'
          and r['target'] == 'human' and r['rule'] == 'last'][0]
  assert float(mbcd['fused']) == 50.0 + 3 + 5 + 5 and float(mbcd['student_fused']) == 64.0
  assert {r['world'] for r in _rows(os.path.join(out, worlds.STATS_CSV))} == {'0', '1', '3'}
  # Resumed: nothing retrained, nothing checked twice, the files unchanged.
  TRAINED.clear()
  before = open(os.path.join(out, worlds.RUNS_CSV)).read()
  worlds.run(base, [0, 3], workdir=work, out=out, train_fn=fake_train, log=lambda s: 0)
  assert not TRAINED and open(os.path.join(out, worlds.RUNS_CSV)).read() == before
  # Another method on a world: merged beside the rows already there.
  worlds.run(base, [0], workdir=work, out=out, methods=('ema',), train_fn=fake_train,
             log=lambda s: 0)
  rows = _rows(os.path.join(out, worlds.RUNS_CSV))
  assert len(rows) == 24 + 3 * 2 and {r['variant'] for r in rows} == {'erm', 'mbcd', 'ema'}


def test_a_new_machine_resumes_from_the_committed_rows(tmp_path):
  # The run directories stay on the machine that made them; the CSV is committed. A run whose
  # rows it holds is not trained again, on a machine with an empty workdir.
  base = _small(common.load_config(os.path.join(ROOT, 'configs/hac.py:synthetic')))
  out = str(tmp_path / 'out')
  TRAINED.clear()
  worlds.run(base, [0], workdir=str(tmp_path / 'a'), out=out, methods=('erm',),
             train_fn=fake_train, log=lambda s: 0)
  assert len(TRAINED) == 3
  TRAINED.clear()
  worlds.run(base, [0], workdir=str(tmp_path / 'b'), out=out, methods=('erm', 'mbcd'),
             train_fn=fake_train, log=lambda s: 0)
  assert len(TRAINED) == 3 and all('/mbcd/' in d for d in TRAINED)
  assert len(_rows(os.path.join(out, worlds.RUNS_CSV))) == 2 * 3 * 2
  # collect_only: merges what a workdir finished, trains and checks nothing.
  out2 = str(tmp_path / 'out2')
  TRAINED.clear()
  worlds.run(base, [0], workdir=str(tmp_path / 'b'), out=out2, methods=('erm', 'mbcd'),
             collect_only=True, log=lambda s: 0)
  assert not TRAINED and not os.path.exists(os.path.join(out2, worlds.STATS_CSV))
  assert len(_rows(os.path.join(out2, worlds.RUNS_CSV))) == 3 * 2      # b's mbcd runs
