"""NEL, JAT and GMP loss pieces: hand-computed values and numpy references on tiny inputs.

The authors' own code is compared by ``benchmarks/baselines_harness_nel_jat_gmp.py``, run here
when ``MMDG_BENCHMARK_DIR`` names a clone of lihongzhao99/MMDG_Benchmark."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _trees
from mbcd_jax.baselines import gmp, jat, nel


def test_nee_uniform_spectrum_is_minus_log_d():
  # E^T E / N = I (orthonormal columns scaled): every eigenvalue 1/D after renormalising.
  e = jnp.sqrt(4.0) * jnp.eye(4)           # N = 4, D = 4: C = I
  np.testing.assert_allclose(nel.nee_loss(e), -np.log(4.0), rtol=1e-6)


def test_mean_shift_hand_computed():
  e = jnp.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
  out = nel.mean_shift(e, k=1)             # row 0's neighbour is row 1, row 2's is row 1
  want0 = 0.5 * np.array([1.0, 0.0]) + 0.5 * np.array([0.8, 0.6])
  np.testing.assert_allclose(out[0], want0 / np.linalg.norm(want0), rtol=1e-6)


def _supcon_np(z, labels, t, bt):
  n, v, _ = z.shape
  f = np.concatenate([z[:, i] for i in range(v)])
  lab = np.tile(labels, v)
  logits = f @ f.T / t
  logits -= logits.max(1, keepdims=True)
  not_self = 1 - np.eye(n * v)
  pos = (lab[:, None] == lab[None]) * not_self
  lp = logits - np.log((np.exp(logits) * not_self).sum(1, keepdims=True) + 1e-12)
  return -(t / bt) * ((pos * lp).sum(1) / np.maximum(pos.sum(1), 1)).mean()


def test_supcon_matches_numpy():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(6, 2, 3))
  z /= np.linalg.norm(z, axis=2, keepdims=True)
  labels = np.array([0, 1, 0, 2, 1, 1])
  np.testing.assert_allclose(nel.supcon_loss(jnp.asarray(z), jnp.asarray(labels), 0.1, 0.07),
                             _supcon_np(z, labels, 0.1, 0.07), rtol=1e-5)


def test_jat_weights_and_grad_reverse():
  u = {'video': jnp.zeros((2, 4)), 'audio': jnp.array([[9.0, 0, 0, 0], [9.0, 0, 0, 0]])}
  w = jat.modality_weights({m: jat.entropy(x) for m, x in u.items()})
  # uniform logits have the larger entropy (log 4) and so the larger weight
  assert float(w['video']) > 0.5 > float(w['audio'])
  g = jax.grad(lambda x: jat.grad_reverse(x, 0.1).sum())(jnp.ones(3))
  np.testing.assert_allclose(g, -0.1 * np.ones(3))


def test_gmp_ratios_modulation_and_projection():
  r = gmp.ratios({'video': jnp.array(0.6), 'audio': jnp.array(0.3)}, domain=False)
  np.testing.assert_allclose(r['video'], 0.6 / (0.3 + 1e-6), rtol=1e-6)
  np.testing.assert_allclose(gmp.modulation(r['video'], 0.5), max(0.0, 1 - np.tanh(1.0)),
                             rtol=1e-5)
  assert float(gmp.modulation(r['audio'], 0.5)) == 1.0      # the weaker one is not slowed
  g, h = [jnp.array([1.0, 0.0])], [jnp.array([-1.0, 1.0])]
  out = gmp.combine(g, h, jnp.array(2.0), jnp.array(1.0), jnp.array(1.0), jnp.array(1.0))
  # conflict (<g, h> = -1) and r >= s: g loses its h component, g' = g + h/2, then + h
  np.testing.assert_allclose(out[0], np.array([1 - 0.5 - 1, 0.5 + 1]), rtol=1e-6)


@pytest.mark.skipif(not os.environ.get('MMDG_BENCHMARK_DIR'),
                    reason='set MMDG_BENCHMARK_DIR to a clone of lihongzhao99/MMDG_Benchmark '
                           'to run the harness against the authors\' code')
def test_harness_against_authors():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-m', 'benchmarks.baselines_harness_nel_jat_gmp',
                        f'--mmdg_benchmark_dir={os.environ["MMDG_BENCHMARK_DIR"]}'], cwd=root,
                       capture_output=True, text=True, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------ JAT as a plug-in
def _dense(p, x):
  """A ``TorchDense``'s parameters applied by hand."""
  p = p['Dense_0']
  return x @ p['kernel'] + p['bias']


