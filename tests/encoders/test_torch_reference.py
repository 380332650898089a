"""The test-side PyTorch definitions match the real mmaction2 backbones (when importable).

mmaction2 is not a project dependency (see ``make_golden.py`` for why and how to install it);
without it these tests skip, saying so, and ``test_golden.py`` checks the Flax encoders against
outputs of the real networks recorded once. They pin that ``encoders_torch`` -- which the
Flax-vs-PyTorch tests use -- has the same state_dict keys and shapes and computes the same
function as the original, configured as ``slowfast_r101_8x8x1_256e_kinetics400_rgb`` and
``slowonly_r50_8x8x1_256e_kinetics400_flow``.
"""
import warnings

import pytest

torch = pytest.importorskip('torch')
from mbcd_jax.reference import encoders_torch as ref

MM = ref.import_mmaction_backbones()
SKIP_REASON = ('test_torch_reference.py skipped: mmaction2 backbones not importable (optional: '
               'mmaction2==1.2.0, mmengine, mmcv-lite<2.2; see tests/encoders/make_golden.py); '
               'test_golden.py checks against recorded outputs of the real networks instead')


@pytest.fixture(autouse=True)
def _needs_mmaction():
  if MM is None:
    # A warning too, so that the reason shows in a plain `pytest -q` run's summary.
    warnings.warn(SKIP_REASON)
    pytest.skip(SKIP_REASON)


def _mm_slowfast(depth, slow_base):
  # The backbone dict of mmaction2's slowfast_r101_8x8x1_256e_kinetics400_rgb config.
  return MM[0](resample_rate=4, speed_ratio=4, channel_ratio=8,
               slow_pathway=dict(type='resnet3d', depth=depth, pretrained=None, lateral=True,
                                 fusion_kernel=7, base_channels=slow_base, conv1_kernel=(1, 7, 7),
                                 dilations=(1, 1, 1, 1), conv1_stride_t=1, pool1_stride_t=1,
                                 inflate=(0, 0, 1, 1), norm_eval=False),
               fast_pathway=dict(type='resnet3d', depth=depth, pretrained=None, lateral=False,
                                 base_channels=slow_base // 8, conv1_kernel=(5, 7, 7),
                                 conv1_stride_t=1, pool1_stride_t=1, norm_eval=False))


def _shapes(m):
  return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def test_slowfast_r101_state_dict_keys_match_mmaction():
  assert _shapes(ref.ResNet3dSlowFast(depth=101)) == _shapes(_mm_slowfast(101, 64))


def test_slowonly_r50_flow_state_dict_keys_match_mmaction():
  mm = MM[1](depth=50, pretrained=None, lateral=False, in_channels=2, conv1_kernel=(1, 7, 7),
             conv1_stride_t=1, pool1_stride_t=1, inflate=(0, 0, 1, 1), with_pool2=False)
  assert _shapes(ref.ResNet3dSlowOnly(depth=50, in_channels=2)) == _shapes(mm)


def test_slowfast_reduced_forward_matches_mmaction():
  mm = _mm_slowfast(50, 16)
  ours = ref.randomize_(ref.ResNet3dSlowFast(depth=50, slow_base=16), seed=1)
  mm.load_state_dict(ours.state_dict(), strict=True)
  mm.eval()
  x = torch.randn(2, 3, 16, 64, 64, generator=torch.Generator().manual_seed(0))
  with torch.no_grad():
    a, b = mm(x), ours(x)
  for u, v in zip(a, b):
    assert u.shape == v.shape
    torch.testing.assert_close(u, v, rtol=0, atol=0)


def test_slowonly_reduced_forward_matches_mmaction():
  mm = MM[1](depth=50, pretrained=None, lateral=False, in_channels=2, base_channels=16,
             conv1_kernel=(1, 7, 7), conv1_stride_t=1, pool1_stride_t=1, inflate=(0, 0, 1, 1),
             with_pool2=False)
  ours = ref.randomize_(ref.ResNet3dSlowOnly(depth=50, in_channels=2, base_channels=16), seed=2)
  mm.load_state_dict(ours.state_dict(), strict=True)
  mm.eval()
  x = torch.randn(2, 2, 8, 64, 64, generator=torch.Generator().manual_seed(0))
  with torch.no_grad():
    torch.testing.assert_close(mm(x), ours(x), rtol=0, atol=0)
