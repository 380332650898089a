"""NEL, JAT and GMP loss pieces: hand-computed values and numpy references on tiny inputs.

The authors' own code is compared by ``benchmarks/baselines_harness_nel_jat_gmp.py``, run here
when ``MMDG_BENCHMARK_DIR`` names a clone of lihongzhao99/MMDG_Benchmark."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbcd_jax.baselines import gmp, jat, nel


def test_nee_uniform_spectrum_is_minus_log_d():
  # E^T E / N = I (orthonormal columns scaled): every eigenvalue 1/D after renormalising.
  e = jnp.sqrt(4.0) * jnp.eye(4)           # N = 4, D = 4: C = I
  np.testing.assert_allclose(nel.nee_loss(e), -np.log(4.0), rtol=1e-6)


def test_mean_shift_hand_computed():
  e = jnp.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
  out = nel.mean_shift(e, k=1)             # row 0's neighbour is row 1, row 2's is row 1
  want0 = 0.5 * np.array([1.0, 0.0]) + 0.5 * np.array([0.8, 0.6])
  np.testing.assert_allclose(out[0], want0 / np.linalg.norm(want0), rtol=1e-6)


def _supcon_np(z, labels, t, bt):
  n, v, _ = z.shape
  f = np.concatenate([z[:, i] for i in range(v)])
  lab = np.tile(labels, v)
  logits = f @ f.T / t
  logits -= logits.max(1, keepdims=True)
  not_self = 1 - np.eye(n * v)
  pos = (lab[:, None] == lab[None]) * not_self
  lp = logits - np.log((np.exp(logits) * not_self).sum(1, keepdims=True) + 1e-12)
  return -(t / bt) * ((pos * lp).sum(1) / np.maximum(pos.sum(1), 1)).mean()


def test_supcon_matches_numpy():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(6, 2, 3))
  z /= np.linalg.norm(z, axis=2, keepdims=True)
  labels = np.array([0, 1, 0, 2, 1, 1])
  np.testing.assert_allclose(nel.supcon_loss(jnp.asarray(z), jnp.asarray(labels), 0.1, 0.07),
                             _supcon_np(z, labels, 0.1, 0.07), rtol=1e-5)


def test_jat_weights_and_grad_reverse():
  u = {'video': jnp.zeros((2, 4)), 'audio': jnp.array([[9.0, 0, 0, 0], [9.0, 0, 0, 0]])}
  w = jat.modality_weights({m: jat.entropy(x) for m, x in u.items()})
  # uniform logits have the larger entropy (log 4) and so the larger weight
  assert float(w['video']) > 0.5 > float(w['audio'])
  g = jax.grad(lambda x: jat.grad_reverse(x, 0.1).sum())(jnp.ones(3))
  np.testing.assert_allclose(g, -0.1 * np.ones(3))


def test_gmp_ratios_modulation_and_projection():
  r = gmp.ratios({'video': jnp.array(0.6), 'audio': jnp.array(0.3)}, domain=False)
  np.testing.assert_allclose(r['video'], 0.6 / (0.3 + 1e-6), rtol=1e-6)
  np.testing.assert_allclose(gmp.modulation(r['video'], 0.5), max(0.0, 1 - np.tanh(1.0)),
                             rtol=1e-5)
  assert float(gmp.modulation(r['audio'], 0.5)) == 1.0      # the weaker one is not slowed
  g, h = [jnp.array([1.0, 0.0])], [jnp.array([-1.0, 1.0])]
  out = gmp.combine(g, h, jnp.array(2.0), jnp.array(1.0), jnp.array(1.0), jnp.array(1.0))
  # conflict (<g, h> = -1) and r >= s: g loses its h component, g' = g + h/2, then + h
  np.testing.assert_allclose(out[0], np.array([1 - 0.5 - 1, 0.5 + 1]), rtol=1e-6)


@pytest.mark.skipif(not os.environ.get('MMDG_BENCHMARK_DIR'),
                    reason='set MMDG_BENCHMARK_DIR to a clone of lihongzhao99/MMDG_Benchmark '
                           'to run the harness against the authors\' code')
def test_harness_against_authors():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-m', 'benchmarks.baselines_harness_nel_jat_gmp',
                        f'--mmdg_benchmark_dir={os.environ["MMDG_BENCHMARK_DIR"]}'], cwd=root,
                       capture_output=True, text=True, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert out.returncode == 0, out.stdout + out.stderr
