"""``conv3d`` (3-D conv via 2-D / 1-D convs) == ``lax.conv_general_dilated`` in 3-D, in float64.

Forward and the gradients w.r.t. input and kernel, on random inputs, kernels, strides and
paddings covering every branch (1x1x1 matmul, (1,kh,kw) frames, (kt,1,1) temporal, general
stacked), and ``Conv3d`` has ``nn.Conv``'s parameter (name, shape, initial value).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbcd_jax.encoders.conv3d import Conv3d, conv3d

# (kernel, strides, padding): the backbones' shapes, then odd ones.
CASES = [
    ((1, 1, 1), (1, 1, 1), (0, 0, 0)),   # conv3
    ((1, 1, 1), (2, 2, 2), (0, 0, 0)),   # downsample with a temporal stride
    ((1, 3, 3), (1, 2, 2), (0, 1, 1)),   # conv2
    ((1, 3, 3), (2, 1, 1), (0, 1, 1)),   # conv2 with a temporal stride
    ((1, 7, 7), (1, 2, 2), (0, 3, 3)),   # slow stem
    ((3, 1, 1), (1, 1, 1), (1, 0, 0)),   # inflated conv1
    ((5, 1, 1), (4, 1, 1), (2, 0, 0)),   # lateral
    ((7, 1, 1), (3, 1, 1), (3, 0, 0)),   # lateral, T not a multiple of the stride
    ((5, 7, 7), (1, 2, 2), (2, 3, 3)),   # fast stem
    ((2, 3, 2), (2, 1, 3), (1, 0, 1)),   # general, asymmetric
    ((3, 1, 1), (1, 2, 1), (0, 0, 0)),   # temporal kernel with a spatial stride
    ((1, 1, 1), (1, 1, 1), (1, 1, 0)),   # padded 1x1x1
    ((3, 2, 1), (2, 2, 2), (0, 1, 0)),
]
# (kernel, strides, padding, input H x W): tiny output frames take the plain 3-D conv.
TINY = [((1, 3, 3), (1, 2, 2), (0, 1, 1), (4, 4)), ((3, 1, 1), (1, 1, 1), (1, 0, 0), (2, 2)),
        ((1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 3))]


def _ref(x, k, s, p):
  return jax.lax.conv_general_dilated(x, k, s, [(q, q) for q in p],
                                      dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'))


@pytest.mark.parametrize('kernel,strides,padding,hw',
                         [c + ((8, 7),) for c in CASES] + TINY)
def test_conv3d_matches_3d_conv_forward_and_gradient(kernel, strides, padding, hw):
  rng = np.random.default_rng(sum(kernel) * 100 + sum(strides) * 10 + sum(padding))
  with jax.enable_x64(True):
    x = jnp.asarray(rng.standard_normal((2, 9, *hw, 3)))
    k = jnp.asarray(rng.standard_normal((*kernel, 3, 4)))
    want, vjp_ref = jax.vjp(lambda x, k: _ref(x, k, strides, padding), x, k)
    got, vjp = jax.vjp(lambda x, k: conv3d(x, k, strides, padding), x, k)
    assert got.dtype == jnp.float64 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    ct = jnp.asarray(rng.standard_normal(want.shape))
    for g, g_ref in zip(vjp(ct), vjp_ref(ct)):
      assert float(jnp.abs(g_ref).max()) > 0.1
      np.testing.assert_allclose(g, g_ref, rtol=0, atol=1e-11)


def test_conv3d_module_has_nn_conv_parameter():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 4, 6, 6, 3)), jnp.float32)
  ours = Conv3d(5, (3, 3, 3), (1, 2, 2), (1, 1, 1))
  flax_conv = nn.Conv(5, (3, 3, 3), (1, 2, 2), padding=[(1, 1)] * 3, use_bias=False)
  v_ours = ours.init(jax.random.key(3), x)
  v_flax = flax_conv.init(jax.random.key(3), x)
  assert jax.tree.map(jnp.shape, v_ours) == {'params': {'kernel': (3, 3, 3, 3, 5)}}
  np.testing.assert_array_equal(v_ours['params']['kernel'], v_flax['params']['kernel'])
  np.testing.assert_allclose(ours.apply(v_ours, x), flax_conv.apply(v_flax, x), atol=1e-5)


def test_conv3d_rejects_mismatched_channels():
  with pytest.raises(ValueError, match=r'\(1, 2, 3, 3, 4\).*\(1, 1, 1, 5, 2\)'):
    conv3d(jnp.zeros((1, 2, 3, 3, 4)), jnp.zeros((1, 1, 1, 5, 2)))
