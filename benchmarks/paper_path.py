r"""The real-data path end to end at the paper's shapes, as a user walks it, in one script.

  python -m benchmarks.paper_path --out=/tmp/pp            # full-size encoders (slow on CPU)
  python -m benchmarks.paper_path --out=/tmp/pp --tiny     # same path, narrow encoders
  python -m benchmarks.paper_path --out=/tmp/pp --ci       # narrow encoders, small inputs (CI)

Phases, each timed, with its peak resident memory:

1. ``tree``: an EPIC-Kitchens tree in the release layout (MM-SADA split pickles, pre-cut mp4
   clips, whole-video wavs; tests/data/fixtures.py), clips of 70 frames so that the recipe's
   32 RGB frames at stride 2 and 8 flow frames at stride 4 fit without wrapping.
2. ``prepare``: ``python -m mbcd_jax.data.prepare --dataset=epic ...`` (a subprocess).
3. ``torch_checkpoints``: random-weight PyTorch checkpoints in the released files' layouts:
   mmaction2 ``{'meta', 'state_dict': {'backbone.*', 'cls_head.*'}}`` for SlowFast-R101 8x8 and
   SlowOnly-R50 flow, VGGSound's ``{'model_state_dict': {'module.audnet.*'}, 'epoch'}``.
4. ``convert``: the README's convert commands, read from README.md and run verbatim in a
   folder holding the checkpoints under their released names (``--tiny`` appends
   ``--encoder_kwargs``, the narrow widths).
5.-7. ``train``: the README's EPIC train command with the pretrained files, batch 2 and one
   epoch of 2 steps (two train clips per source domain): train, evaluate (validation = the
   sources' test splits, test = the target's), checkpoint. Split into sub-phases by the time
   each log line and each ``metrics.jsonl`` row appeared.
8. ``resume``: the same command with ``--config.train.epochs=2`` (and
   ``resume_mode=allow_changes``, which that change needs): it must resume from the step-2
   checkpoint (``resumed_from_step`` in its summary), train 2 more steps and evaluate again.

Inputs are the paper's in the first two modes: RGB 32x224x224, flow 8x224x224, audio 257x1004,
batch 2. ``--tiny`` narrows the encoders (SlowFast-R50 with 8 slow channels, SlowOnly-R50 with
8, audio ResNet-18 with 8): compute becomes small, but XLA still compiles the deep nets (about
24 min on 2 busy cores, most of it compile). ``--ci`` also shrinks the inputs (``CI_CLIP``:
RGB 8x32x32, flow 2x32x32, 1 s of audio, 257x101), the tree's clips (20 frames) and the 3-D
nets' depth (one block per stage, ``CI_KWARGS``): the same commands with
``--config.data.clip.*`` overrides, for tests/test_paper_path.py in CI.

Memory: a subprocess's peak is its own ``ru_maxrss`` (``os.wait4``; it covers the processes it
waited for, e.g. prepare's workers); in-process phases report this process's peak so far.
Writes ``<out>/paper_path.json`` after every phase (a run stopped early keeps what finished)
and prints a table. Needs torch (requirements-dev.txt).
"""
import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import threading
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The narrow encoders of --tiny: same code, same input shapes, 1/8 of the widths.
TINY_KWARGS = {'slowfast_r101': {'depth': 50, 'slow_base_channels': 8},
               'slowonly_r50_flow': {'base_channels': 8},
               'vggsound_r18': {'width': 8}}
# --ci: also shallow (one block per ResNet stage, depth 14): XLA's compile time grows with the
# block count, not the widths (the first train command of --ci at depth 50: over 7 min of
# state-init compile on 2 busy cores; at depth 14 the whole command takes 6.3 min there).
CI_KWARGS = {'slowfast_r101': {'depth': 14, 'slow_base_channels': 8},
             'slowonly_r50_flow': {'depth': 14, 'base_channels': 8},
             'vggsound_r18': {'width': 8}}
