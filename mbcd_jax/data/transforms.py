"""Per-example transforms: a prepared clip record -> a model-ready example (docs/method.md §9).

The peers' recipe (mmaction2 pipelines + their audio code), reproduced step by step:

- temporal sampling (``SampleFrames``, one clip): RGB 32 frames at stride 2, flow 8 at stride 4;
  train: a uniformly random start among those that fit, test: the centred start; indices wrap
  (``mod T``) when the clip is shorter than the window. RGB and flow are sampled independently,
  as the peers run two separate pipelines.
- spatial: short side 256 (already done by prepare when stored at 256), then
  train: RandomResizedCrop (area 0.08-1, aspect 3/4-4/3, 10 tries, centre-square fallback)
  resized to 224 and a horizontal flip with p = 0.5 that inverts flow-x (``255 - x``, mmcv's
  ``iminvert``: a mirrored horizontal motion changes sign around 128); test: centre crop 224.
- normalisation: RGB ``(x - ImageNet mean) / std`` on the 0-255 scale; flow ``(x - 128) / 128``.
- audio: the clip's waveform window (EPIC: the narration segment; HAC: the span of the sampled
  RGB frames at 24 fps), first 160,000 samples, tiled if shorter, clipped to [-1, 1];
  ``log(spectrogram + 1e-7)``, per-sample z-score; train: + U(-0.05, 0.05) noise, then 9
  consecutive frequency rows (start uniform in [0, 247)) set to 0.

Outputs: 'video' float32 ``[T, S, S, 3]``, 'flow' float32 ``[Tf, S, S, 2]``, 'audio' float32
``[257, 1004, 1]``, 'label' / 'domain' int32 scalars; 'mask' passes through if present. With
``normalize=False`` video and flow stay uint8 (normalised later with the same tables, on the
device: ``input_pipeline.normalize_frames``).
"""
import dataclasses

import numpy as np

from mbcd_jax.data import spectrogram, store
from mbcd_jax.errors import ConfigError

RGB_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
RGB_STD = np.array([58.395, 57.12, 57.375], np.float32)
# uint8 -> normalised float32 look-up tables [256, C]: a table look-up gives the arithmetic's
# float32 values, and is faster than it (the device half, input_pipeline.normalize_frames,
# gathers from these very tables).
RGB_LUT = (np.arange(256, dtype=np.float32)[:, None] - RGB_MEAN) / RGB_STD
FLOW_LUT = np.repeat(((np.arange(256, dtype=np.float32) - 128.0) / 128.0)[:, None], 2, 1)


def normalize(frames: np.ndarray, lut: np.ndarray) -> np.ndarray:
  """uint8 ``[..., C]`` -> float32 ``lut[x, c]``.

  OpenCV's LUT, all channels in one pass: 7 ms for a 32x224x224x3 clip on one core where
  numpy's per-channel gather takes 32 ms (the host's largest per-clip cost after it).
  """
  x = np.ascontiguousarray(frames)   # a flipped crop is a negative-stride view
  c = x.shape[-1]
  out = _cv2().LUT(x.reshape(1, -1, c), np.ascontiguousarray(lut.reshape(1, 256, c)))
  return out.reshape(x.shape)


def normalize_rgb(frames: np.ndarray) -> np.ndarray:
  """uint8 RGB ``[..., 3]`` -> float32 ``(x - mean) / std`` with ImageNet statistics."""
  return normalize(frames, RGB_LUT)


def normalize_flow(frames: np.ndarray) -> np.ndarray:
  """uint8 flow ``[..., 2]`` (128 = no motion) -> float32 ``(x - 128) / 128``."""
  return normalize(frames, FLOW_LUT)


@dataclasses.dataclass(frozen=True)
class ClipConfig:
  """``config.data.clip``; every field has the paper recipe's value by default."""
  video_frames: int = 32        # RGB frames per example
  video_stride: int = 2         # in source frames
  flow_frames: int = 8
  flow_stride: int = 4
  crop_size: int = 224          # px
  resize_short: int = 256       # px, short side before cropping
  area_range: tuple = (0.08, 1.0)
  aspect_range: tuple = (3 / 4, 4 / 3)
  flip_prob: float = 0.5
  audio_samples: int = 160000   # 10 s at 16 kHz
  audio_rate: int = 16000       # Hz
  audio_noise: float = 0.05     # train: U(-a, a) added to the z-scored log-spectrogram
  freq_mask: int = 9            # train: rows of the frequency band set to 0
  hac_audio_fps: float = 24.0   # HAC: frame rate assumed to place the audio window

  @classmethod
  def from_config(cls, clip) -> 'ClipConfig':
    """From a dict / ConfigDict with any subset of the fields (unknown keys are an error)."""
    if clip is None:
      return cls()
    d = dict(clip.to_dict() if hasattr(clip, 'to_dict') else clip)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise ConfigError(f'config.data.clip: unknown field(s) {sorted(unknown)}; known: '
                       f'{", ".join(sorted(names))}')
    for k in ('area_range', 'aspect_range'):
      if k in d:
        d[k] = tuple(d[k])
    return cls(**d)


