"""Tiny dataset trees in the exact layouts users download (see ``epic.py`` / ``hac.py``), with
known content.

Every pixel value says where it came from, so tests can check order and alignment after a
lossy codec: frame number ``i`` of a video is a flat colour ``R = 8 (i mod 30) + 12``,
``G = 8 (i div 30) + 12``, ``B = 40 * domain + 20``; flow frame ``i`` has ``u = 8 (i mod 30) + 12``
and ``v = 250 - 8 (i mod 30)``. Steps of 8 survive the codecs' +-4 rounding. EPIC's whole-video
wavs are a ramp (sample ``n`` has value ``n``), so a cut segment shows where it was cut; HAC's
wavs are a tone at ``(label + 1) * 1000`` Hz.
"""
import math
import os
import wave

import numpy as np

H, W = 32, 48            # frame size of every fixture video (yuv420p needs even sizes)
EPIC_FPS = 60
HAC_FPS = 24
RATE = 16000

EPIC_VIDEOS = {'D1': 'P08_01', 'D2': 'P01_01', 'D3': 'P22_01'}
HAC_DOMAINS = ('human', 'animal', 'cartoon')


def frame_colour(i: int, domain_index: int) -> tuple[int, int, int]:
  return 8 * (i % 30) + 12, 8 * (i // 30) + 12, 40 * domain_index + 20


def flow_values(i: int) -> tuple[int, int]:
  return 8 * (i % 30) + 12, 250 - 8 * (i % 30)


def video_frames(numbers, domain_index: int) -> np.ndarray:
  """uint8 [len(numbers), H, W, 3] flat frames coloured by frame number."""
  return np.stack([np.broadcast_to(np.array(frame_colour(i, domain_index), np.uint8),
                                   (H, W, 3)) for i in numbers])


def grey_frames(values) -> np.ndarray:
  return np.stack([np.full((H, W, 3), v, np.uint8) for v in values])


def write_mp4(path: str, frames: np.ndarray, fps: int, options: dict | None = None) -> None:
  """H.264, by default at constant quantiser 0 (near-lossless: only the RGB <-> YUV rounding
  remains); ``options`` gives other libx264 settings (the throughput benchmark's lossy clips)."""
  import av  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, 'w') as c:
    s = c.add_stream('libx264', rate=fps)
    s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], 'yuv420p'
    s.options = options or {'qp': '0', 'preset': 'ultrafast'}
    for f in frames:
      for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format='rgb24')):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


def write_wav(path: str, samples: np.ndarray, rate: int = RATE) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with wave.open(path, 'wb') as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(np.asarray(samples, '<i2').tobytes())


def write_jpeg(path: str, img: np.ndarray) -> None:
  import cv2  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  cv2.imwrite(path, img[..., ::-1] if img.ndim == 3 else img, [cv2.IMWRITE_JPEG_QUALITY, 100])


def truncate(path: str, keep: float = 0.5) -> None:
  """Cuts a file to ``keep`` of its size (a download that stopped half way)."""
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.truncate(int(size * keep))


# --------------------------------------------------------------------------------------------
# EPIC.
# --------------------------------------------------------------------------------------------
def _ts(frame: int) -> str:
  s = frame / EPIC_FPS
  return f'{int(s // 3600):02d}:{int(s // 60 % 60):02d}:{s % 60:05.2f}'


