"""The reliability suites on a tiny prepared HAC store: raw-level corruptions through the eval
transform, the HAC-C reader, a prepared store as the OOD set."""
import os
import types
import wave

import numpy as np
import pytest

from mbcd_jax import config_lib
from mbcd_jax.analysis import corruption, ood
from mbcd_jax.data import pipeline, prepare, store
from tests.data import fixtures

CLIP = dict(video_frames=4, video_stride=2, flow_frames=2, flow_stride=4, crop_size=16,
            resize_short=24, audio_samples=4000)


@pytest.fixture(scope='module')
def store_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('hac')
  fixtures.make_hac(str(root / 'src'), counts={'train': 1, 'test': 1})
  prepare.run('hac', str(root / 'src'), str(root / 'prepared'),
              recipe=prepare.Recipe(short_side=24), workers=1, progress=False)
  return str(root / 'prepared')


def _data(store_dir):
  c = config_lib.base_config()
  c.data.source, c.data.dir, c.data.dataset = 'prepared', store_dir, 'hac'
  c.data.sources, c.data.target = ('animal', 'cartoon'), 'human'
  for k, v in CLIP.items():
    c.data.clip[k] = v
  return c.data


def test_corruptions_reach_the_eval_transform_as_if_every_frame_were_corrupted(store_dir):
  d = _data(store_dir)
  src, tf = pipeline.make_source(d, 'test'), pipeline.make_transform(d, train=False)
  rec = src[0]
  for c in corruption.make_corruptions(('video', 'flow'), None):
    got = tf(corruption.CorruptedSource(src, tf, c, 4, seed=1)[0])
    whole = dict(rec)
    m = c.modality
    frames = store.decode_frames(rec, m, np.arange(store.num_frames(rec, m)))
    for k in (f'{m}_jpeg', f'{m}_offsets', f'{m}_shape'):
      whole.pop(k)
    whole[m] = np.stack([corruption.to_uint8(c.apply(f, 4, np.random.default_rng([1, 4, 0, j])))
                         for j, f in enumerate(frames)])
    np.testing.assert_array_equal(got[m], tf(whole)[m], err_msg=c.label)
    assert not np.array_equal(got[m], tf(rec)[m])
  noise = np.round(3000 * np.sin(np.arange(777) / 3.0)).astype(np.int16)
  wind = corruption.make_corruptions(('audio',), noise)[0]
  got = tf(corruption.CorruptedSource(src, tf, wind, 5)[0])['audio']
  want = dict(rec, audio=corruption.wind_overlay(rec['audio'], noise, 8))
  np.testing.assert_array_equal(got, tf(want)['audio'])


def _write_stereo(path, left, right, rate=16000):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with wave.open(path, 'wb') as w:
    w.setnchannels(2)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(np.stack([left, right], 1).astype('<i2').tobytes())


def test_hac_c_tree_is_read_in_the_benchmarks_layout(store_dir, tmp_path):
  d = _data(store_dir)
  d.modalities = ('video', 'audio')
  index = store.load_index(d.dir, 'hac')
  entries = pipeline.select(index, 'test', d.sources, d.target)
  src = pipeline.PreparedSource(d.dir, entries, ('video', 'audio'))
  stems = [e['clip_id'].split('-', 2)[2] for e in entries]
  frames = fixtures.video_frames(range(30), 2)
  left = np.arange(-500, 500, dtype=np.int16)
  for s in stems:
    fixtures.write_mp4(str(tmp_path / 'human' / 'videos' / 'defocus_blur' / f'{s}.mp4'), frames,
                       fixtures.HAC_FPS)
    _write_stereo(str(tmp_path / 'human' / 'audio' / 'wind' / f'{s}.wav'), left, -left)
  video = corruption.HacCSource(src, entries, str(tmp_path), 'video', short_side=24)
  audio = corruption.HacCSource(src, entries, str(tmp_path), 'audio')
  assert video.path(0).endswith(os.path.join('human', 'videos', 'defocus_blur',
                                             stems[0] + '.mp4'))
  r = video[0]
  assert r['video'].shape[0] == 30 and 'video_jpeg' not in r
  np.testing.assert_array_equal(r['video'], prepare.decode_mp4(video.path(0), 24))
  np.testing.assert_array_equal(audio[0]['audio'], left)   # channel 0, as the benchmark
  tf = pipeline.make_transform(d, train=False)
  assert tf(r)['video'].shape == tf(src[0])['video'].shape


def test_a_prepared_store_as_the_ood_set(store_dir):
  d = _data(store_dir)
  d.dataset = 'epic'   # an EPIC model's view: HAC is the OOD dataset
  trained = types.SimpleNamespace(config=types.SimpleNamespace(data=d))
  name, src, tf = ood.prepared_ood(trained, store_dir)
  assert name == 'hac:human+animal+cartoon' and len(src) == 3
  assert tf.dataset == 'hac' and tf.cfg.crop_size == 16 and not tf.train
  ex = tf(src[0])
  assert ex['video'].shape == (4, 16, 16, 3) and ex['audio'].ndim == 3
  with pytest.raises(ValueError, match='not a hac domain'):
    ood.prepared_ood(trained, store_dir, ('D1',))
