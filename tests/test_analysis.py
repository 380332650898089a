"""Analyses: flatness and noise robustness on functions with known answers, and every analysis
end to end on the tiny smoke config."""
import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbcd_jax import train as train_lib
from mbcd_jax.analysis import common, curves, flatness, missing, modality, robustness

import _trees  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- flatness on a quadratic
def _quadratic(a):
  """L(theta) = 0.5 sum_i a_i theta_i^2 over a two-leaf pytree, minimum 0 at theta = 0."""
  def loss(p):
    return 0.5 * (jnp.sum(a['w'] * p['w'] ** 2) + jnp.sum(a['b'] * p['b'] ** 2))
  return loss


def test_flatness_isotropic_quadratic_is_exact():
  # a_i = c everywhere: L(r d) = 0.5 c r^2 for every unit direction d (no sampling error).
  params = {'w': jnp.zeros((4, 3)), 'b': jnp.zeros((3,))}
  c = 3.0
  loss = _quadratic({'w': jnp.full((4, 3), c), 'b': jnp.full((3,), c)})
  out = flatness.flatness_curve(loss, params, [0.0, 0.5, 1.0, 2.0], 4, jax.random.key(0))
  np.testing.assert_allclose(out['increase_mean'], [0.5 * c * r ** 2 for r in out['radii']],
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(out['increase_std'], 0.0, atol=1e-5)
  assert out['base_loss'] == 0.0


def test_flatness_anisotropic_quadratic_in_expectation():
  # E_d[0.5 sum a_i d_i^2] = 0.5 mean(a) for d uniform on the unit sphere; a sharper quadratic
  # (larger a) gives a larger increase at every radius.
  rng = np.random.default_rng(0)
  a = {'w': jnp.asarray(rng.uniform(0, 2, (10, 5))), 'b': jnp.asarray(rng.uniform(0, 2, 5))}
  mean_a = float((a['w'].sum() + a['b'].sum()) / 55)
  params = {'w': jnp.zeros((10, 5)), 'b': jnp.zeros((5,))}
  out = flatness.flatness_curve(_quadratic(a), params, [1.0, 2.0], 400, jax.random.key(1))
  np.testing.assert_allclose(out['increase_mean'], [0.5 * mean_a, 2.0 * mean_a], rtol=0.05)
  sharp = flatness.flatness_curve(_quadratic(jax.tree.map(lambda x: 4 * x, a)), params,
                                  [1.0, 2.0], 400, jax.random.key(1))
  np.testing.assert_allclose(sharp['increase_mean'], 4 * np.array(out['increase_mean']),
                             rtol=1e-4)


def test_random_direction_has_unit_norm():
  params = {'w': jnp.ones((7, 3)), 'b': jnp.ones((3,))}
  d = flatness.random_direction(jax.random.key(2), params)
  assert flatness.global_norm(d) == pytest.approx(1.0, rel=1e-5)


def test_filter_normalized_direction_and_landscape():
  params = {'kernel': jnp.arange(1.0, 13.0).reshape(4, 3), 'bias': jnp.ones((3,))}
  d = flatness.filter_normalized_direction(jax.random.key(3), params)
  # every output filter (column) has the norm of the same filter of params; biases are zero
  np.testing.assert_allclose(jnp.linalg.norm(d['kernel'], axis=0),
                             jnp.linalg.norm(params['kernel'], axis=0), rtol=1e-5)
  np.testing.assert_array_equal(d['bias'], 0.0)
  # landscape of L = 0.5 ||theta - theta0||^2 around theta0: 0.5 ||a d1 + b d2||^2
  theta0 = params
  loss = lambda p: 0.5 * sum(jnp.sum((x - y) ** 2) for x, y in
                             zip(jax.tree.leaves(p), jax.tree.leaves(theta0)))
  coords = [-1.0, 0.0, 0.5]
  land = flatness.landscape_2d(loss, params, coords, jax.random.key(4))
  d1, d2 = land['directions']
  for i, a in enumerate(coords):
    for j, b in enumerate(coords):
      want = 0.5 * jnp.sum((a * d1['kernel'] + b * d2['kernel']) ** 2)
      assert land['loss'][i][j] == pytest.approx(float(want), rel=1e-5, abs=1e-6)
  assert land['loss'][1][1] == 0.0


# ---------------------------------------------------------------- noise robustness
def test_noise_curve_known_expectation():
  # metric = sum over examples of ||x||^2 (per-example dim d): E = ||x||^2 + d sigma^2
  rng = np.random.default_rng(0)
  batches = [{'audio': rng.standard_normal((64, 10)).astype(np.float32),
              'video': np.ones((64, 2), np.float32)} for _ in range(4)]
  base = np.mean([np.sum(b['audio'] ** 2, 1).mean() for b in batches])
  metric = lambda b: (float(np.sum(b['audio'] ** 2)), float(len(b['audio'])))
  sigmas = [0.0, 0.5, 1.0, 2.0]
  out = robustness.noise_curve(metric, batches, 'audio', sigmas, seed=0, repeats=4)
  np.testing.assert_allclose(out, [base + 10 * s ** 2 for s in sigmas], rtol=0.03)
  assert out[0] == pytest.approx(base, rel=1e-6)
  # only the named modality is perturbed
  other = robustness.noise_curve(lambda b: (float(np.sum(b['video'])), 64.0), batches,
                                 'audio', sigmas)
  np.testing.assert_allclose(other, 2.0)


# ---------------------------------------------------------------- end to end on :smoke
METHODS = ('erm', 'mbcd')


def _files(run_dir):
  """Every file under ``run_dir`` -> its bytes (checkpoints, metrics, summary)."""
  out = {}
  for root, _, files in os.walk(run_dir):
    for f in files:
      with open(os.path.join(root, f), 'rb') as fh:
        out[os.path.relpath(os.path.join(root, f), run_dir)] = fh.read()
  return out


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  """erm and mbcd trained for 2 epochs on :smoke by the analysis itself (the runs were missing
  from the study directory), counting the calls of the training loop."""
  base = common.load_config(os.path.join(ROOT, 'configs/hac.py:smoke'))
  base = common.override(base, {'train.epochs': 2})
  root = str(tmp_path_factory.mktemp('study'))
  calls = []
  real = train_lib.train_and_evaluate

  def spy(config, workdir):
    calls.append(workdir)
    return real(config, workdir)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(train_lib, 'train_and_evaluate', spy)
    trained = common.load_study(base, root, METHODS, log=lambda s: None)
  return trained, root, base, calls


def test_missing_runs_are_trained_once_by_the_training_loop(study):
  trained, root, _, calls = study
  assert sorted(calls) == sorted(t.run_dir for t in trained.values())
  for m, t in trained.items():
    # the runner's layout, so the study's tables see the run
    assert t.run_dir == os.path.join(root, m, 'video_flow_audio', 'animal+cartoon_to_human',
                                     'seed0')
    assert os.path.exists(os.path.join(t.run_dir, 'run.json'))
    assert t.step == 8 and len(t.history) == 2 and int(t.state.step) == 8


def test_rerunning_the_analysis_trains_nothing(study, monkeypatch):
  trained, root, base, _ = study
  before = {m: _files(t.run_dir) for m, t in trained.items()}

  def no_training(config, workdir):
    raise AssertionError(f'trained {workdir} again')
  monkeypatch.setattr(train_lib, 'train_and_evaluate', no_training)
  again = common.load_study(base, root, METHODS, log=lambda s: None)
  for m, t in again.items():
    assert _files(t.run_dir) == before[m]    # no new step, row or checkpoint
    _trees.assert_trees_equal(t.state, trained[m].state, where=m)
  loaded = common.train_or_load(None, trained['mbcd'].run_dir)   # the run's own config
  assert loaded.step == 8


@pytest.mark.parametrize('which,row', [('last', 'last'), ('best', 'best_val')])
def test_loaded_checkpoint_is_the_summarys_model(study, which, row):
  # common.accuracy on the loaded state equals what the training loop measured and reported
  # for that checkpoint: 'last' is the end of training, 'best' the best-validation epoch.
  trained, _, _, _ = study
  t = common.load(trained['mbcd'].run_dir, which)
  with open(os.path.join(t.run_dir, 'summary.json')) as f:
    summary = json.load(f)[row]
  assert t.who == 'teacher' and t.step == 4 * summary['epoch']
  assert t.history[-1]['epoch'] == summary['epoch']
  for split in ('val', 'test'):
    acc = common.accuracy(t, split)
    assert acc['fused'] == pytest.approx(summary[split]['teacher/fused'], abs=1e-4)
    for m in t.modalities:
      assert acc[m] == pytest.approx(summary[split][f'teacher/{m}'], abs=1e-4)
  with pytest.raises(ValueError, match='checkpoint must be one of'):
    common.load(t.run_dir, 'first')


def test_load_refuses_a_directory_without_checkpoints(tmp_path):
  with pytest.raises(ValueError, match='no checkpoints'):
    common.load(str(tmp_path))
  with pytest.raises(FileNotFoundError, match='not a finished run'):
    common.train_or_load(None, str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_model_analyses_write_plots_and_numbers(study, tmp_path):
  trained = study[0]
  out = str(tmp_path)
  mod = modality.run(trained, out)
  assert set(mod['mbcd']['probe']) == {'video', 'flow', 'audio', 'all'}
  rob = robustness.run(trained, out, sigmas=(0.0, 1.0))
  # sigma = 0 is the clean accuracy
  assert rob['methods']['erm']['audio'][0] == pytest.approx(mod['erm']['heads']['test']['fused'])
  flat = flatness.run(trained, out, radius_fractions=(0.0, 0.1), num_directions=2,
                      grid_points=3)
  assert flat['methods']['erm']['train']['increase_mean'][0] == pytest.approx(0.0, abs=1e-6)
  mis = missing.run(trained, out)
  assert mis['erm']['all'] == pytest.approx(mod['erm']['heads']['test']['fused'])
  for name in ('modality', 'robustness', 'flatness', 'landscape', 'missing'):
    path = os.path.join(out, f'{name}.png')
    assert os.path.getsize(path) < 200_000, path
  for name in ('modality', 'robustness', 'flatness', 'missing'):
    json.load(open(os.path.join(out, f'{name}.json')))


def test_missing_modality_zeroed_feature_equals_keep_mask(study):
  trained = study[0]
  t = trained['mbcd']
  b = next(common.batches(t, 'test'))
  keep = {m: np.ones(len(b['label'])) for m in t.modalities}
  keep['audio'] = np.zeros(len(b['label']))
  z = common.logits(t, b, keep=keep)['fused']
  # the same as zeroing the audio feature by hand
  params = common.evaluated_params(t)
  frozen = t.state.student.frozen
  feats = t.model.trunk_features(frozen, {m: jnp.asarray(b[m]) for m in t.modalities})
  h = t.model.encode_all(params['encoders'], params['norms'], frozen, feats)
  h['audio'] = jnp.zeros_like(h['audio'])
  want = t.model.fused_logits(params['fused_head'], h, train=False)
  np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-5)


def test_curves_from_metrics_jsonl(tmp_path):
  for method, base in (('erm', 40.0), ('mbcd', 50.0)):
    for seed in (0, 1):
      d = tmp_path / method / 'video_flow_audio' / 'animal+cartoon_to_human' / f'seed{seed}'
      d.mkdir(parents=True)
      who = 'teacher' if method == 'mbcd' else 'student'
      with open(d / 'metrics.jsonl', 'w') as f:
        for e in (1, 2, 3):
          for kind, off in (('val', 30.0), ('test', 0.0)):
            rec = {'step': 10 * e, 'kind': kind, 'student/fused': 0.0}
            rec[f'{who}/fused'] = base + off + e + seed   # erm: the student is evaluated
            f.write(json.dumps(rec) + '\n')
        f.write(json.dumps({'step': 30, 'kind': 'train', 'loss': 1.0}) + '\n')
      with open(d / 'summary.json', 'w') as f:
        json.dump({'evaluated': who}, f)
  res = curves.run(str(tmp_path), ['erm', 'mbcd'], str(tmp_path / 'out'), target='human')
  assert res['mbcd']['test']['mean'] == [51.5, 52.5, 53.5]   # teacher, mean over seeds 0, 1
  assert res['erm']['val']['min'] == [71.0, 72.0, 73.0]
  assert os.path.exists(tmp_path / 'out' / 'curves.png')


# ---------------------------------------------------------------- reliability suites on :smoke
def test_reliability_suites_on_the_studys_runs(study, tmp_path):
  from mbcd_jax.analysis import suites   # pylint: disable=g-import-not-at-top
  trained, root, _, _ = study
  t = trained['mbcd']
  acc = common.accuracy(t, 'test')['fused']
  opts = suites.Options(severities=(2,), scores=('msp', 'energy'))
  rows = {s: f(t, opts) for s, f in suites.EVALUATE.items()}   # the loaded run, as run() does
  misd = {x['condition']: x for x in rows['misd']}
  assert misd['msp']['acc'] == pytest.approx(acc) and 0 <= misd['energy']['auroc'] <= 100
  assert [x['condition'] for x in rows['ood']] == ['new_classes/msp', 'new_classes/energy']
  assert rows['ood'][0]['n_ood'] == t.run.loaders['test'].num_examples
  miss = {x['condition']: x['acc'] for x in rows['missing']}
  assert miss['none'] == pytest.approx(acc) and len(miss) == 1 + 2 * 6
  keep = lambda b: {m: np.full(len(b['label']), float(m == 'video')) for m in t.modalities}
  assert miss['feature:-flow+audio'] == pytest.approx(
      common.accuracy(t, 'test', keep_fn=keep)['fused'])
  cor = {x['condition']: x['acc'] for x in rows['corruption']}
  assert cor['clean'] == pytest.approx(acc)
  assert set(cor) == {'clean', 'video:defocus_blur@2', 'video:gaussian_noise@2',
                      'flow:gaussian_noise@2', 'audio:gaussian_snr@2'}
  # the study-level command: every finished run of the listed methods, CSV + markdown + plot
  out = suites.run('misd', root, str(tmp_path), ['erm'], opts=opts, who='student',
                   log=lambda s: None)
  assert {(x['variant'], x['who'], x['setting'], x['seed']) for x in out} == {
      ('erm', 'student', 'A,C→H', 0)}
  for ext in ('csv', 'md', 'png'):
    assert os.path.getsize(tmp_path / f'misd.{ext}') > 0
  # Each run's rows are kept beside it and reused while their inputs are unchanged.
  logs = []
  again = suites.run('misd', root, str(tmp_path), ['erm'], opts=opts, who='student',
                     log=logs.append)
  assert again == out and 'kept from' in logs[0]
  logs.clear()
  other = suites.run('misd', root, str(tmp_path), ['erm'], opts=dataclasses.replace(
      opts, scores=('msp',)), who='student', log=logs.append)
  assert 'kept from' not in logs[0] and [x['condition'] for x in other] == ['msp']
  logs.clear()
  fresh = suites.run('misd', root, str(tmp_path), ['erm'], opts=opts, who='student',
                     log=logs.append, recompute=True)
  assert 'kept from' not in logs[0]
  strip = lambda rows: [{k: v for k, v in x.items() if k != 'wall_s'} for x in rows]
  assert strip(fresh) == strip(out)
