"""The initialisers the peers' PyTorch modules get (``config.model.param_init='torch'``).

The peers build every classifier and projector from ``nn.Linear`` and their random audio tail
from VGGSound's ``AudioAttGenModule``; Flax's defaults differ (lecun-normal kernels, zero
biases), so the same architecture starts elsewhere. What PyTorch draws:

* ``nn.Linear(fan_in, out)``: kernel and bias both U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (the
  kernel's ``kaiming_uniform_(a=sqrt(5))`` is exactly that bound).
* ``AudioAttGenModule`` (VGGSound ``models/resnet.py``, its constructor's loop): every Conv2d
  kernel ``kaiming_normal_(mode='fan_out', nonlinearity='relu')``, i.e. N(0, 2 / fan_out) with
  fan_out = out_channels x kernel area; every BatchNorm weight N(1, 0.02), bias 0; running
  statistics 0 / 1 (PyTorch's, the same as ours). Its convolutions have no bias; a bias of
  another stage's conv gets ``nn.Conv2d``'s default, U(+-1/sqrt(fan_in)).
"""
import math
from typing import Any
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp

PyTree = Any
INITS = ('flax', 'torch')
BN_WEIGHT_STD = 0.02   # VGGSound's N(1, 0.02) on BatchNorm weights


def _uniform(bound: float):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                  bound)


def linear_inits(fan_in: int) -> dict:
  """``nn.Dense`` keyword arguments drawing like ``torch.nn.Linear(fan_in, ·)``."""
  return dict(kernel_init=nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'),
              bias_init=_uniform(1.0 / math.sqrt(fan_in)))


class TorchDense(nn.Module):
  """nn.Dense initialised like ``torch.nn.Linear`` (kernel and bias U(+-1/sqrt(fan_in)))."""
  features: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.features, **linear_inits(x.shape[-1]))(x)


def vggsound_tail(rng: jax.Array, params: PyTree) -> PyTree:
  """``params`` (a conv stage's Flax parameters) redrawn as ``AudioAttGenModule`` draws its own.

  A node with ``kernel`` of rank >= 3 is a convolution (``[*window, in, out]``): kernel
  N(0, 2 / (window x out)), bias (if any) U(+-1/sqrt(window x in)). A node with ``scale`` is a
  BatchNorm: scale N(1, 0.02), bias 0. A rank-2 ``kernel`` is a Linear (``linear_inits``).
  Leaves are keyed by their path, so the draw does not depend on the tree's iteration order.
  """
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  out = {}
  for path, x in leaves:
    names = tuple(getattr(p, 'key', str(p)) for p in path)
    key = jax.random.fold_in(rng, zlib.crc32('/'.join(names).encode()) >> 1)
    parent = _node(params, names[:-1])
    out[names] = _draw(key, names[-1], x, parent)
  return jax.tree_util.tree_unflatten(jax.tree.structure(params),
                                      [out[tuple(getattr(p, 'key', str(p)) for p in path)]
                                       for path, _ in leaves])


def _node(tree, names):
  for n in names:
    tree = tree[n]
  return tree


def _draw(key, name, x, parent):
  if 'scale' in parent:                                   # BatchNorm
    if name == 'scale':
      return 1.0 + BN_WEIGHT_STD * jax.random.normal(key, x.shape, x.dtype)
    return jnp.zeros_like(x)
  kernel = parent['kernel']
  if kernel.ndim >= 3:                                    # convolution [*window, in, out]
    window = math.prod(kernel.shape[:-2])
    if name == 'kernel':
      std = math.sqrt(2.0 / (window * kernel.shape[-1]))
      return std * jax.random.normal(key, x.shape, x.dtype)
    return _uniform(1.0 / math.sqrt(window * kernel.shape[-2]))(key, x.shape, x.dtype)
  inits = linear_inits(kernel.shape[0])                   # Linear [in, out]
  return inits['kernel_init' if name == 'kernel' else 'bias_init'](key, x.shape, x.dtype)
