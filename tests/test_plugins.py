"""The peers' methods through the shared train step (mbcd_jax/extensions.py, step.py).

Every step test runs on encoders with BatchNorm in each method's own variant: the peers as
their scripts run (video/flow BN in training mode, the audio trunk in eval mode, no DSU), MBCD
as the real-data configs run it ('port' BN, DSU on).

* the step's loss equals the method module's own ``loss_terms`` (plus the fused / probe CE the
  plug-in asks for) on the same embeddings, random draws included — so the step feeds each
  method exactly what its module was checked on against the authors' code;
* on the real-data configs each plug-in's default variant has DSU off, leaves the audio trunk's
  statistics untouched and (CMRF) gives its teacher the student's audio trunk; MBCD's keeps
  'port' BN and DSU;
* MOOSA's jigsaw uses the authors' modality order and the run's seed;
* the PyTorch initialisers have the peers' statistics;
* every method learns, and each one's extra parameters are trained (RNA and GMP have none);
* CMRF's teacher is the simple moving average of the whole student from its start step;
* the model variant comes from the method unless the config sets it;
* a plug-in refuses MBCD's switches.
"""
import functools
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import spec, tiny_batch
from mbcd_jax import config_lib, methods, models, step
from mbcd_jax.method import losses
from mbcd_jax.baselines import cmrf, gmp, jat, moosa, nel, rna, simmmdg

import _trees  # pylint: disable=g-import-not-at-top,wrong-import-position

OPTIM = ml_collections.ConfigDict(dict(lr=1e-2, weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8))
PLUGINS = sorted(methods.EXTENSIONS)


def _model(name, modalities=('video', 'flow', 'audio'), head_dropout=0.0):
  """A tiny model with BN in every conv, in method ``name``'s own variant (``build_model``
  resolves it). Widths divisible by MOOSA's 4 jigsaw parts."""
  enc = ml_collections.ConfigDict({
      m: {'name': 'spec_cnn' if m == 'audio' else 'frame_cnn', 'trunk_widths': (4, 4),
          'trunk_strides': (1, 2), 'width': w, 'bn': True}
      for m, w in zip(('video', 'flow', 'audio'), (8, 8, 4))})
  mc = ml_collections.ConfigDict(dict(encoders=enc, head_hidden=8, head_dropout=head_dropout,
                                      freeze_trunk=True))
  return models.build_model(mc, modalities, 5, name)


def _spec(name, **hp):
  s = spec(name)
  if hp:
    s = s.__class__(**{**s.__dict__, 'extension': s.extension.with_hparams(hp)})
  return s


