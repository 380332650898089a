"""Gradient consistency (Eqs. 5-6): hand-written inner step, finite differences, O(alpha^2)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import spec, tiny_batch, tiny_model
from mbcd_jax import step
from mbcd_jax.method import losses

MODES = ('inner_first_order', 'inner_second_order', 'grad_dot', 'off')


def _setup():
  """Float64 params / features, no dropout and no AMD, so every mode is deterministic."""
  model = tiny_model(dropout=0.0, learnable_norm=True)
  batch = tiny_batch(dtype=jnp.float64)
  params, frozen = model.init(jax.random.key(1), batch)
  f64 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), t)
  params, frozen = f64(params), f64(frozen)
  # Move every parameter off its initial value: zero biases put ReLU pre-activations exactly at
  # the kink wherever the (ReLU) trunk output is all zeros, where the piecewise-smooth loss has
  # no derivative and finite differences are meaningless. Also exercises the learnable norms.
  rng = np.random.default_rng(3)
  params = jax.tree.map(lambda x: x + 0.05 * rng.standard_normal(x.shape), params)
  feats = model.trunk_features(frozen, batch)
  return model, params, frozen, feats, batch['label']


def _loss(mode, alpha, setup):
  model, _, frozen, feats, labels = setup
  sp = spec('mbcd', amd='off', distill=False, consistency=mode, alpha=alpha, unimodal_ce=True)
  def f(p):
    return step.loss_fn(p, frozen, feats, labels, None, jax.random.key(0), model=model,
                        spec=sp)
  return f


def _flat(tree):
  return jnp.concatenate([x.ravel() for x in jax.tree.leaves(tree)])


def _assert_trees_close(a, b, **tol):
  """Same structure (keys, nesting, shapes), then the same values."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert [x.shape for x in jax.tree.leaves(a)] == [x.shape for x in jax.tree.leaves(b)]
  np.testing.assert_allclose(_flat(a), _flat(b), **tol)


@pytest.fixture(scope='module')
def setup():
  old = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', True)
  yield _setup()
  jax.config.update('jax_enable_x64', old)


def test_first_order_equals_hand_written_update(setup):
  model, params, frozen, feats, labels = setup
  alpha = 0.05
  mods = model.modalities

  def ce_k(enc_m, m, p):
    h = model.encode(m, enc_m, p['norms'][m], frozen, feats[m])
    z = model.uni_logits({m: p['uni_heads'][m]}, {m: h}, train=False)[m] if False else \
        model.head.apply({'params': p['uni_heads'][m]}, h, train=False)
    return losses.cross_entropy(z, labels)

  def ce_mm(enc, p):
    h = {m: model.encode(m, enc[m], p['norms'][m], frozen, feats[m]) for m in mods}
    return losses.cross_entropy(model.fused_logits(p['fused_head'], h, train=False), labels)

  # theta'_k = theta_k - alpha * grad_k CE_k(theta_k), written out modality by modality.
  g = {m: jax.grad(ce_k)(params['encoders'][m], m, params) for m in mods}
  theta_prime = {m: jax.tree.map(lambda t, gg: t - alpha * gg, params['encoders'][m], g[m])
                 for m in mods}
  hand_loss = ce_mm(theta_prime, params) + sum(ce_k(params['encoders'][m], m, params)
                                               for m in mods)
  # First order: d/dtheta of CE_mm(theta') is dCE_mm/dtheta' (the inner gradient is constant).
  g_uni = jax.grad(lambda p: sum(ce_k(p['encoders'][m], m, p) for m in mods))(params)
  g_mm_enc = jax.grad(ce_mm, argnums=0)(theta_prime, params)
  g_mm_rest = jax.grad(ce_mm, argnums=1)(theta_prime, params)
  hand_grad = jax.tree.map(lambda a, b: a + b, g_uni, g_mm_rest)
  hand_grad['encoders'] = jax.tree.map(lambda a, b: a + b, hand_grad['encoders'], g_mm_enc)

  (loss, _), grad = jax.value_and_grad(_loss('inner_first_order', alpha, setup),
                                       has_aux=True)(params)
  np.testing.assert_allclose(loss, hand_loss, rtol=1e-12)
  _assert_trees_close(grad, hand_grad, rtol=1e-9, atol=1e-12)


