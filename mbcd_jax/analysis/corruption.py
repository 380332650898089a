"""Test-time corruptions at the raw level, seeded, five severities (the MMDG benchmark's
corruption test, ``test_HAC_corruption.py``, whose HAC-C follows READ's generators).

Where they act: on the uint8 frames a record stores (before resizing, cropping and
normalisation) and on the 16 kHz waveform (before the log-spectrogram), so the evaluated model's
own eval transform runs on the corrupted clip. On the embedded benchmark the audio record is
already a log-spectrogram; there Gaussian noise is added in its power domain (below).

  video  defocus_blur     READ's / ImageNet-C's: a disk of radius 3, 4, 6, 8, 10 px
                          (anti-aliased by a Gaussian of sigma 0.1, 0.5, 0.5, 0.5, 0.5) applied
                          to every channel of x / 255 (OpenCV filter2D, reflect-101 borders),
                          clipped to [0, 1], x 255, cast to uint8 by truncation as READ's
                          ``np.uint8`` before it saves the frame (READ then writes a JPEG of
                          quality 85: not reproduced).
  video, flow  gaussian_noise  ImageNet-C's: x / 255 + N(0, s^2), s = .08 .12 .18 .26 .38,
                          clipped; on flow it perturbs the stored flow field (128 = no motion),
                          a test the benchmark does not have.
  audio  wind             READ's weather overlay: the noise recording looped / cut to the clip,
                          gain +1, +2, +4, +6, +8 dB, added with saturation (pydub's
                          ``apply_gain`` + ``overlay``, bit-exact on int16: floor after the gain,
                          saturating add). Needs a recording (``--noise_wav``).
  audio  gaussian_snr     without a recording: white Gaussian noise at SNR 20, 15, 10, 5, 0 dB
                          relative to the clip's mean power. On the embedded benchmark's
                          spectrogram: log(exp(x) + n) with n exponential of mean
                          mean(exp(x)) / 10^(SNR / 10), the power spectrum of added white noise
                          without its (zero-mean) cross term.

Noise is drawn from ``np.random.default_rng([seed, severity, example, frame])``: the same for
every method, and a frame's corruption does not depend on which other frames are read.

A pre-generated HAC-C tree in the benchmark's layout is read by ``HacCSource``:
``HAC-C/{domain}/videos/defocus_blur/{clip}.mp4`` and ``HAC-C/{domain}/audio/wind/{stem}.wav``
(stereo; channel 0 is used, as the benchmark's loader does). It has one (unnamed) severity.
"""
import dataclasses
import math
import os
import wave
from typing import Any, Callable

import numpy as np

from mbcd_jax.data import store, transforms

SEVERITIES = (1, 2, 3, 4, 5)
DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))   # (disk radius px, alias sigma)
GAUSSIAN_STD = (0.08, 0.12, 0.18, 0.26, 0.38)                    # in units of the 0..255 range
WIND_GAIN_DB = (1, 2, 4, 6, 8)
SNR_DB = (20, 15, 10, 5, 0)


def _cv2():
  import cv2  # pylint: disable=g-import-not-at-top
  return cv2


# ---------------------------------------------------------------------------- frames
def disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
  """ImageNet-C's anti-aliased disk: a 17 x 17 support up to radius 8, else 2r + 1; normalised,
  then a 3 x 3 (5 x 5 above radius 8) Gaussian of sigma ``alias_blur``. float32."""
  half = 8 if radius <= 8 else radius
  ax = np.arange(-half, half + 1)
  x, y = np.meshgrid(ax, ax)
  d = np.asarray(x ** 2 + y ** 2 <= radius ** 2, np.float32)
  d /= d.sum()
  k = (3, 3) if radius <= 8 else (5, 5)
  return _cv2().GaussianBlur(d, ksize=k, sigmaX=alias_blur)


def defocus_blur(frame: np.ndarray, severity: int) -> np.ndarray:
  """uint8 ``[H, W, C]`` -> float64 ``[H, W, C]`` in [0, 255] (READ's value before its cast)."""
  radius, sigma = DEFOCUS[severity - 1]
  kernel = disk_kernel(radius, sigma)
  x = np.asarray(frame) / 255.0
  out = np.stack([_cv2().filter2D(x[..., c], -1, kernel) for c in range(x.shape[-1])], -1)
  return np.clip(out, 0, 1) * 255


