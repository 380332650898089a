r"""Compiled train-step time of every method, relative to ERM: EMA, MBCD (each consistency
mode) and the peers' plug-ins (RNA-Net, SimMMDG, MOOSA, CMRF, each on its own model variant).

  JAX_PLATFORMS=cpu python -m benchmarks.step_time [--reps 20] [--batch 16] [--setups a,b,c,d]

Encoder set-ups on the embedded benchmark's encoders and shapes (configs/hac.py:synthetic):
  (a) everything trainable: every pass runs the whole encoder;
  (b) the paper's split: a frozen trunk (~80% of forward FLOPs) run once per step and shared by
      the student's passes and the teacher, and a trainable last stage;
  (c) as (b) with a BatchNorm after every conv (encoders' bn=True), bn_mode='frozen';
  (d) as (c) with bn_mode='port': BN on batch statistics in the student's passes, running
      statistics updated, the teacher's own inference-mode trunk pass (one more trunk run).
Prints the trunk's FLOP share (XLA cost analysis) and a table of median step times. Timings of
the methods are interleaved round by round so that background load hits them alike. The
machine's load is sampled at the start, after every round and at the end, shown per set-up and
under the table, and the table is flagged LOADED when others used the CPUs
(``benchmarks/_load.py``; ``--refuse_under_load`` exits non-zero instead).
"""
import argparse
import functools
import importlib.util
import os
import statistics
import time

import jax
import numpy as np

from benchmarks import _load  # pylint: disable=g-import-not-at-top,wrong-import-position
from mbcd_jax import config_lib, models, step  # pylint: disable=g-import-not-at-top

VARIANTS = [('erm', {}), ('ema', {}),
            ('mbcd', {'consistency': 'off'}),
            ('mbcd', {'consistency': 'inner_first_order'}),
            ('mbcd', {'consistency': 'inner_second_order'}),
            ('mbcd', {'consistency': 'grad_dot'}),
            ('rna', {}), ('simmmdg', {}), ('moosa', {}), ('cmrf', {})]


def _config():
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs',
                      'hac.py')
  spec = importlib.util.spec_from_file_location('hac', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return config_lib.normalize(mod.get_config('synthetic'))


def _batch(c, b):
  s = c.data.synthetic
  rng = np.random.default_rng(0)
  return {'video': rng.standard_normal((b, *s.video_shape, 3), np.float32),
          'flow': rng.standard_normal((b, *s.flow_shape, 2), np.float32),
          'audio': rng.standard_normal((b, *s.audio_shape, 1), np.float32),
          'label': rng.integers(0, c.data.num_classes, b).astype(np.int32)}


def _flops(fn, *args):
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', 0.0))


def trunk_share(model, batch):
  params, frozen = model.init(jax.random.key(0), batch)
  trunk = stage = 0.0
  for m in model.modalities:
    enc = model.encoders[m]
    tv = frozen['encoders'][m]['trunk']
    trunk += _flops(enc.trunk.apply, tv, batch[m])
    fmap = enc.trunk.apply(tv, batch[m])
    sv = {**frozen['encoders'][m]['stage'], 'params': params['encoders'][m]['stage']}
    stage += _flops(enc.stage.apply, sv, fmap)
  return trunk / (trunk + stage)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--reps', type=int, default=20)
  ap.add_argument('--batch', type=int, default=16)
  ap.add_argument('--setups', default='a,b,c,d', help='comma-separated subset of a,b,c,d')
  _load.add_flag(ap)
  args = ap.parse_args()
  monitor = _load.LoadMonitor()
  _load.refuse_at_start(monitor, args.refuse_under_load)
  c = _config()
  batch = _batch(c, args.batch)
  print(f'jax {jax.__version__} on {jax.devices()[0].platform} x{jax.device_count()}, '
        f'batch {args.batch}, shapes video {c.data.synthetic.video_shape}, flow '
        f'{c.data.synthetic.flow_shape}, audio {c.data.synthetic.audio_shape}')
  rows = []
  setups = {'a': ('(a) all trainable', False, False, 'frozen'),
            'b': ('(b) frozen trunk', True, False, 'frozen'),
            'c': ('(c) frozen trunk, BN, bn_mode=frozen', True, True, 'frozen'),
            'd': ('(d) frozen trunk, BN, bn_mode=port', True, True, 'port')}
  for key in args.setups.split(','):
    setup, freeze, bn, bn_mode = setups[key]
    with c.unlocked():
      c.model.freeze_trunk = freeze
      c.model.bn_mode = bn_mode
      for m in c.data.modalities:
        c.model.encoders[m].bn = bn
    model = models.build_model(c.model, tuple(c.data.modalities), c.data.num_classes)
    if freeze and not bn:
      print(f'trunk share of encoder forward FLOPs: {100 * trunk_share(model, batch):.1f}%')
    tx = step.make_optimizer(c.optim)
    fns = []
    for name, over in VARIANTS:
      mc = c.method.copy_and_resolve_references()
      mc.name = name
      for k, v in over.items():
        mc[k] = v
      from mbcd_jax import methods  # pylint: disable=g-import-not-at-top
      sp = methods.resolve(mc)
      # A plug-in runs on its own model variant (no LayerNorm, head dropout, Linear heads...).
      model = models.build_model(c.model, tuple(c.data.modalities), c.data.num_classes, name)
      state = step.init_state(model, sp, tx, jax.random.key(0), batch)
      f = jax.jit(functools.partial(step.train_step, model=model, spec=sp, tx=tx))
      state, m = f(state, batch, jax.random.key(1))     # compile
      jax.block_until_ready(m)
      label = name if not over else f'{name} ({over["consistency"]})'
      fns.append([label, f, state, []])
    since = len(monitor.samples)
    for r in range(args.reps):
      for entry in fns:
        _, f, state, times = entry
        t = time.perf_counter()
        state, m = f(state, batch, jax.random.key(1))
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
        entry[2] = state
      monitor.record(f'{key} round {r + 1}')
    load = monitor.span(since)
    base = statistics.median(fns[0][3])
    for label, _, _, times in fns:
      med = statistics.median(times)
      rows.append((setup, label, 1e3 * med, med / base, load))
  print(f'\n| set-up | method | step ms (median of {args.reps}) | x erm | load |')
  print('|---|---|---:|---:|---|')
  for setup, label, ms, ratio, load in rows:
    print(f'| {setup} | {label} | {ms:.1f} | {ratio:.2f} | {load} |')
  _load.finish(monitor, args.refuse_under_load)


if __name__ == '__main__':
  main()