def _parts(setup):
  """The objective's two terms written out independently of step.loss_fn:
  ``ce_uni(p) = sum_k CE_k(p)`` and ``ce_mm(enc, p) = CE_mm`` with encoder params ``enc`` and
  every other parameter (norms, fused head) from ``p``."""
  model, _, frozen, feats, labels = setup

  def ce_uni(p):
    h = model.encode_all(p['encoders'], p['norms'], frozen, feats)
    z = model.uni_logits(p['uni_heads'], h, train=False)
    return sum(losses.cross_entropy(z[m], labels) for m in model.modalities)

  def ce_mm(enc, p):
    h = model.encode_all(enc, p['norms'], frozen, feats)
    return losses.cross_entropy(model.fused_logits(p['fused_head'], h, train=False), labels)

  return ce_uni, ce_mm


def _directional_fd(fn, params, v, eps=1e-6):
  plus = fn(jax.tree.map(lambda p, d: p + eps * d, params, v))
  minus = fn(jax.tree.map(lambda p, d: p - eps * d, params, v))
  return (plus - minus) / (2 * eps)


@pytest.mark.parametrize('mode', ['grad_dot', 'inner_second_order'])
def test_gradient_matches_finite_differences(setup, mode):
  _, params, *_ = setup
  f = _loss(mode, 0.05, setup)
  value = lambda p: f(p)[0]
  grad = jax.grad(value)(params)
  rng = np.random.default_rng(0)
  for _ in range(3):
    v = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape)), params)
    fd = _directional_fd(value, params, v)
    np.testing.assert_allclose(jnp.vdot(_flat(grad), _flat(v)), fd, rtol=1e-5, atol=1e-8)


def test_first_order_gradient_is_the_frozen_inner_gradient_formula(setup):
  """The first-order objective's gradient is not the derivative of its value: it is the
  derivative with the inner gradient g = grad_enc sum_k CE_k held at its value at theta, and
  it misses exactly the second-order term -alpha <D_v g, grad_enc CE_mm(theta')>."""
  _, params, *_ = setup
  alpha = 0.05
  ce_uni, ce_mm = _parts(setup)
  inner = lambda p: jax.grad(ce_uni)(p)['encoders']
  g0 = inner(params)
  theta_prime = jax.tree.map(lambda t, g: t - alpha * g, params['encoders'], g0)
  gmm_at_prime = jax.grad(ce_mm)(theta_prime, params)
  # The objective's value with the inner gradient frozen at g0 (a different function of p).
  frozen_inner = jax.jit(lambda p: ce_mm(
      jax.tree.map(lambda t, g: t - alpha * g, p['encoders'], g0), p) + ce_uni(p))
  exact_value = jax.jit(lambda p: ce_mm(
      jax.tree.map(lambda t, g: t - alpha * g, p['encoders'], inner(p)), p) + ce_uni(p))
  inner_jvp = jax.jit(lambda p, v: jax.jvp(inner, (p,), (v,))[1])
  (loss, _), grad = jax.value_and_grad(_loss('inner_first_order', alpha, setup),
                                       has_aux=True)(params)
  np.testing.assert_allclose(loss, exact_value(params), rtol=1e-12)
  rng = np.random.default_rng(0)
  for _ in range(2):
    v = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape)), params)
    analytic = float(jnp.vdot(_flat(grad), _flat(v)))
    # 1. Equal to the frozen-inner-gradient formula, to finite-difference accuracy.
    np.testing.assert_allclose(analytic, _directional_fd(frozen_inner, params, v), rtol=1e-6,
                               atol=1e-9)
    # 2. The true derivative differs by the dropped Hessian term, computed independently as a
    #    JVP of the inner gradient along v.
    dg = inner_jvp(params, v)
    assert jax.tree.structure(dg) == jax.tree.structure(gmm_at_prime)
    missing = -alpha * float(jnp.vdot(_flat(dg), _flat(gmm_at_prime)))
    fd = float(_directional_fd(exact_value, params, v))
    assert abs(missing) > 1e-4 * abs(fd)   # the term is not negligible at this alpha
    np.testing.assert_allclose(fd - analytic, missing, rtol=1e-4, atol=1e-9)


