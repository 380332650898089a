"""The jitted train step: every method learns, determinism, trunk sharing, teacher semantics,
and 8 fake CPU devices == 1 device."""
import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import ROOT, assert_eight_devices_equal_one, python_env, spec, tiny_batch, tiny_model
from mbcd_jax import methods, step

import _trees  # pylint: disable=g-import-not-at-top,wrong-import-position

OPTIM = ml_collections.ConfigDict(dict(lr=1e-2, weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8))


def _run(method, steps, freeze_trunk=True, **overrides):
  # Light head dropout: with 8 hidden units, p = 0.5 makes a 20-step loss curve mostly noise.
  model = tiny_model(freeze_trunk=freeze_trunk, dropout=0.1)
  batch = tiny_batch(batch_size=16)
  sp = spec(method, **overrides)
  tx = step.make_optimizer(OPTIM)
  state = step.init_state(model, sp, tx, jax.random.key(0), batch)
  f = jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx))
  evaluate = jax.jit(functools.partial(step.eval_step, model=model))
  hist = [jax.device_get(evaluate(state, batch))]
  for _ in range(steps):
    state, m = f(state, batch, jax.random.key(1))
    hist.append(jax.device_get(m))
  hist.append(jax.device_get(evaluate(state, batch)))
  return state, hist, model, batch


@pytest.mark.parametrize('method', sorted(set(methods.PRESETS) - set(methods.EXTENSIONS)))
def test_every_method_lowers_its_loss_on_a_fixed_batch(method):
  state, hist, _, _ = _run(method, 20)
  # Deterministic fused loss of the student (no dropout, no AMD) before vs after training.
  first, last = hist[0]['student/loss_sum'], hist[-1]['student/loss_sum']
  assert np.isfinite(hist[-2]['loss'])
  assert last < 0.75 * first, (first, last)
  assert int(state.step) == 20
  assert (state.teacher is not None) == methods.PRESETS[method]['ema']


@pytest.mark.parametrize('mode', ['inner_second_order', 'grad_dot'])
def test_other_consistency_modes_learn(mode):
  _, hist, _, _ = _run('mbcd', 15, consistency=mode, alpha=1e-3)
  assert hist[-1]['student/loss_sum'] < 0.8 * hist[0]['student/loss_sum']


def test_all_trainable_encoders_learn_and_update_trunk():
  model = tiny_model(freeze_trunk=False, dropout=0.1)
  batch = tiny_batch(batch_size=16)
  params, frozen = model.init(jax.random.key(0), batch)
  feats = model.trunk_features(frozen, batch)        # the raw inputs: every pass runs the trunk
  grads = jax.grad(lambda p: step.loss_fn(p, frozen, feats, batch['label'], None,
                                          jax.random.key(0), model=model,
                                          spec=spec('mbcd_no_dl'))[0])(params)
  # The loss itself (not only weight decay) reaches every trunk parameter.
  for m in model.modalities:
    g = grads['encoders'][m]['trunk']
    assert jax.tree.structure(g) == jax.tree.structure(params['encoders'][m]['trunk'])
    for path, leaf in jax.tree_util.tree_leaves_with_path(g):
      assert float(jnp.abs(leaf).max()) > 0, (m, jax.tree_util.keystr(path))
  state, hist, _, _ = _run('mbcd', 10, freeze_trunk=False)
  assert 'trunk' in state.student.params['encoders']['video']
  assert hist[-1]['student/loss_sum'] < hist[0]['student/loss_sum']


_SEEDED_RUN = textwrap.dedent('''
  import functools, sys
  import jax, numpy as np, ml_collections
  from conftest import spec, tiny_batch, tiny_model
  from mbcd_jax import step
  seed = int(sys.argv[1])
  optim = ml_collections.ConfigDict(dict(lr=1e-2, weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8))
  model, batch, sp = tiny_model(dropout=0.1), tiny_batch(batch_size=16), spec('mbcd')
  tx = step.make_optimizer(optim)
  state = step.init_state(model, sp, tx, jax.random.key(seed), batch)
  f = jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx))
  metrics = []
  for _ in range(3):
    state, m = f(state, batch, jax.random.key(seed + 100))
    metrics.append(m)
  flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
          jax.tree_util.tree_leaves_with_path(jax.device_get((state, metrics)))}
  np.savez(sys.argv[2], **flat)
''')


