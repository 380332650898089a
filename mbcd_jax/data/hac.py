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

DOMAINS = ('human', 'animal', 'cartoon')
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
  """(path, [(clip file name, label), ...]); raises layouts.NotFound."""
  path = layouts.find(f'HAC split file HAC_{split}_only_{domain}.csv', split_dirs(root),
                      [f'HAC_{split}_only_{domain}.csv'])
  with open(path, newline='') as f:
    rows = [(r[0].strip(), int(r[1])) for r in csv.reader(f) if r and r[0].strip()]
  return path, rows


def clip_for_row(name: str, label: int, domain: str, split: str, roots: list[str],
                 modalities=('video', 'flow', 'audio')) -> layouts.Clip:
  stem = os.path.splitext(name)[0]
  missing, video, flow, audio = [], None, None, None

  def locate(what, rel):
    try:
      return layouts.find(what, roots, [os.path.join(domain, rel)])
    except layouts.NotFound as e:
      missing.append(str(e))
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
                      video=video, flow=flow, audio=audio, missing=tuple(missing))


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
    clips += [clip_for_row(n, l, domain, split, roots, modalities) for n, l in rows]
  return clips, failures
