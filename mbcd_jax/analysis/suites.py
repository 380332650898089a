r"""The MMDG benchmark's four reliability suites over a study's finished runs.

  python -m mbcd_jax.analysis misd|ood|missing|corruption --workdir=runs/study \
      [--methods=erm,mbcd] [--checkpoint=last|best] [--who=evaluated|student|teacher] \
      [--ood_dir=/data/epic_prepared] [--noise_wav=wind.wav] [--hac_c=/data/HAC/HAC-C] \
      [--out=docs/study/reliability]

Every finished run under ``--workdir`` (``run.json`` + ``summary.json``, the runner's layout) of
the listed methods (default: all) is loaded from its checkpoint and evaluated on its own target
domain's test set; any method, EPIC, HAC or the embedded benchmark. What each suite measures
(``reliability.py`` has the metric definitions):

  misd        misclassification detection: per score (msp, max_logit, energy, neg_entropy),
              acc, AURC, E-AURC (x 1000), AUROC, FPR95 (both rules), AUPR-success/-error (x 100)
  ood         OOD detection against ``ood.py``'s set, per score: FPR95, AUROC, AUPR-in/-out
  missing     any subset of modalities zeroed at the fused head's input or at the input
  corruption  ``corruption.py``'s corruptions at severities 1-5 (+ the HAC-C tree if given)

Writes ``<suite>.csv`` (one row per method, target, seed, suite and condition, with the suite's
wall time on that run), ``<suite>.md`` (mean ± std over seeds per target; paired differences
against a baseline method with the runner's sign test, ``tables.paired``) and ``<suite>.png``.

Each run's rows are kept beside it (``<run_dir>/suites/<suite>-<key>.json``, written
atomically) and reused while nothing they depend on changed: the key hashes the run's
``summary.json``, the suite, checkpoint rule, ``who``, the options (with the noise recording's
bytes) and the source of the modules that compute the rows. Adding runs to a study, or running
the suites while it trains, evaluates only the new runs; ``recompute=True`` (``--recompute``)
evaluates every run again.
"""
import csv
import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Callable, Sequence

import numpy as np

from mbcd_jax.study import tables
from mbcd_jax.analysis import common, corruption, missing, ood, reliability

SUITES = ('misd', 'ood', 'missing', 'corruption')
# The suite's headline metric (paired tests, plots) and whether lower is better.
PRIMARY = {'misd': ('aurc', True), 'ood': ('auroc', False), 'missing': ('acc', False),
           'corruption': ('acc', False)}
COLUMNS = {'misd': ('acc', 'aurc', 'eaurc', 'auroc', 'fpr95', 'fpr95_first'),
           'ood': ('fpr95', 'auroc', 'aupr_in', 'aupr_out'),
           'missing': ('acc',), 'corruption': ('acc',)}
CHECKPOINT_RULE = {'last': 'last', 'best': 'best_val'}


@dataclasses.dataclass(frozen=True)
class Options:
  """What the suites read besides the runs.

  Attributes:
    scores: confidence scores (``reliability.SCORES``) for misd and ood.
    ood_dir, ood_domains: a prepared store of the other dataset as the OOD set of real-data
      runs (``ood.prepared_ood``); the embedded benchmark's runs use ``ood.synthetic_ood``.
    noise_wav: a noise recording (16-bit wav) for the audio 'wind' corruption; None: Gaussian
      noise by SNR.
    hac_c: a HAC-C tree (``corruption.HacCSource``), HAC runs only.
    severities: corruption severities.
    limit: at most this many eval batches per condition (quick looks; None = all).
    seed: corruption noise seed.
  """
  scores: tuple = tuple(reliability.SCORES)
  ood_dir: str | None = None
  ood_domains: tuple = ()
  noise_wav: str | None = None
  hac_c: str | None = None
  severities: tuple = corruption.SEVERITIES
  limit: int | None = None
  seed: int = 0


