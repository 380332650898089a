"""docs/study/paper_regime/paired.py: the paired statistics the study quotes, on hand-made rows."""
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = ('variant,modalities,setting,target,seed,rule,epoch,epochs,val,fused,student_fused,'
          'pretrained,machine,video,flow,audio\n')


def _write(path, rows):
  with open(path, 'w') as f:
    f.write(HEADER)
    for variant, target, seed, rule, fused, student in rows:
      f.write(f'{variant},V+F+A,to_{target},{target},{seed},{rule},100,100,100.0,{fused},{student},,,0,0,0\n')
  return str(path)


def _run(*args):
  return subprocess.run([sys.executable, '-m', 'docs.study.paper_regime.paired', *args],
                        capture_output=True, text=True, cwd=ROOT)


def _rows(variant, fused, seed=0):
  targets = ('human', 'animal', 'cartoon')
  return [(variant, t, seed, rule, f, f - 1) for t, f in zip(targets, fused)
          for rule in ('last', 'best_val')]


def test_mean_se_wins_and_sign_test(tmp_path):
  a = _write(tmp_path / 'a_runs.csv', _rows('new', [90, 80, 70]) + _rows('new', [91, 81, 71], 1))
  b = _write(tmp_path / 'b_runs.csv', _rows('ref', [88, 80, 65]) + _rows('ref', [90, 79, 60], 1))
  out = _run('new', 'ref', a, b)
  assert out.returncode == 0, out.stderr
  first = out.stdout.splitlines()[0]
  d = [2, 0, 5, 1, 2, 11]  # new − ref per (seed, target)
  mean = sum(d) / 6
  se = math.sqrt(sum((x - mean) ** 2 for x in d) / 5) / math.sqrt(6)
  assert f'{mean:+.1f} ± {se:.1f}' in first
  # 5 wins, 1 tie: the sign test runs over the 5 untied pairs, two-sided 2 * (1/2)^5.
  assert '(5 wins, 1 ties / 6; sign test p 0.06)' in first
  assert first.startswith('last     fused')


def test_seeds_filter_and_alias(tmp_path):
  a = _write(tmp_path / 'a_runs.csv', _rows('ema+gcc', [90, 80, 70]) + _rows('ema_gcc', [80, 80, 80], 1))
  b = _write(tmp_path / 'b_runs.csv', _rows('ema', [89, 79, 69]) + _rows('ema', [90, 90, 90], 1))
  out = _run('ema_gcc', 'ema', '--seeds=0', '--alias=ema_gcc:ema+gcc', a, b)
  assert out.returncode == 0, out.stderr
  assert '+1.0 ± 0.0 (3 wins, 0 ties / 3' in out.stdout.splitlines()[0]


def test_refuses_files_that_disagree_on_a_run(tmp_path):
  a = _write(tmp_path / 'a_runs.csv', _rows('new', [90, 80, 70]))
  a2 = _write(tmp_path / 'a2_runs.csv', _rows('new', [90, 80, 71]))
  b = _write(tmp_path / 'b_runs.csv', _rows('ref', [88, 80, 65]))
  out = _run('new', 'ref', a, a2, b)
  assert out.returncode != 0
  assert 'a2_runs.csv' in out.stderr and 'cartoon' in out.stderr


@pytest.mark.parametrize('args', [('new', 'missing'), ('new', 'ref', '--alias=bad')])
def test_clear_errors(tmp_path, args):
  a = _write(tmp_path / 'a_runs.csv', _rows('new', [90, 80, 70]) + _rows('ref', [1, 2, 3]))
  out = _run(*args[:2], a, *args[2:])
  assert out.returncode != 0
  assert 'no (seed, target) pair' in out.stderr or 'expected NAME:OTHER' in out.stderr
