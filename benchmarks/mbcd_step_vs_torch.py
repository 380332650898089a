"""The whole MBCD training step: our JAX step (jit) vs a PyTorch eager re-implementation.

    JAX_PLATFORMS=cpu python -u -m benchmarks.mbcd_step_vs_torch [--reps 3] [--setups ...]
    JAX_PLATFORMS=cpu python -u -m benchmarks.mbcd_step_vs_torch --no_check --no_timing  # port

(~4 min for the check + F+A, ~3.5 min for V+F+A alone on 2 loaded cores.)

Needs torch (requirements-dev.txt). The paper's encoders (mmaction2 SlowFast, SlowOnly flow,
VGGSound ResNet-18; mbcd_jax/reference/encoders_torch.py for PyTorch, mbcd_jax/encoders/paper.py for
Flax) at the paper's structure but reduced width / input size so that it runs in minutes on 2
CPU cores. Both frameworks get the same weights (PyTorch -> converter -> Flax; heads copied),
compute in float32, run the BatchNorms on running statistics and use the same threads
(``torch.set_num_threads(os.cpu_count())``; XLA's CPU client uses every core).

Timed step = the default method ('mbcd': adaptive modality dropout, first-order inner step on
layer4, EMA teacher, KL distillation into fused and uni-modal heads, Adam(weight_decay=1e-4),
EMA update):

* ``jax``: ``mbcd_jax.step.train_step`` under ``jax.jit`` (state donated): frozen trunks once.
* ``torch (port)`` (``TorchMBCD`` of mbcd_jax/reference/mbcd_torch.py): as the public port's
  train_one_step does it: the frozen trunk under
  ``no_grad`` recomputed for each of the 3 passes (uni-modal at theta, fused at theta', teacher);
  learn2learn-style inner step (``torch.autograd.grad`` of sum_k CE_k w.r.t. layer4, detached,
  theta' = theta - alpha g, fused pass through ``torch.func.functional_call``); AMD masks;
  KL(teacher || student) batchmean; ``torch.optim.Adam(weight_decay=1e-4)``; EMA over every
  parameter of the teacher copy (a parameter loop, trunk included, as a deepcopy-based EMA does).
* ``torch (trunk once)``: the same step with the trunk run once per step and shared by the three
  passes, and the EMA over the trainable parameters only (``torch._foreach``): the fairer
  PyTorch baseline.

Before timing, a correctness check on the V+F+A set-up: head dropout 0, AMD off, same weights
and batch: JAX's and PyTorch's losses agree at step 1 and again at step 2 (after one Adam update
and one EMA update), i.e. the two implement the same step.

Then the port-semantics check (``--port_check float64,float32``; ``--no_timing`` to stop after
it; mbcd_jax/reference/port_parity.py): ``TorchPortMBCD`` runs the public port's network
semantics -- every encoder in train mode
(BN on batch statistics, running statistics updated as PyTorch does, twice per step: the port
re-runs the frozen trunk and layer4 for the theta' pass), DSU on the first pass's trunk and
layer4 outputs, AMD, EMA over the encoders' whole state dict (frozen weights and BN statistics)
and the fused head -- and ``mbcd_jax.step.train_step`` runs with ``bn_mode='port'``,
``dsu=True``. The random draws are shared: NumPy draws the DSU coins and noise and the AMD
uniforms (``SharedDraws``); PyTorch consumes them directly, our step through ``jax_replay``
(which patches ``dsu.apply`` / ``amd.sample_keep`` while tracing, keeping our DSU arithmetic).
Two steps from the same weights and batch, in float64 (JAX x64, torch double) and float32;
prints max |torch - jax| of every loss term, the trunk / layer4 parameters, the trunk / layer4
BN running statistics, the heads, and the teacher's whole state, and asserts them within
``PORT_TOL`` (~13 min on 2 loaded cores, most of it XLA compiling the reduced paper encoders'
step). Seen (V+F+A, SlowFast-R50 / SlowOnly-R50 at base 8, ResNet-18 width 8, batch 4):
float64: loss terms <= 1.1e-13, parameters <= 5.2e-12, BN statistics <= 5.4e-13, teacher
<= 1e-14; float32: loss terms <= 3.7e-4, parameters <= 4e-4 (Adam on rounding-level
gradients, see PORT_TOL), BN statistics <= 3.1e-4. ``TorchPortMBCD`` itself is checked
against the port's own code by
``benchmarks/port_harness.py``; ``tests/test_port_semantics_torch.py`` runs the same comparison
on tiny encoders.

Each time is the median of ``--reps`` calls after two warm-up calls (JAX compiles in the first);
the frameworks' calls alternate round by round so that load from other processes hits all
alike. Ratio = torch ms / JAX ms (> 1: JAX faster). The machine's load is sampled at the
start, after every round and at the end, shown per row and under the table, and the table is
flagged LOADED when others used the CPUs (``benchmarks/_load.py``; ``--refuse_under_load``
exits non-zero instead).
"""
import argparse
import functools
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch

