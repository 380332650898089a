r"""A whole HAC multi-source run, timed end to end: data -> prepared store -> three trainings
(each target with the other two as sources) -> the table, every phase split out.

  python -m benchmarks.whole_run --out=/tmp/wr                  # paper shapes, HAC's clip counts
  python -m benchmarks.whole_run --out=/tmp/wr --dtype=bfloat16 --workers=16   # on a GPU host
  python -m benchmarks.whole_run --out=/tmp/wr --dry_run        # tiny shapes and counts (CI)

Clip counts per domain (train / test), as ``mbcd_jax.data.hac.read_split`` reads the release's
``HAC_Splits/HAC_{train,test}_only_<domain>.csv`` (one row per clip): human 1111 / 276, animal
730 / 176, cartoon 870 / 218 (the issue's numbers for the release's split files; the files are
not in this repository). The tree is synthetic: ``--unique`` distinct clips per domain are
encoded once (``benchmarks/pipeline_throughput.make_tree``: 340x256 H.264 RGB, flow x / y, a
16 kHz wav) and hard-linked under every row's name, so ``prepare`` still reads and re-encodes
every clip. Labels cycle through the 7 classes.

Phases, each timed with its peak resident memory (``benchmarks/paper_path.Recorder``):
1. tree; 2. ``python -m mbcd_jax.data.prepare --dataset=hac`` (every host core);
3.-5. per target: ``python -m mbcd_jax.main --config=configs/hac.py`` with the README's
overrides (data dir, sources, target), 20 epochs (``--epochs``), evaluation every epoch, split
into setup, train steps (XLA compile included), evaluations and checkpoint by its log lines and
``metrics.jsonl`` rows (``paper_path.split_train_run``). The three runs have the same shapes, so
the second and third load the step from the persistent compilation cache (``--cache_dir``,
default ``<out>/xla_cache``; on by default on accelerators, given here for the CPU too).
Writes ``<out>/whole_run.json`` after every phase and prints a table.

``--dry_run``: paper_path's CI clip recipe (RGB 8x32x32, flow 2x32x32, 1 s of audio), its
one-block-per-stage encoders, 6 / 2 clips per domain, batch 2, 1 epoch.
"""
import argparse
import json
import os
import shutil
import sys
import time

from benchmarks import paper_path as pp            # benchmarks/: Recorder, run_logged, split_train_run, CI_*
from benchmarks import pipeline_throughput as pt   # benchmarks/: make_tree (HAC layout, lossy H.264)

HAC_COUNTS = {'human': (1111, 276), 'animal': (730, 176), 'cartoon': (870, 218)}
DRY_COUNTS = {'human': (6, 2), 'animal': (6, 2), 'cartoon': (6, 2)}
TARGETS = ('human', 'animal', 'cartoon')
MODALITIES = ('video', 'flow', 'audio')
KIND = {'video': 'slowfast_r101', 'flow': 'slowonly_r50_flow', 'audio': 'vggsound_r18'}


def make_tree(root: str, counts: dict, unique: int, frames: int, seconds_audio: float) -> int:
  """HAC layout with ``counts[d] = (train, test)`` rows per domain; ``unique`` encoded clips
  per domain hard-linked under every name. Returns the number of clips."""
  proto = root + '.proto'
  pt.make_tree(proto, unique, frames, seconds_audio)   # <d>_train_000.mp4 ... per domain
  splits = os.path.join(root, 'HAC_Splits')
  total = 0
  for di, (d, (n_train, n_test)) in enumerate(counts.items()):
    src = os.path.join(proto, 'HAC_Splits', d)
    for sub in ('videos', 'flow', 'audio'):
      os.makedirs(os.path.join(splits, d, sub), exist_ok=True)
    for split, n in (('train', n_train), ('test', n_test)):
      rows = [f'{d}_{split}_{k:04d}' for k in range(n)]
      with open(os.path.join(splits, f'HAC_{split}_only_{d}.csv'), 'w') as f:
        f.write(''.join(f'{r}.mp4,{(k + di) % 7}\r\n' for k, r in enumerate(rows)))
      for k, r in enumerate(rows):
        u = f'{d}_train_{k % unique:03d}'
        for sub, a, b in (('videos', f'{u}.mp4', f'{r}.mp4'),
                          ('flow', f'{u}_flow_x.mp4', f'{r}_flow_x.mp4'),
                          ('flow', f'{u}_flow_y.mp4', f'{r}_flow_y.mp4'),
                          ('audio', f'{u}.wav', f'{r}.wav')):
          os.link(os.path.join(src, sub, a), os.path.join(splits, d, sub, b))
      total += n
  shutil.rmtree(proto)
  return total


