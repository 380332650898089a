"""VGGSound audio encoder: the ResNet-18 inside VGGSound's ``AVENet`` (``audnet``), channels-last.

VGGSound (hche11/VGGSound, ``models/resnet.py``) is torchvision's ResNet with a 1-channel
7x7/2 stem conv, applied to a log-spectrogram ``[B, 1, 257, 1004]`` (frequency x time, PyTorch
layout); here the input is ``[B, F, S, 1]`` = ``[B, 257, 1004, 1]``. Names mirror the
torchvision ``state_dict`` (``layer1.0.conv1``, ``layer1.0.bn1``, ``layer2.0.downsample.0`` /
``.1``) so that the converter only renames and transposes. BatchNorm: ``resnet3d.batch_norm``.

Paper shapes: ``[B, 257, 1004, 1]`` -> trunk ``[B, 17, 63, 256]`` -> stage ``[B, 512]``.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mbcd_jax.encoders.resnet3d import batch_norm, global_avg_pool

Dtype = Any


def _conv(features, kernel, stride, pad, dtype, name):
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=[(pad, pad)] * 2,
                 use_bias=False, dtype=dtype, name=name)


class Downsample(nn.Module):
  """torchvision's ``Sequential(conv1x1, BN)``; sub-modules named ``'0'`` and ``'1'``."""
  features: int
  stride: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = _conv(self.features, 1, self.stride, 0, self.dtype, '0')(x)
    return batch_norm(self.dtype, '1')(x)


class BasicBlock(nn.Module):
  """torchvision ``BasicBlock``. ``[B, H, W, Cin] -> [B, H/s, W/s, planes]``."""
  planes: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    out = _conv(self.planes, 3, self.stride, 1, self.dtype, 'conv1')(x)
    out = nn.relu(batch_norm(self.dtype, 'bn1')(out))
    out = _conv(self.planes, 3, 1, 1, self.dtype, 'conv2')(out)
    out = batch_norm(self.dtype, 'bn2')(out)
    identity = x
    if self.stride != 1 or x.shape[-1] != self.planes:
      identity = Downsample(self.planes, self.stride, self.dtype, name='downsample')(x)
    return nn.relu(out + identity)


class ResLayer2d(nn.Module):
  """``layer{i}``: BasicBlocks named ``'0'..'n-1'``; ``remat`` as in ``resnet3d.ResLayer3d``."""
  planes: int
  blocks: int
  stride: int
  remat: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    block = nn.remat(BasicBlock) if self.remat else BasicBlock
    for j in range(self.blocks):
      x = block(self.planes, self.stride if j == 0 else 1, self.dtype, name=str(j))(x)
    return x


class AudioResNetTrunk(nn.Module):
  """conv1/bn1/relu/maxpool + layer1..layer3. ``[B, F, S, 1] -> [B, F/16, S/16, 4*width]``."""
  blocks: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = x.astype(self.dtype)
    x = _conv(self.width, 7, 2, 3, self.dtype, 'conv1')(x)
    x = nn.relu(batch_norm(self.dtype, 'bn1')(x))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for i in (1, 2, 3):
      x = ResLayer2d(self.width * 2 ** (i - 1), self.blocks[i - 1], 1 if i == 1 else 2,
                     dtype=self.dtype, name=f'layer{i}')(x)
    return x


class AudioResNetStage(nn.Module):
  """layer4 + global average pool. ``[B, F', S', 4*width] -> [B, 8*width]`` float32."""
  blocks: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  remat: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, return_map: bool = False, perturb=None):
    y = ResLayer2d(self.width * 8, self.blocks[3], 2, self.remat, self.dtype,
                   name='layer4')(x.astype(self.dtype))
    if perturb is not None:   # DSU on the layer4 output, before the pool
      y = perturb(y)
    pooled = global_avg_pool(y)
    return (pooled, y) if return_map else pooled
