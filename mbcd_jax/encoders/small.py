"""Small CPU-friendly encoders for the embedded synthetic benchmark.

XLA on the CPU is very slow at the backward pass of strided 3-D convolutions, so video and flow
use frame-wise 2-D convolutions in the trunk and a factorised temporal mix (a dense layer over
neighbouring frames, i.e. a (3,1,1) convolution written as a matmul) in the trainable stage.
The default widths put ~80% of the forward FLOPs in the frozen trunk, like layer1-3 vs layer4
of the paper's ResNets.

``bn=True`` puts a BatchNorm (``mbcd_jax.encoders.batchnorm``) after every conv, trunk and stage, so the
two BN modes of ``config.model.bn_mode`` can be compared on the embedded benchmark. Off by
default: the embedded benchmark's encoders carry no BN.

The stages take an optional ``perturb`` function, applied to the last feature map before the
pool (DSU in the train step's first pass).
"""
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mbcd_jax.encoders.batchnorm import BatchNorm
from mbcd_jax.encoders import EncoderDef, register


def _conv_bn_relu(y, width, stride, bn):
  # Without BN the conv keeps its bias (the original, BN-free encoders); with BN the bias
  # would be cancelled by the mean subtraction, as in the ResNets.
  y = nn.Conv(width, (3, 3), strides=(stride, stride), padding='SAME', use_bias=not bn)(y)
  if bn:
    y = BatchNorm()(y)
  return nn.relu(y)


class FrameTrunk(nn.Module):
  """Frame-wise 2-D conv trunk. ``[B, T, H, W, C] -> [B, T, H', W', widths[-1]]``."""
  widths: Sequence[int]
  strides: Sequence[int]
  bn: bool = False

  @nn.compact
  def __call__(self, x):
    b, t = x.shape[:2]
    y = x.reshape((b * t,) + x.shape[2:])
    for w, s in zip(self.widths, self.strides):
      y = _conv_bn_relu(y, w, s, self.bn)
    return y.reshape((b, t) + y.shape[1:])


class FrameStage(nn.Module):
  """Temporal mix over (t-1, t, t+1), strided spatial conv, global mean pool. ``-> [B, width]``."""
  width: int
  temporal: bool = True
  bn: bool = False

  @nn.compact
  def __call__(self, f, perturb: Callable | None = None):
    if self.temporal and f.shape[1] > 1:
      pad = jnp.pad(f, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)), mode='edge')
      f = jnp.concatenate([pad[:, :-2], pad[:, 1:-1], pad[:, 2:]], axis=-1)
      f = nn.Dense(f.shape[-1] // 3, use_bias=not self.bn)(f)
      if self.bn:
        f = BatchNorm()(f)
      f = nn.relu(f)
    b, t = f.shape[:2]
    y = f.reshape((b * t,) + f.shape[2:])
    y = _conv_bn_relu(y, self.width, 2, self.bn)
    if perturb is not None:   # statistics per clip, not per frame
      y = perturb(y.reshape((b, t) + y.shape[1:]))
    return y.reshape(b, -1, self.width).mean(axis=1)


class SpecTrunk(nn.Module):
  """2-D conv trunk over a log-spectrogram. ``[B, F, S, 1] -> [B, F', S', widths[-1]]``."""
  widths: Sequence[int]
  strides: Sequence[int]
  bn: bool = False

  @nn.compact
  def __call__(self, x):
    for w, s in zip(self.widths, self.strides):
      x = _conv_bn_relu(x, w, s, self.bn)
    return x


class SpecStage(nn.Module):
  """Strided conv then global mean pool. ``-> [B, width]``."""
  width: int
  bn: bool = False

  @nn.compact
  def __call__(self, f, perturb: Callable | None = None):
    y = _conv_bn_relu(f, self.width, 2, self.bn)
    if perturb is not None:
      y = perturb(y)
    return y.reshape(y.shape[0], -1, self.width).mean(axis=1)


@register('frame_cnn')
def frame_cnn(trunk_widths=(32, 32, 48), trunk_strides=(1, 2, 2), width=64, temporal=True,
              bn=False):
  """Video / flow encoder: frame-wise conv trunk + (2+1)-D trainable stage."""
  return EncoderDef(FrameTrunk(tuple(trunk_widths), tuple(trunk_strides), bn),
                    FrameStage(width, temporal, bn), width)


@register('spec_cnn')
def spec_cnn(trunk_widths=(16, 32, 48), trunk_strides=(1, 2, 2), width=64, bn=False):
  """Audio encoder over ``[B, F, S, 1]`` log-spectrograms."""
  return EncoderDef(SpecTrunk(tuple(trunk_widths), tuple(trunk_strides), bn),
                    SpecStage(width, bn), width)
