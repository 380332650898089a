"""Reliability metrics and confidence scores, as the MMDG benchmark defines them (numpy only).

The benchmark (lihongzhao99/MMDG_Benchmark, ``Action recognition/test_untils/``) computes its
numbers with scikit-learn; the curves are written out here so that nothing beyond numpy is
needed, and ``benchmarks/mmdg_reliability_harness.py`` checks every function against the
benchmark's own ones (run from a local clone) to 1e-9, ties included.

Scores (higher = more confident / more in-distribution), from fused logits ``z [N, C]``:

  msp         max_c softmax(z)_c                      the benchmark's score
  max_logit   max_c z_c
  energy      log sum_c exp(z_c)                      (the negative free energy, T = 1)
  neg_entropy sum_c p_c log p_c                       (minus the predictive entropy)

Misclassification detection (``misd``; correct predictions are the positives):

  AURC     area under the risk-coverage curve: examples sorted by score, highest first (ties
           in example order, as the benchmark's stable ``sorted``), risk at coverage k/N = the
           error rate of the first k; AURC = mean over k. Reported x 1000.
  E-AURC   AURC - the optimal AURC of the same error rate r: r + (1 - r) ln(1 - r) (the
           benchmark's closed form; r = 1 gives r here, where the benchmark's numpy gives nan).
  AUROC    trapezoidal area under the ROC of (correct, score). x 100.
  FPR95    two rules, both in the benchmark:
             'nearest'  the FPR of the ROC point whose TPR is nearest 0.95 (first on ties) --
                        test_HAC_misd.py's FPR95;
             'first'    the FPR of the first ROC point with TPR >= 0.95 -- test_HAC_ood.py's
                        FPR95 (and 1 - misd's TNR95).
           Both on scikit-learn's ROC: one point per distinct score, collinear points dropped
           (``drop_intermediate``), which can move the 'nearest' point. x 100.
  AUPR-success  trapezoidal area under the precision-recall curve of (correct, score).
  AUPR-error    average precision (step integral) of (error, -score).

Out-of-distribution detection (``ood``; OOD examples are the positives, scored by -score):

  FPR95    rule 'first' on the ROC of (is_ood, -score). x 100.
  AUROC    of (is_ood, -score). x 100.
  AUPR-in  trapezoidal PR area of (is_id, score); AUPR-out the same of (is_ood, -score). x 100.
"""
import math
from typing import Callable

import numpy as np

FPR_RULES = ('nearest', 'first')


# ---------------------------------------------------------------------------- scores
def _log_softmax(z: np.ndarray) -> np.ndarray:
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def msp(z: np.ndarray) -> np.ndarray:
  """Maximum softmax probability [N] (the benchmark's score)."""
  return np.exp(_log_softmax(z).max(-1))


def max_logit(z: np.ndarray) -> np.ndarray:
  return np.asarray(z, np.float64).max(-1)


def energy(z: np.ndarray) -> np.ndarray:
  """log sum exp z (the negative free energy at temperature 1)."""
  z = np.asarray(z, np.float64)
  m = z.max(-1)
  return m + np.log(np.exp(z - m[:, None]).sum(-1))


def neg_entropy(z: np.ndarray) -> np.ndarray:
  logp = _log_softmax(z)
  return (np.exp(logp) * logp).sum(-1)


SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    'msp': msp, 'max_logit': max_logit, 'energy': energy, 'neg_entropy': neg_entropy}


# ---------------------------------------------------------------------------- curves
def _counts_at_thresholds(labels, scores):
  """(fps, tps, thresholds) at each distinct score, highest first (scikit-learn's
  ``confusion_matrix_at_thresholds``): counts of negatives / positives scoring >= threshold."""
  y = np.asarray(labels).astype(np.float64).reshape(-1)
  s = np.asarray(scores).reshape(-1)
  if y.shape != s.shape:
    raise ValueError(f'labels {y.shape} and scores {s.shape} differ in shape')
  order = np.argsort(s, kind='mergesort')[::-1]
  s, y = s[order], y[order]
  last = np.r_[np.where(np.diff(s))[0], s.size - 1]   # the last index of each score group
  tps = np.cumsum(y)[last]
  fps = 1 + last - tps
  return fps, tps, s[last]


def roc_curve(labels, scores, drop_intermediate: bool = True):
  """(fpr, tpr, thresholds) as ``sklearn.metrics.roc_curve``: starts at (0, 0) with threshold
  inf; with ``drop_intermediate`` the points inside straight segments are dropped. NaN rates
  when a class is absent."""
  fps, tps, thr = _counts_at_thresholds(labels, scores)
  if drop_intermediate and fps.size > 2:
    keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
    fps, tps, thr = fps[keep], tps[keep], thr[keep]
  fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
  thr = np.r_[np.inf, thr.astype(np.float64)]
  fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
  tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
  return fpr, tpr, thr


