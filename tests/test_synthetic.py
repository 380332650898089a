"""The embedded benchmark: deterministic, right format, shifted domains, imbalance knobs."""
import numpy as np
import pytest

from mbcd_jax import input_pipeline
from mbcd_jax.data import synthetic

SPEC = synthetic.SyntheticSpec(train_per_domain=40, test_per_domain=10,
                               video_shape=(4, 16, 16), flow_shape=(2, 16, 16),
                               audio_shape=(16, 16))
MODS = ('video', 'flow', 'audio')


def test_records_format_and_determinism():
  src = synthetic.SyntheticSource(SPEC, ('animal', 'cartoon'), 'train', MODS)
  assert len(src) == 80
  r1, r2 = src[13], src[13]
  assert r1['video'].shape == (4, 16, 16, 3) and r1['video'].dtype == np.uint8
  assert r1['flow'].shape == (2, 16, 16, 2) and r1['flow'].dtype == np.uint8
  assert r1['audio'].shape == (16, 16) and r1['audio'].dtype == np.float32
  for k in r1:
    np.testing.assert_array_equal(r1[k], r2[k])
  assert int(src[0]['domain']) == 1 and int(src[79]['domain']) == 2
  assert not np.array_equal(src[0]['video'], src[1]['video'])


def test_target_split_all_is_train_plus_test():
  assert len(synthetic.SyntheticSource(SPEC, ('human',), 'all', MODS)) == 50
  with pytest.raises(ValueError, match='unknown synthetic domain'):
    synthetic.SyntheticSource(SPEC, ('robot',), 'train', MODS)


def _centroid_acc(train, test, m):
  xs = lambda s: np.stack([input_pipeline.normalize_record(s[i])[m].ravel()
                           for i in range(len(s))])
  ys = lambda s: np.array([int(s[i]['label']) for i in range(len(s))])
  xtr, ytr, xte, yte = xs(train), ys(train), xs(test), ys(test)
  mu = np.stack([xtr[ytr == c].mean(0) for c in range(SPEC.num_classes)])
  mu -= mu.mean(0)
  return float((np.argmax(xte @ mu.T, 1) == yte).mean())


def test_dominant_modality_fits_sources_but_transfers_worse():
  """Nearest-centroid probe: video is near-perfect in-domain and drops most on the new domain."""
  spec = synthetic.SyntheticSpec(train_per_domain=60, test_per_domain=30,
                                 video_shape=(4, 16, 16), flow_shape=(2, 16, 16),
                                 audio_shape=(16, 16))
  tr = synthetic.SyntheticSource(spec, ('animal', 'cartoon'), 'train', MODS)
  val = synthetic.SyntheticSource(spec, ('animal', 'cartoon'), 'test', MODS)
  te = synthetic.SyntheticSource(spec, ('human',), 'all', MODS)
  acc = {m: (_centroid_acc(tr, val, m), _centroid_acc(tr, te, m)) for m in ('video', 'audio')}
  assert acc['video'][0] > acc['audio'][0]                         # video learns faster
  assert acc['video'][0] - acc['video'][1] > acc['audio'][0] - acc['audio'][1]   # ...transfers worse
  assert acc['video'][1] < acc['video'][0] - 0.15                  # a real domain shift


def test_loader_batches_are_model_ready_and_sharded_by_process():
  src = synthetic.SyntheticSource(SPEC, ('animal',), 'train', MODS)
  full = input_pipeline.Loader(src, input_pipeline.normalize_record, 8, train=True, seed=3)
  halves = [input_pipeline.Loader(src, input_pipeline.normalize_record, 8, train=True, seed=3,
                                  process_index=p, process_count=2) for p in range(2)]
  b = next(full.epoch(1))
  assert b['video'].dtype == np.float32 and b['audio'].shape == (8, 16, 16, 1)
  parts = [next(h.epoch(1)) for h in halves]
  np.testing.assert_array_equal(np.concatenate([p['label'] for p in parts]), b['label'])
  np.testing.assert_array_equal(np.concatenate([p['video'] for p in parts]), b['video'])
  # Another epoch is another order; resuming mid-epoch gives the same batch as iterating.
  assert not np.array_equal(next(full.epoch(2))['label'], b['label'])
  it = full.epoch(1)
  next(it)
  np.testing.assert_array_equal(next(it)['video'], next(full.epoch(1, start_batch=1))['video'])


def test_eval_loader_pads_and_masks():
  src = synthetic.SyntheticSource(SPEC, ('human',), 'test', MODS)   # 10 examples
  ld = input_pipeline.Loader(src, input_pipeline.normalize_record, 4, train=False)
  batches = list(ld.epoch(0))
  assert len(batches) == 3
  assert [float(b['mask'].sum()) for b in batches] == [4.0, 4.0, 2.0]


def test_per_modality_shift_knob():
  """shift_flow=0 removes flow's domain style only; the default keeps the benchmark unchanged."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  no_flow_shift = dataclasses.replace(SPEC, shift_flow=0.0)
  w0 = synthetic._World(no_flow_shift, MODS)  # pylint: disable=protected-access
  w1 = synthetic._World(SPEC, MODS)  # pylint: disable=protected-access
  for d in range(3):
    gain, background, offset = w0.style['flow', d]
    assert gain == 1.0 and not background.any() and not np.any(offset)
    np.testing.assert_array_equal(w0.style['video', d][1], w1.style['video', d][1])
  assert w1.style['flow', 0][0] != 1.0
  # Same class patterns either way: only the style changed.
  np.testing.assert_array_equal(w0.shared['flow'], w1.shared['flow'])
