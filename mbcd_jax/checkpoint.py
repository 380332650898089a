"""Checkpoints that never lose work: orbax ``CheckpointManager`` under ``<workdir>/checkpoints``.

One checkpoint = one step directory with two items:
  state/  the whole TrainState (step.py) as orbax arrays: ``step``, ``student`` and ``teacher``
          (each a ``models.Weights``: ``params``, ``frozen``, ``batch_stats``,
          ``extra_state``) and ``opt_state``. The frozen trunk is saved too, so a checkpoint
          does not depend on the pretrained files still being where they were; a teacher that
          shares the student's frozen variables saves ``teacher/frozen`` as None (one copy).
  meta/   JSON: project marker and format, the step, the data position (epoch, batch: the next
          batch to train on; ``Loader.epoch(epoch, batch)`` resumes there exactly), the base RNG
          key, the best-validation record, the eval history, the resolved config.

The RNG needs no state of its own: the step folds ``state.step`` into the base key derived from
``config.seed`` (step.py), so the step counter is the RNG position; ``meta.rng_key`` records the
base key so that a resume can check it.

Kept: the latest ``keep`` checkpoints plus the best-validation one. Saves are atomic — orbax
writes ``<step>.orbax-checkpoint-tmp-*`` and renames it when complete; a save killed midway (or
failing on a full disk) leaves the earlier checkpoints untouched, and the leftover temporary
directory is ignored and removed on the next start. Deletions are atomic too: orbax deletes an
old checkpoint file by file, so a process killed mid-deletion would leave a numbered folder
without its ``meta/`` (indistinguishable from a foreign checkpoint); instead a checkpoint leaving
the kept set is renamed into ``checkpoints/.trash/`` (one rename) and that folder is emptied
before each save and at start-up. Saves are asynchronous where orbax allows:
the arrays are copied to host memory before ``save`` returns (so the donated train state can be
reused at once), the files are written by a background thread.

Checkpoints written before the state held one ``Weights`` per network (top-level ``params``,
``frozen``, ``teacher``, ``batch_stats``, ``teacher_frozen``, ``teacher_batch_stats``,
``extra_state``, ``teacher_extra_state``) restore too: :meth:`Checkpointer.restore` recognises
that layout by its keys, reads it onto the same arrays (:func:`old_layout`) and rebuilds the
TrainState (:func:`from_old_layout`), bit for bit; the next save writes the current layout.

Every way an existing workdir can be wrong — another program's files, a truncated checkpoint,
a checkpoint of another model shape, a changed config — is a ``CheckpointError``: one line
naming the file and what differs.
"""
import json
import logging as pylogging
import os
import re
import shutil
import time
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from mbcd_jax import models
from mbcd_jax.errors import ConfigError

PROJECT = 'mbcd_jax'
FORMAT = 1
SUBDIR = 'checkpoints'
TRASH = '.trash'   # inside SUBDIR: checkpoints leaving the kept set, renamed here, then removed
RESUME_MODES = ('strict', 'allow_changes', 'restart')
# Config keys that may change between a run and its resume in 'strict' mode: they change how a
# run is executed or reported, never what it computes.
OPERATIONAL_KEYS = frozenset({
    'train.resume_mode', 'train.progress', 'train.async_checkpointing', 'data.num_workers',
    'data.read_threads', 'data.normalize_on_device', 'train.trunk_cache',
})
# Keys that say how a setting is derived from the run's length (config_lib.derive_from_length):
# the derived values (method.ema_beta, method.cmrf.sma_start_step) are compared instead.
DERIVATION_KEYS = frozenset({'method.ema_horizon_ratio', 'method.cmrf.sma_start_percent'})
# Keys added to the config after checkpoints were first written, each with the value that
# reproduces what a run made before it computed: absent in the checkpoint's config and at this
# value now is not a change.
ADDED_KEYS = {'train.recipe': 'shared'}
# What this program writes into a workdir (anything else is left alone, see check_workdir).
OWN_FILES = ('metrics.jsonl', 'config.json', 'summary.json', SUBDIR)
_FOREIGN = re.compile(r'(^checkpoint_\d+$|\.(ckpt|pt|pth|msgpack|safetensors|h5)$|'
                      r'^_CHECKPOINT_METADATA$)')