# --------------------------------------------------------------------------------------------
# Temporal sampling.
# --------------------------------------------------------------------------------------------
def sample_indices(num_frames: int, clip_len: int, stride: int,
                   rng: np.random.Generator | None) -> np.ndarray:
  """mmaction ``SampleFrames(clip_len, stride, num_clips=1)`` -> int64 ``[clip_len]``.

  Train (``rng`` given): start uniform in ``[0, T - clip_len * stride]`` if the window fits,
  else 0. Test: ``int((T - window + 1) / 2)`` if it fits, else 0. Indices wrap modulo T.
  """
  if num_frames <= 0:
    raise ValueError('cannot sample frames from an empty clip')
  window = clip_len * stride
  room = num_frames - window + 1
  if rng is not None:
    offset = int(rng.integers(room)) if room > 0 else 0
  else:
    offset = int(room / 2.0) if room > 0 else 0
  return (offset + np.arange(clip_len) * stride) % num_frames


# --------------------------------------------------------------------------------------------
# Spatial.
# --------------------------------------------------------------------------------------------
def _cv2():
  import cv2  # pylint: disable=g-import-not-at-top
  cv2.setNumThreads(1)
  return cv2


def resized_size(h: int, w: int, short: int) -> tuple[int, int]:
  """(h, w) with the short side scaled to ``short``, rounded as mmcv."""
  s = short / min(h, w)
  return int(h * s + 0.5), int(w * s + 0.5)


def random_resized_crop_box(h: int, w: int, rng: np.random.Generator, area_range=(0.08, 1.0),
                            aspect_range=(3 / 4, 4 / 3), tries: int = 10):
  """mmaction's RandomResizedCrop box -> (x0, y0, x1, y1)."""
  log_ar = np.log(aspect_range)
  ars = np.exp(rng.uniform(log_ar[0], log_ar[1], size=tries))
  areas = rng.uniform(*area_range, size=tries) * h * w
  cw = np.round(np.sqrt(areas * ars)).astype(np.int64)
  ch = np.round(np.sqrt(areas / ars)).astype(np.int64)
  for i in range(tries):
    if 0 < cw[i] <= w and 0 < ch[i] <= h:
      x = int(rng.integers(w - cw[i] + 1))
      y = int(rng.integers(h - ch[i] + 1))
      return x, y, x + int(cw[i]), y + int(ch[i])
  s = min(h, w)   # fallback: the centred square
  x, y = (w - s) // 2, (h - s) // 2
  return x, y, x + s, y + s


def center_crop_box(h: int, w: int, size: int):
  x, y = (w - size) // 2, (h - size) // 2
  if x < 0 or y < 0:
    raise ConfigError(f'centre crop {size} is larger than the frames ({h}x{w}); lower '
                     f'config.data.clip.crop_size or raise resize_short')
  return x, y, x + size, y + size