def _expected_loss(name, model, sp, state, batch, rng):
  """The loss assembled from the method module's public functions, independently of step.py's
  plumbing: embeddings from the model's training pass with the step's dropout key, then
  ``<module>.loss_terms`` with the step's key for the method."""
  ext = sp.extension
  r = jax.random.fold_in(rng, state.step)
  st = state.student
  feats, _ = model.trunk_features_train(st.frozen, batch, st.batch_stats)
  h, _ = model.encode_all_train(st.params['encoders'], st.params['norms'], st.frozen,
                                feats, st.batch_stats,
                                dropout_rng=jax.random.fold_in(r, step._FEATURE_DROPOUT_STREAM))
  z_uni = model.uni_logits(st.params['uni_heads'], h, train=False)   # head dropout is 0
  z_mm = model.fused_logits(st.params['fused_head'], h, train=False)
  labels, r_ext = batch['label'], jax.random.fold_in(r, step._EXTENSION_STREAM)
  ce_mm = losses.cross_entropy(z_mm, labels)
  probes = sum(losses.cross_entropy(z_uni[m], labels) for m in model.modalities)
  extra = st.params['extra']
  if name == 'rna':
    terms, _ = rna.loss_terms(h, alpha=ext.hparams.alpha)
    return ce_mm + probes + sum(terms.values())
  if name == 'simmmdg':
    terms, _ = simmmdg.loss_terms(extra, h, labels, r_ext, batch_stats=st.extra_state,
                                  hp=ext.hparams)
    return ce_mm + probes + sum(terms.values())
  mods = model.modalities
  if name == 'jat':
    out, _ = jat.heads(extra, st.extra_state, h,
                       jat.draw(r_ext, labels.shape[0], mods, ext.hparams), mods, ext.hparams)
    multi = jat.multi_source(ext.hparams)
    terms, _ = jat.loss_terms(z_uni, z_mm, out['modal'], labels, domain_logits=out['domain'],
                              global_logits=out['global'],
                              domains=batch[step.SOURCE_KEY] if multi else None, hp=ext.hparams)
    return sum(terms.values())
  if name == 'gmp':   # the loss reported is the sum of its terms (the update is transformed)
    multi = gmp.multi_source(ext.hparams)
    total = ce_mm + sum(ext.hparams.cls_loss * losses.cross_entropy(z_uni[m], labels)
                        for m in mods)
    if multi:
      q, _ = gmp.domain_logits(state.extra_state, h, r_ext, mods, ext.hparams)
      total += sum(ext.hparams.domain_adv_loss_local *
                   losses.cross_entropy(q[m], batch[step.SOURCE_KEY]) for m in mods)
    return total
  if name == 'nel':   # the batch's rows read as [view 1; view 2] (tiny_batch: 2 x 4 clips)
    z, _ = nel.project_views(extra, st.extra_state, h, mods, ext.hparams)
    terms, _ = nel.loss_terms(z, z_mm, h, labels, mods, ext.hparams)
    return sum(terms.values())
  if name == 'moosa':
    mods = moosa.authors_order(mods)   # V, A, F: the authors' jigsaw parts
    cols = moosa.jigsaw_setup(model.feature_dims, mods, ext.hparams)
    terms, _ = moosa.loss_terms(extra, st.extra_state, h, z_uni, z_mm, labels, r_ext,
                                modalities=mods, cfg=ext.hparams, cols=cols)
    return sum(terms.values())
  _, h_t = model.predict(step.weights(state, 'teacher'), batch, with_features=True)
  terms, _ = cmrf.loss_terms(extra, st.extra_state, h, z_uni, z_mm, labels, r_ext,
                             modalities=mods, teacher_params=state.teacher.params['extra'],
                             teacher_batch_stats=state.teacher.extra_state, teacher_feats=h_t,
                             step=state.step, cfg=ext.hparams)
  return sum(terms.values())


@pytest.mark.parametrize('name', PLUGINS)
def test_step_loss_is_the_modules_loss(name):
  model = _model(name)
  # CMRF: distillation on from the first step, so its teacher term is part of the check.
  sp = _spec(name, sma_start_step=0) if name == 'cmrf' else _spec(name)
  batch, rng = tiny_batch(batch_size=8), jax.random.key(3)
  tx = step.make_optimizer(OPTIM)
  state = step.init_state(model, sp, tx, jax.random.key(0), batch)
  f = jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx))
  for _ in range(2):   # the second step sees updated extra state (BN statistics) and teacher
    want = float(_expected_loss(name, model, sp, state, batch, rng))
    new, metrics = f(state, batch, rng)
    np.testing.assert_allclose(float(metrics['loss']), want, rtol=2e-5, err_msg=name)
    state = new
  assert np.isfinite(float(metrics['loss']))


@pytest.mark.parametrize('name', PLUGINS)
def test_every_plugin_learns_and_trains_its_parameters(name):
  model = _model(name, head_dropout=0.1)
  sp = _spec(name)
  batch = tiny_batch(batch_size=16)
  # lr 1e-3: at 1e-2 the split-distance term of SimMMDG / MOOSA (unbounded below in the
  # authors' code) inflates the un-normalised embeddings within 20 steps.
  tx = step.make_optimizer(ml_collections.ConfigDict({**OPTIM.to_dict(), 'lr': 1e-3}))
  state = step.init_state(model, sp, tx, jax.random.key(0), batch)
  f = jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx))
  evaluate = jax.jit(functools.partial(step.eval_step, model=model))
  first = float(evaluate(state, batch)['student/loss_sum'])
  extra0 = state.student.params['extra']
  for _ in range(30):
    state, _ = f(state, batch, jax.random.key(1))
  last = float(evaluate(state, batch)['student/loss_sum'])
  assert last < 0.985 * first, (name, first, last)
  # tree.map, not a zip of leaves: the two trees must have one structure.
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), extra0,
                                       state.student.params['extra']))
  if name in ('rna', 'gmp'):
    # no trained parameters of its own (GMP's projectors and discriminator are state that
    # the authors never update; tests/test_baselines_nel_jat_gmp.py checks they stay put)
    assert not moved
  else:
    assert moved and min(moved) > 0, name   # every extra leaf is in the optimizer
  assert (state.teacher is not None) == (name == 'cmrf')


