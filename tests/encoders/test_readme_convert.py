"""The README's convert commands, run exactly as written, on checkpoints in the released layouts;
the results load into the paper config's encoders; other settings are refused with the fix.

The README commands name full-size checkpoints and take no size arguments, so the fake
checkpoints here are full size (random weights of ``encoders_torch``'s full-size networks,
whose state_dict keys and shapes ``test_torch_reference.py`` / ``test_golden.py`` pin to the
originals): about 10 s per command, most of it writing and reading the files.
"""
import json
import os
import re
import shlex
import subprocess
import sys
import types

import ml_collections
import numpy as np
import pytest

from conftest import ROOT
from mbcd_jax import models
from mbcd_jax.encoders import convert

torch = pytest.importorskip('torch')
from mbcd_jax.reference import encoders_torch as ref

MODALITY = {'slowfast_r101': 'video', 'slowonly_r50_flow': 'flow', 'vggsound_r18': 'audio'}


def _readme_commands() -> list[str]:
  """Shell commands (continuations joined) of the README section "Paper-scale encoders"."""
  text = open(os.path.join(ROOT, 'README.md')).read()
  section = text.split('## Paper-scale encoders', 1)[1].split('\n## ', 1)[0]
  block = re.search(r'```bash\n(.*?)```', section, re.S).group(1)
  return [c.strip() for c in block.replace('\\\n', ' ').splitlines() if c.strip()]


def _hac_config():
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('hac', os.path.join(ROOT, 'configs', 'hac.py'))
  hac = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(hac)
  return hac


def _released_checkpoint(kind: str, path: str) -> dict:
  """Writes a checkpoint in the released file's layout; returns its backbone state_dict."""
  torch.manual_seed(0)
  if kind == 'vggsound_r18':
    # vggsound_avgpool.pth.tar: {'model_state_dict': AVENet.state_dict()} -> 'audnet.*',
    # including the 309-class 'audnet.fc.*' and BN 'num_batches_tracked'.
    sd = ref.AVENet().state_dict()
    torch.save({'epoch': 1, 'model_state_dict': sd}, path)
    return {k[len('audnet.'):]: v for k, v in sd.items()}
  # mmaction2 (mmcv runner + publish_model): {'meta': {...}, 'state_dict': {'backbone.*',
  # 'cls_head.fc_cls.*'}}.
  if kind == 'slowfast_r101':
    net, head_dim = ref.ResNet3dSlowFast(depth=101), 2304
  else:
    net, head_dim = ref.ResNet3dSlowOnly(depth=50, in_channels=2), 2048
  for m in net.modules():  # non-trivial BN statistics, so a misplaced one would show
    if isinstance(m, torch.nn.BatchNorm3d):
      m.running_mean.normal_()
      m.running_var.uniform_(0.5, 1.5)
  sd = {f'backbone.{k}': v for k, v in net.state_dict().items()}
  sd['cls_head.fc_cls.weight'] = torch.zeros(400, head_dim)
  sd['cls_head.fc_cls.bias'] = torch.zeros(400)
  meta = {'mmcv_version': '1.2.7', 'time': 'Thu Feb 18 00:00:00 2021', 'epoch': 256,
          'iter': 0, 'seed': 0, 'env_info': 'sys.platform: linux'}
  torch.save({'meta': meta, 'state_dict': sd}, path)
  return net.state_dict()


def _torch_name(flax_path: tuple) -> str:
  coll, *path, leaf = flax_path
  leaf = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
          'var': 'running_var'}[leaf]
  return '.'.join(path + [leaf])


@pytest.mark.parametrize('kind', sorted(MODALITY))
def test_readme_convert_command_then_config_loads_it(kind, tmp_path):
  commands = _readme_commands()
  (cmd,) = [c for c in commands if c.startswith('python -m mbcd_jax.encoders.convert')
            and f'--kind={kind}' in c]
  args = shlex.split(cmd)
  ckpt_name = next(a.split('=', 1)[1] for a in args if a.startswith('--torch_checkpoint='))
  out_name = next(a.split('=', 1)[1] for a in args if a.startswith('--out='))
  want = _released_checkpoint(kind, str(tmp_path / ckpt_name))
  # Exactly the README's command line, run where the checkpoint lies.
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'PYTHONPATH': os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')])}
  proc = subprocess.run([sys.executable] + args[1:], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.path.exists(tmp_path / out_name)

  # The README's training command points the config at the converted files.
  (train_cmd,) = [c for c in commands if c.startswith('python -m mbcd_jax.main')]
  c = _hac_config().get_config()
  m = MODALITY[kind]
  for a in shlex.split(train_cmd):
    if a.startswith('--config.model.encoders.'):
      key, value = a[len('--config.model.encoders.'):].split('=', 1)
      mod, field = key.split('.')
      c.model.encoders[mod][field] = value
  assert c.model.encoders[m].pretrained == out_name
  c.model.encoders[m].pretrained = str(tmp_path / out_name)
  # models.load_pretrained only needs the containers it fills (a full-size init is too slow).
  model = types.SimpleNamespace(modalities=(m,), freeze_trunk=True)
  params, frozen = models.load_pretrained(model, c.model, {'encoders': {m: {}}},
                                          {'encoders': {m: {}}})
  loaded = {('trunk',) + k: v for k, v in _flat(frozen['encoders'][m]['trunk']).items()}
  loaded.update({('stage', 'params') + k: v
                 for k, v in _flat(params['encoders'][m]['stage']).items()})
  loaded.update({('stage',) + k: v for k, v in _flat(frozen['encoders'][m]['stage']).items()})
  assert len(loaded) == sum(1 for k in want if not k.endswith('num_batches_tracked')
                            and not k.startswith('fc.'))
  for key, value in loaded.items():
    w = want[_torch_name(key[1:])].numpy()
    if w.ndim > 1:
      w = np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))
    np.testing.assert_array_equal(np.asarray(value), w, err_msg='/'.join(key))


