"""Synthetic upstream pretraining: cache key, atomic write, and loading what it trained."""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import flax
import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest

from configs import hac
from mbcd_jax import input_pipeline, models, train
from mbcd_jax.data import synthetic
from mbcd_jax.synthetic import pretrain
from mbcd_jax.study import experiments
from mbcd_jax import encoders as encoders_lib
from mbcd_jax.encoders import convert

import _trees  # pylint: disable=g-import-not-at-top,wrong-import-position
from conftest import python_env  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = synthetic.SyntheticSpec()
ENC = dict(name='frame_cnn', trunk_widths=(32, 32, 48), trunk_strides=(1, 2, 2), width=64,
           bn=True)


def _key(spec=SPEC, up=None, m='video', enc=None):
  return pretrain.cache_key(spec, up or pretrain.pretrain_config(), m, enc or ENC)


def test_cache_key_changes_with_what_determines_the_file():
  base = _key()
  up = lambda **kw: ml_collections.ConfigDict({**pretrain.pretrain_config().to_dict(), **kw})
  changed = {
      'encoder width': _key(enc={**ENC, 'width': 32}),
      'encoder bn': _key(enc={**ENC, 'bn': False}),
      'input shape': _key(spec=dataclasses.replace(SPEC, video_shape=(4, 32, 32))),
      'noise': _key(spec=dataclasses.replace(SPEC, noise=0.5)),
      'style shift': _key(spec=dataclasses.replace(SPEC, shift_video=0.5)),
      'steps': _key(up=up(steps=301)),
      'seed': _key(up=up(seed=1)),
      'classes': _key(up=up(classes=16)),
      'lr': _key(up=up(lr=3e-4)),
      'modality': _key(m='flow', enc={**ENC}),
  }
  assert len(set(changed.values()) | {base}) == len(changed) + 1, changed
  # Downstream-only knobs, the cache location and the log cadence do not retrain.
  same = [_key(spec=dataclasses.replace(SPEC, world_seed=3, dominance=1.0, styles='interpolated',
                                        num_classes=8, shift_flow=0.0)),
          _key(up=up(cache_dir='/elsewhere', log_every=7))]
  assert all(k == base for k in same)


def test_cache_key_changes_with_the_code_that_computes_the_file(monkeypatch):
  names = [n for n, _ in pretrain.code_sources()]
  for must in ('mbcd_jax.synthetic.pretrain', 'mbcd_jax.data.synthetic', 'mbcd_jax.encoders.batchnorm',
               'mbcd_jax.encoders', 'mbcd_jax.encoders.small', 'mbcd_jax.encoders.convert',
               'mbcd_jax.data.transforms', 'mbcd_jax.models.layer_norm',
               'mbcd_jax.input_pipeline.normalize_record', 'jax', 'flax', 'optax'):
    assert must in names, must
  # An edit of one character anywhere, or a library upgrade, changes the fingerprint ...
  base = pretrain.code_sources()
  fps = {pretrain.code_fingerprint(base)}
  for i in (0, names.index('mbcd_jax.encoders.small'), names.index('jax')):
    edited = list(base)
    edited[i] = (edited[i][0], edited[i][1] + ' ')
    fps.add(pretrain.code_fingerprint(tuple(edited)))
  assert len(fps) == 4
  # ... and with it every cache key; the same code gives the same key.
  key = _key()
  assert _key() == key
  monkeypatch.setattr(pretrain, 'code_sources', lambda: base[:-1] + (('MODALITIES', 'x'),))
  assert _key() != key


def test_every_borrowed_function_is_in_the_code_fingerprint():
  # pretrain.py's uses of the large modules it does not key whole must be listed one by one
  # (outside resolve / main, which only build the spec whose values the key holds).
  import ast  # pylint: disable=g-import-not-at-top
  with open(pretrain.__file__) as f:
    tree = ast.parse(f.read())
  body = [n for n in tree.body if getattr(n, 'name', None) not in ('resolve', 'main')]
  used = {(n.value.id, n.attr) for b in body for n in ast.walk(b)
          if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
          and n.value.id in ('models', 'input_pipeline')}
  listed = {(mod.split('.')[-1], fn) for mod, fn in pretrain._CODE_FUNCTIONS}  # pylint: disable=protected-access
  assert used and used <= listed, used - listed


