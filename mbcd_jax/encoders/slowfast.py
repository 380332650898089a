"""SlowFast (video) and SlowOnly (flow) encoders: mmaction2 ``ResNet3dSlowFast`` / ``ResNet3dSlowOnly``.

Split as the port (SimMMDG's ``get_feature`` / ``get_predict``) splits them: the frozen trunk
runs both pathways through layer3, *including* ``layer3_lateral`` (so the slow layer4 input has
1024 + 256 channels at full width); the trainable stage is both pathways' layer4 and a global
average pool. The pooled feature is ``concat(fast, slow)`` -- 256 + 2048 = 2304 -- the order of
mmaction2's ``SlowFastHead`` (``torch.cat((x_fast, x_slow))``) and, after its swapped tuple
unpacking, of the port's head as well.

Paper shapes (8x8 config: tau = alpha = 4): video ``[B, 32, 224, 224, 3]`` -> trunk
``([B, 8, 14, 14, 1280], [B, 32, 14, 14, 128])`` -> stage ``[B, 2304]``;
flow ``[B, 8, 224, 224, 2]`` -> trunk ``[B, 8, 14, 14, 1024]`` -> stage ``[B, 2048]``.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mbcd_jax.encoders import resnet3d
from mbcd_jax.encoders.resnet3d import ResNet3dPart, global_avg_pool

Dtype = Any


def _pathways(depth, slow_base, channel_ratio, speed_ratio, fusion_kernel, stem, layers, pool,
              remat, dtype):
  # Configuration of mmaction2's slowfast_r{50,101}_8x8x1 backbone (see paper.slowfast_r101).
  slow = ResNet3dPart(depth, slow_base, stem=stem, layers=layers, conv1_kernel=(1, 7, 7),
                      inflate=(0, 0, 1, 1), lateral=stem or min(layers) < 4,
                      speed_ratio=speed_ratio, channel_ratio=channel_ratio,
                      fusion_kernel=fusion_kernel, pool=pool, remat=remat, dtype=dtype,
                      name='slow_path')
  fast = ResNet3dPart(depth, slow_base // channel_ratio, stem=stem, layers=layers,
                      conv1_kernel=(5, 7, 7), inflate=(1, 1, 1, 1), pool=pool, remat=remat,
                      dtype=dtype, name='fast_path')
  return slow, fast


class SlowFastTrunk(nn.Module):
  """Stem..layer3 of both pathways with the lateral fusions.

  ``video [B, T, H, W, 3] -> (slow [B, T/tau, H/16, W/16, 16*base + 32*base/beta],
  fast [B, T*alpha/tau, H/16, W/16, 16*base/beta])``.

  Attributes:
    depth: 50 or 101 (the paper: 101).
    slow_base_channels: slow stem width (64); the fast pathway has ``1/channel_ratio`` of it.
    resample_rate: tau, the slow pathway's temporal subsampling of the input.
    speed_ratio: alpha, fast frames per slow frame.
    channel_ratio: beta^-1.
    fusion_kernel: temporal kernel of the lateral convs.
    dtype: computation dtype.
  """
  depth: int = 101
  slow_base_channels: int = 64
  resample_rate: int = 4
  speed_ratio: int = 4
  channel_ratio: int = 8
  fusion_kernel: int = 7
  dtype: Dtype = jnp.float32

  def setup(self):
    self.slow_path, self.fast_path = _pathways(
        self.depth, self.slow_base_channels, self.channel_ratio, self.speed_ratio,
        self.fusion_kernel, True, (1, 2, 3), False, False, self.dtype)

  def __call__(self, x):
    x = x.astype(self.dtype)
    t = x.shape[1]
    # F.interpolate(mode='nearest', scale_factor=1/r) keeps frames 0, r, 2r, ... (floor(T/r)).
    r_slow = self.resample_rate
    r_fast = self.resample_rate // self.speed_ratio
    x_slow = self.slow_path.run_stem(x[:, :(t // r_slow) * r_slow:r_slow])
    x_fast = self.fast_path.run_stem(x[:, :(t // r_fast) * r_fast:r_fast])
    x_slow = jnp.concatenate([x_slow, self.slow_path.run_lateral(0, x_fast)], axis=-1)
    for i in (1, 2, 3):
      x_slow = self.slow_path.run_layer(i, x_slow)
      x_fast = self.fast_path.run_layer(i, x_fast)
      x_slow = jnp.concatenate([x_slow, self.slow_path.run_lateral(i, x_fast)], axis=-1)
    return x_slow, x_fast


class SlowFastStage(nn.Module):
  """layer4 of both pathways + global average pools. ``(slow, fast) -> [B, 8*base*(1+1/beta)]``.

  ``return_maps`` also returns the two layer4 outputs ``(slow, fast)``; ``perturb`` (optional)
  maps that pair before the pools (DSU: one coin for both pathways, as the reference).
  """
  depth: int = 101
  slow_base_channels: int = 64
  channel_ratio: int = 8
  remat: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, feats, return_maps: bool = False, perturb=None):
    x_slow, x_fast = feats
    slow, fast = _pathways(self.depth, self.slow_base_channels, self.channel_ratio, 8, 5,
                           False, (4,), False, self.remat, self.dtype)
    y_slow, y_fast = slow(x_slow), fast(x_fast)
    if perturb is not None:
      y_slow, y_fast = perturb((y_slow, y_fast))
    pooled = jnp.concatenate([global_avg_pool(y_fast), global_avg_pool(y_slow)], axis=-1)
    return (pooled, (y_slow, y_fast)) if return_maps else pooled


def slowfast_feature_dim(slow_base_channels: int = 64, channel_ratio: int = 8) -> int:
  slow = slow_base_channels * 8 * resnet3d.EXPANSION  # layer4 planes * expansion
  return slow + slow // channel_ratio


def slowonly_parts(depth=50, base_channels=64, remat=False, dtype=jnp.float32):
  """(trunk, stage) of mmaction2 ``ResNet3dSlowOnly`` as configured for the 8x8 flow model
  (conv1 (1,7,7), no temporal strides, inflate (0,0,1,1), no pool2).

  ``flow [B, T, H, W, 2] -> [B, T, H/16, W/16, 16*base] -> [B, 32*base]``.
  """
  common = dict(depth=depth, base_channels=base_channels, conv1_kernel=(1, 7, 7),
                inflate=(0, 0, 1, 1), with_pool2=False, dtype=dtype)
  trunk = ResNet3dPart(stem=True, layers=(1, 2, 3), **common)
  stage = ResNet3dPart(stem=False, layers=(4,), pool=True, remat=remat, **common)
  return trunk, stage
