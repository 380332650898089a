"""Multi-host data parallelism for real: two local processes joined by jax.distributed (CPU,
gloo collectives), each reading its half of every global batch, train the smoke benchmark to
the result of one process with the same global batch (float tolerance: the gradient all-reduce
adds in another order). A SIGTERM to one host stops both at the same step (JAX's preemption
sync), and the pair resumes from the shared checkpoint."""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import _runs  # pylint: disable=g-import-not-at-top

FLAGS = ('--config.train.epochs=6', '--config.train.checkpoint_every_steps=2',
         '--config.train.keep_checkpoints=2')   # as test_resume.py: the compile is cached
TOTAL = 24


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start_pair(workdir: str) -> list[subprocess.Popen]:
  """Both processes log to files: a full pipe would stall one and deadlock the other's
  collectives."""
  port = _free_port()
  procs = []
  for i in range(2):
    log = open(f'{workdir}.process{i}.log', 'w+')
    p = subprocess.Popen(
        _runs.cmd(workdir, *FLAGS, f'--coordinator_address=localhost:{port}',
                  '--num_processes=2', f'--process_id={i}'),
        cwd=_runs.ROOT, env=_runs.env(), stdout=log, stderr=subprocess.STDOUT, text=True)
    p.log = log
    procs.append(p)
  return procs


def _finish(procs, timeout=300) -> list[tuple[int, str]]:
  out = []
  try:
    for p in procs:
      p.wait(timeout=timeout)
      p.log.seek(0)
      out.append((p.returncode, p.log.read()))
      p.log.close()
  finally:
    for p in procs:
      p.kill()
  return out


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('one_process'))
  r = _runs.run(workdir, *FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir


def _assert_close_runs(workdir, reference):
  a, b = _runs.final_state(workdir), _runs.final_state(reference)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)
  rows, ref = _runs.rows(workdir), _runs.rows(reference)
  # Written once (process 0): the same rows as one process, none duplicated.
  assert [(r['step'], r['kind']) for r in rows] == [(r['step'], r['kind']) for r in ref]
  # Accuracies are multiples of 100/N %: a flipped prediction would fail rtol=1e-4 too.
  _assert_close(rows, ref)
  # Which trunks were precomputed is how the run ran (batch-independence is checked at each
  # process's batch size), not what it computed.
  how = ('wall_time_s', 'resumed_from_step', 'trunk_outputs_precomputed')
  _assert_close(_runs.summary(workdir, how), _runs.summary(reference, how))


def _assert_close(a, b, where='') -> None:
  if isinstance(a, dict):
    assert sorted(a) == sorted(b), where
    for k in a:
      _assert_close(a[k], b[k], f'{where}/{k}')
  elif isinstance(a, list):
    assert len(a) == len(b), where
    for i, (x, y) in enumerate(zip(a, b)):
      _assert_close(x, y, f'{where}[{i}]')
  elif isinstance(a, float):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=where)
  else:
    assert a == b, where


def test_two_processes_equal_one(tmp_path, reference):
  workdir = str(tmp_path)
  results = _finish(_start_pair(workdir))
  for i, (rc, err) in enumerate(results):
    assert rc == 0, f'process {i}: {err[-3000:]}'
    assert 'jax.distributed (flags): process %d of 2' % i in err
  _assert_close_runs(workdir, reference)


def test_sigterm_on_one_host_stops_both_at_one_step_then_resume(tmp_path, reference):
  workdir = str(tmp_path)
  procs = _start_pair(workdir)
  t = time.time()
  while not (_runs.checkpoint_steps(workdir) and _runs.checkpoint_steps(workdir)[-1] >= 4):
    assert all(p.poll() is None for p in procs) and time.time() - t < 240
    time.sleep(0.02)
  procs[1].send_signal(signal.SIGTERM)        # one host only
  results = _finish(procs)
  steps = []
  for i, (rc, err) in enumerate(results):
    assert rc == 75, f'process {i}: {err[-3000:]}'
    line = _runs.last_line(err)
    assert line.startswith('mbcd_jax: preempted: checkpoint at step '), line
    steps.append(int(line.split('checkpoint at step ')[1].split()[0]))
  assert steps[0] == steps[1] < TOTAL
  assert _runs.checkpoint_steps(workdir)[-1] == steps[0]
  results = _finish(_start_pair(workdir))
  for i, (rc, err) in enumerate(results):
    assert rc == 0, f'process {i}: {err[-3000:]}'
    assert f'checkpoints/{steps[0]}: step {steps[0]}' in err
  _assert_close_runs(workdir, reference)
