"""EPIC-Kitchens (MM-SADA subset, D1/D2/D3, 8 verbs): split pickles -> ``layouts.Clip``.

Layouts accepted (as the SimMMDG release and the MMDG benchmark's loaders have them), looked up
per file in this order:
- release (pre-cut clips): ``video/{split}/D1/D1_P08_01_{start}_{stop}_{label}.mp4`` (or under
  ``rgb/``), flow ``flow/{split}/D1/D1_P08_01_{s}_{s+n}_{label}_{u,v}.mp4`` with
  ``s = ceil(start / 2)``, ``n = int((stop - start) / 2)`` (flow runs at half the frame rate);
- original (frame folders): ``rgb/{split}/D1/P08_01/frame_{:010d}.jpg`` (1-based), flow
  ``flow/{split}/D1/P08_01/{u,v}/frame_{:010d}.jpg``; RGB frames ``[start, stop)``, flow frames
  ``[s, s + n)``;
- audio: whole-video wav ``audio/{split}/D1/P08_01.wav`` or ``rgb/{split}/D1/P08_01.wav``, cut
  by the narration timestamps.
The media folders may sit beside the split folder, inside it, or inside ``<splits>/EPIC-mp4``
(SimMMDG vs the MMDG benchmark); ``--root`` may name the dataset root, the split folder or
``EPIC-mp4``.
"""
import math
import os

from mbcd_jax.data import layouts
from mbcd_jax.errors import ConfigError

DOMAINS = ('D1', 'D2', 'D3')
# The test set of a held-out domain is its test split (the MM-SADA splits' test pickle).
TARGET_TEST_SPLIT_ONLY = True
CLASSES = ('take', 'put', 'open', 'close', 'wash', 'cut', 'mix', 'pour')
SPLITS_DIR = 'MM-SADA_Domain_Adaptation_Splits'
COLUMNS = ('uid', 'video_id', 'start_timestamp', 'stop_timestamp', 'start_frame',
           'stop_frame', 'verb_class')


def timestamp_seconds(ts: str) -> float:
  """'HH:MM:SS.ff' -> seconds."""
  h, m, s = ts.split(':')
  return (float(h) * 60 + float(m)) * 60 + float(s)


def split_dirs(root: str) -> list[str]:
  """Candidate folders holding ``D1_train.pkl`` etc."""
  root = os.path.normpath(root)
  cands = [root, os.path.join(root, SPLITS_DIR)]
  if os.path.basename(root) == 'EPIC-mp4':
    cands.append(os.path.dirname(root))
  return layouts.unique(cands)


def media_roots(root: str, splits_dir: str) -> list[str]:
  """Candidate folders holding ``video/ flow/ audio/ rgb/`` (SimMMDG and MMDG-benchmark
  placements)."""
  parent = os.path.dirname(splits_dir)
  return layouts.unique([os.path.join(splits_dir, 'EPIC-mp4'), splits_dir,
                         os.path.join(parent, 'EPIC-mp4'), parent, root])


