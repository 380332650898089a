r"""Train-pipeline cost and throughput from prepared shards vs the peers' decode-the-mp4 way.

  python -m benchmarks.pipeline_throughput            # ~8 min on 2 busy CPU cores
  python -m benchmarks.pipeline_throughput --clips_per_domain=2 --seconds=6 --rounds=1  # quick
  python -m benchmarks.pipeline_throughput --step_flops   # + the cores-needed estimate (+1 min)
  python -m benchmarks.pipeline_throughput --seconds=0    # the cost tables only (~2 min)

Writes a HAC-layout tree of textured, H.264-compressed clips (340 x 256, 24 fps; RGB, flow x/y,
16 kHz wav), prepares it once per frame format (``prepare --codec``: 'jpeg', the default, every
frame a JPEG; 'raw', uint8 arrays, zstd-compressed shards), and measures, at the paper's
shapes (RGB 32 x 224 x 224, flow 8 x 224 x 224, audio 257 x 1004, train-time random transforms):

1. the cost of one training example per core: one thread, clip by clip, split into read
   (ArrayRecord read + unpack; zstd for raw), decode (only the sampled frames: 32 RGB, 8 x 2
   flow), spatial (RandomResizedCrop + resize to 224 + flip), normalise (uint8 -> float32),
   audio (window, spectrogram, z-score, noise, mask), collate (the copy into the batch). The
   staged example is checked equal to ``ClipTransform``'s. "without normalise" is the host's
   cost when uint8 frames are shipped and normalised in the jitted step
   (``data.normalize_on_device``; collate then copies uint8, counted as float32 here).
2. the loader's clips/s (``input_pipeline.make_loader``, ``data.source='prepared'``): in-process
   with 1 and 2 read threads (``data.read_threads``) and with worker processes
   (``data.num_workers``), per frame format; and the peers' way: per sample, decode the whole
   RGB mp4 and both flow mp4s with PyAV and read the wav (one process), then the same
   sampling / crop / audio transform. Disk bytes per clip of each.
3. with ``--step_flops``: the MBCD train step's FLOPs at the paper shapes (XLA's cost analysis
   of the lowered, not compiled, step: ``benchmarks/device_check.py``'s builders, SlowFast-R101
   + SlowOnly-R50 + ResNet-18, bfloat16, BN mode 'port', batch 16; compiling it takes tens of
   minutes on 2 CPU cores, and the unoptimised HLO still holds work the compiler may merge or
   drop, so the count leans high), the clips/s an accelerator at ``--peak_tflops`` x ``--mfu``
   consumes, and the host cores that takes at the measured cost per clip.

Every measurement records the load average (``os.getloadavg()``): on a shared machine the
numbers are upper bounds on the cost. Prints markdown tables.

Last run (2 cores, load average 14-20, so costs lean high): 13.07 TFLOP per MBCD step of 16
clips = 817 GFLOP/clip; 989 TFLOP/s x 35% = 346 TFLOP/s -> 346e12 / 817e9 = 424 clips/s per
H100; JPEG store 52.5 CPU ms/clip = 19.1 clips/s/core -> 424 / 19.1 = 22 cores (46.6 ms, 20
cores with ``data.normalize_on_device``; raw store 161.6 ms, 68 cores; the peers' per-sample
mp4 decode 236.3 ms, 101 cores).
"""
import argparse
import dataclasses
import os
import tempfile
import time

import numpy as np


from mbcd_jax import config_lib, input_pipeline  # noqa: E402
from mbcd_jax.data import pipeline, prepare, store, transforms  # noqa: E402
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


def _config(out, batch, workers, threads, on_device=False):
  """The HAC paper config on the prepared store (clip recipe at its defaults)."""
  c = config_lib.dataset_config('hac', ('animal', 'cartoon'), 'human')
  c.data.dir, c.data.batch_size, c.data.eval_batch_size = out, batch, batch
  c.data.num_workers, c.data.read_threads = workers, threads
  c.data.normalize_on_device = on_device
  return c


class _Repeated:
  """``source`` read ``reps`` times over (index ``i`` -> ``source[i % len(source)]``)."""

  def __init__(self, source, reps):
    self._source, self._reps = source, reps

  def __len__(self):
    return len(self._source) * self._reps

  def __getitem__(self, i):
    return self._source[int(i) % len(self._source)]


def time_ours(out, batch, workers, threads, seconds, reps=100, on_device=False):
  """clips/s of the training loader, and seconds to its first batch (``on_device``: uint8
  frames, ``data.normalize_on_device``).

  The epoch repeats the few benchmark clips ``reps`` times: a real epoch has thousands of clips,
  so the per-epoch start-up (worker processes, first reads), reported apart, is not throughput.
  """
  loader = input_pipeline.make_loader(_config(out, batch, workers, threads, on_device),
                                      'train')
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


