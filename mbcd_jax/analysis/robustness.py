"""Robustness to a modality shift at test time (paper Fig. 1b).

Gaussian noise of growing standard deviation sigma is added to one modality's *model-ready*
input (after the data normalisation, so sigma is in units of the input's own scale) on the
unseen-domain test set; the evaluated model's fused accuracy is recorded per perturbed
modality. A model that leans on one modality loses most when that modality is perturbed.

``noise_curve`` takes any ``metric_fn(batch) -> (sum, count)`` so it can be checked on a known
function (tests/test_analysis.py: E||x + sigma eps||^2 = ||x||^2 + d sigma^2).

  python -m mbcd_jax.analysis robustness --config=configs/hac.py:synthetic \
      --methods=erm,ema,mbcd --workdir=runs/analysis --out=docs/study
"""
from typing import Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

from mbcd_jax.method import losses
from mbcd_jax.analysis import common

DEFAULT_SIGMAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def add_noise(batch: Mapping, modality: str, sigma: float, rng: np.random.Generator) -> dict:
  """A copy of ``batch`` with N(0, sigma^2) added to ``batch[modality]``."""
  out = dict(batch)
  x = np.asarray(batch[modality], np.float32)
  out[modality] = x + sigma * rng.standard_normal(x.shape).astype(np.float32)
  return out


def noise_curve(metric_fn: Callable[[dict], tuple[float, float]], batches: Iterable[Mapping],
                modality: str, sigmas: Sequence[float], seed: int = 0,
                repeats: int = 1) -> list[float]:
  """``sum metric / sum count`` over ``batches`` for every sigma (noise redrawn ``repeats``
  times per batch; seeded, so every method sees the same noise)."""
  batches = list(batches)
  out = []
  for si, sigma in enumerate(sigmas):
    rng = np.random.default_rng([seed, si])
    total, count = 0.0, 0.0
    for _ in range(repeats):
      for b in batches:
        s, c = metric_fn(add_noise(b, modality, sigma, rng))
        total, count = total + float(s), count + float(c)
    out.append(total / count)
  return out


def fused_correct_fn(trained: common.Trained, who: str | None = None):
  """``batch -> (#correct of the fused head, #real examples)`` for the evaluated model."""
  def fn(b):
    z = common.logits(trained, b, who=who)['fused']
    mask = np.asarray(b['mask'])
    return float((np.asarray(losses.correct(z, np.asarray(b['label']))) * mask).sum()), \
        float(mask.sum())
  return fn


def robustness(trained: common.Trained, sigmas: Sequence[float] = DEFAULT_SIGMAS,
               split: str = 'test', seed: int = 0) -> dict:
  """{modality: [fused accuracy % at each sigma]} with that modality's input perturbed."""
  batches = list(common.batches(trained, split))
  fn = fused_correct_fn(trained)
  return {m: [100.0 * a for a in noise_curve(fn, batches, m, sigmas, seed)]
          for m in trained.modalities}


def run(trained: dict, out_dir: str, *, sigmas: Sequence[float] = DEFAULT_SIGMAS) -> dict:
  """Curves for every method; writes robustness.json and robustness.png (one panel per
  perturbed modality, one line per method)."""
  plt = common.matplotlib_pyplot()
  result = {'sigmas': list(sigmas),
            'methods': {name: robustness(t, sigmas) for name, t in trained.items()}}
  mods = list(next(iter(trained.values())).modalities)
  fig, axes = plt.subplots(1, len(mods), figsize=(3.3 * len(mods), 3), sharey=True)
  for ax, m in zip(np.atleast_1d(axes), mods):
    for name, curves in result['methods'].items():
      ax.plot(sigmas, curves[m], marker='o', ms=3, label=name)
    ax.set_title(f'noise on {m}', fontsize=10)
    ax.set_xlabel('noise std (input units)')
    ax.grid(alpha=0.3)
  np.atleast_1d(axes)[0].set_ylabel('fused test accuracy (%)')
  np.atleast_1d(axes)[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(f'{out_dir}/robustness.png', dpi=90)
  plt.close(fig)
  common.save_json(result, f'{out_dir}/robustness.json')
  return result
