"""HAC (human / animal / cartoon, 7 actions): split CSVs -> ``layouts.Clip``.

Split files ``HAC_Splits/HAC_{train,test}_only_{domain}.csv``: no header, rows ``clip.mp4,label``
(CRLF line ends). Media ``{domain}/videos/X.mp4``, ``{domain}/flow/X_flow_x.mp4`` and
``X_flow_y.mp4``, ``{domain}/audio/X.wav``, looked up inside the split folder (MMDG benchmark),
under ``<root>/HAC`` (SimMMDG) or directly under the root. ``--root`` may be the dataset root or
the split folder. Whole wavs are kept: the train-time audio window follows the sampled frames.
"""
import csv
import os

from mbcd_jax.data import layouts
from mbcd_jax.errors import ConfigError

DOMAINS = ('human', 'animal', 'cartoon')
# The test set of a held-out domain is the whole domain, train and test lists (SimMMDG's code and
# the MBCD port test on both; ``data.hac_test_split_only`` restricts it to the test list).
TARGET_TEST_SPLIT_ONLY = False
CLASSES = ('sleeping', 'watching tv', 'eating', 'drinking', 'swimming', 'running',
           'opening door')
SPLITS_DIR = 'HAC_Splits'


def split_dirs(root: str) -> list[str]:
  root = os.path.normpath(root)
  return layouts.unique([os.path.join(root, SPLITS_DIR), root])


def media_roots(root: str, splits_dir: str) -> list[str]:
  parent = os.path.dirname(splits_dir)
  return layouts.unique([splits_dir, os.path.join(parent, 'HAC'), parent,
                         os.path.join(root, 'HAC'), root])


def read_split(root: str, domain: str, split: str):
  """(path, [(clip file name, label, line number), ...]).

  Raises:
    layouts.NotFound: no candidate folder has the file.
    ValueError: a row is not ``name,label`` with a label in [0, 7) (names file and line).
  """
  path = layouts.find(f'HAC split file HAC_{split}_only_{domain}.csv', split_dirs(root),
                      [f'HAC_{split}_only_{domain}.csv'])
  rows = []
  with open(path, newline='') as f:
    reader = csv.reader(f)
    for r in reader:
      if not r or not r[0].strip():
        continue
      try:
        label = int(r[1])
        if not 0 <= label < len(CLASSES):
          raise ValueError(label)
      except (IndexError, ValueError):
        raise ConfigError(f'{path} line {reader.line_num}: expected "clip.mp4,label" with a '
                         f'label in 0..{len(CLASSES) - 1}, got {",".join(r)!r}') from None
      rows.append((r[0].strip(), label, reader.line_num))
  return path, rows


def clip_for_row(name: str, label: int, domain: str, split: str, roots: list[str],
                 modalities=('video', 'flow', 'audio'), origin: str = '') -> layouts.Clip:
  """One split-file row -> Clip; ``origin`` (file and line) is named when media are missing."""
  stem = os.path.splitext(name)[0]
  of = f' ({origin})' if origin else ''
  missing, missing_paths, video, flow, audio = [], [], None, None, None

  def locate(what, rel):
    try:
      return layouts.find(what + of, roots, [os.path.join(domain, rel)])
    except layouts.NotFound as e:
      missing.append(str(e))
      missing_paths.append(e.path)
      return None

  if 'video' in modalities:
    p = locate(f'video {name}', os.path.join('videos', name))
    video = layouts.Frames('mp4', p) if p else None
  if 'flow' in modalities:
    x = locate(f'flow x of {name}', os.path.join('flow', f'{stem}_flow_x.mp4'))
    y = locate(f'flow y of {name}', os.path.join('flow', f'{stem}_flow_y.mp4'))
    flow = (layouts.Frames('mp4', x), layouts.Frames('mp4', y)) if x and y else None
  if 'audio' in modalities:
    p = locate(f'audio of {name}', os.path.join('audio', f'{stem}.wav'))
    audio = layouts.Audio(p) if p else None
  return layouts.Clip(clip_id=f'{domain}-{split}-{stem}', domain=domain,
                      domain_index=DOMAINS.index(domain), split=split, label=label,
                      video=video, flow=flow, audio=audio, missing=tuple(missing),
                      missing_paths=tuple(missing_paths), origin=origin)


def read_clips(root: str, domains=DOMAINS, splits=('train', 'test'),
               modalities=('video', 'flow', 'audio'), layout: str = 'auto'):
  """All clips of ``domains`` x ``splits`` -> (clips, failures of split files)."""
  del layout  # HAC has one layout (mp4s); the argument mirrors epic.read_clips.
  found, failures = layouts.read_split_files(
      'HAC', DOMAINS, domains, splits, lambda d, s: read_split(root, d, s),
      lambda d, s: f'HAC_{s}_only_{d}')
  clips = []
  for domain, split, path, rows in found:
    roots = media_roots(root, os.path.dirname(path))
    clips += [clip_for_row(n, l, domain, split, roots, modalities, origin=f'{path} line {i}')
              for n, l, i in rows]
  return clips, failures