class _QuietOrbax(pylogging.Filter):
  """Drops orbax's INFO lines (a dozen per save); its warnings and errors still show."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or f'{os.sep}orbax{os.sep}' not in record.pathname


def quiet_orbax_info():
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietOrbax) for f in handler.filters):
    handler.addFilter(_QuietOrbax())


class CheckpointError(ConfigError):
  """An unusable workdir or checkpoint; the message is one line naming the file."""


# ---------------------------------------------------------------- config comparison
def config_to_dict(config) -> dict:
  """The resolved config as plain JSON (tuples become lists, as they are stored)."""
  return json.loads(config.to_json_best_effort())


def _flatten(d: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(d, dict):
    out = {}
    for k, v in d.items():
      out.update(_flatten(v, f'{prefix}{k}.'))
    return out if out or not prefix else {prefix[:-1]: {}}
  return {prefix[:-1]: d}


def config_diff(old: dict, new: dict, ignore=OPERATIONAL_KEYS | DERIVATION_KEYS) -> list[str]:
  """``['model.head_hidden: 16 -> 32', ...]`` for every key that differs (sorted).

  Not differences: ``ignore``d keys; a key of ``ADDED_KEYS`` absent from ``old`` and at its
  value in ``new``; ``method.<group>.*`` of a plug-in method neither config runs (its group is
  read only by that method, so a group added or changed since cannot change this run).
  """
  a, b = _flatten(old), _flatten(new)
  running = {a.get('method.name'), b.get('method.name')}
  out = []
  for k in sorted(set(a) | set(b)):
    parts = k.split('.')
    if k in ignore or (len(parts) > 2 and parts[0] == 'method' and parts[1] not in running):
      continue
    x, y = a.get(k, '<absent>'), b.get(k, '<absent>')
    if x == y or (x == '<absent>' and k in ADDED_KEYS and y == ADDED_KEYS[k]):
      continue
    out.append(f'{k}: {x!r} -> {y!r}')
  return out


# ---------------------------------------------------------------- workdir checks
def check_workdir(workdir: str):
  """Refuses a workdir that holds another program's run (one-line CheckpointError)."""
  if not os.path.isdir(workdir):
    if os.path.exists(workdir):
      raise CheckpointError(f'--workdir={workdir} exists and is not a directory')
    return
  cfg = os.path.join(workdir, 'config.json')
  if os.path.isfile(cfg):
    try:
      with open(cfg) as f:
        c = json.load(f)
      ours = isinstance(c, dict) and {'data', 'model', 'method', 'train'} <= set(c)
    except (OSError, ValueError):
      ours = False
    if not ours:
      raise CheckpointError(f'{cfg} is not an {PROJECT} config (no data/model/method/train '
                            'groups): the workdir belongs to another program; use a fresh '
                            '--workdir')
  for name in sorted(os.listdir(workdir)):
    if name in OWN_FILES or name.startswith(('events.out.tfevents', 'previous-')):
      continue
    path = os.path.join(workdir, name)
    if _FOREIGN.search(name) or (name.isdigit() and os.path.isdir(path)):
      raise CheckpointError(f'{path} looks like another program\'s checkpoint: the workdir '
                            f'belongs to another run; use a fresh --workdir')
  ckpts = os.path.join(workdir, SUBDIR)
  if os.path.isdir(ckpts):
    for name in sorted(os.listdir(ckpts)):
      path = os.path.join(ckpts, name)
      if name.isdigit() and os.path.isdir(path) and not os.path.isdir(os.path.join(path, 'meta')):
        raise CheckpointError(f'{path} has no meta/ item: not an {PROJECT} checkpoint (the '
                              'workdir belongs to another program); use a fresh --workdir')


def move_aside(workdir: str) -> str | None:
  """resume_mode='restart': moves this program's files into ``previous-<n>/`` (nothing is
  deleted — the old run stays inspectable). Returns the new folder, or None if nothing moved."""
  present = [n for n in sorted(os.listdir(workdir)) if n in OWN_FILES
             or n.startswith('events.out.tfevents')] if os.path.isdir(workdir) else []
  if not present:
    return None
  n = 0
  while os.path.exists(os.path.join(workdir, f'previous-{n}')):
    n += 1
  dest = os.path.join(workdir, f'previous-{n}')
  os.makedirs(dest)
  for name in present:
    shutil.move(os.path.join(workdir, name), os.path.join(dest, name))
  return dest


