"""Preemption: SIGTERM -> checkpoint at the next step boundary -> exit ``EXIT_PREEMPTED``.

Schedulers announce an eviction with SIGTERM and kill the job a grace period later (GCE/TPU
spot VMs ~30 s, SLURM ``KillWait``, 30 s by default; ``#SBATCH --signal=TERM@120`` asks for an
earlier notice). A signal handler must not touch JAX, so it only sets a flag; the loop asks
``Watcher.should_stop(step)`` once per step and saves there.

On several processes every host must stop at the *same* step, or the checkpoint's collective
save deadlocks. JAX's distributed runtime has a preemption service for exactly this: it catches
SIGTERM on any host, agrees on a step with the others, and
``multihost_utils.reached_preemption_sync_point(step)`` turns True at that step on every host.
When it is running we use it (and install no handler of our own, which would replace its);
otherwise (the service disabled) the hosts OR their local flags with an all-gather every step.

A process that trains several runs in turn (``experiments.run_all``) holds a ``Notice`` around
them: it catches a SIGTERM that comes while no run is training (between runs, or while a run
builds, before its Watcher exists), a run's Watcher inherits a notice already given and passes
its own on, and the runner starts no further run.
"""
import signal
import threading

from absl import logging
import jax
import numpy as np

# sysexits.h EX_TEMPFAIL, "temporary failure; the user is invited to retry": the run saved a
# checkpoint and stopped early; re-running the same command resumes it. Launch scripts requeue
# on it.
EXIT_PREEMPTED = 75


class Preempted(Exception):
  """Raised by ``train_and_evaluate`` after the preemption checkpoint is on disk."""

  def __init__(self, step: int, path: str):
    super().__init__(f'preempted: checkpoint at step {step} saved in {path}; re-run the same '
                     'command to resume')
    self.step, self.path = step, path


def _sync_manager():
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    state = distributed.global_state
    return state.preemption_sync_manager if state.client is not None else None
  except (ImportError, AttributeError):
    return None


class Notice:
  """A stop notice for a sequence of runs in one process (SIGTERM sets it; a context manager).

  While a run trains, its ``Watcher`` holds SIGTERM and reports to the Notice it replaced.
  """

  def __init__(self, signals=(signal.SIGTERM,)):
    self._flag = threading.Event()
    self._old = {}
    if threading.current_thread() is threading.main_thread():
      for s in signals:
        self._old[s] = signal.signal(s, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self._flag.set()

  def request(self):
    self._flag.set()

  @property
  def requested(self) -> bool:
    return self._flag.is_set()

  def close(self):
    for s, h in self._old.items():
      signal.signal(s, h)
    self._old = {}

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class Watcher:
  """Answers "stop here?" once per step, identically on every process."""

  def __init__(self, signals=(signal.SIGTERM,)):
    self._flag = threading.Event()
    self._old = {}
    self._notice = None   # the runner's Notice whose SIGTERM handler this one replaced
    self.multi = jax.process_count() > 1
    self.jax_service = self.multi and _sync_manager() is not None
    if self.jax_service:
      logging.info('preemption: JAX preemption sync service (SIGTERM on any host)')
      return
    if threading.current_thread() is not threading.main_thread():
      logging.warning('preemption: not on the main thread, SIGTERM is not handled')
      return
    for s in signals:
      self._old[s] = signal.signal(s, self._handle)
      if isinstance(getattr(self._old[s], '__self__', None), Notice):
        self._notice = self._old[s].__self__
    if self._notice is not None and self._notice.requested:
      self._flag.set()   # SIGTERM came while the run was building: stop at its first step

  def _handle(self, signum, frame):
    del frame
    # No logging here: the handler runs between bytecodes, possibly inside a logging call.
    self._flag.set()
    if self._notice is not None:
      self._notice.request()   # the runner must not start another run
    del signum

  def request(self):
    """Asks for a stop at the next step boundary (what the SIGTERM handler does)."""
    self._flag.set()

  @property
  def requested(self) -> bool:
    return self._flag.is_set()

  def should_stop(self, step: int) -> bool:
    """Must be called at every step by every process (the sync protocol counts on it)."""
    if self.jax_service:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return bool(multihost_utils.reached_preemption_sync_point(step))
    if self.multi:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      flags = multihost_utils.process_allgather(np.int32(self._flag.is_set()))
      return bool(np.any(flags))
    return self._flag.is_set()

  def close(self):
    for s, h in self._old.items():
      signal.signal(s, h)
    self._old = {}