def epic_rows(domain: str, split: str, n: int, clip_frames: int | None = None) -> list[dict]:
  """Split-file rows: clip k of a split spans frames [start, start + 12 + 2k), or
  [start, start + clip_frames) when ``clip_frames`` is given."""
  vid = EPIC_VIDEOS[domain]
  base = 10 if split == 'train' else 200
  gap = 40 if clip_frames is None else clip_frames + 10
  rows = []
  for k in range(n):
    start = base + gap * k
    stop = start + (12 + 2 * k if clip_frames is None else clip_frames)
    label = (k + 3 * (split == 'test') + 'D1D2D3'.index(domain)) % 8
    rows.append(dict(uid=1000 * (1 + 'D1D2D3'.index(domain) // 2) + 100 * (split == 'test') + k,
                     participant_id=vid.split('_')[0], video_id=vid, narration=f'verb {label}',
                     start_timestamp=_ts(start), stop_timestamp=_ts(stop), start_frame=start,
                     stop_frame=stop, verb=f'verb{label}', verb_class=label))
  return rows


EPIC_VIDEO_FRAMES = 420     # length of the whole fixture videos (7 s at 60 fps)


def make_epic(root: str, layout: str = 'clips', placement: str = 'beside',
              counts=None, domains=('D1', 'D2', 'D3'), clip_frames: int | None = None) -> dict:
  """Writes an EPIC tree; returns {(domain, split): rows}.

  Args:
    layout: 'clips' (the release: pre-cut mp4s) or 'frames' (original JPEG frame folders).
    placement: where media folders sit relative to ``MM-SADA_Domain_Adaptation_Splits``:
      'beside' (SimMMDG), 'inside' (the split folder) or 'epic_mp4' (``<splits>/EPIC-mp4``).
    counts: {split: clips per domain}; default train 3, test 2.
    clip_frames: RGB frames of every clip (default 12 + 2k for clip k); clips must end within
      the EPIC_VIDEO_FRAMES of the whole-video wavs.
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top
  counts = counts or {'train': 3, 'test': 2}
  splits_dir = os.path.join(root, 'MM-SADA_Domain_Adaptation_Splits')
  media = {'beside': root, 'inside': splits_dir,
           'epic_mp4': os.path.join(splits_dir, 'EPIC-mp4')}[placement]
  os.makedirs(splits_dir, exist_ok=True)
  out = {}
  for d in domains:
    di, vid = 'D1D2D3'.index(d) // 2, EPIC_VIDEOS[d]
    for split, n in counts.items():
      rows = epic_rows(d, split, n, clip_frames)
      out[(d, split)] = rows
      pd.DataFrame(rows).to_pickle(os.path.join(splits_dir, f'{d}_{split}.pkl'))
      audio_dir = 'audio' if layout == 'clips' else 'rgb'
      write_wav(os.path.join(media, audio_dir, split, d, f'{vid}.wav'),
                np.arange(EPIC_VIDEO_FRAMES * RATE // EPIC_FPS) % 32768)
      if layout == 'frames':
        for i in range(1, EPIC_VIDEO_FRAMES + 1):
          write_jpeg(os.path.join(media, 'rgb', split, d, vid, f'frame_{i:010d}.jpg'),
                     video_frames([i], di)[0])
        for i in range(1, EPIC_VIDEO_FRAMES // 2 + 1):
          u, v = flow_values(i)
          for c, val in (('u', u), ('v', v)):
            write_jpeg(os.path.join(media, 'flow', split, d, vid, c, f'frame_{i:010d}.jpg'),
                       np.full((H, W), val, np.uint8))
        continue
      for r in rows:
        start, stop, label = r['start_frame'], r['stop_frame'], r['verb_class']
        write_mp4(os.path.join(media, 'video', split, d,
                               f'{d}_{vid}_{start}_{stop}_{label}.mp4'),
                  video_frames(range(start, stop), di), EPIC_FPS)
        s, nf = math.ceil(start / 2), int((stop - start) / 2)
        vals = [flow_values(i) for i in range(s, s + nf)]
        for c, j in (('u', 0), ('v', 1)):
          write_mp4(os.path.join(media, 'flow', split, d, f'{d}_{vid}_{s}_{s + nf}_{label}_{c}.mp4'),
                    grey_frames([x[j] for x in vals]), EPIC_FPS // 2)
  return out


# --------------------------------------------------------------------------------------------
# HAC.
# --------------------------------------------------------------------------------------------
def hac_rows(domain: str, split: str, n: int) -> list[tuple[str, int]]:
  return [(f'{domain[:2]}_{split}_{k:03d}.mp4', (k + HAC_DOMAINS.index(domain)) % 7)
          for k in range(n)]


def make_hac(root: str, placement: str = 'splits', counts=None, num_frames: int = 40,
             audio_seconds: float = 2.0) -> dict:
  """Writes a HAC tree; returns {(domain, split): rows}.

  Args:
    placement: media inside ``HAC_Splits/{domain}`` ('splits', the MMDG benchmark) or under
      ``HAC/{domain}`` ('hac', SimMMDG).
  """
  counts = counts or {'train': 3, 'test': 2}
  splits_dir = os.path.join(root, 'HAC_Splits')
  media = splits_dir if placement == 'splits' else os.path.join(root, 'HAC')
  os.makedirs(splits_dir, exist_ok=True)
  out = {}
  for di, d in enumerate(HAC_DOMAINS):
    for split, n in counts.items():
      rows = hac_rows(d, split, n)
      out[(d, split)] = rows
      with open(os.path.join(splits_dir, f'HAC_{split}_only_{d}.csv'), 'w', newline='') as f:
        f.write(''.join(f'{name},{label}\r\n' for name, label in rows))
      for name, label in rows:
        stem = name[:-4]
        write_mp4(os.path.join(media, d, 'videos', name), video_frames(range(num_frames), di),
                  HAC_FPS)
        vals = [flow_values(i) for i in range(num_frames)]
        for suffix, j in (('x', 0), ('y', 1)):
          write_mp4(os.path.join(media, d, 'flow', f'{stem}_flow_{suffix}.mp4'),
                    grey_frames([x[j] for x in vals]), HAC_FPS)
        t = np.arange(int(audio_seconds * RATE)) / RATE
        write_wav(os.path.join(media, d, 'audio', f'{stem}.wav'),
                  np.round(8000 * np.sin(2 * np.pi * 1000 * (label + 1) * t)))
  return out