KIND_MODALITY = {'slowfast_r101': 'video', 'slowonly_r50_flow': 'flow', 'vggsound_r18': 'audio'}
CLIP_FRAMES = 70          # RGB frames per clip: 32 at stride 2 (and 35 flow frames: 8 at stride 4)
# --ci: the clip recipe's overrides (config.data.clip), and the tree's clips to fit them.
CI_CLIP = {'video_frames': 8,     # 2 slow frames at resample_rate 4, 8 fast
           'flow_frames': 2,      # SlowOnly's 8x8 input, 1/4 of it
           'crop_size': 32,       # px
           'audio_samples': 16000}   # 1 s at 16 kHz: a 257x101 log-spectrogram
CI_CLIP_FRAMES = 20       # RGB frames per clip: 8 at stride 2 (and 10 flow frames: 2 at stride 4)
COUNTS = {'train': 2, 'test': 1}   # clips per domain: 2 sources x 2 = one epoch of 2 steps
BATCH = 2


def _mib(kib: int) -> float:
  return kib / 1024.0


class Recorder:
  """Phase table: name -> wall seconds, peak RSS (MiB), notes; saved as JSON after each phase."""

  def __init__(self, out: str, meta: dict):
    self.path = os.path.join(out, 'paper_path.json')
    self.doc = {'meta': meta, 'phases': []}

  def add(self, name: str, wall_s: float, peak_rss_mib: float, **extra):
    self.doc['phases'].append({'phase': name, 'wall_s': round(wall_s, 2),
                               'peak_rss_mib': round(peak_rss_mib, 1), **extra})
    self.save()
    print(f'[paper_path] {name}: {wall_s:.1f} s, peak RSS {peak_rss_mib:.0f} MiB', flush=True)

  def save(self):
    self.doc['meta']['load_avg_now'] = os.getloadavg()
    self.doc['meta']['peak_rss_mib'] = round(max(
        [p['peak_rss_mib'] for p in self.doc['phases']] + [0.0]), 1)
    with open(self.path + '.tmp', 'w') as f:
      json.dump(self.doc, f, indent=2)
    os.replace(self.path + '.tmp', self.path)


def self_peak_mib() -> float:
  return _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def run_logged(argv: list[str], log_path: str, cwd: str, env: dict,
               watch_jsonl: str | None = None) -> dict:
  """Runs ``argv``; streams its merged output to ``log_path`` with the time each line came.

  Returns {'rc', 'wall_s', 'peak_rss_mib', 'lines': [(t, line)], 'rows': [(t, row)]} with times
  relative to the start; ``rows`` are the JSON rows this run added to ``watch_jsonl``, with the
  time each first appeared (polled every 0.1 s).
  """
  def read_rows():
    if not (watch_jsonl and os.path.exists(watch_jsonl)):
      return []
    with open(watch_jsonl) as f:
      return f.read().split('\n')[:-1]

  before = len(read_rows())   # a resumed run appends to its predecessor's file
  print('[paper_path] $ ' + ' '.join(shlex.quote(a) for a in argv), flush=True)
  t0 = time.time()
  proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1)
  rows, lines, done = [], [], threading.Event()

  def poll():
    seen = before
    while True:
      finished = done.is_set()
      got = read_rows()
      for ln in got[seen:]:
        rows.append((time.time() - t0, json.loads(ln)))
      seen = max(seen, len(got))
      if finished:
        return
      time.sleep(0.1)

  poller = threading.Thread(target=poll, daemon=True)
  poller.start()
  with open(log_path, 'w') as log:
    for line in proc.stdout:
      t = time.time() - t0
      lines.append((t, line.rstrip('\n')))
      log.write(f'[{t:8.2f}s] {line}')
      log.flush()
  _, status, usage = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(status)
  wall = time.time() - t0
  done.set()
  poller.join()
  return {'rc': proc.returncode, 'wall_s': wall, 'peak_rss_mib': _mib(usage.ru_maxrss),
          'lines': lines, 'rows': rows}


def readme_commands(prefix: str) -> list[list[str]]:
  """The README's shell commands that start with ``prefix`` (continuation lines joined)."""
  with open(os.path.join(_ROOT, 'README.md')) as f:
    text = f.read()
  cmds = []
  for block in re.findall(r'```bash\n(.*?)```', text, re.S):
    joined = re.sub(r'\\\n\s*', ' ', block)
    for line in joined.split('\n'):
      line = line.split('#')[0].strip()
      if line.startswith(prefix):
        cmds.append(shlex.split(line))
  if not cmds:
    raise SystemExit(f'README.md has no command starting with {prefix!r}')
  return cmds


