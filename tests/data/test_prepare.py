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


# --------------------------------------------------------------------------------------------
# Bad input: short media, unwritable output, which file failed, stale failures.
# --------------------------------------------------------------------------------------------
def _epic_paths(media, row, domain='D1', split='train'):
  """(rgb mp4, flow u mp4, flow v mp4) of an EPIC fixture row in the release layout."""
  vid = fixtures.EPIC_VIDEOS[domain]
  start, stop, label = row['start_frame'], row['stop_frame'], row['verb_class']
  s, n = -(-start // 2), (stop - start) // 2
  flow = os.path.join(media, 'flow', split, domain, f'{domain}_{vid}_{s}_{s + n}_{label}')
  return (os.path.join(media, 'video', split, domain, f'{domain}_{vid}_{start}_{stop}_{label}.mp4'),
          flow + '_u.mp4', flow + '_v.mp4')


def test_short_mp4s_fail_beyond_the_slack_and_are_kept_within_it(tmp_path):
  src, out = str(tmp_path / 'src'), str(tmp_path / 'out')
  rows = fixtures.make_epic(src, counts={'train': 3}, domains=('D1',))[('D1', 'train')]
  assert prepare.FRAME_SLACK == 2
  # Valid files (header and decode agree) with fewer frames than the split file implies.
  (rgb0, _, _), (rgb1, _, v1), (_, _, v2) = [_epic_paths(src, r) for r in rows]
  start0 = rows[0]['start_frame']           # 12 RGB frames expected: write 9 (3 short)
  fixtures.write_mp4(rgb0, fixtures.video_frames(range(start0, start0 + 9), 0), 60)
  start1 = rows[1]['start_frame']           # 14 expected: write 13 (within the slack)
  fixtures.write_mp4(rgb1, fixtures.video_frames(range(start1, start1 + 13), 0), 60)
  fixtures.write_mp4(v1, fixtures.grey_frames([100] * 4), 30)   # flow: 7 expected, 4 given
  fixtures.write_mp4(v2, fixtures.grey_frames([100] * 7), 30)   # 8 expected, 7 given: ok
  index = prepare.run('epic', src, out, domains=('D1',), splits=('train',), recipe=RECIPE,
                      workers=1, progress=False)
  fails = {f['what']: f for f in index['failures']}
  assert sorted(fails) == ['D1-train-1000', 'D1-train-1001']
  assert fails['D1-train-1000']['path'] == rgb0
  assert 'decoded 9 frames' in fails['D1-train-1000']['error']
  assert 'implies 12 (stop - start = 22 - 10)' in fails['D1-train-1000']['error']
  # Clip 1: RGB is within the slack, but flow v is 3 short of int(14 / 2) = 7 -> fails on v.
  assert fails['D1-train-1001']['path'] == v1
  assert 'decoded 4 frames' in fails['D1-train-1001']['error']
  assert 'int((stop - start) / 2)' in fails['D1-train-1001']['error']
  (e,) = index['entries']
  assert e['clip_id'] == 'D1-train-1002' and e['num_flow_frames'] == 7 and e['num_frames'] == 16
  # Clip 1's RGB alone (flow not asked for) is stored with its 13 frames, for wrapping samplers.
  index = prepare.run('epic', src, str(tmp_path / 'out_rgb'), domains=('D1',), splits=('train',),
                      modalities=('video',), recipe=RECIPE, workers=1, progress=False)
  counts = {e['clip_id']: e['num_frames'] for e in index['entries']}
  assert counts == {'D1-train-1001': 13, 'D1-train-1002': 16}
  assert [f['what'] for f in index['failures']] == ['D1-train-1000']


def test_flow_halves_of_different_lengths_name_the_short_one(tmp_path):
  src, out = str(tmp_path / 'src'), str(tmp_path / 'out')
  fixtures.make_hac(src, counts={'train': 2}, num_frames=12)
  flow = os.path.join(src, 'HAC_Splits', 'human', 'flow')
  y0, x1 = (os.path.join(flow, 'hu_train_000_flow_y.mp4'),
            os.path.join(flow, 'hu_train_001_flow_x.mp4'))
  fixtures.write_mp4(y0, fixtures.grey_frames([50] * 9), 24)    # 3 fewer than x: fails
  fixtures.write_mp4(x1, fixtures.grey_frames([50] * 11), 24)   # 1 fewer than y: kept
  index = prepare.run('hac', src, out, domains=('human',), splits=('train',), recipe=RECIPE,
                      workers=1, progress=False)
  (f,) = index['failures']
  assert f['what'] == 'human-train-hu_train_000' and f['path'] == y0
  assert 'has 9 frames' in f['error'] and '12' in f['error'] and 'hu_train_000_flow_x' in f['error']
  (e,) = index['entries']
  assert e['num_flow_frames'] == 11 and e['num_frames'] == 12


def test_frame_folders_allow_the_slack_at_the_end_only(tmp_path):
  src = str(tmp_path / 'src')
  rows = fixtures.make_epic(src, 'frames', counts={'train': 2}, domains=('D1',))
  r0, r1 = rows[('D1', 'train')]
  rgb = os.path.join(src, 'rgb', 'train', 'D1', 'P08_01')
  # Clip 0 [10, 22): its last 2 frames absent -> 10 frames. Clip 1 [50, 64): one in the middle.
  for i in (r0['stop_frame'] - 2, r0['stop_frame'] - 1, r1['start_frame'] + 5):
    os.remove(os.path.join(rgb, f'frame_{i:010d}.jpg'))
  index = prepare.run('epic', src, str(tmp_path / 'out'), domains=('D1',), splits=('train',),
                      modalities=('video',), layout='frames', recipe=RECIPE, workers=1,
                      progress=False)
  (e,) = index['entries']
  assert e['num_frames'] == 10
  (f,) = index['failures']
  assert f['path'] == os.path.join(rgb, f'frame_{r1["start_frame"] + 5:010d}.jpg')
  assert 'missing frame' in f['error']


@pytest.mark.parametrize('workers', [1, 2])
def test_unwritable_out_is_one_line_exit_3_before_any_work(tmp_path, capsys, workers):
  src = str(tmp_path / 'src')
  fixtures.make_hac(src, counts={'train': 1})
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  calls = []
  orig = prepare.prepare_shard
  prepare.prepare_shard = lambda *a: calls.append(a)
  try:
    for out in (str(blocker / 'out'), str(blocker)):   # under a file; a file itself
      rc = prepare.main(['--dataset=hac', f'--root={src}', f'--out={out}', '--no_progress',
                         f'--workers={workers}'])
      err = capsys.readouterr().err
      assert rc == prepare.EXIT_OUTPUT == 3
      assert err.count('\n') == 1 and err.startswith('error: ') and out in err
      assert 'Traceback' not in err
  finally:
    prepare.prepare_shard = orig
  assert calls == []


@pytest.mark.skipif(os.geteuid() == 0, reason='root can write to read-only folders')
def test_read_only_out_is_exit_3(tmp_path, capsys):
  src, out = str(tmp_path / 'src'), tmp_path / 'ro'
  fixtures.make_hac(src, counts={'train': 1})
  out.mkdir()
  out.chmod(0o500)
  try:
    rc = prepare.main(['--dataset=hac', f'--root={src}', f'--out={out}', '--no_progress'])
  finally:
    out.chmod(0o700)
  assert rc == 3 and str(out) in capsys.readouterr().err


def test_exit_codes_for_config_errors(tmp_path, capsys):
  out = str(tmp_path / 'out')
  assert prepare.main(['--dataset=hac', f'--root={tmp_path}', f'--out={out}',
                       '--no_progress']) == prepare.EXIT_USAGE == 2
  assert 'no clips found' in capsys.readouterr().err
  assert not os.path.exists(out)   # a configuration error leaves no empty output folder
  assert prepare.main(['--dataset=hac', f'--root={tmp_path}', f'--out={out}', '--domains=robot',
                       '--no_progress']) == 2
  assert "unknown hac domain(s) robot" in capsys.readouterr().err
  src = str(tmp_path / 'src')
  fixtures.make_hac(src, counts={'train': 1})
  csv_path = os.path.join(src, 'HAC_Splits', 'HAC_train_only_animal.csv')
  with open(csv_path, 'a', newline='') as f:
    f.write('an_extra.mp4,running\r\n')
  assert prepare.main(['--dataset=hac', f'--root={src}', f'--out={out}', '--no_progress']) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and f'{csv_path} line 2' in err and 'running' in err


@pytest.mark.parametrize('placement', ['inside', 'beside'])
def test_missing_epic_file_names_the_file_in_the_users_layout(tmp_path, placement):
  src = str(tmp_path / 'src')
  rows = fixtures.make_epic(src, placement=placement, counts={'train': 2}, domains=('D1',))
  splits = os.path.join(src, 'MM-SADA_Domain_Adaptation_Splits')
  media = splits if placement == 'inside' else src
  rgb, u, _ = _epic_paths(media, rows[('D1', 'train')][1])
  os.remove(rgb)
  os.remove(u)
  index = prepare.run('epic', src, str(tmp_path / 'out'), domains=('D1',), splits=('train',),
                      recipe=RECIPE, workers=1, progress=False)
  paths = sorted(f['path'] for f in index['failures'])
  assert paths == sorted([rgb, u])   # not the first candidate (inside <splits>/EPIC-mp4)
  for f in index['failures']:
    assert f'{os.path.join(splits, "D1_train.pkl")} row 1 (uid 1001)' in f['error']


def test_ghost_hac_row_names_its_csv_line_and_the_file(tmp_path, capsys):
  src = str(tmp_path / 'src')
  fixtures.make_hac(src, 'hac', counts={'train': 2})   # media under <root>/HAC (SimMMDG)
  csv_path = os.path.join(src, 'HAC_Splits', 'HAC_train_only_cartoon.csv')
  with open(csv_path, 'a', newline='') as f:
    f.write('ghost.mp4,3\r\n')
  out = str(tmp_path / 'out')
  rc = prepare.main(['--dataset=hac', f'--root={src}', f'--out={out}', '--no_progress',
                     '--workers=1', '--modalities=video', '--splits=train'])
  err = capsys.readouterr().err
  assert rc == prepare.EXIT_FAILURES == 1
  index = json.load(open(os.path.join(out, store.INDEX)))
  (f,) = index['failures']
  assert f['what'] == 'cartoon-train-ghost'
  assert f['path'] == os.path.join(src, 'HAC', 'cartoon', 'videos', 'ghost.mp4')
  assert f'{csv_path} line 3' in f['error']
  line = [l for l in err.splitlines() if 'ghost' in l]
  assert len(line) == 1 and f'{csv_path} line 3' in line[0] and f['path'] in line[0]


def test_rerun_retries_fixed_files_and_hints_at_retry_failed(tmp_path, capsys):
  src, out = str(tmp_path / 'src'), str(tmp_path / 'out')
  fixtures.make_hac(src, counts={'train': 2})
  bad = os.path.join(src, 'HAC_Splits', 'animal', 'videos', 'an_train_001.mp4')
  good = open(bad, 'rb').read()
  fixtures.truncate(bad, 0.3)
  gone = os.path.join(src, 'HAC_Splits', 'human', 'audio', 'hu_train_000.wav')
  os.rename(gone, gone + '.bak')
  args = ['--dataset=hac', f'--root={src}', f'--out={out}', '--no_progress', '--workers=1',
          '--splits=train',
          f'--short_side={SHORT}']
  calls = []
  orig = prepare.prepare_clip
  def counting(clip, recipe):
    calls.append(clip.clip_id)
    return orig(clip, recipe)
  prepare.prepare_clip = counting
  try:
    assert prepare.main(args) == 1
    assert '2 failure(s)' in capsys.readouterr().err
    # Nothing changed: nothing decoded, both failures reported again, with the hint.
    calls.clear()
    assert prepare.main(args) == 1
    err = capsys.readouterr().err
    assert calls == []
    assert '2 failure(s)' in err and '2 of these were recorded by an earlier run' in err
    assert '--retry_failed' in err
    # The missing wav is back: only its shard is done again, and its failure is gone.
    os.rename(gone + '.bak', gone)
    calls.clear()
    assert prepare.main(args) == 1
    err = capsys.readouterr().err
    assert sorted(calls) == ['human-train-hu_train_000', 'human-train-hu_train_001']
    assert '1 failure(s)' in err and 'an_train_001.mp4' in err and '1 of these' in err
    # --retry_failed decodes the unchanged failure again.
    calls.clear()
    assert prepare.main(args + ['--retry_failed']) == 1
    assert sorted(calls) == ['animal-train-an_train_000', 'animal-train-an_train_001']
    assert 'earlier run' not in capsys.readouterr().err
    # The truncated video is replaced by the full one: picked up without any flag.
    with open(bad, 'wb') as f:
      f.write(good)
    calls.clear()
    assert prepare.main(args) == 0
    assert sorted(calls) == ['animal-train-an_train_000', 'animal-train-an_train_001']
  finally:
    prepare.prepare_clip = orig
  index = json.load(open(os.path.join(out, store.INDEX)))
  assert index['failures'] == [] and len(index['entries']) == 6


@pytest.mark.parametrize('workers', [1, 2])
def test_a_write_failing_mid_run_stops_with_exit_3(tmp_path, capsys, workers, monkeypatch):
  src, out = str(tmp_path / 'src'), str(tmp_path / 'out')
  fixtures.make_hac(src, counts={'train': 1})
  def full_disk(*a, **k):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(store, 'write_shard', full_disk)
  if workers == 2:   # spawned workers do not see the monkeypatch: break the real write
    monkeypatch.undo()
    os.makedirs(os.path.join(out, store.SHARDS))
    os.mkdir(os.path.join(out, store.SHARDS, store.shard_name('human', 'train', 0)))
  rc = prepare.main(['--dataset=hac', f'--root={src}', f'--out={out}', '--no_progress',
                     '--splits=train', f'--workers={workers}', f'--short_side={SHORT}'])
  err = capsys.readouterr().err
  assert rc == 3 and err.count('\n') == 1 and 'cannot write shard' in err and out in err