def gaussian_noise(frame: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
  """uint8 ``[H, W, C]`` -> float64 in [0, 255]: ImageNet-C's gaussian_noise."""
  x = np.asarray(frame) / 255.0
  return np.clip(x + rng.normal(size=x.shape, scale=GAUSSIAN_STD[severity - 1]), 0, 1) * 255


def to_uint8(x: np.ndarray) -> np.ndarray:
  """READ's cast: truncation toward zero (values are in [0, 255])."""
  return np.asarray(x).astype(np.uint8)


# ---------------------------------------------------------------------------- audio
def wind_overlay(wave_: np.ndarray, noise: np.ndarray, gain_db: float) -> np.ndarray:
  """``wave_`` + the looped / cut ``noise`` at ``gain_db``, saturating.

  int16 inputs: pydub's arithmetic exactly (``floor(n * 10^(g/20))`` clamped to int16, then a
  saturating add) -> int16. Float inputs ([-1, 1]): ``clip(x + 10^(g/20) n, -1, 1)`` -> float64.
  """
  x, n = np.asarray(wave_), np.asarray(noise)
  if n.size == 0:
    raise ValueError('wind_overlay: empty noise recording')
  n = np.tile(n, -(-len(x) // len(n)))[:len(x)]
  factor = 10.0 ** (gain_db / 20.0)
  if x.dtype == np.int16 and n.dtype == np.int16:
    g = np.clip(np.floor(n.astype(np.float64) * factor), -32768, 32767)
    return np.clip(x.astype(np.int64) + g.astype(np.int64), -32768, 32767).astype(np.int16)
  x = x.astype(np.float64) / 32768.0 if x.dtype == np.int16 else x.astype(np.float64)
  n = n.astype(np.float64) / 32768.0 if n.dtype == np.int16 else n.astype(np.float64)
  return np.clip(x + factor * n, -1.0, 1.0)


def gaussian_snr(wave_: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
  """Waveform (int16 or float in [-1, 1]) + white noise at ``snr_db`` -> float64."""
  x = np.asarray(wave_)
  x = x.astype(np.float64) / 32768.0 if x.dtype == np.int16 else x.astype(np.float64)
  power = float(np.mean(x ** 2)) if x.size else 0.0
  return x + rng.normal(size=x.shape, scale=math.sqrt(power / 10 ** (snr_db / 10)))


def spectrogram_snr(logspec: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
  """A log-power spectrogram ``[F, S]`` with white noise at ``snr_db`` added in power."""
  p = np.exp(np.asarray(logspec, np.float64))
  n = rng.exponential(p.mean() / 10 ** (snr_db / 10), p.shape)
  return np.log(p + n).astype(np.asarray(logspec).dtype)


def read_wav_channel(path: str, rate: int = 16000, channel: int = 0) -> np.ndarray:
  """One channel of a 16-bit PCM wav -> int16 [N] at ``rate`` (linear resampling if the file's
  rate differs, then float64 in [-1, 1) since the samples are no longer integers)."""
  with wave.open(path, 'rb') as w:
    if w.getsampwidth() != 2:
      raise ValueError(f'{path}: only 16-bit PCM wavs are read, not {8 * w.getsampwidth()}-bit')
    ch, fr = w.getnchannels(), w.getframerate()
    x = np.frombuffer(w.readframes(w.getnframes()), '<i2')
  x = x[:len(x) // ch * ch].reshape(-1, ch)[:, min(channel, ch - 1)]
  if fr == rate:
    return x.copy()
  t = np.arange(int(len(x) * rate / fr)) * (fr / rate)
  return np.interp(t, np.arange(len(x)), x.astype(np.float64) / 32768.0)


# ---------------------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class Corruption:
  """One corruption of one modality: ``apply(x, severity, rng)`` on a frame or a waveform."""
  modality: str
  name: str
  apply: Callable[[np.ndarray, int, np.random.Generator], np.ndarray]

  @property
  def label(self) -> str:
    return f'{self.modality}:{self.name}'


def make_corruptions(modalities, noise: np.ndarray | None = None) -> list[Corruption]:
  """The suite's corruptions for a model of ``modalities``; audio 'wind' with a noise
  recording, else 'gaussian_snr'."""
  out = []
  if 'video' in modalities:
    out.append(Corruption('video', 'defocus_blur', lambda x, s, rng: defocus_blur(x, s)))
    out.append(Corruption('video', 'gaussian_noise', gaussian_noise))
  if 'flow' in modalities:
    out.append(Corruption('flow', 'gaussian_noise', gaussian_noise))
  if 'audio' in modalities:
    if noise is not None:
      out.append(Corruption('audio', 'wind',
                            lambda x, s, rng: wind_overlay(x, noise, WIND_GAIN_DB[s - 1])))
    else:
      out.append(Corruption('audio', 'gaussian_snr',
                            lambda x, s, rng: gaussian_snr(x, SNR_DB[s - 1], rng)))
  return out


def frames_read(transform: Any, record: dict, m: str) -> np.ndarray:
  """The frame indices of modality ``m`` that ``transform`` reads from ``record``: the
  deterministic eval sampling of a ``transforms.ClipTransform``, else every frame."""
  t = store.num_frames(record, m)
  if isinstance(transform, transforms.ClipTransform) and not transform.train:
    cfg = transform.cfg
    n, stride = ((cfg.video_frames, cfg.video_stride) if m == 'video'
                 else (cfg.flow_frames, cfg.flow_stride))
    return np.unique(transforms.sample_indices(t, n, stride, None))
  return np.arange(t)


class CorruptedSource:
  """A random-access source whose records have one modality corrupted (``Corruption``).

  Frames: only those the eval transform reads are decoded and corrupted (a per-frame
  corruption with per-frame noise gives what corrupting every frame would); the record then
  holds them raw at their places in an otherwise blank clip of the same length, so the
  transform's sampling and the audio window it places are unchanged.
  """

  def __init__(self, source, transform, corruption: Corruption, severity: int, seed: int = 0):
    if severity not in SEVERITIES:
      raise ValueError(f'severity must be one of {SEVERITIES}, got {severity}')
    self.source, self.transform = source, transform
    self.corruption, self.severity, self.seed = corruption, severity, seed

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i) -> dict:
    rec = dict(self.source[int(i)])
    m, c, s = self.corruption.modality, self.corruption, self.severity
    if m in ('video', 'flow'):
      idx = frames_read(self.transform, rec, m)
      frames = store.decode_frames(rec, m, idx)
      shape = store.frame_shape(rec, m)
      raw = np.zeros(shape, np.uint8) if len(idx) < shape[0] else np.empty(shape, np.uint8)
      for j, f in zip(idx, frames):
        rng = np.random.default_rng([self.seed, s, int(i), int(j)])
        raw[j] = to_uint8(c.apply(f, s, rng))
      for k in (f'{m}_jpeg', f'{m}_offsets', f'{m}_shape'):
        rec.pop(k, None)
      rec[m] = raw
    else:
      rng = np.random.default_rng([self.seed, s, int(i), 0])
      x = np.asarray(rec[m])
      if x.ndim == 2:   # the embedded benchmark: a log-spectrogram, not a waveform
        if c.name != 'gaussian_snr':
          raise ValueError(f'audio corruption {c.name!r} needs waveforms; the embedded '
                           "benchmark's audio is a spectrogram (use gaussian_snr: no --noise_wav)")
        rec[m] = spectrogram_snr(x, SNR_DB[s - 1], rng)
      else:
        rec[m] = c.apply(x, s, rng)
    return rec


class HacCSource:
  """Records of a prepared HAC split with one modality read from a HAC-C tree instead.

  Args:
    source: the split's ``PreparedSource``; entries: its index entries, in the same order.
    root: the HAC-C folder (holding ``{domain}/videos/defocus_blur/`` and
      ``{domain}/audio/wind/``); modality: 'video' or 'audio'.
    short_side: the store's frame size (``prepare --short_side``; 256 by default).
  """

  def __init__(self, source, entries: list, root: str, modality: str, short_side: int = 256):
    if modality not in ('video', 'audio'):
      raise ValueError(f"HAC-C has video and audio corruptions, not {modality!r}")
    self.source, self.entries, self.root = source, entries, root
    self.modality, self.short_side = modality, short_side

  def __len__(self) -> int:
    return len(self.source)

  def path(self, i: int) -> str:
    e = self.entries[int(i)]
    stem = e['clip_id'].split('-', 2)[2]   # '{domain}-{split}-{stem}' (data/hac.py)
    if self.modality == 'video':
      return os.path.join(self.root, e['domain'], 'videos', 'defocus_blur', stem + '.mp4')
    return os.path.join(self.root, e['domain'], 'audio', 'wind', stem + '.wav')

  def __getitem__(self, i) -> dict:
    from mbcd_jax.data import prepare  # pylint: disable=g-import-not-at-top  (PyAV, OpenCV)
    rec = dict(self.source[int(i)])
    path = self.path(i)
    if self.modality == 'video':
      for k in ('video_jpeg', 'video_offsets', 'video_shape'):
        rec.pop(k, None)
      rec['video'] = prepare.decode_mp4(path, self.short_side)
    else:
      rec['audio'] = read_wav_channel(path)
    return rec
