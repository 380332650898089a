"""grain pipelines over a prepared store: protocol splits, batching, sharding by process,
padding, seeding, resumable iterators, worker processes, the train loop's Loader."""
import ml_collections
import numpy as np
import pytest

from mbcd_jax.data import pipeline, prepare
from tests.data import fixtures

CLIP = dict(video_frames=4, video_stride=2, flow_frames=2, flow_stride=4, crop_size=16,
            resize_short=24, audio_samples=4000)


@pytest.fixture(scope='module')
def store_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('hac')
  fixtures.make_hac(str(root / 'src'), counts={'train': 3, 'test': 2})
  prepare.run('hac', str(root / 'src'), str(root / 'prepared'),
              recipe=prepare.Recipe(short_side=24), workers=1, progress=False)
  return str(root / 'prepared')


def _data(store_dir, **kw):
  d = dict(dir=store_dir, dataset='hac', sources=('animal', 'cartoon'), target='human',
           modalities=('video', 'flow', 'audio'), hac_test_split_only=False, batch_size=2,
           eval_batch_size=4, num_workers=0, clip=CLIP)
  d.update(kw)
  return ml_collections.ConfigDict(d)


def _batches(ds, n=None):
  out = []
  for b in ds:
    out.append(b)
    if n is not None and len(out) == n:
      break
  return out


def _equal(a, b):
  return len(a) == len(b) and all(set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x)
                                  for x, y in zip(a, b))


def test_protocol_splits(store_dir):
  sizes = {s: pipeline.make_split(_data(store_dir), s, seed=0, train=False)[1]
           for s in ('train', 'val', 'test')}
  assert sizes == {'train': 6, 'val': 4, 'test': 5}   # HAC target: the whole domain
  only = _data(store_dir, hac_test_split_only=True)
  assert pipeline.make_split(only, 'test', seed=0, train=False)[1] == 2
  src = pipeline.make_source(_data(store_dir), 'val')
  assert sorted(int(src[i]['domain']) for i in range(len(src))) == [1, 1, 2, 2]
  # EPIC: the target's test split even without the flag.
  index = dict(dataset='epic', entries=[dict(domain=d, split=s) for d in ('D1', 'D2', 'D3')
                                        for s in ('train', 'test')])
  assert pipeline.select(index, 'test', ('D2', 'D3'), 'D1') == [dict(domain='D1', split='test')]
  assert len(pipeline.select(index, 'train', 'D2,D3', 'D1')) == 2


def test_train_batches_shapes_epochs_and_seed(store_dir):
  d = _data(store_dir)
  ds, n = pipeline.make_split(d, 'train', seed=0, train=True, num_epochs=2)
  batches = _batches(ds)
  assert n == 6 and len(batches) == 6   # 3 per epoch
  b = batches[0]
  assert set(b) == {'video', 'flow', 'audio', 'label', 'domain'}
  assert b['video'].shape == (2, 4, 16, 16, 3) and b['flow'].shape == (2, 2, 16, 16, 2)
  assert b['audio'].shape == (2, 257, 22, 1) and b['label'].shape == (2,)
  assert b['label'].dtype == np.int32 and b['video'].dtype == np.float32
  # Each epoch sees every example once (domain and label identify a clip here).
  src = pipeline.make_source(d, 'train')
  everything = sorted((int(src[i]['domain']), int(src[i]['label'])) for i in range(6))
  for e in range(2):
    ep = batches[3 * e:3 * e + 3]
    assert sorted(zip(np.concatenate([x['domain'] for x in ep]).tolist(),
                      np.concatenate([x['label'] for x in ep]).tolist())) == everything
  again = _batches(pipeline.make_split(d, 'train', seed=0, train=True, num_epochs=2)[0])
  other = _batches(pipeline.make_split(d, 'train', seed=1, train=True, num_epochs=2)[0])
  assert _equal(batches, again) and not _equal(batches, other)
  # Drop last: 6 examples in batches of 4 -> one batch per epoch.
  ds4, _ = pipeline.make_split(_data(store_dir, batch_size=4), 'train', seed=0, train=True)
  assert len(_batches(ds4)) == 1