from benchmarks import _load
from benchmarks.encoders_vs_torch import _median_times
from mbcd_jax import methods, models
from mbcd_jax import step as step_lib
from mbcd_jax.encoders import convert
from mbcd_jax.reference import encoders_torch as ref
from mbcd_jax.reference.mbcd_torch import (INPUT_SHAPES, NUM_CLASSES, TorchEncoder, TorchMBCD,
                                           make_encoders)
from mbcd_jax.reference.port_parity import (PORT_TOL, assert_port_parity, paper_encoder,
                                            port_parity, port_parity_table)


# ------------------------------------------------------------------ the JAX step
def _head_params(head):
  t = lambda x: jnp.asarray(x.detach().numpy())
  return {'Dense_0': {'kernel': t(head.fc1.weight).T, 'bias': t(head.fc1.bias)},
          'Dense_1': {'kernel': t(head.fc2.weight).T, 'bias': t(head.fc2.bias)}}


def build_jax(setup, torch_nets, torch_impl, *, hidden, dropout, method, example):
  """(jitted step, initial state) with the torch implementation's weights."""
  mc = ml_collections.ConfigDict(dict(
      encoders={m: dict(name=kind, **kw) for m, (kind, kw) in setup.items()},
      head_hidden=hidden, head_dropout=dropout, freeze_trunk=True,
      feature_norm='parameter_free'))
  mods = tuple(setup)
  model = models.build_model(mc, mods, NUM_CLASSES)
  mcfg = ml_collections.ConfigDict(dict(
      name=method, amd=None, consistency=None, ema=None, distill=None, unimodal_ce=None,
      amd_base=0.0, amd_fixed_p=0.5, alpha=1e-4, ema_beta=0.999, lambda_mm=1.0, lambda_um=1.0,
      temperature=1.0))
  spec = methods.resolve(mcfg)
  tx = step_lib.make_optimizer(ml_collections.ConfigDict(dict(
      lr=1e-4, weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8)))
  state = jax.jit(functools.partial(step_lib.init_state, model, spec, tx))(
      jax.random.key(0), {m: v[:1] for m, v in example.items()})
  params = jax.tree.map(lambda x: x, state.student.params)
  frozen = jax.tree.map(lambda x: x, state.student.frozen)
  for m, (kind, kw) in setup.items():
    sd = {k: v.numpy() for k, v in torch_nets[m].state_dict().items()}
    trunk_vars, stage_vars = convert.convert_state_dict(kind, sd, **kw)
    stage_vars = dict(stage_vars)
    params['encoders'][m]['stage'] = stage_vars.pop('params')
    frozen['encoders'][m] = {'trunk': trunk_vars, 'stage': stage_vars}
    params['uni_heads'][m] = _head_params(torch_impl.uni[m])
  params['fused_head'] = _head_params(torch_impl.fused)
  params, frozen = jax.tree.map(jnp.asarray, (params, frozen))
  state = state.replace(student=state.student.replace(params=params, frozen=frozen),
                        opt_state=tx.init(params),
                        teacher=state.teacher.replace(params=jax.tree.map(jnp.copy, params)))
  step = jax.jit(functools.partial(step_lib.train_step, model=model, spec=spec, tx=tx),
                 donate_argnums=(0,))
  return step, state


def make_setup(mods, encs, batch, dropout=0.5, amd=True, trunk_once=False, hidden=512,
               method='mbcd', seed=0):
  """Builds both frameworks for ``mods``. Returns (torch impl, jax step, jax state, batches)."""
  setup = {m: encs[m][:2] for m in mods}
  nets = {}
  for i, m in enumerate(mods):
    nets[m] = ref.randomize_(encs[m][2](), seed=seed + i)
  g = torch.Generator().manual_seed(seed + 100)
  tb = {m: torch.randn((batch,) + INPUT_SHAPES[m], generator=g) for m in mods}
  labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
  jb = {m: jnp.asarray(np.moveaxis(tb[m].numpy(), 1, -1)) for m in mods}
  jb['label'] = jnp.asarray(labels.numpy(), jnp.int32)
  wrapped = {m: TorchEncoder(encs[m][0], nets[m]) for m in mods}
  with torch.no_grad():
    dims = {m: wrapped[m](wrapped[m].trunk(tb[m][:1])).shape[-1] for m in mods}
  torch.manual_seed(seed)
  impl = TorchMBCD(wrapped, dims, hidden=hidden, dropout=dropout, amd=amd, trunk_once=trunk_once)
  step, state = build_jax(setup, nets, impl, hidden=hidden, dropout=dropout, method=method,
                          example={m: jb[m] for m in mods})
  return impl, step, state, (tb, labels), jb


def check(encs, batch):
  """Same weights, batch, no dropout, no AMD: the losses of steps 1 and 2 agree."""
  mods = ('video', 'flow', 'audio')
  impl, step, state, (tb, labels), jb = make_setup(mods, encs, batch, dropout=0.0, amd=False,
                                                   method='mbcd_no_amd')
  rng = jax.random.key(1)
  out = []
  for _ in range(2):
    lt = float(impl.step(tb, labels))
    state, metrics = step(state, jb, rng)
    out.append((lt, float(metrics['loss'])))
  for lt, lj in out:
    assert np.isfinite(lt) and np.isfinite(lj), out
    assert abs(lt - lj) <= 1e-4 * abs(lt) + 1e-5, f'torch vs JAX loss differ: {out}'
  return out