# ---------------------------------------------------------------- shape comparison
def _shapes(tree) -> dict[str, tuple]:
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    key = '/'.join(str(getattr(p, 'key', getattr(p, 'name', getattr(p, 'idx', p))))
                   for p in path)
    shape = getattr(leaf, 'shape', None)
    out[key] = (tuple(shape) if shape is not None else None, str(getattr(leaf, 'dtype', '')))
  return out


def shape_diff(saved, target) -> list[str]:
  """Leaves whose shape or dtype differ, or that only one tree has."""
  a, b = _shapes(saved), _shapes(target)
  out = []
  # Parameters first: they name the layer that changed; optimizer moments repeat them.
  for k in sorted(set(a) | set(b),
                  key=lambda k: (not k.startswith(('student/params/', 'params/')), k)):
    if k not in a:
      out.append(f'{k} missing from the checkpoint')
    elif k not in b:
      out.append(f'{k} not in the model')
    elif a[k][0] != b[k][0] or (a[k][1] and b[k][1] and a[k][1] != b[k][1]):
      out.append(f'{k} is {a[k][0]} {a[k][1]} in the checkpoint, {b[k][0]} {b[k][1]} in the '
                 'model')
  return out


def _short(e: BaseException) -> str:
  msg = str(e).strip().splitlines()
  return f'{type(e).__name__}: {msg[0][:200] if msg else ""}'


# ---------------------------------------------------------------- the manager
class _KeepSteps(ocm.PreservationPolicy):
  """Preserves the checkpoints whose step is in a set the caller updates (the best one)."""

  def __init__(self):
    self.steps: set[int] = set()

  def should_preserve(self, checkpoints, *, context):
    del context
    return [c.step in self.steps for c in checkpoints]


class Checkpointer:
  """``orbax.checkpoint.CheckpointManager`` with this project's items, policy and errors."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
    if keep < 1:
      raise ValueError(f'config.train.keep_checkpoints must be >= 1, got {keep}')
    self.directory = os.path.abspath(os.path.join(workdir, SUBDIR))
    quiet_orbax_info()
    self._best = _KeepSteps()
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocm.AnyPreservationPolicy([ocm.LatestN(n=keep), self._best]),
        enable_async_checkpointing=async_save,
        # A save killed midway leaves '<step>.orbax-checkpoint-tmp-*'; remove it at start-up.
        cleanup_tmp_directories=True,
        todelete_subdir=TRASH,
        create=True)
    self._empty_trash()
    # Handlers named up front: a process that only restores (a resume) reads the metadata too.
    self._mgr = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()})
    self.last_save_s = 0.0

  def _empty_trash(self):
    """Removes what earlier deletions renamed into the trash (whole checkpoints only: the
    rename is atomic, so a kill here or mid-rename never touches a kept checkpoint)."""
    trash = os.path.join(self.directory, TRASH)
    if jax.process_index() != 0 or not os.path.isdir(trash):
      return
    for name in os.listdir(trash):
      shutil.rmtree(os.path.join(trash, name), ignore_errors=True)

  def all_steps(self) -> list[int]:
    return list(self._mgr.all_steps())

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def set_best(self, step: int | None):
    self._best.steps = {step} if step is not None else set()

  def save(self, step: int, state, meta: dict, *, best_step: int | None = None):
    """Saves ``state`` and ``meta`` at ``step`` (asynchronously when enabled).

    Raises:
      CheckpointError: the save failed (e.g. disk full); earlier checkpoints are intact.
    """
    self.set_best(best_step)
    meta = {'project': PROJECT, 'format': FORMAT, 'step': int(step), 'time': time.time(),
            **meta}
    t = time.time()
    self._empty_trash()
    try:
      self._mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                  meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f'saving checkpoint {self.step_dir(step)} failed ({_short(e)}); '
                            f'the earlier checkpoints {self.all_steps()} are intact') from e
    self.last_save_s = time.time() - t

  def wait(self):
    """Blocks until the pending asynchronous save is on disk (CheckpointError if it failed)."""
    try:
      self._mgr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f'writing a checkpoint under {self.directory} failed ({_short(e)}); '
                            'the earlier checkpoints are intact') from e

  def close(self):
    try:
      self.wait()
    finally:
      try:
        self._mgr.close()
      except OSError as e:   # a failed async save surfaces here, e.g. a full disk
        # One line whatever the OS error's text (the user's mistake: a full or lost disk).
        raise CheckpointError(f'{self.directory}: saving a checkpoint failed: {_short(e)}') from e

  def reached_preemption(self, step: int) -> bool:
    """JAX's multi-host preemption sync point (False on one process)."""
    return self._mgr.reached_preemption(step)

  def read_meta(self, step: int) -> dict:
    path = os.path.join(self.step_dir(step), 'meta')
    try:
      meta = self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f'{path}: unreadable ({_short(e)}); the checkpoint is truncated or '
                            f'not an {PROJECT} checkpoint — delete {self.step_dir(step)} to '
                            'resume from the one before') from e
    if not isinstance(meta, dict) or meta.get('project') != PROJECT:
      raise CheckpointError(f'{path}: not an {PROJECT} checkpoint (project='
                            f'{meta.get("project") if isinstance(meta, dict) else None!r})')
    if meta.get('format') != FORMAT:
      raise CheckpointError(f'{path}: checkpoint format {meta.get("format")}, this code reads '
                            f'format {FORMAT}')
    return meta

  def restore(self, step: int, abstract_state) -> tuple[Any, dict]:
    """Restores the checkpoint at ``step`` onto ``abstract_state``'s structure and shardings.

    Raises:
      CheckpointError: unreadable / truncated / other model shape (one line, names the file).
    """
    meta = self.read_meta(step)
    path = os.path.join(self.step_dir(step), 'state')
    try:
      saved = self._mgr.item_metadata(step)['state']
      saved = getattr(saved, 'tree', saved)
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f'{path}: unreadable metadata ({_short(e)}); the checkpoint is '
                            f'truncated — delete {self.step_dir(step)} to resume from the one '
                            'before') from e
    old = is_old_layout(saved)
    target = old_layout(abstract_state) if old else abstract_state
    diff = shape_diff(_plain(saved), _plain(target))
    if diff:
      more = f' (and {len(diff) - 3} more)' if len(diff) > 3 else ''
      raise CheckpointError(f'{path} is from a different model: {"; ".join(diff[:3])}{more}')
    try:
      state = self._mgr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))['state']
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f'{path}: cannot be read ({_short(e)}); the checkpoint is '
                            f'truncated or corrupt — delete {self.step_dir(step)} to resume '
                            'from the one before') from e
    return (from_old_layout(state, type(abstract_state)) if old else state), meta


