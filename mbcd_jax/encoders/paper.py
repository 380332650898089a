"""The paper's encoders (those of SimMMDG and the MBCD port), registered for ``encoders.build``.

=====================  ===============================  ======================  =========
name                   PyTorch original                 input                   feature
=====================  ===============================  ======================  =========
``slowfast_r101``      mmaction2 ResNet3dSlowFast R101  video [B,32,224,224,3]  2304
``slowonly_r50_flow``  mmaction2 ResNet3dSlowOnly R50   flow  [B,8,224,224,2]   2048
``vggsound_r18``       VGGSound AVENet ResNet-18        audio [B,257,1004,1]    512
=====================  ===============================  ======================  =========

Each splits into a frozen trunk (stem..layer3) and a trainable stage (layer4 + global average
pool). Common kwargs:

* ``dtype``: ``'float32'`` (default) or ``'bfloat16'`` computation; parameters and BN
  statistics stay float32, the pooled feature is float32.
* ``remat``: rematerialise each layer4 block in the backward pass (less memory, ~1 extra
  forward of layer4).

Pretrained weights: convert once with ``python -m mbcd_jax.encoders.convert`` and load with
``mbcd_jax.encoders.convert.load_pretrained``.

BatchNorm (``mbcd_jax.encoders.batchnorm``) runs on running statistics by default; with
``config.model.bn_mode='port'`` the train step runs every BN of both parts on batch statistics
and updates the running statistics, as the port's ``model.train(True)`` does.

Every keyword argument of a factory is a command-line setting
(``--config.model.encoders.video.resample_rate=4``; ``mbcd_jax/configs/hac.py`` declares them
all). A converted checkpoint records the settings it was converted with, and
``convert.load_pretrained`` refuses it for an encoder built with other settings
(``COMPUTE_ONLY`` ones excepted).
"""
from mbcd_jax.encoders import EncoderDef, register
from mbcd_jax.encoders import audio_resnet, slowfast
from mbcd_jax.encoders.resnet3d import as_dtype


# Settings that change only how the network is computed, not what it computes: a converted
# checkpoint may be loaded whatever their value.
COMPUTE_ONLY = ('remat', 'dtype')


@register('slowfast_r101')
def slowfast_r101(depth=101, slow_base_channels=64, resample_rate=4, speed_ratio=4,
                  channel_ratio=8, fusion_kernel=7, remat=False, dtype='float32'):
  """mmaction2's ``slowfast_r101_8x8x1_256e_kinetics400_rgb`` backbone (the released checkpoint
  ``slowfast_r101_8x8x1_256e_kinetics400_rgb_20210218-0dd54025.pth``).

  The defaults mirror that config's ``ResNet3dSlowFast``: ``resample_rate=4`` (tau),
  ``speed_ratio=4`` (alpha), ``channel_ratio=8`` (1/beta); slow pathway ``depth=101``,
  ``lateral=True``, ``fusion_kernel=7``, ``conv1_kernel=(1, 7, 7)``, ``conv1_stride_t=1``,
  ``pool1_stride_t=1``, ``inflate=(0, 0, 1, 1)``, ``dilations=(1, 1, 1, 1)``; fast pathway
  ``depth=101``, ``base_channels=8`` (= 64 / channel_ratio), ``conv1_kernel=(5, 7, 7)``,
  ``conv1_stride_t=1``, ``pool1_stride_t=1`` and ``ResNet3d``'s default ``inflate=(1, 1, 1, 1)``;
  both: spatial strides (1, 2, 2, 2), temporal strides (1, 1, 1, 1), style 'pytorch', inflate
  style '3x1x1', no non-local blocks, lateral convs without norm/activation, BN eps 1e-5. On
  that config's 32-frame clip the slow pathway sees frames 0, 4, ..., 28 (8 frames) and the
  fast pathway all 32. (``resample_rate=8, speed_ratio=8, fusion_kernel=5`` is the 4x16
  config: its lateral kernels are (5, 1, 1), so the 8x8 checkpoint does not fit it.)

  Args:
    depth: 50 or 101 blocks layout; 50 only for reduced tests.
    slow_base_channels: slow stem width; fast width is ``slow_base_channels // channel_ratio``.
    resample_rate: input frames per slow-pathway frame (tau).
    speed_ratio: fast frames per slow frame (alpha); fast pathway stride
      ``resample_rate // speed_ratio`` input frames.
    channel_ratio: slow / fast channel ratio (1/beta).
    fusion_kernel: temporal kernel of the fast->slow lateral convs, in fast frames.
    remat / dtype: see the module docstring (compute only).
  """
  dt = as_dtype(dtype)
  trunk = slowfast.SlowFastTrunk(depth, slow_base_channels, resample_rate, speed_ratio,
                                 channel_ratio, fusion_kernel, dt)
  stage = slowfast.SlowFastStage(depth, slow_base_channels, channel_ratio, remat, dt)
  return EncoderDef(trunk, stage, slowfast.slowfast_feature_dim(slow_base_channels,
                                                                channel_ratio))


@register('slowonly_r50_flow')
def slowonly_r50_flow(depth=50, base_channels=64, remat=False, dtype='float32'):
  """mmaction2's ``slowonly_r50_8x8x1_256e_kinetics400_flow`` backbone (checkpoint
  ``slowonly_r50_8x8x1_256e_kinetics400_flow_20200704-6b384243.pth``).

  Mirrors that config's ``ResNet3dSlowOnly``: ``depth=50``, ``in_channels=2`` (read off the
  input here), ``lateral=False``, ``conv1_kernel=(1, 7, 7)``, ``conv1_stride_t=1``,
  ``pool1_stride_t=1``, ``inflate=(0, 0, 1, 1)``, ``with_pool2=False``, base channels 64,
  spatial strides (1, 2, 2, 2), temporal strides (1, 1, 1, 1), style 'pytorch', inflate style
  '3x1x1'. No temporal subsampling: every input frame reaches layer4.

  Args:
    depth: 50 (the checkpoint) or 101.
    base_channels: stem width (64); reduced only in tests.
    remat / dtype: compute only.
  """
  trunk, stage = slowfast.slowonly_parts(depth, base_channels, remat, as_dtype(dtype))
  return EncoderDef(trunk, stage, base_channels * 32)


@register('vggsound_r18')
def vggsound_r18(width=64, remat=False, dtype='float32'):
  """VGGSound's audio ResNet-18 (``AVENet.audnet`` = ``resnet18(pool='avgpool')``: BasicBlock
  x [2, 2, 2, 2], 1-channel 7x7/2 stem, 3x3/2 max-pool, widths 64-128-256-512) on
  ``[B, F, S, 1]`` log-spectrograms; checkpoint ``vggsound_avgpool.pth.tar``.

  Args:
    width: layer1 width (64 in VGGSound, which hard-codes it); reduced only in tests.
    remat / dtype: compute only.
  """
  dt = as_dtype(dtype)
  return EncoderDef(audio_resnet.AudioResNetTrunk(width=width, dtype=dt),
                    audio_resnet.AudioResNetStage(width=width, remat=remat, dtype=dt),
                    width * 8)


__all__ = ['COMPUTE_ONLY', 'slowfast_r101', 'slowonly_r50_flow', 'vggsound_r18']
