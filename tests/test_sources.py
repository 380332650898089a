"""A plug-in method sees each training example's source domain as its position among
``config.data.sources`` (``extensions.StepView.sources``; JAT's and GMP's discriminators train
against it): the step maps the loaders' 'domain' (the dataset's own index) through the config."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mbcd_jax import extensions, methods, sharding, train
from mbcd_jax import step as step_lib


@dataclasses.dataclass(frozen=True)
class _NoHparams:
  pass


def _probe_terms(view: extensions.StepView, hp):
  """Reports the positions it was given: per-position counts and a position-weighted sum over
  the batch (order-sensitive), with a zero-valued term so the loss is the fused CE."""
  del hp
  s = view.sources
  idx = jnp.arange(1, s.shape[0] + 1, dtype=jnp.int32)
  metrics = {'n0': (s == 0).sum(), 'n1': (s == 1).sum(), 'n_other': (s < 0).sum(),
             'weighted': (idx * s).sum()}
  return {'probe': 0.0 * view.fused_logits.sum()}, metrics, view.state


PROBE = extensions.Extension(name='probe', hparams=_NoHparams(),
                             init=lambda rng, dims, modalities, hp: ({}, None),
                             terms=_probe_terms)


def test_the_plugin_sees_each_examples_position_among_the_sources():
  from configs import hac  # pylint: disable=g-import-not-at-top
  c = hac.get_config('smoke')
  # The sources in an order other than the dataset's: positions follow the command line.
  c.data.sources, c.data.target = ('cartoon', 'animal'), 'human'
  run = train.build(c)
  spec = dataclasses.replace(methods.resolve(run.config.method, seed=0), name='probe',
                             extension=PROBE)
  train_step, _ = train.jit_steps(run.config, run.model, spec, run.tx, run.mesh)
  state = step_lib.init_state(run.model, spec, run.tx, jax.random.key(0),
                              next(iter(run.loaders['train'].epoch(0))))
  state = jax.tree.map(jnp.copy, state)   # one buffer per leaf: the step donates its state
  domains = run.config.data.domains
  for batch in list(run.loaders['train'].epoch(0))[:2]:
    names = [domains[d] for d in batch['domain']]
    want = np.array([('cartoon', 'animal').index(n) for n in names])
    assert set(want) <= {0, 1}
    state, metrics = train_step(state, sharding.shard_batch(batch, run.mesh), jax.random.key(1))
    got = {k[len('probe/raw/'):]: int(v) for k, v in metrics.items()
           if k.startswith('probe/raw/')}
    assert got == {'n0': int((want == 0).sum()), 'n1': int((want == 1).sum()), 'n_other': 0,
                   'weighted': int((np.arange(1, len(want) + 1) * want).sum())}, (got, names)