def train_command(args, store: str, target: str, workdir: str) -> list:
  sources = ','.join(d for d in TARGETS if d != target)
  cmd = [sys.executable, '-m', 'mbcd_jax.main', '--config=configs/hac.py',
         f'--config.data.dir={store}', f'--config.data.sources={sources}',
         f'--config.data.target={target}', f'--workdir={workdir}',
         f'--config.train.epochs={args.epochs}', f'--compilation_cache={args.cache_dir}',
         f'--config.data.num_workers={args.loader_workers}']
  if args.batch:
    cmd += [f'--config.data.batch_size={args.batch}',
            f'--config.data.eval_batch_size={args.batch}']
  for m in MODALITIES:
    cmd.append(f'--config.model.encoders.{m}.dtype={args.dtype}')
    if args.dry_run:
      cmd += [f'--config.model.encoders.{m}.{k}={v}' for k, v in pp.CI_KWARGS[KIND[m]].items()]
  if args.dry_run:
    cmd += [f'--config.data.clip.{k}={v}' for k, v in pp.CI_CLIP.items()]
  return cmd + args.extra


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--out', required=True, help='working folder (tree, store, runs, table)')
  p.add_argument('--dry_run', action='store_true', help='tiny shapes and counts (CI)')
  p.add_argument('--epochs', type=int, default=0, help='default 20 (dry run: 1)')
  p.add_argument('--batch', type=int, default=0, help='default: the config\'s 16 (dry run: 2)')
  p.add_argument('--dtype', default='float32', help='encoders\' compute dtype')
  p.add_argument('--workers', type=int, default=os.cpu_count(), help='prepare --workers')
  p.add_argument('--loader_workers', type=int, default=0, help='config.data.num_workers')
  p.add_argument('--unique', type=int, default=4, help='distinct encoded clips per domain')
  p.add_argument('--targets', default=','.join(TARGETS), help='comma-separated subset')
  p.add_argument('--cache_dir', default='', help='persistent compilation cache folder')
  p.add_argument('extra', nargs='*', help='more --config.* overrides for every training')
  args = p.parse_args(argv)
  args.epochs = args.epochs or (1 if args.dry_run else 20)
  args.batch = args.batch or (2 if args.dry_run else 0)
  out = os.path.abspath(args.out)
  args.cache_dir = os.path.abspath(args.cache_dir or os.path.join(out, 'xla_cache'))
  counts = DRY_COUNTS if args.dry_run else HAC_COUNTS
  os.makedirs(out, exist_ok=True)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [root] + [x for x in os.environ.get('PYTHONPATH', '').split(os.pathsep) if x]))
  rec = pp.Recorder(out, {'mode': 'dry_run' if args.dry_run else 'paper shapes',
                          'started_utc': time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime()),
                          'cpus': os.cpu_count(), 'load_avg_start': os.getloadavg(),
                          'clips (train, test) per domain': counts, 'epochs': args.epochs,
                          'dtype': args.dtype, 'batch': args.batch or 16})
  rec.path = os.path.join(out, 'whole_run.json')
  t_all = time.time()

  tree, store = os.path.join(out, 'HAC'), os.path.join(out, 'hac_prepared')
  t = time.time()
  if not os.path.exists(tree):
    frames = pp.CI_CLIP_FRAMES if args.dry_run else 96
    n = make_tree(tree + '.tmp', counts, args.unique, frames, 1.2 if args.dry_run else 10.0)
    os.replace(tree + '.tmp', tree)
    rec.doc['meta']['clips'] = n
  rec.add('1 tree (HAC layout, linked copies)', time.time() - t, pp.self_peak_mib())

  if not os.path.exists(os.path.join(store, 'index.json')):
    res = pp.run_logged([sys.executable, '-m', 'mbcd_jax.data.prepare', '--dataset=hac',
                         f'--root={tree}', f'--out={store}', f'--workers={args.workers}',
                         '--no_progress'], os.path.join(out, 'prepare.log'), root, env)
    if res['rc'] != 0:
      raise SystemExit(f'prepare failed (exit {res["rc"]}), see {out}/prepare.log')
    rec.add('2 prepare', res['wall_s'], res['peak_rss_mib'])

  for i, target in enumerate(args.targets.split(',')):
    workdir = os.path.join(out, 'runs', f'hac_{target}')
    res = pp.run_logged(train_command(args, store, target, workdir),
                        os.path.join(out, f'train_{target}.log'), root, env,
                        watch_jsonl=os.path.join(workdir, 'metrics.jsonl'))
    if res['rc'] != 0:
      raise SystemExit(f'training for {target} failed (exit {res["rc"]}), see '
                       f'{out}/train_{target}.log')
    evals = [r for _, r in res['rows'] if r.get('kind') == 'test']
    last = evals[-1] if evals else {}
    rec.add(f'{3 + i} train + evaluate, target {target}', res['wall_s'], res['peak_rss_mib'],
            split=pp.split_train_run(res), evaluations=len(evals),
            last_test={k: v for k, v in last.items() if isinstance(v, (int, float))})
  rec.doc['meta']['total_s'] = round(time.time() - t_all, 1)
  rec.save()
  print(table(rec.doc))


def table(doc: dict) -> str:
  lines = ['| phase | wall s | peak RSS MiB |', '|---|---:|---:|']
  for ph in doc['phases']:
    lines.append(f'| {ph["phase"]} | {ph["wall_s"]:.1f} | {ph["peak_rss_mib"]:.0f} |')
    for k, v in ph.get('split', {}).items():
      lines.append(f'| &nbsp;&nbsp;{k} | {v:.1f} | |')
  lines.append(f'| total | {doc["meta"].get("total_s", 0):.1f} | |')
  return '\n'.join(lines)


if __name__ == '__main__':
  main()
