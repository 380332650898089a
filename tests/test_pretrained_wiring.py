"""Converted pretrained encoder weights land in the model's frozen trunk and trainable stage."""
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mbcd_jax import models
from mbcd_jax.encoders import convert

import _trees  # pylint: disable=g-import-not-at-top,wrong-import-position


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
  _trees.assert_trees_equal(new_f['encoders']['audio']['trunk'], trunk, where='trunk')
  _trees.assert_trees_equal(new_p['encoders']['audio']['stage'], stage['params'], where='stage')
  # Heads are untouched and the inputs were not modified in place.
  np.testing.assert_array_equal(new_p['fused_head']['Dense_0']['kernel'],
                                params['fused_head']['Dense_0']['kernel'])
  assert jax.tree.structure(params['encoders']) == jax.tree.structure(new_p['encoders'])
  assert not _trees.trees_equal(params['encoders'], new_p['encoders'])


def test_train_build_init_uses_pretrained_file(tmp_path):
  from configs import hac  # pylint: disable=g-import-not-at-top
  from mbcd_jax import train  # pylint: disable=g-import-not-at-top
  c = hac.get_config('smoke')
  c.data.modalities = ('audio',)
  c.method.name = 'ema'
  c.model.encoders.audio = ml_collections.ConfigDict(
      {'name': 'vggsound_r18', 'width': 8, 'pretrained': ''})
  run = train.build(c)
  state = run.init(jax.random.key(0))
  # Save different weights as the "pretrained" file, then build again pointing at it.
  other = run.init(jax.random.key(5))
  trunk = other.student.frozen['encoders']['audio']['trunk']
  stage = {**other.student.frozen['encoders']['audio']['stage'],
           'params': other.student.params['encoders']['audio']['stage']}
  path = str(tmp_path / 'a.msgpack')
  convert.save(path, 'vggsound_r18', trunk, stage, {'width': 8})
  c.model.encoders.audio.pretrained = path
  state2 = train.build(c).init(jax.random.key(0))
  _trees.assert_trees_equal(state2.student.params['encoders'],
                            other.student.params['encoders'])
  # The teacher starts as the loaded student; the heads keep their seed-0 initialisation.
  _trees.assert_trees_equal(state2.teacher.params, state2.student.params, where='teacher')
  # ... in buffers of its own: the train step donates the state, and a buffer shared by two
  # donated leaves fails the step ("donate the same buffer twice").
  pointers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(state2)]
  assert len(set(pointers)) == len(pointers)
  np.testing.assert_array_equal(state2.student.params['fused_head']['Dense_0']['kernel'],
                                state.student.params['fused_head']['Dense_0']['kernel'])


def test_trunk_seed_fixes_the_frozen_trunk_across_training_seeds():
  import dataclasses
  from conftest import tiny_batch, tiny_model
  batch = tiny_batch()
  fixed = dataclasses.replace(tiny_model(), trunk_seed=0)
  (p0, f0), (p1, f1) = fixed.init(jax.random.key(0), batch), fixed.init(jax.random.key(1), batch)
  for m in ('video', 'flow', 'audio'):
    _trees.assert_trees_equal(f0['encoders'][m]['trunk'], f1['encoders'][m]['trunk'],
                              where=m)                                        # shared trunk
    assert not _trees.trees_equal(p0['encoders'][m]['stage'],
                                  p1['encoders'][m]['stage'])                 # seed still acts
  # a modality subset gets the same trunk as the full model
  sub = dataclasses.replace(tiny_model(modalities=('video', 'audio')), trunk_seed=0)
  _, fs = sub.init(jax.random.key(5), batch)
  _trees.assert_trees_equal(fs['encoders']['audio']['trunk'], f0['encoders']['audio']['trunk'])
  # default (-1): the trunk follows the training seed, as before
  (_, g0), (_, g1) = (tiny_model().init(jax.random.key(k), batch) for k in (0, 1))
  assert not _trees.trees_equal(g0['encoders']['video']['trunk'], g1['encoders']['video']['trunk'])


