r"""Train-pipeline throughput from prepared shards vs the peers' decode-the-mp4-per-sample way.

  python benchmarks/pipeline_throughput.py            # ~4 min on 2 CPU cores
  python benchmarks/pipeline_throughput.py --clips_per_domain=4 --seconds=5   # quick look

Writes a HAC-layout tree of textured, H.264-compressed clips (340 x 256, 24 fps; RGB, flow x/y,
16 kHz wav), prepares it, and measures clips/s of the training pipeline at the paper's shapes
(RGB 32 x 224 x 224, flow 8 x 224 x 224, audio 257 x 1004, per-example random transforms):

- ours: the training loader (``input_pipeline.make_loader``, ``data.source='prepared'``) over
  the prepared ArrayRecord shards, in-process with 1 and 2 read threads
  (``data.read_threads``), and with worker processes (``data.num_workers``);
- peers: per sample, decode the whole RGB mp4 and both flow mp4s with PyAV and read the wav (as
  their loaders do, one process), then the same sampling / crop / audio transform.
Prints a markdown table.
"""
import argparse
import dataclasses
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mbcd_jax import config_lib, input_pipeline  # noqa: E402
from mbcd_jax.data import pipeline, prepare, store  # noqa: E402
from tests.data import fixtures  # noqa: E402  (the tests' media writers)

W, H, FPS, RATE = 340, 256, 24, 16000


def _texture(rng, h, w, channels):
  import cv2
  t = rng.integers(0, 256, (h, w, channels), np.uint8)
  return cv2.GaussianBlur(t, (0, 0), 3).reshape(h, w, channels)


def _write_mp4(path, frames):
  # Lossy, like the release's clips (the fixtures' default is near-lossless).
  fixtures.write_mp4(path, frames, FPS, {'crf': '23', 'preset': 'veryfast'})


def make_tree(root, clips_per_domain, frames, seconds_audio):
  """HAC layout: HAC_Splits/HAC_train_only_{d}.csv + HAC_Splits/{d}/{videos,flow,audio}."""
  rng = np.random.default_rng(0)
  tex = _texture(rng, H, W + 2 * frames, 3)
  ftex = _texture(rng, H, W + frames, 1)[..., 0]
  video = np.stack([tex[:, 2 * i:2 * i + W] for i in range(frames)])   # a panning scene
  fx = np.stack([np.repeat(ftex[:, i:i + W, None], 3, -1) for i in range(frames)])
  fy = fx[:, ::-1]
  splits = os.path.join(root, 'HAC_Splits')
  for di, d in enumerate(('human', 'animal', 'cartoon')):
    for split, n in (('train', clips_per_domain), ('test', 1)):
      rows = [f'{d}_{split}_{k:03d}.mp4' for k in range(n)]
      os.makedirs(splits, exist_ok=True)
      with open(os.path.join(splits, f'HAC_{split}_only_{d}.csv'), 'w') as f:
        f.write(''.join(f'{r},{(k + di) % 7}\r\n' for k, r in enumerate(rows)))
      for r in rows:
        stem = r[:-4]
        _write_mp4(os.path.join(splits, d, 'videos', r), video)
        _write_mp4(os.path.join(splits, d, 'flow', f'{stem}_flow_x.mp4'), fx)
        _write_mp4(os.path.join(splits, d, 'flow', f'{stem}_flow_y.mp4'), fy)
        fixtures.write_wav(os.path.join(splits, d, 'audio', f'{stem}.wav'),
                           rng.integers(-8000, 8000, int(seconds_audio * RATE)))


def _config(out, batch, workers, threads):
  """The HAC paper config on the prepared store (clip recipe at its defaults)."""
  c = config_lib.dataset_config('hac', ('animal', 'cartoon'), 'human')
  c.data.dir, c.data.batch_size, c.data.eval_batch_size = out, batch, batch
  c.data.num_workers, c.data.read_threads = workers, threads
  return c


class _Repeated:
  """``source`` read ``reps`` times over (index ``i`` -> ``source[i % len(source)]``)."""

  def __init__(self, source, reps):
    self._source, self._reps = source, reps

  def __len__(self):
    return len(self._source) * self._reps

  def __getitem__(self, i):
    return self._source[int(i) % len(self._source)]


def time_ours(out, batch, workers, threads, seconds, reps=100):
  """clips/s of the training loader, and seconds to its first batch.

  The epoch repeats the few benchmark clips ``reps`` times: a real epoch has thousands of clips,
  so the per-epoch start-up (worker processes, first reads), reported apart, is not throughput.
  """
  loader = input_pipeline.make_loader(_config(out, batch, workers, threads), 'train')
  loader = dataclasses.replace(loader, source=_Repeated(loader.source, reps))
  t0 = time.perf_counter()
  it = loader.epoch(0)
  b = next(it)
  startup = time.perf_counter() - t0
  assert b['video'].shape[1:] == (32, 224, 224, 3) and b['audio'].shape[1:] == (257, 1004, 1)
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    next(it)
    n += batch
  rate = n / (time.perf_counter() - t0)
  it.close()   # stops the worker processes
  return rate, startup


