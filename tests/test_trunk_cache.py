"""Frozen trunks run once per example (mbcd_jax/trunk_cache.py): a run reading precomputed
trunk outputs is the uncached run bit for bit; a trunk whose output depends on the batch's
other examples is kept in the step; the cache is not used where the trunk's output is not a
function of the example alone."""
import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbcd_jax import models, train, trunk_cache

import _runs  # pylint: disable=g-import-not-at-top
import _trees  # pylint: disable=g-import-not-at-top

# The embedded benchmark's shapes and encoders (whose trunks the cache is for), fewer examples:
# 2 epochs of 4 steps.
FLAGS = ('--config.train.epochs=2',
         '--config.data.synthetic.train_per_domain=32',
         '--config.data.synthetic.test_per_domain=16', '--config.train.checkpoint_every_steps=0')


def _main(workdir: str, *flags: str):
  return _runs.run(workdir, *FLAGS, *flags, config='configs/hac.py:synthetic', timeout=600)


def test_a_run_on_precomputed_trunk_outputs_is_the_uncached_run_bit_for_bit(tmp_path):
  cached, plain = str(tmp_path / 'cached'), str(tmp_path / 'plain')
  r = _main(cached)
  assert r.returncode == 0, r.stderr[-3000:]
  given = _runs.summary(cached)['trunk_outputs_precomputed']
  if not given:
    pytest.skip('no trunk of the embedded benchmark is batch-independent on this machine: '
                f'nothing to compare ({r.stderr[-500:]})')
  assert 'trunk outputs computed once' in r.stderr
  r = _main(plain, '--config.train.trunk_cache=false')
  assert r.returncode == 0, r.stderr[-3000:]
  assert _runs.summary(plain)['trunk_outputs_precomputed'] == []
  assert _runs.rows(cached) == _runs.rows(plain)
  drop = ('wall_time_s', 'resumed_from_step', 'trunk_outputs_precomputed')
  assert _runs.summary(cached, drop) == _runs.summary(plain, drop)
  _runs.assert_bitwise_equal(_runs.final_state(cached), _runs.final_state(plain))


def test_given_trunk_outputs_reach_the_step_as_the_trunks_own():
  """Whatever the machine: a step on given outputs is the step on raw inputs up to float
  rounding (the given outputs feed the stages, the teacher and the evaluation)."""
  run = _smoke()
  state = run.init(jax.random.key(0))
  batch = next(iter(run.loaders['train'].epoch(0)))
  feats = jax.jit(run.model.shared_trunk_features)(state.student.frozen, batch)
  given = dataclasses.replace(run.model, given_trunks=run.model.modalities)
  steps = lambda model: train.jit_steps(run.config, model, run.spec, run.tx, run.mesh)
  plain_train, plain_eval = steps(run.model)
  given_train, given_eval = steps(given)
  cached = {**batch, **{m: np.asarray(v) for m, v in feats.items()}}
  assert all(cached[m].shape != batch[m].shape for m in run.model.modalities)
  e_plain, e_given = plain_eval(state, batch), given_eval(state, cached)
  assert {k: float(v) for k, v in e_plain.items()} == pytest.approx(
      {k: float(v) for k, v in e_given.items()}, rel=1e-5)
  a, ma = plain_train(jax.tree.map(jnp.copy, state), batch, jax.random.key(1))
  b, mb = given_train(jax.tree.map(jnp.copy, state), cached, jax.random.key(1))
  assert float(ma['loss']) == pytest.approx(float(mb['loss']), rel=1e-5)
  _trees.assert_trees_equal(b.student.params, a.student.params, exact=False, rtol=1e-4,
                            atol=1e-6)
  # And the given outputs are used: zeros in their place change the loss.
  zeros = {**cached, **{m: np.zeros_like(cached[m]) for m in run.model.modalities}}
  _, mz = given_train(jax.tree.map(jnp.copy, state), zeros, jax.random.key(1))
  assert abs(float(mz['loss']) - float(mb['loss'])) > 1e-3


def test_a_trunk_whose_output_depends_on_the_batch_stays_in_the_step():
  rng = np.random.default_rng(0)
  arrays = {'a': rng.standard_normal((6, 3)).astype(np.float32),
            'b': rng.standard_normal((6, 3)).astype(np.float32)}
  # 'b' adds a trace of the batch mean: the same example gives other bits in another batch.
  trunks = jax.jit(lambda x: {'a': 2.0 * x['a'],
                              'b': x['b'] + 1e-3 * jnp.mean(x['b'], axis=0)})
  assert trunk_cache.position_independent(trunks, arrays, ('a', 'b'), batch=4) == ('a',)
  # An order-dependent one (a running sum over the batch) too.
  order = jax.jit(lambda x: {'a': jnp.cumsum(x['a'], axis=0)})
  assert trunk_cache.position_independent(order, arrays, ('a',), batch=4) == ()


def _smoke(trunk_cache: bool = True) -> train.Run:
  from configs import hac  # pylint: disable=g-import-not-at-top
  c = hac.get_config('smoke')
  c.train.trunk_cache = trunk_cache
  return train.build(c)


def test_the_cache_is_used_only_where_the_trunk_output_is_a_function_of_the_example():
  run = _smoke()
  assert trunk_cache.candidates(run.config, run.model, run.loaders) == run.model.modalities
  off = _smoke(trunk_cache=False)
  assert trunk_cache.candidates(off.config, off.model, off.loaders) == ()
  # BN on batch statistics in the student's passes: the trunk's output depends on the batch.
  model = dataclasses.replace(run.model, bn_mode='port')
  assert trunk_cache.candidates(run.config, model, run.loaders) == ()
  model = dataclasses.replace(run.model, bn_mode='port', eval_trunks=('audio',))
  assert trunk_cache.candidates(run.config, model, run.loaders) == ('audio',)
  # A trained trunk changes every step.
  model = dataclasses.replace(run.model, freeze_trunk=False)
  assert trunk_cache.candidates(run.config, model, run.loaders) == ()
  # Randomly transformed examples (real data's crops and flips): a new input every epoch.
  loaders = {**run.loaders, 'train': dataclasses.replace(run.loaders['train'],
                                                         random_transform=True)}
  assert trunk_cache.candidates(run.config, run.model, loaders) == ()
  # Two views per clip (NEL): batches of twice the rows the bit checks are run for.
  model = dataclasses.replace(run.model, bn_mode='port', eval_trunks=('audio',))
  loaders = {**run.loaders, 'train': dataclasses.replace(run.loaders['train'], views=2)}
  assert trunk_cache.candidates(run.config, model, loaders) == ()


def test_the_model_refuses_a_given_trunk_that_is_not_shared():
  run = _smoke()
  with pytest.raises(ValueError, match=r"given_trunks \['video'\]"):
    dataclasses.replace(run.model, bn_mode='port', given_trunks=('video',))
  assert isinstance(dataclasses.replace(run.model, given_trunks=('video',)),
                    models.MultiModalModel)
