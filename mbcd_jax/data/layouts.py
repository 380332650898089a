"""What one example is made of on disk, and where its files may be.

Readers (``epic.py``, ``hac.py``) turn a dataset's split files into ``Clip`` descriptions; the
prepare command decodes them. Releases and peer loaders disagree on where the media folders sit
(see ``epic.py`` and ``hac.py``), so every file is looked up under a list of candidate places,
and a miss reports all of them: a user can see at once which folder name or nesting their copy
differs in. A miss also names the one place the file should be (``NotFound.path``).
"""
import dataclasses
import os
from typing import Sequence
from mbcd_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Frames:
  """Frames of one stream, from an mp4 file or a folder of JPEG frames.

  Attributes:
    kind: 'mp4' (decode every frame of ``path``) or 'jpeg' (files ``path/template.format(i)``
      for i in ``[first, first + count)``).
    path: the mp4 file or the frame folder.
    first: first frame number (jpeg).
    count: number of frames (jpeg).
    template: frame file name pattern (jpeg); EPIC's is ``frame_{:010d}.jpg``, 1-based.
    expected: (mp4) how many frames the split file says the clip has (EPIC: ``stop - start``
      RGB, ``int((stop - start) / 2)`` flow); None when the split file does not say (HAC).
    expected_from: what ``expected`` was computed from, for error messages.
  """
  kind: str
  path: str
  first: int = 0
  count: int = 0
  template: str = 'frame_{:010d}.jpg'
  expected: int | None = None
  expected_from: str = ''

  def files(self) -> list[str]:
    if self.kind == 'mp4':
      return [self.path]
    return [os.path.join(self.path, self.template.format(i))
            for i in range(self.first, self.first + self.count)]


@dataclasses.dataclass(frozen=True)
class Audio:
  """A wav file and the part of it that belongs to the clip.

  Attributes:
    path: wav file (any rate / channels; prepared as 16 kHz mono).
    start_s, stop_s: segment in seconds (EPIC: whole-video wavs cut by the narration
      timestamps); None = the whole file (HAC: the window is chosen per sample at train time).
  """
  path: str
  start_s: float | None = None
  stop_s: float | None = None


@dataclasses.dataclass(frozen=True)
class Clip:
  """One labelled example and where its media are.

  Attributes:
    clip_id: unique within the dataset, e.g. 'D1-train-13542' or 'human-test-abc'.
    domain: domain name ('D1', 'human', ...); domain_index its position in the dataset's list.
    split: the split file it comes from: 'train' or 'test'.
    label: class index.
    video: RGB frames; None if not requested or not found.
    flow: (u / x, v / y) frames; None if not requested or not found.
    audio: the wav segment; None if not requested or not found.
    missing: one message per requested medium that was not found (it names the clip's split
      file row and lists every place tried); such a clip is reported as a failure instead of
      being prepared.
    missing_paths: for each ``missing`` message, the file that should have been there
      (``NotFound.path``).
    origin: the split file and row the clip comes from, e.g. '/d/HAC_train_only_human.csv row 3'.
  """
  clip_id: str
  domain: str
  domain_index: int
  split: str
  label: int
  video: Frames | None = None
  flow: tuple[Frames, Frames] | None = None
  audio: Audio | None = None
  missing: tuple[str, ...] = ()
  missing_paths: tuple[str, ...] = ()
  origin: str = ''

  def sources(self) -> dict:
    """Source paths per modality, for the index and the manifest."""
    out = {}
    if self.video is not None:
      out['video'] = self.video.path
    if self.flow is not None:
      out['flow'] = [self.flow[0].path, self.flow[1].path]
    if self.audio is not None:
      out['audio'] = self.audio.path
    return out


@dataclasses.dataclass(frozen=True)
class Failure:
  """A clip (or split file) that could not be prepared: what, which file, why.

  ``state`` (clip failures) fingerprints the clip's files when it failed (which were missing,
  size and modification time of the others); a re-run re-tries the clip once it changes.
  """
  what: str
  path: str
  error: str
  state: str | None = None

  def __str__(self):
    return f'{self.what}: {self.error} [{self.path}]'


class NotFound(Exception):
  """A file was not under any of the candidate places; ``tried`` lists them, in order.

  ``path`` is the one candidate a report should name as the missing file: the first whose folder
  exists and holds entries of the same kind (files with its extension, or sub-folders), i.e.
  the place the rest of the user's copy is laid out in; else the first whose folder exists;
  else the first tried.
  """

  def __init__(self, what: str, tried: Sequence[str], isdir: Sequence[bool] | bool = False):
    self.what, self.tried = what, list(tried)
    self.isdir = ([isdir] * len(self.tried) if isinstance(isdir, bool) else list(isdir))
    super().__init__(f'{what} not found; tried: ' + ', '.join(self.tried))

  @property
  def path(self) -> str:
    return likely_path(self.tried, self.isdir)


def likely_path(tried: Sequence[str], isdir: Sequence[bool]) -> str:
  """Of candidate places none of which exists, the one the user's copy would have (see
  ``NotFound``)."""
  if not tried:
    return ''
  with_folder = []
  for p, d in zip(tried, isdir):
    parent = os.path.dirname(p)
    if not os.path.isdir(parent):
      continue
    with_folder.append(p)
    ext = os.path.splitext(p)[1]
    try:
      with os.scandir(parent) as it:
        if any((e.is_dir() if d else (e.is_file() and e.name.endswith(ext))) for e in it):
          return p
    except OSError:
      continue
  return with_folder[0] if with_folder else tried[0]


def unique(paths: Sequence[str]) -> list[str]:
  """Normalised paths without repeats, order kept (candidate roots often coincide)."""
  out = []
  for p in paths:
    p = os.path.normpath(p)
    if p not in out:
      out.append(p)
  return out


def find(what: str, roots: Sequence[str], rels: Sequence[str], isdir: bool = False) -> str:
  """First existing ``root/rel`` over roots x rels (roots outer); NotFound lists all tried."""
  tried = []
  for root in roots:
    for rel in rels:
      p = os.path.join(root, rel)
      if os.path.isdir(p) if isdir else os.path.isfile(p):
        return p
      tried.append(p)
  raise NotFound(what, tried, isdir)


def read_split_files(dataset: str, known_domains: Sequence[str], domains, splits,
                     read_split, split_name) -> tuple[list, list]:
  """Reads every ``(domain, split)`` split file, turning missing / empty ones into failures.

  Args:
    dataset: name for the unknown-domain error ('EPIC', 'HAC').
    known_domains: the dataset's domains.
    read_split: ``(domain, split) -> (path, rows)``; raises NotFound for a missing file.
    split_name: ``(domain, split) -> str`` naming the split file in failure reports.
  Returns:
    ``([(domain, split, path, rows), ...], [Failure, ...])``: the prepare command reports and
    counts the failures and goes on with the rest.
  """
  found, failures = [], []
  for domain in domains:
    if domain not in known_domains:
      raise ConfigError(f'unknown {dataset} domain {domain!r}; known: '
                       f'{", ".join(known_domains)}')
    for split in splits:
      name = split_name(domain, split)
      try:
        path, rows = read_split(domain, split)
      except NotFound as e:
        failures.append(Failure(name, e.path, str(e)))
        continue
      if not rows:
        failures.append(Failure(name, path, 'split file has no rows'))
        continue
      found.append((domain, split, path, rows))
  return found, failures
