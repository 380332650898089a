"""RNA-Net and SimMMDG loss pieces: hand values, and a PyTorch re-implementation of the authors'
math on the same weights and inputs (values and gradients, float64)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbcd_jax.baselines import rna, simmmdg

torch = pytest.importorskip('torch')
F = torch.nn.functional

DIMS = {'video': 8, 'flow': 6, 'audio': 4}
HP = simmmdg.Hparams(proj_hidden=10, proj_dim=5, trans_hidden=7, trans_dropout=0.0)
LABELS = np.array([0, 1, 0, 2, 1, 0, 2, 2])


def _feats(seed=0, dims=DIMS, b=8):
  rs = np.random.RandomState(seed)
  # post-ReLU pooled features are non-negative
  # distinct scales so the norm ratios are far from 1
  scale = {'video': 3.0, 'flow': 1.0, 'audio': 0.4}
  return {m: scale[m] * (np.abs(rs.randn(b, d)) + 0.1) for m, d in dims.items()}


# ------------------------------------------------------------------ torch reference
def torch_rna(feats):
  """As train_RNA.py: mean row norms, ratios in (v, a), (v, f), (f, a) order, squared, averaged."""
  n = {m: x.norm(p=2, dim=1).mean() for m, x in feats.items()}
  if len(n) == 3:
    fr = [n['video'] / n['audio'], n['video'] / n['flow'], n['flow'] / n['audio']]
  elif set(n) == {'video', 'flow'}:
    fr = [n['video'] / n['flow']]
  elif set(n) == {'video', 'audio'}:
    fr = [n['video'] / n['audio']]
  else:
    fr = [n['flow'] / n['audio']]
  return sum((r - 1) ** 2 for r in fr) / len(fr)


def torch_supcon(feats, labels, temperature, base_temperature):
  """Loop form: per anchor, -mean over positives of log softmax over all non-self rows."""
  b, v, _ = feats.shape
  x = torch.cat([feats[:, i] for i in range(v)], 0)
  lab = labels.repeat(v)
  total = 0
  for i in range(v * b):
    sims = x @ x[i] / temperature
    others = [k for k in range(v * b) if k != i]
    log_den = torch.logsumexp(sims[others], 0)
    pos = [k for k in others if lab[k] == lab[i]]
    total = total + torch.stack([sims[k] - log_den for k in pos]).mean()
  return -(temperature / base_temperature) * total / (v * b)


def _linear(p):
  lin = torch.nn.Linear(*p['kernel'].shape).double()
  with torch.no_grad():
    lin.weight.copy_(torch.tensor(np.asarray(p['kernel']).T))
    lin.bias.copy_(torch.tensor(np.asarray(p['bias'])))
  return lin


def _bn(p):
  bn = torch.nn.BatchNorm1d(p['scale'].shape[0]).double()
  with torch.no_grad():
    bn.weight.copy_(torch.tensor(np.asarray(p['scale'])))
    bn.bias.copy_(torch.tensor(np.asarray(p['bias'])))
  return bn


def torch_proj(p):
  d = lambda i: p[f'TorchDense_{i}']['Dense_0']
  return torch.nn.Sequential(_linear(d(0)), _bn(p['BatchNorm_0']), torch.nn.ReLU(),
                             _linear(d(1)), _bn(p['BatchNorm_1']), torch.nn.ReLU(),
                             _linear(d(2)))


def torch_trans(p):
  d = lambda i: p[f'TorchDense_{i}']['Dense_0']
  return torch.nn.Sequential(_linear(d(0)), torch.nn.ReLU(), _linear(d(1)), torch.nn.ReLU(),
                             torch.nn.Dropout(0.0), _linear(d(2)))


def torch_simmmdg(params, feats, labels, hp):
  """The authors' three terms (unweighted), written from their training script's math."""
  ms = [m for m in simmmdg.ORDER if m in feats]
  projs = {m: torch_proj(params['proj'][m]) for m in ms}
  z = [F.normalize(projs[m](feats[m][:, :feats[m].shape[1] // 2]), dim=1) for m in ms]
  con = torch_supcon(torch.stack(z, 1), labels, hp.temperature, hp.base_temperature)
  trans = []
  for a in ms:
    for b in ms:
      if a != b:
        t = torch_trans(params['trans'][f'{a}_to_{b}'])(feats[a])
        t = t / torch.norm(t, dim=1, keepdim=True)
        tgt = feats[b] / torch.norm(feats[b], dim=1, keepdim=True)
        trans.append(torch.mean(torch.norm(t - tgt, dim=1)))
  dis = 0
  for m in ms:
    h = feats[m].shape[1] // 2
    dis = dis - F.mse_loss(feats[m][:, :h], feats[m][:, h:])
  return {'contrast': con, 'translation': sum(trans) / len(trans), 'distance': dis / len(ms)}, projs


# ------------------------------------------------------------------ RNA
def test_rna_hand_values():
  v = jnp.array([[3., 4.], [0., 5.]])        # mean norm 5
  a = jnp.array([[1., 0.], [0., 1.]])        # mean norm 1
  f = jnp.array([[2., 0.], [0., 2.]])        # mean norm 2
  assert float(rna.relative_norm_alignment({'video': v, 'audio': a})) == pytest.approx(16.0)
  # pairs (v, a), (v, f), (f, a): ((5-1)^2 + (2.5-1)^2 + (2-1)^2) / 3
  want = (16 + 2.25 + 1) / 3
  got = rna.relative_norm_alignment({'audio': a, 'flow': f, 'video': v})
  assert float(got) == pytest.approx(want)
  terms, aux = rna.loss_terms({'video': v, 'audio': a}, alpha=0.5)
  assert float(terms['rna']) == pytest.approx(8.0) and float(aux['rna_unweighted']) == 16.0


def test_rna_pair_order_and_errors():
  assert rna.pairs(('audio', 'video')) == [('video', 'audio')]
  assert rna.pairs(('audio', 'flow', 'video')) == [
      ('video', 'flow'), ('video', 'audio'), ('flow', 'audio')]
  with pytest.raises(ValueError, match='at least two'):
    rna.pairs(('video',))
  with pytest.raises(ValueError, match='unknown'):
    rna.pairs(('video', 'depth'))
  with pytest.raises(ValueError, match=r"feats\['video'\]"):
    rna.relative_norm_alignment({'video': jnp.ones((2, 3, 4)), 'audio': jnp.ones((2, 4))})


@pytest.mark.parametrize('mods', [('video', 'flow', 'audio'), ('video', 'flow'),
                                  ('video', 'audio'), ('flow', 'audio')])
def test_rna_matches_torch(x64, mods):
  feats = {m: x for m, x in _feats(1).items() if m in mods}
  val, grads = jax.value_and_grad(rna.relative_norm_alignment)(
      {m: jnp.asarray(x) for m, x in feats.items()})
  tf = {m: torch.tensor(x, requires_grad=True) for m, x in feats.items()}
  tv = torch_rna(tf)
  tv.backward()
  assert float(val) == pytest.approx(tv.item(), rel=1e-12)
  assert float(val) > 1e-4      # not a trivially zero case
  for m in mods:
    np.testing.assert_allclose(np.asarray(grads[m]), tf[m].grad.numpy(), rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------ SimMMDG pieces
def test_supcon_hand_value():
  # all rows identical: every log-prob is -log(V*B - 1), whatever the labels
  f = jnp.ones((3, 2, 4)) / 2.0
  got = simmmdg.supcon_loss(f, jnp.array([0, 1, 0]), temperature=0.1, base_temperature=0.07)
  assert float(got) == pytest.approx(0.1 / 0.07 * math.log(5), rel=1e-6)


def test_supcon_matches_torch(x64):
  rs = np.random.RandomState(2)
  f = rs.randn(8, 3, 5)
  f /= np.linalg.norm(f, axis=-1, keepdims=True)
  val, g = jax.value_and_grad(simmmdg.supcon_loss)(jnp.asarray(f), jnp.asarray(LABELS), 0.1, 0.07)
  tf = torch.tensor(f, requires_grad=True)
  tv = torch_supcon(tf, torch.tensor(LABELS), 0.1, 0.07)
  tv.backward()
  assert float(val) == pytest.approx(tv.item(), rel=1e-12)
  np.testing.assert_allclose(np.asarray(g), tf.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_distance_and_translation_hand_values():
  e = jnp.array([[1., 2., 3., 5.]])
  assert float(simmmdg.distance_loss(e)) == pytest.approx(-6.5)     # ((1-3)^2 + (2-5)^2) / 2
  x = jnp.array([[2., 0.], [0., 3.]])
  assert float(simmmdg.translation_loss(x, 5 * x)) == pytest.approx(0.0, abs=1e-7)
  y = jnp.array([[0., 1.], [1., 0.]])
  assert float(simmmdg.translation_loss(x, y)) == pytest.approx(math.sqrt(2), rel=1e-6)
  with pytest.raises(ValueError, match='even'):
    simmmdg.split(jnp.ones((2, 5)))


@pytest.mark.parametrize('mods', [('video', 'flow', 'audio'), ('flow', 'audio')])
def test_simmmdg_loss_terms_match_torch(x64, mods):
  dims = {m: d for m, d in DIMS.items() if m in mods}
  params, stats = simmmdg.init(jax.random.key(0), dims, HP)
  params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
  feats = {m: x for m, x in _feats(3).items() if m in mods}
  jf = {m: jnp.asarray(x) for m, x in feats.items()}

  def fn(p, f):
    terms, aux = simmmdg.loss_terms(p, f, jnp.asarray(LABELS), None, batch_stats=stats, hp=HP)
    return sum(terms.values()), (terms, aux)

  (total, (terms, aux)), (gp, gf) = jax.jit(
      jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))(params, jf)

  tf = {m: torch.tensor(x, requires_grad=True) for m, x in feats.items()}
  raw, projs = torch_simmmdg(params, tf, torch.tensor(LABELS), HP)
  ttotal = (HP.alpha_contrast * raw['contrast'] + HP.alpha_trans * raw['translation']
            + HP.distance_coeff * raw['distance'])
  ttotal.backward()
  for k in raw:
    assert float(aux['unweighted'][k]) == pytest.approx(raw[k].item(), rel=1e-10), k
  assert float(total) == pytest.approx(ttotal.item(), rel=1e-10)
  for m in mods:
    np.testing.assert_allclose(np.asarray(gf[m]), tf[m].grad.numpy(), rtol=1e-8, atol=1e-12)
  # a projection head's first kernel and a translator's last kernel
  m0 = mods[0]
  np.testing.assert_allclose(
      np.asarray(gp['proj'][m0]['TorchDense_0']['Dense_0']['kernel']),
      projs[m0][0].weight.grad.numpy().T, rtol=1e-8, atol=1e-12)
  # BN running mean follows PyTorch's momentum 0.1 update
  np.testing.assert_allclose(
      np.asarray(aux['batch_stats']['proj'][m0]['BatchNorm_0']['mean']),
      projs[m0][1].running_mean.numpy(), rtol=1e-10, atol=1e-12)
  # and so does the running variance (PyTorch's unbiased batch variance; the biased one would
  # be off by ~1e-3 here). rtol: the initial statistics are float32, so 0.9 * 1 is rounded.
  np.testing.assert_allclose(
      np.asarray(aux['batch_stats']['proj'][m0]['BatchNorm_1']['var']),
      projs[m0][4].running_var.numpy(), rtol=1e-7)


def test_translator_dropout_uses_rng():
  hp = dataclasses_replace(HP, trans_dropout=0.5)
  dims = {'video': 8, 'audio': 4}
  params, stats = simmmdg.init(jax.random.key(0), dims, hp)
  f = {m: jnp.asarray(x) for m, x in _feats(4, dims).items()}
  y = jnp.asarray(LABELS)

  def trans(r, rate):
    h = dataclasses_replace(hp, trans_dropout=rate)
    return simmmdg.loss_terms(params, f, y, r, batch_stats=stats, hp=h)[0]['translation']

  @jax.jit
  def all_runs():
    k1, k2 = jax.random.key(1), jax.random.key(2)
    return trans(k1, 0.5), trans(k1, 0.5), trans(k2, 0.5), trans(None, 0.5), trans(k1, 0.0)

  a, b, c, det, off = map(float, all_runs())
  assert a == b and a != c
  assert det == pytest.approx(off, rel=1e-6)   # no rng -> no dropout


def test_init_shapes_and_torch_like_init():
  # the real widths, by shape only
  params, stats = jax.eval_shape(
      lambda r: simmmdg.init(r, {'video': 2304, 'audio': 512}, simmmdg.Hparams()),
      jax.random.key(0))
  assert sorted(params['trans']) == ['audio_to_video', 'video_to_audio']
  assert params['proj']['video']['TorchDense_0']['Dense_0']['kernel'].shape == (1152, 2048)
  assert params['proj']['audio']['TorchDense_2']['Dense_0']['kernel'].shape == (2048, 128)
  assert params['trans']['audio_to_video']['TorchDense_0']['Dense_0']['kernel'].shape == (512, 2048)
  assert params['trans']['audio_to_video']['TorchDense_2']['Dense_0']['kernel'].shape == (2048, 2304)
  assert stats['proj']['audio']['BatchNorm_1']['var'].shape == (2048,)
  # PyTorch Linear's default init: kernel and bias U(+-1/sqrt(fan_in))
  params, _ = simmmdg.init(jax.random.key(0), {'video': 200, 'audio': 8}, HP)
  dense = params['proj']['video']['TorchDense_0']['Dense_0']
  bound = 1 / math.sqrt(100)
  for w in (dense['kernel'], dense['bias']):
    assert 0.8 * bound < float(jnp.abs(w).max()) <= bound * (1 + 1e-6)
  with pytest.raises(ValueError, match="dims\\['video'\\]"):
    simmmdg.init(jax.random.key(0), {'video': 7, 'audio': 4}, HP)


def dataclasses_replace(hp, **kw):
  import dataclasses  # pylint: disable=g-import-not-at-top
  return dataclasses.replace(hp, **kw)
