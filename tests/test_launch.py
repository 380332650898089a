"""launch/: every script parses (bash -n), prints the right commands under DRY_RUN=1, and the
grid path runs for real: make_grid.sh -> slurm_grid.sbatch tasks (no SLURM needed: a task is one
`python -m mbcd_jax.main`) -> gather.py; local.sh trains the smoke benchmark."""
import glob
import json
import os
import subprocess
import sys

import pytest

import _runs  # pylint: disable=g-import-not-at-top

LAUNCH = os.path.join(_runs.ROOT, 'launch')
SCRIPTS = sorted(glob.glob(os.path.join(LAUNCH, '*.sh')) +
                 glob.glob(os.path.join(LAUNCH, '*.sbatch')))


def _bash(script, env=None, args=(), check=True):
  e = _runs.env(**(env or {}))
  for k in ('SLURM_JOB_ID', 'SLURM_ARRAY_TASK_ID', 'SLURM_SUBMIT_DIR', 'SLURM_RESTART_COUNT'):
    if k not in (env or {}):
      e.pop(k, None)
  r = subprocess.run(['bash', os.path.join(LAUNCH, script), *args], env=e, cwd=_runs.ROOT,
                     capture_output=True, text=True, timeout=300)
  if check:
    assert r.returncode == 0, r.stderr[-3000:]
  return r


def _commands(r):
  return [l[2:] for l in r.stdout.splitlines() if l.startswith('+ ')]


def test_scripts_exist_and_parse():
  names = {os.path.basename(s) for s in SCRIPTS}
  assert {'local.sh', 'tpu_vm.sh', 'slurm.sbatch', 'slurm_grid.sbatch', 'make_grid.sh'} <= names
  for s in SCRIPTS:
    r = subprocess.run(['bash', '-n', s], capture_output=True, text=True)
    assert r.returncode == 0, f'{s}: {r.stderr}'
    with open(s) as f:
      text = f.read()
    if not s.endswith('common.sh'):
      assert 'Variables' in text, f'{s} documents its variables'
    if not s.endswith(('common.sh', 'make_grid.sh')):   # make_grid.sh only prints
      assert 'DRY_RUN' in text, f'{s} has a dry run'
  assert os.path.exists(os.path.join(LAUNCH, 'README.md'))


def test_local_dry_run():
  r = _bash('local.sh', {'DRY_RUN': '1', 'CONFIG': 'configs/hac.py:smoke', 'WORKDIR': 'w',
                         'PYTHON': 'py'}, args=['--config.train.epochs=2'])
  assert _commands(r) == ['py -m mbcd_jax.main --config=configs/hac.py:smoke --workdir=w '
                          '--config.train.epochs=2']


def test_slurm_dry_run():
  r = _bash('slurm.sbatch', {'DRY_RUN': '1', 'CONFIG': 'configs/epic.py', 'WORKDIR': '/s/r',
                             'EXTRA_ARGS': '--config.data.dir=/d --config.data.target=D1'})
  assert _commands(r) == ['srun --kill-on-bad-exit=0 --export=ALL python3 -m mbcd_jax.main '
                          '--config=configs/epic.py --workdir=/s/r --config.data.dir=/d '
                          '--config.data.target=D1']
  with open(os.path.join(LAUNCH, 'slurm.sbatch')) as f:
    text = f.read()
  for directive in ('--ntasks-per-node', '--gpus-per-task=1', '--signal=TERM@', '--requeue'):
    assert f'#SBATCH {directive}' in text


def test_tpu_vm_dry_run():
  r = _bash('tpu_vm.sh', {'DRY_RUN': '1', 'TPU_NAME': 'tpu1', 'ZONE': 'us-central2-b',
                          'ACCELERATOR_TYPE': 'v4-16', 'SPOT': '1', 'GCS_BUCKET': 'bkt',
                          'WORKDIR': '/mnt/gcs/runs/x', 'CONFIG': 'configs/hac.py'})
  cmds = _commands(r)
  assert cmds[0] == ('gcloud compute tpus tpu-vm create tpu1 --zone=us-central2-b '
                     '--accelerator-type=v4-16 --version=tpu-ubuntu2204-base --spot')
  ssh = [c for c in cmds if ' ssh ' in c]
  assert len(ssh) == 2 and all('--worker=all' in c for c in ssh)
  assert 'gcsfuse' in ssh[0] and 'bkt' in ssh[0]
  assert 'MBCD_DISTRIBUTED=auto' in ssh[1] and 'mbcd_jax.main' in ssh[1]
  assert '--workdir=/mnt/gcs/runs/x' in ssh[1]
  pulls = [c for c in cmds if ' scp tpu1:' in c]
  assert len(pulls) == 2     # v4-16: two workers' logs
  r = _bash('tpu_vm.sh', {'DRY_RUN': '1', 'TPU_NAME': 't', 'ZONE': 'z', 'ACTION': 'delete'})
  assert _commands(r) == ['gcloud compute tpus tpu-vm delete t --zone=z --quiet']
  r = _bash('tpu_vm.sh', {'DRY_RUN': '1', 'ZONE': 'z'}, check=False)
  assert r.returncode != 0 and 'TPU_NAME' in r.stderr