def substitute(argv: list[str], paths: dict[str, str]) -> list[str]:
  """Replaces the README's placeholder paths (``/data/EPIC`` ...) by ours; nothing else."""
  out = []
  for a in argv:
    for old, new in paths.items():
      a = a.replace(old, new)
    out.append(a)
  return [sys.executable if a == 'python' else a for a in out]


# --------------------------------------------------------------------------------------------
# Phase 3: checkpoints in the released files' layouts.
# --------------------------------------------------------------------------------------------
def write_torch_checkpoints(folder: str, kw: dict[str, dict]) -> dict[str, str]:
  """Random-weight checkpoints named as the released files, of encoders built with ``kw``
  ({kind: kwargs}; {} = the released sizes). Returns {kind: path}."""
  import torch  # pylint: disable=g-import-not-at-top
  from mbcd_jax.reference import encoders_torch as ref  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  sf = kw['slowfast_r101']
  slowfast = ref.randomize_(ref.ResNet3dSlowFast(depth=sf.get('depth', 101),
                                                 slow_base=sf.get('slow_base_channels', 64)), 0)
  fl = kw['slowonly_r50_flow']
  flow = ref.randomize_(ref.ResNet3dSlowOnly(depth=fl.get('depth', 50),
                                             base_channels=fl.get('base_channels', 64)), 1)
  audio = ref.randomize_(ref.AVENet(width=kw['vggsound_r18'].get('width', 64)), 2)
  names = {
      'slowfast_r101': 'slowfast_r101_8x8x1_256e_kinetics400_rgb_20210218-0dd54025.pth',
      'slowonly_r50_flow': 'slowonly_r50_8x8x1_256e_kinetics400_flow_20200704-6b384243.pth',
      'vggsound_r18': 'vggsound_avgpool.pth.tar',
  }
  paths = {k: os.path.join(folder, n) for k, n in names.items()}

  def mmaction(backbone, feature_dim: int, path: str):
    sd = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    sd['cls_head.fc_cls.weight'] = torch.zeros(400, feature_dim)
    sd['cls_head.fc_cls.bias'] = torch.zeros(400)
    torch.save({'meta': {'mmcv_version': '1.3.0', 'epoch': 256, 'iter': 0,
                         'CLASSES': None}, 'state_dict': sd}, path)

  c = sf.get('slow_base_channels', 64)
  mmaction(slowfast, c * 32 + c // 8 * 32, paths['slowfast_r101'])
  mmaction(flow, kw['slowonly_r50_flow'].get('base_channels', 64) * 32,
           paths['slowonly_r50_flow'])
  # VGGSound's test.py loads it into nn.DataParallel(AVENet): keys carry 'module.'.
  sd = {f'module.{k}': v for k, v in audio.state_dict().items()}
  torch.save({'model_state_dict': sd, 'epoch': 30}, paths['vggsound_r18'])
  return paths


# --------------------------------------------------------------------------------------------
# Phases 5-8: the train command, split into sub-phases.
# --------------------------------------------------------------------------------------------
def split_train_run(res: dict) -> dict[str, float]:
  """Sub-phase durations of one ``mbcd_jax.main`` run from its line and row times."""
  def line_t(pattern):
    return next((t for t, ln in res['lines'] if re.search(pattern, ln)), None)

  def row_t(kind, last=False):
    ts = [t for t, r in res['rows'] if r['kind'] == kind]
    return (ts[-1] if last else ts[0]) if ts else None

  marks = [('setup (config, data index, init, pretrained load)', line_t(r'trainable parameters')),
           ('train steps (incl. XLA compile)', row_t('train', last=True)),
           # Both rows are written after both splits are evaluated.
           ('evaluate val + test (incl. compile)', row_t('test', last=True)),
           ('checkpoint', line_t(r'checkpoint .* in [0-9.]+s')),
           ('summary and exit', res['wall_s'])]
  out, prev = {}, 0.0
  for name, t in marks:
    if t is None:
      continue
    out[name] = round(t - prev, 2)
    prev = t
  m = [re.search(r'checkpoint .* in ([0-9.]+)s', ln) for _, ln in res['lines']]
  saves = [float(x.group(1)) for x in m if x]
  if saves:
    out['checkpoint save itself (logged)'] = saves[-1]
  return out


def config_extras() -> list[str]:
  """The port's BN semantics where this checkout's config has them."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('_epic_cfg', os.path.join(_ROOT, 'configs',
                                                                          'epic.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  model = mod.get_config().model
  extras = []
  if 'bn_mode' in model:
    extras.append('--config.model.bn_mode=port')
  if 'dsu' in model:
    extras.append('--config.model.dsu=True')
  return extras


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--out', required=True, help='working folder (tree, store, weights, runs)')
  p.add_argument('--tiny', action='store_true', help='narrow encoders, the paper\'s inputs')
  p.add_argument('--ci', action='store_true', help='narrow encoders and small inputs (CI)')
  p.add_argument('--workers', type=int, default=2, help='prepare --workers')
  args = p.parse_args(argv)
  mode = 'ci' if args.ci else 'tiny' if args.tiny else 'full'
  kwargs = {'ci': CI_KWARGS, 'tiny': TINY_KWARGS, 'full': {k: {} for k in TINY_KWARGS}}[mode]
  clip = CI_CLIP if args.ci else {}
  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [_ROOT] + [x for x in os.environ.get('PYTHONPATH', '').split(os.pathsep) if x]))
  rec = Recorder(out, {
      'mode': mode,
      'started_utc': time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime()), 'cpus': os.cpu_count(),
      'load_avg_start': os.getloadavg(), 'batch': BATCH, 'clips_per_domain': COUNTS,
      'shapes': ({'video': [8, 32, 32, 3], 'flow': [2, 32, 32, 2], 'audio': [257, 101, 1]}
                 if args.ci else {'video': [32, 224, 224, 3], 'flow': [8, 224, 224, 2],
                                  'audio': [257, 1004, 1]}),
      'encoder_kwargs': kwargs if mode != 'full' else 'paper defaults'})
  paths = {'/data/EPIC': os.path.join(out, 'EPIC'),
           '/data/epic_prepared': os.path.join(out, 'epic_prepared'),
           'runs/epic_d1': os.path.join(out, 'runs', 'epic_d1')}
  # The convert and train commands name checkpoints and pretrained/ relative to the folder
  # they run in: this one (configs/ linked in, as in a checkout).
  work = os.path.join(out, 'work')
  os.makedirs(work, exist_ok=True)
  if not os.path.exists(os.path.join(work, 'configs')):
    os.symlink(os.path.join(_ROOT, 'configs'), os.path.join(work, 'configs'))

  # 1. tree
  t = time.time()
  from tests.data import fixtures  # pylint: disable=g-import-not-at-top  (the tests' data trees)
  if not os.path.exists(paths['/data/EPIC']):
    fixtures.make_epic(paths['/data/EPIC'] + '.tmp', counts=COUNTS,
                       clip_frames=CI_CLIP_FRAMES if args.ci else CLIP_FRAMES)
    os.replace(paths['/data/EPIC'] + '.tmp', paths['/data/EPIC'])
  rec.add('1 tree (EPIC release layout)', time.time() - t, self_peak_mib())

  # 2. prepare
  prep = substitute(readme_commands('python -m mbcd_jax.data.prepare --dataset=epic')[0], paths)
  res = run_logged(prep + [f'--workers={args.workers}', '--no_progress'],
                   os.path.join(out, 'prepare.log'), work, env)
  if res['rc'] != 0:
    raise SystemExit(f'prepare failed (exit {res["rc"]}), see {out}/prepare.log')
  rec.add('2 prepare', res['wall_s'], res['peak_rss_mib'])

  # 3. torch checkpoints
  t = time.time()
  write_torch_checkpoints(work, kwargs)
  rec.add('3 torch checkpoints (random weights, released layouts)', time.time() - t,
          self_peak_mib())

  # 4. convert, the README's commands
  for i, cmd in enumerate(readme_commands('python -m mbcd_jax.encoders.convert')):
    cmd = substitute(cmd, paths)
    kind = next(a.split('=', 1)[1] for a in cmd if a.startswith('--kind='))
    if kwargs[kind]:
      cmd.append('--encoder_kwargs=' + json.dumps(kwargs[kind]))
    res = run_logged(cmd, os.path.join(out, f'convert_{kind}.log'), work, env)
    if res['rc'] != 0:
      raise SystemExit(f'convert {kind} failed (exit {res["rc"]}), see {out}/convert_{kind}.log')
    rec.add(f'4.{i + 1} convert {kind}', res['wall_s'], res['peak_rss_mib'])

  # 5-7. train 2 steps, evaluate, checkpoint; 8. resume with one more epoch
  train_cmd = substitute(readme_commands(
      'python -m mbcd_jax.main --config=configs/epic.py')[0], paths)
  overrides = [f'--config.data.batch_size={BATCH}', f'--config.data.eval_batch_size={BATCH}',
               '--config.train.log_every=1', '--config.train.progress=False',
               *config_extras(), *(f'--config.data.clip.{k}={v}' for k, v in clip.items())]
  for kind, kw in kwargs.items():
    overrides += [f'--config.model.encoders.{KIND_MODALITY[kind]}.{k}={v}'
                  for k, v in kw.items()]
  metrics = os.path.join(paths['runs/epic_d1'], 'metrics.jsonl')
  summary_path = os.path.join(paths['runs/epic_d1'], 'summary.json')
  runs = [('5-7 train 2 steps + evaluate + checkpoint', ['--config.train.epochs=1'], 'train'),
          ('8 resume: +1 epoch (2 steps) + evaluate + checkpoint',
           ['--config.train.epochs=2', '--config.train.resume_mode=allow_changes'], 'resume')]
  for name, extra, tag in runs:
    res = run_logged(train_cmd + overrides + extra, os.path.join(out, f'{tag}.log'), work, env,
                     watch_jsonl=metrics)
    if res['rc'] != 0:
      tail = '\n'.join(ln for _, ln in res['lines'][-15:])
      raise SystemExit(f'{tag} failed (exit {res["rc"]}), see {out}/{tag}.log:\n{tail}')
    with open(summary_path) as f:
      summary = json.load(f)
    resumed = [ln for _, ln in res['lines'] if 'resumed from' in ln]
    step_rows = [r['step'] for _, r in res['rows'] if r['kind'] == 'train']
    rec.add(name, res['wall_s'], res['peak_rss_mib'], parts=split_train_run(res),
            argv=train_cmd + overrides + extra, cwd=work,
            steps=summary['steps'], resumed_from_step=summary['resumed_from_step'],
            train_steps_run=step_rows, resume_log=resumed[-1].split('] ')[-1] if resumed else '',
            losses=[r['loss'] for _, r in res['rows'] if r['kind'] == 'train'],
            test_fused=summary['last']['test'].get(f'{summary["evaluated"]}/fused'))
  first, second = rec.doc['phases'][-2], rec.doc['phases'][-1]
  ok = (first['steps'] == 2 and first['resumed_from_step'] == 0 and second['steps'] == 4
        and second['resumed_from_step'] == 2 and bool(second['resume_log']))
  rec.doc['meta']['resume_ok'] = ok
  rec.doc['meta']['total_wall_s'] = round(sum(x['wall_s'] for x in rec.doc['phases']), 1)
  rec.save()

  print(f'\n{"phase":58s} {"wall s":>9s} {"peak RSS MiB":>13s}')
  for ph in rec.doc['phases']:
    print(f'{ph["phase"]:58s} {ph["wall_s"]:9.1f} {ph["peak_rss_mib"]:13.0f}')
    for k, v in ph.get('parts', {}).items():
      print(f'    {k:54s} {v:9.1f}')
  m = rec.doc['meta']
  print(f'{"total":58s} {m["total_wall_s"]:9.1f} {m["peak_rss_mib"]:13.0f}')
  print(f'load average at start {m["load_avg_start"]}, at end {m["load_avg_now"]}; '
        f'resume from the step-2 checkpoint: {"yes" if ok else "NO"}; {rec.path}')
  if not ok:
    raise SystemExit('the second run did not resume from the first run\'s checkpoint')


if __name__ == '__main__':
  main()
