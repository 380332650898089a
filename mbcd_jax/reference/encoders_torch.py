"""Faithful PyTorch definitions of the paper's encoders (test / benchmark use only).

Written from mmaction2 1.2 (``mmaction/models/backbones/resnet3d.py``, ``resnet3d_slowfast.py``,
``resnet3d_slowonly.py``) and VGGSound (``models/resnet.py``, ``model.py``), keeping their module
names so that ``state_dict`` keys are identical to the originals' (checked against the real
mmaction2 classes in ``test_torch_reference.py`` when mmaction2 is importable). Only what the
paper's configurations use is implemented: Bottleneck blocks, style 'pytorch', inflate style
'3x1x1', no dilation, no non-local blocks, lateral convs without norm.
"""
import os
import sys
import types

import torch
from torch import nn
import torch.nn.functional as F

ARCH_BLOCKS = {14: (1, 1, 1, 1), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}   # 14: CI only


class ConvModule(nn.Module):
  """mmcv ConvModule (conv -> bn -> relu) with mmcv's child names ``conv`` / ``bn``."""

  def __init__(self, cin, cout, kernel, stride=1, padding=0, norm=True, act=True):
    super().__init__()
    self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
    if norm:
      self.bn = nn.BatchNorm3d(cout)
    self.with_norm, self.act = norm, act

  def forward(self, x):
    x = self.conv(x)
    if self.with_norm:
      x = self.bn(x)
    return F.relu(x) if self.act else x


class Bottleneck3d(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, spatial_stride=1, temporal_stride=1, downsample=None,
               inflate=True):
    super().__init__()
    k1, p1 = ((3, 1, 1), (1, 0, 0)) if inflate else ((1, 1, 1), (0, 0, 0))
    self.conv1 = ConvModule(inplanes, planes, k1, 1, p1)
    self.conv2 = ConvModule(planes, planes, (1, 3, 3),
                            (temporal_stride, spatial_stride, spatial_stride), (0, 1, 1))
    self.conv3 = ConvModule(planes, planes * 4, 1, act=False)
    self.downsample = downsample

  def forward(self, x):
    out = self.conv3(self.conv2(self.conv1(x)))
    identity = x if self.downsample is None else self.downsample(x)
    return F.relu(out + identity)


def make_res_layer(inplanes, planes, blocks, spatial_stride, temporal_stride, inflate):
  downsample = None
  if spatial_stride != 1 or inplanes != planes * 4:
    downsample = ConvModule(inplanes, planes * 4, 1,
                            (temporal_stride, spatial_stride, spatial_stride), act=False)
  layers = [Bottleneck3d(inplanes, planes, spatial_stride, temporal_stride, downsample,
                         bool(inflate))]
  layers += [Bottleneck3d(planes * 4, planes, 1, 1, None, bool(inflate))
             for _ in range(1, blocks)]
  return nn.Sequential(*layers)