# ---------------------------------------------------------------------------- one run
def misd_rows(t: common.Trained, opts: Options, who=None) -> list[dict]:
  z, y = common.fused_outputs(t, 'test', who=who, limit=opts.limit)
  correct = z.argmax(-1) == y
  return [dict(condition=s, **reliability.misd_metrics(reliability.SCORES[s](z), correct))
          for s in opts.scores]


def ood_rows(t: common.Trained, opts: Options, who=None) -> list[dict]:
  if t.config.data.source == 'synthetic':
    name, src, tf = ood.synthetic_ood(t)
  elif opts.ood_dir:
    name, src, tf = ood.prepared_ood(t, opts.ood_dir, opts.ood_domains)
  else:
    raise ValueError('ood on real data needs --ood_dir: a prepared store of the other dataset '
                     '(EPIC for HAC runs, HAC for EPIC runs)')
  z_in, y = common.fused_outputs(t, 'test', who=who, limit=opts.limit)
  z_out, _ = common.fused_outputs(t, 'test', who=who, source=src, record_transform=tf,
                                  limit=opts.limit)
  acc = 100.0 * float((z_in.argmax(-1) == y).mean())
  return [dict(condition=f'{name}/{s}', ood_set=name, n_ood=len(z_out), acc=acc,
               **reliability.ood_metrics(reliability.SCORES[s](z_in),
                                         reliability.SCORES[s](z_out)))
          for s in opts.scores]


def corruption_rows(t: common.Trained, opts: Options, who=None) -> list[dict]:
  def acc(source=None):
    z, y = common.fused_outputs(t, 'test', who=who, source=source, limit=opts.limit)
    return 100.0 * float((z.argmax(-1) == y).mean())
  rows = [dict(condition='clean', modality='', corruption='', severity=0, acc=acc())]
  noise = corruption.read_wav_channel(opts.noise_wav) if opts.noise_wav else None
  loader = common.eval_loader(t, 'test')
  for c in corruption.make_corruptions(t.modalities, noise):
    for s in opts.severities:
      src = corruption.CorruptedSource(loader.source, loader.transform, c, s, opts.seed)
      rows.append(dict(condition=f'{c.label}@{s}', modality=c.modality, corruption=c.name,
                       severity=s, acc=acc(src)))
  if opts.hac_c:
    if t.config.data.source == 'synthetic' or t.config.data.dataset != 'hac':
      raise ValueError('--hac_c applies to HAC runs on prepared data only')
    from mbcd_jax.data import pipeline, store  # pylint: disable=g-import-not-at-top
    d = t.config.data
    entries = pipeline.select(store.load_index(d.dir, 'hac'), 'test', d.sources, d.target,
                              bool(d.hac_test_split_only))
    for m, name in (('video', 'defocus_blur'), ('audio', 'wind')):
      if m in t.modalities:
        src = corruption.HacCSource(loader.source, entries, opts.hac_c, m)
        rows.append(dict(condition=f'{m}:hac_c_{name}', modality=m, corruption=f'hac_c_{name}',
                         severity=-1, acc=acc(src)))
  return rows


def missing_rows(t: common.Trained, opts: Options, who=None) -> list[dict]:
  if who not in (None, t.who):
    raise ValueError('missing evaluates the evaluated model only')
  return missing.subset_rows(t, 'test', opts.limit)


EVALUATE: dict[str, Callable] = {'misd': misd_rows, 'ood': ood_rows, 'missing': missing_rows,
                                 'corruption': corruption_rows}


# ---------------------------------------------------------------------------- the study
def find_runs(workdir: str, methods: Sequence[str] | None = None) -> list[tuple[str, dict]]:
  """(run_dir, run.json) of every finished run under ``workdir`` of ``methods`` (all if None),
  in the runner's order."""
  found = []
  for root, _, files in sorted(os.walk(workdir)):
    if 'summary.json' in files and 'run.json' in files and common.finished(root):
      with open(os.path.join(root, 'run.json')) as f:
        meta = json.load(f)
      if methods is None or meta['variant'] in methods:
        found.append((root, meta))
  order = {m: i for i, m in enumerate(methods or [])}
  return sorted(found, key=lambda r: (order.get(r[1]['variant'], len(order)),
                                      r[1].get('order', 0), r[0]))


