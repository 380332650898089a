"""Log-spectrogram of the peers' audio recipe, in numpy (docs/method.md §9).

The peers call ``scipy.signal.spectrogram(x, 16000, nperseg=512, noverlap=353)`` and take
``log(S + 1e-7)``. scipy's defaults behind that call are what this module spells out, so that
scipy is not needed at run time: a periodic Tukey window (alpha 0.25), mean removal per segment
('constant' detrend), a one-sided PSD with 'density' scaling. 160,000 samples give 257 x 1004.
"""
import numpy as np

SAMPLE_RATE = 16000
NPERSEG = 512
NOVERLAP = 353
LOG_EPS = 1e-7


def tukey_window(n: int, alpha: float = 0.25) -> np.ndarray:
  """Periodic Tukey window [n] float64 (scipy ``get_window(('tukey', alpha), n)``).

  Periodic ("fftbins") means the symmetric window of length n + 1 without its last sample.
  """
  m = n + 1
  k = np.arange(m, dtype=np.float64)
  width = int(np.floor(alpha * (m - 1) / 2.0))
  w = np.ones(m)
  lo, hi = k[:width + 1], k[m - width - 1:]
  w[:width + 1] = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * lo / alpha / (m - 1))))
  w[m - width - 1:] = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * hi / alpha / (m - 1))))
  return w[:n]


def spectrogram(x: np.ndarray, fs: float = SAMPLE_RATE, nperseg: int = NPERSEG,
                noverlap: int = NOVERLAP) -> np.ndarray:
  """Power spectral density per segment, as ``scipy.signal.spectrogram(x, fs, nperseg=...,
  noverlap=...)[2]``.

  Args:
    x: [N] waveform (any float dtype; computed in float64 like scipy on float64 input).
  Returns:
    [nperseg // 2 + 1, 1 + (N - nperseg) // (nperseg - noverlap)] float64.
  """
  x = np.asarray(x, np.float64)
  step = nperseg - noverlap
  num = 1 + (len(x) - nperseg) // step
  if num < 1:
    raise ValueError(f'spectrogram: {len(x)} samples is shorter than one segment ({nperseg})')
  # Strided view of the overlapping segments: [num, nperseg], no copy.
  segs = np.lib.stride_tricks.as_strided(
      x, shape=(num, nperseg), strides=(x.strides[0] * step, x.strides[0]), writeable=False)
  win = tukey_window(nperseg)
  spec = np.fft.rfft((segs - segs.mean(axis=1, keepdims=True)) * win, n=nperseg, axis=1)
  psd = (spec.real ** 2 + spec.imag ** 2) / (fs * np.sum(win ** 2))
  # One-sided density: the negative frequencies' power folds onto the positive ones, except at
  # DC and (even nperseg) Nyquist, which have no mirror.
  psd[:, 1:-1 if nperseg % 2 == 0 else None] *= 2
  return psd.T


def log_spectrogram(x: np.ndarray, fs: float = SAMPLE_RATE) -> np.ndarray:
  """``log(spectrogram(x) + 1e-7)`` -> [257, S] float64 (257 x 1004 for 160,000 samples)."""
  return np.log(spectrogram(x, fs) + LOG_EPS)
