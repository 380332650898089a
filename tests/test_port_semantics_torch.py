"""Our train step with the port's network semantics vs a PyTorch re-implementation of the port.

``config.model.bn_mode='port'`` + ``dsu=True``: train-mode BatchNorm everywhere (running
statistics updated per student pass, PyTorch's rule), DSU on the first pass, AMD, EMA over the
encoders' whole state. The PyTorch side (``TorchPortMBCD`` in mbcd_jax/reference/mbcd_torch.py,
itself checked against the port's own code by benchmarks/port_harness.py) and ours start from
the same weights and replay the same DSU / AMD draws; two steps must agree in the loss terms,
parameters, BN running statistics and the teacher's whole state.

Tiny encoders (``spec_cnn`` with BN, and a PyTorch twin written here) keep it to ~35 s of CPU
(mostly XLA compiling the step, once per dtype); the paper's encoders run in the benchmark.
"""
import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')
from torch import nn  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,wrong-import-position

from mbcd_jax.reference import mbcd_torch, port_parity


def _same_pad(x, stride, k=3):
  """XLA's 'SAME' padding (the extra row / column goes to the high side) as explicit pads."""
  pads = []
  for n in reversed(x.shape[2:]):
    total = max((-(-n // stride) - 1) * stride + k - n, 0)
    pads += [total // 2, total - total // 2]
  return F.pad(x, pads)


class TorchSpecCNN(nn.Module):
  """PyTorch twin of ``spec_cnn(bn=True)``: trunk of conv3x3-BN-ReLU, stage (``layer4``) of one
  strided conv3x3-BN-ReLU, global mean pool. Input ``[B, 1, F, S]``."""

  def __init__(self, trunk_widths, trunk_strides, width):
    super().__init__()
    cins = (1,) + tuple(trunk_widths[:-1])
    self.convs = nn.ModuleList(nn.Conv2d(c, w, 3, s, bias=False)
                               for c, w, s in zip(cins, trunk_widths, trunk_strides))
    self.bns = nn.ModuleList(nn.BatchNorm2d(w) for w in trunk_widths)
    self.strides = tuple(trunk_strides)
    # 'layer4' in the names marks the trainable stage (as in the ResNets).
    self.layer4_conv = nn.Conv2d(trunk_widths[-1], width, 3, 2, bias=False)
    self.layer4_bn = nn.BatchNorm2d(width)
    g = torch.Generator().manual_seed(sum(trunk_widths) + width)
    with torch.no_grad():   # random statistics too, so that the running updates show
      for bn in [*self.bns, self.layer4_bn]:
        n = bn.num_features
        bn.weight.copy_(0.5 + torch.rand(n, generator=g))
        bn.bias.copy_(0.1 * torch.randn(n, generator=g))
        bn.running_mean.copy_(0.1 * torch.randn(n, generator=g))
        bn.running_var.copy_(0.5 + torch.rand(n, generator=g))

  def trunk(self, x):
    for conv, bn, s in zip(self.convs, self.bns, self.strides):
      x = F.relu(bn(conv(_same_pad(x, s))))
    return x

  def layer4(self, f):
    return F.relu(self.layer4_bn(self.layer4_conv(_same_pad(f, 2))))

  def pool(self, y):
    return y.mean(dim=(2, 3))

  def forward(self, f):
    return self.pool(self.layer4(f))


def _spec_to_flax(state_dict):
  """TorchSpecCNN state dict -> (trunk_vars, stage_vars) of ``spec_cnn(bn=True)``."""
  def bn(prefix):
    return ({'scale': state_dict[prefix + '.weight'], 'bias': state_dict[prefix + '.bias']},
            {'mean': state_dict[prefix + '.running_mean'],
             'var': state_dict[prefix + '.running_var']})
  kernel = lambda w: np.transpose(w, (2, 3, 1, 0))
  trunk = {'params': {}, 'batch_stats': {}}
  i = 0
  while f'convs.{i}.weight' in state_dict:
    trunk['params'][f'Conv_{i}'] = {'kernel': kernel(state_dict[f'convs.{i}.weight'])}
    trunk['params'][f'BatchNorm_{i}'], trunk['batch_stats'][f'BatchNorm_{i}'] = bn(f'bns.{i}')
    i += 1
  p, s = bn('layer4_bn')
  stage = {'params': {'Conv_0': {'kernel': kernel(state_dict['layer4_conv.weight'])},
                      'BatchNorm_0': p},
           'batch_stats': {'BatchNorm_0': s}}
  return trunk, stage


WIDTHS = {'video': ((4, 6), 8), 'flow': ((3, 5), 6), 'audio': ((4, 4), 5)}


def _setup(mods, batch_size=4, seed=0):
  torch.manual_seed(seed)
  encoders = {}
  for m in mods:
    tw, w = WIDTHS[m]
    net = TorchSpecCNN(tw, (1, 2), w)
    encoders[m] = port_parity.ParityEncoder(
        'spec_cnn', dict(trunk_widths=tw, trunk_strides=(1, 2), width=w, bn=True), net,
        _spec_to_flax)
  g = torch.Generator().manual_seed(seed + 1)
  batch = {m: torch.randn((batch_size, 1, 16, 16), generator=g) for m in mods}
  labels = torch.randint(0, mbcd_torch.NUM_CLASSES, (batch_size,), generator=g)
  return encoders, batch, labels


def test_torch_twin_matches_spec_cnn():
  """The PyTorch twin and spec_cnn(bn=True) compute the same features (inference mode)."""
  from mbcd_jax import encoders as encoders_lib  # pylint: disable=g-import-not-at-top
  encoders, batch, _ = _setup(('video',))
  e = encoders['video']
  enc = encoders_lib.build('spec_cnn', e.kwargs)
  trunk_vars, stage_vars = e.to_flax({k: v.numpy() for k, v in e.torch.state_dict().items()})
  x = batch['video']
  with torch.no_grad():
    want = e.torch.eval()(e.torch.trunk(x)).numpy()
  got = enc.stage.apply(stage_vars, enc.trunk.apply(trunk_vars, np.moveaxis(x.numpy(), 1, -1)))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope='module')
def vfa_float64():
  """V+F+A, DSU (every site in step 1, a mix in step 2) and AMD, float64: both sides' rows."""
  encoders, batch, labels = _setup(('video', 'flow', 'audio'))
  heads, t_rows, channels = port_parity.torch_port_run(encoders, batch, labels, hidden=16)
  with jax.enable_x64(True):
    j_rows = port_parity.jax_port_run(encoders, heads, channels, batch, labels, hidden=16)
  return (encoders, batch, labels), t_rows, j_rows


def _rows(t_rows, j_rows):
  return [(lt, lj, port_parity.view_diffs(tv, jv)) for (lt, tv), (lj, jv) in zip(t_rows, j_rows)]


def test_two_steps_match_float64(vfa_float64):
  _, t_rows, j_rows = vfa_float64
  port_parity.assert_port_parity(_rows(t_rows, j_rows), 'float64')


def test_the_compared_state_moves(vfa_float64):
  """The agreement is not vacuous: from step 1 to step 2 the losses, the trained parameters,
  every BN running statistic (frozen trunk included) and the teacher's statistics change by
  far more than the float64 tolerance."""
  _, t_rows, _ = vfa_float64
  (l1, v1), (l2, v2) = t_rows
  assert abs(l1['loss'] - l2['loss']) > 1e-4
  moved = port_parity.view_diffs(v1, v2)
  for g, d in moved.items():
    if 'trunk params' in g:
      assert d == 0.0, (g, d)     # frozen weights stay (their EMA is the identity)
    elif 'teacher' in g:
      assert d > 1e-7, (g, d)     # (1 - beta) of the student's change
    else:
      assert d > 1e-5, (g, d)


def _one_bn_update_per_step(impl):
  """Variant: BN momentum 0 in the second student pass, so the running statistics are updated
  once per step instead of the port's twice."""
  for enc in impl.encs.values():
    bns = [mod for mod in enc.modules() if isinstance(mod, nn.BatchNorm2d)]
    calls = [0]

    def trunk(x, orig=enc.trunk, bns=bns, calls=calls):
      calls[0] += 1
      for bn in bns:
        bn.momentum = 0.1 if calls[0] % 2 else 0.0
      return orig(x)

    enc.trunk = trunk


def test_detects_one_bn_update_per_step(vfa_float64):
  """Negative control: one running-statistics update per step instead of two fails the
  comparison on the BN statistics (and only there, in step 1)."""
  (encoders, batch, labels), _, j_rows = vfa_float64
  _, t_rows, _ = port_parity.torch_port_run(encoders, batch, labels, hidden=16,
                                      variant=_one_bn_update_per_step)
  diffs = _rows(t_rows, j_rows)[0][2]
  for g, d in diffs.items():
    if 'BN stats' in g:
      assert d > 1e-4 if 'student' in g else d > 1e-7, (g, d)
    else:
      assert d < 1e-9, (g, d)
  with pytest.raises(AssertionError, match='BN stats'):
    port_parity.assert_port_parity(_rows(t_rows, j_rows)[:1], 'float64')


def test_two_steps_match_float32():
  encoders, batch, labels = _setup(('flow', 'audio'), seed=3)
  rows = port_parity.port_parity(encoders, batch, labels, dtype='float32', hidden=16)
  port_parity.assert_port_parity(rows, 'float32')
