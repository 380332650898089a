r"""Records outputs of the REAL mmaction2 / VGGSound encoders for ``test_golden.py``.

mmaction2 cannot be a test dependency: the ``mmaction2==1.2.0`` wheel depends on
``opencv-contrib-python`` and ``decord``, ``mmengine`` / ``mmcv-lite`` on ``opencv-python``
(three OpenCV distributions writing the same ``cv2`` package next to the project's
``opencv-python-headless``), ``mmaction`` refuses ``mmcv>=2.2`` at import, and the wheel lacks
``mmaction/models/localizers/drn`` (``encoders_torch.import_mmaction_backbones`` stubs the
package modules to import the backbone files alone). VGGSound is not a package at all. So the
real networks run once, here, and their outputs are committed (``golden/*.npz``, ~0.2 MB):

    python -m venv --system-site-packages /tmp/mm && /tmp/mm/bin/pip install \
        mmengine==0.10.7 mmcv-lite==2.1.0 && /tmp/mm/bin/pip install --no-deps mmaction2==1.2.0
    git clone https://github.com/hche11/VGGSound /tmp/VGGSound
    /tmp/mm/bin/python -m tests.encoders.make_golden --vggsound_dir=/tmp/VGGSound   # clone root

Each case: the real network built as the released checkpoint's config builds it (at a reduced
depth / width where the original allows it; VGGSound hard-codes its widths), every state_dict
entry filled by :func:`det_values` (a function of the entry's name and shape only, integer
hashing, so the test regenerates the same weights without torch), non-trivial BN statistics,
a deterministic input, eval mode; forward hooks record the original's own intermediate
outputs. The ``.npz`` holds the state_dict names and shapes (so the test also checks that the
converter accepts the real key layout), the outputs and the package versions used.
"""
import argparse
import json
import os
import sys
import types
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN_DIR = os.path.join(HERE, 'golden')

# name -> (encoder kind, Flax kwargs, input shape [B, C, T, H, W] / [B, 1, F, S]).
CASES = {
    # slowfast_r101_8x8x1 config, depth 50 and slow width 16 (fast 2): tau 4, alpha 4, fusion 7.
    'slowfast_8x8_r50_w16': ('slowfast_r101', dict(depth=50, slow_base_channels=16),
                             (1, 3, 16, 48, 48)),
    # slowonly_r50_8x8x1 flow config, width 16.
    'slowonly_flow_r50_w16': ('slowonly_r50_flow', dict(depth=50, base_channels=16),
                              (1, 2, 8, 48, 48)),
    # VGGSound AVENet (resnet18, pool='avgpool'), full width, a small odd-sized spectrogram.
    'vggsound_r18': ('vggsound_r18', {}, (1, 1, 65, 97)),
}


def _uniform(key: str, n: int) -> np.ndarray:
  """``n`` floats in [0, 1): splitmix64 of a counter seeded by ``crc32(key)`` (bit-exact on
  every platform: integer arithmetic, then an exact int -> float64 conversion)."""
  z = np.arange(n, dtype=np.uint64) + np.uint64(zlib.crc32(key.encode()) << 20)
  z = z * np.uint64(0x9E3779B97F4A7C15)
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  z = z ^ (z >> np.uint64(31))
  return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def det_values(name: str, shape) -> np.ndarray:
  """float32 value of state_dict entry ``name``: He-uniform conv / linear weights (activations
  keep their scale through depth), BN scale in [0.4, 0.8), bias in [-0.1, 0.1), running mean
  in [-0.2, 0.2), running variance in [0.5, 1.5)."""
  shape = tuple(int(s) for s in shape)
  u = _uniform(name, int(np.prod(shape, dtype=np.int64))).reshape(shape)
  leaf = name.rsplit('.', 1)[-1]
  if leaf == 'weight' and len(shape) > 1:
    v = (2 * u - 1) * np.sqrt(6.0 / np.prod(shape[1:]))
  elif leaf == 'weight':
    v = 0.4 + 0.4 * u
  elif leaf == 'bias':
    v = 0.1 * (2 * u - 1)
  elif leaf == 'running_mean':
    v = 0.2 * (2 * u - 1)
  elif leaf == 'running_var':
    v = 0.5 + u
  else:
    raise ValueError(f'no rule for state_dict entry {name!r}')
  return v.astype(np.float32)


def det_input(case: str, shape) -> np.ndarray:
  """Input in [-2, 2), float32, PyTorch layout."""
  return (4 * _uniform('input/' + case, int(np.prod(shape))) - 2).reshape(shape).astype(
      np.float32)


def state_dict_from(names_shapes: dict) -> dict:
  """{name: shape} -> {name: float32 array} (``num_batches_tracked`` counters left out)."""
  return {k: det_values(k, s) for k, s in names_shapes.items()
          if not k.endswith('num_batches_tracked')}


