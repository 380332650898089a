r"""What computing the frozen trunks once per example saves (mbcd_jax/trunk_cache.py).

  JAX_PLATFORMS=cpu python -m benchmarks.trunk_cache [--config=configs/hac.py:synthetic]
      [--rounds 3] [--refuse_under_load]

Builds the config's run as ``train.train_and_evaluate`` does, once as it is and once with
``train.with_trunk_outputs`` (the modalities the cache takes on this machine are printed), and
times, alternating the two sides round by round: one training epoch (its steps, the loader
included) and one evaluation (val + test), each a median over ``--rounds``. Also the one-off
cost of the cache (running the trunks over every example). The machine's load is sampled after
every round and the table flagged LOADED when others used the CPUs (``benchmarks/_load.py``).
"""
import argparse
import statistics
import time

import jax

from benchmarks import _load  # pylint: disable=g-import-not-at-top,wrong-import-position
from mbcd_jax import sharding, train  # pylint: disable=g-import-not-at-top,wrong-import-position
from mbcd_jax.analysis.common import load_config


def _epoch(run, state, epoch):
  """One training epoch's wall time; returns (state, seconds)."""
  t = time.perf_counter()
  metrics = None
  for i, batch in enumerate(run.loaders['train'].epoch(epoch)):
    state, metrics = run.train_step(state, sharding.shard_batch(batch, run.mesh),
                                    jax.random.key(i))
  jax.block_until_ready(metrics)
  return state, time.perf_counter() - t


def _evaluation(run, state):
  t = time.perf_counter()
  for split in ('val', 'test'):
    train.evaluate(run.eval_step, state, run.loaders[split], run.mesh)
  return time.perf_counter() - t


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--config', default='configs/hac.py:synthetic')
  ap.add_argument('--rounds', type=int, default=3)
  _load.add_flag(ap)
  args = ap.parse_args()
  monitor = _load.LoadMonitor()
  _load.refuse_at_start(monitor, args.refuse_under_load)

  plain = train.build(load_config(args.config))
  state = plain.init(jax.random.key(0))
  t = time.perf_counter()
  cached = train.with_trunk_outputs(plain, state)
  setup_s = time.perf_counter() - t
  print(f'precomputed trunk outputs: {", ".join(cached.model.given_trunks) or "none"} '
        f'({setup_s:.1f} s once, incl. the check and its compiles)')
  sides = {'as before': [plain, jax.tree.map(lambda x: x.copy(), state), [], []],
           'trunk cache': [cached, jax.tree.map(lambda x: x.copy(), state), [], []]}
  for side in sides.values():   # compile both programs before timing
    side[1], _ = _epoch(side[0], side[1], 0)
    _evaluation(side[0], side[1])
  monitor.record('compiled')
  for r in range(args.rounds):
    for side in sides.values():
      side[1], s = _epoch(side[0], side[1], r + 1)
      side[2].append(s)
      side[3].append(_evaluation(side[0], side[1]))
    monitor.record(f'round {r + 1}')
  steps = plain.loaders['train'].num_batches
  base = None
  print(f'\n| side | train epoch s ({steps} steps) | ms / step | evaluation s (val + test) '
        f'| epoch + evaluation s | x as before |')
  print('|---|---:|---:|---:|---:|---:|')
  for name, (_, _, ep, ev) in sides.items():
    e, v = statistics.median(ep), statistics.median(ev)
    base = base or e + v
    print(f'| {name} | {e:.2f} | {1e3 * e / steps:.1f} | {v:.2f} | {e + v:.2f} | '
          f'{(e + v) / base:.2f} |')
  print(f'load: {monitor.span(0)}')
  _load.finish(monitor, args.refuse_under_load)


if __name__ == '__main__':
  main()
