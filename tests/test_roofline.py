"""mbcd_jax.study.hlo_cost against XLA's cost analysis, and benchmarks/roofline.py on the tiny step."""
import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from mbcd_jax.study import hlo_cost

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _xla_flops(stage):
  cost = stage.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops'])


def _conv(x, w, stride, pad, groups):
  return jax.lax.conv_general_dilated(x, w, stride, pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      feature_group_count=groups)


CONVS = [  # input, kernel, stride, padding, feature groups
    ((2, 17, 13, 3), (7, 7, 3, 8), (2, 2), ((3, 3), (3, 3)), 1),
    ((2, 9, 9, 8), (3, 3, 8, 16), (1, 1), ((1, 1), (1, 1)), 1),
    ((3, 10, 7, 8), (3, 1, 4, 8), (2, 1), ((1, 0), (0, 0)), 2),
    ((2, 6, 6, 16), (1, 1, 16, 4), (2, 2), ((0, 0), (0, 0)), 1),
]


@pytest.mark.parametrize('xs,ws,stride,pad,groups', CONVS)
@pytest.mark.parametrize('which', ['forward', 'input grad', 'kernel grad'])
def test_conv_flops_match_xla_exactly(xs, ws, stride, pad, groups, which):
  """Forward convolutions and both gradients (lhs dilation, batch_group_count, padding taps
  dropped), lowered and CPU-compiled: the parsed flops are XLA's to the flop."""
  conv = functools.partial(_conv, stride=stride, pad=pad, groups=groups)
  x, w = jnp.ones(xs, jnp.float32), jnp.ones(ws, jnp.float32)
  g = jnp.ones(jax.eval_shape(conv, x, w).shape, jnp.float32)
  fn = {'forward': conv,
        'input grad': lambda x, w: jax.vjp(lambda a: conv(a, w), x)[1](g)[0],
        'kernel grad': lambda x, w: jax.vjp(lambda b: conv(x, b), w)[1](g)[0]}[which]
  lowered = jax.jit(fn).lower(x, w)
  ops = hlo_cost.module_ops(lowered.as_text(dialect='hlo', debug_info=True))
  convs = sum(o.flops for o in ops)
  assert convs > 0 and convs == _xla_flops(lowered)
  compiled = lowered.compile()
  assert sum(o.flops for o in hlo_cost.module_ops(compiled.as_text())) == convs


def test_dot_flops():
  a, b = jnp.ones((4, 6, 5)), jnp.ones((4, 5, 3))
  lowered = jax.jit(lambda a, b: jnp.einsum('bij,bjk->bik', a, b)).lower(a, b)
  ops = hlo_cost.module_ops(lowered.as_text(dialect='hlo', debug_info=True))
  assert sum(o.flops for o in ops) == 2 * 4 * 6 * 3 * 5 == _xla_flops(lowered)


def test_bytes_and_free_instructions():
  x = jnp.ones((8, 16), jnp.bfloat16)
  lowered = jax.jit(lambda x: (x * 2).T).lower(x)
  ops = hlo_cost.module_ops(lowered.as_text(dialect='hlo', debug_info=True))
  by = {o.opcode: o for o in ops}
  assert by['multiply'].bytes == 3 * 8 * 16 * 2   # two operands (one broadcast) and the result
  assert by['transpose'].bytes == 2 * 8 * 16 * 2
  assert by['transpose'].group == 'layout: transposes / copies'
  assert 'parameter' not in by and 'constant' not in by


def test_tiny_step_groups_and_totals():
  """The dry-run MBCD step (two ResNet-18 modalities at width 4, port BN mode, batch 2):
  convolution/dot flops are most of XLA's total, the rest within 5%; the groups the roofline
  names are all there; the teacher's own trunk pass costs what the student's does."""
  from benchmarks import roofline  # pylint: disable=g-import-not-at-top
  from benchmarks import device_check as dc  # pylint: disable=g-import-not-at-top
  lowered = roofline.lower_step(dc.TINY, 'mbcd', 'port', 'bfloat16', 2)
  ops = hlo_cost.module_ops(lowered.as_text(dialect='hlo', debug_info=True))
  xla = _xla_flops(lowered)
  convdot = sum(o.flops for o in ops)
  total = convdot + sum(o.other_flops for o in ops)
  assert 0.5 * xla < convdot < xla
  assert total == pytest.approx(xla, rel=0.05)
  groups = hlo_cost.group_table(ops)
  for g in ('trunk convs', 'trunk teacher convs', 'layer4 convs fwd', 'layer4 convs bwd',
            'layer4 teacher convs fwd', 'trunk BN', 'BN running-statistics update',
            'EMA teacher update', 'optimizer (Adam) + grad norm', 'RNG (threefry)', 'DSU',
            'AMD / consistency / distillation / losses'):
    assert g in groups, (g, sorted(groups))
  assert groups['trunk convs']['flops'] == groups['trunk teacher convs']['flops']
  # MBCD's layer4: theta and theta' passes plus the teacher's; its backward at least the forward
  assert groups['layer4 convs fwd']['flops'] == 2 * groups['layer4 teacher convs fwd']['flops']
  assert groups['layer4 convs bwd']['flops'] >= groups['layer4 convs fwd']['flops']
  table = roofline.roofline_rows(ops)
  assert table[-1]['group'] == 'total'
  assert table[-1]['GB unfused'] == pytest.approx(sum(o.bytes for o in ops) / 1e9)
  assert all(r['H200 ms'] <= r['H100 ms'] for r in table)


def test_script_writes_tables(tmp_path):
  res = subprocess.run(
      [sys.executable, '-m', 'benchmarks.roofline', f'--out={tmp_path}',
       '--tiny', '--rows=erm:frozen:float32'],
      cwd=_ROOT, env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True, text=True,
      timeout=600)
  assert res.returncode == 0, res.stderr[-3000:]
  data = json.loads((tmp_path / 'roofline.json').read_text())
  (entry,) = data['rows']
  assert entry['table'][-1]['group'] == 'total' and entry['table'][-1]['H100 ms'] > 0
  assert '| group |' in (tmp_path / 'roofline.md').read_text()