def test_cmrf_teacher_is_the_moving_average_from_its_start_step():
  model = _model('cmrf')
  start = 2
  sp = _spec('cmrf', sma_start_step=start)
  batch = tiny_batch(batch_size=8)
  tx = step.make_optimizer(OPTIM)
  state = step.init_state(model, sp, tx, jax.random.key(0), batch)
  f = jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx))
  students = []
  for _ in range(5):
    state, _ = f(state, batch, jax.random.key(1))
    students.append((state.student.params, state.student.extra_state))
  # After optimizer steps 0..4 (0-based): the mean of the students after steps start-1..4.
  window = students[start - 1:]
  for got, *seq in ((state.teacher.params, *[s[0] for s in window]),
                    (state.teacher.extra_state, *[s[1] for s in window])):
    want = jax.tree.map(lambda *xs: sum(xs) / len(xs), *seq)
    _trees.assert_trees_equal(got, want, exact=False, rtol=1e-5, atol=1e-6)
  # and it is not simply the last student
  assert not _trees.trees_equal(state.teacher.params, students[-1][0], exact=False, atol=1e-6)


# Each method on one two-modality subset, the subsets rotating over the methods (compile
# time: every pair is a new program).
_SUBSETS = [('video', 'audio'), ('video', 'flow'), ('flow', 'audio')]


@pytest.mark.parametrize('name,modalities',
                         [(n, _SUBSETS[i % 3]) for i, n in enumerate(PLUGINS)])
def test_every_plugin_runs_with_two_modalities(name, modalities):
  model = _model(name, modalities)
  sp = _spec(name)
  batch = {k: v for k, v in tiny_batch(batch_size=8).items() if k in modalities + ('label',)}
  tx = step.make_optimizer(OPTIM)
  state0 = step.init_state(model, sp, tx, jax.random.key(0), batch)
  assert sorted(state0.student.params['encoders']) == sorted(modalities)
  rng = jax.random.key(1)
  # The method module's own loss on the two modalities' embeddings (the fused head and the
  # jigsaw / distances sized for two), assembled without step.py's plumbing.
  want = float(_expected_loss(name, model, sp, state0, batch, rng))
  state, m = jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx))(
      state0, batch, rng)
  np.testing.assert_allclose(float(m['loss']), want, rtol=2e-5, err_msg=name)
  assert int(state.step) == 1
  # the step updated the model
  assert not _trees.trees_equal(state.student.params, state0.student.params)


def _config(method, **model):
  from configs import hac   # pylint: disable=g-import-not-at-top
  c = hac.get_config('smoke')
  c.method.name = method
  for k, v in model.items():
    c.model[k] = v
  return config_lib.normalize(c)


def test_model_variant_comes_from_the_method_unless_set():
  for name in PLUGINS:
    c = _config(name)
    config_lib.validate(c)
    m = models.build_model(c.model, tuple(c.data.modalities), c.data.num_classes, name)
    want = dict(methods.EXTENSIONS[name].model)
    assert (m.feature_norm, m.feature_dropout, m.uni_head) == (
        want['feature_norm'], want['feature_dropout'], want['uni_head'])
    # the scripts' networks hold on the embedded benchmark too (its MBCD default is 'frozen')
    assert (m.bn_mode, m.eval_trunks, m.dsu, m.param_init) == ('port', ('audio',), False,
                                                               'torch'), name
    assert methods.model_variant(c.model, name)['audio_tail_init'] == 'random'
  c = _config('simmmdg', feature_norm='parameter_free', feature_dropout=0.0)
  m = models.build_model(c.model, tuple(c.data.modalities), c.data.num_classes, 'simmmdg')
  assert (m.feature_norm, m.feature_dropout) == ('parameter_free', 0.0)
  m = models.build_model(_config('mbcd').model, ('video',), 7, 'mbcd')
  assert (m.feature_norm, m.feature_dropout, m.uni_head) == ('parameter_free', 0.0, 'mlp')
  assert (m.bn_mode, m.eval_trunks, m.dsu, m.param_init) == ('frozen', (), False, 'flax')
  # an explicit key beats the plug-in's, on the command line's comma syntax too
  c = _config('cmrf', bn_mode='frozen', dsu=True, eval_trunks=('audio,flow',))
  config_lib.validate(c)
  m = models.build_model(c.model, tuple(c.data.modalities), c.data.num_classes, 'cmrf')
  assert (m.bn_mode, m.dsu, m.eval_trunks) == ('frozen', True, ('audio', 'flow'))