@pytest.mark.parametrize('tail_init', ['pretrained', 'random'])
def test_port_mode_loads_statistics_and_audio_tail_init(tmp_path, tail_init):
  """'port' BN mode: the checkpoint's BN statistics land in ``batch_stats`` (and the teacher's
  copy), not in ``frozen``; audio_tail_init='random' keeps the audio layer4 (parameters and
  statistics) at its random init while the trunk is loaded."""
  from configs import hac  # pylint: disable=g-import-not-at-top
  from mbcd_jax import step, train  # pylint: disable=g-import-not-at-top
  c = hac.get_config('smoke')
  c.data.modalities = ('audio',)
  c.method.name = 'ema'
  c.model.bn_mode = 'port'
  c.model.audio_tail_init = tail_init
  c.model.encoders.audio = ml_collections.ConfigDict(
      {'name': 'vggsound_r18', 'width': 8, 'pretrained': ''})
  fresh = train.build(c).init(jax.random.key(0))
  # "Pretrained" weights: another init with non-trivial statistics (init ones are 0 / 1).
  other_p, other_f = step.student_variables(train.build(c).init(jax.random.key(5)))
  rng = np.random.default_rng(0)
  other_f = jax.tree.map(lambda a: a + rng.uniform(0.1, 1.0, a.shape).astype(a.dtype), other_f)
  trunk = other_f['encoders']['audio']['trunk']
  stage = {**other_f['encoders']['audio']['stage'],
           'params': other_p['encoders']['audio']['stage']}
  path = str(tmp_path / 'a.msgpack')
  convert.save(path, 'vggsound_r18', trunk, stage, {'width': 8})
  c.model.encoders.audio.pretrained = path
  state = train.build(c).init(jax.random.key(0))

  eq = _trees.assert_trees_equal
  enc_stats = state.student.batch_stats['encoders']['audio']
  assert 'batch_stats' not in state.student.frozen['encoders']['audio']['trunk']
  eq(enc_stats['trunk'], trunk['batch_stats'])
  eq(state.student.frozen['encoders']['audio']['trunk'],
     {k: v for k, v in trunk.items() if k != 'batch_stats'})
  loaded_stage = tail_init == 'pretrained'
  want_stage = stage if loaded_stage else {
      'params': fresh.student.params['encoders']['audio']['stage'],
      'batch_stats': fresh.student.batch_stats['encoders']['audio']['stage']}
  eq(state.student.params['encoders']['audio']['stage'], want_stage['params'])
  eq(enc_stats['stage'], want_stage['batch_stats'])
  # ... and differs from the alternative (the check can fail).
  other_stage = (fresh.student.params['encoders']['audio']['stage'] if loaded_stage
                 else stage['params'])
  assert not _trees.trees_equal(state.student.params['encoders']['audio']['stage'], other_stage)
  # The teacher starts as a copy of the whole loaded student.
  eq(state.teacher.params, state.student.params)
  eq(state.teacher.frozen, state.student.frozen)
  eq(state.teacher.batch_stats, state.student.batch_stats)
  # ... in buffers of its own (the train step donates the state).
  pointers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(state)]
  assert len(set(pointers)) == len(pointers)


@pytest.mark.parametrize('tail_init', ['pretrained', 'random'])
def test_loaded_parts_are_only_shaped_and_the_loaded_state_is_unchanged(tmp_path, tail_init):
  # train._make_init skips the random draws of what the files replace; after loading, every
  # leaf must equal a full init's loaded state (the random audio tail included).
  path = str(tmp_path / 'a.msgpack')
  enc_cfg = ml_collections.ConfigDict({'audio': {'name': 'vggsound_r18', 'width': 8,
                                                 'pretrained': path}})
  mc = ml_collections.ConfigDict(dict(encoders=enc_cfg, head_hidden=8, head_dropout=0.0,
                                      freeze_trunk=True, feature_norm='parameter_free',
                                      audio_tail_init=tail_init))
  model = models.build_model(mc, ('audio',), 3)
  batch = {'audio': jnp.ones((1, 32, 32, 1))}
  other_p, other_f = model.init(jax.random.key(7), batch)
  convert.save(path, 'vggsound_r18', other_f['encoders']['audio']['trunk'],
               {**other_f['encoders']['audio']['stage'],
                'params': other_p['encoders']['audio']['stage']}, {'width': 8})
  loaded = models.loaded_parts(model, mc)
  assert loaded == ({('audio', 'trunk'), ('audio', 'stage')} if tail_init == 'pretrained'
                    else {('audio', 'trunk')})
  full = models.load_pretrained(model, mc, *model.init(jax.random.key(0), batch))
  shaped_p, shaped_f = model.init(jax.random.key(0), batch, loaded=loaded)
  assert all(not np.any(x) for x in jax.tree.leaves(shaped_f['encoders']['audio']['trunk']))
  fast = models.load_pretrained(model, mc, shaped_p, shaped_f)
  _trees.assert_trees_equal(fast, full)