# ---------------------------------------------------------------- the earlier state layout
def is_old_layout(saved) -> bool:
  """Whether a saved state tree (``item_metadata``'s, as a dict) has the earlier layout."""
  return isinstance(saved, dict) and 'params' in saved and 'student' not in saved


def old_layout(state) -> dict:
  """A TrainState (arrays or abstract ones) as the earlier layout's field dict, the same
  leaves under the old names: the target a checkpoint of that layout restores onto."""
  s, t = state.student, state.teacher
  return {'step': state.step, 'params': s.params, 'frozen': s.frozen,
          'opt_state': state.opt_state, 'teacher': t.params if t is not None else None,
          'batch_stats': s.batch_stats, 'teacher_frozen': t.frozen if t is not None else None,
          'teacher_batch_stats': t.batch_stats if t is not None else None,
          'extra_state': s.extra_state,
          'teacher_extra_state': t.extra_state if t is not None else None}


def from_old_layout(old: dict, state_type):
  """The earlier layout's field dict -> ``state_type`` (``step.TrainState``). The teacher's
  ``frozen`` was None there when it read the student's, as it is now."""
  teacher = None
  if old['teacher'] is not None:
    teacher = models.Weights(old['teacher'], old['teacher_frozen'], old['teacher_batch_stats'],
                             old['teacher_extra_state'])
  return state_type(step=old['step'], opt_state=old['opt_state'],
                    student=models.Weights(old['params'], old['frozen'], old['batch_stats'],
                                           old['extra_state']),
                    teacher=teacher)


def _plain(tree):
  """A TrainState / metadata tree -> nested dicts of leaves (so both sides flatten alike)."""
  if hasattr(tree, '__dataclass_fields__') and not hasattr(tree, 'shape'):
    return {k: _plain(getattr(tree, k)) for k in tree.__dataclass_fields__}
  if isinstance(tree, dict):
    return {k: _plain(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)) and not hasattr(tree, 'shape'):
    if hasattr(tree, '_fields'):  # optax states are namedtuples; metadata may store dicts
      return {f: _plain(getattr(tree, f)) for f in tree._fields}
    return {str(i): _plain(v) for i, v in enumerate(tree)}
  return tree


def host_scalar(x) -> float:
  return float(np.asarray(jax.device_get(x)))