def _jat_view(hp, batch=6, sources=True, dims=None, key=0):
  dims = dims or {'video': 8, 'flow': 6, 'audio': 4}
  ms = tuple(dims)
  k = jax.random.split(jax.random.key(key), 6)
  params, state = jat.EXTENSION.init(k[0], dims, ms, hp)
  feats = {m: jax.random.normal(jax.random.fold_in(k[1], i), (batch, d))
           for i, (m, d) in enumerate(dims.items())}
  uni = {m: jax.random.normal(jax.random.fold_in(k[2], i), (batch, 5)) for i, m in enumerate(ms)}
  src = jax.random.randint(k[4], (batch,), 0, hp.num_sources) if sources else None
  from mbcd_jax import extensions  # pylint: disable=g-import-not-at-top
  return extensions.StepView(params=params, state=state, feats=feats, uni_logits=uni,
                             fused_logits=jax.random.normal(k[3], (batch, 5)),
                             labels=jax.random.randint(k[5], (batch,), 0, 5), rng=k[1],
                             step=jnp.zeros((), jnp.int32), modalities=ms, sources=src)


def _jat_by_hand(view, hp):
  """JAT's heads written out with matmuls on the plug-in's parameters and dropout draws, then
  ``jat.loss_terms``: returns (loss, the domain discriminator's new running statistics)."""
  ms = list(view.modalities)
  p, s = view.params, view.state
  d = jat.draw(view.rng, view.labels.shape[0], ms, hp)
  proj = lambda q, x, keep: jnp.maximum(_dense(q['TorchDense_0'], x), 0) * keep / 0.5
  modal = {m: _dense(p['modal_disc'], proj(p['modal_proj'][m], view.feats[m], d['modal'][m]))
           for m in ms}
  dom, glob, stats = None, None, None
  if hp.num_sources > 1:
    dd, stats, dom = p['domain_disc'], dict(s['domain_disc']['BatchNorm_0']), {}
    for m in ms:
      a = _dense(dd['TorchDense_0'], proj(p['domain_proj'][m], view.feats[m], d['domain'][m]))
      mu, var = a.mean(0), a.var(0)
      bn = (a - mu) / jnp.sqrt(var + 1e-5) * dd['BatchNorm_0']['scale'] + dd['BatchNorm_0']['bias']
      dom[m] = _dense(dd['TorchDense_1'], jnp.maximum(bn, 0))
      n = a.shape[0]
      stats = {'mean': 0.9 * stats['mean'] + 0.1 * mu,
               'var': 0.9 * stats['var'] + 0.1 * var * n / (n - 1)}
    order = ['video', 'audio', 'flow'] if 'video' in ms else ['flow', 'audio']
    g = p['global_disc']
    hid = proj(g['ProjectHead_0'], jnp.concatenate([view.feats[m] for m in order if m in ms], 1),
               d['global'])
    glob = _dense(g['TorchDense_0'], hid)
  terms, _ = jat.loss_terms(view.uni_logits, view.fused_logits, modal, view.labels,
                            domain_logits=dom, global_logits=glob,
                            domains=view.sources if dom is not None else None, hp=hp)
  return sum(terms.values()), stats


