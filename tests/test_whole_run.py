"""benchmarks/whole_run.py: the HAC tree it writes as the readers see it, its commands, its dry
run end to end; main's persistent compilation cache setting."""
import json
import os
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from benchmarks import whole_run  # pylint: disable=g-import-not-at-top,wrong-import-position
from conftest import python_env  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_tree_has_the_counts_the_reader_sees(tmp_path):
  from mbcd_jax.data import hac  # pylint: disable=g-import-not-at-top
  counts = {'human': (5, 2), 'animal': (3, 1), 'cartoon': (4, 2)}
  n = whole_run.make_tree(str(tmp_path / 'HAC'), counts, unique=2, frames=8, seconds_audio=0.5)
  assert n == 17
  for d, (n_train, n_test) in counts.items():
    assert len(hac.read_split(str(tmp_path / 'HAC'), d, 'train')[1]) == n_train
    assert len(hac.read_split(str(tmp_path / 'HAC'), d, 'test')[1]) == n_test
  clips, failures = hac.read_clips(str(tmp_path / 'HAC'))
  assert len(clips) == 17 and not failures


def test_hac_counts_and_commands():
  assert sum(tr + te for tr, te in whole_run.HAC_COUNTS.values()) == 3381
  args = whole_run.argparse.Namespace(epochs=20, cache_dir='/c', loader_workers=4, batch=0,
                                      dtype='bfloat16', dry_run=False, extra=['--config.x=1'])
  cmd = whole_run.train_command(args, '/store', 'animal', '/w')
  assert '--config.data.sources=human,cartoon' in cmd and '--config.data.target=animal' in cmd
  assert '--compilation_cache=/c' in cmd and '--config.train.epochs=20' in cmd
  assert '--config.model.encoders.video.dtype=bfloat16' in cmd and cmd[-1] == '--config.x=1'
  assert not any('clip.' in a or 'depth' in a for a in cmd)   # the paper's shapes


def test_compilation_cache_setting():
  from mbcd_jax import main  # pylint: disable=g-import-not-at-top
  assert main.compilation_cache_dir('auto', 'gpu', None) == os.path.expanduser(
      '~/.cache/mbcd_jax/xla')
  assert main.compilation_cache_dir('auto', 'tpu', None)
  assert main.compilation_cache_dir('auto', 'cpu', None) is None
  assert main.compilation_cache_dir('off', 'gpu', None) is None
  assert main.compilation_cache_dir('auto', 'gpu', '/env') is None   # JAX's own setting wins
  assert main.compilation_cache_dir('/tmp/x', 'cpu', None) == '/tmp/x'


@pytest.mark.skipif(os.environ.get('MBCD_E2E') != '1' and os.cpu_count() < 4,
                    reason='several minutes of XLA compile on small hosts; MBCD_E2E=1 runs it')
def test_dry_run_times_every_phase(tmp_path):
  res = subprocess.run(
      [sys.executable, '-m', 'benchmarks.whole_run', f'--out={tmp_path}',
       '--dry_run', '--targets=human,animal'],
      cwd=str(tmp_path), env=python_env(JAX_PLATFORMS='cpu'), capture_output=True,
      text=True, timeout=1800)
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  doc = json.loads((tmp_path / 'whole_run.json').read_text())
  names = [p['phase'] for p in doc['phases']]
  assert names[:2] == ['1 tree (HAC layout, linked copies)', '2 prepare']
  runs = doc['phases'][2:]
  assert [r['phase'] for r in runs] == ['3 train + evaluate, target human',
                                        '4 train + evaluate, target animal']
  for r in runs:
    assert r['evaluations'] == 1 and r['split'] and r['wall_s'] > 0
  assert os.listdir(tmp_path / 'xla_cache')   # the second run could load the first's step
  assert '| total |' in res.stdout
