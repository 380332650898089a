r"""Decode every clip of a downloaded dataset once into a prepared clip store.

  python -m mbcd_jax.data.prepare --dataset=epic --root=/data/EPIC --out=/data/epic_prepared
  python -m mbcd_jax.data.prepare --dataset=hac --root=/data/HAC --out=/data/hac_prepared

What is stored (``store.py`` has the format): every RGB frame at short side ``--short_side``
(256, the recipe's first resize), every flow frame likewise as two grey channels, the 16 kHz mono
waveform (EPIC: the narration segment; HAC: the whole wav, since its window follows the sampled
frames). Training then samples, crops and normalises from these (``transforms.py``).

Work is split into shards of ``--clips_per_shard`` clips of one domain and split, decoded in
parallel by ``--workers`` processes. A missing, corrupt or short file is reported with its path
(and, when missing, the split file and row that lists it), the clip is left out, and the run
goes on; at the end every failure is listed (and kept in the manifest).

Re-runs: finished shards are skipped. A shard that recorded failures is done again when any
failed clip's files changed since (a missing file appeared, a file was replaced: by size and
modification time), so fixing a file and re-running picks it up. Failures whose files did not
change are reported again, marked as from an earlier run; ``--retry_failed`` re-decodes them
anyway.

Frame counts: a clip must have the frames its sources say, within a slack of FRAME_SLACK = 2
frames (decoders and containers disagree by a frame or two at the end of real releases). Checked:
frames decoded vs the mp4 header's count; vs the count the split file implies (EPIC pre-cut
clips: ``stop - start`` RGB, ``int((stop - start) / 2)`` for each of flow u and v); flow u vs v
(HAC x vs y); and, in EPIC frame folders, at most 2 frames absent at the end of a segment.
Short by more than the slack fails the clip, naming the short file. Short within the slack, the
clip is stored with the frames there are (``num_frames`` / ``num_flow_frames`` in the index;
flow keeps the shorter of u and v) and the samplers wrap indices modulo that count, as mmaction's
SampleFrames (the peers' loaders) does for any short clip. More frames than expected are all
kept, as the peers decode and use every frame.

Exit status:
  0  every clip prepared
  1  finished, but some clips or split files failed (listed on stderr and in the manifest)
  2  usage or configuration error: bad flag, unknown domain, no split file found under --root,
     a malformed split file (no clip is decoded)
  3  --out cannot be created or written (checked before any work starts; a write failing later,
     e.g. a full disk, also stops the run with this status; finished shards are kept)
"""
import argparse
import collections
import concurrent.futures
import dataclasses
import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import platform
import sys
import time
import wave

import numpy as np

from mbcd_jax.data import epic, hac, layouts, store
from mbcd_jax.errors import ConfigError