def evaluate_run(suite: str, run_dir: str, meta: dict, opts: Options, which: str = 'last',
                 who: str | None = None) -> list[dict]:
  """The suite's rows for one run, each with the run's keys and the suite's wall time."""
  t = common.load(run_dir, which)
  start = time.time()
  rows = EVALUATE[suite](t, opts, who)
  wall = time.time() - start
  keys = dict(variant=meta['variant'], modalities=tables.modality_label(t.modalities),
              setting=tables.setting_label(t.config.data.sources, t.config.data.target),
              target=t.config.data.target, seed=int(meta.get('seed', t.config.seed)),
              rule=CHECKPOINT_RULE[which], who=who or t.who, suite=suite)
  return [dict(keys, **r, wall_s=round(wall, 2)) for r in rows]


CACHE_DIR = 'suites'


def cache_key(suite: str, run_dir: str, which: str, who: str | None, opts: Options) -> str:
  """What a run's suite rows depend on, hashed (16 hex digits)."""
  h = hashlib.sha256()
  with open(os.path.join(run_dir, 'summary.json'), 'rb') as f:
    h.update(f.read())
  h.update(json.dumps([suite, which, who, dataclasses.asdict(opts)], sort_keys=True,
                      default=str).encode())
  if opts.noise_wav:
    with open(opts.noise_wav, 'rb') as f:
      h.update(f.read())
  for module in (common, corruption, missing, ood, reliability):
    with open(module.__file__, 'rb') as f:
      h.update(f.read())
  with open(__file__, 'rb') as f:
    h.update(f.read())
  return h.hexdigest()[:16]


def _write_json(obj, path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f)
  os.replace(tmp, path)


def run(suite: str, workdir: str, out_dir: str, methods: Sequence[str] | None = None,
        which: str = 'last', who: str | None = None, opts: Options = Options(),
        log: Callable[[str], None] = print, recompute: bool = False) -> list[dict]:
  """Evaluates ``suite`` on every finished run (reusing each run's kept rows unless
  ``recompute``); writes its CSV, markdown and plot."""
  if suite not in SUITES:
    raise ValueError(f'suite must be one of {SUITES}, got {suite!r}')
  runs = find_runs(workdir, methods)
  if not runs:
    raise FileNotFoundError(f'{workdir}: no finished runs'
                            + (f' of {",".join(methods)}' if methods else ''))
  rows = []
  for i, (run_dir, meta) in enumerate(runs):
    path = os.path.join(run_dir, CACHE_DIR, f'{suite}-{cache_key(suite, run_dir, which, who, opts)}.json')
    if os.path.exists(path) and not recompute:
      with open(path) as f:
        r = json.load(f)
      log(f'{suite} [{i + 1}/{len(runs)}]: {run_dir} (kept from {path})')
    else:
      r = evaluate_run(suite, run_dir, meta, opts, which, who)
      _write_json(r, path)
      log(f'{suite} [{i + 1}/{len(runs)}]: {run_dir} ({r[0]["wall_s"]:.1f} s)')
    rows += r
  os.makedirs(out_dir, exist_ok=True)
  write_csv(rows, os.path.join(out_dir, f'{suite}.csv'))
  with open(os.path.join(out_dir, f'{suite}.md'), 'w') as f:
    f.write(markdown(rows, suite))
  plot(rows, suite, os.path.join(out_dir, f'{suite}.png'))
  return rows


# ---------------------------------------------------------------------------- outputs
def write_csv(rows: Sequence[dict], path: str):
  fields = list(dict.fromkeys(k for r in rows for k in r))
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fields)
    w.writeheader()
    w.writerows(rows)


def _fmt(values) -> str:
  m, s = tables.mean_std(values)
  return '–' if math.isnan(m) else f'{m:.1f} ± {s:.1f}'


