"""The model's init builds its variables from the inputs' shapes only (flax lazy_init), and gets
the very values an init that runs the encoders on data gets."""
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from configs import hac
from mbcd_jax import models

import _trees  # pylint: disable=g-import-not-at-top,wrong-import-position


def _data_init(self, rngs, *args, **kwargs):
  """The former init: the module run on (random, non-zero) data of the given shapes."""
  data = [jax.random.normal(jax.random.key(7), a.shape, a.dtype)
          if isinstance(a, jax.ShapeDtypeStruct) else a for a in args]
  return self.init(rngs, *data, **kwargs)


@pytest.mark.parametrize('bn', [False, True])
def test_lazy_init_equals_an_init_on_data(bn, monkeypatch):
  c = hac.get_config('smoke')
  for m in c.data.modalities:
    c.model.encoders[m].bn = bn
  model = models.build_model(c.model, tuple(c.data.modalities), c.data.num_classes)
  shapes = {'video': (1, *c.data.synthetic.video_shape, 3),
            'flow': (1, *c.data.synthetic.flow_shape, 2),
            'audio': (1, *c.data.synthetic.audio_shape, 1)}
  batch = {m: jnp.ones(s, jnp.float32) for m, s in shapes.items()}
  lazy = jax.jit(model.init)(jax.random.key(3), batch)
  monkeypatch.setattr(nn.Module, 'lazy_init', _data_init)
  monkeypatch.setattr(jax, 'eval_shape', lambda f, *a: f(*[
      jax.random.normal(jax.random.key(8), x.shape, x.dtype)
      if isinstance(x, jax.ShapeDtypeStruct) else x for x in a]))
  eager = model.init(jax.random.key(3), batch)
  if bn:
    assert jax.tree.leaves(lazy[1]['encoders']['video']['trunk'].get('batch_stats', {}))
  _trees.assert_trees_equal(lazy, eager)