def pr_curve(labels, scores):
  """(precision, recall) as ``sklearn.metrics.precision_recall_curve``: recall decreasing,
  ending at (precision 1, recall 0)."""
  fps, tps, _ = _counts_at_thresholds(labels, scores)
  ps = tps + fps
  precision = np.divide(tps, ps, out=np.zeros_like(tps), where=ps != 0)
  recall = tps / tps[-1] if tps[-1] != 0 else np.ones_like(tps)
  return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0]


def trapezoid_area(x, y) -> float:
  """``sklearn.metrics.auc``: trapezoidal area under y(x), x monotone either way."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  dx = np.diff(x)
  direction = -1.0 if np.any(dx < 0) and np.all(dx <= 0) else 1.0
  if np.any(dx < 0) and direction == 1.0:
    raise ValueError('x is neither increasing nor decreasing')
  return float(direction * np.trapezoid(y, x))


def auroc(labels, scores) -> float:
  fpr, tpr, _ = roc_curve(labels, scores)
  return trapezoid_area(fpr, tpr)


def fpr_at_tpr(labels, scores, tpr_level: float = 0.95, rule: str = 'nearest') -> float:
  """The FPR where the TPR reaches ``tpr_level`` under ``rule`` (module docstring)."""
  fpr, tpr, _ = roc_curve(labels, scores)
  if rule == 'nearest':
    return float(fpr[np.argmin(np.abs(tpr - tpr_level))])
  if rule == 'first':
    return float(fpr[np.argmax(tpr >= tpr_level)])
  raise ValueError(f'FPR rule must be one of {FPR_RULES}, got {rule!r}')


def aupr(labels, scores) -> float:
  """Trapezoidal area under the precision-recall curve (the benchmark's AUPR)."""
  precision, recall = pr_curve(labels, scores)
  return trapezoid_area(recall, precision)


def average_precision(labels, scores) -> float:
  """``sklearn.metrics.average_precision_score``: sum_k (R_k - R_{k-1}) P_k."""
  precision, recall = pr_curve(labels, scores)
  return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def risk_coverage(scores, correct) -> np.ndarray:
  """Risk (error rate) of the k most confident examples, k = 1..N [N]; ties in example order."""
  order = np.argsort(-np.asarray(scores, np.float64), kind='stable')
  errors = 1.0 - np.asarray(correct, np.float64)[order]
  return np.cumsum(errors) / np.arange(1, errors.size + 1)


def aurc_eaurc(scores, correct) -> tuple[float, float]:
  """(AURC, E-AURC), unscaled (module docstring)."""
  risk = risk_coverage(scores, correct)
  aurc = float(risk.mean())
  r = float(risk[-1])
  optimal = r + (1 - r) * math.log(1 - r) if r < 1 else r
  return aurc, aurc - optimal


# ---------------------------------------------------------------------------- suites
def misd_metrics(scores, correct) -> dict:
  """The benchmark's misclassification-detection numbers at its scales (module docstring)."""
  correct = np.asarray(correct).astype(np.int64)
  aurc, eaurc = aurc_eaurc(scores, correct)
  return dict(acc=100.0 * float(correct.mean()), aurc=1000.0 * aurc, eaurc=1000.0 * eaurc,
              auroc=100.0 * auroc(correct, scores),
              fpr95=100.0 * fpr_at_tpr(correct, scores, 0.95, 'nearest'),
              fpr95_first=100.0 * fpr_at_tpr(correct, scores, 0.95, 'first'),
              aupr_success=100.0 * aupr(correct, scores),
              aupr_error=100.0 * average_precision(1 - correct, -np.asarray(scores)))


def ood_metrics(id_scores, ood_scores) -> dict:
  """The benchmark's OOD-detection numbers (x 100), OOD as the positives (module docstring)."""
  conf = np.r_[np.asarray(id_scores, np.float64), np.asarray(ood_scores, np.float64)]
  is_ood = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))].astype(np.int64)
  return dict(fpr95=100.0 * fpr_at_tpr(is_ood, -conf, 0.95, 'first'),
              auroc=100.0 * auroc(is_ood, -conf),
              aupr_in=100.0 * aupr(1 - is_ood, conf),
              aupr_out=100.0 * aupr(is_ood, -conf))
