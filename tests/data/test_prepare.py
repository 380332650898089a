"""Prepare command on fixture trees in every layout: right frames in the right order, labels,
domains, audio cut, failures reported and counted, resumable and atomic shards."""
import json
import os

import numpy as np
import pytest

from mbcd_jax.data import epic, layouts, prepare, store
from tests.data import fixtures

SHORT = 24           # stored short side for the 32 x 48 fixture frames -> 24 x 36
RECIPE = prepare.Recipe(short_side=SHORT)
TOL = 6              # YUV rounding + JPEG + resize on flat colours


def _records(out, index):
  by_shard = {}
  for e in index['entries']:
    by_shard.setdefault(e['shard'], []).append(e)
  from array_record.python import array_record_module
  for shard, entries in by_shard.items():
    r = array_record_module.ArrayRecordReader(os.path.join(out, store.SHARDS, shard))
    for e in entries:
      yield e, store.unpack(r.read([e['pos']])[0])
    r.close()


def _mean_colours(rec, name):
  t = store.num_frames(rec, name)
  f = store.decode_frames(rec, name, np.arange(t)).astype(np.float64)
  return f.mean(axis=(1, 2)), f


def _check_epic(out, index, rows_by_split):
  rows = {f'{d}-{s}-{r["uid"]}': (d, r) for (d, s), rs in rows_by_split.items() for r in rs}
  assert sorted(e['clip_id'] for e in index['entries']) == sorted(rows)
  assert index['failures'] == []
  for e, rec in _records(out, index):
    d, row = rows[e['clip_id']]
    di = epic.DOMAINS.index(d)
    start, stop = row['start_frame'], row['stop_frame']
    assert e['label'] == row['verb_class'] == int(rec['label'])
    assert e['domain_index'] == di == int(rec['domain'])
    # RGB: every frame of [start, stop), in order, at short side 24.
    means, frames = _mean_colours(rec, 'video')
    assert frames.shape == (stop - start, SHORT, SHORT * 3 // 2, 3)
    assert e['num_frames'] == stop - start
    want = np.array([fixtures.frame_colour(i, di) for i in range(start, stop)], np.float64)
    np.testing.assert_allclose(means, want, atol=TOL)
    # Flow: half rate, [ceil(start/2), +int((stop-start)/2)), u and v as the two channels.
    s, n = int(np.ceil(start / 2)), (stop - start) // 2
    fmeans, fl = _mean_colours(rec, 'flow')
    assert fl.shape == (n, SHORT, SHORT * 3 // 2, 2)
    np.testing.assert_allclose(fmeans, [fixtures.flow_values(i) for i in range(s, s + n)],
                               atol=TOL)
    # Audio: the ramp's samples [round(t0 * 16k), round(t1 * 16k)) of the whole-video wav.
    t0 = epic.timestamp_seconds(row['start_timestamp'])
    t1 = epic.timestamp_seconds(row['stop_timestamp'])
    a, b = int(np.round(t0 * 16000)), int(np.round(t1 * 16000))
    np.testing.assert_array_equal(rec['audio'], np.arange(a, b) % 32768)
    assert abs(a - start / 60 * 16000) <= 80   # timestamps are rounded to 10 ms


@pytest.mark.parametrize('placement,root_of', [
    ('beside', lambda r: r),                                              # SimMMDG
    ('inside', lambda r: os.path.join(r, 'MM-SADA_Domain_Adaptation_Splits')),
    ('epic_mp4', lambda r: os.path.join(r, 'MM-SADA_Domain_Adaptation_Splits', 'EPIC-mp4')),
])
def test_epic_release_layout(tmp_path, placement, root_of):
  rows = fixtures.make_epic(str(tmp_path / 'src'), 'clips', placement, domains=('D1', 'D3'))
  out = str(tmp_path / 'out')
  index = prepare.run('epic', root_of(str(tmp_path / 'src')), out, domains=('D1', 'D3'),
                      recipe=RECIPE, workers=1, progress=False)
  _check_epic(out, index, rows)
  manifest = json.load(open(os.path.join(out, store.MANIFEST)))
  assert manifest['recipe']['short_side'] == SHORT and manifest['num_failures'] == 0
  assert 'av' in manifest['versions'] and 'numpy' in manifest['versions']
  for name, info in manifest['shards'].items():   # checksums are of the files on disk
    import hashlib
    data = open(os.path.join(out, store.SHARDS, name), 'rb').read()
    assert hashlib.sha256(data).hexdigest() == info['sha256']
  e = index['entries'][0]
  assert e['sources']['video'].endswith('.mp4') and os.path.isfile(e['sources']['video'])


def test_epic_frames_layout(tmp_path):
  rows = fixtures.make_epic(str(tmp_path / 'src'), 'frames', 'beside', domains=('D2',))
  out = str(tmp_path / 'out')
  index = prepare.run('epic', str(tmp_path / 'src'), out, domains=('D2',), recipe=RECIPE,
                      workers=1, progress=False, layout='frames')
  _check_epic(out, index, rows)
  assert os.path.isdir(index['entries'][0]['sources']['video'])


def test_raw_codec_is_exact(tmp_path):
  rows = fixtures.make_epic(str(tmp_path / 'src'), counts={'train': 1}, domains=('D1',))
  out = str(tmp_path / 'out')
  index = prepare.run('epic', str(tmp_path / 'src'), out, domains=('D1',), splits=('train',),
                      recipe=prepare.Recipe(short_side=32, codec='raw'), workers=1,
                      progress=False)
  (e, rec), = list(_records(out, index))
  start = rows[('D1', 'train')][0]['start_frame']
  assert rec['video'].dtype == np.uint8 and rec['video'].shape == (e['num_frames'], 32, 48, 3)
  # Stored at the source size: only the codec's YUV rounding differs from the written frames.
  want = fixtures.video_frames(range(start, start + e['num_frames']), 0)
  assert np.abs(rec['video'].astype(int) - want).max() <= 3


def test_hac_layouts_and_labels(tmp_path):
  for placement in ('splits', 'hac'):
    rows = fixtures.make_hac(str(tmp_path / placement), placement, counts={'train': 2, 'test': 1})
    out = str(tmp_path / f'out_{placement}')
    index = prepare.run('hac', str(tmp_path / placement), out, recipe=RECIPE, workers=1,
                        progress=False)
    assert index['failures'] == [] and len(index['entries']) == 9
    want = {f'{d}-{s}-{n[:-4]}': (d, l) for (d, s), rs in rows.items() for n, l in rs}
    for e, rec in _records(out, index):
      d, label = want[e['clip_id']]
      assert (e['label'], int(rec['label'])) == (label, label)
      assert int(rec['domain']) == fixtures.HAC_DOMAINS.index(d) == e['domain_index']
      means, _ = _mean_colours(rec, 'video')
      np.testing.assert_allclose(means[:, 0], [8 * (i % 30) + 12 for i in range(40)], atol=TOL)
      assert len(rec['audio']) == 32000   # the whole wav: the window is chosen per sample


def test_failures_are_reported_counted_and_the_run_finishes(tmp_path, capsys):
  src = str(tmp_path / 'src')
  fixtures.make_hac(src, counts={'train': 3, 'test': 2})
  media = os.path.join(src, 'HAC_Splits')
  fixtures.truncate(os.path.join(media, 'human', 'videos', 'hu_train_001.mp4'))
  os.remove(os.path.join(media, 'cartoon', 'audio', 'ca_test_000.wav'))
  open(os.path.join(media, 'HAC_test_only_animal.csv'), 'w').close()   # an empty split
  out = str(tmp_path / 'out')
  rc = prepare.main(['--dataset=hac', f'--root={src}', f'--out={out}', f'--short_side={SHORT}',
                     '--workers=2', '--no_progress'])
  err = capsys.readouterr().err
  assert rc == 1
  index = json.load(open(os.path.join(out, store.INDEX)))
  assert len(index['failures']) == 3 and '3 failure(s)' in err
  assert len(index['entries']) == 15 - 2 - 2   # 2 bad clips, 2 clips of the emptied split
  by_what = {f['what']: f for f in index['failures']}
  trunc = by_what['human-train-hu_train_001']
  assert trunc['path'].endswith('hu_train_001.mp4') and 'decode' in trunc['error']
  wav = by_what['cartoon-test-ca_test_000']['error']
  # The missing wav's message lists every place tried.
  for place in (os.path.join(src, 'HAC_Splits', 'cartoon', 'audio', 'ca_test_000.wav'),
                os.path.join(src, 'HAC', 'cartoon', 'audio', 'ca_test_000.wav'),
                os.path.join(src, 'cartoon', 'audio', 'ca_test_000.wav')):
    assert place in wav
  assert 'no rows' in by_what['HAC_test_only_animal']['error']
  assert 'hu_train_001.mp4' in err and 'ca_test_000.wav' in err
  manifest = json.load(open(os.path.join(out, store.MANIFEST)))
  assert manifest['num_failures'] == 3


def test_epic_missing_split_and_media_list_places(tmp_path):
  with pytest.raises(ValueError, match='no clips found') as e:
    prepare.run('epic', str(tmp_path), str(tmp_path / 'out'), progress=False)
  assert os.path.join(str(tmp_path), 'MM-SADA_Domain_Adaptation_Splits', 'D1_train.pkl') in str(e.value)
  src = str(tmp_path / 'src')
  rows = fixtures.make_epic(src, counts={'train': 1}, domains=('D1',))
  r = rows[('D1', 'train')][0]
  os.remove(os.path.join(src, 'video', 'train', 'D1',
                         f'D1_P08_01_{r["start_frame"]}_{r["stop_frame"]}_{r["verb_class"]}.mp4'))
  clips, _ = epic.read_clips(src, ('D1',), ('train',))
  msg = ' '.join(clips[0].missing)
  splits = os.path.join(src, 'MM-SADA_Domain_Adaptation_Splits')
  for where in (os.path.join(splits, 'EPIC-mp4', 'video'), os.path.join(splits, 'video'),
                os.path.join(src, 'video'), os.path.join(src, 'rgb', 'train', 'D1', 'P08_01')):
    assert where in msg


def test_rerun_skips_finished_shards_and_redoes_incomplete(tmp_path):
  src, out = str(tmp_path / 'src'), str(tmp_path / 'out')
  fixtures.make_hac(src, counts={'train': 3, 'test': 1})
  kw = dict(recipe=RECIPE, workers=1, progress=False, clips_per_shard=2)
  first = prepare.run('hac', src, out, **kw)
  shard_dir = os.path.join(out, store.SHARDS)
  shards = sorted(f for f in os.listdir(shard_dir) if f.endswith('.array_record'))
  assert len(shards) == 9   # per domain: train 2 + 1 clips, test 1
  mtimes = {s: os.stat(os.path.join(shard_dir, s)).st_mtime_ns for s in shards}
  # An interrupted shard: data written but no index part -> not done, rewritten.
  os.remove(os.path.join(shard_dir, shards[0] + '.json'))
  calls = []
  orig = prepare.prepare_clip
  def counting(clip, recipe):
    calls.append(clip.clip_id)
    return orig(clip, recipe)
  prepare.prepare_clip = counting
  try:
    second = prepare.run('hac', src, out, **kw)
  finally:
    prepare.prepare_clip = orig
  assert len(calls) == len(store.read_shard_part(out, shards[0])['entries']) > 0
  assert all(os.stat(os.path.join(shard_dir, s)).st_mtime_ns == mtimes[s] for s in shards[1:])
  strip = lambda idx: sorted((e['clip_id'], e['shard'], e['pos']) for e in idx['entries'])
  assert strip(first) == strip(second)


def test_a_crash_mid_shard_leaves_no_shard_that_looks_done(tmp_path):
  src, out = str(tmp_path / 'src'), str(tmp_path / 'out')
  fixtures.make_hac(src, counts={'train': 2})
  orig, n = prepare.prepare_clip, []
  def crash_on_second(clip, recipe):
    n.append(1)
    if len(n) == 2:
      raise KeyboardInterrupt   # the user pressed ^C / the machine went away
    return orig(clip, recipe)
  prepare.prepare_clip = crash_on_second
  try:
    with pytest.raises(KeyboardInterrupt):
      prepare.run('hac', src, out, recipe=RECIPE, workers=1, progress=False)
  finally:
    prepare.prepare_clip = orig
  assert not os.path.exists(os.path.join(out, store.INDEX))
  name = store.shard_name('human', 'train', 0)
  assert not store.shard_done(out, name)
  index = prepare.run('hac', src, out, recipe=RECIPE, workers=1, progress=False)
  assert len(index['entries']) == 6 and store.shard_done(out, name)


def test_find_lists_every_place():
  with pytest.raises(layouts.NotFound) as e:
    layouts.find('x', ['/nonexistent/a', '/nonexistent/b'], ['f.wav', 'g/f.wav'])
  assert e.value.tried == ['/nonexistent/a/f.wav', '/nonexistent/a/g/f.wav',
                           '/nonexistent/b/f.wav', '/nonexistent/b/g/f.wav']
  assert all(p in str(e.value) for p in e.value.tried)