def test_cache_key_changes_with_the_format_version(monkeypatch):
  base = _key()
  monkeypatch.setattr(pretrain, 'FORMAT_VERSION', pretrain.FORMAT_VERSION + 1)
  assert _key() != base


def test_unknown_pretrain_key_is_a_one_line_error():
  with pytest.raises(ValueError, match=r'config.model.pretrain: unknown key\(s\) \[.stepz.\]'):
    _key(up={'stepz': 3})


def test_killed_write_leaves_no_file_under_the_cache_name(tmp_path):
  path = tmp_path / 'video-abc.msgpack'
  # A process killed (SIGKILL) after writing the data, before the rename.
  script = textwrap.dedent(f'''
      import os, signal, sys
      from mbcd_jax.synthetic import pretrain
      os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
      pretrain.write_atomic({str(path)!r}, b'x' * 100000)
  ''')
  r = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=python_env(), capture_output=True,
                     check=False)
  assert r.returncode == -9, r.stderr.decode()[-2000:]
  assert not path.exists()
  left = os.listdir(tmp_path)
  assert left and all(n.startswith('.') and n.endswith('.tmp') for n in left), left
  # An exception mid-write removes the temporary file too; a later write succeeds.
  with pytest.raises(ZeroDivisionError):
    _failing_write(path)
  pretrain.write_atomic(str(path), b'ok')
  assert path.read_bytes() == b'ok'


def _failing_write(path):
  real = os.replace

  def boom(*a):
    raise ZeroDivisionError
  os.replace = boom
  try:
    before = set(os.listdir(path.parent))
    try:
      pretrain.write_atomic(str(path), b'partial')
    finally:
      assert set(os.listdir(path.parent)) == before   # its temporary file is gone
  finally:
    os.replace = real


def _tiny_config(tmp_path):
  c = hac.get_config('synthetic,smoke')
  c.data.modalities = ('audio',)   # one modality keeps the test fast (video: same code)
  c.method.name = 'erm'            # AMD needs two modalities
  for m in ('video', 'audio'):
    c.model.encoders[m].bn = True
    c.model.encoders[m].pretrained = pretrain.SENTINEL
  c.model.pretrain = pretrain.pretrain_config()
  c.model.pretrain.update(dict(classes=4, styles=4, amp=1.0, steps=30, batch_size=16, lr=3e-3,
                               eval_examples=64, cache_dir=str(tmp_path)))
  return c


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp('pretrain_cache')


def test_pretrained_encoder_reproduces_its_upstream_accuracy(cache, monkeypatch):
  c = _tiny_config(cache)
  mc = pretrain.resolve(c)
  assert c.model.encoders.video.pretrained == pretrain.SENTINEL   # the run's config unchanged
  spec = input_pipeline.synthetic_spec(c)
  path = mc.encoders.audio.pretrained
  assert path == pretrain.cache_path(spec, c.model.pretrain, 'audio', c.model.encoders.audio)
  assert os.path.basename(path).startswith('audio-') and os.path.exists(path)
  # Cached: a second resolve trains nothing.
  monkeypatch.setattr(pretrain, 'pretrain_modality', lambda *a: pytest.fail('retrained'))
  assert pretrain.resolve(c).encoders.audio.pretrained == path
  # The file records the code and the machine that made it.
  made = pretrain.read_upstream(path)
  assert made['code'] == pretrain.code_fingerprint()
  assert made['environment']['libraries']['jax'] == jax.__version__

  # Load it as a DG run does (models.load_pretrained), then score the upstream task with the
  # loaded trunk and stage and the file's upstream classifier.
  task = pretrain.UpstreamTask(spec, c.model.pretrain.to_dict(), 'audio')
  model = models.build_model(mc, ('audio',), c.data.num_classes)
  params, frozen = model.init(jax.random.key(5), {'audio': task.eval_batch()[0][:2]})
  params, frozen = models.load_pretrained(model, mc, params, frozen)
  info = pretrain.read_upstream(path)
  enc = encoders_lib.build('spec_cnn', pretrain.encoder_kwargs(c.model.encoders.audio))
  variables = {'trunk': frozen['encoders']['audio']['trunk'],
               'stage': {**frozen['encoders']['audio']['stage'],
                         'params': params['encoders']['audio']['stage']},
               'head': info['head']}
  assert 'batch_stats' in variables['trunk']   # BN statistics came with the file
  acc = pretrain.upstream_accuracy(enc, nn.Dense(4), variables, task)
  assert acc == pytest.approx(info['accuracy'], abs=1e-6)
  assert acc > 25.0 + 20.0, acc   # chance is 25%


