"""Our train step with the public port's semantics against its PyTorch twin, step by step.

``port_parity`` runs two steps of ``mbcd_jax.reference.mbcd_torch.TorchPortMBCD`` and two of
``mbcd_jax.step.train_step`` (``bn_mode='port'``, ``dsu=True``) from the same weights, batch and
random draws, and returns max |torch - jax| per loss term and per state group (trunk / layer4
parameters and BN statistics, heads, the teacher); ``assert_port_parity`` holds them to
``PORT_TOL``. The draws are shared: NumPy draws the DSU coins and noise and the AMD uniforms
(``mbcd_torch.SharedDraws``); PyTorch consumes them directly, our step through ``jax_replay``
(which patches ``dsu.apply`` / ``amd.sample_keep`` while tracing, keeping our DSU arithmetic).
Used by tests/test_port_semantics_torch.py (tiny encoders), benchmarks/mbcd_step_vs_torch.py
and benchmarks/device_check.py (the paper's encoders, reduced) and benchmarks/port_harness.py
(against the port's own code). Imports torch: tests and benchmarks only.
"""
import contextlib
import copy
import dataclasses
import functools
from typing import Callable
from unittest import mock

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch

from mbcd_jax import methods, models
from mbcd_jax import step as step_lib
from mbcd_jax.encoders import convert
from mbcd_jax.reference.mbcd_torch import (DSU_P, NUM_CLASSES, TorchEncoder, TorchPortMBCD,
                                           dsu_channels, make_draws, state_dict_np,
                                           torch_head_np)

# ------------------------------------------------------------------ JAX with the port's semantics
@dataclasses.dataclass
class ParityEncoder:
  """One modality's encoder in both frameworks, for ``port_parity``.

  Attributes:
    name, kwargs: our encoder (``mbcd_jax.encoders.build(name, kwargs)``).
    torch: the PyTorch module: ``trunk(x)``, ``layer4(f)`` (unpooled; the parameters to train
      have 'layer4' in their names), ``pool(y)``, ``forward(f) = pool(layer4(f))``.
    to_flax: PyTorch state dict (name -> float64 numpy) -> ``(trunk_vars, stage_vars)``.
  """
  name: str
  kwargs: dict
  torch: torch.nn.Module
  to_flax: Callable


def paper_to_flax(kind, kw, state_dict):
  """A TorchEncoder's state dict -> our variables, in float64 and exact to ~1e-14: the
  converter only renames and transposes but works in float32, so each value is split into a
  float32 head and a float32 remainder, converted separately and summed."""
  sd = {k[len('net.'):] if k.startswith('net.') else k: np.asarray(v, np.float64)
        for k, v in state_dict.items()}
  hi = {k: v.astype(np.float32) for k, v in sd.items()}
  lo = {k: (v - hi[k]).astype(np.float32) for k, v in sd.items()}
  kw = {k: v for k, v in kw.items() if k != 'dtype'}
  a, b = convert.convert_state_dict(kind, hi, **kw), convert.convert_state_dict(kind, lo, **kw)
  return jax.tree.map(lambda x, y: np.asarray(x, np.float64) + np.asarray(y, np.float64), a, b)


def paper_encoder(kind, kw, net):
  """ParityEncoder for a paper encoder (``mbcd_jax/reference/encoders_torch.py`` net)."""
  return ParityEncoder(kind, dict(kw), TorchEncoder(kind, net),
                       functools.partial(paper_to_flax, kind, kw))


# Paper encoders take a dtype; the small CPU encoders (also converter kinds) do not.
_DTYPED = ('slowfast_r101', 'slowonly_r50_flow', 'vggsound_r18')


