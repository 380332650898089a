"""The reliability suites' metrics and corruptions on hand-made cases, and the harness against
the MMDG benchmark's / READ's own functions when their clones are given
(``MMDG_BENCHMARK_DIR``, ``READ_DIR``)."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from mbcd_jax.data import synthetic
from mbcd_jax.analysis import corruption, ood, reliability
from mbcd_jax.data import hac, transforms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- metrics
def test_perfect_separation():
  correct = np.array([1, 1, 0, 0])
  s = np.array([0.9, 0.8, 0.2, 0.1])
  m = reliability.misd_metrics(s, correct)
  assert m['auroc'] == 100.0 and m['fpr95'] == 0.0 and m['fpr95_first'] == 0.0
  assert m['aupr_success'] == 100.0 and m['aupr_error'] == 100.0
  # risks at coverage 1..4: 0, 0, 1/3, 2/4; the optimum of r = 1/2 is 1/2 + 1/2 ln 1/2
  aurc = (1 / 3 + 1 / 2) / 4
  assert m['aurc'] == pytest.approx(1000 * aurc, abs=1e-12)
  assert m['eaurc'] == pytest.approx(1000 * (aurc - 0.5 - 0.5 * math.log(0.5)), abs=1e-12)
  o = reliability.ood_metrics([0.9, 0.8], [0.2, 0.1, 0.15])
  assert o == {'fpr95': 0.0, 'auroc': 100.0, 'aupr_in': 100.0, 'aupr_out': 100.0}


def test_constant_scores():
  correct = np.array([1, 0, 1, 0])
  m = reliability.misd_metrics(np.full(4, 0.5), correct)
  assert m['auroc'] == 50.0 and m['fpr95'] == 100.0 and m['fpr95_first'] == 100.0
  # ties keep the example order (the benchmark's stable sort): risks 0, 1/2, 1/3, 1/2
  assert m['aurc'] == pytest.approx(1000 * (0 + 1 / 2 + 1 / 3 + 1 / 2) / 4, abs=1e-12)
  assert reliability.ood_metrics(np.full(3, 0.2), np.full(2, 0.2))['auroc'] == 50.0


def test_ties_on_a_straight_roc_segment():
  # 20 score groups of one correct and one wrong prediction: every ROC point lies on the
  # diagonal, so scikit-learn keeps only (0, 0), (1/20, 1/20) and (1, 1) -- and both FPR95 rules
  # of the benchmark read FPR 1 there, not the 0.95 of the full curve.
  s = np.repeat(np.arange(20, 0, -1), 2).astype(float)
  correct = np.tile([1, 0], 20)
  fpr, tpr, thr = reliability.roc_curve(correct, s)
  np.testing.assert_allclose(tpr, [0, 0.05, 1])
  assert thr[0] == np.inf
  full = reliability.roc_curve(correct, s, drop_intermediate=False)[1]
  assert len(full) == 21 and 0.95 in full
  assert reliability.fpr_at_tpr(correct, s, rule='nearest') == 1.0
  assert reliability.fpr_at_tpr(correct, s, rule='first') == 1.0
  assert reliability.auroc(correct, s) == pytest.approx(0.5)
  with pytest.raises(ValueError, match='FPR rule'):
    reliability.fpr_at_tpr(correct, s, rule='interp')


def test_all_wrong_eaurc_is_defined():
  aurc, eaurc = reliability.aurc_eaurc(np.array([0.3, 0.2]), np.array([0, 0]))
  assert aurc == 1.0 and eaurc == 0.0


def test_scores_on_known_logits():
  z = np.array([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0]])
  np.testing.assert_allclose(reliability.msp(z)[0], 0.25)
  np.testing.assert_allclose(reliability.energy(z)[0], math.log(4))
  np.testing.assert_allclose(reliability.neg_entropy(z)[0], -math.log(4))
  np.testing.assert_allclose(reliability.max_logit(z), [0.0, 10.0])
  for f in reliability.SCORES.values():   # the confident row scores higher
    v = f(z)
    assert v[1] > v[0]


# ---------------------------------------------------------------- corruptions
def test_defocus_kernel_is_the_published_disk():
  # radius 3, anti-aliasing sigma 0.1 (severity 1): the 3 x 3 Gaussian is a delta to 1e-21, so
  # the kernel is the disk x^2 + y^2 <= 9, which has 29 lattice points, on a 17 x 17 support.
  k = corruption.disk_kernel(3, 0.1)
  assert k.shape == (17, 17)
  assert k[8, 8] == pytest.approx(1 / 29, rel=1e-6) and k[8, 11] == pytest.approx(1 / 29, rel=1e-6)
  assert k[8, 12] < 1e-20 and k[10, 10] == pytest.approx(1 / 29, rel=1e-6)   # 2^2 + 2^2 <= 9
  assert corruption.disk_kernel(10, 0.5).shape == (21, 21)
  # Normalised before the anti-aliasing blur, whose reflect-101 border adds mass where the disk
  # touches the support's edge (radius 8 on 17 x 17, radius 10 on 21 x 21): the published
  # generator brightens severities 4 and 5 by ~1 %.
  sums = [corruption.disk_kernel(r, a).sum() for r, a in corruption.DEFOCUS]
  np.testing.assert_allclose(sums, [1, 1, 1, 1.0129755, 1.0107858], rtol=1e-6)
  flat = np.full((20, 24, 3), 100, np.uint8)
  np.testing.assert_allclose(corruption.defocus_blur(flat, 3), 100.0, atol=1e-4)
  np.testing.assert_allclose(corruption.defocus_blur(flat, 5), 101.07858, atol=1e-3)


def test_wind_overlay_is_pydubs_integer_arithmetic():
  x = np.array([32000, 100, -32000, -32000], np.int16)
  n = np.array([1000, -1000], np.int16)    # looped to the clip's length
  out = corruption.wind_overlay(x, n, 6.0)   # 10^(6/20) = 1.99526: floor -> 1995 / -1996
  np.testing.assert_array_equal(out, [32767, -1896, -30005, -32768])   # saturating
  assert out.dtype == np.int16
  f = corruption.wind_overlay(x / 32768.0, n / 32768.0, 0.0)
  np.testing.assert_allclose(f, np.clip((x + np.resize(n, 4).astype(float)) / 32768.0, -1, 1))
  audioop = pytest.importorskip('audioop')   # the stdlib module pydub calls (Python < 3.13)
  rng = np.random.default_rng(0)
  a = rng.integers(-32768, 32768, 999).astype(np.int16)
  b = rng.integers(-32768, 32768, 999).astype(np.int16)
  for g in corruption.WIND_GAIN_DB:
    want = audioop.add(a.tobytes(), audioop.mul(b.tobytes(), 2, 10 ** (g / 20)), 2)
    np.testing.assert_array_equal(corruption.wind_overlay(a, b, g), np.frombuffer(want, '<i2'))


def test_gaussian_noise_by_snr():
  rng = np.random.default_rng(0)
  x = np.sin(np.arange(200_000) / 7.0) * 0.3
  for snr in (20, 0):
    y = corruption.gaussian_snr(x, snr, rng)
    measured = 10 * np.log10(np.mean(x ** 2) / np.mean((y - x) ** 2))
    assert measured == pytest.approx(snr, abs=0.05)
  spec = np.log(np.full((64, 64), 2.0))
  out = corruption.spectrogram_snr(spec, 0, rng)   # 0 dB: noise power = signal power
  assert np.mean(np.exp(out)) == pytest.approx(4.0, rel=0.03)


def test_corrupting_the_frames_read_equals_corrupting_every_frame():
  rng = np.random.default_rng(1)
  rec = {'video': rng.integers(0, 256, (40, 16, 20, 3), dtype=np.uint8),
         'label': np.int32(2), 'domain': np.int32(0), 'num_frames': np.int32(40)}
  tf = transforms.ClipTransform('hac', ('video',), transforms.ClipConfig(
      video_frames=4, video_stride=3, crop_size=16, resize_short=16), train=False)
  c = corruption.make_corruptions(('video',))[1]   # gaussian_noise: per-frame noise
  src = corruption.CorruptedSource([rec], tf, c, severity=3, seed=5)
  read = corruption.frames_read(tf, rec, 'video')
  assert len(read) == 4
  whole = dict(rec)
  whole['video'] = np.stack([corruption.to_uint8(c.apply(f, 3, np.random.default_rng([5, 3, 0, j])))
                             for j, f in enumerate(rec['video'])])
  np.testing.assert_array_equal(tf(src[0])['video'], tf(whole)['video'])
  assert not np.array_equal(tf(src[0])['video'], tf(rec)['video'])
  np.testing.assert_array_equal(src[0]['video'], src[0]['video'])   # seeded


# ---------------------------------------------------------------- OOD set
def test_synthetic_ood_classes_are_new_and_seeded():
  spec = synthetic.SyntheticSpec(train_per_domain=8, test_per_domain=4)
  mods = ('video', 'audio')
  ind = synthetic.SyntheticSource(spec, ('human',), 'all', mods)
  out = ood.SyntheticOODSource(spec, 'human', mods)
  assert len(out) == len(ind) == 12
  for m in mods:
    ours, theirs = out._world.shared[m], ind._world.shared[m]   # pylint: disable=protected-access
    assert ours.shape == theirs.shape
    corr = np.corrcoef(ours.reshape(7, -1), theirs.reshape(7, -1))[:7, 7:]
    assert np.abs(corr).max() < 0.6   # none is an in-distribution class (chance level)
  a, b = out[3], ood.SyntheticOODSource(spec, 'human', mods)[3]
  np.testing.assert_array_equal(a['video'], b['video'])
  assert a['video'].dtype == np.uint8 and 0 <= a['label'] < 7
  assert not np.array_equal(a['video'], ind[3]['video'])
  assert hac.DOMAINS == ood.DEFAULT_OOD_DOMAINS['hac']


# ---------------------------------------------------------------- the authors' functions
@pytest.mark.skipif(not os.environ.get('MMDG_BENCHMARK_DIR'),
                    reason='set MMDG_BENCHMARK_DIR (and READ_DIR) to clones of '
                           'lihongzhao99/MMDG_Benchmark (XLearning-SCU/2024-ICLR-READ) to run '
                           "the harness against the authors' own functions")
def test_harness_agrees_with_the_benchmarks_functions():
  pytest.importorskip('sklearn')
  cmd = [sys.executable, '-m', 'benchmarks.mmdg_reliability_harness',
         f'--mmdg_dir={os.environ["MMDG_BENCHMARK_DIR"]}']
  if os.environ.get('READ_DIR'):
    cmd.append(f'--read_dir={os.environ["READ_DIR"]}')
  p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu'))
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
  assert 'AGREE' in p.stdout
