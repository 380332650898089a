"""Paper encoders, Flax (jit) vs the PyTorch originals (eager), on the same CPU.

    JAX_PLATFORMS=cpu python -m benchmarks.encoders_vs_torch [--reps 5]

Needs torch (requirements-dev.txt). For each encoder -- full width and depth, reduced input
shapes so that it runs in a few minutes on 2 cores -- both frameworks get the same random
weights (PyTorch -> converter -> Flax) and the same input, and the script times, as in
training with a frozen trunk:

* trunk: stem..layer3 forward, no gradient (``torch.no_grad`` / plain ``apply``);
* stage: layer4 + pool forward and backward w.r.t. layer4's parameters, from the trunk's output.

Each number is the median of ``--reps`` timed calls after two warm-up calls (JAX compiles in
the first); the two frameworks' calls alternate round by round. Ratios > 1 mean JAX is faster.
The machine's load is sampled at the start, after every round and at the end, shown per row
and under the table, and the table is flagged LOADED when others used the CPUs
(``benchmarks/_load.py``; ``--refuse_under_load`` exits non-zero instead). Both frameworks
compute in float32 with the BatchNorms in inference mode; PyTorch runs in its default NCDHW
layout with ``torch.set_num_threads(os.cpu_count())``. The whole-MBCD-step comparison is not here.

``--lax_conv3d`` also times, interleaved with the two, the same JAX encoders with every 3-D conv
as one ``lax.conv_general_dilated`` (how ``nn.Conv`` computes it) instead of
``mbcd_jax/encoders/conv3d.py``'s 2-D / 1-D rewrite: that ratio measures the rewrite alone and,
interleaved, stays meaningful on a loaded machine (the audio ResNet-18 has no 3-D convs: its
ratio shows the noise).
"""
import argparse
import os
import statistics
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import _load  # pylint: disable=g-import-not-at-top,wrong-import-position
from mbcd_jax.reference import encoders_torch as ref

from mbcd_jax import encoders  # pylint: disable=g-import-not-at-top,wrong-import-position
from mbcd_jax.encoders import conv3d as conv3d_lib
from mbcd_jax.encoders import convert  # pylint: disable=g-import-not-at-top,wrong-import-position


def _lax_conv3d(x, kernel, strides, padding, precision=None):
  return jax.lax.conv_general_dilated(x, kernel, strides, [(p, p) for p in padding],
                                      dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'),
                                      precision=precision)


def _cases():
  return [
      # name, PyTorch model, PyTorch input shape [B, C, ...]
      ('slowfast_r101', ref.ResNet3dSlowFast(depth=101), (2, 3, 16, 64, 64)),
      ('slowonly_r50_flow', ref.ResNet3dSlowOnly(depth=50, in_channels=2), (2, 2, 8, 64, 64)),
      ('vggsound_r18', ref.AVENet(), (2, 1, 128, 256)),
  ]


def _torch_parts(name, model):
  """(trunk_fn, stage_fn, stage_params) of the PyTorch model."""
  if name == 'slowfast_r101':
    stage_params = list(model.slow_path.layer4.parameters()) + list(
        model.fast_path.layer4.parameters())

    def stage(f):
      ys, yf = model.slow_path.layer4(f[0]), model.fast_path.layer4(f[1])
      return torch.cat((yf.mean(dim=(2, 3, 4)), ys.mean(dim=(2, 3, 4))), 1)
    return model.trunk, stage, stage_params
  net = model.audnet if name == 'vggsound_r18' else model
  stage_params = list(net.layer4.parameters())
  if name == 'vggsound_r18':
    trunk = lambda x: net.layer3(net.layer2(net.layer1(net.maxpool(torch.relu(
        net.bn1(net.conv1(x)))))))
    stage = lambda f: net.layer4(f).mean(dim=(2, 3))
  else:
    trunk = lambda x: net.layer3(net.layer2(net.layer1(net.maxpool(net.conv1(x)))))
    stage = lambda f: net.layer4(f).mean(dim=(2, 3, 4))
  return trunk, stage, stage_params


def _median_times(fns, reps, monitor=None):
  """Median ms of each function; reps are interleaved so that load from other processes on a
  shared machine hits both frameworks alike. ``monitor``: a ``_load.LoadMonitor`` sampled
  after every round."""
  for fn in fns:
    fn(), fn()
  ts = [[] for _ in fns]
  for r in range(reps):
    for fn, t_list in zip(fns, ts):
      t = time.perf_counter()
      fn()
      t_list.append(time.perf_counter() - t)
    if monitor is not None:
      monitor.record(f'round {r + 1}')
  return [statistics.median(t) * 1e3 for t in ts]