@pytest.mark.parametrize('num_sources', [1, 2, 3])
def test_jat_plugin_terms_are_loss_terms_by_hand(num_sources):
  hp = jat.Hparams(num_sources=num_sources, project_out_dim=16,
                   global_discriminator_hidden_dim=12)
  view = _jat_view(hp)
  # jitted as the step runs it (the view's arrays are closed over: it holds names too)
  terms, raw, new_state = jax.jit(lambda: jat.EXTENSION.terms(view, hp))()
  want, stats = jax.jit(lambda: _jat_by_hand(view, hp))()
  np.testing.assert_allclose(float(sum(terms.values())), float(want), rtol=1e-6)
  assert ('dom_local' in terms) == (num_sources > 1) == ('dom_global' in raw)
  params = view.params
  if num_sources == 1:   # the script's single-source run: no domain heads at all
    assert set(params) == {'modal_proj', 'modal_disc'} and new_state == {}
    return
  out = max(num_sources, 2)
  assert params['domain_disc']['TorchDense_1']['Dense_0']['kernel'].shape == (DOMAIN_IN := 256,
                                                                              out)
  assert params['global_disc']['TorchDense_0']['Dense_0']['kernel'].shape == (12, out)
  got = new_state['domain_disc']['BatchNorm_0']
  for k in ('mean', 'var'):   # updated once per modality, in the order video, flow, audio
    np.testing.assert_allclose(got[k], stats[k], rtol=1e-5, atol=1e-7)
  assert DOMAIN_IN == jat.DOMAIN_HIDDEN


def test_jat_multi_source_refuses_a_batch_without_domains():
  from mbcd_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  hp = jat.Hparams(num_sources=2, project_out_dim=16, global_discriminator_hidden_dim=12)
  with pytest.raises(ConfigError, match='multi-source'):
    jat.EXTENSION.terms(_jat_view(hp, sources=False), hp)


def test_jat_reversal_flips_the_discriminators_gradient(x64):
  # d(term)/d(embedding) through the plug-in is -alpha times the term's true derivative (the
  # forward is the identity), measured by central differences; the discriminators' own
  # parameters get the true derivative, unflipped.
  hp = jat.Hparams(num_sources=2, project_out_dim=8, global_discriminator_hidden_dim=8)
  view = _jat_view(hp, batch=4, dims={'video': 4, 'audio': 3})
  terms_of = lambda v: jat.EXTENSION.terms(v, hp)[0]
  for term, alpha in (('modal_adv', hp.alpha_rev), ('dom_local', hp.alpha_rev2),
                      ('dom_global', hp.alpha_rev2)):
    f = jax.jit(lambda x: terms_of(view._replace(feats={**view.feats, 'video': x}))[term])
    g = jax.grad(f)(view.feats['video'])
    x0, eps = np.asarray(view.feats['video']), 1e-6
    fd = np.zeros_like(x0)
    for idx in np.ndindex(*x0.shape):
      e = np.zeros_like(x0)
      e[idx] = eps
      fd[idx] = (f(jnp.asarray(x0 + e)) - f(jnp.asarray(x0 - e))) / (2 * eps)
    assert np.abs(fd).max() > 1e-4, term
    np.testing.assert_allclose(np.asarray(g), -alpha * fd, rtol=1e-5, atol=1e-9, err_msg=term)
  # the modality discriminator's kernel: same sign as the finite difference
  w = view.params['modal_disc']['Dense_0']['kernel'].astype(jnp.float64)
  f = jax.jit(lambda k: terms_of(view._replace(params={**view.params, 'modal_disc': {'Dense_0': {
      **view.params['modal_disc']['Dense_0'], 'kernel': k}}}))['modal_adv'])
  e = jnp.zeros_like(w).at[0, 0].set(1e-6)
  fd = (f(w + e) - f(w - e)) / 2e-6
  np.testing.assert_allclose(float(jax.grad(f)(w)[0, 0]), float(fd), rtol=1e-5)
  assert abs(float(fd)) > 1e-6


