"""The train loop's input pipeline on a prepared store and on synthetic data: protocol splits,
batching, slicing by process, padding, seeding, resuming, worker processes, config fields."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from mbcd_jax import config_lib, input_pipeline
from mbcd_jax.data import synthetic
from mbcd_jax.data import pipeline, prepare, transforms
from tests.data import fixtures

import _trees  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIP = dict(video_frames=4, video_stride=2, flow_frames=2, flow_stride=4, crop_size=16,
            resize_short=24, audio_samples=4000)


@pytest.fixture(scope='module')
def store_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('hac')
  fixtures.make_hac(str(root / 'src'), counts={'train': 3, 'test': 2})
  prepare.run('hac', str(root / 'src'), str(root / 'prepared'),
              recipe=prepare.Recipe(short_side=24), workers=1, progress=False)
  return str(root / 'prepared')


def _config(store_dir, seed=0, **data):
  c = config_lib.base_config()
  c.seed = seed
  c.data.source, c.data.dir = 'prepared', store_dir
  c.data.batch_size, c.data.eval_batch_size = 2, 4
  for k, v in CLIP.items():
    c.data.clip[k] = v
  for k, v in data.items():
    c.data[k] = v
  return c


def _loader(store_dir, split, *, seed=0, process_index=0, process_count=1, **data):
  return input_pipeline.make_loader(_config(store_dir, seed, **data), split,
                                    process_index=process_index, process_count=process_count)


def _equal(a, b):
  return len(a) == len(b) and all(set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x)
                                  for x, y in zip(a, b))


def _assert_processes_give_global_batches(make, epochs):
  """``make(p, P)`` -> Loader: the local batches of processes 0 and 1 of 2, concatenated, are the
  batches of process 0 of 1."""
  whole, parts = make(0, 1), [make(p, 2) for p in range(2)]
  for e in epochs:
    w = list(whole.epoch(e))
    p0, p1 = (list(ld.epoch(e)) for ld in parts)
    assert len(p0) == len(p1) == len(w) > 0
    for wb, b0, b1 in zip(w, p0, p1):
      assert len(b0['label']) == len(wb['label']) // 2
      assert set(b0) == set(b1) == set(wb)
      for k in wb:
        np.testing.assert_array_equal(np.concatenate([b0[k], b1[k]]), wb[k], err_msg=k)


# --------------------------------------------------------------------------- prepared store
def test_protocol_splits(store_dir):
  sizes = {s: _loader(store_dir, s).num_examples for s in ('train', 'val', 'test')}
  assert sizes == {'train': 6, 'val': 4, 'test': 5}   # HAC target: the whole domain
  assert _loader(store_dir, 'test', hac_test_split_only=True).num_examples == 2
  src = _loader(store_dir, 'val').source
  assert sorted(int(src[i]['domain']) for i in range(len(src))) == [1, 1, 2, 2]
  # EPIC: the target's test split even without the flag.
  index = dict(dataset='epic', entries=[dict(domain=d, split=s) for d in ('D1', 'D2', 'D3')
                                        for s in ('train', 'test')])
  assert pipeline.select(index, 'test', ('D2', 'D3'), 'D1') == [dict(domain='D1', split='test')]
  assert len(pipeline.select(index, 'train', 'D2,D3', 'D1')) == 2


def test_train_batches_shapes_epochs_and_seed(store_dir):
  ld = _loader(store_dir, 'train')
  assert ld.num_examples == 6 and ld.num_batches == 3 and ld.random_transform
  epochs = [list(ld.epoch(e)) for e in range(2)]
  assert [len(b) for b in epochs] == [3, 3]
  b = epochs[0][0]
  assert set(b) == {'video', 'flow', 'audio', 'label', 'domain'}
  assert b['video'].shape == (2, 4, 16, 16, 3) and b['flow'].shape == (2, 2, 16, 16, 2)
  assert b['audio'].shape == (2, 257, 22, 1) and b['label'].shape == (2,)
  assert b['label'].dtype == np.int32 and b['video'].dtype == np.float32
  # Each epoch sees every example once (domain and label identify a clip here).
  src = ld.source
  everything = sorted((int(src[i]['domain']), int(src[i]['label'])) for i in range(6))
  for ep in epochs:
    assert sorted(zip(np.concatenate([x['domain'] for x in ep]).tolist(),
                      np.concatenate([x['label'] for x in ep]).tolist())) == everything
  assert not _equal(epochs[0], epochs[1])
  again = list(_loader(store_dir, 'train').epoch(0))
  other = list(_loader(store_dir, 'train', seed=1).epoch(0))
  assert _equal(epochs[0], again) and not _equal(epochs[0], other)
  # Drop last: 6 examples in batches of 4 -> one batch per epoch.
  assert len(list(_loader(store_dir, 'train', batch_size=4).epoch(0))) == 1


def test_augmentation_is_seeded_by_global_position(store_dir):
  """Row r of process p's local batch k is global position k*B + p*b + r of the epoch, and its
  random crop/flip/audio mask come from example_rng(seed, epoch, position)."""
  seed, epoch = 5, 1
  ld = _loader(store_dir, 'train', seed=seed, batch_size=4, process_index=1, process_count=2)
  batch = next(ld.epoch(epoch))          # local rows 0, 1 = global positions 2, 3
  perm = np.random.default_rng([seed, epoch]).permutation(ld.num_examples)
  rec = ld.source[int(perm[3])]
  want = ld.transform(dict(rec), input_pipeline.example_rng(seed, epoch, 3))
  for k in want:
    np.testing.assert_array_equal(batch[k][1], want[k], err_msg=k)
  # ... and the randomness matters: another position's draw gives another example.
  other = ld.transform(dict(rec), input_pipeline.example_rng(seed, epoch, 1))
  assert not np.array_equal(other['video'], want['video'])


def test_processes_split_every_global_batch(store_dir):
  """Random transforms on (train): 2 processes give the global batches of 1."""
  for split, epochs in (('train', (0, 1)), ('test', (0,))):
    _assert_processes_give_global_batches(
        lambda p, n, split=split: _loader(store_dir, split, seed=3, batch_size=4,
                                          eval_batch_size=4, process_index=p, process_count=n),
        epochs)
  with pytest.raises(ValueError, match='not divisible'):
    _loader(store_dir, 'train', batch_size=3, process_count=2)


def test_eval_is_deterministic_and_padded(store_dir):
  ld = _loader(store_dir, 'test')
  assert not ld.random_transform
  a, b = list(ld.epoch(0)), list(ld.epoch(0))
  assert ld.num_examples == 5 and len(a) == 2 and _equal(a, b)
  np.testing.assert_array_equal(a[0]['mask'], [1, 1, 1, 1])
  np.testing.assert_array_equal(a[1]['mask'], [1, 0, 0, 0])
  assert a[1]['mask'].dtype == np.float32 and a[1]['video'].shape[0] == 4
  assert (np.concatenate([x['domain'] for x in a])[:5] == 0).all()   # human = domain 0
  # Another seed or epoch does not change eval batches.
  assert _equal(a, list(_loader(store_dir, 'test', seed=9).epoch(3)))


def test_resume_mid_epoch(store_dir):
  ld = _loader(store_dir, 'train')
  full = list(ld.epoch(1))
  assert _equal(full[1:], list(ld.epoch(1, start_batch=1)))   # the train loop's resume
  it = ld.epoch(1)
  next(it)
  state = it.get_state()
  it2 = _loader(store_dir, 'train').epoch(1)
  it2.set_state(state)
  assert _equal(full[1:], list(it2))


_WORKERS_SCRIPT = """
import dataclasses
import sys
from tests.data import test_pipeline as t
ref = list(t._loader(sys.argv[1], 'train').epoch(0))
ld = t._loader(sys.argv[1], 'train', num_workers=2)
got = list(ld.epoch(0))          # still referenced at exit
it = ld.epoch(1)
next(it)
del it                           # stopped part way
class Repeated:                   # a long epoch: the workers are busy at exit
  def __init__(self, source): self.source = source
  def __len__(self): return 50 * len(self.source)
  def __getitem__(self, i): return self.source[i % len(self.source)]
