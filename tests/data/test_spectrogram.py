"""Our numpy log-spectrogram equals the peers' scipy call."""
import numpy as np
import pytest
from scipy import signal

from mbcd_jax.data import spectrogram


def _peers(x):
  return np.log(signal.spectrogram(x, 16000, nperseg=512, noverlap=353)[2] + 1e-7)


@pytest.mark.parametrize('n', [160000, 16000, 512, 1000])
def test_log_spectrogram_matches_scipy(n):
  rng = np.random.default_rng(n)
  t = np.arange(n) / 16000
  x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.uniform(-1, 1, n) + 0.05  # + DC offset
  ours = spectrogram.log_spectrogram(x)
  ref = _peers(x)
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_paper_shape_and_window():
  assert spectrogram.log_spectrogram(np.zeros(160000)).shape == (257, 1004)
  np.testing.assert_allclose(spectrogram.tukey_window(512),
                             signal.get_window(('tukey', 0.25), 512), atol=1e-15)


def test_float32_input_and_silence():
  x = np.random.default_rng(0).uniform(-1, 1, 4000).astype(np.float32)
  np.testing.assert_allclose(spectrogram.log_spectrogram(x), _peers(x.astype(np.float64)),
                             atol=1e-9)
  # Silence: every bin is log(1e-7), as scipy gives.
  np.testing.assert_allclose(spectrogram.log_spectrogram(np.zeros(2000)), np.log(1e-7))


def test_too_short_raises():
  with pytest.raises(ValueError, match='shorter than one segment'):
    spectrogram.spectrogram(np.zeros(100))