def test_same_seed_same_metrics_and_params(tmp_path):
  """Two separate processes with the same seed end bit for bit equal; another seed differs."""
  script = tmp_path / 'seeded.py'
  script.write_text(_SEEDED_RUN)
  outs = {}
  for name, seed in (('a', 0), ('b', 0), ('c', 1)):
    out = tmp_path / f'{name}.npz'
    res = subprocess.run([sys.executable, str(script), str(seed), str(out)], cwd=ROOT,
                         env=python_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    outs[name] = dict(np.load(out))
  a, b, c = outs['a'], outs['b'], outs['c']
  assert sorted(a) == sorted(b) == sorted(c) and any('loss' in k for k in a)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert any(not np.array_equal(a[k], c[k]) for k in a if 'params' in k)
  assert any(not np.array_equal(a[k], c[k]) for k in a if "'loss'" in k)


def test_teacher_is_ema_of_student_and_frozen_trunk_untouched():
  model = tiny_model()
  batch = tiny_batch(batch_size=16)
  sp = spec('mbcd', ema_beta=0.9)
  tx = step.make_optimizer(OPTIM)
  s0 = step.init_state(model, sp, tx, jax.random.key(0), batch)
  s1, _ = jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx))(
      s0, batch, jax.random.key(1))
  expected = jax.tree.map(lambda t, p: 0.9 * t + 0.1 * p, s0.teacher.params, s1.student.params)
  _trees.assert_trees_equal(s1.teacher.params, expected, exact=False, rtol=1e-6, atol=1e-7,
                            where='teacher')
  _trees.assert_trees_equal(s1.student.frozen, s0.student.frozen, where='frozen')
  # 'frozen' BN mode: no separate statistics, the teacher reads the student's frozen variables
  # (one copy: its own frozen is None, step.weights resolves it).
  assert s1.student.batch_stats is None and s1.teacher.frozen is None
  assert step.weights(s1, 'teacher').frozen is s1.student.frozen
  # The student moved: the check above is not comparing equal trees.
  assert jax.tree.structure(s1.student.params) == jax.tree.structure(s0.student.params)
  assert not _trees.trees_equal(s1.student.params, s0.student.params)


def test_erm_probe_heads_do_not_change_encoder_gradients():
  """erm trains uni-modal heads as probes: the encoders' update must equal pure fused-CE ERM."""
  model = tiny_model(dropout=0.0)
  batch = tiny_batch(batch_size=8)
  params, frozen = model.init(jax.random.key(0), batch)
  feats = model.trunk_features(frozen, batch)
  sp = spec('erm')
  grads = jax.grad(lambda p: step.loss_fn(p, frozen, feats, batch['label'], None,
                                          jax.random.key(0), model=model, spec=sp)[0])(params)

  def fused_only(enc):
    from mbcd_jax.method import losses  # pylint: disable=g-import-not-at-top
    h = model.encode_all(enc, params['norms'], frozen, feats)
    return losses.cross_entropy(model.fused_logits(params['fused_head'], h, train=False),
                                batch['label'])
  ref = jax.grad(fused_only)(params['encoders'])
  _trees.assert_trees_equal(grads['encoders'], ref, exact=False, rtol=1e-5, atol=1e-7)
  # ...while the probe heads do receive gradients.
  assert float(jnp.abs(grads['uni_heads']['video']['Dense_0']['kernel']).sum()) > 0


def test_trunk_runs_once_per_step():
  """Count trunk applications in the traced step: once for all student passes and teacher."""
  model = tiny_model()
  calls = {'n': 0}
  trunk = model.encoders['video'].trunk
  orig = type(trunk).__call__

  def counting(self, x):
    calls['n'] += 1
    return orig(self, x)
  batch = tiny_batch(batch_size=8)
  sp = spec('mbcd')
  tx = step.make_optimizer(OPTIM)
  state = step.init_state(model, sp, tx, jax.random.key(0), batch)
  type(trunk).__call__ = counting
  try:
    jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx)).lower(
        state, batch, jax.random.key(1))
  finally:
    type(trunk).__call__ = orig
  # FrameTrunk serves video and flow: one call each per step.
  assert calls['n'] == 2, calls


def test_eight_devices_equal_one_device(tmp_path):
  assert_eight_devices_equal_one(tmp_path, """
    import ml_collections
    from conftest import spec, tiny_batch, tiny_model
    optim = ml_collections.ConfigDict(dict(lr=3e-3, weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8))
    model, batch, sp = tiny_model(), tiny_batch(batch_size=16), spec('mbcd')
    tx = step.make_optimizer(optim)
  """, 'state.student.params', timeout=300)
