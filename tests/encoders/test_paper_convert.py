"""Converter: loud errors, file round trip, CLI. The small VGGSound net keeps these fast."""
import json
import os
import sys

import jax
import numpy as np
import pytest

from mbcd_jax.encoders import convert, paper

import _trees  # pylint: disable=g-import-not-at-top,wrong-import-position


def _vggsound_state_dict(seed=0):
  """A VGGSound-layout state_dict built from the Flax variable shapes (no torch needed)."""
  rng = np.random.default_rng(seed)
  trunk, stage = convert.variable_shapes('vggsound_r18')
  sd = {}
  for (coll, *path, leaf), shape in {**trunk, **stage}.items():
    name = 'audnet.' + '.'.join(path)
    if leaf == 'kernel':  # [*k, I, O] -> [O, I, *k]
      shape = (shape[-1], shape[-2]) + shape[:-2]
    torch_leaf = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
                  'var': 'running_var'}[leaf]
    sd[f'{name}.{torch_leaf}'] = rng.standard_normal(shape).astype(np.float32)
    if leaf == 'mean':
      sd[f'{name}.num_batches_tracked'] = np.array(7)
  sd['audnet.fc.weight'] = np.zeros((309, 512), np.float32)
  sd['audnet.fc.bias'] = np.zeros((309,), np.float32)
  return sd


def test_state_dict_converts_and_drops_head():
  sd = _vggsound_state_dict()
  trunk, stage = convert.convert_state_dict('vggsound_r18', sd)
  np.testing.assert_array_equal(stage['batch_stats']['layer4']['1']['bn2']['var'],
                                sd['audnet.layer4.1.bn2.running_var'])
  np.testing.assert_array_equal(trunk['params']['layer2']['0']['downsample']['0']['kernel'],
                                sd['audnet.layer2.0.downsample.0.weight'].transpose(2, 3, 1, 0))
  assert 'fc' not in trunk['params'] and 'fc' not in stage['params']


def test_errors_name_missing_unexpected_and_misshaped_keys():
  sd = _vggsound_state_dict()
  del sd['audnet.layer3.1.bn1.running_mean']
  sd['audnet.layer5.0.conv1.weight'] = np.zeros((8, 8, 3, 3), np.float32)
  sd['audnet.layer4.0.conv2.weight'] = np.zeros((512, 512, 1, 3), np.float32)
  with pytest.raises(convert.ConversionError) as e:
    convert.convert_state_dict('vggsound_r18', sd)
  msg = str(e.value)
  assert '1 missing' in msg and 'trunk:batch_stats/layer3/1/bn1/mean' in msg
  assert '1 unexpected' in msg and 'audnet.layer5.0.conv1.weight' in msg
  assert '1 mis-shaped' in msg and 'audnet.layer4.0.conv2.weight' in msg
  assert 'model wants (3, 3, 512, 512)' in msg


def test_wrong_architecture_is_rejected():
  """A ResNet-18 state_dict is not a half-width ResNet-18."""
  with pytest.raises(convert.ConversionError, match='mis-shaped'):
    convert.convert_state_dict('vggsound_r18', _vggsound_state_dict(), width=32)


def test_msgpack_round_trip_and_kind_check(tmp_path):
  trunk, stage = convert.convert_state_dict('vggsound_r18', _vggsound_state_dict())
  path = str(tmp_path / 'a.msgpack')
  convert.save(path, 'vggsound_r18', trunk, stage)
  t2, s2 = convert.load_pretrained('vggsound_r18', path)
  _trees.assert_trees_equal((t2, s2), (trunk, stage))
  with pytest.raises(convert.ConversionError, match="holds 'vggsound_r18' weights"):
    convert.load_pretrained('slowonly_r50_flow', path)
  with pytest.raises(convert.ConversionError,
                     match=r'width: file 64, encoder 32.*encoders\.audio\.width=64$'):
    convert.load_pretrained('vggsound_r18', path, width=32)


def test_cli_converts_a_torch_checkpoint(tmp_path):
  torch = pytest.importorskip('torch')
  sd = {k: torch.from_numpy(np.asarray(v)) for k, v in _vggsound_state_dict(1).items()}
  src = tmp_path / 'vggsound_avgpool.pth.tar'
  torch.save({'model_state_dict': sd, 'epoch': 3}, src)
  out = tmp_path / 'out' / 'vgg.msgpack'
  convert.main(['--kind=vggsound_r18', f'--torch_checkpoint={src}', f'--out={out}',
                '--encoder_kwargs=' + json.dumps({})])
  trunk, stage = convert.load_pretrained('vggsound_r18', str(out))
  np.testing.assert_array_equal(np.asarray(trunk['params']['conv1']['kernel']),
                                sd['audnet.conv1.weight'].numpy().transpose(2, 3, 1, 0))
  # The .pth can also be loaded directly.
  t2, _ = convert.load_pretrained('vggsound_r18', str(src))
  np.testing.assert_array_equal(np.asarray(t2['params']['conv1']['kernel']),
                                np.asarray(trunk['params']['conv1']['kernel']))


def test_8x8_checkpoint_into_4x16_settings_names_the_fusion_kernel():
  """The lateral convs are the only variables that tell the two SlowFast configs apart."""
  small = dict(depth=50, slow_base_channels=16)
  trunk, stage = convert.variable_shapes('slowfast_r101', **small)  # 8x8: fusion_kernel=7
  sd = {}
  for (coll, *path, leaf), shape in {**trunk, **stage}.items():
    if leaf == 'kernel':
      shape = (shape[-1], shape[-2]) + shape[:-2]
    torch_leaf = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
                  'mean': 'running_mean', 'var': 'running_var'}[leaf]
    sd['backbone.' + '.'.join(path) + '.' + torch_leaf] = np.zeros(shape, np.float32)
  assert sd['backbone.slow_path.conv1_lateral.conv.weight'].shape[2] == 7
  convert.convert_state_dict('slowfast_r101', sd, **small)  # fits the default settings
  with pytest.raises(convert.ConversionError) as e:
    convert.convert_state_dict('slowfast_r101', sd, fusion_kernel=5, **small)
  msg = str(e.value)
  assert '4 mis-shaped' in msg and 'layer3_lateral' in msg
  assert ("hint: the checkpoint's lateral convs have fusion_kernel=7 (mmaction2's 8x8x1 "
          'config: resample_rate=4, speed_ratio=4, fusion_kernel=7)') in msg
