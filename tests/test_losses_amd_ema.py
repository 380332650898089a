"""CE / KL against hand-computed values; AMD probabilities and masks; the EMA update."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbcd_jax.method import amd, distill, ema, losses


def test_cross_entropy_hand_value():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
  labels = jnp.array([0, 2])
  z0 = math.log(math.exp(2) + 1 + math.exp(-1))
  expected = ((z0 - 2.0) + math.log(3.0)) / 2
  np.testing.assert_allclose(losses.cross_entropy(logits, labels), expected, rtol=1e-6)


def test_kl_matches_torch_batchmean():
  torch = pytest.importorskip('torch', reason='the KL reference is torch.nn.functional.kl_div '
                              '(requirements-dev.txt)')
  f = torch.nn.functional
  rng = np.random.default_rng(0)
  p = rng.dirichlet(np.ones(5), size=4)          # teacher probabilities [B, C]
  p[0] = [1.0, 0.0, 0.0, 0.0, 0.0]               # a saturated (one-hot) teacher row
  s = 3.0 * rng.standard_normal((4, 5))          # student logits [B, C]
  for temperature in (1.0, 2.0):
    logq = f.log_softmax(torch.tensor(s / temperature), dim=-1)
    want = f.kl_div(logq, torch.tensor(p), reduction='batchmean', log_target=False).item()
    # The same value with the teacher given as log-probabilities (rows without zeros).
    want_log = f.kl_div(logq[1:], torch.tensor(np.log(p[1:])), reduction='batchmean',
                        log_target=True).item()
    got = losses.kl_divergence(jnp.asarray(p, jnp.float32), jnp.asarray(s, jnp.float32),
                               temperature)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        losses.kl_divergence(jnp.asarray(p[1:], jnp.float32), jnp.asarray(s[1:], jnp.float32),
                             temperature), want_log, rtol=1e-5, atol=1e-6)
    assert want > 0.1   # not a trivially small value


def test_kl_hand_values():
  p = jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
  s = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
  q = np.exp(s) / np.exp(s).sum(1, keepdims=True)
  expected = (np.asarray(p) * (np.log(p) - np.log(q))).sum(1).mean()
  np.testing.assert_allclose(losses.kl_divergence(p, s), expected, rtol=1e-5)
  # Temperature divides the student logits.
  q2 = np.exp(s / 2) / np.exp(s / 2).sum(1, keepdims=True)
  np.testing.assert_allclose(losses.kl_divergence(p, s, 2.0),
                             (np.asarray(p) * (np.log(p) - np.log(q2))).sum(1).mean(), rtol=1e-6)
  # KL(p || p) = 0 and a one-hot teacher gives no NaN.
  np.testing.assert_allclose(losses.kl_divergence(p, jnp.log(p)), 0.0, atol=1e-6)
  assert np.isfinite(losses.kl_divergence(jnp.array([[1.0, 0.0, 0.0]]), s[:1]))


def test_distillation_loss_weights_terms():
  p = jax.nn.softmax(jnp.array([[1.0, 2.0, 0.0]]))
  zf = jnp.array([[0.0, 1.0, 0.0]])
  zu = {'video': jnp.array([[3.0, 0.0, 0.0]]), 'audio': jnp.array([[0.0, 0.0, 0.0]])}
  total, terms = distill.distillation_loss(p, zf, zu, lambda_mm=2.0, lambda_um=0.5,
                                           temperature=1.0)
  expected = 2.0 * losses.kl_divergence(p, zf) + 0.5 * (
      losses.kl_divergence(p, zu['video']) + losses.kl_divergence(p, zu['audio']))
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  assert set(terms) == {'kl_mm', 'kl_um/video', 'kl_um/audio'}


def test_amd_probabilities_hand_computed():
  # Confident video, unsure flow and audio.
  z = {'video': jnp.array([[4.0, 0.0], [0.0, 4.0]]),
       'flow': jnp.array([[0.5, 0.0], [0.0, 0.2]]),
       'audio': jnp.array([[0.0, 0.0], [1.0, 0.0]])}
  sm = {m: np.asarray(jax.nn.softmax(v)).max(1).sum() for m, v in z.items()}
  r = {k: np.mean([sm[k] / sm[j] for j in sm if j != k]) for k in sm}
  expected = {k: (math.tanh(r[k] - 1) if r[k] > 1 else 0.0) for k in r}
  got = amd.drop_probs(z, 'adaptive')
  for m in z:
    np.testing.assert_allclose(got[m], expected[m], rtol=1e-5, atol=1e-7)
  assert float(got['video']) > 0.1 and float(got['flow']) == 0.0
  # The port's modality_drop_base lifts the floor of dominant modalities only.
  based = amd.drop_probs(z, 'adaptive', base=0.2)
  np.testing.assert_allclose(based['video'], 0.2 + 0.8 * expected['video'], rtol=1e-5)
  assert float(based['flow']) == 0.0


def test_amd_modes_fixed_off_and_single_modality():
  z = {'video': jnp.zeros((3, 4)), 'audio': jnp.ones((3, 4))}
  assert all(float(p) == 0.5 for p in amd.drop_probs(z, 'fixed').values())
  assert all(float(p) == 0.0 for p in amd.drop_probs(z, 'off').values())
  assert float(amd.drop_probs({'video': z['video']}, 'adaptive')['video']) == 0.0
  with pytest.raises(ValueError, match='unknown AMD mode'):
    amd.drop_probs(z, 'sometimes')


def test_amd_masks_are_bernoulli_per_sample():
  probs = {'video': jnp.array(0.75), 'audio': jnp.array(0.0)}
  keep = amd.sample_keep(jax.random.key(0), probs, 20000, ('video', 'audio'))
  assert keep['video'].shape == (20000,)
  np.testing.assert_allclose(keep['video'].mean(), 0.25, atol=0.01)
  assert float(keep['audio'].min()) == 1.0            # p = 0 never drops
  assert set(np.unique(np.asarray(keep['video']))) <= {0.0, 1.0}   # no 1/(1-p) rescaling
  # The draw follows the given modality order, not the dict's key order.
  again = amd.sample_keep(jax.random.key(0), {'audio': probs['audio'], 'video': probs['video']},
                          20000, ('video', 'audio'))
  np.testing.assert_array_equal(again['video'], keep['video'])


def test_ema_update_hand_value():
  teacher = {'a': jnp.array([1.0, 2.0]), 'b': {'c': jnp.array(3.0)}}
  student = {'a': jnp.array([3.0, 0.0]), 'b': {'c': jnp.array(-1.0)}}
  new = ema.update(teacher, student, 0.9)
  assert jax.tree.structure(new) == jax.tree.structure(teacher)
  np.testing.assert_allclose(new['a'], [0.9 * 1 + 0.1 * 3, 0.9 * 2], rtol=1e-6)
  np.testing.assert_allclose(new['b']['c'], 0.9 * 3 - 0.1, rtol=1e-6)
  assert ema.init(student) is student
