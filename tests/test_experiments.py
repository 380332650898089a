"""The protocol runner: planning, resume (finished runs are skipped), grids, tables, CLI."""
import json
import os
import subprocess
import sys

import pytest

from mbcd_jax import experiments, tables
from mbcd_jax.analysis import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALLS = []


def fake_train(config, workdir):
  """Stands in for train.train_and_evaluate: no state, a deterministic summary, no training."""
  CALLS.append(workdir)
  acc = 40.0 + 10 * (config.method.name == 'mbcd') + config.seed
  who = 'teacher' if config.method.name != 'erm' else 'student'
  sel = {'epoch': 1, 'val': {f'{who}/fused': 90.0},
         'test': {f'{who}/fused': acc, **{f'{who}/{m}': 30.0 for m in config.data.modalities}}}
  summary = {'method': config.method.name, 'evaluated': who,
             'modalities': list(config.data.modalities), 'sources': list(config.data.sources),
             'target': config.data.target, 'best_val': sel, 'last': sel}
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump(summary, f)
  return None, summary


@pytest.fixture
def base():
  return common.load_config(os.path.join(ROOT, 'configs/hac.py:smoke'))


def _plan(base, workdir, grid='methods', methods=('erm', 'mbcd'), seeds=(0, 1), **kw):
  return experiments.plan(str(workdir), base, variant_list=experiments.variants(grid, methods),
                          modality_sets=[('video', 'flow', 'audio')], seeds=seeds, **kw)


def test_protocol_settings():
  doms = ('human', 'animal', 'cartoon')
  assert experiments.protocol_settings('multi_source', doms) == [
      (('animal', 'cartoon'), 'human'), (('human', 'cartoon'), 'animal'),
      (('human', 'animal'), 'cartoon')]
  single = experiments.protocol_settings('single_source', doms)
  assert len(single) == 6 and (('human',), 'animal') in single
  assert experiments.protocol_settings('multi_source', doms, ['animal']) == [
      (('human', 'cartoon'), 'animal')]
  with pytest.raises(ValueError, match='protocol'):
    experiments.protocol_settings('leave_two_out', doms)


def test_run_spec_is_the_plans_run(base, tmp_path):
  # The analyses find a study's run with run_spec: it must be the run the plan trained.
  runs = _plan(base, tmp_path, methods=('erm', 'mbcd'), seeds=(0, 1))
  v = experiments.variants('methods', ['mbcd'])[0]
  one = experiments.run_spec(str(tmp_path), base, v, ('video', 'flow', 'audio'),
                             ('human', 'animal'), 'cartoon', 1)
  same = [r for r in runs if r.run_dir == one.run_dir]
  assert len(same) == 1 and same[0].overrides == one.overrides
  assert one.run_dir == os.path.join(str(tmp_path), 'mbcd', 'video_flow_audio',
                                     'human+animal_to_cartoon', 'seed1')


def test_resume_skips_finished_runs(base, tmp_path):
  runs = _plan(base, tmp_path)
  assert len(runs) == 2 * 3 * 2
  CALLS.clear()
  res = experiments.run_all(base, runs[:5], train_fn=fake_train, log=lambda s: None)
  assert len(res['done']) == 5 and not res['skipped'] and len(CALLS) == 5
  CALLS.clear()
  res = experiments.run_all(base, runs, train_fn=fake_train, log=lambda s: None)
  assert len(res['skipped']) == 5 and len(res['done']) == 7
  assert CALLS == [r.run_dir for r in runs[5:]]    # only the unfinished ones, in plan order
  CALLS.clear()
  res = experiments.run_all(base, runs, train_fn=fake_train, log=lambda s: None)
  assert CALLS == [] and len(res['skipped']) == 12
  # the config the runner handed over is the run's: method, domains, seed
  cfg = json.load(open(os.path.join(runs[-1].run_dir, 'run_config.json')))
  assert (cfg['method']['name'], cfg['data']['target'], cfg['seed']) == ('mbcd', 'cartoon', 1)
  assert cfg['data']['sources'] == ['human', 'animal']


