"""Small CPU-friendly encoders for the embedded synthetic benchmark.

XLA on the CPU is very slow at the backward pass of strided 3-D convolutions, so video and flow
use frame-wise 2-D convolutions in the trunk and a factorised temporal mix (a dense layer over
neighbouring frames, i.e. a (3,1,1) convolution written as a matmul) in the trainable stage.
The default widths put ~80% of the forward FLOPs in the frozen trunk, like layer1-3 vs layer4
of the paper's ResNets.
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mbcd_jax.encoders import EncoderDef, register


class FrameTrunk(nn.Module):
  """Frame-wise 2-D conv trunk. ``[B, T, H, W, C] -> [B, T, H', W', widths[-1]]``."""
  widths: Sequence[int]
  strides: Sequence[int]

  @nn.compact
  def __call__(self, x):
    b, t = x.shape[:2]
    y = x.reshape((b * t,) + x.shape[2:])
    for w, s in zip(self.widths, self.strides):
      y = nn.relu(nn.Conv(w, (3, 3), strides=(s, s), padding='SAME')(y))
    return y.reshape((b, t) + y.shape[1:])


class FrameStage(nn.Module):
  """Temporal mix over (t-1, t, t+1), strided spatial conv, global mean pool. ``-> [B, width]``."""
  width: int
  temporal: bool = True

  @nn.compact
  def __call__(self, f):
    if self.temporal and f.shape[1] > 1:
      pad = jnp.pad(f, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)), mode='edge')
      f = jnp.concatenate([pad[:, :-2], pad[:, 1:-1], pad[:, 2:]], axis=-1)
      f = nn.relu(nn.Dense(f.shape[-1] // 3)(f))
    b, t = f.shape[:2]
    y = f.reshape((b * t,) + f.shape[2:])
    y = nn.relu(nn.Conv(self.width, (3, 3), strides=(2, 2), padding='SAME')(y))
    return y.reshape(b, -1, self.width).mean(axis=1)


class SpecTrunk(nn.Module):
  """2-D conv trunk over a log-spectrogram. ``[B, F, S, 1] -> [B, F', S', widths[-1]]``."""
  widths: Sequence[int]
  strides: Sequence[int]

  @nn.compact
  def __call__(self, x):
    for w, s in zip(self.widths, self.strides):
      x = nn.relu(nn.Conv(w, (3, 3), strides=(s, s), padding='SAME')(x))
    return x


class SpecStage(nn.Module):
  """Strided conv then global mean pool. ``-> [B, width]``."""
  width: int

  @nn.compact
  def __call__(self, f):
    y = nn.relu(nn.Conv(self.width, (3, 3), strides=(2, 2), padding='SAME')(f))
    return y.reshape(y.shape[0], -1, self.width).mean(axis=1)


@register('frame_cnn')
def frame_cnn(trunk_widths=(32, 32, 48), trunk_strides=(1, 2, 2), width=64, temporal=True):
  """Video / flow encoder: frame-wise conv trunk + (2+1)-D trainable stage."""
  return EncoderDef(FrameTrunk(tuple(trunk_widths), tuple(trunk_strides)),
                    FrameStage(width, temporal), width)


@register('spec_cnn')
def spec_cnn(trunk_widths=(16, 32, 48), trunk_strides=(1, 2, 2), width=64):
  """Audio encoder over ``[B, F, S, 1]`` log-spectrograms."""
  return EncoderDef(SpecTrunk(tuple(trunk_widths), tuple(trunk_strides)), SpecStage(width), width)