@pytest.mark.parametrize('key,value', [('bn_mode', 'train'), ('eval_trunks', ('sound',)),
                                       ('param_init', 'pytorch'), ('uni_head', 'conv'),
                                       ('feature_dropout', 1.0)])
def test_bad_variant_value_is_one_error_naming_the_key(key, value):
  c = _config('simmmdg', **{key: value})
  with pytest.raises(ValueError, match=f'^config.model.{key} must be'):
    config_lib.validate(c)
  with pytest.raises(ValueError, match=f'^config.model.{key} must be'):
    models.build_model(c.model, tuple(c.data.modalities), c.data.num_classes, 'simmmdg')


def test_hyper_parameters_from_the_config_group():
  c = _config('simmmdg')
  c.method.simmmdg.alpha_trans = 1.0
  sp = config_lib.validate(c)
  assert sp.extension.hparams.alpha_trans == 1.0
  assert sp.extension.hparams.alpha_contrast == simmmdg.Hparams().alpha_contrast


@pytest.mark.parametrize('switch', [('amd', 'adaptive'), ('consistency', 'grad_dot'),
                                    ('ema', True), ('distill', True)])
def test_plugins_refuse_mbcd_switches(switch):
  c = _config('rna')
  c.method[switch[0]] = switch[1]
  with pytest.raises(ValueError, match='plug-in method'):
    config_lib.validate(c)


def test_frozen_bn_caution_for_the_split_distance_methods():
  # The term scales with the square of the features: nothing bounds it once they can grow.
  e = jax.random.normal(jax.random.key(0), (4, 8))
  np.testing.assert_allclose(simmmdg.distance_loss(10 * e), 100 * simmmdg.distance_loss(e),
                             rtol=1e-5)
  from mbcd_jax import train  # pylint: disable=g-import-not-at-top
  for name in ('rna', 'simmmdg', 'moosa', 'cmrf', 'mbcd'):
    for bn_mode in ('frozen', 'port'):
      c = _config(name)
      c.model.bn_mode = bn_mode
      got = train.cautions(c, config_lib.validate(c))
      if name in ('simmmdg', 'moosa') and bn_mode == 'frozen':
        assert len(got) == 1 and got[0].startswith(f'{name}: ') and 'bn_mode unset' in got[0]
      else:
        assert got == []


def test_no_caution_on_the_embedded_benchmark_default():
  # The README's default (configs/hac.py:synthetic, bn_mode 'frozen' for MBCD) no longer puts
  # SimMMDG / MOOSA on frozen statistics: their own variant holds there.
  from configs import hac   # pylint: disable=g-import-not-at-top
  from mbcd_jax import train  # pylint: disable=g-import-not-at-top
  for name in ('simmmdg', 'moosa'):
    c = hac.get_config('synthetic')
    c.method.name = name
    c = config_lib.normalize(c)
    assert train.cautions(c, config_lib.validate(c)) == []
    assert methods.model_variant(c.model, name)['bn_mode'] == 'port'


# ------------------------------------------------------------ the real-data configs' variants
def _real_config_model(name):
  """configs/hac.py (real data) with tiny BN encoders: the variant exactly as a real run
  resolves it (``config.model.defaults``: 'port' and DSU for MBCD)."""
  from configs import hac   # pylint: disable=g-import-not-at-top
  c = hac.get_config()
  enc = hac.get_config('smoke').model.encoders
  for m in ('video', 'flow', 'audio'):
    enc[m].bn = True
  enc.audio.width = 4 * 4   # MOOSA: divisible by its 4 jigsaw parts
  c.model.encoders = enc
  c.model.head_hidden = 8
  c.method.name = name
  c = config_lib.normalize(c, recipe=False)
  sp = config_lib.validate(c)
  return models.build_model(c.model, tuple(c.data.modalities), c.data.num_classes, name), sp


