"""MOOSA and CMRF loss terms: hand values, the authors' permutation set, PyTorch references.

The PyTorch references re-state the authors' training-step math with torch ops (their own code
is compared in ``benchmarks/baselines_harness_moosa_cmrf.py``); they run on the same weights,
inputs and random draws (masks, dropout keeps, mixup coefficients) as the JAX code, and the
gradients of the summed loss are compared too.
"""
import itertools
import math
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbcd_jax.encoders import batchnorm
from mbcd_jax.baselines import cmrf, moosa, simmmdg

DIMS = {'video': 8, 'audio': 4, 'flow': 6}
B, C = 6, 3
LABELS = np.array([0, 1, 2, 0, 1, 1])


def _inputs(mods, seed=0):
  rng = np.random.default_rng(seed)
  feats = {m: rng.standard_normal((B, DIMS[m])).astype(np.float32) for m in mods}
  uni = {m: (2 * rng.standard_normal((B, C))).astype(np.float32) for m in mods}
  fused = (2 * rng.standard_normal((B, C))).astype(np.float32)
  return feats, uni, fused


# ----------------------------------------------------------------------------- hand values
def test_jigsaw_permutations_are_the_authors_sample():
  for n, k, seed in ((6, 5, 0), (8, 7, 3), (4, 24, 1)):
    random.seed(seed)
    idx = random.sample(range(math.factorial(n)), k)
    listing = list(itertools.permutations(range(n), n))
    want = np.array([listing[i] for i in idx])
    np.testing.assert_array_equal(moosa.jigsaw_permutations(n, k, seed), want)
  with pytest.raises(ValueError, match='jigsaw_samples'):
    moosa.jigsaw_permutations(3, 7, 0)


def test_jigsaw_columns_reorder_parts():
  # video [a0 a1 | a2 a3], audio [b0 | b1]: parts 0:(0,1) 1:(2,3) 2:(4,) 3:(5,)
  cols = moosa.jigsaw_columns([4, 2], 2, np.array([[3, 0, 2, 1]]))
  np.testing.assert_array_equal(cols, [[5, 0, 1, 4, 2, 3]])
  with pytest.raises(ValueError, match='not divisible'):
    moosa.jigsaw_columns([5, 2], 2, np.array([[0, 1, 2, 3]]))


def test_authors_orders():
  assert moosa.authors_order(('flow', 'audio', 'video')) == ('video', 'audio', 'flow')
  assert moosa.authors_order(('audio', 'flow')) == ('flow', 'audio')
  assert moosa.authors_order(('audio', 'video')) == ('video', 'audio')
  assert cmrf.authors_pairs(('video', 'audio', 'flow')) == [
      ('video', 'flow'), ('video', 'audio'), ('flow', 'audio')]
  assert cmrf.authors_pairs(('audio', 'flow')) == [('flow', 'audio')]


