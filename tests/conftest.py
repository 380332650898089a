"""Shared fixtures: a tiny three-modality model and batch that every method can train on."""
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mbcd_jax import methods, models  # pylint: disable=g-import-not-at-top

MODS = ('video', 'flow', 'audio')


def tiny_model(num_classes=5, dropout=0.5, freeze_trunk=True, learnable_norm=False,
               modalities=MODS):
  enc = ml_collections.ConfigDict({
      'video': {'name': 'frame_cnn', 'trunk_widths': (4, 4), 'trunk_strides': (1, 2),
                'width': 6},
      'flow': {'name': 'frame_cnn', 'trunk_widths': (4, 4), 'trunk_strides': (1, 2),
               'width': 5},
      'audio': {'name': 'spec_cnn', 'trunk_widths': (4, 4), 'trunk_strides': (1, 2),
                'width': 4},
  })
  mc = ml_collections.ConfigDict(dict(
      encoders=enc, head_hidden=8, head_dropout=dropout, freeze_trunk=freeze_trunk,
      feature_norm='learnable' if learnable_norm else 'parameter_free'))
  return models.build_model(mc, modalities, num_classes)


def tiny_batch(key=0, batch_size=8, num_classes=5, dtype=jnp.float32):
  k = jax.random.split(jax.random.key(key), 4)
  return {
      'video': jax.random.normal(k[0], (batch_size, 2, 8, 8, 3), dtype),
      'flow': jax.random.normal(k[1], (batch_size, 2, 8, 8, 2), dtype),
      'audio': jax.random.normal(k[2], (batch_size, 8, 8, 1), dtype),
      'label': jax.random.randint(k[3], (batch_size,), 0, num_classes),
  }


def spec(name='mbcd', **overrides):
  cfg = ml_collections.ConfigDict(dict(
      name=name, amd=None, consistency=None, ema=None, distill=None, unimodal_ce=None, amd_base=0.0,
      amd_fixed_p=0.5, alpha=1e-4, ema_beta=0.999, lambda_mm=1.0, lambda_um=1.0,
      temperature=1.0))
  for k, v in overrides.items():
    cfg[k] = v
  return methods.resolve(cfg)


@pytest.fixture
def x64():
  """Runs a test in float64 (finite differences need it), restoring the flag afterwards."""
  old = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', True)
  yield
  jax.config.update('jax_enable_x64', old)
