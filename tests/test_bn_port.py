"""BatchNorm semantics of the train step (config.model.bn_mode) and DSU.

'port': every encoder BN normalises with batch statistics in training passes, the running
statistics follow PyTorch's update once per student pass, the teacher averages them, and
inference runs on each network's own running statistics. Checked against torch.nn.BatchNorm,
hand (NumPy) computations and the modules applied on their own.
"""
import functools
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import assert_eight_devices_equal_one, spec, tiny_batch
from mbcd_jax import models, step
from mbcd_jax.method import dsu
from mbcd_jax.encoders import batchnorm

import _trees  # pylint: disable=g-import-not-at-top,wrong-import-position

OPTIM = ml_collections.ConfigDict(dict(lr=1e-2, weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8))


def bn_model(bn_mode='port', freeze_trunk=True, dsu_on=False, dropout=0.0):
  enc = ml_collections.ConfigDict({
      'video': {'name': 'frame_cnn', 'trunk_widths': (4, 4), 'trunk_strides': (1, 2),
                'width': 6, 'bn': True},
      'audio': {'name': 'spec_cnn', 'trunk_widths': (4, 4), 'trunk_strides': (1, 2),
                'width': 4, 'bn': True},
  })
  mc = ml_collections.ConfigDict(dict(
      encoders=enc, head_hidden=8, head_dropout=dropout, freeze_trunk=freeze_trunk,
      feature_norm='parameter_free', bn_mode=bn_mode, dsu=dsu_on, dsu_p=0.5))
  return models.build_model(mc, ('video', 'audio'), 5)


def batch2(batch_size=8, key=0):
  b = tiny_batch(key=key, batch_size=batch_size)
  return {k: b[k] for k in ('video', 'audio', 'label')}


def leaves_equal(a, b):
  # Structure is asserted, not returned: `not leaves_equal(...)` must mean the values moved,
  # never that the trees are different trees.
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return _trees.trees_equal(a, b)