def test_supcon_hand_value():
  # Two samples of different classes, two views each, orthogonal unit features except that
  # each sample's two views coincide: anchor i has 1 positive (its other view, dot 1) and
  # 2 negatives (dot 0). logits (T=1) after the max shift: pos 0, negs -1.
  z = jnp.array([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
  got = simmmdg.supcon_loss(z, jnp.array([0, 1]), temperature=1.0, base_temperature=1.0)
  want = -(0.0 - math.log(1 + 2 * math.exp(-1)))
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_entropy_weighting_hand_values():
  labels = jnp.array([0])
  flat = jnp.zeros((1, 4))                       # H = log 4, CE = log 4
  sharp = jnp.array([[10.0, 0.0, 0.0, 0.0]])     # H ~ 0, CE ~ 0
  loss, w = moosa.entropy_weighted_ce([flat, sharp], labels, temp=1.0)
  h_sharp = float(moosa.torch_categorical_entropy(sharp)[0])
  w_flat = math.exp(-math.log(4)) / (math.exp(-math.log(4)) + math.exp(-h_sharp))
  np.testing.assert_allclose(w[0, 0], w_flat, rtol=1e-5)
  ce_sharp = math.log(1 + 3 * math.exp(-10))
  np.testing.assert_allclose(loss, w_flat * math.log(4) + (1 - w_flat) * ce_sharp, rtol=1e-5)


def test_translation_and_split_distance_hand_values():
  pred = jnp.array([[3.0, 0.0], [0.0, 2.0]])
  target = jnp.array([[0.0, 5.0], [0.0, 1.0]])
  np.testing.assert_allclose(simmmdg.translation_loss(pred, target), math.sqrt(2) / 2,
                             rtol=1e-6)
  x = jnp.array([[1.0, 2.0, 3.0, 5.0]])          # halves (1,2) vs (3,5): mse = (4 + 9) / 2
  np.testing.assert_allclose(simmmdg.split_distance({'a': x}), -6.5, rtol=1e-6)


def test_sma_update_is_the_running_mean_from_the_start_step():
  start = 3
  students = [{'w': jnp.full((2,), float(s) ** 2), 'n': jnp.array(s)} for s in range(8)]
  teacher = cmrf.sma_init(students[0])
  for step in range(1, 8):
    teacher = cmrf.sma_update(teacher, students[step], step, start)
    if step < start:
      np.testing.assert_array_equal(teacher['w'], students[step]['w'])
    else:
      want = np.mean([float(s) ** 2 for s in range(start - 1, step + 1)])
      np.testing.assert_allclose(teacher['w'], want, rtol=1e-6)
    assert int(teacher['n']) == step                 # integer leaves follow the student
  # jittable in the step
  jitted = jax.jit(cmrf.sma_update, static_argnums=3)(
      {'w': jnp.ones(2)}, {'w': jnp.full((2,), 4.0)}, jnp.int32(start), start)
  np.testing.assert_allclose(jitted['w'], 2.5)


def test_mixup_draws_fold_beta_on_the_right_side():
  d = cmrf.draw(jax.random.key(0), 2000, ('video', 'audio', 'flow'))
  assert set(d) == {'video+flow', 'video+audio', 'flow+audio'}
  for hi, lo in d.values():
    assert float(hi.min()) >= 0.5 and float(hi.max()) <= 1.0
    assert float(lo.min()) >= 0.0 and float(lo.max()) <= 0.5
    # Beta(0.1, 0.1) is U-shaped: P(|l - 0.5| > 0.45) ~ 0.75, so most draws sit near the ends.
    assert float(jnp.mean(hi > 0.95)) > 0.6
  assert not np.allclose(d['video+flow'][0], d['video+audio'][0])


def test_moosa_mask_rate():
  feats = {'video': jnp.ones((64, 32)), 'audio': jnp.ones((64, 16))}
  d = moosa.draw(jax.random.key(0), feats, ('video', 'audio'),
                moosa.Config(mask_ratio=0.7, trans_hidden=8))
  np.testing.assert_allclose(float(d['masked']['video'].mean()), 0.7, atol=0.03)
  np.testing.assert_allclose(float(d['keep']['video_to_audio'].mean()), 0.5, atol=0.06)


# ----------------------------------------------------------------------------- torch refs
torch = pytest.importorskip('torch', reason='the references are PyTorch (requirements-dev.txt)')
F = torch.nn.functional


def _t(x, grad=False):
  return torch.tensor(np.asarray(x), dtype=torch.float32, requires_grad=grad)


def _torch_leaves(tree):
  """Flax params -> same-structured dict of torch leaf tensors (kernels stay [in, out])."""
  return jax.tree.map(lambda a: _t(a, grad=True), tree)


def _dense(x, p):
  p = p['Dense_0']
  return x @ p['kernel'] + p['bias']


def _bn_train(x, p, stats):
  mean, var = stats['mean'].detach().clone(), stats['var'].detach().clone()
  y = F.batch_norm(x, mean, var, p['scale'], p['bias'], training=True, momentum=0.1, eps=1e-5)
  return y, {'mean': mean, 'var': var}


def _project_head(x, p, stats, train=True):
  new = {}
  h = _dense(x, p['TorchDense_0'])
  if train:
    h, new['BatchNorm_0'] = _bn_train(h, p['BatchNorm_0'], stats['BatchNorm_0'])
  else:
    s = stats['BatchNorm_0']
    h = F.batch_norm(h, s['mean'], s['var'], p['BatchNorm_0']['scale'],
                     p['BatchNorm_0']['bias'], training=False, eps=1e-5)
  h = F.relu(h)
  h = _dense(h, p['TorchDense_1'])
  if train:
    h, new['BatchNorm_1'] = _bn_train(h, p['BatchNorm_1'], stats['BatchNorm_1'])
  else:
    s = stats['BatchNorm_1']
    h = F.batch_norm(h, s['mean'], s['var'], p['BatchNorm_1']['scale'],
                     p['BatchNorm_1']['bias'], training=False, eps=1e-5)
  h = F.relu(h)
  return F.normalize(_dense(h, p['TorchDense_2']), dim=1), new


def _torch_supcon(feats, labels, temp, base_temp):
  """SupCon written from the Khosla et al. definition (all views as anchors)."""
  b, v = feats.shape[:2]
  z = torch.cat(torch.unbind(feats, 1), 0)
  sim = z @ z.T / temp
  sim = sim - sim.max(1, keepdim=True).values.detach()
  lab = labels.repeat(v)
  eye = torch.eye(b * v)
  pos = (lab[:, None] == lab[None, :]).float() * (1 - eye)
  denom = (torch.exp(sim) * (1 - eye)).sum(1, keepdim=True)
  logp = sim - torch.log(denom)
  return -(temp / base_temp) * ((pos * logp).sum(1) / pos.sum(1)).mean()


def _torch_moosa(p, stats, feats, uni, fused, labels, draws, cfg, perms, mods):
  dist = torch.distributions.Categorical
  logits = [uni[m] for m in mods] + [fused]
  ent = -torch.stack([dist(probs=F.softmax(l, 1)).entropy() for l in logits], 1)
  w = F.softmax(ent / cfg.entropy_weight_temp, 1)
  ce = torch.stack([F.cross_entropy(l, labels, reduction='none') for l in logits], 1)
  out = {'ce_weighted': (w * ce).sum(1).mean()}
  parts = []
  for m in mods:
    parts += list(torch.split(feats[m], feats[m].shape[1] // cfg.jigsaw_num_splits, 1))
  combos = torch.cat([torch.cat([parts[i] for i in perm], 1) for perm in perms], 0)
  jl = torch.arange(len(perms)).repeat_interleave(B)
  jp = p['jigsaw']
  jlog = _dense(F.relu(_dense(combos, jp['TorchDense_0'])), jp['TorchDense_1'])
  out['jigsaw'] = cfg.jigsaw_ratio * F.cross_entropy(jlog, jl)
  em = sum((-F.softmax(l, 1) * torch.log(F.softmax(l, 1) + 1e-5)).sum(1).mean() for l in logits)
  out['entropy_min'] = em * cfg.entropy_min_weight / (len(mods) + 1)
  masked = {}
  for m in mods:
    x = feats[m].clone()
    x[torch.tensor(np.asarray(draws['masked'][m]))] = 0
    masked[m] = x
  tr = []
  for a, b in moosa.pairs(mods):
    tp = p['translators'][f'{a}_to_{b}']
    h = F.relu(_dense(F.relu(_dense(masked[a], tp['TorchDense_0'])), tp['TorchDense_1']))
    h = h * torch.tensor(np.asarray(draws['keep'][f'{a}_to_{b}']), dtype=h.dtype) / 0.5
    y = _dense(h, tp['TorchDense_2'])
    y = y / torch.norm(y, dim=1, keepdim=True)
    tr.append(torch.mean(torch.norm(y - feats[b] / torch.norm(feats[b], dim=1, keepdim=True),
                                    dim=1)))
  out['translation'] = cfg.alpha_trans * sum(tr) / len(tr)
  views, new_stats = [], {}
  for m in mods:
    z, new_stats[m] = _project_head(feats[m][:, :feats[m].shape[1] // 2], p['proj'][m],
                                    stats['proj'][m])
    views.append(z)
  out['supcon'] = cfg.alpha_contrast * _torch_supcon(torch.stack(views, 1), labels,
                                                      cfg.temperature, cfg.base_temperature)
  e = 0
  for m in mods:
    h = feats[m].shape[1] // 2
    e = e - F.mse_loss(feats[m][:, :h], feats[m][:, h:])
  out['split_distance'] = cfg.explore_coeff * e / len(mods)
  return out, new_stats


def _flat_grads(jax_tree, torch_tree):
  pairs = []
  jl, _ = jax.tree.flatten(jax_tree)
  tl, _ = jax.tree.flatten(torch_tree, is_leaf=lambda x: isinstance(x, torch.Tensor))
  assert len(jl) == len(tl)
  for a, t in zip(jl, tl):
    g = t.grad if t.grad is not None else torch.zeros_like(t)
    pairs.append((np.asarray(a), g.numpy()))
  return pairs


@pytest.mark.parametrize('mods', [('video', 'audio', 'flow')])   # the harness runs all four sets
def test_moosa_matches_torch_reference(mods):
  cfg = moosa.Config(mask_ratio=0.5, trans_hidden=16, proj_hidden=16, proj_out=8,
                     jigsaw_num_splits=2, jigsaw_samples=5, jigsaw_hidden=8,
                     entropy_min_weight=0.3, entropy_weight_temp=0.7, seed=0)
  dims = {m: DIMS[m] for m in mods}
  params, stats = moosa.init(jax.random.key(1), dims, cfg)
  perms = moosa.jigsaw_permutations(2 * len(mods), cfg.jigsaw_samples, 0)
  cols = moosa.jigsaw_setup(dims, mods, cfg)
  feats, uni, fused = _inputs(mods)
  draws = moosa.draw(jax.random.key(7), feats, mods, cfg)
  labels = jnp.asarray(LABELS)

  def total(params, feats, uni, fused):
    terms, aux = moosa.loss_terms_given(params, stats, feats, uni, fused, labels, draws,
                                        modalities=mods, cfg=cfg, cols=cols)
    return sum(terms.values()), (terms, aux)
  (_, (terms, aux)), grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2, 3),
                                                        has_aux=True))(
      params, feats, uni, fused)

  tp, tf = _torch_leaves(params), {m: _t(x, True) for m, x in feats.items()}
  tu, tfu = {m: _t(x, True) for m, x in uni.items()}, _t(fused, True)
  tstats = jax.tree.map(_t, stats)
  want, want_stats = _torch_moosa(tp, tstats, tf, tu, tfu, torch.tensor(LABELS), draws, cfg,
                                  perms, mods)
  sum(want.values()).backward()
  for k, v in want.items():
    np.testing.assert_allclose(terms[k], v.item(), rtol=2e-5, atol=2e-6, err_msg=k)
    assert abs(v.item()) > 1e-4, k                    # every term is exercised
  for a, g in _flat_grads(grads, (tp, tf, tu, tfu)):
    np.testing.assert_allclose(a, g, rtol=2e-4, atol=2e-5)   # some exact grads are 0
  for m in mods:       # BN running statistics, torch's unbiased-variance update
    for layer in ('BatchNorm_0', 'BatchNorm_1'):
      got = aux['batch_stats']['proj'][m][layer]
      np.testing.assert_allclose(got['mean'], want_stats[m][layer]['mean'], rtol=1e-5,
                                 atol=1e-6)
      np.testing.assert_allclose(got['var'], want_stats[m][layer]['var'], rtol=1e-5)


def test_entropy_matches_torch_categorical_even_when_saturated():
  logits = np.array([[30.0, 0.0, -5.0], [0.1, 0.2, 0.3], [-40.0, 40.0, 0.0]], np.float32)
  t = _t(logits, True)
  h = torch.distributions.Categorical(probs=F.softmax(t, 1)).entropy()
  h.sum().backward()
  got, g = jax.value_and_grad(lambda x: moosa.torch_categorical_entropy(x).sum())(
      jnp.asarray(logits))
  np.testing.assert_allclose(got, h.sum().item(), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-4, atol=1e-7)


def _torch_cmrf(p, stats, tparams, tstats, feats, tfeats, uni, fused, labels, draws, cfg, mods,
                active):
  out = {'ce_fused': F.cross_entropy(fused, labels)}
  out['ce_uni'] = cfg.mix_coef * sum(cmrf.modality_weight(m, cfg) * F.cross_entropy(uni[m],
                                                                                   labels)
                                     for m in mods)
  stu, new_stats = {}, {}
  for m in mods:
    stu[m], new_stats[m] = _project_head(feats[m], p['proj'][m], stats['proj'][m])
  out['supcon'] = cfg.alpha_contrast * _torch_supcon(torch.stack([stu[m] for m in mods], 1),
                                                     labels, cfg.temperature,
                                                     cfg.base_temperature)
  with torch.no_grad():
    tea = {m: _project_head(tfeats[m], tparams['proj'][m], tstats['proj'][m], train=False)[0]
           for m in mods}
  d = 0
  for a, b in cmrf.authors_pairs(mods):
    hi, lo = (torch.tensor(np.asarray(x))[:, None] for x in draws[f'{a}+{b}'])
    targets = {a: hi * tea[a] + (1 - hi) * tea[b], b: lo * tea[a] + (1 - lo) * tea[b]}
    for m in (a, b):
      t = targets[m] / torch.norm(targets[m], dim=1, keepdim=True)
      s = stu[m] / torch.norm(stu[m], dim=1, keepdim=True)
      d = d + cmrf.modality_weight(m, cfg) * torch.mean(torch.norm(t.detach() - s, dim=1))
  out['distill'] = cfg.distill_coef * d * float(active)
  return out, new_stats


@pytest.mark.parametrize('mods,step', [(('video', 'audio', 'flow'), 5), (('flow', 'audio'), 1)])
def test_cmrf_matches_torch_reference(mods, step):
  cfg = cmrf.Config(proj_hidden=16, proj_out=8, sma_start_step=3)
  dims = {m: DIMS[m] for m in mods}
  params, stats = cmrf.init(jax.random.key(2), dims, cfg)
  # a teacher with different weights and non-trivial running statistics
  tparams = jax.tree.map(lambda x: x * 0.9 + 0.01, params)
  tstats = jax.tree.map(lambda x: x + 0.2, stats)
  feats, uni, fused = _inputs(mods, seed=1)
  tfeats = {m: x + 0.1 * np.cos(x) for m, x in feats.items()}
  draws = cmrf.draw(jax.random.key(9), B, mods, cfg)
  labels = jnp.asarray(LABELS)

  def total(params, feats, uni, fused):
    terms, aux = cmrf.loss_terms_given(
        params, stats, feats, uni, fused, labels, draws, modalities=mods,
        teacher_params=tparams, teacher_batch_stats=tstats, teacher_feats=tfeats, step=step,
        cfg=cfg)
    return sum(terms.values()), (terms, aux)
  (_, (terms, aux)), grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2, 3),
                                                        has_aux=True))(
      params, feats, uni, fused)
  active = step >= cfg.sma_start_step
  assert bool(aux['distill_active']) == active

  tp, tf = _torch_leaves(params), {m: _t(x, True) for m, x in feats.items()}
  tu, tfu = {m: _t(x, True) for m, x in uni.items()}, _t(fused, True)
  want, want_stats = _torch_cmrf(tp, jax.tree.map(_t, stats), jax.tree.map(_t, tparams),
                                 jax.tree.map(_t, tstats), tf,
                                 {m: _t(x) for m, x in tfeats.items()}, tu, tfu,
                                 torch.tensor(LABELS), draws, cfg, mods, active)
  sum(want.values()).backward()
  for k, v in want.items():
    np.testing.assert_allclose(terms[k], v.item(), rtol=2e-5, atol=2e-6, err_msg=k)
  if active:
    assert float(terms['distill']) > 1e-3
  else:
    assert float(terms['distill']) == 0.0
  for a, g in _flat_grads(grads, (tp, tf, tu, tfu)):
    np.testing.assert_allclose(a, g, rtol=2e-4, atol=2e-5)   # some exact grads are 0
  for m in mods:
    got = aux['batch_stats']['proj'][m]['BatchNorm_1']
    np.testing.assert_allclose(got['var'], want_stats[m]['BatchNorm_1']['var'],
                               rtol=1e-5)