running = dataclasses.replace(ld, source=Repeated(ld.source)).epoch(0)
next(running)                    # part way and still running at exit
print('same' if t._equal(ref, got) else 'different', len(got))
"""

# Loaded by every interpreter of the run (the spawned workers too): shared-memory blocks get a
# prefix of their own, so blocks of other programs on the machine do not count.
_SHM_PREFIX_SITE = """
from multiprocessing import shared_memory
shared_memory._SHM_NAME_PREFIX = '/psm_{prefix}_'
shared_memory._SHM_SAFE_NAME_LENGTH = 64   # Linux allows 255; the default 14 fits no prefix
"""


def test_worker_processes_give_the_same_batches_and_no_leak(store_dir, tmp_path):
  """2 grain worker processes: the in-process batches, and no shared memory left in /dev/shm
  at exit, also with an epoch still running (a separate interpreter, so its exit can be
  watched)."""
  prefix = f'mbcdtest{os.getpid()}'
  (tmp_path / 'sitecustomize.py').write_text(_SHM_PREFIX_SITE.format(prefix=prefix))
  pythonpath = os.pathsep.join([str(tmp_path), ROOT, os.path.join(ROOT, 'tests')])
  r = subprocess.run([sys.executable, '-c', _WORKERS_SCRIPT, store_dir], cwd=ROOT,
                     capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, PYTHONPATH=pythonpath, JAX_PLATFORMS='cpu'))
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.split() == ['same', '3'], r.stdout
  if os.path.isdir('/dev/shm'):   # Linux; the blocks' names are ours (prefix), so none may stay
    left = [n for n in os.listdir('/dev/shm') if n.startswith(f'psm_{prefix}_')]
    assert not left, f'shared memory left after exit: {left}'
  assert 'leaked shared_memory' not in r.stderr, r.stderr[-3000:]
  assert "no attribute 'mmap'" not in r.stderr, r.stderr[-3000:]


def _val_batches(store_dir, modalities, **clip):
  c = _config(store_dir, modalities=modalities)
  for k, v in clip.items():
    c.data.clip[k] = v
  return list(input_pipeline.make_loader(c, 'val').epoch(0))


def test_modality_subset(store_dir):
  """A subset's batches are the full loader's without video: the same examples, flow clips,
  labels and mask. Audio too where it can be: without video, HAC's audio window follows the
  flow clip's frames (ClipTransform, as the peers), so it is the full loader's audio exactly
  when flow samples the video's frames."""
  mods = ('flow', 'audio')
  sub, full = _val_batches(store_dir, mods), _val_batches(store_dir, ('video',) + mods)
  assert len(sub) == len(full) > 0
  for i, (b, f) in enumerate(zip(sub, full)):
    assert set(b) == {'flow', 'audio', 'label', 'domain', 'mask'} and 'video' in f
    _trees.assert_trees_equal({k: v for k, v in b.items() if k != 'audio'},
                              {k: f[k] for k in b if k != 'audio'}, where=f'batch {i}')
    assert (b['audio'].shape, b['audio'].dtype) == (f['audio'].shape, f['audio'].dtype)
  # CLIP's flow clip spans other frames than its video clip: another audio window.
  assert any(not np.array_equal(b['audio'], f['audio']) for b, f in zip(sub, full))
  frames = dict(flow_frames=CLIP['video_frames'], flow_stride=CLIP['video_stride'])
  sub = _val_batches(store_dir, mods, **frames)
  full = _val_batches(store_dir, ('video',) + mods, **frames)
  assert len(sub) == len(full)
  for i, (b, f) in enumerate(zip(sub, full)):
    _trees.assert_trees_equal(b, {k: f[k] for k in b}, where=f'batch {i}, flow on video frames')


