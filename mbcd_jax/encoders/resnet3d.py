"""3-D ResNet building blocks, a channels-last port of mmaction2's ``ResNet3d`` / ``ResNet3dPathway``.

Module and parameter names mirror the PyTorch ``state_dict`` keys so that the converter
(``convert.py``) is a rename plus a kernel transpose: ``layer4.0.conv2.bn.running_var`` is
``batch_stats/layer4/0/conv2/bn/var`` here. Every BatchNorm is ``mbcd_jax.encoders.batchnorm.BatchNorm``:
running statistics by default, PyTorch's training mode when applied with ``mutable=['bn_moments']``
(``config.model.bn_mode='port'``); its scale and bias are ordinary parameters.

Shapes: ``[B, T, H, W, C]`` everywhere (PyTorch is ``[B, C, T, H, W]``).

Facts of the mmaction2 architecture this file relies on (checked against
``mmaction/models/backbones/resnet3d.py`` and ``resnet3d_slowfast.py``, mmaction2 1.2):

* ``Bottleneck3d``, style 'pytorch', inflate style '3x1x1': conv1 is (3,1,1) when the block is
  inflated, else (1,1,1); conv2 is (1,3,3) and carries the strides; conv3 is 1x1x1 with no
  ReLU; ``downsample`` (1x1x1 conv + BN) on the first block when the stride is not 1 or the
  channel count changes; ReLU after the residual sum. Expansion 4.
* Stem: conv (padding (k-1)//2) + BN + ReLU, then max-pool (1,3,3) with padding (0,1,1).
* ``ResNet3dPathway`` with ``lateral``: the first block of layer i (1..4) sees
  ``inplanes + lateral_inplanes[i-1]`` channels, because a time-strided
  ``(fusion_kernel,1,1)`` conv of the fast pathway (no norm, no act, stride ``speed_ratio``) is
  concatenated to the slow features after the stem (``conv1_lateral``) and after layers 1-3
  (``layer{i}_lateral``). The channel counts here are read off the incoming arrays, so the
  port needs no lateral bookkeeping.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mbcd_jax.encoders import batchnorm
from mbcd_jax.encoders.conv3d import Conv3d

Dtype = Any

# 14: one block per stage, not a released net: the real-data path's CI run (XLA's compile time
# grows with the block count; benchmarks/paper_path.py --ci).
ARCH_BLOCKS = {14: (1, 1, 1, 1), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
EXPANSION = 4


def as_dtype(dtype) -> Dtype:
  """Accepts 'float32' / 'bfloat16' (config-friendly strings) or a dtype."""
  return jnp.dtype(dtype) if isinstance(dtype, str) else dtype


def batch_norm(dtype: Dtype, name: str) -> batchnorm.BatchNorm:
  # PyTorch BatchNorm eps. Running statistics unless applied in training mode (see
  # mbcd_jax/encoders/batchnorm.py: mutable 'bn_moments').
  return batchnorm.BatchNorm(epsilon=1e-5, dtype=dtype, name=name)


class ConvModule(nn.Module):
  """mmcv ``ConvModule``: bias-free conv -> [BN] -> [ReLU]. Sub-modules ``conv`` and ``bn``.

  The conv is ``conv3d.Conv3d`` (``nn.Conv``'s parameter, computed as 2-D / 1-D convolutions,
  which XLA's CPU backend runs much faster than 3-D ones).

  Attributes:
    features: output channels.
    kernel: kernel size per axis ``(kt, kh, kw)``, e.g. ``(3, 1, 1)``.
    strides: stride per axis (default ones).
    padding: symmetric zero padding per axis (PyTorch convention; default zeros).
    norm / act: whether BN / ReLU follow the conv.
  """
  features: int
  kernel: Sequence[int]
  strides: Sequence[int] | None = None
  padding: Sequence[int] | None = None
  norm: bool = True
  act: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    n = len(self.kernel)
    x = Conv3d(self.features, tuple(self.kernel), tuple(self.strides or (1,) * n),
               tuple(self.padding or (0,) * n), dtype=self.dtype, name='conv')(x)
    if self.norm:
      x = batch_norm(self.dtype, 'bn')(x)
    if self.act:
      x = nn.relu(x)
    return x


class Bottleneck3d(nn.Module):
  """mmaction2 ``Bottleneck3d`` (style 'pytorch', inflate style '3x1x1').

  ``[B, T, H, W, Cin] -> [B, T/ts, H/ss, W/ss, 4 * planes]``.
  """
  planes: int
  spatial_stride: int = 1
  temporal_stride: int = 1
  inflate: bool = False
  downsample: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    ts, ss = self.temporal_stride, self.spatial_stride
    k1, p1 = ((3, 1, 1), (1, 0, 0)) if self.inflate else ((1, 1, 1), (0, 0, 0))
    out = ConvModule(self.planes, k1, padding=p1, dtype=self.dtype, name='conv1')(x)
    out = ConvModule(self.planes, (1, 3, 3), (ts, ss, ss), (0, 1, 1), dtype=self.dtype,
                     name='conv2')(out)
    out = ConvModule(self.planes * EXPANSION, (1, 1, 1), act=False, dtype=self.dtype,
                     name='conv3')(out)
    identity = x
    if self.downsample:
      identity = ConvModule(self.planes * EXPANSION, (1, 1, 1), (ts, ss, ss), act=False,
                            dtype=self.dtype, name='downsample')(x)
    return nn.relu(out + identity)


class ResLayer3d(nn.Module):
  """``layer{i}``: ``blocks`` bottlenecks named ``'0'..'n-1'`` as in the PyTorch Sequential.

  Attributes:
    inflate: per-block inflate flags (mmaction2 repeats a stage's int flag over its blocks).
    remat: rematerialise each block in the backward pass (``nn.remat``), trading one extra
      forward of the block for not storing its internal activations.
  """
  planes: int
  blocks: int
  spatial_stride: int = 1
  temporal_stride: int = 1
  inflate: bool = False
  remat: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    block = nn.remat(Bottleneck3d) if self.remat else Bottleneck3d
    needs_ds = self.spatial_stride != 1 or x.shape[-1] != self.planes * EXPANSION
    for j in range(self.blocks):
      first = j == 0
      x = block(self.planes,
                spatial_stride=self.spatial_stride if first else 1,
                temporal_stride=self.temporal_stride if first else 1,
                inflate=self.inflate,
                downsample=first and needs_ds,
                dtype=self.dtype, name=str(j))(x)
    return x


class ResNet3dPart(nn.Module):
  """A contiguous slice of an mmaction2 ``ResNet3dPathway``: optional stem, then res layers.

  The trunk of an encoder is ``ResNet3dPart(stem=True, layers=(1, 2, 3))`` and the trainable
  stage ``ResNet3dPart(stem=False, layers=(4,), pool=True)``; both slices share this definition so
  that the converter maps ``layer4.*`` keys to the stage and everything else to the trunk.

  Call it as a whole (``__call__``: stem then layers, no laterals; this is ``ResNet3dSlowOnly``)
  or piecewise (``stem``, ``layer``, ``lateral``) from a two-pathway model.

  Attributes:
    depth: 50, 101 or 152 (block counts of the stages).
    base_channels: stem width; stage i has ``base_channels * 2**(i-1)`` planes.
    stem: whether this slice holds ``conv1`` (+ ``conv1_lateral``) and the max-pool.
    layers: which of layer1..layer4 this slice holds.
    conv1_kernel / conv1_stride_t / pool1_stride_t: stem geometry (spatial strides are 2).
    inflate: per-stage inflate flags.
    spatial_strides / temporal_strides: first-block strides per stage.
    with_pool2: (2,1,1) temporal max-pool after layer1 (``ResNet3d.forward`` only).
    lateral: holds the fast->slow lateral convs (``conv1_lateral``, ``layer{1,2,3}_lateral``).
    speed_ratio / channel_ratio / fusion_kernel: lateral conv geometry.
    pool: end with a global average pool (the trainable stage).
    remat: see ``ResLayer3d``.
    dtype: computation dtype (parameters stay float32).
  """
  depth: int = 50
  base_channels: int = 64
  stem: bool = True
  layers: Sequence[int] = (1, 2, 3)
  conv1_kernel: Sequence[int] = (1, 7, 7)
  conv1_stride_t: int = 1
  pool1_stride_t: int = 1
  inflate: Sequence[int] = (0, 0, 1, 1)
  spatial_strides: Sequence[int] = (1, 2, 2, 2)
  temporal_strides: Sequence[int] = (1, 1, 1, 1)
  with_pool2: bool = False
  lateral: bool = False
  speed_ratio: int = 8
  channel_ratio: int = 8
  fusion_kernel: int = 5
  pool: bool = False
  remat: bool = False
  dtype: Dtype = jnp.float32

  def setup(self):
    if self.depth not in ARCH_BLOCKS:
      raise ValueError(f'depth {self.depth} not in {sorted(ARCH_BLOCKS)}')
    blocks = ARCH_BLOCKS[self.depth]
    if self.stem:
      k = tuple(self.conv1_kernel)
      self.conv1 = ConvModule(self.base_channels, k, (self.conv1_stride_t, 2, 2),
                              tuple((i - 1) // 2 for i in k), dtype=self.dtype)
      if self.lateral:
        self.conv1_lateral = self._lateral_conv(self.base_channels)
    for i in self.layers:
      planes = self.base_channels * 2 ** (i - 1)
      setattr(self, f'layer{i}', ResLayer3d(
          planes, blocks[i - 1], self.spatial_strides[i - 1], self.temporal_strides[i - 1],
          bool(self.inflate[i - 1]), self.remat, self.dtype))
      if self.lateral and i < 4:
        setattr(self, f'layer{i}_lateral', self._lateral_conv(planes * EXPANSION))

  def _lateral_conv(self, slow_channels):
    # Fast features have slow_channels / channel_ratio channels; the lateral doubles them and
    # subsamples time by speed_ratio so they line up with the slow frames.
    return ConvModule(slow_channels * 2 // self.channel_ratio, (self.fusion_kernel, 1, 1),
                      (self.speed_ratio, 1, 1), ((self.fusion_kernel - 1) // 2, 0, 0),
                      norm=False, act=False, dtype=self.dtype)

  def run_stem(self, x):
    """conv1 + max-pool. ``[B, T, H, W, Cin] -> [B, T/ct/pt, H/4, W/4, base_channels]``."""
    x = self.conv1(x)
    return nn.max_pool(x, (1, 3, 3), (self.pool1_stride_t, 2, 2),
                       padding=((0, 0), (1, 1), (1, 1)))

  def run_layer(self, i: int, x):
    return getattr(self, f'layer{i}')(x)

  def run_lateral(self, i: int, x_fast):
    """Lateral conv after the stem (``i=0``) or after layer i of the fast pathway."""
    return (self.conv1_lateral if i == 0 else getattr(self, f'layer{i}_lateral'))(x_fast)

  def __call__(self, x, return_map: bool = False, perturb=None):
    """Stem (if held) then the held layers; with ``pool``, returns ``[B, C]`` float32 (and
    the final map too when ``return_map``). ``perturb``: optional function applied to the
    final map before the pool (DSU)."""
    x = x.astype(self.dtype)
    if self.stem:
      x = self.run_stem(x)
    for i in self.layers:
      x = self.run_layer(i, x)
      if i == 1 and self.with_pool2:
        x = nn.max_pool(x, (2, 1, 1), (2, 1, 1))
    if perturb is not None:
      x = perturb(x)
    if not self.pool:
      return x
    pooled = global_avg_pool(x)
    return (pooled, x) if return_map else pooled


def global_avg_pool(x) -> jnp.ndarray:
  """Mean over every axis but the first and last, in at least float32 (float64 stays float64).
  ``[B, ..., C] -> [B, C]``."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32)).mean(axis=tuple(range(1, x.ndim - 1)))
