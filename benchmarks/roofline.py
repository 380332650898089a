r"""A roofline of the train step, computed on the CPU: every convolution, dot and fusion of the
step's HLO with its flops and bytes, grouped, each group placed on a GPU's roofline.

  JAX_PLATFORMS=cpu python -m benchmarks.roofline --out=/tmp/rl            # paper shapes, ~8 min
  JAX_PLATFORMS=cpu python -m benchmarks.roofline --out=/tmp/rl --hlo_dir=/tmp/rl   # reuse HLO
  JAX_PLATFORMS=cpu python -m benchmarks.roofline --out=/tmp/rl --tiny     # seconds (tests)

For each row (default: MBCD and ERM, ``bn_mode='port'``, bfloat16, batch 16; the paper's encoders
and input shapes of ``benchmarks/device_check.py``) the step is traced and lowered on abstract
shapes (nothing runs), its HLO text read by ``mbcd_jax.study.hlo_cost`` and every instruction put in a
group: trunk convolutions (student, teacher), layer4 convolutions forward / backward, BatchNorm
(normalisation and batch statistics; the running-statistics update), the EMA, the optimizer,
AMD / consistency / distillation / losses, DSU, RNG, transposes / copies.

Which module: a GPU's optimized HLO cannot be had without a GPU here (jax 0.10.2 CPU:
``jax.experimental.topologies.get_topology_desc(platform='cuda')`` raises NotImplementedError,
and the CUDA plugin, which does the GPU compile, is not installed), and compiling the step for
the CPU at the paper's shapes takes tens of minutes on 2 shared cores. So by default the
*lowered* module (before XLA's passes) is read: its flops are exactly those XLA's cost analysis
gives the step (the MFU numerator of device_check.py). Its bytes come twice: 'GB unfused', every
instruction reading its operands and writing its result (an upper bound), and 'GB', an ideal
fusion (``hlo_cost.module_ops(ideal_fusion=True)``: each connected region of elementwise,
data-movement and reduce instructions one kernel, reductions materialised, convolutions and dots
as library calls), which the roofline uses: close to what XLA's GPU fusion reaches, a lower
bound where it splits a region. ``--compiled`` reads the CPU-optimized module instead (CPU
fusion decisions; bfloat16 convolutions become float32 there).

Each group's time on a roofline: max(flops / peak, bytes / bandwidth) at the peak and the
bandwidth given (default: 989 TFLOP/s dense bf16 and 3.35 TB/s H100 SXM, 4.8 TB/s H200); the
sum over groups is a lower bound of the step's time if nothing overlapped.
Writes ``<out>/roofline.json`` and ``<out>/roofline.md`` and prints the tables.
"""
import argparse
import functools
import json
import os
import time
from unittest import mock

import jax
import jax.numpy as jnp

from benchmarks import device_check as dc   # benchmarks/: the paper's encoder set and builders
from mbcd_jax.study import hlo_cost
from mbcd_jax.encoders import conv3d as conv3d_lib
from mbcd_jax import step as step_lib

ROWS = (('mbcd', 'port', 'bfloat16'), ('erm', 'port', 'bfloat16'))
GPUS = {'H100': 3.35e12, 'H200': 4.8e12}   # HBM bytes/s (SXM)
PEAK = 989e12                              # dense bf16 flop/s, both


def _lax_conv3d(x, kernel, strides, padding, precision=None):
  """One 3-D convolution, as ``nn.Conv`` computes it (what cuDNN would be handed)."""
  return jax.lax.conv_general_dilated(x, kernel, strides, [(p, p) for p in padding],
                                      dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'),
                                      precision=precision)


def lower_step(enc_set, method, bn_mode, dtype, batch, lax_conv3d=False):
  """The train step lowered on abstract shapes (jax.stages.Lowered); ``lax_conv3d``: every 3-D
  convolution as one ``lax.conv_general_dilated`` instead of ``encoders/conv3d.py``'s 2-D / 1-D
  rewrite (made for XLA's CPU backend)."""
  if lax_conv3d:
    with mock.patch.object(conv3d_lib, 'conv3d', _lax_conv3d):
      return lower_step(enc_set, method, bn_mode, dtype, batch)
  model, spec, tx = dc.build(enc_set, method, bn_mode, dtype)
  rng = jax.random.key(0)
  variables = jax.eval_shape(model.init, rng, dc.abstract_inputs(enc_set, 1))
  state = jax.eval_shape(lambda v: step_lib.make_state(model, spec, tx, *v), variables)
  b = dc.abstract_inputs(enc_set, batch)
  b['label'] = jax.ShapeDtypeStruct((batch,), jnp.int32)
  fn = jax.jit(functools.partial(step_lib.train_step, model=model, spec=spec, tx=tx),
               donate_argnums=(0,))
  return fn.lower(state, b, rng)


def hlo_text(args, row, enc_set):
  """(text, XLA cost-analysis flops or None, seconds) of one row's module, cached in hlo_dir."""
  method, bn_mode, dtype = row
  stage = 'compiled' if args.compiled else 'lowered'
  name = (f'{method}_{bn_mode}_{dtype}_b{args.batch}{"_tiny" if args.tiny else ""}'
          f'{"_lax3d" if args.lax_conv3d else ""}.{stage}.hlo')
  path = os.path.join(args.hlo_dir, name) if args.hlo_dir else None
  if path and os.path.exists(path):
    with open(path) as f:
      return f.read(), None, 0.0
  t = time.perf_counter()
  lowered = lower_step(enc_set, method, bn_mode, dtype, args.batch, args.lax_conv3d)
  if args.compiled:
    compiled = lowered.compile()
    text, cost = compiled.as_text(), compiled.cost_analysis()
  else:
    text, cost = lowered.as_text(dialect='hlo', debug_info=True), lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  sec = time.perf_counter() - t
  if path:
    os.makedirs(args.hlo_dir, exist_ok=True)
    with open(path, 'w') as f:
      f.write(text)
  return text, float((cost or {}).get('flops', 0.0)), sec


