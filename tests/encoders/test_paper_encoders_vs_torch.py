"""Flax paper encoders == their PyTorch originals, through the converter.

Random conv weights, BN affine parameters AND running statistics; the same random input; the
converted Flax trunk + stage must reproduce PyTorch's layer3 output (the trunk), layer4 output
and pooled feature to 1e-4 (float32). The SlowFast and SlowOnly networks run at depth 50 with
reduced widths (same code path as depth 101 / full width); depth-101 key mapping is pinned by
``test_slowfast_r101_full_conversion``.
"""
import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')
from mbcd_jax.reference import encoders_torch as ref

from mbcd_jax import encoders  # pylint: disable=g-import-not-at-top,wrong-import-position
from mbcd_jax.encoders import convert  # pylint: disable=g-import-not-at-top,wrong-import-position

ATOL = 1e-4


@pytest.fixture(autouse=True)
def _highest_precision():
  with jax.default_matmul_precision('highest'):
    yield


def _ncdhw_to_last(t):
  a = t.detach().numpy()
  return np.moveaxis(a, 1, -1)


def _check(name, flax_out, torch_out):
  want = _ncdhw_to_last(torch_out) if torch_out.ndim > 2 else torch_out.detach().numpy()
  got = np.asarray(flax_out)
  assert got.shape == want.shape, (name, got.shape, want.shape)
  # The comparison is only meaningful if the activations are O(1), not vanishing.
  assert want.std() > 0.05, (name, want.std())
  err = np.abs(got - want).max()
  assert err <= ATOL, f'{name}: max abs error {err:.3g} > {ATOL} (scale {np.abs(want).max():.3g})'


def _run_flax(kind, sd, x_last, **kw):
  enc = encoders.build(kind, kw)
  trunk_vars, stage_vars = convert.convert_state_dict(kind, sd, **kw)
  fmap = jax.jit(enc.trunk.apply)(trunk_vars, x_last)
  pooled, maps = jax.jit(lambda v, f: enc.stage.apply(v, f, True))(stage_vars, fmap)
  return enc, fmap, maps, pooled


def test_slowfast_matches_torch():
  kw = dict(depth=50, slow_base_channels=16)
  model = ref.randomize_(ref.ResNet3dSlowFast(depth=50, slow_base=16), seed=0)
  x = torch.randn(2, 3, 16, 64, 64, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    (ts, tf), (ys, yf), pooled = model.forward_split(x)
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  enc, (fs, ff), (gs, gf), feat = _run_flax('slowfast_r101', sd, _ncdhw_to_last(x), **kw)
  assert enc.feature_dim == pooled.shape[1] == 16 * 32 + 16 * 32 // 8
  _check('trunk slow', fs, ts)
  _check('trunk fast', ff, tf)
  _check('layer4 slow', gs, ys)
  _check('layer4 fast', gf, yf)
  _check('pooled', feat, pooled)


def test_slowonly_flow_matches_torch():
  kw = dict(depth=50, base_channels=16)
  model = ref.randomize_(ref.ResNet3dSlowOnly(depth=50, in_channels=2, base_channels=16), seed=3)
  x = torch.randn(2, 2, 8, 64, 64, generator=torch.Generator().manual_seed(4))
  with torch.no_grad():
    t, y, pooled = model.forward_split(x)
  sd = {f'backbone.{k}': v.numpy() for k, v in model.state_dict().items()}  # mmaction layout
  enc, fmap, gmap, feat = _run_flax('slowonly_r50_flow', sd, _ncdhw_to_last(x), **kw)
  assert enc.feature_dim == 16 * 32
  _check('trunk', fmap, t)
  _check('layer4', gmap, y)
  _check('pooled', feat, pooled)


def test_vggsound_r18_matches_torch():
  model = ref.randomize_(ref.AVENet(), seed=5)
  x = torch.randn(2, 1, 65, 97, generator=torch.Generator().manual_seed(6))  # [B,1,F,S], odd
  with torch.no_grad():
    t, y, pooled = model.audnet.forward_split(x)
  # VGGSound's checkpoint layout: {'model_state_dict': {'audnet.*'}} saved from DataParallel.
  sd = {f'module.{k}': v.numpy() for k, v in model.state_dict().items()}
  enc, fmap, gmap, feat = _run_flax('vggsound_r18', sd, _ncdhw_to_last(x))
  assert enc.feature_dim == 512
  _check('trunk', fmap, t)
  _check('layer4', gmap, y)
  _check('pooled', feat, pooled)


def test_slowfast_r101_full_conversion():
  """Depth 101, full width: every key maps, nothing is left over, and values land transposed
  in the right place (a trunk kernel deep in layer3, a stage BN statistic, a lateral conv)."""
  model = ref.ResNet3dSlowFast(depth=101)
  sd = {f'backbone.{k}': v.numpy() for k, v in model.state_dict().items()}
  sd['cls_head.fc_cls.weight'] = np.zeros((400, 2304), np.float32)  # heads are dropped
  trunk, stage = convert.convert_state_dict('slowfast_r101', sd)
  w = sd['backbone.slow_path.layer3.22.conv1.conv.weight']  # [O, I, 1, 1, 1]
  np.testing.assert_array_equal(trunk['params']['slow_path']['layer3']['22']['conv1']['conv']
                                ['kernel'], np.transpose(w, (2, 3, 4, 1, 0)))
  np.testing.assert_array_equal(stage['batch_stats']['fast_path']['layer4']['2']['conv3']['bn']
                                ['var'], sd['backbone.fast_path.layer4.2.conv3.bn.running_var'])
  lat = trunk['params']['slow_path']['layer3_lateral']['conv']['kernel']
  assert lat.shape == (7, 1, 1, 128, 256)  # the 8x8 config's fusion_kernel
  n_sd = sum(v.size for k, v in sd.items()
             if k.startswith('backbone.') and not k.endswith('num_batches_tracked'))
  n_flax = sum(a.size for a in jax.tree.leaves((trunk, stage)))
  assert n_sd == n_flax
  assert set(stage['params']) == {'slow_path', 'fast_path'}
  assert set(stage['params']['slow_path']) == {'layer4'}
