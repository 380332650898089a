"""The peers' methods through the shared train step (mbcd_jax/extensions.py, step.py).

* the step's loss equals the method module's own ``loss_terms`` (plus the fused / probe CE the
  plug-in asks for) on the same embeddings, random draws included — so the step feeds each
  method exactly what its module was checked on against the authors' code;
* every method learns, and each one's extra parameters are trained;
* CMRF's teacher is the simple moving average of the whole student from its start step;
* the model variant comes from the method unless the config sets it;
* a plug-in refuses MBCD's switches.
"""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import spec, tiny_batch, tiny_model
from mbcd_jax import config_lib, losses, methods, models, step
from mbcd_jax.baselines import cmrf, moosa, rna, simmmdg

OPTIM = ml_collections.ConfigDict(dict(lr=1e-2, weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8))
PLUGINS = sorted(methods.EXTENSIONS)


def _model(name, modalities=('video', 'flow', 'audio'), head_dropout=0.0):
  # Widths divisible by MOOSA's 4 jigsaw parts; the method's own model variant.
  variant = dict(methods.EXTENSIONS[name].model)
  variant.pop('audio_tail_init')
  return tiny_model(dropout=head_dropout, modalities=modalities, widths=(8, 8, 4), **variant)


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
  feats = model.trunk_features(state.frozen, batch)
  h, _ = model.encode_all_train(state.params['encoders'], state.params['norms'], state.frozen,
                                feats, dropout_rng=jax.random.fold_in(r, step._FEATURE_DROPOUT_STREAM))
  z_uni = model.uni_logits(state.params['uni_heads'], h, train=False)   # head dropout is 0
  z_mm = model.fused_logits(state.params['fused_head'], h, train=False)
  labels, r_ext = batch['label'], jax.random.fold_in(r, step._EXTENSION_STREAM)
  ce_mm = losses.cross_entropy(z_mm, labels)
  probes = sum(losses.cross_entropy(z_uni[m], labels) for m in model.modalities)
  extra = state.params['extra']
  if name == 'rna':
    terms, _ = rna.loss_terms(h, alpha=ext.hparams.alpha)
    return ce_mm + probes + sum(terms.values())
  if name == 'simmmdg':
    terms, _ = simmmdg.loss_terms(extra, h, labels, r_ext, batch_stats=state.extra_state,
                                  hp=ext.hparams)
    return ce_mm + probes + sum(terms.values())
  mods = model.modalities
  if name == 'moosa':
    cols = moosa.jigsaw_setup(model.feature_dims, mods, ext.hparams)
    terms, _ = moosa.loss_terms(extra, state.extra_state, h, z_uni, z_mm, labels, r_ext,
                                modalities=mods, cfg=ext.hparams, cols=cols)
    return sum(terms.values())
  _, h_t = model.predict(step.weights(state, 'teacher'), batch, with_features=True)
  terms, _ = cmrf.loss_terms(extra, state.extra_state, h, z_uni, z_mm, labels, r_ext,
                             modalities=mods, teacher_params=state.teacher['extra'],
                             teacher_batch_stats=state.teacher_extra_state, teacher_feats=h_t,
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
  extra0 = state.params['extra']
  for _ in range(30):
    state, _ = f(state, batch, jax.random.key(1))
  last = float(evaluate(state, batch)['student/loss_sum'])
  assert last < 0.985 * first, (name, first, last)
  moved = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(extra0),
                                                       jax.tree.leaves(state.params['extra']))]
  if name == 'rna':
    assert not moved   # no parameters of its own
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
    students.append((state.params, state.extra_state))
  # After optimizer steps 0..4 (0-based): the mean of the students after steps start-1..4.
  window = students[start - 1:]
  for got, *seq in ((state.teacher, *[s[0] for s in window]),
                    (state.teacher_extra_state, *[s[1] for s in window])):
    want = jax.tree.map(lambda *xs: sum(xs) / len(xs), *seq)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # and it is not simply the last student
  assert any(float(jnp.abs(a - b).max()) > 1e-6 for a, b in
             zip(jax.tree.leaves(state.teacher), jax.tree.leaves(students[-1][0])))


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
  state = step.init_state(model, sp, tx, jax.random.key(0), batch)
  state, m = jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx))(
      state, batch, jax.random.key(1))
  assert np.isfinite(float(m['loss'])) and int(state.step) == 1


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
    assert methods.model_variant(c.model, name)['audio_tail_init'] == 'random'
  c = _config('simmmdg', feature_norm='parameter_free', feature_dropout=0.0)
  m = models.build_model(c.model, tuple(c.data.modalities), c.data.num_classes, 'simmmdg')
  assert (m.feature_norm, m.feature_dropout) == ('parameter_free', 0.0)
  m = models.build_model(_config('mbcd').model, ('video',), 7, 'mbcd')
  assert (m.feature_norm, m.feature_dropout, m.uni_head) == ('parameter_free', 0.0, 'mlp')


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
        assert len(got) == 1 and got[0].startswith(f'{name}: ') and 'bn_mode=port' in got[0]
      else:
        assert got == []