def test_grad_dot_penalty_value(setup):
  model, params, frozen, feats, labels = setup
  alpha = 0.03
  _, (metrics, *_) = _loss('grad_dot', alpha, setup)(params)

  def ce_uni(enc):
    h = model.encode_all(enc, params['norms'], frozen, feats)
    z = model.uni_logits(params['uni_heads'], h, train=False)
    return sum(losses.cross_entropy(z[m], labels) for m in model.modalities)

  def ce_mm(enc):
    h = model.encode_all(enc, params['norms'], frozen, feats)
    return losses.cross_entropy(model.fused_logits(params['fused_head'], h, train=False), labels)

  # Independent path: plain jax.grad of each loss (no shared VJP).
  gu, gm = jax.grad(ce_uni)(params['encoders']), jax.grad(ce_mm)(params['encoders'])
  assert jax.tree.structure(gu) == jax.tree.structure(gm)
  expected = -alpha * jnp.vdot(_flat(gu), _flat(gm))
  np.testing.assert_allclose(metrics['grad_dot_penalty'], expected, rtol=1e-10)
  assert abs(float(expected)) > 0


def _diffs(setup, alpha, a, b):
  _, params, *_ = setup
  (la, _), ga = jax.value_and_grad(_loss(a, alpha, setup), has_aux=True)(params)
  (lb, _), gb = jax.value_and_grad(_loss(b, alpha, setup), has_aux=True)(params)
  assert jax.tree.structure(ga) == jax.tree.structure(gb)
  return float(abs(la - lb)), float(jnp.linalg.norm(_flat(ga) - _flat(gb)))


def test_modes_agree_to_second_order_in_alpha(setup):
  # At the paper's alpha scale: much larger steps cross ReLU kinks, where the piecewise-smooth
  # objective has no Taylor expansion and the gaps stop scaling cleanly.
  alphas = [1e-4, 5e-5, 2.5e-5]
  # Losses of all three active modes agree to O(alpha^2): halving alpha quarters the gap.
  for a, b in [('inner_second_order', 'grad_dot'), ('inner_first_order', 'grad_dot')]:
    gaps = [_diffs(setup, al, a, b)[0] for al in alphas]
    for big, small in zip(gaps, gaps[1:]):
      assert 3.0 < big / small < 5.0, (a, b, gaps)
  # Gradients: second order vs grad_dot O(alpha^2); first order drops a Hessian term: O(alpha).
  ggaps = [_diffs(setup, al, 'inner_second_order', 'grad_dot')[1] for al in alphas]
  for big, small in zip(ggaps, ggaps[1:]):
    assert 3.0 < big / small < 5.0, ggaps
  fgaps = [_diffs(setup, al, 'inner_first_order', 'inner_second_order')[1] for al in alphas]
  for big, small in zip(fgaps, fgaps[1:]):
    assert 1.5 < big / small < 2.5, fgaps


def test_all_modes_coincide_as_alpha_vanishes(setup):
  _, params, *_ = setup
  ref_loss, ref_grad = jax.value_and_grad(lambda p: _loss('off', 1e-9, setup)(p)[0])(params)
  for mode in MODES[:3]:
    loss, grad = jax.value_and_grad(lambda p: _loss(mode, 1e-9, setup)(p)[0])(params)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-7)
    _assert_trees_close(grad, ref_grad, rtol=1e-6, atol=1e-9)
  # ...and a finite alpha does change the objective (the tests above are not vacuous).
  far = _loss('inner_first_order', 0.05, setup)(params)[0]
  assert abs(float(far - ref_loss)) > 1e-6
