r"""Checks a synthetic world against the benchmark's principle, on data statistics only.

    python -m mbcd_jax.synthetic.world_check --config=configs/hac.py:synthetic
    python -m mbcd_jax.synthetic.world_check --config=configs/hac.py:synthetic \
        --config.data.synthetic.world_seed=1

The principle (docs/benchmark.md), for the multi-source protocol (each domain held out in turn),
mirrors the paper's two conditions:

1. **Target within the sources' span.** Modality by modality, every style statistic of the
   held-out domain (its 5th-95th percentile range over examples) lies within the range the
   sources' examples show together (their pooled 1st-99th percentile range), up to ``tol``
   times that range's width.
2. **Domain shift in every modality.** For every modality and every pair of domains, some style
   statistic's means differ by at least ``min_shift`` pooled within-domain standard deviations.
3. **One dominant modality that learns fast and transfers worse.** On roll-invariant class
   descriptors (per-frame channel means for video / flow, the frequency profile for audio), the
   dominant modality has the highest within-domain class separability (between- over
   within-class variance) and the lowest cross-domain agreement of its class means
   (correlation of the domain-centred class means, averaged over domain pairs).

Style statistics are measured on the world's records re-rendered with the class signal off
(``amp=0``: the same random draws, hence the same per-example styles), so that class evidence,
whose domain-specific part differs between domains by design, is not counted as style.
Style statistics per example (in the generator's units: uint8 records mapped back by
``(x - 128) / 32``): video / flow, each channel's mean (colour cast / motion bias) and the log
standard deviation (gain); audio, the slope of the frequency profile (spectral tilt), the mean
level and the log standard deviation. No model is trained: these are properties of the data.
"""
import dataclasses
import itertools
import sys

import ml_collections
import numpy as np

from mbcd_jax import MODALITIES, input_pipeline
from mbcd_jax.data import synthetic