def bench(mods, encs, batch, reps, monitor=None):
  port, step, state, (tb, labels), jb = make_setup(mods, encs, batch)
  once = make_setup(mods, encs, batch, trunk_once=True)[0]
  first = float(port.step(tb, labels))
  assert np.isfinite(first), first
  holder = {'state': state}
  rng = jax.random.key(0)

  def jax_step():
    holder['state'], metrics = step(holder['state'], jb, rng)
    jax.block_until_ready(metrics['loss'])

  t0 = time.perf_counter()
  jax_step()
  compile_s = time.perf_counter() - t0
  ms = _median_times([jax_step, lambda: port.step(tb, labels), lambda: once.step(tb, labels)],
                     reps, monitor)
  return ms, compile_s, first


def port_check(args, dtypes, mods=('video', 'flow', 'audio')):
  """port_parity on the paper's encoders (reduced) for each dtype -> {dtype: rows}."""
  encs = make_encoders(args.video_depth, args.port_width_div, args.port_audio_width)
  encoders = {m: paper_encoder(encs[m][0], encs[m][1], ref.randomize_(encs[m][2](), seed=i))
              for i, m in enumerate(mods)}
  g = torch.Generator().manual_seed(100)
  batch = {m: torch.randn((args.batch,) + INPUT_SHAPES[m], generator=g) for m in mods}
  labels = torch.randint(0, NUM_CLASSES, (args.batch,), generator=g)
  out = {}
  for dt in dtypes:
    with jax.enable_x64(dt == 'float64'):
      out[dt] = port_parity(encoders, batch, labels, dtype=dt)
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--video_depth', type=int, default=50, help='SlowFast depth (paper: 101)')
  parser.add_argument('--width_div', type=int, default=4,
                      help='SlowFast / SlowOnly base channels = 64 / width_div')
  parser.add_argument('--audio_width', type=int, default=16, help='ResNet-18 width (paper: 64)')
  parser.add_argument('--setups', default='flow+audio,video+audio,video+flow+audio')
  parser.add_argument('--no_check', action='store_true')
  parser.add_argument('--port_check', default='float64,float32',
                      help="dtypes of the port-semantics two-step check ('' to skip)")
  parser.add_argument('--port_width_div', type=int, default=8,
                      help='width_div of the port-semantics check (smaller: faster)')
  parser.add_argument('--port_audio_width', type=int, default=8)
  parser.add_argument('--no_timing', action='store_true')
  _load.add_flag(parser)
  args = parser.parse_args()
  monitor = _load.LoadMonitor()
  if not args.no_timing:
    _load.refuse_at_start(monitor, args.refuse_under_load)
  threads = os.cpu_count()
  torch.set_num_threads(threads)
  encs = make_encoders(args.video_depth, args.width_div, args.audio_width)
  print(f'jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}, '
        f'{threads} CPU threads, float32, batch {args.batch}, median of {args.reps}; '
        f'SlowFast-R{args.video_depth} / SlowOnly-R50 at base {64 // args.width_div}, '
        f'ResNet-18 width {args.audio_width}; inputs (torch layout) '
        + ', '.join(f'{m} {"x".join(map(str, s))}' for m, s in INPUT_SHAPES.items()), flush=True)
  if not args.no_check:
    out = check(encs, args.batch)
    print('check (V+F+A, dropout 0, AMD off): loss step 1 torch %.6f jax %.6f; '
          'step 2 torch %.6f jax %.6f' % (*out[0], *out[1]), flush=True)
  if args.port_check:
    rows = port_check(args, args.port_check.split(','))
    print('\nport semantics (V+F+A, BN train mode, DSU, AMD, head dropout 0; SlowFast-R'
          f'{args.video_depth} / SlowOnly-R50 at base {64 // args.port_width_div}, ResNet-18 '
          f'width {args.port_audio_width}): max |torch - jax| over two steps')
    print(port_parity_table(rows), flush=True)
    for dt, r in rows.items():
      assert_port_parity(r, dt)
    print('port semantics: torch and JAX agree within', PORT_TOL, flush=True)
  if args.no_timing:
    return
  print('\n| set-up | JAX ms | torch (port) ms | ratio | torch (trunk once) ms | ratio | '
        'JAX compile s | load |')
  print('|' + '---|' * 8)
  for name in args.setups.split(','):
    mods = tuple(name.split('+'))
    since = len(monitor.samples)
    ms, compile_s, _ = bench(mods, encs, args.batch, args.reps, monitor)
    print(f'| {"+".join(m[0].upper() for m in mods)} | {ms[0]:.0f} | {ms[1]:.0f} | '
          f'{ms[1] / ms[0]:.2f} | {ms[2]:.0f} | {ms[2] / ms[0]:.2f} | {compile_s:.0f} | '
          f'{monitor.span(since)} |', flush=True)
  _load.finish(monitor, args.refuse_under_load)


if __name__ == '__main__':
  main()