def _load():
  return os.getloadavg()[0]


# ------------------------------------------------------------------------- cost per example
STAGES = ('read', 'decode', 'spatial', 'normalise', 'audio', 'collate')


def staged_example(source, i, tf: transforms.ClipTransform, rng, times, slots=None):
  """``tf(source[i], rng)`` step by step, adding each stage's seconds to ``times``; with
  ``slots`` (dict of arrays), the example is then copied into them, as the loader's batching
  copies it into its batch ('collate').

  The same calls in the same order as ``ClipTransform.__call__`` (HAC, all modalities, train),
  so the random draws and the result are the same; ``stage_costs`` checks that.
  """
  # CPU time of this thread: the core-seconds a stage costs, which other processes on a shared
  # machine inflate far less than they do wall time.
  cfg, clock = tf.cfg, [time.thread_time()]

  def lap(stage):
    t = time.thread_time()
    times[stage] += t - clock[0]
    clock[0] = t

  rec = source[i]
  lap('read')
  out = {}
  inds = None
  for name, frames, stride, norm in (
      ('video', cfg.video_frames, cfg.video_stride, transforms.normalize_rgb),
      ('flow', cfg.flow_frames, cfg.flow_stride, transforms.normalize_flow)):
    idx = transforms.sample_indices(store.num_frames(rec, name), frames, stride, rng)
    inds = idx if inds is None else inds
    x = store.decode_frames(rec, name, idx)
    lap('decode')
    x = transforms.spatial(x, cfg, rng, is_flow=name == 'flow')
    lap('spatial')
    out[name] = norm(x)
    lap('normalise')
  rate = int(rec.get('audio_rate', cfg.audio_rate))
  x = transforms.audio_window(rec['audio'], inds[0] / cfg.hac_audio_fps,
                              inds[-1] / cfg.hac_audio_fps, rate)
  out['audio'] = transforms.audio_features(x, cfg, rng, rate)
  lap('audio')
  if slots is not None:
    for k, v in out.items():
      if k not in slots:
        slots[k] = np.empty(v.shape, v.dtype)
      slots[k][...] = v
    lap('collate')
  return out


def stage_costs(out, n):
  """CPU ms per example of each stage (and 'wall', the elapsed ms per example), one thread, over
  ``n`` examples of the train split (cycled); checks the staged examples against the loader's
  transform."""
  cfg = _config(out, 1, 0, 1)
  source = pipeline.make_source(cfg.data, 'train')
  tf = pipeline.make_transform(cfg.data, train=True)
  for i in range(min(3, len(source))):   # the staged path is the transform's
    ref = tf(source[i], input_pipeline.example_rng(0, 0, i))
    got = staged_example(source, i, tf, input_pipeline.example_rng(0, 0, i),
                         dict.fromkeys(STAGES, 0.0))
    for k in got:
      assert np.array_equal(ref[k], got[k]), f'staged {k} differs from ClipTransform'
  times, slots = dict.fromkeys(STAGES, 0.0), {}
  load0, t0 = _load(), time.perf_counter()
  for i in range(n):
    staged_example(source, i % len(source), tf, input_pipeline.example_rng(1, 0, i), times,
                   slots)
  ms = {k: 1e3 * v / n for k, v in times.items()}
  ms['total'] = sum(ms.values())
  ms['wall'] = 1e3 * (time.perf_counter() - t0) / n
  ms['load'] = max(load0, _load())
  return ms


def peers_cost(out, n):
  """CPU ms and wall ms per example of the peers' way (whole mp4s decoded, then the transform),
  one thread."""
  index = store.load_index(out, 'hac')
  entries = pipeline.select(index, 'train', ('animal', 'cartoon'), 'human')
  tf = pipeline.make_transform(_config(out, 1, 0, 1).data, train=True)
  load0, c0, t0 = _load(), time.thread_time(), time.perf_counter()
  for i in range(n):
    tf(peers_record(entries[i % len(entries)]), input_pipeline.example_rng(1, 0, i))
  return dict(total=1e3 * (time.thread_time() - c0) / n,
              wall=1e3 * (time.perf_counter() - t0) / n, load=max(load0, _load()))