def assert_tree_close(a, b, *, rtol, atol):
  _trees.assert_trees_equal(a, b, exact=False, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- the BatchNorm layer
def test_batchnorm_training_mode_matches_torch():
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(0)
  x = rng.normal(2.0, 3.0, (4, 3, 5, 6)).astype(np.float32)        # [B, T, H, C]
  scale, bias = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
  r_mean, r_var = rng.normal(size=6).astype(np.float32), rng.uniform(0.5, 2, 6).astype(np.float32)
  variables = {'params': {'scale': scale, 'bias': bias},
               'batch_stats': {'mean': r_mean, 'var': r_var}}
  y, mut = batchnorm.BatchNorm().apply(variables, jnp.asarray(x), mutable=[batchnorm.MOMENTS])
  new = batchnorm.update_running(variables['batch_stats'], mut[batchnorm.MOMENTS])

  tbn = torch.nn.BatchNorm2d(6)          # momentum 0.1, eps 1e-5
  with torch.no_grad():
    tbn.weight.copy_(torch.from_numpy(scale))
    tbn.bias.copy_(torch.from_numpy(bias))
    tbn.running_mean.copy_(torch.from_numpy(r_mean))
    tbn.running_var.copy_(torch.from_numpy(r_var))
  tbn.train()
  ty = tbn(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
  np.testing.assert_allclose(y, ty, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(new['mean'], tbn.running_mean.numpy(), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(new['var'], tbn.running_var.numpy(), rtol=1e-6, atol=1e-6)
  # Hand values: unbiased variance (n = 4*3*5 = 60 values per channel) in the update.
  flat = x.reshape(-1, 6).astype(np.float64)
  np.testing.assert_allclose(new['var'], 0.9 * r_var + 0.1 * flat.var(0, ddof=1), rtol=1e-5)
  # Inference mode: the running statistics, per sample (no batch dependence).
  tbn.eval()
  y_inf = batchnorm.BatchNorm().apply({**variables, 'batch_stats': new}, jnp.asarray(x))
  ty_inf = tbn(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
  np.testing.assert_allclose(y_inf, ty_inf, rtol=1e-5, atol=1e-5)


def test_batchnorm_inference_is_bit_identical_to_flax():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(3, 4, 4, 5)), jnp.float32)
  ours = batchnorm.BatchNorm(epsilon=1e-5, dtype=jnp.float32)
  theirs = nn.BatchNorm(use_running_average=True, epsilon=1e-5, dtype=jnp.float32)
  v = theirs.init(jax.random.key(0), x)
  assert jax.tree.structure(ours.init(jax.random.key(0), x)) == jax.tree.structure(v)
  v = jax.tree.map(lambda a: a + jnp.asarray(rng.uniform(0.1, 1, a.shape), a.dtype), v)
  np.testing.assert_array_equal(ours.apply(v, x), theirs.apply(v, x))


# ---------------------------------------------------------------- DSU
def test_dsu_formula_against_numpy():
  rng = np.random.default_rng(2)
  x = rng.normal(1.0, 2.0, (4, 3, 5, 6)).astype(np.float32)       # [B, T, S, C]
  e_mu, e_sig = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
  got = dsu.perturb_map(jnp.asarray(x), jnp.asarray(e_mu, jnp.float32),
                        jnp.asarray(e_sig, jnp.float32))
  xd = x.astype(np.float64).reshape(4, -1, 6)
  mu, sig = xd.mean(1), np.sqrt(xd.var(1, ddof=1) + 1e-6)
  beta = mu + e_mu * np.sqrt(mu.var(0, ddof=1) + 1e-6)
  gamma = sig + e_sig * np.sqrt(sig.var(0, ddof=1) + 1e-6)
  want = (xd - mu[:, None]) / sig[:, None] * gamma[:, None] + beta[:, None]
  np.testing.assert_allclose(got, want.reshape(x.shape), rtol=2e-5, atol=2e-5)


def test_dsu_coin_is_one_per_call():
  x = (jnp.asarray(np.random.default_rng(3).normal(size=(4, 2, 3, 8)), jnp.float32),
       jnp.asarray(np.random.default_rng(4).normal(size=(4, 5, 3)), jnp.float32))
  assert leaves_equal(dsu.apply(jax.random.key(0), x, 0.0), x)          # p = 0: identity
  out = dsu.apply(jax.random.key(0), x, 1.0)                            # p = 1: both perturbed
  assert all(not np.allclose(a, b) for a, b in zip(out, x))
  # p = 0.5: over many keys both maps are perturbed together or not at all, about half the time.
  flags = []
  for i in range(40):
    o = dsu.apply(jax.random.key(i), x, 0.5)
    changed = [not np.array_equal(a, b) for a, b in zip(o, x)]
    assert changed[0] == changed[1]
    flags.append(changed[0])
  assert 8 < sum(flags) < 32


# ---------------------------------------------------------------- the train step, 'port' mode
def _one_step(model, method='mbcd', batch=None, **overrides):
  batch = batch or batch2()
  sp = spec(method, **overrides)
  tx = step.make_optimizer(OPTIM)
  s0 = step.init_state(model, sp, tx, jax.random.key(0), batch)
  s1, m = jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx))(
      s0, batch, jax.random.key(1))
  return s0, s1, m, batch


def _moments(module, variables, x):
  _, mut = module.apply(variables, x, mutable=[batchnorm.MOMENTS])
  return mut[batchnorm.MOMENTS]


def _np_update(running, moments, times=1):
  out = jax.tree.map(np.asarray, running)
  for _ in range(times):
    out = jax.tree.map(lambda r, b: 0.9 * r + 0.1 * np.asarray(b), out, moments)
  return out


def test_port_state_layout_and_teacher_copy():
  model = bn_model()
  s0, _, _, _ = _one_step(model)
  for m in model.modalities:
    assert 'batch_stats' not in s0.student.frozen['encoders'][m]['trunk']
    assert set(s0.student.batch_stats['encoders'][m]) == {'trunk', 'stage'}
    assert s0.student.batch_stats['encoders'][m]['trunk']      # the trunk carries BN
  assert leaves_equal(s0.teacher.batch_stats, s0.student.batch_stats)
  assert leaves_equal(s0.teacher.frozen, s0.student.frozen)
  assert leaves_equal(s0.teacher.params, s0.student.params)
  # 'frozen' mode keeps the statistics inside ``frozen`` and no teacher copies of them.
  f0, _, _, _ = _one_step(bn_model('frozen'))
  assert f0.student.batch_stats is None and f0.teacher.frozen is None
  assert 'batch_stats' in f0.student.frozen['encoders']['video']['trunk']


@pytest.mark.parametrize('method,passes', [('mbcd', 2), ('ema', 1)])
def test_running_stats_follow_torch_update_once_per_student_pass(method, passes):
  """alpha = 0 makes theta' = theta, so both passes see the same batch statistics."""
  model = bn_model()
  s0, s1, _, batch = _one_step(model, method, alpha=0.0)
  for m in model.modalities:
    enc = model.encoders[m]
    trunk_vars = {**s0.student.frozen['encoders'][m]['trunk'],
                  'batch_stats': s0.student.batch_stats['encoders'][m]['trunk']}
    trunk_out, mut = enc.trunk.apply(trunk_vars, batch[m], mutable=[batchnorm.MOMENTS])
    stage_vars = {'params': s0.student.params['encoders'][m]['stage'],
                  'batch_stats': s0.student.batch_stats['encoders'][m]['stage']}
    for part, moments in (('trunk', mut[batchnorm.MOMENTS]),
                          ('stage', _moments(enc.stage, stage_vars, trunk_out))):
      want = _np_update(s0.student.batch_stats['encoders'][m][part], moments, times=passes)
      assert_tree_close(s1.student.batch_stats['encoders'][m][part], want, rtol=1e-5,
                        atol=1e-6)
      # ... and they did move (the check is not comparing unchanged trees).
      assert not leaves_equal(s1.student.batch_stats['encoders'][m][part],
                              s0.student.batch_stats['encoders'][m][part])


def test_stage_stats_see_theta_then_theta_prime():
  """With alpha > 0 the second update uses theta''s statistics: the result differs from
  applying theta's twice, and equals updating with theta's then theta''s moments."""
  model = bn_model()
  s0, s1, _, batch = _one_step(model, 'mbcd_no_amd', alpha=10.0)
  s0b, s1b, _, _ = _one_step(model, 'mbcd_no_amd', alpha=0.0)
  m = 'video'
  a = s1.student.batch_stats['encoders'][m]['stage']
  b = s1b.student.batch_stats['encoders'][m]['stage']
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert not _trees.trees_equal(a, b, exact=False, rtol=1e-6, atol=1e-8)
  # The trunk's statistics do not depend on theta.
  assert_tree_close(s1.student.batch_stats['encoders'][m]['trunk'],
                    s1b.student.batch_stats['encoders'][m]['trunk'], rtol=0, atol=0)


def test_teacher_averages_the_whole_student_state():
  model = bn_model()
  s0, s1, _, _ = _one_step(model, 'mbcd', ema_beta=0.9)
  for t0, new, t1 in [(s0.teacher.batch_stats, s1.student.batch_stats, s1.teacher.batch_stats),
                      (s0.teacher.params, s1.student.params, s1.teacher.params),
                      (s0.teacher.frozen, s1.student.frozen, s1.teacher.frozen)]:
    assert_tree_close(t1, jax.tree.map(lambda t, s: 0.9 * t + 0.1 * s, t0, new),
                      rtol=1e-6, atol=1e-7)
  assert not leaves_equal(s1.teacher.batch_stats, s0.teacher.batch_stats)
  assert leaves_equal(s1.student.frozen, s0.student.frozen)    # frozen weights never train


def test_eval_and_teacher_run_on_own_running_statistics():
  model = bn_model()
  _, s1, _, batch = _one_step(model, 'mbcd')
  ev = jax.jit(functools.partial(step.eval_step, model=model))(s1, batch)
  for who in ('student', 'teacher'):
    w = step.weights(s1, who)
    z = model.predict(w, batch)
    # Inference mode: an example's logits do not depend on the rest of the batch.
    z1 = model.predict(w, {k: v[:2] for k, v in batch.items()})
    np.testing.assert_allclose(z['fused'][:2], z1['fused'], rtol=1e-5, atol=1e-5)
    correct = float((np.argmax(z['fused'], -1) == np.asarray(batch['label'])).sum())
    assert float(ev[f'{who}/fused']) == correct
  # The teacher's statistics are its own: swapping in the student's changes its output.
  t = step.weights(s1, 'teacher')
  swapped = t.replace(batch_stats=jax.tree.map(lambda a: a * 3.0 + 1.0, t.batch_stats))
  assert not np.allclose(model.predict(t, batch)['fused'],
                         model.predict(swapped, batch)['fused'])


def test_port_mode_learns_and_trains_trunk_stats_with_trainable_trunk():
  model = bn_model(freeze_trunk=False)
  s0, s1, m, _ = _one_step(model, 'mbcd')
  assert np.isfinite(float(m['loss']))
  assert 'trunk' in s1.student.params['encoders']['video']
  assert not leaves_equal(s1.student.batch_stats['encoders']['video']['trunk'],
                          s0.student.batch_stats['encoders']['video']['trunk'])


def test_trunk_passes_per_bn_mode():
  """'frozen': one trunk run for both student passes and the teacher; 'port': the student's
  (shared by its two passes) and the teacher's."""
  for bn_mode, want in (('frozen', 2), ('port', 4)):    # two modalities
    model = bn_model(bn_mode)
    calls = {'n': 0}
    classes = {type(model.encoders[m].trunk) for m in model.modalities}
    originals = {c: c.__call__ for c in classes}

    def counting(self, x, _orig=None):
      calls['n'] += 1
      return originals[type(self)](self, x)
    batch, sp, tx = batch2(), spec('mbcd'), step.make_optimizer(OPTIM)
    state = step.init_state(model, sp, tx, jax.random.key(0), batch)
    for c in classes:
      c.__call__ = counting
    try:
      jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx)).lower(
          state, batch, jax.random.key(1))
    finally:
      for c, f in originals.items():
        c.__call__ = f
    assert calls['n'] == want, (bn_mode, calls)


