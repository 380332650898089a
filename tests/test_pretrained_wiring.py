"""Converted pretrained encoder weights land in the model's frozen trunk and trainable stage."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mbcd_jax import models
from mbcd_jax.encoders import convert


def test_load_pretrained_replaces_trunk_and_stage(tmp_path):
  kwargs = {'width': 8}
  enc_cfg = ml_collections.ConfigDict({'audio': {'name': 'vggsound_r18', 'width': 8,
                                                 'pretrained': str(tmp_path / 'a.msgpack')}})
  mc = ml_collections.ConfigDict(dict(encoders=enc_cfg, head_hidden=8, head_dropout=0.0,
                                      freeze_trunk=True, feature_norm='parameter_free'))
  model = models.build_model(mc, ('audio',), 3)
  batch = {'audio': jnp.ones((1, 32, 32, 1))}
  params, frozen = model.init(jax.random.key(0), batch)
  # "Pretrained" weights: another initialisation, saved in the converter's format.
  other_p, other_f = model.init(jax.random.key(7), batch)
  trunk = other_f['encoders']['audio']['trunk']
  stage = {**other_f['encoders']['audio']['stage'],
           'params': other_p['encoders']['audio']['stage']}
  convert.save(enc_cfg.audio.pretrained, 'vggsound_r18', trunk, stage, kwargs)

  new_p, new_f = models.load_pretrained(model, mc, params, frozen)
  for got, want in [(new_f['encoders']['audio']['trunk'], trunk),
                    (new_p['encoders']['audio']['stage'], stage['params'])]:
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b)
  # Heads are untouched and the inputs were not modified in place.
  np.testing.assert_array_equal(new_p['fused_head']['Dense_0']['kernel'],
                                params['fused_head']['Dense_0']['kernel'])
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params['encoders']),
                                                      jax.tree.leaves(new_p['encoders'])))
