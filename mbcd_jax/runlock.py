"""One writer per run directory: an exclusive ``flock`` on ``<workdir>/.lock`` for a run's life.

Two trainings writing one workdir interleave their checkpoints, and the second one's start-up
removes the first one's half-written saves (checkpoint.py empties ``.orbax-checkpoint-tmp-*``
and ``.trash``): a relaunch while the first run is still stopping, or a study runner started
twice on one study. So the run takes the lock before it touches the workdir, and a second
writer is refused with one line naming the holder (pid, host, since when) as a
``CheckpointError`` (the CLI exits 2).

Why ``flock``: the kernel releases it when the holder's file descriptor closes, on any exit,
SIGKILL included, so a dead holder never leaves a stale lock to clean by hand. The file stays
(deleting it would race with a process that has just opened it); its content is only the
holder's description, rewritten by each holder. The descriptor is not inherited across
``exec``; a child *forked* by the holder shares it and keeps the lock while it lives (the
refusal says so when the recorded holder is gone).

Multi-process runs: all processes of one run share the workdir, so only process 0 takes the
lock; the others learn the outcome from it (``broadcast_one_to_all``) and all of them fail
together, rather than leaving the others waiting at the next collective.
"""
import contextlib
import datetime
import fcntl
import json
import os
import socket

from absl import logging
import jax
import numpy as np

from mbcd_jax.checkpoint import CheckpointError

LOCK_FILE = '.lock'


def _holder(path: str) -> str:
  """'pid N on host H since T' from the lock file (written by the holder after locking)."""
  try:
    with open(path) as f:
      h = json.load(f)
    who = f'pid {h["pid"]} on host {h["host"]} since {h["since"]}'
  except (OSError, ValueError, KeyError, TypeError):
    # The holder locks first and writes next: a refusal can fall between the two.
    return 'another process (it has not recorded its pid yet)'
  if h['host'] == socket.gethostname() and not _alive(h['pid']):
    who += ' (that pid has exited: a process it forked still holds the lock)'
  return who


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # alive, another user's
    return True
  return True


class RunLock:
  """The exclusive lock of one workdir, held from ``acquire`` to ``release``."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd = None

  @property
  def held(self) -> bool:
    return self._fd is not None

  def acquire(self):
    """Takes the lock, or raises a one-line ``CheckpointError`` naming the holder."""
    if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
      raise CheckpointError(f'--workdir={self.workdir} exists and is not a directory')
    try:
      os.makedirs(self.workdir, exist_ok=True)
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise CheckpointError(f'{self.path}: cannot create the run\'s lock file '
                            f'({e.strerror})') from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise CheckpointError(
          f'{self.workdir} is being written by {_holder(self.path)}; two runs on one workdir '
          'would overwrite each other\'s checkpoints: wait for it to stop (SIGTERM saves and '
          'exits) or use another --workdir') from None
    except OSError as e:
      # A file system without locks (some FUSE mounts): refusing would make it unusable.
      os.close(fd)
      logging.warning('%s: the file system does not support flock (%s); this run is not '
                      'protected from a second writer', self.path, e.strerror)
      return
    me = {'pid': os.getpid(), 'host': socket.gethostname(),
          'since': datetime.datetime.now().astimezone().isoformat(timespec='seconds')}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(me) + '\n').encode())
    self._fd = fd

  def release(self):
    """Unlocks (idempotent). The file is emptied, not removed (see the module docstring)."""
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      os.ftruncate(fd, 0)
    finally:
      os.close(fd)   # closing the last descriptor releases the flock

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()


@contextlib.contextmanager
def hold(workdir: str):
  """The run's lock for the ``with`` body, taken by process 0 for all processes of the run.

  Raises:
    CheckpointError: another run holds it (on every process; the others name process 0).
  """
  lock = RunLock(workdir)
  error = None
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except CheckpointError as e:
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if error is None and not int(ok):
      error = CheckpointError(f'{workdir}: process 0 could not take the run\'s lock (its error '
                              'names the holder)')
  if error is not None:
    raise error
  try:
    yield lock
  finally:
    lock.release()