def test_failed_run_is_reported_and_others_continue(base, tmp_path):
  runs = _plan(base, tmp_path, seeds=(0,))

  def flaky(config, workdir):
    if config.data.target == 'animal':
      raise FloatingPointError('non-finite loss')
    return fake_train(config, workdir)
  res = experiments.run_all(base, runs, train_fn=flaky, log=lambda s: None)
  assert len(res['failed']) == 2 and len(res['done']) == 4
  assert 'FloatingPointError' in res['failed'][0][1]


def test_tables_from_runner(base, tmp_path):
  runs = _plan(base, tmp_path, seeds=(0, 1, 2))
  experiments.run_all(base, runs, train_fn=fake_train, log=lambda s: None)
  paths = tables.write_tables(str(tmp_path), runs=runs)
  md = open(paths['markdown']).read()
  # erm: 40 + seed -> 41 ± 1 on every target; mbcd 51 ± 1
  assert '| V+F+A | erm | 41.0 ± 1.0 | 41.0 ± 1.0 | 41.0 ± 1.0 | 41.0 ± 1.0 |' in md
  assert '| V+F+A | mbcd | 51.0 ± 1.0 |' in md
  assert 'A,C→H | H,C→A | H,A→C | Avg' in md


def test_grids_share_runs(base, tmp_path):
  main = _plan(base, tmp_path, methods=('erm', 'ema', 'mbcd'), seeds=(0,))
  experiments.run_all(base, main, train_fn=fake_train, log=lambda s: None)
  t4 = _plan(base, tmp_path, grid='table4', seeds=(0,))
  CALLS.clear()
  experiments.run_all(base, t4, train_fn=fake_train, log=lambda s: None)
  assert len(CALLS) == 3 * 3   # ema_amd, ema_gcc, ema_dl: erm/ema/mbcd are reused
  labels = [r['variant'] for r in tables.pivot(tables.collect(str(tmp_path), t4),
                                                 'best_val')['rows']]
  assert labels == ['none (erm)', 'ema', 'ema+amd', 'ema+gcc', 'ema+dl', 'mbcd (all)']
  # the imbalance grid's default dominance reuses the plain run; others get their own dirs
  imb = _plan(base, tmp_path, grid='imbalance', methods=('mbcd',), seeds=(0,))
  dirs = {os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(r.run_dir))))
          for r in imb}
  assert dirs == {'mbcd', 'mbcd__dominance=1', 'mbcd__dominance=1.5', 'mbcd__dominance=3'}
  cfg = experiments.make_config(base, [r for r in imb if 'dominance=3' in r.run_dir][0])
  assert cfg.data.synthetic.dominance == 3.0


def test_sweep_and_table5_variants():
  v = experiments.variants('sweep_lambda', ['mbcd'], [0.5])
  assert v[0].overrides == (('method.name', 'mbcd'), ('method.lambda_mm', 0.5),
                            ('method.lambda_um', 0.5))
  assert [x.label for x in experiments.variants('table5')] == [
      'no dropout', 'fixed 0.5', 'adaptive']
  with pytest.raises(ValueError, match='grid'):
    experiments.variants('table9')


def test_cli_parallel_subprocesses_with_injected_train_fn(tmp_path):
  """--parallel=2 runs --run_one subprocesses; the stub comes in as 'module:function'."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.path.join(ROOT, 'tests'))
  cmd = [sys.executable, '-m', 'mbcd_jax.experiments', '--config=configs/hac.py:smoke',
         f'--workdir={tmp_path}', '--methods=erm', '--seeds=0', '--targets=human,animal',
         '--parallel=2', '--devices=0,1', '--train_fn=test_experiments:fake_train']
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert '2 trained, 0 skipped, 0 failed' in out.stdout
  md = open(tmp_path / 'results.md').read()
  assert '| V+F+A | erm | 40.0 ± 0.0 | 40.0 ± 0.0 | 40.0 ± 0.0 |' in md
  again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert '0 trained, 2 skipped' in again.stdout
