"""Our reliability metrics and corruptions vs the AUTHORS' OWN functions, on fixed arrays.

    python -m benchmarks.mmdg_reliability_harness --mmdg_dir=/tmp/mmdg_benchmark \\
        [--read_dir=/tmp/read]

Getting the clones (their code is never copied into this repository; only these files are read):

    git clone --no-checkout https://github.com/lihongzhao99/MMDG_Benchmark /tmp/mmdg_benchmark
    git -C /tmp/mmdg_benchmark restore --source=HEAD -- \\
        "Action recognition/test_untils/test_HAC_misd.py" \\
        "Action recognition/test_untils/test_HAC_ood.py"
    git clone --no-checkout https://github.com/XLearning-SCU/2024-ICLR-READ /tmp/read
    git -C /tmp/read restore --source=HEAD -- make_corruptions/make_c_video.py \\
        make_corruptions/make_c_audio.py

How their code runs here: the benchmark's test scripts import mmaction, torch and their data
loaders at the top, so they are not imported; their metric functions (``calc_aurc_eaurc``,
``coverage_risk``, ``aurc_eaurc``, ``calc_fpr_aupr`` from test_HAC_misd.py;
``compute_all_metrics``, ``auc_and_fpr_recall`` from test_HAC_ood.py) are cut out of the source
with ``ast`` at run time and executed with numpy and scikit-learn's ``metrics``, as their module
would. READ's ``disk`` / ``defocus_blur`` (make_c_video.py, with numpy and OpenCV) and
``add_external_noise`` (make_c_audio.py, with pydub, on wav files written here) likewise.
Needs scikit-learn (metrics) and pydub (the wind overlay; skipped without it).

Compared, on seeded arrays with and without ties (scores rounded to one decimal, constant
scores, perfect and inverted separation, float32 softmax maxima): every misd number (AURC,
E-AURC, AUROC, AUPR-success, AUPR-error, FPR95 'nearest', TNR95 = 1 - FPR95 'first') and every
OOD number (FPR95 'first', AUROC, AUPR-in, AUPR-out); defocus blur at severities 1-5 on a noise
and a smooth 64 x 80 frame, before and after the uint8 cast; the wind overlay at the five gains
with a noise recording shorter (looped) and longer (cut) than the clip, bit for bit on int16.
Exit status 1 if any difference exceeds 1e-9 (or any int16 sample differs).
"""
import argparse
import ast
import os
import sys
import tempfile
import wave

import numpy as np

from mbcd_jax.analysis import corruption, reliability

MISD = 'Action recognition/test_untils/test_HAC_misd.py'
OOD = 'Action recognition/test_untils/test_HAC_ood.py'
READ_VIDEO = 'make_corruptions/make_c_video.py'
READ_AUDIO = 'make_corruptions/make_c_audio.py'
TOL = 1e-9