def peers_record(entry):
  """The peers' per-sample work: decode the whole mp4s, read the wav."""
  src = entry['sources']
  video = prepare.decode_mp4(src['video'], 256)
  u = prepare.decode_mp4(src['flow'][0], 256, channel=0)
  v = prepare.decode_mp4(src['flow'][1], 256, channel=0)
  n = min(len(u), len(v))
  return dict(video=video, flow=np.stack([u[:n], v[:n]], -1),
              audio=prepare.read_wav(src['audio']), label=np.int32(entry['label']),
              domain=np.int32(entry['domain_index']), num_frames=np.int32(len(video)))


def time_peers(out, seconds):
  index = store.load_index(out, 'hac')
  entries = pipeline.select(index, 'train', ('animal', 'cartoon'), 'human')
  tf = pipeline.make_transform(_config(out, 1, 0, 1).data, train=True)
  rng = np.random.default_rng(0)
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    ex = tf(peers_record(entries[n % len(entries)]), rng)
    assert ex['video'].shape == (32, 224, 224, 3)
    n += 1
  return n / (time.perf_counter() - t0)


def _du(path):
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--clips_per_domain', type=int, default=8)
  p.add_argument('--frames', type=int, default=96, help='frames per clip (4 s at 24 fps)')
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--seconds', type=float, default=30.0, help='timing per row, all rounds')
  p.add_argument('--workers', type=int, default=2)
  p.add_argument('--rounds', type=int, default=3, help='alternating rounds; median reported')
  p.add_argument('--dir', default='', help='work folder (default: a temporary one)')
  a = p.parse_args()
  root = a.dir or tempfile.mkdtemp(prefix='mbcd_pipeline_bench_')
  src, out = os.path.join(root, 'src'), os.path.join(root, 'prepared')
  t = time.perf_counter()
  make_tree(src, a.clips_per_domain, a.frames, a.frames / FPS)
  print(f'fixture tree: {time.perf_counter() - t:.1f}s, {_du(src) / 2**20:.1f} MiB', flush=True)
  t = time.perf_counter()
  index = prepare.run('hac', src, out, workers=os.cpu_count(), progress=False)
  prep_s = time.perf_counter() - t
  n_clips = len(index['entries'])
  print(f'prepare: {n_clips} clips in {prep_s:.1f}s ({n_clips / prep_s:.2f} clips/s, '
        f'{os.cpu_count()} processes), store {_du(out) / 2**20:.1f} MiB', flush=True)

  # Rounds alternate the rows, and each row reports its median: on a shared machine, load from
  # other processes then biases every row alike instead of whichever ran during a burst.
  cases = [('peers: decode mp4s per sample, 1 process', None, None),
           ('ours: prepared shards, in-process, 1 thread', 0, 1),
           ('ours: prepared shards, in-process, 2 threads', 0, 2),
           (f'ours: prepared shards, {a.workers} worker processes', a.workers, 1)]
  per = a.seconds / a.rounds
  rates = {c[0]: [] for c in cases}
  startups = {c[0]: [] for c in cases}
  for r in range(a.rounds):
    for label, workers, threads in cases:
      if workers is None:
        rates[label].append(time_peers(out, per))
      else:
        rate, startup = time_ours(out, a.batch, workers, threads, per)
        rates[label].append(rate)
        startups[label].append(startup)
      print(f'round {r}: {label}: {rates[label][-1]:.2f} clips/s '
            f'(load average {os.getloadavg()[0]:.1f})', flush=True)
  rows = [(label, float(np.median(rates[label])),
           f'{np.median(startups[label]):.1f}' if startups[label] else '-')
          for label, _, _ in cases]
  peers = rows[0][1]
  print()
  print(f'load average (1 min) at the end: {os.getloadavg()[0]:.1f}')
  print(f'Train pipeline at the paper shapes (RGB 32x224x224, flow 8x224x224, audio 257x1004), '
        f'{os.cpu_count()} CPU cores, {a.frames}-frame {W}x{H} clips, batch {a.batch}:')
  print()
  print('| pipeline | clips/s | vs peers | first batch of an epoch, s |')
  print('|---|---:|---:|---:|')
  for label, r, startup in rows:
    print(f'| {label} | {r:.2f} | {r / peers:.1f}x | {startup} |')


if __name__ == '__main__':
  main()