def test_missing_store_is_one_clear_line(tmp_path):
  for where in (str(tmp_path / 'nope'), str(tmp_path)):
    with pytest.raises(ValueError) as e:
      _loader(where, 'train')
    msg = str(e.value)
    assert '\n' not in msg and 'python -m mbcd_jax.data.prepare --dataset=hac' in msg
    assert 'configs/hac.py:synthetic' in msg and where in msg
  with pytest.raises(ValueError, match='config.data.dir is not set'):
    _loader(None, 'train')


# --------------------------------------------------------------------------- synthetic data
SPEC = synthetic.SyntheticSpec(train_per_domain=10, test_per_domain=5, video_shape=(2, 8, 8),
                               flow_shape=(2, 8, 8), audio_shape=(8, 8))


def _jitter(rec, rng):
  """A random transform for synthetic records: normalise, then a random flip and noise."""
  out = input_pipeline.normalize_record(rec)
  if rng.random() < 0.5:
    out['video'] = out['video'][:, :, ::-1]
  out['audio'] = out['audio'] + rng.normal(size=out['audio'].shape).astype(np.float32)
  return out


def test_synthetic_random_transform_processes_give_global_batches():
  src = synthetic.SyntheticSource(SPEC, ('animal', 'cartoon'), 'train', ('video', 'audio'))
  _assert_processes_give_global_batches(
      lambda p, n: input_pipeline.Loader(src, _jitter, 4, train=True, seed=2, process_index=p,
                                         process_count=n, random_transform=True), (0, 1))


def test_synthetic_make_loader_processes_give_global_batches():
  c = config_lib.base_config()
  c.data.synthetic = {k: v for k, v in dataclasses.asdict(SPEC).items()
                      if k not in ('num_classes', 'domains')}
  c.data.batch_size, c.data.eval_batch_size = 4, 6
  for split, epochs in (('train', (0, 2)), ('test', (0,))):
    _assert_processes_give_global_batches(
        lambda p, n, split=split: input_pipeline.make_loader(c, split, process_index=p,
                                                             process_count=n), epochs)


