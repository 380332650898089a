"""Paper encoders without torch: shapes, the trunk/stage split, bf16 and remat options."""
import os
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbcd_jax import encoders
from mbcd_jax.encoders import convert

import _trees  # pylint: disable=g-import-not-at-top,wrong-import-position

# Reduced-size variants of the three encoders (same code as the paper sizes).
CASES = {
    'slowfast_r101': (dict(depth=50, slow_base_channels=16), (2, 16, 32, 32, 3), 576),
    'slowonly_r50_flow': (dict(depth=50, base_channels=8), (2, 4, 32, 32, 2), 256),
    'vggsound_r18': (dict(width=16), (2, 33, 49, 1), 128),
}


def _random_vars(shapes, rng):
  """He-normal kernels, random BN parameters/statistics (cheaper than compiling ``init``)."""
  out = {}
  for (coll, *path, leaf), shape in shapes.items():
    if leaf == 'kernel':
      v = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
    elif leaf in ('scale', 'var'):
      v = 0.5 + 0.5 * rng.random(shape)
    else:
      v = 0.1 * rng.standard_normal(shape)
    out[(coll, *path, leaf)] = jnp.asarray(v, jnp.float32)
  return flax.traverse_util.unflatten_dict(out)


def _init(name, kw, shape):
  enc = encoders.build(name, kw)
  ts, ss = convert.variable_shapes(name, **kw)
  rng = np.random.default_rng(0)
  tv, sv = _random_vars(ts, rng), _random_vars(ss, rng)
  x = jax.random.normal(jax.random.key(0), shape)
  fmap = jax.jit(enc.trunk.apply)(tv, x)
  return enc, fmap, sv, tv, x


@pytest.mark.parametrize('name', sorted(CASES))
def test_registered_shapes_and_split(name):
  kw, shape, dim = CASES[name]
  enc, fmap, sv, tv, _ = _init(name, kw, shape)
  feat = jax.jit(enc.stage.apply)(sv, fmap)
  assert enc.feature_dim == dim and feat.shape == (shape[0], dim) and feat.dtype == jnp.float32
  assert float(feat.std()) > 0
  # The stage holds layer4 (of both pathways for SlowFast) and nothing else; the trunk holds
  # everything but layer4. BN statistics are in their own collection, not in params.
  stage_paths = flax.traverse_util.flatten_dict(sv['params'])
  trunk_paths = flax.traverse_util.flatten_dict(tv['params'])
  assert stage_paths and all('layer4' in p for p in stage_paths)
  assert trunk_paths and not any('layer4' in p for p in trunk_paths)
  assert set(sv) == set(tv) == {'params', 'batch_stats'}


def test_paper_feature_dims():
  assert encoders.build('slowfast_r101').feature_dim == 2304
  assert encoders.build('slowonly_r50_flow').feature_dim == 2048
  assert encoders.build('vggsound_r18').feature_dim == 512


def test_slowfast_trunk_output_at_paper_shape():
  enc = encoders.build('slowfast_r101')
  x = jax.ShapeDtypeStruct((1, 32, 224, 224, 3), jnp.float32)
  tv = jax.eval_shape(enc.trunk.init, jax.random.key(0), x)
  slow, fast = jax.eval_shape(enc.trunk.apply, tv, x)
  # 8x8 config: 8 slow frames (every 4th), 32 fast frames.
  assert slow.shape == (1, 8, 14, 14, 1280) and fast.shape == (1, 32, 14, 14, 128)


@pytest.mark.parametrize('name', ['vggsound_r18', 'slowonly_r50_flow'])
def test_bfloat16_matches_float32(name):
  kw, shape, _ = CASES[name]
  enc32, fmap, sv, tv, x = _init(name, kw, shape)
  enc16 = encoders.build(name, {**kw, 'dtype': 'bfloat16'})
  f32 = jax.jit(enc32.stage.apply)(sv, fmap)
  f16 = jax.jit(enc16.stage.apply)(sv, fmap)  # same float32 variables
  assert f16.dtype == jnp.float32
  assert not np.array_equal(f16, f32)  # really computed in bf16
  rel = float(jnp.linalg.norm(f16 - f32) / jnp.linalg.norm(f32))
  assert rel < 3e-2, rel
  assert jax.tree.leaves(jax.jit(enc16.trunk.apply)(tv, x))[0].dtype == jnp.bfloat16


def test_remat_gives_the_same_gradients():
  kw, shape, _ = CASES['slowfast_r101']
  enc, fmap, sv, _, _ = _init('slowfast_r101', kw, shape)
  enc_r = encoders.build('slowfast_r101', {**kw, 'remat': True})

  def grads(e):
    loss = lambda p: jnp.sum(e.stage.apply({**sv, 'params': p}, fmap) ** 2)
    return jax.jit(jax.grad(loss))(sv['params'])

  g, g_r = grads(enc), grads(enc_r)
  # Recomputation may reorder float sums: the tolerance is relative to each leaf's scale
  # (1e-5 * max|g| + 1e-7), so both trees are put in units of their leaf's tolerance.
  tol = jax.tree.map(lambda a: 1e-5 * jnp.abs(a).max() + 1e-7, g)
  in_tol = lambda t: jax.tree.map(lambda a, s: a / s, t, tol)
  assert jax.tree.structure(g_r) == jax.tree.structure(g)
  _trees.assert_trees_equal(in_tol(g_r), in_tol(g), exact=False, atol=1.0)
  assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g)) > 0


@pytest.mark.parametrize('name', sorted(CASES))
def test_training_mode_bn_moments_and_perturb_hook(name):
  """'port' BN mode: every BN of trunk and stage (remat'd layer4 too) records its batch
  moments, with the running statistics' tree structure; ``perturb`` sees the layer4 map(s)."""
  from mbcd_jax.encoders import batchnorm  # pylint: disable=g-import-not-at-top
  kw, shape, dim = CASES[name]
  kw = dict(kw, remat=True)
  enc, _, sv, tv, x = _init(name, kw, shape)
  fmap, tmut = jax.jit(lambda v, x: enc.trunk.apply(v, x, mutable=[batchnorm.MOMENTS]))(tv, x)
  assert jax.tree.structure(tmut[batchnorm.MOMENTS]) == jax.tree.structure(tv['batch_stats'])
  seen = []

  def zero(y):
    seen.append(isinstance(y, tuple))
    return jax.tree.map(jnp.zeros_like, y)
  feat, smut = enc.stage.apply(sv, fmap, perturb=zero, mutable=[batchnorm.MOMENTS])
  assert jax.tree.structure(smut[batchnorm.MOMENTS]) == jax.tree.structure(sv['batch_stats'])
  np.testing.assert_array_equal(feat, np.zeros((shape[0], dim)))   # the pool comes after
  assert seen == [name == 'slowfast_r101']     # SlowFast: the (slow, fast) pair
  # Training mode normalises with batch statistics: the output differs from inference mode.
  assert not np.allclose(enc.stage.apply(sv, fmap),
                         enc.stage.apply(sv, fmap, mutable=[batchnorm.MOMENTS])[0])