def test_train_build_loads_the_synthetic_pretrained_encoders(cache):
  c = _tiny_config(cache)
  run = train.build(c)
  state = run.init(jax.random.key(0))
  mc = pretrain.resolve(c)
  from mbcd_jax.encoders import convert  # pylint: disable=g-import-not-at-top
  trunk, stage = convert.load_pretrained('spec_cnn', mc.encoders.audio.pretrained,
                                         modality='audio',
                                         **pretrain.encoder_kwargs(c.model.encoders.audio))
  _trees.assert_trees_equal(state.student.params['encoders']['audio']['stage'],
                            stage['params'], where='stage')
  _trees.assert_trees_equal(state.student.frozen['encoders']['audio']['trunk']['params'],
                            trunk['params'], where='trunk')
  # The run knows which weights it loaded (summary.json['pretrained'] records the digest).
  path = mc.encoders.audio.pretrained
  assert run.pretrained == {'audio': {'file': path, 'digest': convert.weights_digest(path)}}


def _rewritten(path, out, edit):
  with open(path, 'rb') as f:
    blob = flax.serialization.msgpack_restore(f.read())
  edit(blob)
  out.write_bytes(flax.serialization.msgpack_serialize(blob))
  return str(out)


def test_weights_digest_sees_the_weights_not_the_metadata(cache, tmp_path):
  path = pretrain.resolve(_tiny_config(cache)).encoders.audio.pretrained
  digest = convert.weights_digest(path)
  assert len(digest) == 16 and digest == convert.weights_digest(path)

  def slower(blob):   # the same weights, trained in another wall time
    info = json.loads(blob['upstream_info'])
    blob['upstream_info'] = json.dumps({**info, 'seconds': info['seconds'] + 100.0})
  same = _rewritten(path, tmp_path / 'same.msgpack', slower)
  assert open(same, 'rb').read() != open(path, 'rb').read()
  assert convert.weights_digest(same) == digest

  def nudged(part):   # one float of the trunk or the stage one ulp away
    def edit(blob):
      flat = flax.traverse_util.flatten_dict(blob[part])
      k = sorted(flat)[-1]
      a = np.array(flat[k])
      a.flat[0] = np.nextafter(a.flat[0], np.float32(np.inf))
      flat[k] = a
      blob[part] = flax.traverse_util.unflatten_dict(flat)
    return edit
  for part in ('trunk', 'stage'):
    other = _rewritten(path, tmp_path / f'{part}.msgpack', nudged(part))
    assert convert.weights_digest(other) != digest, part
  # A PyTorch checkpoint: the file's own digest.
  pth = tmp_path / 'x.pth'
  pth.write_bytes(b'abc')
  d1 = convert.weights_digest(str(pth))
  pth.write_bytes(b'abd')
  assert convert.weights_digest(str(pth)) != d1


def test_runner_refuses_to_mix_pretrained_weights_in_one_study(cache, tmp_path):
  c = _tiny_config(cache)
  runs = experiments.plan(str(tmp_path / 'study'), c,
                          variant_list=experiments.variants('methods', ['erm']),
                          modality_sets=[('audio',)], seeds=(0, 1), targets=['human'])
  assert len(runs) == 2
  digest = convert.weights_digest(pretrain.resolve(c).encoders.audio.pretrained)

  def finish(run, summary):
    os.makedirs(run.run_dir, exist_ok=True)
    with open(os.path.join(run.run_dir, 'summary.json'), 'w') as f:
      json.dump(summary, f)

  calls, notes = [], []
  train_fn = lambda config, workdir: calls.append(workdir)
  # Finished with the weights the cache holds now: the other run trains.
  finish(runs[0], {'pretrained': {'audio': digest}})
  experiments.run_all(c, runs, train_fn=train_fn, log=notes.append)
  assert calls == [runs[1].run_dir]
  # Finished with other weights (another cache, or older code): refused before any run starts.
  finish(runs[0], {'pretrained': {'audio': '0' * 16}})
  with pytest.raises(ValueError, match=r'seed1: its audio encoder would load .*weights digest '
                     + digest + r'.*other weights \(0{16}'):
    experiments.run_all(c, runs, train_fn=train_fn, log=notes.append)
  assert calls == [runs[1].run_dir]
  # Made before runs recorded digests: cannot be checked, said in the log; the run trains.
  finish(runs[0], {})
  experiments.run_all(c, runs, train_fn=train_fn, log=notes.append)
  assert calls == [runs[1].run_dir] * 2
  assert any('1 finished run(s) predate the pretrained-weight digests' in n for n in notes)


