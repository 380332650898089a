"""Evaluation with a modality missing at test time, two ways:

  zeroed feature   the modality's normalised feature is zeroed in the fused head's input (what
                   AMD does during training, so AMD-trained heads have seen it);
  dropped input    the modality's model-ready input is all zeros (the data mean) and goes
                   through the encoder as usual (a blank clip / silent audio).

Reports the evaluated model's fused accuracy on the unseen-domain test set with every
modality present, and with each modality missing in each way (``run``, missing.json / .png).

The reliability suite (``subset_rows``; ``python -m mbcd_jax.analysis missing --workdir=...``)
takes any non-empty proper subset of the modalities missing at once, both ways; the MMDG
benchmark's ``test_HAC_missing.py`` zeroes the embeddings at the fused head's input with no
retraining, i.e. 'feature' here. Where the zero lands relative to the feature norm differs per
method: MBCD and the EMA family normalise each embedding (``model.feature_norm``
'parameter_free' / 'learnable') *before* the mask, so the head sees an exact zero block, as the
benchmark's own heads (no norm) do; the peers' presets have no norm ('none'), so theirs is the
benchmark's test unchanged. Each row names it (``zeroed``).

  python -m mbcd_jax.analysis missing --config=configs/hac.py:synthetic \
      --methods=erm,ema,mbcd --workdir=runs/analysis --out=docs/study
"""
import itertools

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


LEVELS = ('feature', 'input')


def missing_subsets(modalities) -> list[tuple]:
  """Every non-empty proper subset of ``modalities``, smallest first, in modality order."""
  mods = tuple(modalities)
  return [c for k in range(1, len(mods)) for c in itertools.combinations(mods, k)]


def without(trained: common.Trained, missing, level: str, split: str = 'test',
            limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(fused logits ``[N, C]``, labels) with the modalities ``missing`` zeroed at ``level``:
  'feature' (their normalised features in the fused head's input) or 'input' (their
  model-ready inputs)."""
  mods, missing = trained.modalities, tuple(missing)
  if level == 'feature':
    keep = lambda b: {k: np.full(len(b['label']), 0.0 if k in missing else 1.0) for k in mods}
    return common.fused_outputs(trained, split, keep_fn=keep, limit=limit)
  if level == 'input':
    def drop(b, _):
      for m in missing:
        b[m] = np.zeros_like(np.asarray(b[m]))
      return b
    return common.fused_outputs(trained, split, transform=drop, limit=limit)
  raise ValueError(f'missing level must be one of {LEVELS}, got {level!r}')


def subset_rows(trained: common.Trained, split: str = 'test', limit: int | None = None
                ) -> list[dict]:
  """One row per condition: 'none' (all present), then '<level>:-<m1>+<m2>' for every subset
  and level; fields condition, level, missing, zeroed, acc (%)."""
  z, y = common.fused_outputs(trained, split, limit=limit)
  norm = trained.model.feature_norm
  rows = [dict(condition='none', level='', missing='', zeroed='',
               acc=100.0 * float((z.argmax(-1) == y).mean()))]
  for level in LEVELS:
    for sub in missing_subsets(trained.modalities):
      z, y = without(trained, sub, level, split, limit)
      zeroed = (f'normalised feature (after feature_norm={norm})' if level == 'feature'
                else 'model-ready input (before the encoder)')
      rows.append(dict(condition=f'{level}:-{"+".join(sub)}', level=level,
                       missing='+'.join(sub), zeroed=zeroed,
                       acc=100.0 * float((z.argmax(-1) == y).mean())))
  return rows


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
