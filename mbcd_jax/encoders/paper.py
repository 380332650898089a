"""The paper's encoders (method.md section 6), registered for ``encoders.build``.

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
:func:`load_pretrained` (re-exported from ``convert``).

BatchNorm (``mbcd_jax.batchnorm``) runs on running statistics by default; with
``config.model.bn_mode='port'`` the train step runs every BN of both parts on batch statistics
and updates the running statistics, as the port's ``model.train(True)`` does.
"""
from mbcd_jax.encoders import EncoderDef, register
from mbcd_jax.encoders import audio_resnet, slowfast
from mbcd_jax.encoders.convert import load_pretrained  # pylint: disable=unused-import
from mbcd_jax.encoders.resnet3d import as_dtype


@register('slowfast_r101')
def slowfast_r101(depth=101, slow_base_channels=64, resample_rate=8, speed_ratio=8,
                  channel_ratio=8, fusion_kernel=5, remat=False, dtype='float32'):
  """mmaction2 slowfast_r101_8x8x1_256e_kinetics400_rgb backbone. ``depth`` and
  ``slow_base_channels`` exist to test the same code at a reduced size."""
  dt = as_dtype(dtype)
  trunk = slowfast.SlowFastTrunk(depth, slow_base_channels, resample_rate, speed_ratio,
                                 channel_ratio, fusion_kernel, dt)
  stage = slowfast.SlowFastStage(depth, slow_base_channels, channel_ratio, remat, dt)
  return EncoderDef(trunk, stage, slowfast.slowfast_feature_dim(slow_base_channels,
                                                                channel_ratio))


@register('slowonly_r50_flow')
def slowonly_r50_flow(depth=50, base_channels=64, remat=False, dtype='float32'):
  """mmaction2 slowonly_r50_8x8x1_256e_kinetics400_flow backbone (2-channel input)."""
  trunk, stage = slowfast.slowonly_parts(depth, base_channels, remat, as_dtype(dtype))
  return EncoderDef(trunk, stage, base_channels * 32)


@register('vggsound_r18')
def vggsound_r18(width=64, remat=False, dtype='float32'):
  """VGGSound's audio ResNet-18 (``AVENet.audnet``) on ``[B, F, S, 1]`` log-spectrograms."""
  dt = as_dtype(dtype)
  return EncoderDef(audio_resnet.AudioResNetTrunk(width=width, dtype=dt),
                    audio_resnet.AudioResNetStage(width=width, remat=remat, dtype=dt),
                    width * 8)


__all__ = ['slowfast_r101', 'slowonly_r50_flow', 'vggsound_r18', 'load_pretrained']
