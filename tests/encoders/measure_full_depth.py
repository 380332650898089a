"""Float32 / float64 agreement of the Flax paper encoders with PyTorch at FULL depth and width.

    JAX_PLATFORMS=cpu python -m tests.encoders.measure_full_depth [--kinds=...]   # clone root

The real structures (SlowFast-R101 8x8, SlowOnly-R50 flow, VGGSound R18) with random weights
and non-trivial BN statistics (``encoders_torch.randomize_``), small inputs so that it runs in
minutes on a CPU. The float64 PyTorch output is the reference; errors are max |a - b| and that
divided by max |reference|, for the pooled feature and the layer4 output. Not a test (slow);
the README quotes its output.
"""
import argparse
import os
import sys
import time

import jax


jax.config.update('jax_enable_x64', True)

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch  # pylint: disable=g-import-not-at-top,wrong-import-position

from mbcd_jax.reference import encoders_torch as ref
from mbcd_jax import encoders  # pylint: disable=g-import-not-at-top,wrong-import-position
from mbcd_jax.encoders import convert  # pylint: disable=g-import-not-at-top,wrong-import-position

PAPER_SHAPES = {'slowfast_r101': (1, 3, 32, 224, 224), 'slowonly_r50_flow': (1, 2, 8, 224, 224),
                'vggsound_r18': (1, 1, 257, 1004)}
CASES = {  # kind -> (torch net factory, PyTorch-layout input shape)
    'slowfast_r101': (lambda: ref.ResNet3dSlowFast(depth=101), (1, 3, 16, 64, 64)),
    'slowonly_r50_flow': (lambda: ref.ResNet3dSlowOnly(depth=50, in_channels=2),
                          (1, 2, 8, 64, 64)),
    'vggsound_r18': (lambda: ref.AVENet(), (1, 1, 129, 201)),
}


def _torch(kind, net, x):
  with torch.no_grad():
    if kind == 'slowfast_r101':
      _, (ys, yf), pooled = net.forward_split(x)
      return pooled.numpy(), [np.moveaxis(ys.numpy(), 1, -1), np.moveaxis(yf.numpy(), 1, -1)]
    split = net.audnet.forward_split if kind == 'vggsound_r18' else net.forward_split
    _, y, pooled = split(x)
    return pooled.numpy(), [np.moveaxis(y.numpy(), 1, -1)]


def _flax(kind, sd, x, dtype):
  enc = encoders.build(kind, {'dtype': dtype})
  tv, sv = convert.convert_state_dict(kind, sd)
  cast = lambda t: jax.tree.map(lambda a: jnp.asarray(a, dtype), t)
  x = jnp.asarray(np.moveaxis(x, 1, -1), dtype)
  with jax.default_matmul_precision('highest'):
    fmap = jax.jit(enc.trunk.apply)(cast(tv), x)
    pooled, maps = jax.jit(lambda v, f: enc.stage.apply(v, f, True))(cast(sv), fmap)
  maps = list(maps) if isinstance(maps, tuple) else [maps]
  return np.asarray(pooled), [np.asarray(m) for m in maps]


def _err(a, ref_):
  a, ref_ = np.asarray(a, np.float64), np.asarray(ref_, np.float64)
  e = float(np.abs(a - ref_).max())
  return e, e / float(np.abs(ref_).max())


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--kinds', default=','.join(CASES))
  p.add_argument('--paper_shapes', action='store_true', help='the paper\'s input sizes (slow)')
  args = p.parse_args()
  print(f'torch {torch.__version__}, jax {jax.__version__}, backend {jax.default_backend()}')
  for kind in args.kinds.split(','):
    make, shape = CASES[kind]
    shape = PAPER_SHAPES[kind] if args.paper_shapes else shape
    net = ref.randomize_(make(), seed=0)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    t0 = time.time()
    t32 = _torch(kind, net, x)
    t64 = _torch(kind, net.double(), x.double())
    sd64 = {k: v.numpy() for k, v in net.state_dict().items()}
    f32 = _flax(kind, sd, x.numpy(), 'float32')
    f64 = _flax(kind, sd64, x.double().numpy(), 'float64')
    print(f'\n{kind}: input {shape}, pooled {t64[0].shape}, layer4 '
          f'{[m.shape for m in t64[1]]}, |pooled| max {np.abs(t64[0]).max():.3g} '
          f'({time.time() - t0:.0f} s)')
    for name, (a, b) in {'flax32 vs torch32': (f32, t32), 'flax32 vs torch64': (f32, t64),
                         'torch32 vs torch64': (t32, t64), 'flax64 vs torch64': (f64, t64)}.items():
      pe = _err(a[0], b[0])
      le = max((_err(u, v) for u, v in zip(a[1], b[1])), key=lambda t: t[1])
      print(f'  {name:20s} pooled max abs {pe[0]:.2e} rel {pe[1]:.2e} | '
            f'layer4 max abs {le[0]:.2e} rel {le[1]:.2e}')


if __name__ == '__main__':
  main()
