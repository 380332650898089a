"""Checkpoints: round trip, keep-last-K + best, atomicity under a kill, disk full, and every bad
input as a one-line CheckpointError naming the file (mbcd_jax/checkpoint.py)."""
import builtins
import errno
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from mbcd_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
from mbcd_jax import models  # pylint: disable=g-import-not-at-top
from mbcd_jax import step as step_lib  # pylint: disable=g-import-not-at-top
from mbcd_jax import metric_writer  # pylint: disable=g-import-not-at-top

import _trees  # pylint: disable=g-import-not-at-top,wrong-import-position
from conftest import python_env  # pylint: disable=g-import-not-at-top,wrong-import-position


def _state(width=4, teacher=True, seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  params = {'head': {'kernel': jax.random.normal(k[0], (3, width)),
                     'bias': jax.random.normal(k[1], (width,))}}
  tx = optax.adam(1e-3)
  student = models.Weights(params, {'trunk': jax.random.normal(k[2], (5,))})
  return step_lib.TrainState(
      step=jnp.array(7, jnp.int32), student=student, opt_state=tx.init(params),
      teacher=models.Weights(jax.tree.map(lambda x: x * 2, params), None) if teacher else None)


def _abstract(state):
  return jax.eval_shape(lambda: state)


def test_round_trip_and_meta(tmp_path):
  st = _state()
  ck = ckpt_lib.Checkpointer(str(tmp_path), keep=2)
  ck.save(7, st, {'data': {'epoch': 1, 'batch': 3}, 'history': [{'val': 12.5}]})
  ck.wait()
  restored, meta = ck.restore(7, _abstract(st))
  _trees.assert_trees_equal(restored, st)   # a missing teacher or key is a difference
  assert meta['project'] == 'mbcd_jax' and meta['step'] == 7
  assert meta['data'] == {'epoch': 1, 'batch': 3} and meta['history'] == [{'val': 12.5}]
  ck.close()


def test_keeps_latest_k_plus_best(tmp_path):
  st = _state(teacher=False)
  ck = ckpt_lib.Checkpointer(str(tmp_path), keep=2, async_save=False)
  for s in range(1, 8):
    ck.save(s, st, {}, best_step=3 if s >= 3 else None)
  ck.close()
  assert sorted(ck.all_steps()) == [3, 6, 7]
  names = os.listdir(tmp_path / 'checkpoints')
  assert sorted(n for n in names if n != ckpt_lib.TRASH) == ['3', '6', '7']
  # Deleted checkpoints went through the trash whole, and the trash is emptied on each save.
  assert set(os.listdir(tmp_path / 'checkpoints' / ckpt_lib.TRASH)) <= {'5'}


def test_other_model_shape_is_one_line_error(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  ck.save(1, _state(width=4), {})
  ck.wait()
  with pytest.raises(ckpt_lib.CheckpointError) as e:
    ck.restore(1, _abstract(_state(width=6)))
  msg = str(e.value)
  assert '\n' not in msg
  assert str(tmp_path / 'checkpoints' / '1' / 'state') in msg
  assert msg.split(': ', 1)[1].startswith('student/params/head/bias is (4,) float32 in the '
                                          'checkpoint, (6,) float32 in the model')
  abstract = _abstract(_state(width=4))
  other = abstract.replace(teacher=abstract.teacher.replace(
      params={'head': {'bias': jax.ShapeDtypeStruct((4,), jnp.float32)},
              'extra': jax.ShapeDtypeStruct((1,), jnp.float32)}))
  with pytest.raises(ckpt_lib.CheckpointError,
                     match='teacher/params/extra missing from the checkpoint; '
                           'teacher/params/head/kernel not in the model'):
    ck.restore(1, other)
  ck.close()


def _old_layout_state(port: bool, seed: int = 0) -> dict:
  """A state as the TrainState's earlier ten fields wrote it, built by hand: a teacher; with
  ``port`` its own frozen variables and BN statistics, else None there (it read the
  student's); a plug-in's state and its teacher's copy."""
  k = iter(jax.random.split(jax.random.key(seed), 10))
  rnd = lambda *shape: jax.random.normal(next(k), shape)
  params = {'head': {'kernel': rnd(3, 4), 'bias': rnd(4)}, 'extra': {'proj': rnd(4, 2)}}
  stats = {'encoders': {'video': {'stage': {'mean': rnd(4), 'var': rnd(4)}}}}
  return {'step': jnp.array(9, jnp.int32), 'params': params,
          'frozen': {'encoders': {'video': {'trunk': {'params': {'w': rnd(6)}}}}},
          'opt_state': optax.adam(1e-3).init(params),
          'teacher': jax.tree.map(lambda x: x * 2, params),
          'batch_stats': stats if port else None,
          'teacher_frozen': ({'encoders': {'video': {'trunk': {'params': {'w': rnd(6)}}}}}
                             if port else None),
          'teacher_batch_stats': jax.tree.map(lambda x: x + 1, stats) if port else None,
          'extra_state': {'proj_bn': {'mean': rnd(2)}},
          'teacher_extra_state': {'proj_bn': {'mean': rnd(2)}}}


@pytest.mark.parametrize('port', [False, True])
def test_old_layout_checkpoint_restores_into_the_new_state(tmp_path, port):
  """A checkpoint of the earlier layout (top-level params / teacher_frozen / ...) restores into
  the TrainState of one Weights per network, every leaf bit for bit, each under its new name."""
  old = _old_layout_state(port)
  ck = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  ck.save(9, old, {})
  # The target: the new TrainState of the same shapes (what a resume builds from the config).
  want = step_lib.TrainState(
      step=old['step'], opt_state=old['opt_state'],
      student=models.Weights(old['params'], old['frozen'], old['batch_stats'],
                             old['extra_state']),
      teacher=models.Weights(old['teacher'], old['teacher_frozen'], old['teacher_batch_stats'],
                             old['teacher_extra_state']))
  restored, _ = ck.restore(9, _abstract(want))
  assert isinstance(restored, step_lib.TrainState)
  assert isinstance(restored.student, models.Weights)
  _trees.assert_trees_equal(restored, want)   # structure (None included) and every bit
  assert (restored.teacher.frozen is None) == (not port)
  # Converted back, the same field dict: nothing dropped, renamed or swapped.
  _trees.assert_trees_equal(ckpt_lib.old_layout(restored), old)
  # The next save writes the current layout, which restores as it is.
  ck.save(10, restored, {})
  saved = ck._mgr.item_metadata(10)['state']   # pylint: disable=protected-access
  assert not ckpt_lib.is_old_layout(getattr(saved, 'tree', saved))
  again, _ = ck.restore(10, _abstract(want))
  _trees.assert_trees_equal(again, want)
  ck.close()


def test_old_layout_without_teacher_restores(tmp_path):
  old = {**_old_layout_state(False), 'teacher': None, 'teacher_extra_state': None}
  ck = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  ck.save(9, old, {})
  want = ckpt_lib.from_old_layout(old, step_lib.TrainState)
  assert want.teacher is None and want.student.params is old['params']
  restored, _ = ck.restore(9, _abstract(want))
  _trees.assert_trees_equal(restored, want)
  ck.close()


def _largest_file(d):
  files = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs]
  return max(files, key=os.path.getsize)


def test_truncated_checkpoint_is_one_line_error(tmp_path):
  st = _state()
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  ck.save(1, st, {})
  ck.close()
  big = _largest_file(tmp_path / 'checkpoints' / '1' / 'state')
  with open(big, 'r+b') as f:
    f.truncate(os.path.getsize(big) // 2)
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  with pytest.raises(ckpt_lib.CheckpointError) as e:
    ck.restore(1, _abstract(st))
  msg = str(e.value)
  assert '\n' not in msg and str(tmp_path / 'checkpoints' / '1') in msg
  assert 'truncated' in msg


def test_truncated_meta_is_one_line_error(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  ck.save(1, _state(), {'history': list(range(100))})
  ck.close()
  meta = tmp_path / 'checkpoints' / '1' / 'meta' / 'metadata'
  with open(meta, 'r+b') as f:
    f.truncate(10)
  with pytest.raises(ckpt_lib.CheckpointError, match=r'checkpoints/1/meta: unreadable'):
    ckpt_lib.Checkpointer(str(tmp_path)).read_meta(1)


def test_foreign_workdirs_are_refused(tmp_path):
  a = tmp_path / 'hf'
  a.mkdir()
  (a / 'config.json').write_text(json.dumps({'architectures': ['BertModel']}))
  with pytest.raises(ckpt_lib.CheckpointError, match=r'hf/config.json is not an mbcd_jax'):
    ckpt_lib.check_workdir(str(a))
  b = tmp_path / 'flax'
  (b / 'checkpoint_100').mkdir(parents=True)
  with pytest.raises(ckpt_lib.CheckpointError, match=r'flax/checkpoint_100 looks like another'):
    ckpt_lib.check_workdir(str(b))
  c = tmp_path / 'orbax'
  (c / 'checkpoints' / '100' / 'default').mkdir(parents=True)
  with pytest.raises(ckpt_lib.CheckpointError, match=r'checkpoints/100 has no meta/'):
    ckpt_lib.check_workdir(str(c))
  d = tmp_path / 'torch'
  d.mkdir()
  (d / 'model.pt').write_bytes(b'x')
  with pytest.raises(ckpt_lib.CheckpointError, match='model.pt looks like'):
    ckpt_lib.check_workdir(str(d))
  ok = tmp_path / 'notes'
  ok.mkdir()
  (ok / 'README.txt').write_text('my notes')
  ckpt_lib.check_workdir(str(ok))        # unrelated files are fine
  ckpt_lib.check_workdir(str(tmp_path / 'missing'))


def test_meta_of_another_project_is_refused(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  ck.save(1, _state(), {})
  ck.close()
  meta = tmp_path / 'checkpoints' / '1' / 'meta' / 'metadata'
  with open(meta) as f:
    m = json.load(f)
  m['project'] = 'someone_else'
  with open(meta, 'w') as f:
    json.dump(m, f)
  with pytest.raises(ckpt_lib.CheckpointError, match="not an mbcd_jax checkpoint"):
    ckpt_lib.Checkpointer(str(tmp_path)).read_meta(1)


def test_config_diff_names_keys():
  old = {'seed': 0, 'model': {'head_hidden': 16, 'x': 1}, 'train': {'progress': True}}
  new = {'seed': 0, 'model': {'head_hidden': 32}, 'train': {'progress': False}}
  assert ckpt_lib.config_diff(old, new) == ["model.head_hidden: 16 -> 32",
                                            "model.x: 1 -> '<absent>'"]


def test_config_diff_skips_keys_that_cannot_change_the_run():
  old = {'method': {'name': 'mbcd', 'alpha': 1e-4}, 'train': {'epochs': 20}}
  # A plug-in group the run does not use, and a key added since at its old behaviour's value.
  new = {'method': {'name': 'mbcd', 'alpha': 1e-4, 'cmrf': {'mix_coef': 2.0}},
         'train': {'epochs': 20, 'recipe': 'shared'}}
  assert ckpt_lib.config_diff(old, new) == []
  # The same keys do count when they matter: the run's own group, another recipe.
  new['method']['name'] = 'cmrf'
  new['train']['recipe'] = 'authors'
  assert ckpt_lib.config_diff(old, new) == [
      "method.cmrf.mix_coef: '<absent>' -> 2.0", "method.name: 'mbcd' -> 'cmrf'",
      "train.recipe: '<absent>' -> 'authors'"]


def test_move_aside_for_restart(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{}\n')
  (tmp_path / 'checkpoints').mkdir()
  (tmp_path / 'mine.txt').write_text('kept')
  dest = ckpt_lib.move_aside(str(tmp_path))
  assert sorted(os.listdir(dest)) == ['checkpoints', 'metrics.jsonl']
  assert sorted(os.listdir(tmp_path)) == ['mine.txt', 'previous-0']


def test_truncate_jsonl(tmp_path):
  p = tmp_path / 'metrics.jsonl'
  rows = [{'step': s, 'kind': 'train'} for s in (1, 2, 3, 4)]
  p.write_text(''.join(json.dumps(r) + '\n' for r in rows) + '{"step": 5, "ki')  # torn line
  assert metric_writer.truncate_jsonl(str(p), 2) == 3
  assert [json.loads(l)['step'] for l in p.read_text().splitlines()] == [1, 2]


_SAVE_THEN_DIE = textwrap.dedent('''
  import os, sys
  import jax.numpy as jnp
  import numpy as np
  from mbcd_jax import checkpoint as ckpt_lib
  ck = ckpt_lib.Checkpointer({workdir!r}, async_save=True)
  ck.save(1, {{'w': jnp.ones((4,))}}, {{}})
  ck.wait()
  # 64 MB of noise (incompressible): the background thread is still writing when we die.
  big = np.random.default_rng(0).standard_normal(16 * 1024 * 1024, np.float32)
  ck.save(2, {{'w': jnp.asarray(big)}}, {{}})
  os._exit(9)
''')


def test_kill_during_save_keeps_previous_checkpoint(tmp_path):
  workdir = str(tmp_path)
  r = subprocess.run([sys.executable, '-c', _SAVE_THEN_DIE.format(workdir=workdir)], cwd=ROOT,
                     env=python_env(), capture_output=True, text=True, timeout=120)
  assert r.returncode == 9, r.stderr[-2000:]
  names = os.listdir(tmp_path / 'checkpoints')
  assert '1' in names and '2' not in names, names
  assert any('orbax-checkpoint-tmp' in n for n in names), names   # the save was cut midway
  ck = ckpt_lib.Checkpointer(workdir)
  assert ck.latest_step() == 1
  state, meta = ck.restore(1, {'w': jax.ShapeDtypeStruct((4,), jnp.float32)})
  assert np.array_equal(state['w'], np.ones(4)) and meta['step'] == 1
  ck.close()
  assert not any('tmp' in n for n in os.listdir(tmp_path / 'checkpoints'))   # cleaned up


_DELETE_THEN_DIE = textwrap.dedent('''
  import os, sys
  import jax.numpy as jnp
  from mbcd_jax import checkpoint as ckpt_lib
  ck = ckpt_lib.Checkpointer({workdir!r}, keep=2, async_save=False)
  for s in (1, 2):
    ck.save(s, {{'w': jnp.full((4,), float(s))}}, {{}})
  ck.wait()
  # From now on, removing a finished checkpoint's meta/ folder (in a numbered folder, or in one
  # renamed into the trash) kills the process right after, as a SIGKILL landing mid-deletion
  # would (the CI failure this guards against); orbax's own temporary folders do not count.
  def killing(real):
    def op(path, *a, dir_fd=None, **k):
      real(path, *a, dir_fd=dir_fd, **k)
      full = os.path.join(os.readlink(f'/proc/self/fd/{{dir_fd}}'), path) if dir_fd else str(path)
      part = full.split(os.sep + 'checkpoints' + os.sep, 1)[-1].split(os.sep)[0]
      if (part.isdigit() or part == ckpt_lib.TRASH) and os.path.basename(full) == 'meta':
        os._exit(9)
    return op
  os.unlink = os.remove = killing(os.unlink)
  os.rmdir = killing(os.rmdir)
  for s in (3, 4, 5):
    ck.save(s, {{'w': jnp.full((4,), float(s))}}, {{}})
  ck.wait()
  sys.exit(0)
''')


def test_kill_during_deletion_leaves_a_resumable_workdir(tmp_path):
  """orbax removes an old checkpoint file by file; killed midway, the half-removed numbered
  folder used to make the workdir look foreign (no meta/). Deletion is now one rename."""
  workdir = str(tmp_path)
  r = subprocess.run([sys.executable, '-c', _DELETE_THEN_DIE.format(workdir=workdir)], cwd=ROOT,
                     env=python_env(), capture_output=True, text=True, timeout=120)
  assert r.returncode == 9, r.stderr[-2000:]   # died removing a meta/ folder
  ckpt_lib.check_workdir(workdir)   # no half-deleted numbered folder
  ck = ckpt_lib.Checkpointer(workdir)
  steps = ck.all_steps()
  assert steps and max(steps) >= 3, steps
  for s in steps:   # every checkpoint still listed is whole
    state, meta = ck.restore(s, {'w': jax.ShapeDtypeStruct((4,), jnp.float32)})
    assert np.array_equal(state['w'], np.full(4, float(s))) and meta['step'] == s
  ck.close()
  assert not os.listdir(tmp_path / 'checkpoints' / ckpt_lib.TRASH)   # emptied at start-up


def _tmpfs(path, size):
  os.makedirs(path, exist_ok=True)
  try:
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                       capture_output=True, timeout=10)
  except (OSError, subprocess.TimeoutExpired):
    return False
  return r.returncode == 0


def _save_past_a_full_disk(workdir: str, close=True):
  """Saves step 1 (small), then step 2 (8 MB) that cannot be written.

  Returns:
    step 2's CheckpointError, or (error, checkpointer) if not ``close``.
  """
  ck = ckpt_lib.Checkpointer(workdir)
  ck.save(1, {'w': jnp.arange(16, dtype=jnp.float32)}, {})
  ck.wait()
  noise = np.random.default_rng(0).standard_normal(2 * 1024 * 1024, np.float32)
  with pytest.raises(ckpt_lib.CheckpointError) as e:
    ck.save(2, {'w': jnp.asarray(noise)}, {})
    ck.wait()
  if not close:
    return e.value, ck
  try:
    ck.close()
  except (ckpt_lib.CheckpointError, OSError):
    pass   # the same failed save, reported again (see test_close_after_a_failed_save_...)
  return e.value


def _assert_only_step_1_intact(workdir: str):
  ck = ckpt_lib.Checkpointer(workdir)
  try:
    assert ck.latest_step() == 1 and ck.all_steps() == [1]
    state, _ = ck.restore(1, {'w': jax.ShapeDtypeStruct((16,), jnp.float32)})
    assert np.array_equal(state['w'], np.arange(16))
  finally:
    ck.close()


def test_disk_full_keeps_previous_checkpoint_enospc(tmp_path, monkeypatch):
  # Every file opened for writing under checkpoints/2* fails with ENOSPC, as on a full disk
  # (orbax writes the checkpoint's metadata files through Python's open). Runs everywhere.
  _fail_writes_under(monkeypatch, os.path.join(str(tmp_path), ckpt_lib.SUBDIR, '2'))
  err = _save_past_a_full_disk(str(tmp_path))
  monkeypatch.undo()
  assert '\n' not in str(err) and 'intact' in str(err)
  assert 'No space left on device' in str(err)
  _assert_only_step_1_intact(str(tmp_path))


def _fail_writes_under(monkeypatch, prefix: str):
  real_open = builtins.open

  def full_open(file, mode='r', *args, **kwargs):
    if (not isinstance(file, int) and any(c in mode for c in 'wax+')
        and os.fspath(file).startswith(prefix)):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))
    return real_open(file, mode, *args, **kwargs)

  monkeypatch.setattr(builtins, 'open', full_open)


def test_close_after_a_failed_save_raises_one_line_checkpoint_error(tmp_path, monkeypatch):
  _fail_writes_under(monkeypatch, os.path.join(str(tmp_path), ckpt_lib.SUBDIR, '2'))
  _, ck = _save_past_a_full_disk(str(tmp_path), close=False)
  with pytest.raises(ckpt_lib.CheckpointError) as e:
    ck.close()
  # What main prints as its last line: the whole message, naming where the save went.
  msg = str(e.value)
  assert '\n' not in msg, msg
  assert os.path.join(str(tmp_path), ckpt_lib.SUBDIR) in msg, msg
  assert 'No space left on device' in msg, msg


def test_disk_full_keeps_previous_checkpoint_tmpfs(tmp_path):
  # A real 4 MB disk: the tensor data itself (written by TensorStore, not Python) overflows.
  disk = tmp_path / 'disk'
  if not _tmpfs(disk, '4m'):
    pytest.skip('cannot mount a 4 MB tmpfs (needs root); '
                'test_disk_full_keeps_previous_checkpoint_enospc covers the same path')
  try:
    err = _save_past_a_full_disk(str(disk))
    assert '\n' not in str(err) and 'intact' in str(err)
    _assert_only_step_1_intact(str(disk))
  finally:
    subprocess.run(['umount', '-l', str(disk)], check=False)
