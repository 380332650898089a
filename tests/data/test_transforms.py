"""The clip recipe: temporal sampling, crops, flips, normalisation, audio features."""
import numpy as np
import pytest

from mbcd_jax.data import spectrogram, store, transforms

TINY = transforms.ClipConfig(video_frames=4, video_stride=2, flow_frames=2, flow_stride=4,
                             crop_size=16, resize_short=24, audio_samples=4000)


def _record(t=40, tf=20, h=24, w=36, audio=None, codec='raw', label=3, domain=1, seed=0):
  rng = np.random.default_rng(seed)
  rec = {}
  rec.update(store.encode_frames('video', rng.integers(0, 256, (t, h, w, 3), np.uint8), codec))
  rec.update(store.encode_frames('flow', rng.integers(0, 256, (tf, h, w, 2), np.uint8), codec))
  rec['audio'] = (audio if audio is not None else
                  rng.integers(-20000, 20000, 16000).astype(np.int16))
  rec['label'], rec['domain'], rec['num_frames'] = np.int32(label), np.int32(domain), np.int32(t)
  return store.unpack(store.pack(rec))


def test_sample_indices_train_test_and_wrap():
  rng = np.random.default_rng(0)
  starts = {int(transforms.sample_indices(100, 32, 2, rng)[0]) for _ in range(2000)}
  assert min(starts) == 0 and max(starts) == 100 - 64 and len(starts) == 37
  np.testing.assert_array_equal(np.diff(transforms.sample_indices(100, 32, 2, rng)), 2)
  # Test: the centred window, int((T - 64 + 1) / 2).
  assert transforms.sample_indices(100, 32, 2, None)[0] == 18
  # Shorter than the window: start 0 and wrap around (mmaction 'loop').
  np.testing.assert_array_equal(transforms.sample_indices(10, 8, 2, rng),
                                [0, 2, 4, 6, 8, 0, 2, 4])
  np.testing.assert_array_equal(transforms.sample_indices(10, 8, 2, None),
                                [0, 2, 4, 6, 8, 0, 2, 4])


def test_random_resized_crop_box_ranges():
  rng = np.random.default_rng(1)
  areas, ratios = [], []
  for _ in range(500):
    x0, y0, x1, y1 = transforms.random_resized_crop_box(256, 340, rng)
    assert 0 <= x0 < x1 <= 340 and 0 <= y0 < y1 <= 256
    areas.append((x1 - x0) * (y1 - y0) / (256 * 340))
    ratios.append((x1 - x0) / (y1 - y0))
  assert 0.07 < min(areas) < 0.15 and max(areas) > 0.7
  assert min(ratios) > 0.73 and max(ratios) < 1.36
  # Impossible tries fall back to the centred square.
  assert transforms.random_resized_crop_box(10, 30, rng, area_range=(5.0, 5.0)) == (10, 0, 20, 10)


def test_flip_mirrors_and_inverts_flow_x():
  rng_frames = np.random.default_rng(0).integers(0, 256, (2, 24, 36, 2), np.uint8)
  cfg_no = transforms.ClipConfig(crop_size=16, resize_short=24, flip_prob=0.0)
  cfg_yes = transforms.ClipConfig(crop_size=16, resize_short=24, flip_prob=1.0)
  a = transforms.spatial(rng_frames, cfg_no, np.random.default_rng(5), is_flow=True)
  b = transforms.spatial(rng_frames, cfg_yes, np.random.default_rng(5), is_flow=True)
  np.testing.assert_array_equal(b[..., 0], 255 - a[:, :, ::-1, 0])
  np.testing.assert_array_equal(b[..., 1], a[:, :, ::-1, 1])
  rgb = rng_frames[..., :1].repeat(3, -1)
  c = transforms.spatial(rgb, cfg_yes, np.random.default_rng(5), is_flow=False)
  d = transforms.spatial(rgb, cfg_no, np.random.default_rng(5), is_flow=False)
  np.testing.assert_array_equal(c, d[:, :, ::-1])   # RGB is only mirrored