class ResNet3dPathway(nn.Module):
  """mmaction2 ResNet3dPathway (== ResNet3d when ``lateral`` is False)."""

  def __init__(self, depth=50, in_channels=3, base_channels=64, conv1_kernel=(1, 7, 7),
               conv1_stride_t=1, pool1_stride_t=1, inflate=(0, 0, 1, 1),
               spatial_strides=(1, 2, 2, 2), temporal_strides=(1, 1, 1, 1), with_pool2=True,
               lateral=False, speed_ratio=8, channel_ratio=8, fusion_kernel=5):
    super().__init__()
    self.lateral, self.with_pool2 = lateral, with_pool2
    self.conv1 = ConvModule(in_channels, base_channels, conv1_kernel,
                            (conv1_stride_t, 2, 2), tuple((k - 1) // 2 for k in conv1_kernel))
    self.maxpool = nn.MaxPool3d((1, 3, 3), (pool1_stride_t, 2, 2), (0, 1, 1))
    self.pool2 = nn.MaxPool3d((2, 1, 1), (2, 1, 1))
    # mmaction2's _calculate_lateral_inplanes (expansion 4): the slow input of stage i is
    # widened by lateral_infl(2) * planes_i / channel_ratio.
    lateral_inplanes = [
        (base_channels * 2 ** i * 2 ** (i > 0)) * 2 // channel_ratio if lateral else 0
        for i in range(4)]
    lat = lambda c: ConvModule(c // channel_ratio, c * 2 // channel_ratio,
                               (fusion_kernel, 1, 1), (speed_ratio, 1, 1),
                               ((fusion_kernel - 1) // 2, 0, 0), norm=False, act=False)
    if lateral:
      self.conv1_lateral = lat(base_channels)
    inplanes = base_channels
    self.res_layers = []
    for i, n in enumerate(ARCH_BLOCKS[depth]):
      planes = base_channels * 2 ** i
      layer = make_res_layer(inplanes + lateral_inplanes[i], planes, n, spatial_strides[i],
                             temporal_strides[i], inflate[i])
      inplanes = planes * 4
      self.add_module(f'layer{i + 1}', layer)
      self.res_layers.append(f'layer{i + 1}')
      if lateral and i != 3:
        self.add_module(f'layer{i + 1}_lateral', lat(inplanes))

  def forward(self, x):
    """ResNet3d.forward (used by SlowOnly): stem, layers, optional pool2 after layer1."""
    x = self.maxpool(self.conv1(x))
    for i, name in enumerate(self.res_layers):
      x = getattr(self, name)(x)
      if i == 0 and self.with_pool2:
        x = self.pool2(x)
    return x


class ResNet3dSlowOnly(ResNet3dPathway):
  """mmaction2 ResNet3dSlowOnly as ``slowonly_r50_8x8x1_256e_kinetics400_flow`` builds it:
  ``depth=50``, ``in_channels=2``, ``lateral=False``, ``conv1_kernel=(1, 7, 7)``,
  ``conv1_stride_t=1``, ``pool1_stride_t=1``, ``inflate=(0, 0, 1, 1)``, ``with_pool2=False``."""

  def __init__(self, depth=50, in_channels=2, base_channels=64):
    super().__init__(depth=depth, in_channels=in_channels, base_channels=base_channels,
                     conv1_kernel=(1, 7, 7), inflate=(0, 0, 1, 1), with_pool2=False)

  def forward_split(self, x):
    """-> (trunk output after layer3, layer4 output, pooled [B, C])."""
    x = self.maxpool(self.conv1(x))
    for name in self.res_layers[:3]:
      x = getattr(self, name)(x)
    y = self.layer4(x)
    return x, y, y.mean(dim=(2, 3, 4))


class ResNet3dSlowFast(nn.Module):
  """mmaction2 ResNet3dSlowFast as ``slowfast_r101_8x8x1_256e_kinetics400_rgb`` builds it.

  Config values mirrored (defaults): ``resample_rate=4``, ``speed_ratio=4``,
  ``channel_ratio=8``; slow pathway ``depth=101``, ``lateral=True``, ``fusion_kernel=7``,
  ``conv1_kernel=(1, 7, 7)``, ``conv1_stride_t=1``, ``pool1_stride_t=1``,
  ``inflate=(0, 0, 1, 1)``; fast pathway ``depth=101``, ``lateral=False``,
  ``base_channels=8`` (``slow_base // channel_ratio``), ``conv1_kernel=(5, 7, 7)``,
  ``conv1_stride_t=1``, ``pool1_stride_t=1``, ``inflate=(1, 1, 1, 1)`` (ResNet3d's default);
  spatial strides (1, 2, 2, 2), temporal strides (1, 1, 1, 1), no dilation, lateral convs
  without norm. ``depth`` and ``slow_base`` are reducible for tests.
  """

  def __init__(self, depth=101, slow_base=64, resample_rate=4, speed_ratio=4, channel_ratio=8,
               fusion_kernel=7):
    super().__init__()
    self.resample_rate, self.speed_ratio = resample_rate, speed_ratio
    self.slow_path = ResNet3dPathway(depth, 3, slow_base, (1, 7, 7), inflate=(0, 0, 1, 1),
                                     lateral=True, speed_ratio=speed_ratio,
                                     channel_ratio=channel_ratio, fusion_kernel=fusion_kernel)
    self.fast_path = ResNet3dPathway(depth, 3, slow_base // channel_ratio, (5, 7, 7),
                                     inflate=(1, 1, 1, 1), lateral=False)

  def trunk(self, x):
    """SimMMDG's get_feature: both pathways through layer3 and layer3_lateral."""
    x_slow = F.interpolate(x, mode='nearest', scale_factor=(1.0 / self.resample_rate, 1., 1.))
    x_slow = self.slow_path.maxpool(self.slow_path.conv1(x_slow))
    x_fast = F.interpolate(x, mode='nearest',
                           scale_factor=(1.0 / (self.resample_rate // self.speed_ratio), 1., 1.))
    x_fast = self.fast_path.maxpool(self.fast_path.conv1(x_fast))
    x_slow = torch.cat((x_slow, self.slow_path.conv1_lateral(x_fast)), dim=1)
    for i in range(3):
      x_slow = getattr(self.slow_path, f'layer{i + 1}')(x_slow)
      x_fast = getattr(self.fast_path, f'layer{i + 1}')(x_fast)
      x_slow = torch.cat((x_slow, getattr(self.slow_path, f'layer{i + 1}_lateral')(x_fast)), 1)
    return x_slow, x_fast

  def forward_split(self, x):
    """-> ((slow, fast) trunk, (slow, fast) layer4, pooled cat(fast, slow) as SlowFastHead)."""
    xs, xf = self.trunk(x)
    ys, yf = self.slow_path.layer4(xs), self.fast_path.layer4(xf)
    pooled = torch.cat((yf.mean(dim=(2, 3, 4)), ys.mean(dim=(2, 3, 4))), dim=1)
    return (xs, xf), (ys, yf), pooled

  def forward(self, x):
    return self.forward_split(x)[1]


# ------------------------------------------------------------------ VGGSound ResNet-18
class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    identity = x if self.downsample is None else self.downsample(x)
    return F.relu(out + identity)


class ResNet18Audio(nn.Module):
  """VGGSound models/resnet.py ResNet(BasicBlock, [2,2,2,2], pool='avgpool'), 1-channel input."""

  def __init__(self, num_classes=309, width=64):
    super().__init__()
    self.inplanes = width
    self.conv1 = nn.Conv2d(1, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    for i in range(4):
      self.add_module(f'layer{i + 1}', self._make_layer(width * 2 ** i, 2, 1 if i == 0 else 2))
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(width * 8, num_classes)

  def _make_layer(self, planes, blocks, stride):
    downsample = None
    if stride != 1 or self.inplanes != planes:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes))
    layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes
    layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward_split(self, x):
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    x = self.layer3(self.layer2(self.layer1(x)))
    y = self.layer4(x)
    return x, y, self.avgpool(y).flatten(1)


class AVENet(nn.Module):
  """VGGSound model.py AVENet: the state_dict keys are ``audnet.*``."""

  def __init__(self, num_classes=309, width=64):
    super().__init__()
    self.audnet = ResNet18Audio(num_classes, width)


# ------------------------------------------------------------------ helpers
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random conv weights (He-normal, so activations keep their scale through depth) and random
  BN affine parameters AND running statistics; then eval mode."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (nn.Conv2d, nn.Conv3d)):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
      elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
        n = m.num_features
        m.weight.copy_(0.4 + 0.4 * torch.rand(n, generator=g))
        m.bias.copy_(0.1 * torch.randn(n, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
        m.running_var.copy_(0.5 + torch.rand(n, generator=g))
      elif isinstance(m, nn.Linear):
        m.weight.copy_(0.01 * torch.randn(m.weight.shape, generator=g))
        m.bias.zero_()
  return model.eval()


def import_mmaction_backbones():
  """Imports mmaction2's real ResNet3dSlowFast / ResNet3dSlowOnly, or returns None.

  The PyPI mmaction2 1.2 package cannot import ``mmaction.models`` (its ``localizers/drn`` is
  missing from the wheel), so the two package modules are stubbed and only the backbone files
  are imported.
  """
  try:
    import mmaction  # pylint: disable=g-import-not-at-top
  except Exception:  # pylint: disable=broad-except
    return None
  root = os.path.dirname(mmaction.__file__)
  for name in ('mmaction.models', 'mmaction.models.backbones'):
    if name not in sys.modules:
      mod = types.ModuleType(name)
      mod.__path__ = [os.path.join(root, *name.split('.')[1:])]
      sys.modules[name] = mod
  try:
    from mmaction.models.backbones import resnet3d_slowfast, resnet3d_slowonly  # pylint: disable=g-import-not-at-top
  except Exception:  # pylint: disable=broad-except
    return None
  return resnet3d_slowfast.ResNet3dSlowFast, resnet3d_slowonly.ResNet3dSlowOnly
