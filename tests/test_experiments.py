"""The protocol runner: planning, resume (finished runs are skipped), grids, tables, CLI."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from mbcd_jax import preemption
from mbcd_jax.study import experiments, tables
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



def _sigterm_self():
  os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_stops_the_run_in_progress_and_the_runner(base, tmp_path):
  """parallel=1: the run's Watcher gets the signal (the run saves and raises Preempted) and no
  further run starts; SIGTERM's handler is the caller's again afterwards."""
  runs = _plan(base, tmp_path, seeds=(0,))
  before = signal.getsignal(signal.SIGTERM)
  calls = []

  def preempted_mid_run(config, workdir):
    calls.append(workdir)
    w = preemption.Watcher()
    try:
      for step in range(1, 10):
        if step == 2:
          _sigterm_self()
        if w.should_stop(step):
          raise preemption.Preempted(step, f'{workdir}/checkpoints/{step}')
    finally:
      w.close()
    return fake_train(config, workdir)
  res = experiments.run_all(base, runs, train_fn=preempted_mid_run, log=lambda s: None)
  assert calls == [runs[0].run_dir] and not res['done'] and not res['failed']
  assert res['preempted'] == f'checkpoint at step 2 saved in {runs[0].run_dir}/checkpoints/2'
  assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_before_the_watcher_exists_stops_at_the_first_step(base, tmp_path):
  """A notice while the run builds (no Watcher yet) is inherited by its Watcher."""
  runs = _plan(base, tmp_path, seeds=(0,))
  stops = []

  def signalled_while_building(config, workdir):
    del config, workdir
    _sigterm_self()
    w = preemption.Watcher()
    stops.append(w.should_stop(1))
    w.close()
    raise preemption.Preempted(1, 'x')
  res = experiments.run_all(base, runs, train_fn=signalled_while_building, log=lambda s: None)
  assert stops == [True] and res['preempted'] == 'checkpoint at step 1 saved in x'


def test_sigterm_to_a_run_that_finishes_anyway_starts_no_other(base, tmp_path):
  """A notice after a run's last step: that run is done, the next one does not start."""
  runs = _plan(base, tmp_path, seeds=(0,))
  CALLS.clear()

  def finishes(config, workdir):
    _sigterm_self()
    return fake_train(config, workdir)
  res = experiments.run_all(base, runs, train_fn=finishes, log=lambda s: None)
  assert CALLS == [runs[0].run_dir] and res['done'] == [runs[0].run_dir]
  assert res['preempted'] == f'SIGTERM: stopped before {runs[1].run_dir}'



def waits_for_sigterm(config, workdir):
  """A ``--parallel`` child (imported by its module path): "trains" until its Watcher stops it."""
  w = preemption.Watcher()
  open(os.path.join(workdir, 'started'), 'w').close()
  for step in range(1, 12000):
    if w.should_stop(step):
      raise preemption.Preempted(step, workdir)
    time.sleep(0.01)
  return fake_train(config, workdir)


def test_parallel_runner_passes_sigterm_on_to_its_children(base, tmp_path, monkeypatch):
  runs = _plan(base, tmp_path, seeds=(0,))
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join([os.path.dirname(__file__), ROOT]))

  def sigterm_once_both_train():
    t = time.time()
    while (sum(os.path.exists(os.path.join(r.run_dir, 'started')) for r in runs) < 2
           and time.time() - t < 120):
      time.sleep(0.05)
    _sigterm_self()
  threading.Thread(target=sigterm_once_both_train, daemon=True).start()
  res = experiments.run_all(base, runs, train_fn='test_experiments:waits_for_sigterm',
                            parallel=2, log=lambda s: None)
  assert res['preempted'] == 'SIGTERM: passed on to 2 run(s); 4 not started'
  assert not res['failed'] and not res['done']
  for r in runs[:2]:
    with open(os.path.join(r.run_dir, 'stdout.log')) as f:
      last = f.read().strip().splitlines()[-1]
    assert last.startswith('mbcd_jax: preempted: checkpoint at step '), last
  assert not any(os.path.exists(r.run_dir) for r in runs[2:])


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
  cmd = [sys.executable, '-m', 'mbcd_jax.study.experiments', '--config=configs/hac.py:smoke',
         f'--workdir={tmp_path}', '--methods=erm', '--seeds=0', '--targets=human,animal',
         '--parallel=2', '--devices=0,1', '--train_fn=test_experiments:fake_train']
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert '2 trained, 0 skipped, 0 failed' in out.stdout
  md = open(tmp_path / 'results.md').read()
  assert '| V+F+A | erm | 40.0 ± 0.0 | 40.0 ± 0.0 | 40.0 ± 0.0 |' in md
  again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert '0 trained, 2 skipped' in again.stdout