def roofline_rows(ops, peak=PEAK, gpus=GPUS):
  """Per group: GFLOP (conv/dot, other), GB (unfused; 'GB': the fused estimate, which the
  roofline uses), intensity, and per GPU the roofline ms and bound."""
  table = hlo_cost.group_table(ops)
  rows = []
  for group, v in table.items():
    flops = v['flops'] + v['other_flops']
    row = {'group': group, 'ops': v['count'], 'conv/dot GFLOP': v['flops'] / 1e9,
           'other GFLOP': v['other_flops'] / 1e9, 'GB unfused': v['bytes'] / 1e9,
           'GB': v['fused_bytes'] / 1e9, 'flop/byte': flops / max(v['fused_bytes'], 1.0)}
    for gpu, bw in gpus.items():
      tc, tm = flops / peak * 1e3, v['fused_bytes'] / bw * 1e3
      row[f'{gpu} ms'] = max(tc, tm)
      row[f'{gpu} bound'] = 'compute' if tc >= tm else 'memory'
    rows.append(row)
  first = next(iter(gpus))
  rows.sort(key=lambda r: -r[f'{first} ms'])
  total = {'group': 'total', 'ops': sum(r['ops'] for r in rows)}
  for k in ('conv/dot GFLOP', 'other GFLOP', 'GB unfused', 'GB'):
    total[k] = sum(r[k] for r in rows)
  total['flop/byte'] = (total['conv/dot GFLOP'] + total['other GFLOP']) / max(total['GB'], 1e-9)
  for gpu in gpus:
    total[f'{gpu} ms'] = sum(r[f'{gpu} ms'] for r in rows)
    total[f'{gpu} bound'] = ''
  for r in rows:
    r['share'] = r[f'{first} ms'] / max(total[f'{first} ms'], 1e-12)
  total['share'] = 1.0
  return rows + [total]


def markdown(result):
  lines = ['# Roofline of the train step', '', ', '.join(f'{k}: {v}' for k, v in
                                                         result['meta'].items()), '']
  for entry in result['rows']:
    lines += [f'## {entry["row"]}', '', '; '.join(entry['notes']), '']
    cols = list(entry['table'][0])
    lines += ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    for r in entry['table']:
      lines.append('| ' + ' | '.join(dc._fmt(r[c]) for c in cols) + ' |')  # pylint: disable=protected-access
    lines.append('')
  return '\n'.join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--out', required=True)
  ap.add_argument('--rows', default=','.join(':'.join(r) for r in ROWS),
                  help='comma-separated method:bn_mode:dtype')
  ap.add_argument('--batch', type=int, default=0, help='default 16 (tiny: 2)')
  ap.add_argument('--tiny', action='store_true', help="device_check's dry-run encoders")
  ap.add_argument('--compiled', action='store_true',
                  help='read the CPU-optimized module (slow at the paper shapes)')
  ap.add_argument('--hlo_dir', default='', help='save / reuse the HLO texts here')
  ap.add_argument('--lax_conv3d', action='store_true',
                  help="3-D convolutions as one lax conv, not encoders/conv3d.py's rewrite")
  args = ap.parse_args()
  args.batch = args.batch or (2 if args.tiny else 16)
  enc_set = dc.TINY if args.tiny else dc.FULL
  result = {'meta': {'jax': jax.__version__, 'backend of the module': 'cpu (compiled)' if
                     args.compiled else 'lowered (backend-independent)', 'batch': args.batch,
                     'peak TFLOP/s': PEAK / 1e12, 'lax_conv3d': args.lax_conv3d,
                     'HBM TB/s': ', '.join(f'{g} {bw / 1e12}' for g, bw in GPUS.items())},
            'rows': []}
  for spec in args.rows.split(','):
    row = tuple(spec.split(':'))
    text, xla_flops, sec = hlo_text(args, row, enc_set)
    t = time.perf_counter()
    ops = hlo_cost.module_ops(text, ideal_fusion=not args.compiled)
    parse_s = time.perf_counter() - t
    table = roofline_rows(ops)
    notes = [f'{len(ops)} instructions parsed in {parse_s:.1f}s'
             + (f', module made in {sec:.0f}s' if sec else ', module read from --hlo_dir')]
    ours = sum(o.flops + o.other_flops for o in ops)
    if xla_flops:
      notes.append(f'XLA cost analysis {xla_flops / 1e9:.6g} GFLOP; parsed {ours / 1e9:.6g} '
                   f'(conv/dot {sum(o.flops for o in ops) / 1e9:.6g})')
    result['rows'].append({'row': ' '.join(row) + f' batch {args.batch}', 'notes': notes,
                           'table': table})
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'roofline.json'), 'w') as f:
      json.dump(result, f, indent=1)
    with open(os.path.join(args.out, 'roofline.md'), 'w') as f:
      f.write(markdown(result))
  print(markdown(result))


if __name__ == '__main__':
  main()