def extract(path: str, names, namespace: dict) -> dict:
  """Executes the top-level functions ``names`` of the file at ``path`` in ``namespace``."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
  missing = set(names) - {d.name for d in defs}
  if missing:
    raise SystemExit(f'{path}: no function(s) {sorted(missing)} (another revision?)')
  exec(compile(ast.Module(body=defs, type_ignores=[]), path, 'exec'), namespace)   # pylint: disable=exec-used
  return namespace


# ---------------------------------------------------------------------------- cases
def misd_cases():
  rng = np.random.default_rng(0)
  n = 300
  correct = (rng.random(n) < 0.7).astype(int)
  s = np.clip(0.5 + 0.25 * (correct - 0.5) + 0.2 * rng.standard_normal(n), 0.01, 1.0)
  z = rng.standard_normal((n, 7)).astype(np.float32) * 2
  sm = np.exp(z - z.max(1, keepdims=True))
  sm = (sm / sm.sum(1, keepdims=True)).astype(np.float32)
  yield 'random', s, correct
  yield 'ties (1 decimal)', np.round(s, 1), correct
  yield 'constant', np.full(n, 0.5), correct
  yield 'perfect', correct + 0.1 * rng.random(n), correct
  yield 'inverted', 1 - correct + 0.1 * rng.random(n), correct
  yield 'softmax f32', sm.max(1).astype(np.float64), (sm.argmax(1) == rng.integers(0, 7, n)
                                                      ).astype(int)


def ood_cases():
  rng = np.random.default_rng(1)
  a, b = rng.normal(0.7, 0.15, 250), rng.normal(0.5, 0.15, 180)
  yield 'random', a, b
  yield 'ties (1 decimal)', np.round(a, 1), np.round(b, 1)
  yield 'constant', np.full(250, 0.3), np.full(180, 0.3)
  yield 'perfect', a + 10, b
  yield 'inverted', a, b + 10


# ---------------------------------------------------------------------------- comparisons
def compare_metrics(mmdg_dir: str, report):
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  ns = extract(os.path.join(mmdg_dir, MISD),
               ('calc_aurc_eaurc', 'calc_fpr_aupr', 'coverage_risk', 'aurc_eaurc'),
               {'np': np, 'metrics': metrics})
  ns = extract(os.path.join(mmdg_dir, OOD), ('compute_all_metrics', 'auc_and_fpr_recall'),
               dict(ns))
  for case, s, c in misd_cases():
    aurc, eaurc = ns['calc_aurc_eaurc'](s, list(c))
    auroc, aupr_s, aupr_e, fpr, tnr = ns['calc_fpr_aupr'](s, list(c))
    ours_aurc, ours_eaurc = reliability.aurc_eaurc(s, c)
    ours = dict(aurc=ours_aurc, eaurc=ours_eaurc, auroc=reliability.auroc(c, s),
                aupr_success=reliability.aupr(c, s),
                aupr_error=reliability.average_precision(1 - c, -s),
                fpr95_nearest=reliability.fpr_at_tpr(c, s, 0.95, 'nearest'),
                tnr95_first=1 - reliability.fpr_at_tpr(c, s, 0.95, 'first'))
    theirs = dict(aurc=aurc, eaurc=eaurc, auroc=auroc, aupr_success=aupr_s, aupr_error=aupr_e,
                  fpr95_nearest=fpr, tnr95_first=tnr)
    for k in ours:
      report('misd', case, k, ours[k], theirs[k])
  for case, a, b in ood_cases():
    conf = np.r_[a, b]
    label = np.r_[np.zeros(len(a), int), -np.ones(len(b), int)]
    fpr, auroc, aupr_in, aupr_out = ns['compute_all_metrics'](conf, label)
    ours = reliability.ood_metrics(a, b)
    for k, v in (('fpr95_first', fpr), ('auroc', auroc), ('aupr_in', aupr_in),
                 ('aupr_out', aupr_out)):
      report('ood', case, k, ours['fpr95' if k == 'fpr95_first' else k] / 100.0, v)


def compare_defocus(read_dir: str, report):
  import cv2  # pylint: disable=g-import-not-at-top
  ns = extract(os.path.join(read_dir, READ_VIDEO), ('disk', 'defocus_blur'),
               {'np': np, 'cv2': cv2})
  rng = np.random.default_rng(2)
  noise = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
  yy, xx = np.mgrid[:64, :80]
  smooth = np.stack([128 + 100 * np.sin(xx / 7.0), 128 + 100 * np.cos(yy / 5.0),
                     (xx + yy) * 1.7], -1).clip(0, 255).astype(np.uint8)
  for case, frame in (('noise frame', noise), ('smooth frame', smooth)):
    for s in corruption.SEVERITIES:
      theirs = ns['defocus_blur'](frame, s)
      ours = corruption.defocus_blur(frame, s)
      report('defocus_blur', f'{case} s{s}', 'max|d| float', 0.0,
             float(np.abs(ours - theirs).max()))
      report('defocus_blur', f'{case} s{s}', 'uint8 differ', 0.0,
             float((corruption.to_uint8(ours) != np.uint8(theirs)).sum()))


def _write_wav(path: str, x: np.ndarray, rate: int = 16000):
  with wave.open(path, 'wb') as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(x.astype('<i2').tobytes())


def compare_wind(read_dir: str, report):
  try:
    from pydub import AudioSegment  # pylint: disable=g-import-not-at-top
  except ImportError:
    print('wind overlay: skipped (pip install pydub to compare with READ\'s add_external_noise)')
    return
  ns = extract(os.path.join(read_dir, READ_AUDIO), ('add_external_noise',),
               {'AudioSegment': AudioSegment, 'print': lambda *a, **k: None})
  rng = np.random.default_rng(3)
  clip = (rng.standard_normal(16000 * 2) * 6000).clip(-32768, 32767).astype(np.int16)
  with tempfile.TemporaryDirectory() as tmp:
    _write_wav(os.path.join(tmp, 'clip.wav'), clip)
    for case, n in (('noise shorter', 16000 // 2 + 160), ('noise longer', 16000 * 3)):
      noise = (rng.standard_normal(n) * 9000).clip(-32768, 32767).astype(np.int16)
      _write_wav(os.path.join(tmp, 'wind.wav'), noise)
      for s in corruption.SEVERITIES:
        out = os.path.join(tmp, 'out.wav')
        ns['add_external_noise'](os.path.join(tmp, 'clip.wav'), os.path.join(tmp, 'wind.wav'),
                                 out, s)
        with wave.open(out, 'rb') as w:
          theirs = np.frombuffer(w.readframes(w.getnframes()), '<i2')
        ours = corruption.wind_overlay(clip, noise, corruption.WIND_GAIN_DB[s - 1])
        report('wind', f'{case} s{s}', 'int16 differ', 0.0,
               float((ours != theirs).sum()) if ours.shape == theirs.shape else float('inf'))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--mmdg_dir', required=True, help='a clone of lihongzhao99/MMDG_Benchmark')
  p.add_argument('--read_dir', help='a clone of XLearning-SCU/2024-ICLR-READ (corruptions)')
  args = p.parse_args(argv)
  worst = [0.0]
  print(f'{"suite":13s} {"case":22s} {"metric":15s} {"ours":>14s} {"theirs":>14s} {"|d|":>9s}')

  def report(suite, case, metric, ours, theirs):
    d = abs(float(ours) - float(theirs))
    if np.isnan(ours) and np.isnan(theirs):
      d = 0.0
    worst[0] = max(worst[0], d if not np.isnan(d) else np.inf)
    print(f'{suite:13s} {case:22s} {metric:15s} {float(ours):14.10f} {float(theirs):14.10f} '
          f'{d:9.1e}')
  compare_metrics(args.mmdg_dir, report)
  if args.read_dir:
    compare_defocus(args.read_dir, report)
    compare_wind(args.read_dir, report)
  ok = worst[0] <= TOL
  print(f'largest difference {worst[0]:.1e}: {"AGREE" if ok else "DISAGREE"} (tolerance {TOL})')
  return 0 if ok else 1


if __name__ == '__main__':
  sys.exit(main())