def _real_batch(batch_size=8):
  k = jax.random.split(jax.random.key(4), 4)
  return {'video': jax.random.normal(k[0], (batch_size, 2, 16, 16, 3)),
          'flow': jax.random.normal(k[1], (batch_size, 2, 16, 16, 2)),
          'audio': jax.random.normal(k[2], (batch_size, 16, 16, 1)),
          'label': jax.random.randint(k[3], (batch_size,), 0, 7),
          # positions among the config's two sources (JAT's domain discriminators read them)
          step.SOURCE_KEY: jnp.arange(batch_size, dtype=jnp.int32) % 2}


def _moved(a, b):
  """Whether some leaf of ``b`` differs from ``a``'s; the structures must be the same (else
  a missing or renamed leaf would count as having moved)."""
  assert jax.tree.structure(a) == jax.tree.structure(b), (a, b)
  return not _trees.trees_equal(a, b)


@pytest.mark.parametrize('name', ['mbcd'] + PLUGINS)
def test_real_data_variant_bn_dsu_and_audio_trunk(name):
  model, sp = _real_config_model(name)
  peer = name != 'mbcd'
  # The table of docs/method.md "How each method's networks run".
  assert model.bn_mode == 'port'
  assert model.dsu == (not peer)
  assert model.eval_trunks == (('audio',) if peer else ())
  assert model.param_init == ('torch' if peer else 'flax')
  batch = _real_batch()
  tx = step.make_optimizer(ml_collections.ConfigDict({**OPTIM.to_dict(), 'lr': 1e-3}))
  state0 = step.init_state(model, sp, tx, jax.random.key(0), batch)
  f = jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx))
  state = state0
  for _ in range(2):
    state, metrics = f(state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics['loss']))
  stats0, stats = state0.student.batch_stats['encoders'], state.student.batch_stats['encoders']
  for m in ('video', 'flow'):   # training-mode BN everywhere, frozen layers included
    assert _moved(stats0[m]['trunk'], stats[m]['trunk']), (name, m)
    assert _moved(stats0[m]['stage'], stats[m]['stage']), (name, m)
  assert _moved(stats0['audio']['stage'], stats['audio']['stage'])   # the audio tail trains
  audio_trunk = state.student.frozen['encoders']['audio']['trunk']
  if peer:
    # audio_model.eval(): its statistics stay in the frozen variables, bit for bit.
    assert stats['audio']['trunk'] == {}
    assert not _moved(state0.student.frozen['encoders']['audio']['trunk'], audio_trunk)
    assert 'batch_stats' in audio_trunk
  else:
    assert _moved(stats0['audio']['trunk'], stats['audio']['trunk'])
  if sp.has_teacher:
    teacher = step.weights(state, 'teacher')
    t_trunk = teacher.frozen['encoders']['audio']['trunk']
    if peer:   # CMRF's teacher runs the student's eval-mode audio trunk
      _trees.assert_trees_equal(t_trunk, audio_trunk, where=name)
      student_feats = model.trunk_features(state.student.frozen, batch, state.student.batch_stats)
      teacher_feats = model.trunk_features(teacher.frozen, batch, teacher.batch_stats)
      np.testing.assert_array_equal(student_feats['audio'], teacher_feats['audio'])
      assert _moved(teacher.batch_stats['encoders']['video'], stats0['video'])


