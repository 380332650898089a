"""The prepared clip store: record format, ArrayRecord shards, index and manifest.

A store is a folder::

    index.json       every prepared clip: id, domain, split, label, frame counts, shard, position
    manifest.json    how it was made: source root and paths, recipe, library versions,
                     sha256 of every shard, every failure
    shards/{domain}-{split}-{k:05d}.array_record   (+ .json: that shard's part of the index)

One ArrayRecord record = one clip, packed by ``pack``: a JSON header naming the arrays, then
their bytes (64-byte aligned, read back without a copy). Per modality a record holds either all
frames JPEG-encoded one by one (``{m}_jpeg`` bytes + ``{m}_offsets``, the default: a clip is
read whole but only the sampled frames are decoded) or raw ``uint8 [T, H, W, C]`` (``{m}``).
Flow frames are two grey images (x / u, then y / v). Audio is the 16 kHz mono waveform as int16.

A shard is written under a temporary name and renamed when complete; its ``.json`` part is
written (also atomically) after it. A shard counts as done only when both exist, so an
interrupted run never leaves a half shard that looks finished, and a re-run skips done shards.
"""
import hashlib
import json
import os

import numpy as np
from mbcd_jax.errors import ConfigError

FORMAT_VERSION = 1
INDEX = 'index.json'
MANIFEST = 'manifest.json'
SHARDS = 'shards'
_ALIGN = 64

PREPARE_HINT = ('prepare it with `python -m mbcd_jax.data.prepare --dataset={dataset} '
                '--root=/path/to/downloaded/{dataset} --out={dir}`, or run the embedded '
                'benchmark with `--config=configs/hac.py:synthetic`')


# --------------------------------------------------------------------------------------------
# Record format.
# --------------------------------------------------------------------------------------------
def pack(arrays: dict[str, np.ndarray]) -> bytes:
  """dict of numpy arrays -> bytes (see ``unpack``)."""
  header, chunks, offset = {}, [], 0
  for k, v in arrays.items():
    v = np.asarray(v)   # not ascontiguousarray: it turns scalars into shape [1]
    header[k] = [v.dtype.str, list(v.shape), offset]
    b = v.tobytes()     # C order whatever the layout
    pad = -len(b) % _ALIGN
    chunks.append(b + b'\0' * pad)
    offset += len(b) + pad
  h = json.dumps(header).encode()
  h += b' ' * (-(len(h) + 8) % _ALIGN)
  return len(h).to_bytes(8, 'little') + h + b''.join(chunks)


def unpack(buf: bytes) -> dict[str, np.ndarray]:
  """bytes -> dict of read-only numpy arrays viewing ``buf``."""
  n = int.from_bytes(buf[:8], 'little')
  header = json.loads(buf[8:8 + n])
  base = 8 + n
  out = {}
  for k, (dtype, shape, offset) in header.items():
    dt = np.dtype(dtype)
    count = int(np.prod(shape)) if shape else 1
    out[k] = np.frombuffer(buf, dt, count, base + offset).reshape(shape)
  return out


def _cv2():
  import cv2  # pylint: disable=g-import-not-at-top
  cv2.setNumThreads(1)   # one clip per worker process: OpenCV's own threads would oversubscribe
  return cv2


def encode_frames(name: str, frames: np.ndarray, codec: str = 'jpeg',
                  quality: int = 90) -> dict[str, np.ndarray]:
  """uint8 ``[T, H, W, C]`` (C = 3 RGB or 2 flow) -> record arrays for modality ``name``."""
  if codec == 'raw':
    return {name: np.asarray(frames, np.uint8)}
  if codec != 'jpeg':
    raise ConfigError(f"frame codec must be 'jpeg' or 'raw', got {codec!r}")
  cv2 = _cv2()
  params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
  blobs = []
  for f in frames:
    if f.shape[-1] == 3:
      blobs.append(cv2.imencode('.jpg', np.ascontiguousarray(f[..., ::-1]), params)[1])
    else:   # flow: one grey image per channel, as EPIC's own u / v frames
      blobs += [cv2.imencode('.jpg', np.ascontiguousarray(f[..., c]), params)[1]
                for c in range(f.shape[-1])]
  offsets = np.zeros(len(blobs) + 1, np.int64)
  offsets[1:] = np.cumsum([len(b) for b in blobs])
  return {f'{name}_jpeg': np.concatenate([b.reshape(-1) for b in blobs]) if blobs
          else np.zeros(0, np.uint8),
          f'{name}_offsets': offsets,
          f'{name}_shape': np.array(frames.shape, np.int64)}