# --------------------------------------------------------------------------- config fields
def test_clip_and_read_threads_are_declared_config_fields(monkeypatch):
  d = config_lib.base_config().data
  assert d.read_threads == 2
  declared = {k: tuple(v) if isinstance(v, (list, tuple)) else v
              for k, v in d.clip.to_dict().items()}
  assert declared == dataclasses.asdict(transforms.ClipConfig())   # the recipe's defaults
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=fv)
  argv = ['prog', f'--config={os.path.join(ROOT, "configs", "hac.py")}',
          '--config.data.clip.crop_size=112', '--config.data.clip.area_range=(0.2,1.0)',
          '--config.data.read_threads=3']
  monkeypatch.setattr(sys, 'argv', argv)   # config_flags finds the overrides in sys.argv
  fv(argv)
  clip = transforms.ClipConfig.from_config(fv.config.data.clip)
  assert clip.crop_size == 112 and clip.area_range == (0.2, 1.0) and clip.video_frames == 32
  assert fv.config.data.read_threads == 3
  with pytest.raises(ValueError, match='read_threads'):
    input_pipeline.Loader([0, 1], lambda r: r, 2, train=True, read_threads=0)


# --------------------------------------------------------------------------- normalise on device
def _device_normalized(batches):
  import jax  # pylint: disable=g-import-not-at-top
  fn = jax.jit(input_pipeline.normalize_frames)
  return [{k: np.asarray(v) for k, v in fn(b).items()} for b in batches]


def test_normalize_on_device_gives_the_host_values_bit_for_bit(store_dir):
  """uint8 frames from the loader + the jitted normalisation = the default float32 batches,
  train (random crops / flips) and eval; the host-side twin (analyses) too."""
  for split, epoch in (('train', 1), ('val', 0)):
    ref = list(_loader(store_dir, split).epoch(epoch))
    raw = list(_loader(store_dir, split, normalize_on_device=True).epoch(epoch))
    assert raw[0]['video'].dtype == raw[0]['flow'].dtype == np.uint8
    assert ref[0]['video'].dtype == np.float32
    assert _equal(ref, _device_normalized(raw))
    assert _equal(ref, [input_pipeline.normalize_frames_host(b) for b in raw])


def test_normalize_on_device_synthetic_and_float_passthrough():
  c = config_lib.base_config()
  c.data.synthetic = {k: v for k, v in dataclasses.asdict(SPEC).items()
                      if k not in ('num_classes', 'domains')}
  c.data.batch_size = 4
  ref = list(input_pipeline.make_loader(c, 'train').epoch(0))
  c.data.normalize_on_device = True
  raw = list(input_pipeline.make_loader(c, 'train').epoch(0))
  assert raw[0]['video'].dtype == np.uint8
  assert _equal(ref, _device_normalized(raw))
  assert _equal(ref, _device_normalized(ref))   # float frames pass unchanged


def test_normalize_on_device_is_a_checked_bool():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from configs import hac  # pylint: disable=g-import-not-at-top
  assert config_lib.base_config().data.normalize_on_device is False
  c = config_lib.normalize(hac.get_config('synthetic'))
  config_lib.validate(c)
  c = ml_collections.ConfigDict(c.to_dict(), type_safe=False)   # as a hand-built config could
  c.data.normalize_on_device = 1
  with pytest.raises(ValueError, match='config.data.normalize_on_device must be True or False'):
    config_lib.validate(c)


def test_normalize_on_device_train_and_eval_steps_are_unchanged():
  """The run's jitted train and eval steps on uint8 batches: the default run's numbers exactly
  (embedded benchmark, smoke encoders, video + audio, ERM, one step from the same init)."""
  import jax  # pylint: disable=g-import-not-at-top
  from configs import hac  # pylint: disable=g-import-not-at-top
  from mbcd_jax import sharding, train  # pylint: disable=g-import-not-at-top
  outs, init = [], None
  for on_device in (False, True):
    c = hac.get_config('synthetic,smoke')
    c.method = config_lib.method_config('erm')   # the step's wiring is the same; compiles faster
    c.data.modalities = ('video', 'audio')
    c.data.normalize_on_device = on_device
    run = train.build(c)
    init = init or run.init(jax.random.key(0))   # one init: the same start for both
    state = jax.tree.map(jax.numpy.copy, init)  # the train step donates its state
    batch = next(run.loaders['train'].epoch(0))
    assert (batch['video'].dtype == np.uint8) == on_device
    ev = run.eval_step(state, sharding.shard_batch(next(run.loaders['val'].epoch(0)), run.mesh))
    state, metrics = run.train_step(state, sharding.shard_batch(batch, run.mesh),
                                    jax.random.key(1))
    outs.append(jax.device_get((metrics, ev, state.student.params)))
  _trees.assert_trees_equal(outs[1], outs[0])
