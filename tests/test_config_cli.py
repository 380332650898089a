"""Configs and the command line: paper recipe, overrides, one-line errors, an end-to-end run."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from mbcd_jax import config_lib


def _load(name):
  path = os.path.join(ROOT, 'configs', name)
  spec = importlib.util.spec_from_file_location(name[:-3], path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _cli(*args, timeout=300):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run([sys.executable, '-m', 'mbcd_jax.main', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('name,domains,classes', [('hac.py', ('human', 'animal', 'cartoon'), 7),
                                                  ('epic.py', ('D1', 'D2', 'D3'), 8)])
def test_paper_recipe(name, domains, classes):
  c = _load(name).get_config()
  assert tuple(c.data.domains) == domains and c.data.num_classes == classes
  assert (c.optim.lr, c.optim.weight_decay, c.data.batch_size, c.train.epochs) == (
      1e-4, 1e-4, 16, 20)
  assert (c.method.alpha, c.method.ema_beta, c.method.lambda_mm, c.method.lambda_um) == (
      1e-4, 0.999, 1.0, 1.0)
  assert c.model.encoders.video.name == 'slowfast_r101'
  spec = config_lib.validate(config_lib.normalize(c))
  assert spec.amd == 'adaptive' and spec.consistency == 'inner_first_order'
  assert spec.ema and spec.distill


def test_unknown_config_argument():
  with pytest.raises(ValueError, match='unknown argument'):
    _load('hac.py').get_config('synthetc')


@pytest.mark.parametrize('field,value,match', [
    ('data.target', 'robot', "unknown domain 'robot'"),
    ('data.modalities', ('video', 'smell'), "unknown modality 'smell'"),
    ('method.name', 'mbcdd', "unknown method 'mbcdd'"),
    ('method.consistency', 'third_order', "unknown mode 'third_order'"),
    ('data.target', 'animal', 'also a source domain'),
    ('method.ema_beta', 1.5, 'ema_beta'),
])
def test_validate_names_the_bad_field(field, value, match):
  c = _load('hac.py').get_config('synthetic')
  group, key = field.split('.')
  c[group][key] = value
  with pytest.raises(ValueError, match=match):
    config_lib.validate(config_lib.normalize(c))


def test_distill_without_teacher_is_refused():
  c = _load('hac.py').get_config('synthetic')
  c.method.name, c.method.distill = 'erm', True
  with pytest.raises(ValueError, match='needs the EMA teacher'):
    config_lib.validate(c)


def test_comma_separated_overrides_become_tuples():
  c = _load('hac.py').get_config('synthetic')
  c.data.sources = ('human,animal',)
  c.data.target = 'cartoon'
  c = config_lib.normalize(c)
  assert c.data.sources == ('human', 'animal')
  config_lib.validate(c)


@pytest.mark.parametrize('override,match', [
    ('--config.method.nme=erm', 'unknown config key'),
    ('--config.train.epochs=abc', 'epochs'),
    ('--config.data.target=robot', "unknown domain 'robot'"),
    ('--config.method.amd=sometimes', "unknown mode 'sometimes'"),
])
def test_cli_errors_are_one_line(tmp_path, override, match):
  res = _cli('--config=configs/hac.py:smoke', f'--workdir={tmp_path}', override, timeout=120)
  assert res.returncode == 2, res.stderr[-2000:]
  err = [l for l in res.stderr.splitlines() if l.startswith('mbcd_jax: error')]
  assert len(err) == 1 and match in err[0], res.stderr[-2000:]
  assert 'Traceback' not in res.stderr


def test_cli_end_to_end_smoke(tmp_path):
  res = _cli('--config=configs/hac.py:smoke', f'--workdir={tmp_path}',
             '--config.train.epochs=2', '--config.data.modalities=flow,audio')
  assert res.returncode == 0, res.stderr[-3000:]
  assert 'test (unseen domain, last epoch): fused' in res.stdout
  summary = json.loads((tmp_path / 'summary.json').read_text())
  assert summary['evaluated'] == 'teacher' and summary['steps'] == 8
  for sel in ('best_val', 'last'):
    for split in ('val', 'test'):
      accs = summary[sel][split]
      assert 0.0 <= accs['teacher/fused'] <= 100.0
      assert set(k for k in accs if k.startswith('teacher/')) >= {
          'teacher/fused', 'teacher/flow', 'teacher/audio'}
      assert 'teacher/video' not in accs
  rows = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert any(r['kind'] == 'train' for r in rows)
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))
  # One val and one test row per epoch; the summary's rows are the logged ones: 'best_val' the
  # epoch with the highest teacher val accuracy (the first on ties), 'last' the last epoch.
  evals = {k: [{n: v for n, v in r.items() if n not in ('step', 'kind')}
               for r in rows if r['kind'] == k] for k in ('val', 'test')}
  assert [r['step'] for r in rows if r['kind'] == 'val'] == [4, 8]
  accs = [r['teacher/fused'] for r in evals['val']]
  best = accs.index(max(accs))
  assert summary['best_val'] == {'epoch': best + 1, 'val': evals['val'][best],
                                 'test': evals['test'][best]}
  assert summary['last'] == {'epoch': 2, 'val': evals['val'][-1], 'test': evals['test'][-1]}
