"""Flax encoders (and the test-side PyTorch reference) == the REAL mmaction2 / VGGSound networks.

``golden/*.npz`` hold outputs of the original networks (mmaction2 1.2.0 ``ResNet3dSlowFast`` as
the ``slowfast_r101_8x8x1`` config builds it and ``ResNet3dSlowOnly`` as the
``slowonly_r50_8x8x1`` flow config does, at depth 50 / reduced width; VGGSound's ``AVENet``
ResNet-18 at full size) on deterministic weights and input, recorded by ``make_golden.py``.
The weights are regenerated here from the recorded state_dict names and shapes, converted with
the project's converter (so the real key layout must map completely) and run through the Flax
trunk and stage. Needs neither mmaction2 nor VGGSound; the PyTorch check needs torch.
"""
import json
import os

import jax
import numpy as np
import pytest

import make_golden as golden
from mbcd_jax import encoders
from mbcd_jax.encoders import convert

# float32 through ~50 layers; observed errors are ~1e-6 of the activations' scale.
RTOL = 1e-4


@pytest.fixture(autouse=True)
def _highest_precision():
  with jax.default_matmul_precision('highest'):
    yield


def _load(case):
  path = os.path.join(golden.GOLDEN_DIR, f'{case}.npz')
  blob = np.load(path)
  names_shapes = json.loads(str(blob['names_shapes']))
  outs = {k[4:]: blob[k] for k in blob.files if k.startswith('out/')}
  return names_shapes, outs, json.loads(str(blob['versions']))


def _want(case, outs):
  """Golden outputs in the Flax layout: name -> channels-last array."""
  last = lambda a: np.moveaxis(a, 1, -1)
  if case.startswith('slowfast'):
    slow = np.concatenate([outs['trunk_slow_layer3'], outs['trunk_slow_lateral3']], axis=1)
    w = {'trunk_slow': last(slow), 'trunk_fast': last(outs['trunk_fast']),
         'layer4_slow': last(outs['layer4_slow']), 'layer4_fast': last(outs['layer4_fast'])}
    # SlowFastHead: cat(avgpool(fast), avgpool(slow)).
    w['pooled'] = np.concatenate([outs['layer4_fast'].mean((2, 3, 4)),
                                  outs['layer4_slow'].mean((2, 3, 4))], axis=1)
    return w
  w = {'trunk': last(outs['trunk']), 'layer4': last(outs['layer4'])}
  w['pooled'] = (outs['pooled'].reshape(outs['pooled'].shape[:2]) if 'pooled' in outs
                 else outs['layer4'].mean(tuple(range(2, outs['layer4'].ndim))))
  return w


def _close(name, got, want):
  got = np.asarray(got)
  assert got.shape == want.shape, (name, got.shape, want.shape)
  scale = float(np.abs(want).max())
  assert want.std() > 0.05, (name, want.std())  # activations O(1): a meaningful comparison
  err = float(np.abs(got - want).max())
  assert err <= RTOL * scale, f'{name}: max abs error {err:.3g} > {RTOL} x scale {scale:.3g}'


@pytest.mark.parametrize('case', sorted(golden.CASES))
def test_flax_encoder_matches_the_original(case):
  kind, kw, in_shape = golden.CASES[case]
  names_shapes, outs, versions = _load(case)
  assert versions['torch'] and (case == 'vggsound_r18' or versions['mmaction'] == '1.2.0')
  sd = golden.state_dict_from(names_shapes)
  trunk_vars, stage_vars = convert.convert_state_dict(kind, sd, **kw)  # full key coverage
  enc = encoders.build(kind, kw)
  x = np.moveaxis(golden.det_input(case, in_shape), 1, -1)
  fmap = jax.jit(enc.trunk.apply)(trunk_vars, x)
  pooled, maps = jax.jit(lambda v, f: enc.stage.apply(v, f, True))(stage_vars, fmap)
  want = _want(case, outs)
  if kind == 'slowfast_r101':
    got = {'trunk_slow': fmap[0], 'trunk_fast': fmap[1], 'layer4_slow': maps[0],
           'layer4_fast': maps[1], 'pooled': pooled}
  else:
    got = {'trunk': fmap, 'layer4': maps, 'pooled': pooled}
  assert set(got) == set(want)
  for name in want:
    _close(f'{case} {name}', got[name], want[name])


@pytest.mark.parametrize('case', sorted(golden.CASES))
def test_torch_reference_matches_the_original(case):
  """Pins ``encoders_torch`` (used by the Flax-vs-PyTorch tests and benchmarks) to the
  originals, with the originals' own state_dict keys, in CI without mmaction2."""
  torch = pytest.importorskip('torch', reason='torch (requirements-dev.txt) not installed')
  from mbcd_jax.reference import encoders_torch as ref  # pylint: disable=g-import-not-at-top
  kind, kw, in_shape = golden.CASES[case]
  names_shapes, outs, _ = _load(case)
  if kind == 'slowfast_r101':
    net = ref.ResNet3dSlowFast(depth=kw['depth'], slow_base=kw['slow_base_channels'])
    strip = 'backbone.'
  elif kind == 'slowonly_r50_flow':
    net = ref.ResNet3dSlowOnly(depth=kw['depth'], in_channels=2,
                               base_channels=kw['base_channels'])
    strip = 'backbone.'
  else:
    net, strip = ref.AVENet(), ''
  sd = {k[len(strip):]: torch.from_numpy(v) for k, v in golden.state_dict_from(
      names_shapes).items()}
  missing, unexpected = net.load_state_dict(sd, strict=False)
  assert not unexpected and all(k.endswith('num_batches_tracked') for k in missing), (
      missing, unexpected)
  net.eval()
  x = torch.from_numpy(golden.det_input(case, in_shape))
  with torch.no_grad():
    if kind == 'slowfast_r101':
      (ts, tf), (ys, yf), pooled = net.forward_split(x)
      got = {'trunk_slow': ts, 'trunk_fast': tf, 'layer4_slow': ys, 'layer4_fast': yf,
             'pooled': pooled}
    elif kind == 'slowonly_r50_flow':
      t, y, pooled = net.forward_split(x)
      got = {'trunk': t, 'layer4': y, 'pooled': pooled}
    else:
      t, y, pooled = net.audnet.forward_split(x)
      got = {'trunk': t, 'layer4': y, 'pooled': pooled}
  want = _want(case, outs)
  for name, v in got.items():
    v = v.numpy()
    _close(f'{case} {name} (torch)', np.moveaxis(v, 1, -1) if v.ndim > 2 else v, want[name])