def test_make_grid_and_grid_dry_run(tmp_path):
  grid = tmp_path / 'grid.tsv'
  grid.write_text(_bash('make_grid.sh').stdout)
  lines = [l for l in grid.read_text().splitlines() if l and not l.startswith('#')]
  assert len(lines) == 3 * 3 * 3
  assert lines[0] == ('erm/human/seed0\t--config.method.name=erm --config.data.target=human '
                      "--config.data.sources=('animal','cartoon') --config.seed=0")
  r = _bash('slurm_grid.sbatch', {'DRY_RUN': '1', 'GRID': str(grid), 'ROOT': '/r',
                                  'SLURM_ARRAY_TASK_ID': '26', 'PYTHON': 'py'})
  assert _commands(r) == ['py -m mbcd_jax.main --config=configs/hac.py:synthetic '
                          '--workdir=/r/mbcd/cartoon/seed2 --config.method.name=mbcd '
                          "--config.data.target=cartoon --config.data.sources=\\(\\'human\\'\\,\\'animal\\'\\) "
                          '--config.seed=2']
  r = _bash('slurm_grid.sbatch', {'DRY_RUN': '1', 'GRID': str(grid), 'SLURM_ARRAY_TASK_ID': '27'},
            check=False)
  assert r.returncode == 2 and 'has no line 27' in r.stderr


def test_grid_runs_for_real_then_gather(tmp_path):
  grid = tmp_path / 'grid.tsv'
  grid.write_text(_bash('make_grid.sh', {'METHODS': 'mbcd', 'SEEDS': '0 1',
                                         'TARGETS': 'human'}).stdout)
  root = tmp_path / 'study'
  env = {'GRID': str(grid), 'ROOT': str(root), 'CONFIG': 'configs/hac.py:smoke',
         'PYTHON': sys.executable}
  for task in ('0', '1'):
    _bash('slurm_grid.sbatch', {**env, 'SLURM_ARRAY_TASK_ID': task})
  r = _bash('slurm_grid.sbatch', {**env, 'SLURM_ARRAY_TASK_ID': '0'})   # finished: skipped
  assert 'is finished' in r.stderr
  r = subprocess.run([sys.executable, os.path.join(LAUNCH, 'gather.py'), str(root)],
                     capture_output=True, text=True, timeout=60)
  assert r.returncode == 0, r.stderr
  seeds = []
  for s in (0, 1):
    with open(root / 'mbcd' / 'human' / f'seed{s}' / 'summary.json') as f:
      seeds.append(json.load(f)['best_val']['test']['teacher/fused'])
  table = (root / 'grid.md').read_text()
  import numpy as np  # pylint: disable=g-import-not-at-top
  mean, std = np.mean(seeds), np.std(seeds, ddof=1)
  assert f'| mbcd | {mean:.2f} ± {std:.2f} (n=2) |' in table, table
  assert len((root / 'grid.csv').read_text().splitlines()) == 3


def test_local_runs_for_real(tmp_path):
  launched, direct = tmp_path / 'launched', tmp_path / 'direct'
  _bash('local.sh', {'CONFIG': 'configs/hac.py:smoke', 'WORKDIR': str(launched),
                     'PYTHON': sys.executable})
  r = _runs.run(str(direct))
  assert r.returncode == 0, r.stderr[-3000:]
  # The launcher's run is the direct run: same summary, metrics rows, checkpoints and weights.
  assert _runs.summary(str(launched)) == _runs.summary(str(direct))
  env = _runs.summary(str(direct))['environment']   # the machine it ran on is recorded
  assert env['libraries']['jax'] and env['cpu']['model'] and env['platform'] == 'cpu'
  assert _runs.rows(str(launched)) == _runs.rows(str(direct))
  assert _runs.checkpoint_steps(str(launched)) == _runs.checkpoint_steps(str(direct)) == [4]
  _runs.assert_bitwise_equal(_runs.final_state(str(launched)), _runs.final_state(str(direct)))