def _resize_frames(frames: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """uint8 ``[T, h, w, C]`` -> ``[T, hw[0], hw[1], C]`` bilinear (cv2, as mmcv)."""
  if frames.shape[1:3] == tuple(hw):
    return frames
  cv2 = _cv2()
  out = np.empty((len(frames), hw[0], hw[1], frames.shape[-1]), np.uint8)
  for i, f in enumerate(frames):
    r = cv2.resize(f, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
    out[i] = r.reshape(out.shape[1:])
  return out


def spatial(frames: np.ndarray, cfg: ClipConfig, rng: np.random.Generator | None,
            is_flow: bool) -> np.ndarray:
  """uint8 frames at their stored size -> uint8 ``[T, crop, crop, C]`` (crop, resize, flip)."""
  t, h, w, c = frames.shape
  rh, rw = resized_size(h, w, cfg.resize_short)
  frames = _resize_frames(frames, (rh, rw))   # no-op when stored at resize_short
  if rng is None:
    x0, y0, x1, y1 = center_crop_box(rh, rw, cfg.crop_size)
    return frames[:, y0:y1, x0:x1]
  x0, y0, x1, y1 = random_resized_crop_box(rh, rw, rng, cfg.area_range, cfg.aspect_range)
  out = _resize_frames(np.ascontiguousarray(frames[:, y0:y1, x0:x1]),
                       (cfg.crop_size, cfg.crop_size))
  if rng.random() < cfg.flip_prob:
    out = _flip_frames(out)
    if is_flow:
      out[..., 0] = 255 - out[..., 0]
  return out


def _flip_frames(frames: np.ndarray) -> np.ndarray:
  """uint8 ``[T, h, w, C]`` mirrored left-right, as a new contiguous array.

  Not the ``[:, :, ::-1]`` view: every later copy of a negative-stride view (normalisation,
  the batch's stack) runs 3-4x slower; OpenCV's flip writes it in ~1.5 ms per RGB clip.
  """
  cv2 = _cv2()
  out = np.empty_like(frames)
  for i, f in enumerate(frames):
    out[i] = cv2.flip(f, 1).reshape(out.shape[1:])
  return out


# --------------------------------------------------------------------------------------------
# Audio.
# --------------------------------------------------------------------------------------------
def audio_window(wave: np.ndarray, start_s: float | None, stop_s: float | None,
                 rate: int) -> np.ndarray:
  """The samples of ``[start_s, stop_s]`` (peers' rounding) or all if None -> float64 [-1, 1)."""
  x = np.asarray(wave)
  x = x.astype(np.float64) / 32768.0 if x.dtype == np.int16 else x.astype(np.float64)
  if start_s is not None and len(x):
    dur = len(x) / rate
    a, b = int(np.round(start_s / dur * len(x))), int(np.round(stop_s / dur * len(x)))
    x = x[a:b]
  return x


def audio_features(x: np.ndarray, cfg: ClipConfig, rng: np.random.Generator | None,
                   rate: int | None = None) -> np.ndarray:
  """Waveform window -> float32 ``[F, S, 1]`` z-scored log-spectrogram (+ train noise/mask)."""
  n = cfg.audio_samples
  x = x[:n]
  if len(x) == 0:
    x = np.zeros(n)   # the peers' choice for an empty window
  if len(x) < n:
    x = np.tile(x, -(-n // len(x)))[:n]
  x = np.clip(x, -1.0, 1.0)
  spec = spectrogram.log_spectrogram(x, rate or cfg.audio_rate)
  spec = (spec - spec.mean()) / (spec.std() + 1e-9)
  if rng is not None:
    spec = spec + rng.uniform(-cfg.audio_noise, cfg.audio_noise, spec.shape)
    top = spec.shape[0] - 1 - cfg.freq_mask   # 256 - 9 starts, as the peers
    s = int(rng.integers(max(top, 1)))
    spec[s:s + cfg.freq_mask] = 0.0
  return spec.astype(np.float32)[..., None]


# --------------------------------------------------------------------------------------------
# The example transform.
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ClipTransform:
  """Record -> example. ``train``: call as ``fn(record, rng)`` (grain ``random_map``); else
  ``fn(record)``, deterministic.

  Attributes:
    dataset: 'epic' | 'hac' (decides how the audio window is placed).
    modalities: which of 'video', 'flow', 'audio' to produce.
    normalize: video / flow as normalised float32; False: the uint8 crops.
  """
  dataset: str
  modalities: tuple
  cfg: ClipConfig = ClipConfig()
  train: bool = False
  normalize: bool = True

  def __call__(self, record: dict, rng: np.random.Generator | None = None) -> dict:
    if self.train and rng is None:
      raise ValueError('the train transform needs an rng (use grain random_map)')
    rng = rng if self.train else None
    cfg, out, inds = self.cfg, {}, None
    if 'video' in self.modalities:
      inds = sample_indices(store.num_frames(record, 'video'), cfg.video_frames,
                            cfg.video_stride, rng)
      v = spatial(store.decode_frames(record, 'video', inds), cfg, rng, is_flow=False)
      out['video'] = normalize_rgb(v) if self.normalize else v
    if 'flow' in self.modalities:
      finds = sample_indices(store.num_frames(record, 'flow'), cfg.flow_frames,
                             cfg.flow_stride, rng)
      f = spatial(store.decode_frames(record, 'flow', finds), cfg, rng, is_flow=True)
      out['flow'] = normalize_flow(f) if self.normalize else f
      inds = finds if inds is None else inds
    if 'audio' in self.modalities:
      rate = int(record.get('audio_rate', cfg.audio_rate))
      start = stop = None
      if self.dataset == 'hac':
        if inds is None:   # audio alone: place the window as the RGB sampling would
          total = int(record.get('num_frames', 0)) or max(
              1, int(len(record['audio']) / rate * cfg.hac_audio_fps))
          inds = sample_indices(total, cfg.video_frames, cfg.video_stride, rng)
        # As the peers: first to last sampled frame at 24 fps. A wrapped (short) clip gives an
        # empty span, which the peers turn into silence; kept for parity.
        start, stop = inds[0] / cfg.hac_audio_fps, inds[-1] / cfg.hac_audio_fps
      x = audio_window(record['audio'], start, stop, rate)
      out['audio'] = audio_features(x, cfg, rng, rate)
    out['label'] = np.int32(record['label'])
    out['domain'] = np.int32(record['domain'])
    if 'mask' in record:
      out['mask'] = np.float32(record['mask'])
    return out