AUDIO_RATE = 16000
READERS = {'epic': epic, 'hac': hac}
FRAME_SLACK = 2   # frames a stream may be short of its expected count (see the module doc)

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_OUTPUT = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How clips are stored (recorded in the manifest and in every shard's index part)."""
  short_side: int = 256       # px; the recipe's Resize(-1, 256)
  codec: str = 'jpeg'         # 'jpeg' (compact) | 'raw' (uint8 arrays, exact, ~10x larger)
  jpeg_quality: int = 90
  audio_rate: int = AUDIO_RATE


class MediaError(Exception):
  """A file could not be read or decoded; carries its path."""

  def __init__(self, path: str, msg: str):
    self.path = path
    super().__init__(msg)


class OutputError(Exception):
  """The output folder cannot be created or written; carries its path."""

  def __init__(self, path: str, msg: str):
    self.path = path
    super().__init__(msg)

  def __reduce__(self):   # raised in worker processes: must survive pickling
    return OutputError, (self.path, str(self))


# --------------------------------------------------------------------------------------------
# Decoding.
# --------------------------------------------------------------------------------------------
def resize_short(img: np.ndarray, short: int) -> np.ndarray:
  """Resize so the short side is ``short`` (mmcv's rescale rounding, bilinear as cv2)."""
  import cv2  # pylint: disable=g-import-not-at-top
  h, w = img.shape[:2]
  s = short / min(h, w)
  nh, nw = int(h * s + 0.5), int(w * s + 0.5)
  if (nh, nw) == (h, w):
    return img
  out = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
  return out[..., None] if img.ndim == 3 and out.ndim == 2 else out


def decode_mp4(path: str, short: int, channel: int | None = None,
               expected: int | None = None, expected_from: str = '') -> np.ndarray:
  """All frames of an mp4 -> uint8 ``[T, H, W, 3]`` (or ``[T, H, W]`` with ``channel``),
  short side ``short``.

  Flow videos are grey images stored as RGB video; like the peers (who decode RGB), we take one
  channel of the RGB decode. Fewer decoded frames than the header declares, or than
  ``expected`` (the count the split file implies, computed as ``expected_from`` says), by more
  than FRAME_SLACK is an error, not a shorter clip.
  """
  import av  # pylint: disable=g-import-not-at-top
  frames = []
  try:
    with av.open(path) as c:
      s = c.streams.video[0]
      s.thread_count = 1   # parallelism is across clips (worker processes)
      declared = s.frames
      for fr in c.decode(s):
        a = fr.to_ndarray(format='rgb24')
        if channel is not None:
          a = np.ascontiguousarray(a[..., channel])
        frames.append(resize_short(a, short))
  except (av.FFmpegError, IndexError, ValueError) as e:
    raise MediaError(path, f'cannot decode: {e}') from e
  if not frames:
    raise MediaError(path, 'no frames decoded')
  if declared and len(frames) < declared - FRAME_SLACK:
    raise MediaError(path, f'truncated: decoded {len(frames)} of the {declared} frames its '
                     f'header declares')
  if expected is not None and len(frames) < expected - FRAME_SLACK:
    raise MediaError(path, f'short clip: decoded {len(frames)} frames, the split file implies '
                     f'{expected} ({expected_from}); more than {FRAME_SLACK} short')
  return np.stack(frames)


def read_jpegs(src: layouts.Frames, short: int, grey: bool) -> np.ndarray:
  """A frame folder's frames -> uint8 ``[T, H, W, 3]`` (``[T, H, W]`` if grey).

  Up to FRAME_SLACK frames absent at the end give a shorter clip; any other absent frame, or an
  unreadable one, is an error naming it.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  if src.count <= 0:
    raise MediaError(src.path, f'no frames in [{src.first}, {src.first + src.count})')
  files = src.files()
  n = len(files)
  while n > 0 and len(files) - n < FRAME_SLACK and not os.path.exists(files[n - 1]):
    n -= 1
  if n == 0 or not os.path.exists(files[n - 1]):
    n = len(files)   # more than the slack absent: report the first absent frame below
  out = []
  for p in files[:n]:
    img = cv2.imread(p, cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if img is None:
      why = 'unreadable frame' if os.path.exists(p) else 'missing frame'
      raise MediaError(p, f'{why} ({n} frames wanted from {src.path}: '
                       f'[{src.first}, {src.first + src.count}))')
    out.append(resize_short(img if grey else img[..., ::-1], short))
  return np.stack(out)


def read_frames(src: layouts.Frames, short: int, grey: bool = False) -> np.ndarray:
  if src.kind == 'mp4':
    return decode_mp4(src.path, short, channel=0 if grey else None, expected=src.expected,
                      expected_from=src.expected_from)
  return read_jpegs(src, short, grey)


def read_wav(path: str, rate: int = AUDIO_RATE) -> np.ndarray:
  """A wav -> int16 ``[N]`` mono at ``rate`` (16-bit PCM read directly, else via PyAV)."""
  if not os.path.isfile(path):
    raise MediaError(path, 'missing wav')
  try:
    with wave.open(path, 'rb') as w:
      if w.getsampwidth() == 2 and w.getframerate() == rate:
        x = np.frombuffer(w.readframes(w.getnframes()), '<i2')
        ch = w.getnchannels()
        if ch > 1:
          x = x[:len(x) // ch * ch].reshape(-1, ch).mean(1).round().astype(np.int16)
        return x
  except (wave.Error, EOFError) as e:
    err = e
  else:
    err = None
  # Other sample formats or rates: decode and resample with FFmpeg.
  import av  # pylint: disable=g-import-not-at-top
  try:
    with av.open(path) as c:
      res = av.AudioResampler(format='s16', layout='mono', rate=rate)
      chunks = [f.to_ndarray().reshape(-1) for fr in c.decode(audio=0) for f in res.resample(fr)]
      chunks += [f.to_ndarray().reshape(-1) for f in res.resample(None)]
  except (av.FFmpegError, IndexError, ValueError) as e:
    raise MediaError(path, f'cannot decode audio: {err or e}') from e
  if not chunks:
    raise MediaError(path, 'no audio samples')
  return np.concatenate(chunks).astype(np.int16)


def cut_segment(x: np.ndarray, start_s: float, stop_s: float, rate: int) -> np.ndarray:
  """EPIC's cut: samples ``[round(t0 / dur * N), round(t1 / dur * N))``, dur = N / rate."""
  n = len(x)
  dur = n / rate
  a, b = int(np.round(start_s / dur * n)), int(np.round(stop_s / dur * n))
  return x[a:b]


def prepare_clip(clip: layouts.Clip, recipe: Recipe) -> tuple[bytes, dict]:
  """Decodes one clip -> (packed record, index entry). Raises MediaError."""
  arrays, entry = {}, dict(
      clip_id=clip.clip_id, domain=clip.domain, domain_index=clip.domain_index,
      split=clip.split, label=clip.label, sources=clip.sources())
  if clip.video is not None:
    v = read_frames(clip.video, recipe.short_side)
    arrays.update(store.encode_frames('video', v, recipe.codec, recipe.jpeg_quality))
    entry['num_frames'] = len(v)
  if clip.flow is not None:
    u = read_frames(clip.flow[0], recipe.short_side, grey=True)
    w = read_frames(clip.flow[1], recipe.short_side, grey=True)
    if u.shape[1:] != w.shape[1:]:
      raise MediaError(clip.flow[1].path, f'flow y frames {w.shape[1:]} != x frames {u.shape[1:]}')
    if abs(len(u) - len(w)) > FRAME_SLACK:
      (short_, ns), (other, no) = sorted(
          [(clip.flow[0].path, len(u)), (clip.flow[1].path, len(w))], key=lambda x: x[1])
      raise MediaError(short_, f'flow has {ns} frames but its other half has {no} ({other}); '
                       f'more than {FRAME_SLACK} apart')
    n = min(len(u), len(w))   # the two renders can differ by a frame at the end
    f = np.stack([u[:n], w[:n]], axis=-1)
    arrays.update(store.encode_frames('flow', f, recipe.codec, recipe.jpeg_quality))
    entry['num_flow_frames'] = n
  if clip.audio is not None:
    a = read_wav(clip.audio.path, recipe.audio_rate)
    if clip.audio.start_s is not None:
      a = cut_segment(a, clip.audio.start_s, clip.audio.stop_s, recipe.audio_rate)
    arrays['audio'] = a
    entry['num_audio_samples'] = len(a)
  arrays['label'] = np.int32(clip.label)
  arrays['domain'] = np.int32(clip.domain_index)
  return store.pack(arrays), entry


def prepare_shard(out_dir: str, name: str, clips: list[layouts.Clip], recipe: Recipe) -> dict:
  """Decodes ``clips`` into shard ``name``; returns its index part (entries + failures)."""
  records, entries, failures = [], [], []
  for clip in clips:
    if clip.missing:
      failures += [dataclasses.asdict(layouts.Failure(clip.clip_id, p, m, clip_state(clip, p)))
                   for m, p in zip(clip.missing, clip.missing_paths)]
      continue
    try:
      rec, entry = prepare_clip(clip, recipe)
    except MediaError as e:
      failures.append(dataclasses.asdict(
          layouts.Failure(clip.clip_id, e.path, str(e), clip_state(clip, e.path))))
      continue
    entry['pos'] = len(records)
    records.append(rec)
    entries.append(entry)
  part = dict(clip_ids=[c.clip_id for c in clips], recipe=dataclasses.asdict(recipe),
              entries=entries, failures=failures)
  try:
    store.write_shard(out_dir, name, records, part, compress=recipe.codec == 'raw')
  except OSError as e:   # e.g. the disk filled up: stop the run, it cannot succeed
    raise OutputError(out_dir, f'cannot write shard {name} in {out_dir}: '
                      f'{e.strerror or e}') from e
  return store.read_shard_part(out_dir, name)


# --------------------------------------------------------------------------------------------
# The command.
# --------------------------------------------------------------------------------------------
def plan(clips: list[layouts.Clip], clips_per_shard: int) -> list[tuple[str, list]]:
  """Clips -> [(shard name, clips)], per (domain, split) in split-file order (deterministic, so a
  re-run finds the same shards)."""
  groups = collections.defaultdict(list)
  for c in clips:
    groups[(c.domain, c.split)].append(c)
  jobs = []
  for (domain, split), cs in groups.items():
    for k in range(0, len(cs), clips_per_shard):
      jobs.append((store.shard_name(domain, split, k // clips_per_shard),
                   cs[k:k + clips_per_shard]))
  return jobs


def clip_state(clip: layouts.Clip, failed_path: str) -> str:
  """A fingerprint of a clip's files: which are missing, and size / modification time of the
  ones found and of ``failed_path``. A recorded failure whose fingerprint changed is stale."""
  def stat(p):
    try:
      st = os.stat(p)
    except OSError:
      return None
    return [st.st_size, st.st_mtime_ns]
  paths = [failed_path]
  for src in (clip.video, *(clip.flow or ())):
    if src is not None:
      paths.append(src.path)
  if clip.audio is not None:
    paths.append(clip.audio.path)
  state = json.dumps([sorted(clip.missing_paths), [[p, stat(p)] for p in paths]])
  return hashlib.sha1(state.encode()).hexdigest()[:16]


def _is_done(out_dir, name, clips, recipe, retry_failed) -> bool:
  """Whether shard ``name`` is finished for these clips and recipe, and none of its recorded
  failures is to be tried again (``retry_failed``, or its files changed since)."""
  if not store.shard_done(out_dir, name):
    return False
  part = store.read_shard_part(out_dir, name)
  if (part.get('clip_ids') != [c.clip_id for c in clips]
      or part.get('recipe') != dataclasses.asdict(recipe)):
    return False
  failures = part.get('failures') or []
  if retry_failed and failures:
    return False
  by_id = {c.clip_id: c for c in clips}
  return all(f['what'] in by_id and f.get('state') == clip_state(by_id[f['what']], f['path'])
             for f in failures)


def check_output(out: str) -> None:
  """Creates ``out`` (and its shard folder) and writes a probe file there.

  Raises:
    OutputError: naming the path that could not be created or written.
  """
  shards = os.path.join(out, store.SHARDS)
  try:
    os.makedirs(shards, exist_ok=True)
    probe = os.path.join(shards, f'.write-test-{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    where = f' ({e.filename})' if e.filename and e.filename != out else ''
    raise OutputError(out, f'output folder {out} is not writable: {e.strerror or e}'
                      f'{where}') from e


def _versions() -> dict:
  out = {'python': platform.python_version()}
  for pkg in ('numpy', 'av', 'opencv-python', 'opencv-python-headless', 'array_record',
              'pandas', 'grain'):
    try:
      out[pkg] = importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def run(dataset: str, root: str, out: str, *, domains=None, splits=('train', 'test'),
        modalities=('video', 'flow', 'audio'), layout: str = 'auto',
        recipe: Recipe = Recipe(), clips_per_shard: int = 32, workers: int | None = None,
        retry_failed: bool = False, progress: bool = True) -> dict:
  """Prepares ``dataset`` from ``root`` into ``out``; returns the index (with 'failures')."""
  if dataset not in READERS:
    raise ConfigError(f'unknown dataset {dataset!r}; known: {", ".join(READERS)}')
  reader = READERS[dataset]
  domains = tuple(domains or reader.DOMAINS)
  unknown = [d for d in domains if d not in reader.DOMAINS]
  if unknown:
    raise ConfigError(f'unknown {dataset} domain(s) {", ".join(unknown)}; known: '
                     f'{", ".join(reader.DOMAINS)}')
  existed = os.path.isdir(out)
  check_output(out)   # before any work: an unwritable --out must not cost a decode pass
  try:
    clips, split_failures = reader.read_clips(root, domains, splits, modalities, layout)
    if not clips:
      raise ConfigError(f'no clips found under {root}: ' +
                       '; '.join(str(f) for f in split_failures))
  except ValueError:
    if not existed:   # leave no empty output folder behind a configuration error
      for d in (os.path.join(out, store.SHARDS), out):
        try:
          os.rmdir(d)
        except OSError:
          pass
    raise
  jobs = plan(clips, clips_per_shard)
  todo = [(n, cs) for n, cs in jobs if not _is_done(out, n, cs, recipe, retry_failed)]
  redone = {n for n, _ in todo}
  workers = workers or os.cpu_count() or 1
  t0 = time.time()
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm(total=sum(len(cs) for _, cs in todo), unit='clip', disable=not progress,
             desc=f'prepare {dataset}', dynamic_ncols=True)
  crashed = []
  if workers == 1:
    for n, cs in todo:
      prepare_shard(out, n, cs, recipe)
      bar.update(len(cs))
  else:
    # 'spawn': the parent has FFmpeg and OpenCV loaded (and their threads); forking it can
    # deadlock or crash the children.
    ctx = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as ex:
      futs = {ex.submit(prepare_shard, out, n, cs, recipe): (n, cs) for n, cs in todo}
      for fut in concurrent.futures.as_completed(futs):
        n, cs = futs[fut]
        try:
          fut.result()
        except OutputError:
          for f in futs:
            f.cancel()
          raise
        except Exception as e:  # pylint: disable=broad-except
          # A worker died (e.g. a decoder crash): count the shard's clips, keep going.
          crashed += [dict(what=c.clip_id, path=n, error=f'shard worker failed: {e!r}')
                      for c in cs]
        bar.update(len(cs))
  bar.close()

  entries, failures, shards = [], [dataclasses.asdict(f) for f in split_failures], {}
  earlier = 0
  for n, _ in jobs:
    if not store.shard_done(out, n):
      continue
    part = store.read_shard_part(out, n)
    shards[n] = dict(sha256=part['sha256'], bytes=part['bytes'], records=part['records'])
    entries += [dict(e, shard=n) for e in part['entries']]
    failures += part['failures']
    if n not in redone:
      earlier += len(part['failures'])
  failures += crashed
  index = dict(format_version=store.FORMAT_VERSION, dataset=dataset,
               domains=list(reader.DOMAINS), classes=list(reader.CLASSES),
               entries=entries, failures=failures, failures_from_earlier_runs=earlier)
  try:
    store.write_json_atomic(os.path.join(out, store.INDEX), index)
  except OSError as e:
    raise OutputError(out, f'cannot write {os.path.join(out, store.INDEX)}: '
                      f'{e.strerror or e}') from e
  manifest = dict(
      format_version=store.FORMAT_VERSION, dataset=dataset, root=os.path.abspath(root),
      command=' '.join(sys.argv), created=time.strftime('%Y-%m-%dT%H:%M:%S'),
      layout=layout, domains=list(domains), splits=list(splits), modalities=list(modalities),
      recipe=dataclasses.asdict(recipe), clips_per_shard=clips_per_shard,
      versions=_versions(), shards=shards, num_clips=len(entries),
      num_failures=len(failures), failures_from_earlier_runs=earlier, failures=failures,
      seconds=round(time.time() - t0, 1))
  try:
    store.write_json_atomic(os.path.join(out, store.MANIFEST), manifest)
  except OSError as e:
    raise OutputError(out, f'cannot write {os.path.join(out, store.MANIFEST)}: '
                      f'{e.strerror or e}') from e
  return index


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              epilog=__doc__[__doc__.index('Exit status:'):],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--dataset', required=True, choices=sorted(READERS))
  p.add_argument('--root', required=True, help='the downloaded dataset (root or split folder)')
  p.add_argument('--out', required=True, help='the prepared store to write')
  p.add_argument('--domains', default='', help='comma separated; default all')
  p.add_argument('--splits', default='train,test')
  p.add_argument('--modalities', default='video,flow,audio')
  p.add_argument('--layout', default='auto', choices=('auto', 'clips', 'frames'),
                 help='EPIC: pre-cut mp4 clips, original frame folders, or whichever exists')
  p.add_argument('--short_side', type=int, default=256)
  p.add_argument('--codec', default='jpeg', choices=('jpeg', 'raw'))
  p.add_argument('--jpeg_quality', type=int, default=90)
  p.add_argument('--clips_per_shard', type=int, default=32)
  p.add_argument('--workers', type=int, default=0, help='0 = one per CPU core')
  p.add_argument('--retry_failed', action='store_true',
                 help='re-do finished shards that recorded failures, even where the failed '
                 'files did not change (changed ones are re-tried without this flag)')
  p.add_argument('--no_progress', action='store_true')
  a = p.parse_args(argv)
  split_list = lambda s: tuple(x for x in s.split(',') if x)
  try:
    index = run(a.dataset, a.root, a.out, domains=split_list(a.domains),
                splits=split_list(a.splits), modalities=split_list(a.modalities),
                layout=a.layout,
                recipe=Recipe(a.short_side, a.codec, a.jpeg_quality),
                clips_per_shard=a.clips_per_shard, workers=a.workers or None,
                retry_failed=a.retry_failed, progress=not a.no_progress)
  except OutputError as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_OUTPUT
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_USAGE
  counts = collections.Counter((e['domain'], e['split']) for e in index['entries'])
  print(f'prepared {len(index["entries"])} clips into {a.out}: ' +
        ', '.join(f'{d}/{s} {n}' for (d, s), n in sorted(counts.items())))
  if index['failures']:
    print(f'{len(index["failures"])} failure(s):', file=sys.stderr)
    for f in index['failures']:
      print(f'  {f["what"]}: {f["error"]} [{f["path"]}]', file=sys.stderr)
    if index['failures_from_earlier_runs']:
      print(f'{index["failures_from_earlier_runs"]} of these were recorded by an earlier run '
            'and their files have not changed since; fix them and re-run, or pass '
            '--retry_failed to decode them again', file=sys.stderr)
    return EXIT_FAILURES
  return EXIT_OK


if __name__ == '__main__':
  sys.exit(main())