# ------------------------------------------------------------------------- accelerator demand
def step_flops(batch):
  """FLOPs of one MBCD train step (BN mode 'port', bfloat16, the paper encoders and shapes,
  batch ``batch``) and of one inference forward pass, from XLA's cost analysis of the lowered
  HLO (no compile: shapes only, nothing is initialised)."""
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from benchmarks import _paper_setup as paper  # pylint: disable=g-import-not-at-top
  from mbcd_jax import step as step_lib  # pylint: disable=g-import-not-at-top
  model, spec, tx = paper.build(paper.FULL, 'mbcd', 'port', 'bfloat16')
  init_model, _, _ = paper.build(paper.FULL, 'erm', 'frozen', 'float32')
  example = {m: jax.ShapeDtypeStruct((1, *s), jnp.float32) for m, (_, _, s) in paper.FULL.items()}
  variables = jax.eval_shape(init_model.init, jax.random.key(0), example)
  state = jax.eval_shape(lambda v: step_lib.make_state(model, spec, tx, *v), variables)
  batch_shapes = {m: jax.ShapeDtypeStruct((batch, *s), jnp.float32)
                  for m, (_, _, s) in paper.FULL.items()}
  batch_shapes['label'] = jax.ShapeDtypeStruct((batch,), jnp.int32)
  rng = jax.eval_shape(lambda: jax.random.key(1))

  def flops(lowered):
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost['flops'])

  train = jax.jit(functools.partial(step_lib.train_step, model=model, spec=spec, tx=tx))
  forward = jax.jit(lambda st, b: model.predict(step_lib.weights(st, 'student'), b))
  return flops(train.lower(state, batch_shapes, rng)), flops(forward.lower(state, batch_shapes))