def test_frame_cnn_file_shapes_follow_the_modality():
  from mbcd_jax.encoders import convert  # pylint: disable=g-import-not-at-top
  kw = dict(trunk_widths=(4,), trunk_strides=(1,), width=4, bn=True)
  video, _ = convert.variable_shapes('frame_cnn', 'video', **kw)
  flow, _ = convert.variable_shapes('frame_cnn', 'flow', **kw)
  kernel = ('params', 'Conv_0', 'kernel')
  assert video[kernel] == (3, 3, 3, 4) and flow[kernel] == (3, 3, 2, 4)


def test_pretraining_is_deterministic(cache, tmp_path):
  # A study's numbers hold for the weights its runs loaded; a fresh cache on another machine
  # must make the same ones (the digests docs/benchmark.md lists for the default).
  c = _tiny_config(cache)
  first = convert.weights_digest(pretrain.resolve(c).encoders.audio.pretrained)
  c.model.pretrain.cache_dir = str(tmp_path)
  again = pretrain.resolve(c).encoders.audio.pretrained
  assert os.path.dirname(again) == str(tmp_path)
  assert convert.weights_digest(again) == first


def test_shipped_files_are_used_where_they_fit_and_checked(cache, tmp_path, monkeypatch):
  c = _tiny_config(cache)
  built = pretrain.resolve(c).encoders.audio.pretrained    # (cache: nothing shipped fits)
  shipped = tmp_path / 'shipped'
  manifest = pretrain.ship({'audio': built}, str(shipped))
  assert manifest['audio']['digest'] == convert.weights_digest(built)
  monkeypatch.setattr(pretrain, 'SHIPPED_DIR', str(shipped))
  monkeypatch.setattr(pretrain, 'pretrain_modality', lambda *a: pytest.fail('trained'))
  # Fits the settings: the shipped file, whatever the cache holds.
  c.model.pretrain.cache_dir = str(tmp_path / 'empty_cache')
  assert pretrain.resolve(c).encoders.audio.pretrained == str(shipped / 'audio.msgpack')
  # source='build' ignores it (and would train here: the cache is empty).
  c.model.pretrain.source = 'build'
  with pytest.raises(pytest.fail.Exception, match='trained'):
    pretrain.resolve(c)
  # Other settings: the shipped file does not fit; the cache is asked (and would train).
  c.model.pretrain.source = 'shipped'
  c.model.pretrain.lr = 1e-2
  with pytest.raises(pytest.fail.Exception, match='trained'):
    pretrain.resolve(c)
  # The code's own edits do not unfit it (the settings key has no code fingerprint) ...
  c.model.pretrain.lr = _tiny_config(cache).model.pretrain.lr
  monkeypatch.setattr(pretrain, 'code_fingerprint', lambda sources=None: 'edited')
  assert pretrain.resolve(c).encoders.audio.pretrained == str(shipped / 'audio.msgpack')
  # ... but a damaged file is refused, naming it.
  def nudge(blob):
    flat = flax.traverse_util.flatten_dict(blob['stage'])
    k = sorted(flat)[0]
    flat[k] = np.asarray(flat[k]) + np.float32(1.0)
    blob['stage'] = flax.traverse_util.unflatten_dict(flat)
  _rewritten(str(shipped / 'audio.msgpack'), shipped / 'audio.msgpack', nudge)
  with pytest.raises(ValueError, match=r'audio\.msgpack: weights digest .* manifest\.json'):
    pretrain.resolve(c)
  c.model.pretrain.source = 'nowhere'
  with pytest.raises(ValueError, match='config.model.pretrain.source'):
    pretrain.resolve(c)


def test_the_package_ships_the_default_benchmarks_encoders():
  # The README's first run trains nothing upstream: every modality of the default config has a
  # shipped file that fits it, with the weights its manifest records.
  c = hac.get_config('synthetic')
  spec = input_pipeline.synthetic_spec(c)
  for m in c.data.modalities:
    path = pretrain.shipped_path(spec, c.model.pretrain, m, c.model.encoders[m])
    assert path is not None, f'no shipped {m} file fits configs/hac.py:synthetic'
    assert os.path.getsize(path) < 1 << 20