def test_dsu_only_in_the_first_pass_and_only_in_training():
  model = bn_model(dsu_on=True)
  batch = batch2()
  sp = spec('mbcd')
  tx = step.make_optimizer(OPTIM)
  s0 = step.init_state(model, sp, tx, jax.random.key(0), batch)
  feats, _ = model.trunk_features_train(s0.student.frozen, batch, s0.student.batch_stats)
  p = s0.student.params
  args = (p['encoders'], p['norms'], s0.student.frozen, feats, s0.student.batch_stats)
  clean, _ = model.encode_all_train(*args)
  diffs = [not np.allclose(model.encode_all_train(*args, dsu_rng=jax.random.key(i))[0]['video'],
                           clean['video']) for i in range(12)]
  assert any(diffs) and not all(diffs)            # p = 0.5 per call
  # Inference never perturbs.
  w = step.weights(s0)
  np.testing.assert_array_equal(model.predict(w, batch)['fused'], model.predict(w, batch)['fused'])
  s1, m = jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx))(
      s0, batch, jax.random.key(1))
  assert np.isfinite(float(m['loss']))


def test_amd_masks_same_across_consistency_modes():
  """Same seed -> same AMD masks whatever the consistency mode (model's modality order)."""
  from mbcd_jax.method import amd  # pylint: disable=g-import-not-at-top
  model = bn_model('frozen')
  batch = batch2()
  seen = {}
  real = amd.sample_keep

  def recording(*a, **kw):
    out = real(*a, **kw)
    seen[mode] = jax.device_get(out)
    return out
  amd.sample_keep = recording
  try:
    for mode in ('inner_first_order', 'off', 'grad_dot'):
      sp = spec('mbcd', consistency=mode, amd='fixed')
      params, frozen = model.init(jax.random.key(0), batch)
      feats = model.trunk_features(frozen, batch)
      step.loss_fn(params, frozen, feats, batch['label'], jnp.full((8, 5), 0.2),
                   jax.random.key(3), model=model, spec=sp)
  finally:
    amd.sample_keep = real
  assert set(seen) == {'inner_first_order', 'off', 'grad_dot'}
  for mode in ('off', 'grad_dot'):
    for m in model.modalities:
      np.testing.assert_array_equal(seen[mode][m], seen['inner_first_order'][m])
  assert not np.array_equal(seen['off']['video'], seen['off']['audio'])  # independent draws


def test_eight_devices_equal_one_device_port_mode(tmp_path):
  # Batch statistics must be those of the global batch: running stats and teachers agree too.
  assert_eight_devices_equal_one(tmp_path, """
    from conftest import spec
    from test_bn_port import bn_model, batch2, OPTIM
    model, batch, sp = bn_model(), batch2(batch_size=16), spec('mbcd')
    tx = step.make_optimizer(OPTIM)
  """, '(state.student.batch_stats, state.teacher.batch_stats, state.student.params)')
