"""The real-data path end to end (benchmarks/paper_path.py): an EPIC tree in the release layout
-> prepare -> PyTorch checkpoints in the released layouts -> the README's convert commands ->
the README's train command (2 steps, evaluate, checkpoint) -> resume with one more epoch.

``--ci`` (runs in CI): narrow, shallow encoders (SlowFast and SlowOnly with one block per stage,
8 channels; audio ResNet-18 with 8) on small inputs (RGB 8x32x32, flow 2x32x32, audio 257x101);
then the run is killed (SIGKILL) after a checkpoint and re-run with the same command, which
must end bit for bit where the uninterrupted run ended.
``--tiny`` (``MBCD_E2E=1``): the paper's input shapes (RGB 32x224x224, flow 8x224x224, audio
257x1004) and depth-50 nets: XLA's compile of the deep encoders (init, train step, eval)
dominates, about 17 minutes on 2 busy cores (the resumed run reuses the persistent compilation
cache and takes a fraction of that)."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import _runs

pytest.importorskip('torch')
e2e = pytest.mark.skipif(os.environ.get('MBCD_E2E') != '1',
                         reason='minutes of XLA compile; set MBCD_E2E=1 to run')


def _walk(out, mode: str, timeout: float) -> dict:
  p = subprocess.run([sys.executable, '-m', 'benchmarks.paper_path',
                      f'--out={out}', f'--{mode}', '--workers=1'], cwd=_runs.ROOT,
                     env=_runs.env(), capture_output=True, text=True, timeout=timeout)
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
  with open(out / 'paper_path.json') as f:
    doc = json.load(f)
  phases = {ph['phase'].split(' ')[0]: ph for ph in doc['phases']}
  assert list(phases) == ['1', '2', '3', '4.1', '4.2', '4.3', '5-7', '8']
  train, resume = phases['5-7'], phases['8']
  # The first run trains 2 steps from scratch, evaluates and checkpoints; the second resumes
  # from that checkpoint (it does not recompute steps 1-2) and trains steps 3-4.
  assert (train['steps'], train['resumed_from_step'], train['train_steps_run']) == (2, 0, [1, 2])
  assert (resume['steps'], resume['resumed_from_step'], resume['train_steps_run']) == (4, 2,
                                                                                      [3, 4])
  assert 'resumed from' in resume['resume_log'] and 'step 2' in resume['resume_log']
  assert doc['meta']['resume_ok'] is True
  assert np.all(np.isfinite(train['losses'] + resume['losses']))
  assert 0.0 <= resume['test_fused'] <= 100.0
  for ph in doc['phases']:
    assert ph['wall_s'] > 0 and ph['peak_rss_mib'] > 0
  assert {'train steps (incl. XLA compile)', 'evaluate val + test (incl. compile)',
          'checkpoint'} <= set(train['parts'])
  # The README's convert commands really ran: the converted files exist and load.
  for name in ('slowfast_r101', 'slowonly_r50_flow', 'vggsound_r18'):
    assert (out / 'work' / 'pretrained' / f'{name}.msgpack').stat().st_size > 0
  # The prepared store holds every clip of the tree (3 domains x (2 train + 1 test)).
  with open(out / 'epic_prepared' / 'manifest.json') as f:
    manifest = json.load(f)
  assert (manifest['num_clips'], manifest['num_failures']) == (9, 0)
  return phases


def _with_workdir(argv: list[str], workdir: str) -> list[str]:
  return [f'--workdir={workdir}' if a.startswith('--workdir=') else a for a in argv]


def test_ci_paper_path_trains_evaluates_resumes_and_survives_sigkill(tmp_path):
  out = tmp_path / 'pp'
  phases = _walk(out, 'ci', timeout=1800)
  reference = os.path.join(out, 'runs', 'epic_d1')
  # The resumed command (2 epochs of 2 steps), in a fresh workdir, a checkpoint every step:
  # killed after the step-1 or step-2 checkpoint, then the same command again.
  resume = phases['8']
  seed = int(os.environ.get('MBCD_TEST_SEED', time.time_ns() % 10_000))
  workdir = str(tmp_path / f'killed_seed{seed}')
  argv = _with_workdir(resume['argv'], workdir) + ['--config.train.checkpoint_every_steps=1']
  with open(f'{workdir}.log', 'w') as log:
    p = subprocess.Popen(argv, cwd=resume['cwd'], env=_runs.env(), stdout=log,
                         stderr=subprocess.STDOUT)
    try:
      _runs.wait_for_checkpoint(p, workdir, random.Random(seed).choice((1, 2)), timeout=900,
                                read_output=lambda: open(log.name).read())
      assert p.poll() is None, 'finished before the kill'
      p.send_signal(signal.SIGKILL)
    finally:
      p.wait(timeout=60)
  assert p.returncode == -signal.SIGKILL
  killed_at = _runs.checkpoint_steps(workdir)[-1]
  assert killed_at < 4, f'seed {seed}'
  r = subprocess.run(argv, cwd=resume['cwd'], env=_runs.env(), capture_output=True, text=True,
                     timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'resumed from {workdir}/checkpoints/{killed_at}' in r.stderr, f'seed {seed}'
  # Bit for bit the benchmark's run (itself resumed at step 2, with the epoch count changed):
  # the same final state, the same train and eval rows, the same results.
  _runs.assert_bitwise_equal(_runs.final_state(workdir), _runs.final_state(reference))
  assert _runs.rows(workdir) == _runs.rows(reference)
  assert _runs.summary(workdir) == _runs.summary(reference)


@e2e
def test_tiny_paper_path_trains_evaluates_checkpoints_and_resumes(tmp_path):
  _walk(tmp_path / 'pp', 'tiny', timeout=3600)