def _to_units(m: str, x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x if m == 'audio' else (x - 128.0) / 32.0


def style_stats(m: str, x: np.ndarray) -> dict[str, float]:
  """Style statistics of one record's modality ``m`` (generator units)."""
  x = _to_units(m, x)
  if m == 'audio':   # [F, S]
    prof = x.mean(1)
    f = np.linspace(-1, 1, len(prof))
    return {'tilt': float(np.polyfit(f, prof, 1)[0]), 'level': float(x.mean()),
            'log_std': float(np.log(x.std()))}
  out = {f'mean_c{c}': float(x[..., c].mean()) for c in range(x.shape[-1])}
  out['log_std'] = float(np.log(x.std()))
  return out


def class_descriptor(m: str, x: np.ndarray) -> np.ndarray:
  """Roll-invariant class evidence: per-frame channel means (video, flow), the frequency
  profile (audio)."""
  x = _to_units(m, x)
  return x.mean(1) if m == 'audio' else x.mean((1, 2)).ravel()


@dataclasses.dataclass
class Report:
  """``lines``: the printed report; ``failures``: the principle's violations (none: it holds);
  ``stats``: the measured numbers by name (``separability/<m>``, ``agreement/<m>``,
  ``shift/<m>`` the smallest over domain pairs of the largest style-mean difference in sd,
  ``span_margin/<m>`` the worst held-out overshoot of the sources' range in range widths,
  negative when inside; ``dominant``), for studies that relate a world's results to it."""
  lines: list
  failures: list
  stats: dict = dataclasses.field(default_factory=dict)

  @property
  def ok(self) -> bool:
    return not self.failures


def _fisher(desc: np.ndarray, labels: np.ndarray) -> float:
  mu = desc.mean(0)
  classes = np.unique(labels)
  between = sum((labels == c).sum() * np.sum((desc[labels == c].mean(0) - mu) ** 2)
                for c in classes)
  within = sum(np.sum((desc[labels == c] - desc[labels == c].mean(0)) ** 2) for c in classes)
  return float(between / within)


def check(spec: synthetic.SyntheticSpec, modalities=MODALITIES, *, tol: float = 0.10,
          min_shift: float = 0.5) -> Report:
  """Measures the world ``spec`` defines and checks the principle (module docstring)."""
  domains = spec.domains
  # Styles are measured on the same records with the class signal switched off (amp 0: the
  # same random draws, so the same per-example styles), so that the class evidence, whose
  # domain-specific part differs between domains by design, does not pass for style.
  blank = dataclasses.replace(spec, amp=0.0)
  stats, desc, labels = {}, {}, {}
  for d in domains:   # every record of the domain (train and test splits)
    src = synthetic.SyntheticSource(spec, (d,), 'all', modalities)
    recs = [src[i] for i in range(len(src))]
    src0 = synthetic.SyntheticSource(blank, (d,), 'all', modalities)
    recs0 = [src0[i] for i in range(len(src0))]
    labels[d] = np.array([r['label'] for r in recs])
    for m in modalities:
      stats[m, d] = [style_stats(m, r[m]) for r in recs0]
      desc[m, d] = np.stack([class_descriptor(m, r[m]) for r in recs])
  lines, failures, measured = [], [], {'dominant': spec.dominant}
  lines.append('1. style ranges per domain (5th..95th percentile; generator units)')
  for m in modalities:
    names = list(stats[m, domains[0]][0])
    for name in names:
      vals = {d: np.array([s[name] for s in stats[m, d]]) for d in domains}
      q = {d: (np.percentile(v, 5), np.percentile(v, 95)) for d, v in vals.items()}
      row = '  '.join(f'{d}[{lo:+.2f},{hi:+.2f}]' for d, (lo, hi) in q.items())
      verdicts = []
      for t in domains:
        pooled = np.concatenate([vals[s] for s in domains if s != t])
        lo, hi = pooled.min(), pooled.max()
        margin = tol * (hi - lo)
        inside = q[t][0] >= lo - margin and q[t][1] <= hi + margin
        over = max(lo - q[t][0], q[t][1] - hi) / max(hi - lo, 1e-8)
        measured[f'span_margin/{m}'] = max(measured.get(f'span_margin/{m}', -np.inf), over)
        verdicts.append(f'{t}:{"in" if inside else "OUT"}')
        if not inside:
          failures.append(f'{m}.{name}: target {t} range [{q[t][0]:+.2f},{q[t][1]:+.2f}] '
                          f'outside the sources\' [{lo:+.2f},{hi:+.2f}]')
      lines.append(f'  {m:5s} {name:8s} {row}   held out -> {" ".join(verdicts)}')
  lines.append(f'2. domain shift: largest style-mean difference per domain pair (pooled '
               f'within-domain sd; need >= {min_shift})')
  for m in modalities:
    names = list(stats[m, domains[0]][0])
    cells = []
    for a, b in itertools.combinations(domains, 2):
      best = 0.0
      for name in names:
        va = np.array([s[name] for s in stats[m, a]])
        vb = np.array([s[name] for s in stats[m, b]])
        sd = np.sqrt((va.var() + vb.var()) / 2) + 1e-8
        best = max(best, abs(va.mean() - vb.mean()) / sd)
      cells.append(f'{a}-{b} {best:.2f}')
      measured[f'shift/{m}'] = min(measured.get(f'shift/{m}', np.inf), best)
      if best < min_shift:
        failures.append(f'{m}: no domain shift between {a} and {b} ({best:.2f} sd)')
    lines.append(f'  {m:5s} ' + '  '.join(cells))
  lines.append('3. imbalance: class separability within domains, cross-domain agreement of '
               'class means')
  fisher, agree = {}, {}
  for m in modalities:
    fisher[m] = float(np.mean([_fisher(desc[m, d], labels[d]) for d in domains]))
    means = {}
    for d in domains:
      cm = np.stack([desc[m, d][labels[d] == c].mean(0) for c in range(spec.num_classes)])
      means[d] = (cm - cm.mean(0)).ravel()
    agree[m] = float(np.mean([np.corrcoef(means[a], means[b])[0, 1]
                              for a, b in itertools.combinations(domains, 2)]))
    measured[f'separability/{m}'], measured[f'agreement/{m}'] = fisher[m], agree[m]
    tag = ' (dominant)' if m == spec.dominant else ''
    lines.append(f'  {m:5s} separability {fisher[m]:.3f}  cross-domain agreement '
                 f'{agree[m]:.3f}{tag}')
  dom = spec.dominant
  if dom in modalities:
    for m in modalities:
      if m == dom:
        continue
      if fisher[dom] <= fisher[m]:
        failures.append(f'dominant {dom} is not the most separable ({fisher[dom]:.3f} <= '
                        f'{m} {fisher[m]:.3f})')
      if agree[dom] >= agree[m]:
        failures.append(f'dominant {dom} does not transfer worse ({agree[dom]:.3f} >= '
                        f'{m} {agree[m]:.3f})')
  lines.append('principle: ' + ('HOLDS' if not failures else 'FAILS:\n  ' + '\n  '.join(failures)))
  return Report(lines, failures, {k: v if isinstance(v, str) else float(v)
                                  for k, v in measured.items()})


def check_config(config: ml_collections.ConfigDict, **kwargs) -> Report:
  return check(input_pipeline.synthetic_spec(config), tuple(config.data.modalities), **kwargs)


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  report = check_config(flags.FLAGS.config)
  print('\n'.join(report.lines))
  sys.exit(0 if report.ok else 1)


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Config file (configs/hac.py:synthetic).')
  app.run(main)
