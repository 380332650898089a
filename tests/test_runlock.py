"""One writer per run directory (mbcd_jax/runlock.py): a second writer is refused with one line
naming the holder; the lock dies with its holder (SIGKILL leaves none); a SIGTERM to the
in-process study runner stops its run at the next step with a checkpoint, and no other run."""
import glob
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from mbcd_jax import runlock
from mbcd_jax.checkpoint import CheckpointError

import _runs  # pylint: disable=g-import-not-at-top

# As test_resume.py: 6 epochs x 4 steps, a checkpoint every 2 steps (the compile is cached).
FLAGS = ('--config.train.epochs=6', '--config.train.checkpoint_every_steps=2',
         '--config.train.keep_checkpoints=2')
TOTAL = 24


def _holder(workdir: str) -> subprocess.Popen:
  """A process that takes the lock and keeps it (prints its pid)."""
  code = textwrap.dedent(f'''
      import os, time
      from mbcd_jax import runlock
      runlock.RunLock({workdir!r}).acquire()
      print(os.getpid(), flush=True)
      time.sleep(120)
  ''')
  return subprocess.Popen([sys.executable, '-c', code], cwd=_runs.ROOT, env=_runs.env(),
                          stdout=subprocess.PIPE, text=True)


def _hand_over(workdir: str) -> int:
  """The lock taken by a process that passes its descriptor to this one and exits: the lock
  file names a pid that is gone while the lock is held (as when a run forks a child and dies).
  The descriptor comes back over a socket rather than staying with a forked child, so no
  orphan process is left to an environment that may reap or kill it. Returns the descriptor."""
  ours, theirs = socket.socketpair()
  code = textwrap.dedent(f'''
      import socket
      from mbcd_jax import runlock
      lock = runlock.RunLock({workdir!r})
      lock.acquire()
      socket.send_fds(socket.socket(fileno={theirs.fileno()}), [b'fd'], [lock._fd])
  ''')
  p = subprocess.Popen([sys.executable, '-c', code], cwd=_runs.ROOT, env=_runs.env(),
                       pass_fds=[theirs.fileno()])
  theirs.close()
  try:
    _, fds, _, _ = socket.recv_fds(ours, 16, 1)
    assert p.wait(timeout=60) == 0
  finally:
    ours.close()
    p.kill()
  assert len(fds) == 1
  return fds[0]


def _refusal(workdir: str) -> str:
  with pytest.raises(CheckpointError) as e:
    runlock.RunLock(workdir).acquire()
  assert '\n' not in str(e.value)
  return str(e.value)


def test_second_writer_is_refused_naming_the_holder_and_sigkill_frees_the_lock(tmp_path):
  workdir = str(tmp_path / 'run')
  p = _holder(workdir)
  try:
    pid = int(p.stdout.readline())
    msg = _refusal(workdir)
    assert msg.startswith(f'{workdir} is being written by pid {pid} on host '
                          f'{socket.gethostname()} since '), msg
    assert msg.endswith('wait for it to stop (SIGTERM saves and exits) or use another '
                        '--workdir'), msg
    assert p.poll() is None                      # the holder is not disturbed
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
  finally:
    p.kill()
  # The kernel dropped the flock with the holder: no stale lock to remove by hand.
  with runlock.RunLock(workdir) as lock:
    assert lock.held and f'"pid": {os.getpid()}' in open(lock.path).read()
    assert 'being written by pid' in _refusal(workdir)   # also within one process
  assert open(lock.path).read() == ''           # released: emptied, not removed
  runlock.RunLock(workdir).acquire()


def test_a_lock_that_outlives_its_taker_is_refused_and_the_refusal_says_so(tmp_path):
  workdir = str(tmp_path / 'run')
  fd = _hand_over(workdir)
  try:
    assert '(that pid has exited: a process it forked still holds the lock)' in _refusal(workdir)
  finally:
    os.close(fd)     # the last descriptor of the lock: the flock goes with it
  with runlock.RunLock(workdir) as lock:
    assert lock.held


def test_workdir_that_is_a_file_is_one_line_error(tmp_path):
  (tmp_path / 'f').write_text('')
  assert _refusal(str(tmp_path / 'f')) == f'--workdir={tmp_path / "f"} exists and is not a directory'


def _wait(p: subprocess.Popen, what, timeout=240):
  t = time.time()
  while not what():
    assert p.poll() is None, f'ended early: {_runs.output(p)[-3000:]}'
    assert time.time() - t < timeout
    time.sleep(0.02)


def test_cli_second_run_refused_then_holder_sigkilled_then_resumes(tmp_path):
  workdir = str(tmp_path / 'run')
  p = _runs.start(workdir, *FLAGS)
  try:
    _wait(p, lambda: _runs.checkpoint_steps(workdir))
    p.send_signal(signal.SIGSTOP)   # holds the lock for as long as the second run needs
    r = _runs.run(workdir, *FLAGS)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    line = _runs.last_line(r.stderr)
    assert line.startswith(f'mbcd_jax: error: {workdir} is being written by pid {p.pid} on '
                           f'host {socket.gethostname()} since '), line
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
  finally:
    p.kill()
  step = _runs.checkpoint_steps(workdir)[-1]
  r = _runs.run(workdir, *FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'{workdir}/checkpoints/{step}: step {step}' in r.stderr   # resumed there
  assert _runs.summary(workdir)['steps'] == TOTAL


def test_sigterm_stops_the_in_process_runner_with_a_checkpoint_then_it_resumes(tmp_path):
  study = str(tmp_path / 'study')
  cmd = [sys.executable, '-m', 'mbcd_jax.study.experiments', '--config=configs/hac.py:smoke',
         f'--workdir={study}', '--methods=erm', '--seeds=0,1', '--targets=human', *FLAGS]
  log = open(f'{study}.log', 'w+')
  p = subprocess.Popen(cmd, cwd=_runs.ROOT, env=_runs.env(), stdout=log,
                       stderr=subprocess.STDOUT, text=True)
  p.log = log
  first = lambda: glob.glob(f'{study}/*/*/*/seed0')[0]
  try:
    _wait(p, lambda: glob.glob(f'{study}/*/*/*/seed0/checkpoints/2'))
    t = time.time()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    stopped_in = time.time() - t
  finally:
    p.kill()
  out = _runs.output(p)
  assert p.returncode == 75, out[-3000:]
  line = _runs.last_line(out)
  assert line.startswith('mbcd_jax.study.experiments: preempted: checkpoint at step '), line
  step = int(line.split('checkpoint at step ')[1].split()[0])
  assert line.endswith(f' saved in {first()}/checkpoints/{step}; re-run the same command to '
                       'resume'), line
  assert _runs.checkpoint_steps(first())[-1] == step < TOTAL
  assert not glob.glob(f'{study}/*/*/*/seed1/checkpoints')   # the next run never started
  assert stopped_in < 30, stopped_in
  # The same study again (narrowed to the first run, to keep the test short) resumes it.
  r = subprocess.run(cmd[:-len(FLAGS) - 2] + ['--seeds=0', '--targets=human', *FLAGS],
                     cwd=_runs.ROOT, env=_runs.env(), capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
  assert f'{first()}/checkpoints/{step}: step {step}' in r.stderr
  assert _runs.summary(first())['steps'] == TOTAL
