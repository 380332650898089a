"""Evaluation with a modality missing at test time, two ways:

  zeroed feature   the modality's normalised feature is zeroed in the fused head's input (what
                   AMD does during training, so AMD-trained heads have seen it);
  dropped input    the modality's model-ready input is all zeros (the data mean) and goes
                   through the encoder as usual (a blank clip / silent audio).

Reports the evaluated model's fused accuracy on the unseen-domain test set with every
modality present, and with each modality missing in each way.

  python -m mbcd_jax.analysis missing --config=configs/hac.py:synthetic \
      --methods=erm,ema,mbcd --workdir=runs/analysis --out=docs/study
"""
import numpy as np

from mbcd_jax.analysis import common


def missing_report(trained: common.Trained, split: str = 'test') -> dict:
  """{'all': %, 'zeroed_feature': {m: %}, 'dropped_input': {m: %}} (fused head)."""
  mods = trained.modalities
  out = {'all': common.accuracy(trained, split)['fused'], 'zeroed_feature': {},
         'dropped_input': {}}
  for m in mods:
    keep = lambda b, m=m: {k: np.full(len(b['label']), 0.0 if k == m else 1.0) for k in mods}
    out['zeroed_feature'][m] = common.accuracy(trained, split, keep_fn=keep)['fused']

    def drop(b, _, m=m):
      b[m] = np.zeros_like(np.asarray(b[m]))
      return b
    out['dropped_input'][m] = common.accuracy(trained, split, transform=drop)['fused']
  return out


def run(trained: dict, out_dir: str) -> dict:
  """Writes missing.json and missing.png (grouped bars per method)."""
  plt = common.matplotlib_pyplot()
  result = {name: missing_report(t) for name, t in trained.items()}
  mods = list(next(iter(trained.values())).modalities)
  cols = ['all'] + [f'-{m} (feat)' for m in mods] + [f'-{m} (input)' for m in mods]
  fig, ax = plt.subplots(figsize=(8.5, 3.2))
  width = 0.8 / len(result)
  for i, (name, r) in enumerate(result.items()):
    vals = ([r['all']] + [r['zeroed_feature'][m] for m in mods]
            + [r['dropped_input'][m] for m in mods])
    ax.bar(np.arange(len(cols)) + i * width, vals, width, label=name)
  ax.set_xticks(np.arange(len(cols)) + 0.4 - width / 2)
  ax.set_xticklabels(cols, fontsize=8)
  ax.set_ylabel('fused test accuracy (%)')
  ax.legend(fontsize=8)
  ax.grid(axis='y', alpha=0.3)
  fig.tight_layout()
  fig.savefig(f'{out_dir}/missing.png', dpi=90)
  plt.close(fig)
  common.save_json(result, f'{out_dir}/missing.json')
  return result