def build_jax_port(encoders, uni_heads, fused_head, *, hidden, dsu, amd, dtype):
  """Our model / method / optimizer and a step-0 state with the PyTorch modules' weights.

  Args:
    encoders: modality -> ParityEncoder, in model order (= the fused head's input order).
    uni_heads / fused_head: modality -> / one ``head_np`` dict.
    dtype: 'float64' (needs x64) or 'float32': computation and variables.
  Returns:
    (model, spec, tx, state).
  """
  mc = ml_collections.ConfigDict(dict(
      encoders={m: dict(name=e.name, **e.kwargs) for m, e in encoders.items()},
      head_hidden=hidden, head_dropout=0.0, freeze_trunk=True, feature_norm='parameter_free',
      bn_mode='port', dsu=dsu, dsu_p=DSU_P))
  model = models.build_model(mc, tuple(encoders), NUM_CLASSES)
  spec = methods.resolve(ml_collections.ConfigDict(dict(
      name='mbcd' if amd else 'mbcd_no_amd', amd=None, consistency=None, ema=None,
      distill=None, unimodal_ce=None, amd_base=0.0, amd_fixed_p=0.5, alpha=1e-4,
      ema_beta=0.999, lambda_mm=1.0, lambda_um=1.0, temperature=1.0)))
  tx = step_lib.make_optimizer(ml_collections.ConfigDict(dict(
      lr=1e-4, weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8)))
  # The variables' layout of MultiModalModel.init, filled with the PyTorch weights.
  params = {'encoders': {}, 'norms': {}, 'uni_heads': dict(uni_heads), 'fused_head': fused_head}
  frozen = {'encoders': {}}
  for m, e in encoders.items():
    trunk_vars, stage_vars = e.to_flax(state_dict_np(e.torch))
    stage_vars = dict(stage_vars)
    params['encoders'][m] = {'stage': stage_vars.pop('params')}
    frozen['encoders'][m] = {'trunk': dict(trunk_vars), 'stage': stage_vars}
  cast = lambda t: jax.tree.map(lambda x: jnp.asarray(x, dtype), t)
  state = step_lib.make_state(model, spec, tx, cast(params), cast(frozen))
  return model, spec, tx, state


@contextlib.contextmanager
def jax_replay(dsu_draws, amd_draws, modalities):
  """Makes our step use the given draws (arrays or tracers, a SharedDraws' ``dsu`` / ``amd``):
  DSU's coin and noise (``dsu.apply``, called per modality in model order, trunk site then
  layer4 site, while the step is traced) and the AMD masks (``amd.sample_keep``). The DSU
  arithmetic stays ours (``dsu.perturb_map``). Yields the list of DSU sites traced."""
  from mbcd_jax.method import amd as amd_lib  # pylint: disable=g-import-not-at-top
  from mbcd_jax.method import dsu as dsu_lib  # pylint: disable=g-import-not-at-top
  sites = [(m, s) for m in modalities for s in ('trunk', 'layer4')]
  calls = []
  perturb = dsu_lib.perturb_map

  def apply(rng, feats, p):
    del rng
    m, site = sites[len(calls) % len(sites)]
    calls.append((m, site))
    u, eps = dsu_draws[m][site]
    leaves, treedef = jax.tree.flatten(feats)
    assert len(leaves) == len(eps), (m, site, len(leaves), len(eps))
    out = []
    for x, (e_mu, e_sig) in zip(leaves, eps):
      assert e_mu.shape == (x.shape[0], x.shape[-1]), (m, site, x.shape, e_mu.shape)
      y = perturb(x, jnp.asarray(e_mu, x.dtype), jnp.asarray(e_sig, x.dtype))
      out.append(jnp.where(u <= p, y, x))   # the port skips the site when u > p
    return jax.tree.unflatten(treedef, out)

  def sample_keep(rng, probs, batch_size, order):
    del rng, batch_size
    return {m: (jnp.asarray(amd_draws[m], probs[m].dtype) < 1 - probs[m]).astype(probs[m].dtype)
            for m in order}

  with mock.patch.object(dsu_lib, 'apply', apply), \
      mock.patch.object(amd_lib, 'sample_keep', sample_keep):
    yield calls


def jax_port_step_fn(model, spec, tx):
  """Our train_step, jitted, taking the draws as arguments: ``(state, batch, draws.dsu,
  draws.amd) -> (state, metrics)``."""

  def fn(state, batch, dsu_draws, amd_draws):
    with jax_replay(dsu_draws, amd_draws, model.modalities) as calls:
      out = step_lib.train_step(state, batch, jax.random.key(0), model=model, spec=spec, tx=tx)
    want = 2 * len(model.modalities) if model.dsu else 0
    assert len(calls) == want, f'DSU traced at {calls}, expected {want} sites'
    return out

  return jax.jit(fn)