def test_processes_split_every_global_batch(store_dir):
  d = _data(store_dir, batch_size=4, eval_batch_size=4)
  for split, train in (('train', True), ('test', False)):
    whole = _batches(pipeline.make_split(d, split, seed=3, train=train, num_epochs=2)[0])
    parts = [_batches(pipeline.make_split(d, split, seed=3, train=train, num_epochs=2,
                                          process_index=p, process_count=2)[0])
             for p in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for w, p0, p1 in zip(whole, *parts):
      assert p0['label'].shape == (2,)
      for k in w:
        np.testing.assert_array_equal(np.concatenate([p0[k], p1[k]]), w[k])
  with pytest.raises(ValueError, match='not divisible'):
    pipeline.make_split(_data(store_dir, batch_size=3), 'train', seed=0, train=True,
                        process_count=2)


def test_eval_is_deterministic_and_padded(store_dir):
  d = _data(store_dir)
  ds, n = pipeline.make_split(d, 'test', seed=0, train=False)
  a, b = _batches(ds), _batches(ds)
  assert n == 5 and len(a) == 2 and _equal(a, b)
  np.testing.assert_array_equal(a[0]['mask'], [1, 1, 1, 1])
  np.testing.assert_array_equal(a[1]['mask'], [1, 0, 0, 0])
  assert a[1]['mask'].dtype == np.float32 and a[1]['video'].shape[0] == 4
  assert (np.concatenate([x['domain'] for x in a])[:5] == 0).all()   # human = domain 0
  # Another seed does not change eval batches.
  assert _equal(a, _batches(pipeline.make_split(d, 'test', seed=9, train=False)[0]))


def test_iterator_state_resumes_mid_epoch(store_dir):
  d = _data(store_dir)
  ds, _ = pipeline.make_split(d, 'train', seed=0, train=True, num_epochs=2)
  it = iter(ds)
  next(it), next(it)
  state = it.get_state()
  rest = [next(it) for _ in range(3)]
  it2 = iter(pipeline.make_split(d, 'train', seed=0, train=True, num_epochs=2)[0])
  it2.set_state(state)
  assert _equal(rest, [next(it2) for _ in range(3)])


def test_worker_processes_give_the_same_batches(store_dir):
  d = _data(store_dir)
  ref = _batches(pipeline.make_split(d, 'train', seed=0, train=True)[0])
  it = iter(pipeline.make_split(_data(store_dir, num_workers=2), 'train', seed=0, train=True)[0])
  got = [next(it) for _ in range(len(ref))]
  del it
  assert _equal(ref, got)


def test_modality_subset(store_dir):
  ds, _ = pipeline.make_split(_data(store_dir, modalities=('flow', 'audio')), 'val', seed=0,
                              train=False)
  b = next(iter(ds))
  assert set(b) == {'flow', 'audio', 'label', 'domain', 'mask'}


def test_missing_store_is_one_clear_line(tmp_path):
  for where in (str(tmp_path / 'nope'), str(tmp_path)):
    with pytest.raises(ValueError) as e:
      pipeline.make_split(_data(where), 'train', seed=0, train=True)
    msg = str(e.value)
    assert '\n' not in msg and 'python -m mbcd_jax.data.prepare --dataset=hac' in msg
    assert 'configs/hac.py:synthetic' in msg and where in msg
  with pytest.raises(ValueError, match='config.data.dir is not set'):
    pipeline.make_split(_data(None), 'train', seed=0, train=True)


def test_train_loop_loader(store_dir):
  """The lead's entry point: input_pipeline.make_loader with data.source='prepared'."""
  from mbcd_jax import input_pipeline
  config = ml_collections.ConfigDict(dict(seed=0, data=_data(store_dir, source='prepared')))
  train = input_pipeline.make_loader(config, 'train')
  assert train.num_examples == 6 and train.num_batches == 3
  batches = list(train.epoch(0))
  assert len(batches) == 3 and batches[0]['video'].shape == (2, 4, 16, 16, 3)
  assert _equal(batches[1:], list(train.epoch(0, start_batch=1)))
  test = input_pipeline.make_loader(config, 'test')
  tb = list(test.epoch(0))
  np.testing.assert_array_equal(np.concatenate([b['mask'] for b in tb]), [1] * 5 + [0] * 3)