def _flat(tree):
  import flax  # pylint: disable=g-import-not-at-top
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


def test_file_converted_with_other_settings_is_refused(tmp_path):
  """A 4x16-settings file into the (8x8) config encoder and the other way round: one line
  naming every differing setting, both values and the flags that fix it."""
  small = dict(depth=50, slow_base_channels=16)
  file_kw = dict(small, resample_rate=8, speed_ratio=8, fusion_kernel=5)
  shapes_t, shapes_s = convert.variable_shapes('slowfast_r101', **file_kw)
  zeros = lambda s: _unflat({k: np.zeros(v, np.float32) for k, v in s.items()})
  path = str(tmp_path / 'sf.msgpack')
  convert.save(path, 'slowfast_r101', zeros(shapes_t), zeros(shapes_s), file_kw)
  c = _hac_config().get_config()
  ec = c.model.encoders.video
  ec.depth, ec.slow_base_channels, ec.pretrained = 50, 16, path
  model = types.SimpleNamespace(modalities=('video',), freeze_trunk=True)
  empty = lambda: {'encoders': {'video': {}}}
  with pytest.raises(convert.ConversionError) as e:
    models.load_pretrained(model, c.model, empty(), empty())
  msg = str(e.value)
  assert '\n' not in msg
  for key, fv, ev in (('resample_rate', 8, 4), ('speed_ratio', 8, 4), ('fusion_kernel', 5, 7)):
    assert f'{key}: file {fv}, encoder {ev}' in msg
    assert f'--config.model.encoders.video.{key}={fv}' in msg
  assert 'channel_ratio' not in msg and 'depth' not in msg
  # The flags it names make it load; compute-only settings may differ.
  ec.resample_rate, ec.speed_ratio, ec.fusion_kernel = 8, 8, 5
  ec.dtype, ec.remat = 'bfloat16', True
  params, _ = models.load_pretrained(model, c.model, empty(), empty())
  assert 'slow_path' in params['encoders']['video']['stage']


def _unflat(flat):
  import flax  # pylint: disable=g-import-not-at-top
  return flax.traverse_util.unflatten_dict(flat)


def test_every_encoder_setting_is_a_config_field_with_the_factory_default():
  """Each paper encoder's factory kwargs == the config's fields (so every one is settable with
  --config.model.encoders.<m>.<key>=...), with the same values."""
  import inspect  # pylint: disable=g-import-not-at-top
  from mbcd_jax.encoders import paper  # pylint: disable=g-import-not-at-top
  enc = _hac_config().paper_encoders()
  for m, ec in enc.items():
    params = inspect.signature(getattr(paper, ec.name)).parameters
    fields = {k: v for k, v in ec.items() if k not in ('name', 'pretrained')}
    assert set(fields) == set(params), (m, sorted(fields), sorted(params))
    assert fields == {k: p.default for k, p in params.items()}, m
  v = enc.video
  assert (v.resample_rate, v.speed_ratio, v.channel_ratio, v.fusion_kernel) == (4, 4, 8, 7)


def test_encoder_settings_from_the_command_line(monkeypatch):
  """As ``mbcd_jax.main`` parses them (ml_collections config flags read ``sys.argv``)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = ['prog', f'--config={os.path.join(ROOT, "configs", "hac.py")}',
          '--config.model.encoders.video.resample_rate=8',
          '--config.model.encoders.video.fusion_kernel=5',
          '--config.model.encoders.audio.dtype=bfloat16']
  monkeypatch.setattr(sys, 'argv', argv)
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=fv)
  fv(argv)
  c = fv.config
  assert c.model.encoders.video.resample_rate == 8 and c.model.encoders.video.fusion_kernel == 5
  assert c.model.encoders.audio.dtype == 'bfloat16'
  enc = models.build_model(c.model, ('video',), 7).encoders['video']
  assert (enc.trunk.resample_rate, enc.trunk.fusion_kernel) == (8, 5)
  assert isinstance(c, ml_collections.ConfigDict) and json.dumps(c.model.encoders.to_dict())