def test_paper_grids_plan_modality_blocks(base, tmp_path):
  v = experiments.variants('table1', None)
  assert [x.label for x in v] == ['ERM', 'RNA-Net', 'SimMMDG', 'MOOSA', 'CMRF', 'MBCD']
  assert [x.label for x in experiments.variants('table2', ['mbcd', 'erm'])] == ['ERM', 'MBCD']
  with pytest.raises(ValueError, match=r"\['ema'\] are not in --grid=table1"):
    experiments.variants('table1', ['ema', 'mbcd'])
  # the MMDG benchmark's other peers: on request only, before MBCD
  assert [x.label for x in experiments.variants('table1', ['mbcd', 'nel', 'jat', 'erm'])] == [
      'ERM', 'JAT', 'NEL', 'MBCD']
  assert [x.label for x in experiments.variants('table2', ['gmp', 'mbcd', 'jat'])] == [
      'JAT', 'GMP', 'MBCD']
  protocol, mods = experiments.PAPER_GRIDS['table1']
  runs = experiments.plan(str(tmp_path), base, protocol=protocol, variant_list=v,
                          modality_sets=mods, seeds=(0, 1), modalities_first=True)
  assert len(runs) == 6 * 4 * 3 * 2
  first = [os.path.relpath(r.run_dir, tmp_path) for r in runs[:7]]
  assert first[:2] == [os.path.join('erm', 'video_audio', 'animal+cartoon_to_human', f'seed{s}')
                       for s in (0, 1)]
  assert first[6] == os.path.join('rna', 'video_audio', 'animal+cartoon_to_human', 'seed0')
  # rows in the paper's order: a block of the six methods per modality set
  blocks = []
  for r in runs:
    meta = dict(r.meta)
    key = (tables.modality_label(meta['modalities']), meta['variant'], meta['order'])
    if key not in blocks:
      blocks.append(key)
  assert [b[:2] for b in blocks[:7]] == [('V+A', m) for m, _ in experiments.PAPER_METHODS] + [
      ('V+F', 'ERM')]
  assert [b[2] for b in blocks] == list(range(24))
  assert blocks[-1][:2] == ('V+F+A', 'MBCD')


def _cli(tmp_path, *flags):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'mbcd_jax.study.experiments',
                         f'--workdir={tmp_path}', '--dry_run', '--seeds=0', *flags],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_cli_dry_run_lists_the_paper_grids(tmp_path):
  out = _cli(tmp_path, '--config=configs/hac.py:smoke', '--grid=table1', '--methods=erm,cmrf')
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.splitlines()
  rel = [l.split()[1][len(str(tmp_path)) + 1:] for l in lines]
  assert len(lines) == 2 * 4 * 3 and all(l.startswith('todo  ') for l in lines)
  assert rel[:4] == ['erm/video_audio/animal+cartoon_to_human/seed0',
                     'erm/video_audio/human+cartoon_to_animal/seed0',
                     'erm/video_audio/human+animal_to_cartoon/seed0',
                     'cmrf/video_audio/animal+cartoon_to_human/seed0']
  assert [r.split('/')[1] for r in rel[::6]] == ['video_audio', 'video_flow', 'flow_audio',
                                                 'video_flow_audio']
  # single-source V+F+A; the authors' recipe (CMRF: 15 epochs) in its own directory
  out = _cli(tmp_path, '--config=configs/epic.py:smoke', '--grid=table2', '--methods=cmrf,mbcd',
             '--config.train.recipe=authors')
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.splitlines()
  assert len(lines) == 2 * 6
  assert lines[0].endswith('cmrf__recipe=authors/video_flow_audio/D1_to_D2/seed0  epochs=15')
  assert lines[6].endswith('/mbcd/video_flow_audio/D1_to_D2/seed0  epochs=1')
  # a per-setting recipe has no single-source command: refused before any training
  out = _cli(tmp_path, '--config=configs/hac.py:smoke', '--grid=table2', '--methods=simmmdg',
             '--config.train.recipe=authors')
  assert out.returncode != 0 and 'none for the single-source run' in out.stderr
  assert not os.path.exists(tmp_path / 'simmmdg__recipe=authors')


def test_table_options_paper_numbers_on_real_data_only(base):
  kw = experiments.table_options(base, 'multi_source', paper=True, name='table1')
  assert kw['paper'] is None and 'left out' in kw['header'][-1]
  assert kw['header'][0].startswith("Recipe: config.train.recipe='shared'")
  real = common.load_config(os.path.join(ROOT, 'configs/epic.py'))
  kw = experiments.table_options(real, 'single_source', paper=True, name='table2')
  assert kw['paper'] == ('single_source', 'epic') and len(kw['header']) == 2
  assert "target domain's test split" in kw['header'][1]
  assert experiments.table_options(real, 'multi_source', paper=False)['paper'] is None
