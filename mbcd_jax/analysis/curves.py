"""Validation / test accuracy over training for several methods on one plot (paper Fig. 5),
from each run's ``metrics.jsonl`` (written by ``train.train_and_evaluate``; the runner's run
directories ``<workdir>/<variant>/<modalities>/<sources>_to_<target>/seed<k>/``).

Plots the evaluated model's fused accuracy (teacher for EMA methods), mean over seeds with a
min-max band, on the source validation split and the unseen-domain test split.

  python -m mbcd_jax.analysis curves --workdir=runs/study --methods=erm,ema,mbcd \
      --target=human --out=docs/study
"""
import glob
import json
import os
from typing import Sequence

import numpy as np

from mbcd_jax.analysis import common


def load_curve(run_dir: str) -> dict:
  """{'val': {epoch_index: acc}, 'test': {...}} of the run's evaluated model's fused head.

  Eval events are numbered 1, 2, ... in file order (one per evaluated epoch); the evaluated
  model is read from summary.json when present, else it is the teacher if one was logged."""
  events = []
  with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
    for line in f:
      events.append(json.loads(line))
  who = None
  summary = os.path.join(run_dir, 'summary.json')
  if os.path.exists(summary):
    with open(summary) as f:
      who = json.load(f).get('evaluated')
  if who is None:
    who = 'teacher' if any('teacher/fused' in e for e in events) else 'student'
  out = {'val': {}, 'test': {}, 'step': {}}
  for kind in ('val', 'test'):
    for i, e in enumerate([e for e in events if e['kind'] == kind]):
      out[kind][i + 1] = e[f'{who}/fused']
      out['step'][i + 1] = e['step']
  return out


def method_runs(workdir: str, method_dir: str, target: str | None = None,
                modalities: str = 'video_flow_audio') -> list[str]:
  pattern = os.path.join(workdir, method_dir, modalities,
                         f'*_to_{target}' if target else '*', 'seed*')
  return sorted(d for d in glob.glob(pattern) if os.path.exists(os.path.join(d, 'metrics.jsonl')))


def run(workdir: str, methods: Sequence[str], out_dir: str, target: str | None = None) -> dict:
  """Writes curves.json and curves.png."""
  plt = common.matplotlib_pyplot()
  result = {}
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.3), sharey=True)
  for method in methods:
    curves = [load_curve(d) for d in method_runs(workdir, method, target)]
    if not curves:
      continue
    entry = {}
    for ax, kind in zip(axes, ('val', 'test')):
      epochs = sorted(set.intersection(*[set(c[kind]) for c in curves]))
      vals = np.array([[c[kind][e] for e in epochs] for c in curves])
      entry[kind] = {'epochs': epochs, 'mean': vals.mean(0).tolist(),
                     'min': vals.min(0).tolist(), 'max': vals.max(0).tolist(),
                     'runs': len(curves)}
      line, = ax.plot(epochs, vals.mean(0), marker='o', ms=2, label=f'{method} (n={len(curves)})')
      ax.fill_between(epochs, vals.min(0), vals.max(0), color=line.get_color(), alpha=0.15)
    result[method] = entry
  for ax, title in zip(axes, ('source validation', 'unseen-domain test')):
    ax.set_title(title, fontsize=10)
    ax.set_xlabel('epoch')
    ax.grid(alpha=0.3)
  axes[0].set_ylabel('fused accuracy (%) of the evaluated model')
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(out_dir, exist_ok=True)
  fig.savefig(os.path.join(out_dir, 'curves.png'), dpi=90)
  plt.close(fig)
  common.save_json(result, os.path.join(out_dir, 'curves.json'))
  return result
