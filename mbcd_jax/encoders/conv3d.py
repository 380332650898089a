"""A 3-D convolution computed as 2-D / 1-D convolutions: same parameter, same numbers, faster.

XLA's CPU backend runs 2-D convolutions and matmuls much faster than 3-D convolutions
(float32, 2 shared cores, so roughly: the SlowFast fast-pathway stem (5,7,7) on 2x16x64x64x3
took 250 ms forward as a 3-D conv and 16 ms as below; a stride-2 (1,3,3) conv's input
gradient on 14x14 frames 176 ms as 3-D, 18 ms as 2-D).
Almost every convolution of the mmaction2 ResNet3d / SlowFast backbones has a kernel of 1
along time or along both spatial axes, so it is really a 2-D convolution over frames or a 1-D
convolution over time. ``conv3d`` picks, by the kernel's shape:

* kernel ``(1, 1, 1)``: subsample by the strides, then one matmul over channels;
* kernel ``(1, kh, kw)``: subsample time by its stride, 2-D conv over the ``B * T`` frames;
* kernel ``(kt, 1, 1)`` with no spatial stride or padding (inflated ``conv1``, the lateral
  fusions): 1-D conv over ``T`` on ``[B * H * W, T, C]`` (as fast as stacking the shifted
  frames below, within the noise of a shared machine, and keeps no copies of the input);
* anything else (the fast pathway's ``(5, 7, 7)`` stem): the ``kt`` time-shifted copies of the
  input are stacked on the channel axis and one 2-D conv with ``kt * Cin`` input channels does
  the rest. This holds ``kt`` copies of the input, cheap for a stem (``Cin`` is 3).

Except on tiny frames: when an output frame has at most ``TINY_FRAME`` (4) pixels, the plain
3-D conv is kept, because there XLA CPU's *gradients* of the 2-D conv are the slow ones (layer4
at 64x64 inputs, 2x2 output frames: the stage's forward + backward took 2.0 s rewritten vs
0.33 s as 3-D convs; at the paper's 224x224 inputs, 7x7 frames, 1.1 s rewritten vs 2.2 s as
3-D). Timings: one SlowOnly-R50 layer4 (batch 2 / 1), 2 shared cores, fastest of 5.

The kernel stays one ``[kt, kh, kw, Cin, Cout]`` parameter named ``kernel`` (what ``nn.Conv``
holds, initialised the same way), so checkpoints and the PyTorch converter are unaffected; it is
reshaped inside the call. Padding is symmetric zero padding per axis (PyTorch's convention), no
dilation, no groups, no bias: all the backbones need.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
_2D = ('NHWC', 'HWIO', 'NHWC')
TINY_FRAME = 4  # output pixels per frame at or below which the 3-D conv is kept


def conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1, 1),
           padding: Sequence[int] = (0, 0, 0), precision=None) -> jax.Array:
  """``lax.conv_general_dilated`` in 3-D, channels-last, via 2-D / 1-D convolutions.

  Args:
    x: ``[B, T, H, W, Cin]``.
    kernel: ``[kt, kh, kw, Cin, Cout]``.
    strides: ``(st, sh, sw)``.
    padding: ``(pt, ph, pw)``: symmetric zero padding of each axis.
    precision: passed to the underlying conv / matmul.
  Returns:
    ``[B, T', H', W', Cout]`` with ``T' = (T + 2 pt - kt) // st + 1`` etc.
  """
  if x.ndim != 5 or kernel.ndim != 5 or x.shape[-1] != kernel.shape[3]:
    raise ValueError(f'conv3d: input {x.shape} and kernel {kernel.shape} must be '
                     '[B, T, H, W, Cin] and [kt, kh, kw, Cin, Cout]')
  kt, kh, kw, cin, cout = kernel.shape
  st, sh, sw = strides
  pt, ph, pw = padding
  h_out = (x.shape[2] + 2 * ph - kh) // sh + 1
  w_out = (x.shape[3] + 2 * pw - kw) // sw + 1
  if h_out * w_out <= TINY_FRAME:
    return jax.lax.conv_general_dilated(x, kernel, strides, [(p, p) for p in padding],
                                        dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'),
                                        precision=precision)
  if pt:
    x = jnp.pad(x, ((0, 0), (pt, pt), (0, 0), (0, 0), (0, 0)))
  b, t = x.shape[:2]
  t_out = (t - kt) // st + 1
  if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0) and kt > 1:
    # Purely temporal: [B, T, H, W, C] -> [B*H*W, T, C], a 1-D conv, and back.
    _, _, h, w, _ = x.shape
    xt = x.transpose(0, 2, 3, 1, 4).reshape(b * h * w, t, cin)
    y = jax.lax.conv_general_dilated(xt, kernel[:, 0, 0], (st,), [(0, 0)],
                                     dimension_numbers=('NWC', 'WIO', 'NWC'),
                                     precision=precision)
    return y.reshape(b, h, w, t_out, cout).transpose(0, 3, 1, 2, 4)
  # Frame j of the output sees input frames j*st + d, d < kt: stack those kt frames on the
  # channel axis (d major, as the kernel below), which leaves a 2-D problem per output frame.
  frames = [x[:, d:d + (t_out - 1) * st + 1:st] for d in range(kt)]
  x = frames[0] if kt == 1 else jnp.concatenate(frames, axis=-1)
  k2 = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kt * cin, cout)
  if (kh, kw, ph, pw) == (1, 1, 0, 0):
    return jnp.matmul(x[:, :, ::sh, ::sw], k2[0, 0], precision=precision)
  _, _, h, w, c = x.shape
  y = jax.lax.conv_general_dilated(x.reshape(b * t_out, h, w, c), k2, (sh, sw),
                                   [(ph, ph), (pw, pw)], dimension_numbers=_2D,
                                   precision=precision)
  return y.reshape(b, t_out, *y.shape[1:])


class Conv3d(nn.Module):
  """Bias-free 3-D conv with the parameter of ``nn.Conv`` (``kernel [kt, kh, kw, Cin, Cout]``,
  LeCun-normal init), computed by ``conv3d``. ``[B, T, H, W, Cin] -> [B, T', H', W', features]``.

  Attributes:
    features: output channels.
    kernel_size: ``(kt, kh, kw)``.
    strides: ``(st, sh, sw)``.
    padding: symmetric zero padding ``(pt, ph, pw)``.
    dtype: computation dtype (the parameter stays ``param_dtype``).
  """
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1, 1)
  padding: Sequence[int] = (0, 0, 0)
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    return conv3d(x, kernel, tuple(self.strides), tuple(self.padding), self.precision)