def test_torch_batchnorm_running_stats_and_eval_match_torch():
  rng = np.random.default_rng(3)
  bn_t = torch.nn.BatchNorm1d(5)
  bn = batchnorm.BatchNorm()       # the projectors' BN (simmmdg.project's training update)
  v = bn.init(jax.random.key(0), jnp.zeros((2, 5)))
  for _ in range(3):
    x = rng.standard_normal((7, 5)).astype(np.float32) * 2 + 1
    y_t = bn_t(_t(x)).detach().numpy()
    y, upd = bn.apply(v, jnp.asarray(x), mutable=[batchnorm.MOMENTS])
    v = {'params': v['params'],
         'batch_stats': batchnorm.update_running(v['batch_stats'], upd[batchnorm.MOMENTS])}
    np.testing.assert_allclose(y, y_t, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(v['batch_stats']['mean'], bn_t.running_mean.numpy(), rtol=1e-5)
  np.testing.assert_allclose(v['batch_stats']['var'], bn_t.running_var.numpy(), rtol=1e-5)
  bn_t.eval()
  x = rng.standard_normal((4, 5)).astype(np.float32)
  np.testing.assert_allclose(bn.apply(v, jnp.asarray(x)),
                             bn_t(_t(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_loss_terms_jit_with_traced_step_and_any_dict_order():
  mods = ('video', 'audio')
  dims = {m: DIMS[m] for m in mods}
  feats, uni, fused = _inputs(mods, seed=2)
  labels = jnp.asarray(LABELS)
  mcfg = moosa.Config(trans_hidden=8, proj_hidden=8, proj_out=4, jigsaw_num_splits=2,
                      jigsaw_samples=3, jigsaw_hidden=4, seed=0)
  mp, ms = moosa.init(jax.random.key(0), dims, mcfg)
  cols = moosa.jigsaw_setup(dims, mods, mcfg)
  ccfg = cmrf.Config(proj_hidden=8, proj_out=4, sma_start_step=3)
  cp, cs = cmrf.init(jax.random.key(1), dims, ccfg)

  @jax.jit
  def both(feats, uni, step):
    mt, _ = moosa.loss_terms(mp, ms, feats, uni, fused, labels, jax.random.key(3),
                             modalities=mods, cfg=mcfg, cols=cols)
    ct, _ = cmrf.loss_terms(cp, cs, feats, uni, fused, labels, jax.random.key(4),
                            modalities=mods, teacher_params=cp, teacher_batch_stats=cs,
                            teacher_feats=jax.tree.map(lambda x: x + 0.5, feats), step=step,
                            cfg=ccfg)
    return mt, ct
  m2, c2 = both(feats, uni, jnp.int32(2))
  reordered = {m: feats[m] for m in reversed(mods)}
  m3, c3 = both(reordered, {m: uni[m] for m in reversed(mods)}, jnp.int32(3))
  assert float(c2['distill']) == 0.0 and float(c3['distill']) > 1e-3
  for k in m2:                     # same draws, same order: dict order does not matter
    np.testing.assert_allclose(m2[k], m3[k], rtol=1e-6, err_msg=k)
  np.testing.assert_allclose(c2['supcon'], c3['supcon'], rtol=1e-6)