def read_split(root: str, domain: str, split: str):
  """The split pickle as a list of row dicts (pandas is needed to read it).

  Raises:
    layouts.NotFound: no candidate folder has the file (message lists them).
    ValueError: the file cannot be read or lacks columns (names the file).
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top
  path = layouts.find(f'EPIC split file {domain}_{split}.pkl', split_dirs(root),
                      [f'{domain}_{split}.pkl'])
  try:
    df = pd.read_pickle(path)
  except Exception as e:  # pylint: disable=broad-except
    # Unpickling errors come in many types (truncated file, wrong pandas, not a pickle).
    raise ConfigError(f'{path}: cannot read the split file: {type(e).__name__}: {e}') from e
  missing = [c for c in COLUMNS if c not in df.columns]
  if missing:
    raise ConfigError(f'{path}: missing columns {missing}; has {list(df.columns)}')
  return path, df.to_dict('records')


def clip_for_row(row: dict, domain: str, split: str, roots: list[str],
                 modalities=('video', 'flow', 'audio'), layout: str = 'auto',
                 origin: str = '') -> layouts.Clip:
  """One split-file row -> Clip (media looked up under ``roots``).

  Args:
    layout: 'auto' (pre-cut mp4s, else frame folders), 'clips' or 'frames'.
    origin: the split file and row, named in the messages of media not found.
  """
  vid = str(row['video_id'])
  start, stop, label = int(row['start_frame']), int(row['stop_frame']), int(row['verb_class'])
  stem = f'{domain}_{vid}'
  of = f' ({origin})' if origin else ''
  missing, missing_paths, video, flow, audio = [], [], None, None, None
  want_clips, want_frames = layout in ('auto', 'clips'), layout in ('auto', 'frames')

  def locate(what, mp4_rels, frame_rels):
    try:
      return _find_file_or_dir(what + of, roots, mp4_rels if want_clips else [],
                               frame_rels if want_frames else [])
    except layouts.NotFound as e:
      missing.append(str(e))
      missing_paths.append(e.path)
      return None

  if 'video' in modalities:
    p = locate(f'RGB of {vid} [{start}, {stop})',
               [os.path.join(d, split, domain, f'{stem}_{start}_{stop}_{label}.mp4')
                for d in ('video', 'rgb')],
               [os.path.join('rgb', split, domain, vid)])
    if p is not None:
      video = (layouts.Frames('mp4', p, expected=stop - start,
                              expected_from=f'stop - start = {stop} - {start}')
               if p.endswith('.mp4') else
               layouts.Frames('jpeg', p, first=start, count=stop - start))
  if 'flow' in modalities:
    s, n = math.ceil(start / 2), int((stop - start) / 2)
    p = locate(f'flow of {vid} [{s}, {s + n})',
               [os.path.join('flow', split, domain, f'{stem}_{s}_{s + n}_{label}_u.mp4')],
               [os.path.join('flow', split, domain, vid, 'u')])
    if p is not None:
      if p.endswith('.mp4'):
        v = p[:-len('_u.mp4')] + '_v.mp4'
        if os.path.isfile(v):
          why = f'int((stop - start) / 2) = int(({stop} - {start}) / 2)'
          flow = (layouts.Frames('mp4', p, expected=n, expected_from=why),
                  layouts.Frames('mp4', v, expected=n, expected_from=why))
        else:
          missing.append(f'flow v of {vid}{of} not found; tried: {v}')
          missing_paths.append(v)
      else:
        flow = (layouts.Frames('jpeg', p, first=s, count=n),
                layouts.Frames('jpeg', os.path.join(os.path.dirname(p), 'v'), first=s, count=n))
  if 'audio' in modalities:
    try:
      p = layouts.find(f'audio of {vid}{of}', roots,
                       [os.path.join(d, split, domain, f'{vid}.wav') for d in ('audio', 'rgb')])
      audio = layouts.Audio(p, timestamp_seconds(str(row['start_timestamp'])),
                            timestamp_seconds(str(row['stop_timestamp'])))
    except layouts.NotFound as e:
      missing.append(str(e))
      missing_paths.append(e.path)
  return layouts.Clip(clip_id=f'{domain}-{split}-{row["uid"]}', domain=domain,
                      domain_index=DOMAINS.index(domain), split=split, label=label,
                      video=video, flow=flow, audio=audio, missing=tuple(missing),
                      missing_paths=tuple(missing_paths), origin=origin)


def _find_file_or_dir(what, roots, file_rels, dir_rels):
  """Like layouts.find over files then folders, one NotFound listing both."""
  tried, isdir = [], []
  for rels, d in ((file_rels, False), (dir_rels, True)):
    try:
      return layouts.find(what, roots, rels, isdir=d)
    except layouts.NotFound as e:
      tried += e.tried
      isdir += e.isdir
  raise layouts.NotFound(what, tried, isdir)


def read_clips(root: str, domains=DOMAINS, splits=('train', 'test'),
               modalities=('video', 'flow', 'audio'), layout: str = 'auto'):
  """All clips of ``domains`` x ``splits``.

  Returns:
    (clips, failures): failures are split files that are missing or empty (the prepare
    command reports and counts them and goes on with the rest).
  """
  found, failures = layouts.read_split_files(
      'EPIC', DOMAINS, domains, splits, lambda d, s: read_split(root, d, s),
      lambda d, s: f'{d}_{s}')
  clips = []
  for domain, split, path, rows in found:
    roots = media_roots(root, os.path.dirname(path))
    clips += [clip_for_row(r, domain, split, roots, modalities, layout,
                           origin=f'{path} row {k} (uid {r["uid"]})')
              for k, r in enumerate(rows)]
  return clips, failures