# ------------------------------------------------------------------ real networks
def _mmaction(case):
  from mbcd_jax.reference import encoders_torch as torch_reference  # pylint: disable=g-import-not-at-top
  mm = torch_reference.import_mmaction_backbones()
  if mm is None:
    raise SystemExit('mmaction2 backbones not importable; see this file\'s docstring')
  slowfast_cls, slowonly_cls = mm
  if case == 'slowfast_8x8_r50_w16':
    # mmaction2 configs/recognition/slowfast/slowfast_r101_8x8x1_256e_kinetics400_rgb.py
    # backbone, with depth 101 -> 50 and base_channels 64 / 8 -> 16 / 2.
    net = slowfast_cls(
        pretrained=None, resample_rate=4, speed_ratio=4, channel_ratio=8,
        slow_pathway=dict(type='resnet3d', depth=50, pretrained=None, lateral=True,
                          base_channels=16, fusion_kernel=7, conv1_kernel=(1, 7, 7),
                          dilations=(1, 1, 1, 1), conv1_stride_t=1, pool1_stride_t=1,
                          inflate=(0, 0, 1, 1), norm_eval=False),
        fast_pathway=dict(type='resnet3d', depth=50, pretrained=None, lateral=False,
                          base_channels=2, conv1_kernel=(5, 7, 7), conv1_stride_t=1,
                          pool1_stride_t=1, norm_eval=False))
    prefix = 'backbone.'
    taps = {'trunk_slow_layer3': net.slow_path.layer3,
            'trunk_slow_lateral3': net.slow_path.layer3_lateral,
            'trunk_fast': net.fast_path.layer3,
            'layer4_slow': net.slow_path.layer4, 'layer4_fast': net.fast_path.layer4}
  else:
    # configs/recognition/slowonly/slowonly_r50_8x8x1_256e_kinetics400_flow.py backbone
    # (_base_ slowonly_r50 + in_channels=2, with_pool2=False), base_channels 64 -> 16.
    net = slowonly_cls(depth=50, pretrained=None, lateral=False, in_channels=2,
                       base_channels=16, conv1_kernel=(1, 7, 7), conv1_stride_t=1,
                       pool1_stride_t=1, inflate=(0, 0, 1, 1), with_pool2=False,
                       norm_eval=False)
    prefix = 'backbone.'
    taps = {'trunk': net.layer3, 'layer4': net.layer4}
  return net, prefix, taps


def _vggsound(vggsound_dir):
  # Loading the user's clone of VGGSound (not a package): its folder goes on the path.
  sys.path.insert(0, vggsound_dir)
  from model import AVENet  # pylint: disable=g-import-not-at-top,import-error
  # VGGSound test.py: AVENet(args) with model_depth=18, n_classes=309, pool='avgpool'.
  net = AVENet(types.SimpleNamespace(model_depth=18, n_classes=309, pool='avgpool'))
  a = net.audnet
  return net, '', {'trunk': a.layer3, 'layer4': a.layer4, 'pooled': a.avgpool}


def _versions(vggsound_dir):
  import torch  # pylint: disable=g-import-not-at-top
  out = {'torch': torch.__version__, 'numpy': np.__version__, 'python': sys.version.split()[0]}
  for mod in ('mmaction', 'mmengine', 'mmcv'):
    try:
      out[mod] = __import__(mod).__version__
    except Exception:  # pylint: disable=broad-except
      out[mod] = None
  head = os.path.join(vggsound_dir or '', '.git', 'HEAD')
  out['vggsound_dir'] = vggsound_dir
  if vggsound_dir and os.path.exists(head):
    out['vggsound_git_head'] = open(head).read().strip()
  return out


def make(case: str, vggsound_dir: str | None) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  _, _, in_shape = CASES[case]
  if case == 'vggsound_r18':
    net, prefix, taps = _vggsound(vggsound_dir)
  else:
    net, prefix, taps = _mmaction(case)
  sd = net.state_dict()
  with torch.no_grad():
    for k, v in sd.items():
      if not k.endswith('num_batches_tracked'):
        v.copy_(torch.from_numpy(det_values(prefix + k, v.shape)))
  net.eval()
  got = {}
  for name, mod in taps.items():
    mod.register_forward_hook(lambda m, i, o, name=name: got.__setitem__(name, o.numpy().copy()))
  x = torch.from_numpy(det_input(case, in_shape))
  with torch.no_grad():
    net(x)
  out = {f'out/{k}': v for k, v in got.items()}
  out['names_shapes'] = np.array(json.dumps({prefix + k: list(v.shape) for k, v in sd.items()}))
  out['versions'] = np.array(json.dumps(_versions(vggsound_dir)))
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--vggsound_dir', help='checkout of github.com/hche11/VGGSound')
  parser.add_argument('--cases', default=','.join(CASES))
  args = parser.parse_args(argv)
  os.makedirs(GOLDEN_DIR, exist_ok=True)
  for case in args.cases.split(','):
    blob = make(case, args.vggsound_dir)
    path = os.path.join(GOLDEN_DIR, f'{case}.npz')
    np.savez_compressed(path, **blob)
    print(f'{case}: {path} ({os.path.getsize(path):,} bytes): ' + ', '.join(
        f'{k[4:]} {v.shape}' for k, v in blob.items() if k.startswith('out/')))


if __name__ == '__main__':
  main()
