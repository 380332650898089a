"""Exact resume: a run killed (SIGKILL) at a random step, or preempted (SIGTERM), and re-run
with the same command ends bit for bit where an uninterrupted run ends; a changed config is
refused; non-finite losses stop the run or skip the update (train.py, step.guard_nonfinite)."""
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _runs  # pylint: disable=g-import-not-at-top
import _trees  # pylint: disable=g-import-not-at-top

# 6 epochs x 4 steps of the smoke benchmark, a checkpoint every 2 steps and at every epoch end.
FLAGS = ('--config.train.epochs=6', '--config.train.checkpoint_every_steps=2',
         '--config.train.keep_checkpoints=2')
TOTAL = 24


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """One uninterrupted run."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  r = _runs.run(workdir, *FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  assert _runs.checkpoint_steps(workdir)[-1] == TOTAL
  return workdir


def _assert_same_run(workdir, reference):
  assert _runs.rows(workdir) == _runs.rows(reference)        # no duplicated or missing rows
  assert _runs.summary(workdir) == _runs.summary(reference)
  _runs.assert_bitwise_equal(_runs.final_state(workdir), _runs.final_state(reference))


def test_sigkill_at_a_random_step_then_resume_is_bit_exact(tmp_path, reference):
  seed = int(os.environ.get('MBCD_TEST_SEED', time.time_ns() % 10_000))
  rnd = random.Random(seed)
  workdir = str(tmp_path / f'killed_seed{seed}')
  p = _runs.start(workdir, *FLAGS)
  try:
    _runs.wait_for_checkpoint(p, workdir, at_least=rnd.randint(2, 16))
    time.sleep(rnd.uniform(0.0, 0.3))   # anywhere: mid-step, mid-save, mid-eval
    assert p.poll() is None, 'finished before the kill'
    p.send_signal(signal.SIGKILL)
  finally:
    p.wait(timeout=60)
  assert p.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))
  killed_at = _runs.checkpoint_steps(workdir)[-1]
  assert killed_at < TOTAL, f'seed {seed}'
  r = _runs.run(workdir, *FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'resumed from {workdir}/checkpoints/' in r.stderr, f'seed {seed}'
  _assert_same_run(workdir, reference)


# 'port' BN mode, BN in the synthetic encoders, DSU: the state gains the BN running statistics
# and the teacher's copies of them and of the frozen variables.
PORT_FLAGS = ('--config.train.epochs=2', '--config.train.checkpoint_every_steps=2',
              '--config.model.bn_mode=port', '--config.model.dsu=True',
              '--config.model.encoders.video.bn=True', '--config.model.encoders.flow.bn=True',
              '--config.model.encoders.audio.bn=True')


def test_port_bn_mode_kill_then_resume_is_bit_exact(tmp_path):
  reference = str(tmp_path / 'port_reference')
  r = _runs.run(reference, *PORT_FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  state = _runs.final_state(reference)
  assert any(k.startswith("['student']['batch_stats']") for k in state)
  assert any(k.startswith("['teacher']['batch_stats']") for k in state)
  workdir = str(tmp_path / 'port_killed')
  p = _runs.start(workdir, *PORT_FLAGS)
  try:
    _runs.wait_for_checkpoint(p, workdir, at_least=2)
    assert p.poll() is None, 'finished before the kill'
    p.send_signal(signal.SIGKILL)
  finally:
    p.wait(timeout=60)
  assert _runs.checkpoint_steps(workdir)[-1] < 8
  r = _runs.run(workdir, *PORT_FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'resumed from {workdir}/checkpoints/' in r.stderr
  _assert_same_run(workdir, reference)


def test_sigterm_checkpoints_exits_75_then_resumes_bit_exact(tmp_path, reference):
  workdir = str(tmp_path / 'preempted')
  p = _runs.start(workdir, *FLAGS)
  try:
    _runs.wait_for_checkpoint(p, workdir, at_least=3)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
  finally:
    p.kill()
  err = _runs.output(p)
  assert p.returncode == 75, err[-3000:]
  line = _runs.last_line(err)
  assert line.startswith('mbcd_jax: preempted: checkpoint at step '), line
  step = int(line.split('checkpoint at step ')[1].split()[0])
  assert _runs.checkpoint_steps(workdir)[-1] == step < TOTAL
  r = _runs.run(workdir, *FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'{workdir}/checkpoints/{step}: step {step}' in r.stderr
  _assert_same_run(workdir, reference)


def test_rerun_finished_changed_config_and_restart(tmp_path, reference):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(reference, workdir)
  # The finished command again: nothing trains, nothing is appended.
  r = _runs.run(workdir, *FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  _assert_same_run(workdir, reference)

  # A changed config is refused, one line naming the keys.
  r = _runs.run(workdir, *FLAGS, '--config.model.head_hidden=32', '--config.seed=3')
  assert r.returncode == 2
  line = _runs.last_line(r.stderr)
  assert 'Traceback' not in r.stderr
  assert line.startswith(f'mbcd_jax: error: {workdir}/checkpoints/{TOTAL}/meta: the config '
                         'differs from the checkpoint\'s in 2 key(s): model.head_hidden: 16 -> '
                         '32; seed: 0 -> 3'), line
  # ... and with allow_changes the checkpoint's model shape is the problem, named.
  r = _runs.run(workdir, *FLAGS, '--config.model.head_hidden=32',
                '--config.train.resume_mode=allow_changes')
  assert r.returncode == 2 and 'Traceback' not in r.stderr
  line = _runs.last_line(r.stderr)
  assert line.startswith(f'mbcd_jax: error: {workdir}/checkpoints/{TOTAL}/state is from a '
                         'different model: student/params/'), line
  assert '(16,' in line and '(32,' in line
  assert _runs.rows(workdir) == _runs.rows(reference)   # the refusals wrote nothing

  # restart: the old run moves to previous-0, a fresh one runs (identically).
  r = _runs.run(workdir, *FLAGS, '--config.train.resume_mode=restart')
  assert r.returncode == 0, r.stderr[-3000:]
  assert _runs.rows(os.path.join(workdir, 'previous-0')) == _runs.rows(reference)
  _assert_same_run(workdir, reference)


def test_foreign_workdir_is_one_line_error(tmp_path):
  (tmp_path / 'checkpoint_1000').write_text('flax')
  r = _runs.run(str(tmp_path), *FLAGS)
  assert r.returncode == 2 and 'Traceback' not in r.stderr
  assert _runs.last_line(r.stderr) == (
      f'mbcd_jax: error: {tmp_path}/checkpoint_1000 looks like another program\'s checkpoint: '
      'the workdir belongs to another run; use a fresh --workdir')


# ---------------------------------------------------------------- non-finite losses
def test_guard_nonfinite_keeps_old_state_only_when_skipping():
  from mbcd_jax import models, step as step_lib  # pylint: disable=g-import-not-at-top
  weights = lambda w: models.Weights({'w': w}, {})
  old = step_lib.TrainState(step=jnp.array(4), student=weights(jnp.ones(3)),
                            opt_state={'m': jnp.zeros(3)}, teacher=weights(jnp.ones(3)))
  bad = old.replace(step=jnp.array(5), student=weights(jnp.array([1., jnp.nan, 2.])),
                    opt_state={'m': jnp.ones(3)}, teacher=weights(jnp.full(3, 7.)))
  good = bad.replace(student=weights(jnp.full(3, 2.)))
  finite = {'loss': jnp.float32(1.), 'grad_norm': jnp.float32(1.)}
  for new, metrics, flagged in [(good, finite, 0.), (bad, finite, 1.),
                                (good, {**finite, 'loss': jnp.float32(jnp.inf)}, 1.),
                                (good, {**finite, 'grad_norm': jnp.float32(jnp.nan)}, 1.)]:
    kept, m = jax.jit(lambda o, n, mm: step_lib.guard_nonfinite(o, n, mm, skip=True))(
        old, new, metrics)
    assert float(m['nonfinite']) == flagged
    assert int(kept.step) == 5                          # the step counter always advances
    expect = old if flagged else new
    _trees.assert_trees_equal((kept.student, kept.opt_state, kept.teacher),
                              (expect.student, expect.opt_state, expect.teacher),
                              where=f'nonfinite={flagged}')
    same, m = step_lib.guard_nonfinite(old, new, metrics, skip=False)
    assert same is new and float(m['nonfinite']) == flagged


# Runs the smoke benchmark with NaN written into the video input of one training batch.
_POISON = textwrap.dedent('''
  import sys
  import numpy as np
  from mbcd_jax import sharding, train
  from configs import hac
  calls = [0]
  real = sharding.shard_batch
  def poisoned(batch, mesh):
    if 'mask' not in batch:             # a training batch
      calls[0] += 1
      if calls[0] == {bad_step}:
        batch = dict(batch, video=np.full_like(batch['video'], np.nan))
    return real(batch, mesh)
  sharding.shard_batch = poisoned
  c = hac.get_config('smoke')
  c.train.epochs, c.train.checkpoint_every_steps = 3, 2
  c.train.nan_policy = {policy!r}
  try:
    _, s = train.train_and_evaluate(c, {workdir!r})
    print('NONFINITE_STEPS', s['nonfinite_steps'])
  except FloatingPointError as e:
    print('STOPPED', e)
''')


def _poisoned_run(workdir, policy, bad_step):
  code = _POISON.format(bad_step=bad_step, policy=policy, workdir=workdir)
  return subprocess.run([sys.executable, '-c', code], cwd=_runs.ROOT, env=_runs.env(),
                        capture_output=True, text=True, timeout=300)


def test_nan_stop_keeps_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path)
  r = _poisoned_run(workdir, 'stop', bad_step=7)
  assert r.returncode == 0, r.stderr[-3000:]
  out = _runs.last_line(r.stdout)
  assert out.startswith('STOPPED non-finite loss/gradient at step 7 (loss '), out
  assert 'nan' in out.split(';')[0], out
  assert out.endswith(f'the last good checkpoint is {workdir}/checkpoints/6'), out
  assert _runs.checkpoint_steps(workdir)[-1] == 6
  state = _runs.final_state(workdir)
  assert all(np.isfinite(v).all() for v in state.values())


def test_nan_skip_skips_one_update_and_finishes(tmp_path):
  workdir = str(tmp_path)
  r = _poisoned_run(workdir, 'skip', bad_step=7)
  assert r.returncode == 0, r.stderr[-3000:]
  assert _runs.last_line(r.stdout) == 'NONFINITE_STEPS 1'
  rows = {(row['step'], row['kind']): row for row in _runs.rows(workdir)}
  assert rows[(7, 'train')]['nonfinite'] == 1.0
  assert rows[(6, 'train')]['nonfinite'] == 0.0 and rows[(8, 'train')]['nonfinite'] == 0.0
  assert rows[(12, 'train')]['nonfinite_steps'] == 1.0
  state = _runs.final_state(workdir)
  assert int(state["['step']"]) == 12
  assert all(np.isfinite(v).all() for v in state.values())


# ---------------------------------------------------------------- a plug-in's own state
# CMRF (baselines/cmrf.py): an SMA teacher, the uniform mean of the student states since
# ``sma_start_step`` (its window: the count n = step + 1 - start comes from the state's step),
# plus the projectors' BN statistics in the student's extra_state and their SMA in the
# teacher's.
# 2 epochs x 4 steps; the window opens at step index 3 (the 4th update). Projectors of 64 / 16
# units (the authors' 2048 / 128 make 13.5M of the smoke model's parameters: only compile time).
CMRF_FLAGS = ('--config.method.name=cmrf', '--config.method.cmrf.sma_start_step=3',
              '--config.method.cmrf.proj_hidden=64', '--config.method.cmrf.proj_out=16',
              '--config.train.epochs=2', '--config.train.checkpoint_every_steps=2')
CMRF_TOTAL = 8


def _teacher_moved_from_student(state: dict) -> bool:
  """The SMA teacher holds a mean of several student states, not a copy of the latest."""
  pairs = [(k, k.replace("['teacher']", "['student']", 1)) for k in state
           if k.startswith("['teacher']['params']")]
  assert pairs and all(p in state for _, p in pairs)
  return any(not np.array_equal(state[t], state[p]) for t, p in pairs)


def test_cmrf_sigkill_inside_the_sma_window_then_resume_is_bit_exact(tmp_path):
  reference = str(tmp_path / 'cmrf_reference')
  r = _runs.run(reference, *CMRF_FLAGS, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  ref_state = _runs.final_state(reference)
  assert int(ref_state["['step']"]) == CMRF_TOTAL
  for part in ("['teacher']['params']", "['student']['extra_state']",
               "['teacher']['extra_state']"):
    assert any(k.startswith(part) for k in ref_state), part
  assert _teacher_moved_from_student(ref_state)

  seed = int(os.environ.get('MBCD_TEST_SEED', time.time_ns() % 10_000))
  rnd = random.Random(seed)
  workdir = str(tmp_path / f'cmrf_killed_seed{seed}')
  p = _runs.start(workdir, *CMRF_FLAGS)
  try:
    _runs.wait_for_checkpoint(p, workdir, at_least=4)
    time.sleep(rnd.uniform(0.0, 0.3))
    assert p.poll() is None, 'finished before the kill'
    p.send_signal(signal.SIGKILL)
  finally:
    p.wait(timeout=60)
  assert p.returncode == -signal.SIGKILL
  killed_at = _runs.checkpoint_steps(workdir)[-1]
  assert 4 <= killed_at < CMRF_TOTAL, f'seed {seed}'
  # The checkpoint resumed from is inside the window: its teacher is already an average.
  assert _teacher_moved_from_student(_runs.final_state(workdir, killed_at)), f'seed {seed}'
  r = _runs.run(workdir, *CMRF_FLAGS, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'resumed from {workdir}/checkpoints/' in r.stderr, f'seed {seed}'
  _assert_same_run(workdir, reference)