def markdown(rows: Sequence[dict], suite: str, baseline: str | None = None) -> str:
  """Mean ± std over seeds per (modalities, target, condition, method), then every method minus
  ``baseline`` (default 'erm' if present, else the first method) on the suite's primary
  metric, paired by (target, seed), with the sign test."""
  cols = COLUMNS[suite]
  metric, lower = PRIMARY[suite]
  variants = list(dict.fromkeys(r['variant'] for r in rows))
  lines = [f'## {suite}: mean ± std over seeds', '',
           '| Modalities | Target | Condition | Method | n | ' + ' | '.join(cols) + ' |',
           '|---|---|---|---|---:|' + '---:|' * len(cols)]
  groups = {}
  for r in rows:
    groups.setdefault((r['modalities'], r['setting'], r['condition'], r['variant']), []).append(r)
  for (mods, setting, cond, v), g in groups.items():
    lines.append(f'| {mods} | {setting} | {cond} | {v} | {len(g)} | '
                 + ' | '.join(_fmt([x[c] for x in g]) for c in cols) + ' |')
  base = baseline or ('erm' if 'erm' in variants else variants[0])
  lines += ['', f'**Paired difference in {metric} vs {base}, same target and seed** '
            f'({"lower" if lower else "higher"} is better; Δ = method − {base}; a win is a '
            'better value)', '',
            '| Modalities | Condition | Method | mean Δ ± s.e. | n | wins / losses / ties | '
            'sign-test p |', '|---|---|---|---:|---:|---:|---:|']
  for mods in dict.fromkeys(r['modalities'] for r in rows):
    for cond in dict.fromkeys(r['condition'] for r in rows if r['modalities'] == mods):
      sub = [r for r in rows if r['modalities'] == mods and r['condition'] == cond]
      for v in variants:
        if v == base:
          continue
        st = tables.paired(sub, sub[0]['rule'], v, base, metric, mods)
        if st is None:
          continue
        wins, losses = (st['losses'], st['wins']) if lower else (st['wins'], st['losses'])
        lines.append(f'| {mods} | {cond} | {v} | {st["mean"]:+.2f} ± {st["sem"]:.2f} | '
                     f'{st["n"]} | {wins} / {losses} / {st["ties"]} | {st["p_sign"]:.3f} |')
  return '\n'.join(lines) + '\n'


def plot(rows: Sequence[dict], suite: str, path: str):
  """The primary metric per method, mean over targets and seeds: against severity for
  corruptions (one panel per corruption), else bars per condition."""
  plt = common.matplotlib_pyplot()
  metric, _ = PRIMARY[suite]
  variants = list(dict.fromkeys(r['variant'] for r in rows))
  mean = lambda sel: float(np.mean([r[metric] for r in sel])) if sel else math.nan
  if suite == 'corruption':
    labels = list(dict.fromkeys(f'{r["modality"]}:{r["corruption"]}' for r in rows
                                if r['severity'] > 0))
    fig, axes = plt.subplots(1, max(1, len(labels)), figsize=(3.2 * max(1, len(labels)), 3),
                             sharey=True, squeeze=False)
    for ax, lab in zip(axes[0], labels):
      for v in variants:
        sev = sorted({r['severity'] for r in rows if r['severity'] > 0})
        ys = [mean([r for r in rows if r['variant'] == v and r['condition'] == 'clean'])]
        ys += [mean([r for r in rows if r['variant'] == v and r['severity'] == s
                     and f'{r["modality"]}:{r["corruption"]}' == lab]) for s in sev]
        ax.plot([0] + sev, ys, marker='o', ms=3, label=v)
      ax.set_title(lab, fontsize=9)
      ax.set_xlabel('severity (0 = clean)')
      ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f'fused test {metric} (%)')
    axes[0][0].legend(fontsize=8)
  else:
    conds = list(dict.fromkeys(r['condition'] for r in rows))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(conds) * max(1, len(variants)) / 2), 3.2))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
      ax.bar(np.arange(len(conds)) + i * width,
             [mean([r for r in rows if r['variant'] == v and r['condition'] == c])
              for c in conds], width, label=v)
    ax.set_xticks(np.arange(len(conds)) + 0.4 - width / 2)
    ax.set_xticklabels(conds, fontsize=7, rotation=30, ha='right')
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    ax.grid(axis='y', alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
