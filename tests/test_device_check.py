"""benchmarks/device_check.py: its dry run takes every path and reports every part."""
import json
import math
import os
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from benchmarks import device_check  # pylint: disable=g-import-not-at-top,wrong-import-position

PARTS = ('parity', 'perf', 'torch', 'max_batch', 'pipeline')


def test_peaks_by_device_kind():
  assert device_check.peak_tflops('NVIDIA H200') == {'bfloat16': 989.0, 'float32': 494.0}
  assert device_check.peak_tflops('TPU v5 lite')['bfloat16'] == 197.0
  assert device_check.peak_tflops('TPU v5p')['bfloat16'] == 459.0
  assert device_check.peak_tflops('cpu') is None


def test_cfg_reads_like_a_config():
  c = device_check.Cfg(a=1, sub={'b': 2})
  assert c.a == 1 and c.sub.b == 2 and c.get('zz', 3) == 3
  assert not hasattr(c, 'missing')   # models.build_model probes to_dict / attributes


def test_markdown_has_every_row_and_skip():
  md = device_check.markdown({'meta': {'x': 1}, 'parts': {
      'a': {'rows': [{'k': 1.5}, {'k': 2.0, 'j': 'OOM'}], 'notes': ['n1']},
      'b': {'rows': [], 'notes': [], 'skipped': 'grain missing'}}})
  assert '| k | j |' in md and '| 2 | OOM |' in md and '- n1' in md
  assert 'skipped: grain missing' in md


def _numbers(row):
  return [v for v in row.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]


def test_dry_run_reports_every_part(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  res = subprocess.run(
      [sys.executable, '-m', 'benchmarks.device_check',
       f'--out={tmp_path}', '--dry_run'],
      cwd=_ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert res.returncode == 0, res.stderr[-3000:]
  assert '] part torch finished' in res.stdout   # progress lines with elapsed time
  data = json.loads((tmp_path / 'device_check.json').read_text())
  assert data['meta']['dry_run'] is True
  for name in PARTS:
    part = data['parts'][name]
    assert 'error' not in part, (name, part['error'])
    if part.get('skipped'):
      assert isinstance(part['skipped'], str) and part['skipped'], name
      continue
    assert part['rows'], name
    for row in part['rows']:
      nums = _numbers(row)
      assert nums and all(math.isfinite(v) for v in nums), (name, row)
  parity = data['parts']['parity']['rows']
  if parity:   # the dry run's 'accelerator' is the CPU: float32 runs agree exactly
    f32 = [r for r in parity if r['dtype'] == 'float32']
    assert f32 and all(r['params max|d|'] == 0.0 for r in f32)
  perf = data['parts']['perf']['rows']
  assert perf and all(r['step_ms'] > 0 and r['TFLOP/step'] > 0 for r in perf)
  md = (tmp_path / 'device_check.md').read_text()
  assert md.startswith('# Accelerator check') and '## pipeline' in md


def test_imports_without_the_pipeline_packages():
  """The accelerator image lacks ml_collections, grain, array_record, PyAV and tensorboardX: the
  script (and the model, step and method modules it imports) must load without them."""
  blocked = ('ml_collections', 'grain', 'array_record', 'av', 'tensorboardX')
  code = (f'import sys\nfor m in {blocked!r}: sys.modules[m] = None\n'
          'from benchmarks import device_check\nprint("imported")')
  res = subprocess.run([sys.executable, '-c', code], cwd=_ROOT, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=300)
  assert res.returncode == 0 and 'imported' in res.stdout, res.stderr[-2000:]


def test_flops_only_counts_the_lowered_step(tmp_path):
  """--flops_only lowers each perf row on abstract shapes: MBCD's step (three student/teacher
  stage passes, the inner backward) costs more than ERM's, both more than zero."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  res = subprocess.run(
      [sys.executable, '-m', 'benchmarks.device_check',
       f'--out={tmp_path}', '--dry_run', '--flops_only'],
      cwd=_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stderr[-3000:]
  rows = {r['method']: r for r in json.loads((tmp_path / 'flops.json').read_text())}
  assert rows['erm']['TFLOP/step'] > 0
  assert rows['mbcd']['TFLOP/step'] > 1.5 * rows['erm']['TFLOP/step']


def test_trace_times_reads_device_events(tmp_path):
  """The profile part's reduction: device events (by hlo_op) of the train step only, host
  events ignored when a device process is named."""
  import gzip  # pylint: disable=g-import-not-at-top
  events = [
      {'ph': 'M', 'name': 'process_name', 'pid': 1, 'args': {'name': '/host:CPU'}},
      {'ph': 'M', 'name': 'process_name', 'pid': 2, 'args': {'name': '/device:GPU:0'}},
      {'ph': 'X', 'pid': 2, 'name': 'k1', 'dur': 5.0,
       'args': {'hlo_op': 'fusion.1', 'hlo_module': 'jit_train_step'}},
      {'ph': 'X', 'pid': 2, 'name': 'k1', 'dur': 7.0,
       'args': {'hlo_op': 'fusion.1', 'hlo_module': 'jit_train_step'}},
      {'ph': 'X', 'pid': 2, 'name': 'k2', 'dur': 3.0,
       'args': {'hlo_op': 'convolution.4', 'hlo_module': 'jit_train_step'}},
      {'ph': 'X', 'pid': 2, 'name': 'k3', 'dur': 100.0,
       'args': {'hlo_op': 'fusion.1', 'hlo_module': 'jit_other'}},
      {'ph': 'X', 'pid': 1, 'name': 'thunk', 'dur': 50.0,
       'args': {'hlo_op': 'fusion.1', 'hlo_module': 'jit_train_step'}}]
  d = tmp_path / 'plugins' / 'profile' / 'run'
  d.mkdir(parents=True)
  with gzip.open(d / 'host.perfetto_trace.json.gz', 'wt') as f:
    json.dump({'traceEvents': events}, f)
  assert device_check.trace_times(str(tmp_path)) == {'fusion.1': 12.0, 'convolution.4': 3.0}
  assert device_check.trace_times(str(tmp_path / 'none')) == {}


def test_next_plan_dry_run(tmp_path):
  """--plan=next: the profile part maps the traced ops to the roofline groups; the perf part
  runs the first check's cut rows (here ERM at batch 4); compilation cache in DIR/xla_cache."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  res = subprocess.run(
      [sys.executable, '-m', 'benchmarks.device_check',
       f'--out={tmp_path}', '--dry_run', '--plan=next', '--parts=profile,perf',
       '--budget_s=3000'],
      cwd=_ROOT, env=env, capture_output=True, text=True, timeout=1800)
  assert res.returncode == 0, res.stderr[-3000:]
  data = json.loads((tmp_path / 'device_check.json').read_text())
  assert data['meta']['plan'] == 'next'
  prof = data['parts']['profile']
  assert 'error' not in prof, prof.get('error')
  groups = {r['group']: r for r in prof['rows']}
  assert 'trunk convs' in groups and groups['trunk convs']['measured ms/step'] > 0
  assert sum(r['measured ms/step'] for r in prof['rows']) > 0
  assert (tmp_path / 'trace').is_dir() and (tmp_path / 'train_step.compiled.hlo').exists()
  (row,) = data['parts']['perf']['rows']
  assert (row['method'], row['batch']) == ('erm', 4) and row['step_ms'] > 0
  assert os.listdir(tmp_path / 'xla_cache')