def test_centre_crop_is_exact_and_resize_short_applies():
  frames = np.arange(24 * 36, dtype=np.int64).reshape(1, 24, 36, 1) % 251
  frames = frames.astype(np.uint8).repeat(3, -1)
  out = transforms.spatial(frames, TINY, None, is_flow=False)
  np.testing.assert_array_equal(out, frames[:, 4:20, 10:26])
  # Stored at another size: resized to short side 24 first (48 x 72 -> 24 x 36).
  big = np.zeros((1, 48, 72, 3), np.uint8)
  assert transforms.spatial(big, TINY, None, is_flow=False).shape == (1, 16, 16, 3)


@pytest.mark.parametrize('codec', ['raw', 'jpeg'])
def test_example_shapes_ranges_and_determinism(codec):
  rec = _record(codec=codec)
  train = transforms.ClipTransform('epic', ('video', 'flow', 'audio'), TINY, train=True)
  test = transforms.ClipTransform('epic', ('video', 'flow', 'audio'), TINY, train=False)
  for fn, args in ((train, (np.random.default_rng(0),)), (test, ())):
    ex = fn(rec, *args)
    assert ex['video'].shape == (4, 16, 16, 3) and ex['video'].dtype == np.float32
    assert ex['flow'].shape == (2, 16, 16, 2) and ex['flow'].dtype == np.float32
    assert ex['audio'].shape == (257, 1 + (4000 - 512) // 159, 1)
    assert ex['audio'].dtype == np.float32
    assert ex['label'] == 3 and ex['domain'] == 1 and ex['label'].dtype == np.int32
    assert -2.2 < ex['video'].min() and ex['video'].max() < 2.7
    assert -1.0 <= ex['flow'].min() and ex['flow'].max() < 1.0
  t1, t2 = test(rec), test(rec)
  assert all(np.array_equal(t1[k], t2[k]) for k in t1)
  a, b = train(rec, np.random.default_rng(7)), train(rec, np.random.default_rng(7))
  c = train(rec, np.random.default_rng(8))
  assert all(np.array_equal(a[k], b[k]) for k in a)
  assert not np.array_equal(a['video'], c['video'])
  # Test audio: z-scored.
  assert abs(t1['audio'].mean()) < 1e-4 and abs(t1['audio'].std() - 1) < 1e-3


def test_train_audio_noise_and_frequency_mask():
  rec = _record()
  mods = ('audio',)
  test = transforms.ClipTransform('epic', mods, TINY, train=False)(rec)['audio'][..., 0]
  train = transforms.ClipTransform('epic', mods, TINY, train=True)(
      rec, np.random.default_rng(3))['audio'][..., 0]
  zero_rows = np.flatnonzero(np.all(train == 0, axis=1))
  assert len(zero_rows) == 9 and np.all(np.diff(zero_rows) == 1) and zero_rows[0] < 247
  keep = np.setdiff1d(np.arange(257), zero_rows)
  diff = train[keep] - test[keep]
  assert np.abs(diff).max() <= 0.05 + 1e-6 and np.abs(diff).max() > 0.04   # U(-0.05, 0.05)


def test_epic_audio_is_the_stored_segment_tiled():
  seg = (np.sin(np.arange(1500) / 7.0) * 10000).astype(np.int16)
  rec = _record(audio=seg)
  out = transforms.ClipTransform('epic', ('audio',), TINY)(rec)['audio'][..., 0]
  x = np.tile(seg / 32768.0, 3)[:4000]
  spec = spectrogram.log_spectrogram(x)
  np.testing.assert_allclose(out, (spec - spec.mean()) / (spec.std() + 1e-9), atol=1e-5)


def test_hac_audio_window_follows_the_sampled_frames():
  ramp = np.arange(16000 * 4, dtype=np.int64) % 30000   # 4 s, sample n has value n
  rec = _record(t=40, audio=ramp.astype(np.int16))
  cfg = TINY
  inds = transforms.sample_indices(40, cfg.video_frames, cfg.video_stride, None)
  t0, t1 = inds[0] / 24.0, inds[-1] / 24.0
  win = transforms.audio_window(rec['audio'], t0, t1, 16000)
  a = int(np.round(t0 * 16000))
  np.testing.assert_allclose(win * 32768, np.arange(a, int(np.round(t1 * 16000))), atol=1e-6)
  # The transform uses that window (noise audio: every window has different features).
  rec = _record(t=40, audio=np.random.default_rng(0).integers(-9000, 9000, 64000, np.int16))
  win = transforms.audio_window(rec['audio'], t0, t1, 16000)
  out = transforms.ClipTransform('hac', ('video', 'audio'), cfg)(rec)['audio']
  np.testing.assert_allclose(out, transforms.audio_features(win, cfg, None), atol=1e-6)
  # EPIC's window is the whole stored segment: different features.
  assert not np.allclose(out, transforms.ClipTransform('epic', ('audio',), cfg)(rec)['audio'])


def test_paper_shapes():
  """At the paper's settings the encoders get 32x224x224x3, 8x224x224x2 and 257x1004x1."""
  rec = _record(t=70, tf=35, h=256, w=340, codec='jpeg', audio=np.zeros(48000, np.int16))
  cfg = transforms.ClipConfig()
  for train in (True, False):
    ex = transforms.ClipTransform('hac', ('video', 'flow', 'audio'), cfg, train)(
        rec, np.random.default_rng(0))
    assert ex['video'].shape == (32, 224, 224, 3)
    assert ex['flow'].shape == (8, 224, 224, 2)
    assert ex['audio'].shape == (257, 1004, 1)
    assert np.isfinite(ex['audio']).all()


def test_clip_config_from_config():
  assert transforms.ClipConfig.from_config({'crop_size': 112}).crop_size == 112
  with pytest.raises(ValueError, match='unknown field'):
    transforms.ClipConfig.from_config({'crop': 112})


def test_normalisation_values():
  # ImageNet statistics on the 0-255 scale (mmaction2's img_norm_cfg), written out here rather
  # than read from the module, so a wrong constant there fails.
  mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
  v = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
  rgb = transforms.normalize_rgb(v)
  assert rgb.dtype == np.float32 and rgb.shape == v.shape
  np.testing.assert_allclose(rgb, (v.astype(np.float64) - mean) / std, rtol=0, atol=1e-5)
  # Hand values: channel 0 of pixel 0 and channel 2 of pixel 255.
  np.testing.assert_allclose(rgb[0, 0, 0, 0], -123.675 / 58.395, rtol=1e-6)
  np.testing.assert_allclose(rgb[0, 15, 15, 2], (255 - 103.53) / 57.375, rtol=1e-6)
  f = v[..., :2]
  flow = transforms.normalize_flow(f)
  np.testing.assert_allclose(flow, (f.astype(np.float64) - 128.0) / 128.0, rtol=0, atol=1e-7)
  assert flow[0, 8, 0, 0] == 0.0 and flow[0, 0, 0, 1] == -1.0   # 128: no motion; 0: -1

def test_normalize_is_the_table_gather_for_every_value_and_layout():
  """OpenCV's LUT = numpy's per-channel gather from the same tables, bit for bit: every uint8
  value, 3 and 2 channels, a flipped (negative-stride) view, a flat [N, C] array."""
  rng = np.random.default_rng(0)
  for lut, c in ((transforms.RGB_LUT, 3), (transforms.FLOW_LUT, 2)):
    x = np.concatenate([np.repeat(np.arange(256, dtype=np.uint8)[:, None], c, 1).reshape(
        1, 16, 16, c), rng.integers(0, 256, (1, 16, 16, c), np.uint8)])
    for v in (x, x[:, :, ::-1], x.reshape(-1, c)):
      want = np.stack([lut[:, k][v[..., k]] for k in range(c)], -1)
      got = transforms.normalize(v, lut)
      assert got.dtype == np.float32 and got.shape == v.shape
      np.testing.assert_array_equal(got, want)