def num_frames(record: dict, name: str) -> int:
  """Frames of modality ``name`` in a record (either codec)."""
  if name in record:
    return int(record[name].shape[0])
  return int(record[f'{name}_shape'][0])


def frame_shape(record: dict, name: str) -> tuple:
  """(T, H, W, C) of modality ``name`` in a record."""
  if name in record:
    return tuple(record[name].shape)
  return tuple(int(x) for x in record[f'{name}_shape'])


def decode_frames(record: dict, name: str, indices) -> np.ndarray:
  """The frames ``indices`` of modality ``name`` -> uint8 ``[len(indices), H, W, C]``."""
  if name in record:
    return np.asarray(record[name])[np.asarray(indices)]
  cv2 = _cv2()
  t, h, w, c = frame_shape(record, name)
  data, off = record[f'{name}_jpeg'], record[f'{name}_offsets']
  out = np.empty((len(indices), h, w, c), np.uint8)
  # OpenCV >= 4.10 decodes straight to RGB; older ones give BGR (reversed below).
  rgb_flag = getattr(cv2, 'IMREAD_COLOR_RGB', None)
  for j, i in enumerate(indices):
    if c == 3:
      img = cv2.imdecode(data[off[i]:off[i + 1]],
                         cv2.IMREAD_COLOR if rgb_flag is None else rgb_flag)
      out[j] = img if rgb_flag is not None else img[..., ::-1]
    else:
      for ch in range(c):
        k = int(i) * c + ch
        out[j, ..., ch] = cv2.imdecode(data[off[k]:off[k + 1]], cv2.IMREAD_GRAYSCALE)
  return out


# --------------------------------------------------------------------------------------------
# Shards.
# --------------------------------------------------------------------------------------------
def shard_name(domain: str, split: str, k: int) -> str:
  return f'{domain}-{split}-{k:05d}.array_record'


def shard_done(out_dir: str, name: str) -> bool:
  p = os.path.join(out_dir, SHARDS, name)
  return os.path.isfile(p) and os.path.isfile(p + '.json')


def write_json_atomic(path: str, obj) -> None:
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def write_shard(out_dir: str, name: str, records: list[bytes], part: dict,
                compress: bool = True) -> dict:
  """Writes shard ``name`` (temp name, then rename) and its index part; returns its
  manifest entry {sha256, bytes, records}."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  d = os.path.join(out_dir, SHARDS)
  os.makedirs(d, exist_ok=True)
  final = os.path.join(d, name)
  tmp = f'{final}.tmp-{os.getpid()}'
  # group_size:1 puts every record in its own chunk: random access reads one clip, not a group.
  # JPEG bytes do not compress: skip the (default zstd) compression, which only costs reads.
  w = array_record_module.ArrayRecordWriter(
      tmp, 'group_size:1' + (',uncompressed' if compress is False else ''))
  for r in records:
    w.write(r)
  w.close()
  sha = hashlib.sha256()
  with open(tmp, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      sha.update(block)
  os.replace(tmp, final)
  info = dict(sha256=sha.hexdigest(), bytes=os.path.getsize(final), records=len(records))
  write_json_atomic(final + '.json', dict(part, shard=name, **info))
  return info


def read_shard_part(out_dir: str, name: str) -> dict:
  with open(os.path.join(out_dir, SHARDS, name + '.json')) as f:
    return json.load(f)


# --------------------------------------------------------------------------------------------
# Index.
# --------------------------------------------------------------------------------------------
def load_index(data_dir: str | None, dataset: str = 'hac') -> dict:
  """The index of a prepared store; ValueError (one line, with the prepare command) if absent.

  Returns:
    {'format_version', 'dataset', 'domains', 'entries': [entry, ...], 'failures': [...]}; an
    entry has clip_id, domain, domain_index, split, label, shard, pos, num_frames,
    num_flow_frames, num_audio_samples.
  """
  hint = PREPARE_HINT.format(dataset=dataset, dir=data_dir or '/data/prepared')
  if not data_dir:
    raise ConfigError(f'config.data.dir is not set: {hint}')
  path = os.path.join(data_dir, INDEX)
  if not os.path.isfile(path):
    what = 'does not exist' if not os.path.isdir(data_dir) else f'has no {INDEX}'
    raise ConfigError(f'prepared data folder {data_dir} {what}: {hint}')
  with open(path) as f:
    index = json.load(f)
  if index.get('format_version') != FORMAT_VERSION:
    raise ConfigError(f'{path}: store format {index.get("format_version")} but this code reads '
                     f'{FORMAT_VERSION}; re-run the prepare command into a new folder')
  if index.get('dataset') != dataset:
    raise ConfigError(f'{path} holds dataset {index.get("dataset")!r}, the config asks for '
                     f'{dataset!r}')
  return index