# ------------------------------------------------------------------------- main
def main():
  p = argparse.ArgumentParser()
  p.add_argument('--clips_per_domain', type=int, default=4)
  p.add_argument('--frames', type=int, default=96, help='frames per clip (4 s at 24 fps)')
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--seconds', type=float, default=24.0,
                 help='timing per loader row, all rounds (0: the cost tables only)')
  p.add_argument('--workers', type=int, default=2)
  p.add_argument('--rounds', type=int, default=2, help='alternating rounds; median reported')
  p.add_argument('--stage_clips', type=int, default=24, help='examples timed per stage table')
  p.add_argument('--frame_formats', default='jpeg,raw', help="prepare's --codec values")
  p.add_argument('--step_flops', action='store_true', help='estimate the host cores needed')
  p.add_argument('--step_batch', type=int, default=16)
  p.add_argument('--peak_tflops', type=float, default=989.0, help='H100 bf16 dense peak')
  p.add_argument('--mfu', type=float, default=0.35, help='assumed model FLOPs utilisation')
  p.add_argument('--dir', default='', help='work folder (default: a temporary one)')
  a = p.parse_args()
  formats = tuple(f for f in a.frame_formats.split(',') if f)
  root = a.dir or tempfile.mkdtemp(prefix='mbcd_pipeline_bench_')
  src = os.path.join(root, 'src')
  print(f'{os.cpu_count()} CPU cores, load average at start {os.getloadavg()}', flush=True)
  t = time.perf_counter()
  make_tree(src, a.clips_per_domain, a.frames, a.frames / FPS)
  n_src = 3 * (a.clips_per_domain + 1)
  print(f'fixture tree: {time.perf_counter() - t:.1f}s, {_du(src) / 2**20:.1f} MiB', flush=True)
  stores, disk = {}, {'peers': _du(src) / n_src}
  for fmt in formats:
    out = stores[fmt] = os.path.join(root, f'prepared_{fmt}')
    t = time.perf_counter()
    index = prepare.run('hac', src, out, workers=os.cpu_count(), progress=False,
                        recipe=prepare.Recipe(codec=fmt))
    n_clips = len(index['entries'])
    disk[fmt] = _du(os.path.join(out, store.SHARDS)) / n_clips
    print(f'prepare {fmt}: {n_clips} clips in {time.perf_counter() - t:.1f}s, '
          f'{disk[fmt] / 2**20:.2f} MiB per clip', flush=True)

  # 1. Cost of one example per core.
  costs = {fmt: stage_costs(stores[fmt], a.stage_clips) for fmt in formats}
  peers_ms = peers_cost(stores[formats[0]], max(4, a.stage_clips // 4))
  print()
  print(f'Host cost of one training example, CPU ms on one core ({a.stage_clips} examples, '
        f'{a.frames}-frame {W}x{H} clips; wall: elapsed ms per example):')
  print()
  print('| store | ' + ' | '.join(STAGES) + ' | total | clips/s/core | without normalise: '
        'ms, clips/s/core | wall | load avg |')
  print('|---|' + '---:|' * (len(STAGES) + 6))
  for fmt, ms in costs.items():
    host = ms['total'] - ms['normalise']
    print(f'| {fmt} | ' + ' | '.join(f'{ms[k]:.1f}' for k in STAGES) +
          f' | {ms["total"]:.1f} | {1e3 / ms["total"]:.1f} | {host:.1f}, {1e3 / host:.1f} | '
          f'{ms["wall"]:.1f} | {ms["load"]:.1f} |', flush=True)
  print(f'| peers (whole mp4s) | ' + ' | '.join('-' for _ in STAGES) +
        f' | {peers_ms["total"]:.1f} | {1e3 / peers_ms["total"]:.1f} | - | '
        f'{peers_ms["wall"]:.1f} | {peers_ms["load"]:.1f} |')
  print()
  print('per core vs the peers: ' + ', '.join(
      f'{fmt} {peers_ms["total"] / ms["total"]:.1f}x ({fmt} without normalise '
      f'{peers_ms["total"] / (ms["total"] - ms["normalise"]):.1f}x)' for fmt, ms in costs.items()))

  # 2. Loader throughput. Rounds alternate the rows, and each row reports its median: on a
  # shared machine, load from other processes then biases every row alike instead of whichever
  # ran during a burst.
  cases = [('peers: decode mp4s per sample, 1 process', 'peers', None, None, 1, False)]
  for fmt in formats:
    cases += [(f'ours ({fmt}): in-process, 1 thread', fmt, 0, 1, 1, False),
              (f'ours ({fmt}): in-process, 2 threads', fmt, 0, 2, 2, False),
              (f'ours ({fmt}): {a.workers} worker processes', fmt, a.workers, 1, a.workers,
               False)]
  cases += [(f'ours ({formats[0]}, normalise on device): in-process, 1 thread', formats[0], 0,
             1, 1, True),
            (f'ours ({formats[0]}, normalise on device): in-process, 2 threads', formats[0], 0,
             2, 2, True)]
  per = a.seconds / a.rounds
  if a.seconds <= 0:   # the cost tables only
    cases = []
  rates = {c[0]: [] for c in cases}
  startups = {c[0]: [] for c in cases}
  loads = {c[0]: [] for c in cases}
  for r in range(a.rounds):
    for label, fmt, workers, threads, _, on_device in cases:
      if fmt == 'peers':
        rates[label].append(time_peers(stores[formats[0]], per))
      else:
        rate, startup = time_ours(stores[fmt], a.batch, workers, threads, per,
                                  on_device=on_device)
        rates[label].append(rate)
        startups[label].append(startup)
      loads[label].append(_load())
      print(f'round {r}: {label}: {rates[label][-1]:.2f} clips/s '
            f'(load average {loads[label][-1]:.1f})', flush=True)
  if cases:
    peers = float(np.median(rates[cases[0][0]]))
    print()
    print(f'Train loader at the paper shapes, {os.cpu_count()} CPU cores, {a.frames}-frame '
          f'{W}x{H} clips, batch {a.batch} (median of {a.rounds} rounds):')
    print()
    print('| pipeline | clips/s | clips/s per core used | vs peers | disk MiB/clip | '
          'first batch s | load avg |')
    print('|---|---:|---:|---:|---:|---:|---:|')
    for label, fmt, _, _, used, _ in cases:
      r = float(np.median(rates[label]))
      used = min(used, os.cpu_count())
      startup = f'{np.median(startups[label]):.1f}' if startups[label] else '-'
      print(f'| {label} | {r:.2f} | {r / used:.2f} | {r / peers:.1f}x | {disk[fmt] / 2**20:.2f} '
            f'| {startup} | {np.median(loads[label]):.1f} |')

  # 3. Host cores an accelerator needs.
  if a.step_flops:
    t = time.perf_counter()
    train_flops, fwd_flops = step_flops(a.step_batch)
    per_clip = train_flops / a.step_batch
    gpu_rate = a.peak_tflops * 1e12 * a.mfu / per_clip
    print()
    print(f'Accelerator demand (XLA cost analysis of the lowered step, {time.perf_counter() - t:.0f}s):')
    print(f'  MBCD train step (port, bf16), batch {a.step_batch}: {train_flops / 1e12:.2f} TFLOP '
          f'= {per_clip / 1e9:.0f} GFLOP/clip (inference forward: '
          f'{fwd_flops / a.step_batch / 1e9:.0f} GFLOP/clip)')
    print(f'  {a.peak_tflops:.0f} TFLOP/s peak x {a.mfu:.0%} MFU = '
          f'{a.peak_tflops * a.mfu:.0f} TFLOP/s -> {a.peak_tflops * a.mfu:.0f}e12 / '
          f'{per_clip / 1e9:.0f}e9 = {gpu_rate:.0f} clips/s')
    for fmt, ms in costs.items():
      for what, cost in (('', ms['total']), (', normalised on device',
                                             ms['total'] - ms['normalise'])):
        per_core = 1e3 / cost
        print(f'  {fmt}{what}: {cost:.1f} ms/clip/core = {per_core:.1f} clips/s/core -> '
              f'{gpu_rate:.0f} / {per_core:.1f} = {gpu_rate / per_core:.1f} cores')
  print()
  print(f'load average at the end: {os.getloadavg()}')


if __name__ == '__main__':
  main()