# ------------------------------------------------------------ MOOSA's order and seed
def test_moosa_uses_the_authors_order_and_the_runs_seed():
  from configs import hac   # pylint: disable=g-import-not-at-top
  def hparams(seed, explicit=None):
    c = hac.get_config('smoke')
    c.method.name, c.seed = 'moosa', seed
    if explicit is not None:
      c.method.moosa.seed = explicit
    return config_lib.validate(config_lib.normalize(c, recipe=False)).extension.hparams
  assert [hparams(s).seed for s in (0, 1, 2)] == [0, 1, 2]
  assert hparams(1, explicit=7).seed == 7
  dims = {'video': 8, 'flow': 8, 'audio': 8}
  sets = [moosa.jigsaw_permutations(6, 16, hparams(s).seed) for s in (0, 1, 2)]
  assert not np.array_equal(sets[0], sets[1]) and not np.array_equal(sets[1], sets[2])
  # The V+F+A parts are numbered V, A, F (the authors' concatenation), not the model's V, F, A.
  assert moosa.authors_order(('video', 'flow', 'audio')) == ('video', 'audio', 'flow')
  cfg = moosa.Config(jigsaw_num_splits=2, jigsaw_samples=16, seed=0)
  order = moosa.authors_order(tuple(dims))
  cols = moosa.jigsaw_setup(dims, order, cfg)
  feats = {m: np.arange(8) + 100 * i for i, m in enumerate(('video', 'flow', 'audio'))}
  parts = [feats[m][j * 4:(j + 1) * 4] for m in ('video', 'audio', 'flow') for j in range(2)]
  perms = moosa.jigsaw_permutations(6, 16, 0)
  cat = np.concatenate([feats[m] for m in order])
  for k in range(3):   # class k = the authors' video_parts + audio_parts + flow_parts shuffled
    np.testing.assert_array_equal(cat[cols[k]], np.concatenate([parts[p] for p in perms[k]]))
  with pytest.raises(ValueError, match='seed'):
    moosa.jigsaw_setup(dims, tuple(dims), moosa.Config())


# ------------------------------------------------------------ the initialisers
def test_torch_initialisers_statistics():
  from mbcd_jax.baselines import torch_init  # pylint: disable=g-import-not-at-top
  # Heads: nn.Linear's U(+-1/sqrt(fan_in)) for kernel and bias.
  fan_in, out = 400, 300
  p = models.Head(7, out, 0.5, 'torch').init(jax.random.key(0), jnp.zeros((1, fan_in)),
                                             train=False)['params']
  for leaf, fi in ((p['Dense_0']['kernel'], fan_in), (p['Dense_0']['bias'], fan_in),
                   (p['Dense_1']['kernel'], out)):
    bound = 1 / np.sqrt(fi)
    assert float(jnp.abs(leaf).max()) <= bound
    if leaf.size > 1000:
      np.testing.assert_allclose(float(leaf.std()), bound / np.sqrt(3), rtol=0.05)
  assert float(jnp.abs(p['Dense_0']['bias']).max()) > 0.5 / np.sqrt(fan_in)   # not zeros
  # The audio tail as VGGSound's AudioAttGenModule: convs N(0, 2/fan_out), BN weight N(1, .02).
  enc = ml_collections.ConfigDict({'audio': {'name': 'vggsound_r18', 'width': 16}})
  mc = ml_collections.ConfigDict(dict(encoders=enc, head_hidden=8, head_dropout=0.0,
                                      freeze_trunk=True, param_init='torch'))
  model = models.build_model(mc, ('audio',), 5)
  params, frozen = model.init(jax.random.key(0), {'audio': jnp.zeros((2, 64, 64, 1))})
  layer4 = params['encoders']['audio']['stage']['layer4']
  conv = layer4['0']['conv2']['kernel']                   # 3x3, 128 -> 128
  np.testing.assert_allclose(float(conv.std()), np.sqrt(2 / (9 * 128)), rtol=0.03)
  np.testing.assert_allclose(float(conv.mean()), 0.0, atol=3e-3)
  scales = jnp.concatenate([layer4[b][n]['scale'] for b in ('0', '1') for n in ('bn1', 'bn2')])
  np.testing.assert_allclose(float(scales.mean()), 1.0, atol=0.01)
  np.testing.assert_allclose(float(scales.std()), torch_init.BN_WEIGHT_STD, rtol=0.25)
  assert float(jnp.abs(layer4['0']['bn1']['bias']).max()) == 0.0
  down = layer4['0']['downsample']['0']['kernel']         # 1x1, 64 -> 128
  np.testing.assert_allclose(float(down.std()), np.sqrt(2 / 128), rtol=0.05)
  # the trunk is untouched by the scheme (a checkpoint replaces it on real data)
  flax_model = models.build_model(ml_collections.ConfigDict({**mc.to_dict(),
                                                             'param_init': 'flax'}), ('audio',), 5)
  _, frozen_flax = flax_model.init(jax.random.key(0), {'audio': jnp.zeros((2, 64, 64, 1))})
  assert not _moved(frozen['encoders']['audio']['trunk'], frozen_flax['encoders']['audio']['trunk'])