def _flat(tree, prefix):
  return {prefix + '/' + '/'.join(str(getattr(k, 'key', k)) for k in path):
          np.asarray(v, np.float64) for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def torch_view(encoders, student_sds, teacher_sds, uni_heads, fused_head, teacher_fused_head):
  """PyTorch states in our layout: name -> float64 array. Names start with the comparison group
  ('<m> student|teacher trunk|layer4 params|BN stats', '<m> uni head', '[teacher ]fused head')."""
  out = {}
  for m, e in encoders.items():
    for who, sds in (('student', student_sds), ('teacher', teacher_sds)):
      trunk_vars, stage_vars = e.to_flax(sds[m])
      for part, v in (('trunk', trunk_vars), ('layer4', stage_vars)):
        out.update(_flat(v.get('params', {}), f'{m} {who} {part} params'))
        out.update(_flat(v.get('batch_stats', {}), f'{m} {who} {part} BN stats'))
    out.update(_flat(uni_heads[m], f'{m} uni head'))
  out.update(_flat(fused_head, 'fused head'))
  out.update(_flat(teacher_fused_head, 'teacher fused head'))
  return out


def jax_view(state, modalities):
  """Our TrainState in ``torch_view``'s names."""
  out = {}
  for m in modalities:
    for who in ('student', 'teacher'):
      w = step_lib.weights(state, who)
      params, frozen, stats = w.params, w.frozen, w.batch_stats
      out.update(_flat(frozen['encoders'][m]['trunk'].get('params', {}),
                       f'{m} {who} trunk params'))
      out.update(_flat(params['encoders'][m]['stage'], f'{m} {who} layer4 params'))
      out.update(_flat(stats['encoders'][m]['trunk'], f'{m} {who} trunk BN stats'))
      out.update(_flat(stats['encoders'][m]['stage'], f'{m} {who} layer4 BN stats'))
    out.update(_flat(state.student.params['uni_heads'][m], f'{m} uni head'))
  out.update(_flat(state.student.params['fused_head'], 'fused head'))
  out.update(_flat(state.teacher.params['fused_head'], 'teacher fused head'))
  return out


def view_diffs(a, b):
  """Max abs difference per group (the name up to the first '/'); the key sets must match."""
  if set(a) != set(b):
    raise AssertionError(f'state layouts differ: only in first {sorted(set(a) - set(b))[:5]}, '
                         f'only in second {sorted(set(b) - set(a))[:5]}')
  out = {}
  for k in a:
    g = k.split('/')[0]
    out[g] = max(out.get(g, 0.0), float(np.abs(a[k] - b[k]).max()))
  return out


PORT_GATES = (  # DSU gates of steps 1 and 2 (u <= 0.5 fires): every site, then a mix
    {m: {'trunk': 0.25, 'layer4': 0.25} for m in ('video', 'flow', 'audio')},
    {'video': {'trunk': 0.75, 'layer4': 0.25}, 'flow': {'trunk': 0.25, 'layer4': 0.75},
     'audio': {'trunk': 0.25, 'layer4': 0.25}},
)
# Tolerances of the two-step agreement. float64: rounding (1e-11 or less is seen). float32:
# rounding amplified by Adam's first steps, whose update is ~lr * g / |g| even for a gradient
# at rounding level: such a parameter can end up 2 lr = 2e-4 apart per step (4e-4 after two,
# seen), and step 2's losses move accordingly (4e-4 seen). The float64 check is the strict one.
PORT_TOL = {'float64': dict(loss=1e-9, state=1e-9), 'float32': dict(loss=1e-3, state=1e-3)}


def torch_port_run(encoders, batch, labels, *, dtype='float64', hidden=512, dsu=True, amd=True,
                   gates=PORT_GATES, seed=1000, variant=None):
  """Two steps of TorchPortMBCD. ``variant``: optional ``fn(impl)`` applied before the steps
  (negative controls). Returns (initial heads (uni, fused), per step: (loss terms, state view))."""
  tdt = getattr(torch, dtype)
  encs = {m: copy.deepcopy(e.torch).to(tdt) for m, e in encoders.items()}
  batch = {m: x.to(tdt) for m, x in batch.items()}
  channels = dsu_channels(encs, batch)
  with torch.no_grad():
    dims = {m: e.eval()(e.trunk(batch[m][:2])).shape[-1] for m, e in encs.items()}
  impl = TorchPortMBCD(encs, dims, hidden=hidden, dsu=dsu, amd=amd, dtype=tdt)
  heads = ({m: torch_head_np(impl.uni[m]) for m in encs}, torch_head_np(impl.fused))
  if variant is not None:
    variant(impl)
  out = []
  for i in range(2):
    draws = make_draws(seed + i, channels, labels.shape[0], gates=gates[i])
    lt = impl.step(batch, labels, draws)
    out.append((lt, torch_view(
        encoders, {m: state_dict_np(e) for m, e in impl.encs.items()},
        {m: state_dict_np(e) for m, e in impl.t_encs.items()},
        {m: torch_head_np(impl.uni[m]) for m in encs}, torch_head_np(impl.fused),
        torch_head_np(impl.t_fused))))
  return heads, out, channels


def jax_port_run(encoders, heads, channels, batch, labels, *, dtype='float64', hidden=512,
                 dsu=True, amd=True, gates=PORT_GATES, seed=1000):
  """Two steps of our train_step with the port's semantics and the same draws as
  ``torch_port_run``. Call under ``jax.enable_x64(True)`` for float64.
  Returns per step: (metrics, state view)."""
  encoders = {m: dataclasses.replace(   # the paper encoders compute in their dtype kwarg
      e, kwargs=dict(e.kwargs, dtype=dtype) if e.name in _DTYPED else e.kwargs)
              for m, e in encoders.items()}
  model, spec, tx, state = build_jax_port(encoders, heads[0], heads[1], hidden=hidden, dsu=dsu,
                                          amd=amd, dtype=dtype)
  jb = {m: jnp.asarray(np.moveaxis(x.double().numpy(), 1, -1), dtype) for m, x in batch.items()}
  jb['label'] = jnp.asarray(labels.numpy(), jnp.int32)
  step = jax_port_step_fn(model, spec, tx)
  out = []
  for i in range(2):
    draws = make_draws(seed + i, channels, labels.shape[0], gates=gates[i])
    state, metrics = step(state, jb, draws.dsu, draws.amd)
    out.append(({k: float(v) for k, v in metrics.items()}, jax_view(state, model.modalities)))
  return out


def port_parity(encoders, batch, labels, *, dtype='float64', **kwargs):
  """Two steps of TorchPortMBCD and of our train_step with the port's semantics, from the same
  weights, batch and draws. Call under ``jax.enable_x64(True)`` for float64.

  Args:
    encoders: modality -> ParityEncoder, in model order (the torch modules are copied).
    batch: modality -> PyTorch input ``[B, C, ...]``; labels: ``[B]`` int64.
    dtype: 'float64' (PyTorch double, JAX x64) or 'float32'.
    **kwargs: hidden, dsu, amd, gates, seed (as ``torch_port_run``).
  Returns:
    [per step: (loss terms torch, metrics jax, {group: max |torch - jax|})].
  """
  heads, t_rows, channels = torch_port_run(encoders, batch, labels, dtype=dtype, **kwargs)
  j_rows = jax_port_run(encoders, heads, channels, batch, labels, dtype=dtype, **kwargs)
  return [(lt, lj, view_diffs(tv, jv)) for (lt, tv), (lj, jv) in zip(t_rows, j_rows)]


def assert_port_parity(rows, dtype):
  """Raises AssertionError unless every loss term and state group agrees within PORT_TOL."""
  tol = PORT_TOL[dtype]
  for i, (lt, lj, diffs) in enumerate(rows):
    for k, v in lt.items():
      assert np.isfinite(v) and abs(v - lj[k]) <= tol['loss'] * max(1.0, abs(v)), \
          f'{dtype} step {i + 1}: {k} torch {v!r} jax {lj[k]!r}'
    bad = {g: d for g, d in diffs.items() if not d <= tol['state']}
    assert not bad, f'{dtype} step {i + 1}: state differs: {bad}'


def port_parity_table(rows_by_dtype):
  """Markdown table of max |torch - jax| per quantity, for each dtype and step."""
  cols = [(dt, i) for dt, rows in rows_by_dtype.items() for i in range(len(rows))]
  first = next(iter(rows_by_dtype.values()))[0]
  keys = [f'loss: {k}' for k in first[0]] + list(first[2])
  lines = ['| quantity | ' + ' | '.join(f'{dt} step {i + 1}' for dt, i in cols) + ' |',
           '|---|' + '---|' * len(cols)]
  for k in keys:
    vals = []
    for dt, i in cols:
      lt, lj, diffs = rows_by_dtype[dt][i]
      vals.append(abs(lt[k[6:]] - lj[k[6:]]) if k.startswith('loss: ') else diffs[k])
    lines.append(f'| {k} | ' + ' | '.join(f'{v:.1e}' for v in vals) + ' |')
  return '\n'.join(lines)