def test_jat_gradients_reach_the_encoders_through_the_step():
  import functools  # pylint: disable=g-import-not-at-top
  import test_plugins as tp  # pylint: disable=g-import-not-at-top
  from conftest import tiny_batch  # pylint: disable=g-import-not-at-top
  from mbcd_jax import step  # pylint: disable=g-import-not-at-top
  mods = ('video', 'audio')
  model, sp = tp._model('jat', mods), tp._spec('jat', num_sources=3)
  batch = {**{k: v for k, v in tiny_batch(batch_size=8).items() if k in mods + ('label',)},
           'source': jnp.array([0, 1, 2, 0, 1, 2, 0, 1])}
  tx = step.make_optimizer(tp.OPTIM)
  state = step.init_state(model, sp, tx, jax.random.key(0), batch)
  st = state.student
  feats, _ = model.trunk_features_train(st.frozen, batch, st.batch_stats)
  ext_in = step.ExtensionInputs(st.extra_state, state.step, None, batch['source'])
  grads, (metrics, _, _) = jax.jit(jax.grad(
      functools.partial(step.loss_fn, model=model, spec=sp), has_aux=True))(
      st.params, st.frozen, feats, batch['label'], None, jax.random.key(1),
      batch_stats=st.batch_stats, extension_inputs=ext_in)
  assert 'jat/dom_global' in metrics
  for part in ('encoders', 'uni_heads', 'fused_head', 'extra'):
    for m_or_k, sub in grads[part].items():
      norm = float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(sub)))
      assert norm > 0, (part, m_or_k)