def bench(name, model, shape, reps, monitor=None, lax_conv3d=False):
  torch.set_num_threads(os.cpu_count())
  ref.randomize_(model, seed=0)
  x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
  t_trunk, t_stage, t_params = _torch_parts(name, model)
  for p in model.parameters():
    p.requires_grad_(False)
  for p in t_params:
    p.requires_grad_(True)
  with torch.no_grad():
    t_feats = t_trunk(x)
  w = torch.randn(encoders.build(name).feature_dim, generator=torch.Generator().manual_seed(1))

  def torch_trunk():
    with torch.no_grad():
      return t_trunk(x)

  def torch_stage():
    for p in t_params:
      p.grad = None
    loss = (t_stage(t_feats) @ w).square().mean()
    loss.backward()
    return loss

  # ------------------------------------------------------------------ JAX side
  enc = encoders.build(name)
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  trunk_vars, stage_vars = convert.convert_state_dict(name, sd)
  xj = jnp.asarray(np.moveaxis(x.numpy(), 1, -1))
  wj = jnp.asarray(w.numpy())
  j_trunk = jax.jit(enc.trunk.apply)
  feats = j_trunk(trunk_vars, xj)
  frozen = {'batch_stats': stage_vars['batch_stats']}

  def stage_loss_and_grad(params, feats):
    def loss(p):
      return jnp.mean(jnp.square(enc.stage.apply({**frozen, 'params': p}, feats) @ wj))
    return jax.value_and_grad(loss)(params)
  j_stage = jax.jit(stage_loss_and_grad)

  # Same model, same numbers: the loss of both frameworks agrees.
  lt, lj = torch_stage().item(), float(j_stage(stage_vars['params'], feats)[0])
  assert abs(lt - lj) <= 1e-3 * abs(lt) + 1e-6, (name, lt, lj)

  trunks = [torch_trunk, lambda: jax.block_until_ready(j_trunk(trunk_vars, xj))]
  stages = [torch_stage, lambda: jax.block_until_ready(j_stage(stage_vars['params'], feats))]
  if lax_conv3d:
    # Other jit wrappers, traced (here, once) while conv3d is swapped for the 3-D conv.
    j_trunk3, j_stage3 = jax.jit(lambda v, x: enc.trunk.apply(v, x)), jax.jit(
        lambda p, f: stage_loss_and_grad(p, f))
    with mock.patch.object(conv3d_lib, 'conv3d', _lax_conv3d):
      lj3 = float(j_stage3(stage_vars['params'], feats)[0])
      j_trunk3(trunk_vars, xj)
    assert abs(lj3 - lj) <= 1e-4 * abs(lj) + 1e-6, (name, lj, lj3)
    trunks.append(lambda: jax.block_until_ready(j_trunk3(trunk_vars, xj)))
    stages.append(lambda: jax.block_until_ready(j_stage3(stage_vars['params'], feats)))
  ms = {}
  t, s = _median_times(trunks, reps, monitor), _median_times(stages, reps, monitor)
  ms['torch trunk'], ms['jax trunk'] = t[:2]
  ms['torch stage'], ms['jax stage'] = s[:2]
  if lax_conv3d:
    ms['jax3d trunk'], ms['jax3d stage'] = t[2], s[2]
  return ms


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--only', default='', help='comma-separated encoder names')
  parser.add_argument('--lax_conv3d', action='store_true',
                      help='also time JAX with 3-D convs as one lax conv (before the rewrite)')
  _load.add_flag(parser)
  args = parser.parse_args()
  monitor = _load.LoadMonitor()
  _load.refuse_at_start(monitor, args.refuse_under_load)
  print(f'jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}, '
        f'{os.cpu_count()} CPU threads, median of {args.reps}\n')
  extra = ('' if not args.lax_conv3d else
           ' trunk jax lax-3d ms | rewrite speed-up | layer4 jax lax-3d ms | rewrite speed-up |')
  print('| encoder | torch input | trunk fwd torch ms | jax ms | speed-up '
        '| layer4 fwd+bwd torch ms | jax ms | speed-up |' + extra + ' load |')
  print('|' + '---|' * (9 + 4 * args.lax_conv3d))
  for name, model, shape in _cases():
    if args.only and name not in args.only.split(','):
      continue
    since = len(monitor.samples)
    ms = bench(name, model, shape, args.reps, monitor, args.lax_conv3d)
    extra = ('' if not args.lax_conv3d else
             f' {ms["jax3d trunk"]:.0f} | {ms["jax3d trunk"] / ms["jax trunk"]:.2f} |'
             f' {ms["jax3d stage"]:.0f} | {ms["jax3d stage"] / ms["jax stage"]:.2f} |')
    print(f'| {name} | {"x".join(map(str, shape))} | {ms["torch trunk"]:.0f} | '
          f'{ms["jax trunk"]:.0f} | {ms["torch trunk"] / ms["jax trunk"]:.2f} | '
          f'{ms["torch stage"]:.0f} | {ms["jax stage"]:.0f} | '
          f'{ms["torch stage"] / ms["jax stage"]:.2f} |{extra} {monitor.span(since)} |',
          flush=True)
  _load.finish(monitor, args.refuse_under_load)


if __name__ == '__main__':
  main()