# ------------------------------------------------------------ NEL as a plug-in
def test_nel_plugin_terms_are_loss_terms_by_hand():
  from mbcd_jax import extensions  # pylint: disable=g-import-not-at-top
  from mbcd_jax.baselines import simmmdg  # pylint: disable=g-import-not-at-top
  hp = nel.Hparams(proj_hidden=16, proj_out=8, k=3)
  dims = {'video': 8, 'flow': 6, 'audio': 4}
  params, state = nel.EXTENSION.init(jax.random.key(0), dims, tuple(dims), hp)
  k = jax.random.split(jax.random.key(1), 3)
  clips = jax.random.randint(k[0], (5,), 0, 3)
  feats = {m: jax.random.normal(jax.random.fold_in(k[1], i), (10, d))
           for i, (m, d) in enumerate(dims.items())}
  view = extensions.StepView(params=params, state=state, feats=feats, uni_logits={},
                             fused_logits=jax.random.normal(k[2], (10, 3)),
                             labels=jnp.concatenate([clips, clips]), rng=k[0],
                             step=jnp.zeros((), jnp.int32), modalities=tuple(dims))
  terms, raw, new_state = jax.jit(lambda: nel.EXTENSION.terms(view, hp))()
  # by hand: each projector on the first half of its embedding, stacked video, audio, flow
  z, stats = [], {}
  for m in ('video', 'audio', 'flow'):
    out, stats[m] = simmmdg.project(nel.projector(hp), params['proj'][m], state['proj'][m],
                                    feats[m][:, :dims[m] // 2], train=True)
    z.append(out)
  want, want_raw = nel.loss_terms(jnp.stack(z, 1), view.fused_logits, feats, view.labels,
                                  ('video', 'flow', 'audio'), hp)
  for key in want:
    np.testing.assert_allclose(float(terms[key]), float(want[key]), rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(float(raw[key]), float(want_raw[key]), rtol=1e-5, err_msg=key)
  np.testing.assert_allclose(float(sum(terms.values())),
                             float(sum(want.values())), rtol=1e-5)
  for m in dims:   # every projector's statistics updated
    assert not np.allclose(new_state['proj'][m]['BatchNorm_0']['mean'],
                           state['proj'][m]['BatchNorm_0']['mean'])
  with pytest.raises(ValueError, match='two views'):
    nel.EXTENSION.terms(view._replace(labels=view.labels[:9]), hp)


def _toy_loader(views, random_transform=True, process_count=1):
  from mbcd_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  source = [{'x': np.full((3,), i, np.float32), 'label': np.int32(i % 4),
             'domain': np.int32(i % 2)} for i in range(12)]
  def transform(rec, rng=None):
    noise = 0.01 * rng.normal(size=3).astype(np.float32) if rng is not None else 0.0
    return {'x': rec['x'] + noise, 'label': rec['label'], 'domain': rec['domain']}
  return input_pipeline.Loader(source, transform, global_batch=4, train=True, seed=3,
                               random_transform=random_transform, views=views,
                               process_count=process_count)


def test_two_views_per_clip_in_the_training_batches():
  from mbcd_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  one, two = list(_toy_loader(1).epoch(1)), list(_toy_loader(2).epoch(1))
  assert len(one) == len(two) == 3
  for a, b in zip(one, two):
    assert b['x'].shape == (8, 3)
    # rows [view 1 of the 4 clips; view 2 of the same 4], labels and domains repeated
    np.testing.assert_array_equal(b['label'], np.concatenate([a['label'], a['label']]))
    np.testing.assert_array_equal(b['domain'], np.concatenate([a['domain'], a['domain']]))
    np.testing.assert_array_equal(b['x'][:4], a['x'])          # view 1: the one-view draw
    # the same clips in both halves (a clip's value is its index, the noise ~ 0.01)
    np.testing.assert_array_equal(np.round(b['x'][4:]), np.round(b['x'][:4]))
    assert np.abs(b['x'][4:] - b['x'][:4]).min() > 0          # independent randomness
  # a deterministic transform (the synthetic benchmark's): the two views are the same
  same = next(iter(_toy_loader(2, random_transform=False).epoch(0)))
  np.testing.assert_array_equal(same['x'][:4], same['x'][4:])
  with pytest.raises(ConfigError, match='one process'):
    _toy_loader(2, process_count=2)


def test_nel_loaders_from_the_config():
  from configs import hac  # pylint: disable=g-import-not-at-top
  from mbcd_jax import config_lib, input_pipeline  # pylint: disable=g-import-not-at-top
  c = hac.get_config('smoke')
  c.method.name = 'nel'
  c = config_lib.normalize(c)
  config_lib.validate(c)
  train = input_pipeline.make_loader(c, 'train')
  assert (train.views, input_pipeline.make_loader(c, 'val').views) == (2, 1)
  batch = next(iter(train.epoch(0)))
  b = c.data.batch_size
  assert batch['label'].shape == (2 * b,)
  for key, value in batch.items():   # no random transform on the embedded benchmark
    np.testing.assert_array_equal(value[:b], value[b:], err_msg=key)


@pytest.mark.parametrize('name', ['jat', 'nel', 'gmp'])
def test_trains_on_the_embedded_benchmark(name):
  # configs/hac.py:smoke (the synthetic benchmark's tiny shapes), two sources: JAT and GMP get
  # their domain labels from the loaders, NEL its two views; a few steps of the jitted step.
  from configs import hac  # pylint: disable=g-import-not-at-top
  from mbcd_jax import sharding, train  # pylint: disable=g-import-not-at-top
  c = hac.get_config('smoke')
  c.method.name = name
  run = train.build(c)
  assert len(run.config.data.sources) == 2
  state = run.init(jax.random.key(0))
  for i, batch in enumerate(list(run.loaders['train'].epoch(0))[:3]):
    assert batch['label'].shape[0] == (2 if name == 'nel' else 1) * c.data.batch_size
    state, metrics = run.train_step(state, sharding.shard_batch(batch, run.mesh),
                                    jax.random.key(1))
    assert np.isfinite(float(metrics['loss'])), (name, i)
  assert int(state.step) == 3
  want = {'jat': 'jat/raw/dom_global', 'nel': 'nel/raw/unc',
          'gmp': f'gmp/raw/dom_coeff/{run.config.data.modalities[0]}'}[name]
  assert want in metrics


# ------------------------------------------------------------ GMP as a plug-in
def _np_project(g, h):
  return g - (g @ h) / (h @ h + 1e-12) * h


def _gmp_by_hand(g_cls, g_dom, r, s, k, p):
  """The script's per-modality combination on flat numpy vectors (g_dom None: one source)."""
  g_cls = k * g_cls
  if g_dom is None:
    return g_cls
  g_dom = p * g_dom
  if g_cls @ g_dom < 0:
    if r >= s:
      g_cls = _np_project(g_cls, g_dom)
    else:
      g_dom = _np_project(g_dom, g_cls)
  return g_cls + g_dom


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _random_like(tree, key):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(key), len(leaves))
  return treedef.unflatten([jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


@pytest.mark.parametrize('sem_ratio', [2.0, 0.5])   # which side loses its component
def test_gmp_transform_projects_only_on_conflict_and_only_on_theta_m(sem_ratio):
  params = {'encoders': {m: {'stage': {'w': jnp.zeros((3, 2))}} for m in ('video', 'audio')},
            'norms': {}, 'uni_heads': {m: {'b': jnp.zeros((4,))} for m in ('video', 'audio')},
            'fused_head': {'w': jnp.zeros((5,))}, 'extra': {}}
  fused = _random_like(params, 0)
  cls = {m: _random_like(params, i + 1) for i, m in enumerate(('video', 'audio'))}
  # video: the domain gradient mostly opposes the semantic one on theta_v (a conflict);
  # audio: it agrees. Everything off theta_m is noise the transform must ignore.
  dom = {'video': jax.tree.map(lambda a, b: -a + 0.3 * b, cls['video'], _random_like(params, 7)),
         'audio': jax.tree.map(lambda a, b: a + 0.3 * b, cls['audio'], _random_like(params, 8))}
  terms = {'ce_fused': fused, **{f'cls/{m}': g for m, g in cls.items()},
           **{f'dom/{m}': g for m, g in dom.items()}}
  coef = {'video': (sem_ratio, 1.0, 0.7, 0.9), 'audio': (0.8, 1.3, 1.0, 0.4)}
  metrics = {f'{name}/{m}': jnp.asarray(c[i]) for m, c in coef.items()
             for i, name in enumerate(('sem_ratio', 'dom_ratio', 'sem_coeff', 'dom_coeff'))}
  out = gmp.transform_grads(terms, metrics, params, gmp.Hparams(num_sources=2))
  assert jax.tree.structure(out) == jax.tree.structure(params)
  np.testing.assert_array_equal(out['fused_head']['w'], fused['fused_head']['w'])
  own = lambda t, m: _flat({'e': t['encoders'][m], 'u': t['uni_heads'][m]})
  assert own(cls['video'], 'video') @ own(dom['video'], 'video') < 0     # the case is a conflict
  assert own(cls['audio'], 'audio') @ own(dom['audio'], 'audio') > 0
  for m in ('video', 'audio'):
    want = own(fused, m) + _gmp_by_hand(own(cls[m], m), own(dom[m], m), *coef[m])
    np.testing.assert_allclose(own(out, m), want, rtol=1e-5, atol=1e-6)
  # the projection changed video's update (not merely the modulation)
  plain = own(fused, 'video') + 0.7 * own(cls['video'], 'video') + 0.9 * own(dom['video'], 'video')
  assert np.abs(own(out, 'video') - plain).max() > 1e-2


@pytest.mark.parametrize('num_sources', [1, 2])
def test_gmp_step_gradient_is_assembled_from_separate_grads(num_sources):
  import functools  # pylint: disable=g-import-not-at-top
  import test_plugins as tp  # pylint: disable=g-import-not-at-top
  from conftest import tiny_batch  # pylint: disable=g-import-not-at-top
  from mbcd_jax import step  # pylint: disable=g-import-not-at-top
  mods = ('video', 'flow', 'audio')
  model, sp = tp._model('gmp', mods), tp._spec('gmp', num_sources=num_sources)
  batch = {**tiny_batch(batch_size=8), 'source': jnp.array([0, 1] * 4)}
  tx = step.make_optimizer(tp.OPTIM)
  state = step.init_state(model, sp, tx, jax.random.key(0), batch)
  st = state.student
  feats, _ = model.trunk_features_train(st.frozen, batch, st.batch_stats)
  ext_in = step.ExtensionInputs(st.extra_state, state.step, None, batch['source'])
  args = (st.frozen, feats, batch['label'], None, jax.random.key(1))
  kw = dict(batch_stats=st.batch_stats, extension_inputs=ext_in)
  fn = functools.partial(step.loss_fn, model=model, spec=sp)
  grads, (metrics, _, _) = jax.jit(step.per_term_grad(fn, sp.extension))(st.params, *args,
                                                                          **kw)
  # Each term's gradient from its own jax.grad of the step's loss function.
  sep = lambda t: jax.jit(jax.grad(lambda p: fn(p, *args, **kw)[1][0][f'gmp/{t}']))(
      st.params)
  g_fused = sep('ce_fused')
  assert ('gmp/dom/video' in metrics) == (num_sources > 1)
  # the fused CE's gradient alone on the shared parts; nothing for the (absent) own params
  assert st.params['extra'] == {} and grads['extra'] == {}
  np.testing.assert_allclose(_flat(grads['fused_head']), _flat(g_fused['fused_head']),
                             rtol=1e-6, atol=1e-7)
  conflicts = 0
  for m in mods:
    own = lambda t: _flat({'e': t['encoders'][m], 'n': t['norms'].get(m, {}),
                           'u': t['uni_heads'][m]})
    c = [float(metrics[f'gmp/raw/{n}/{m}'])
         for n in ('sem_ratio', 'dom_ratio', 'sem_coeff', 'dom_coeff')]
    g_cls = own(sep(f'cls/{m}'))
    g_dom = own(sep(f'dom/{m}')) if num_sources > 1 else None
    conflicts += g_dom is not None and float(g_cls @ g_dom) < 0
    want = own(g_fused) + _gmp_by_hand(g_cls, g_dom, *c)
    np.testing.assert_allclose(own(grads), want, rtol=1e-5, atol=1e-6, err_msg=m)
    if num_sources == 1:
      assert c[1] == c[3] == 1.0   # no domain side
  # this batch has a modality whose two gradients conflict: the projection is exercised
  assert conflicts > 0 if num_sources > 1 else conflicts == 0
  # the coefficients are the module's from the step's uni-modal logits: one of them slowed
  assert min(float(metrics[f'gmp/raw/sem_coeff/{m}']) for m in mods) < 1.0


def test_gmp_projectors_and_discriminator_stay_at_init():
  import functools  # pylint: disable=g-import-not-at-top
  import test_plugins as tp  # pylint: disable=g-import-not-at-top
  from conftest import tiny_batch  # pylint: disable=g-import-not-at-top
  from mbcd_jax import step  # pylint: disable=g-import-not-at-top
  model, sp = tp._model('gmp'), tp._spec('gmp', num_sources=2)
  batch = {**tiny_batch(batch_size=8), 'source': jnp.array([0, 1] * 4)}
  tx = step.make_optimizer(tp.OPTIM)
  state0 = step.init_state(model, sp, tx, jax.random.key(0), batch)
  f = jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx))
  state = state0
  for _ in range(3):
    state, metrics = f(state, batch, jax.random.key(1))
  s0, s1 = state0.student, state.student
  assert 'gmp/dom/audio' in metrics and s1.params['extra'] == {}
  for part in ('domain_proj', 'domain_disc'):
    _trees.assert_trees_equal(s0.extra_state[part], s1.extra_state[part])
  # its BN statistics do follow the training-mode passes, as the script's
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                       s0.extra_state['domain_disc_stats'], s1.extra_state['domain_disc_stats'])
  assert min(jax.tree.leaves(moved)) > 0
  assert float(jnp.abs(s1.params['encoders']['video']['stage']['Conv_0']['kernel'] -
                       s0.params['encoders']['video']['stage']['Conv_0']['kernel']).max()) > 0
