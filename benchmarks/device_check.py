r"""One time-boxed accelerator check of the MBCD train step: parity, speed, memory, PyTorch.

  python -m benchmarks.device_check --out=DIR [--budget_s=420]   # on a GPU / TPU machine
  JAX_PLATFORMS=cpu python -m benchmarks.device_check --out=DIR --dry_run   # every path, tiny

Writes ``DIR/device_check.json`` and ``DIR/device_check.md`` after every finished piece, so a run
stopped from outside keeps what finished. Parts, in the order they run:

1. ``parity``: ``mbcd_jax.step.train_step`` (method 'mbcd', BN modes 'port' and 'frozen') for two
   steps on the accelerator and on the CPU backend from the same variables, batch and key, float32
   under ``jax.default_matmul_precision('highest')``: |loss| differences per step and max
   |difference| of the parameters / BN statistics / teacher after two steps; then the bfloat16
   encoders (``dtype='bfloat16'``) on the accelerator against the float32 CPU run.
2. ``perf``: the paper's encoders at full size and shape (SlowFast-R101 on 32x224x224 RGB,
   SlowOnly-R50 on 8x224x224 flow, ResNet-18 on 257x1004 audio), ERM and MBCD, BN modes port and
   frozen, float32 and bfloat16, batch 16: compile time, median step time, clips/s, MFU (XLA's
   cost-analysis flops of the lowered step / step time / the chip's peak), XLA's memory
   analysis and the device's peak memory so far. Rows run in priority order (MBCD port bf16
   first) until the part's time box ends.
3. ``torch``: the port's step in eager PyTorch (``TorchPortMBCD`` of
   ``mbcd_jax/reference/mbcd_torch.py``, CUDA) and our port-mode step on the same weights (the
   converter) and the same random draws: loss terms of two steps side by side, step times; then
   ``torch.compile`` of the encoders if the time box allows. Skipped without torch + CUDA.
4. ``max_batch``: the largest batch that fits, doubling from 32 until out of memory, for MBCD
   and ERM port bf16 (after the PyTorch part: XLA's allocator keeps what it grew to).
5. ``pipeline``: training-loader clips/s with every host core on a prepared store at the paper
   shapes made on the spot (needs grain, array_record, PyAV; skipped with the missing module).

``--plan=next`` runs the second check instead (see docs/performance/roofline.md), each part in
its time box, results written as they come:

6. ``profile``: the MBCD port bf16 step at batch 16 under ``jax.profiler.trace`` (3 steps; the
   raw trace kept in ``DIR/trace``), its device events (``args.hlo_op``) summed per instruction
   of the compiled module and grouped as ``benchmarks/roofline.py`` groups them
   (``mbcd_jax.study.hlo_cost``): measured ms per step per group beside that group's roofline ms.
7. ``perf`` with the rows the first check cut (ERM, frozen, float32, batch 32 and 64), then
   ``max_batch``, ``torch`` (eager step timing first, then ``torch.compile``), ``pipeline``,
8. ``whole_run``: ``benchmarks/whole_run.py`` (prepare + training at the paper shapes, bf16,
   every host core) for as many epochs of one target as its time box allows; its
   ``whole_run.json`` is kept phase by phase.
Both plans keep XLA's persistent compilation cache in ``DIR/xla_cache``: parts that compile the
same step load it.

``--dry_run`` runs every part on the CPU with reduced encoders (depth 50, base width 8) and tiny
inputs. Imports only ``mbcd_jax`` modules that need no ml_collections / grain (part 3 supplies a
minimal ``ml_collections.ConfigDict`` stand-in when the package is absent, for the reused
benchmark module).
"""
import argparse
import dataclasses
import functools
import gc
import json
import os
import re
import statistics
import sys
import tempfile
import time
import traceback
import types

# XLA must not take 75% of the GPU up front: PyTorch shares the device in part 3.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from mbcd_jax import encoders as encoders_lib
from mbcd_jax import methods, models  # pylint: disable=g-import-not-at-top,wrong-import-position
from mbcd_jax import step as step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

# The paper-shape set-up pipeline_throughput.py shares (kept importable as device_check.X).
from benchmarks._paper_setup import (
    FULL, HIDDEN, MODALITIES, NUM_CLASSES, SMALL, TINY, Cfg, build, encoder_config)

# Dense peak TFLOP/s by jax device_kind prefix: (bfloat16, float32 as XLA runs it by default).
# NVIDIA H100/H200 SXM: bf16 989; float32 matmuls/convs run as TF32 under JAX's default
# precision (494; true fp32 is 67). TPU: float32 runs as bf16 passes by default, so bf16 peak.
PEAK_TFLOPS = (
    ('NVIDIA H200', 989.0, 494.0),
    ('NVIDIA H100', 989.0, 494.0),
    ('NVIDIA A100', 312.0, 156.0),
    ('TPU v4', 275.0, 275.0),
    ('TPU v5 lite', 197.0, 197.0),
    ('TPU v5e', 197.0, 197.0),
    ('TPU v5p', 459.0, 459.0),
    ('TPU v5', 459.0, 459.0),
    ('TPU v6 lite', 918.0, 918.0),
    ('TPU v6e', 918.0, 918.0),
)

# Part 2's rows in priority order: (method, bn_mode, dtype).
PERF_ROWS = (('mbcd', 'port', 'bfloat16'), ('mbcd', 'port', 'float32'),
             ('erm', 'port', 'bfloat16'), ('mbcd', 'frozen', 'bfloat16'),
             ('erm', 'frozen', 'bfloat16'), ('erm', 'port', 'float32'),
             ('mbcd', 'frozen', 'float32'), ('erm', 'frozen', 'float32'))
MAX_BATCH_ROWS = (('mbcd', 'port', 'bfloat16'), ('erm', 'port', 'bfloat16'))
# The dry run's subsets: each method, BN mode and dtype once, one batch size.
DRY_PERF_ROWS = (('mbcd', 'port', 'bfloat16'), ('erm', 'frozen', 'float32'))
DRY_MAX_BATCH_ROWS = MAX_BATCH_ROWS[:1]
# Share of the remaining budget each part may use (re-divided as parts finish early).
SHARES = {'parity': 0.2, 'perf': 0.4, 'torch': 0.2, 'max_batch': 0.12, 'pipeline': 0.08}
# --plan=next: the second check (what the first cut, the profile, the whole run), in order.
NEXT_SHARES = {'profile': 0.3, 'perf': 0.2, 'torch': 0.2, 'pipeline': 0.05,
               'max_batch': 0.1, 'whole_run': 0.15}
NEXT_PERF_ROWS = (('erm', 'port', 'bfloat16', 16), ('mbcd', 'port', 'bfloat16', 32),
                  ('mbcd', 'frozen', 'bfloat16', 16), ('mbcd', 'port', 'float32', 16),
                  ('mbcd', 'port', 'bfloat16', 64), ('erm', 'frozen', 'bfloat16', 16))
DRY_NEXT_PERF_ROWS = (('erm', 'port', 'bfloat16', 4),)


class Clock:
  """Elapsed time, the global deadline and per-part time boxes."""

  def __init__(self, budget_s):
    self.t0 = time.perf_counter()
    self.budget_s = budget_s

  def elapsed(self):
    return time.perf_counter() - self.t0

  def left(self):
    return self.budget_s - self.elapsed()

  def box(self, part, done, shares=None):
    """Seconds ``part`` may use: its share of what is left among the parts not yet done."""
    shares = shares or SHARES
    rest = [p for p in shares if p not in done]
    return max(0.0, self.left()) * shares[part] / sum(shares[p] for p in rest)


def log(clock, msg):
  print(f'[{clock.elapsed():7.1f}s] {msg}', flush=True)


class Report:
  """The JSON result and its markdown rendering, rewritten after every piece."""

  def __init__(self, out, meta):
    self.out, self.data = out, {'meta': meta, 'parts': {}}
    os.makedirs(out, exist_ok=True)

  def part(self, name):
    return self.data['parts'].setdefault(name, {'rows': [], 'notes': []})

  def save(self):
    with open(os.path.join(self.out, 'device_check.json'), 'w') as f:
      json.dump(self.data, f, indent=1, default=str)
    with open(os.path.join(self.out, 'device_check.md'), 'w') as f:
      f.write(markdown(self.data))


def _fmt(v):
  if isinstance(v, float):
    return f'{v:.3g}' if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4) else f'{v:.4g}'
  return str(v)


def markdown(data):
  """Every part as a table of its rows (columns: union of the rows' keys) plus its notes."""
  meta = data['meta']
  lines = ['# Accelerator check', '',
           ', '.join(f'{k}: {_fmt(v)}' for k, v in meta.items()), '']
  for name, part in data['parts'].items():
    lines += [f'## {name}', '']
    if part.get('skipped'):
      lines += [f'skipped: {part["skipped"]}', '']
    rows = part['rows']
    if rows:
      cols = []
      for r in rows:
        cols += [k for k in r if k not in cols]
      lines += ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
      lines += ['| ' + ' | '.join(_fmt(r.get(c, '')) for c in cols) + ' |' for r in rows]
      lines.append('')
    lines += [f'- {n}' for n in part['notes']]
    lines.append('')
  return '\n'.join(lines)




def host_batch(enc_set, b, seed=0):
  rng = np.random.default_rng(seed)
  out = {m: rng.standard_normal((b, *shape), np.float32) for m, (_, _, shape) in enc_set.items()}
  out['label'] = rng.integers(0, NUM_CLASSES, b).astype(np.int32)
  return out


def device_batch(enc_set, b, device):
  """Random inputs made on ``device`` (no host transfer of paper-size clips)."""
  keys = jax.random.split(jax.random.key(0), len(enc_set) + 1)
  with jax.default_device(device):
    out = {m: jax.jit(functools.partial(jax.random.normal, shape=(b, *shape)))(k)
           for k, (m, (_, _, shape)) in zip(keys, enc_set.items())}
    out['label'] = jax.random.randint(keys[-1], (b,), 0, NUM_CLASSES, jnp.int32)
  return out


def abstract_inputs(enc_set, b):
  """Input shapes and dtypes of a batch of ``b`` examples (no labels), as ShapeDtypeStructs."""
  return {m: jax.ShapeDtypeStruct((b, *shape), jnp.float32)
          for m, (_, _, shape) in enc_set.items()}


def init_shapes(enc_set, side=32):
  """Per-example input shapes for initialising: every axis but channels cut to ``side``.

  The encoders end in global pooling, so their variables do not depend on the input's size;
  initialising the paper-size model at its full input shapes compiled for 124 s on an H200.
  """
  return {m: tuple(min(d, side) for d in shape[:-1]) + shape[-1:]
          for m, (_, _, shape) in enc_set.items()}


def init_variables(enc_set, device, cache={}):  # pylint: disable=dangerous-default-value
  """(params, frozen) of the float32 model, initialised under jit on ``device`` at reduced input
  shapes (checked against the full shapes' abstract variables); cached per encoder set and
  device: the dry run's parts share them."""
  key = (id(enc_set), str(device))
  if key not in cache:
    model, _, _ = build(enc_set, 'erm', 'frozen', 'float32')
    rng = jax.random.key(0)
    small = {m: jnp.zeros((1, *s), jnp.float32) for m, s in init_shapes(enc_set).items()}
    full = abstract_inputs(enc_set, 1)
    with jax.default_device(device):
      variables = jax.jit(model.init)(rng, small)
    want = jax.eval_shape(model.init, rng, full)
    got = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), variables)
    if got != want:
      raise ValueError('initialising at reduced input shapes changed the variables\' shapes: '
                       f'{jax.tree.structure(got)} vs {jax.tree.structure(want)}')
    cache[key] = variables
  return cache[key]


def tree_max_diff(a, b):
  leaves = jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
      if np.size(x) else 0.0, a, b))
  return max(leaves) if leaves else 0.0


def tree_max_abs(a):
  leaves = [float(np.max(np.abs(np.asarray(x, np.float64)))) for x in jax.tree.leaves(a)
            if np.size(x)]
  return max(leaves) if leaves else 0.0


def is_oom(e):
  s = str(e)
  return 'RESOURCE_EXHAUSTED' in s or 'out of memory' in s.lower() or 'OOM' in s


def _flops(stage):
  """XLA's cost-analysis flop count of a ``Lowered`` or ``Compiled`` step (0 when unknown)."""
  try:
    cost = stage.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return 0.0
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get('flops', 0.0))


def peak_tflops(kind):
  for prefix, bf16, f32 in PEAK_TFLOPS:
    if kind.startswith(prefix):
      return {'bfloat16': bf16, 'float32': f32}
  return None


def memory_stats(device):
  try:
    s = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    s = {}
  return s


# ---------------------------------------------------------------------------------- part 1
def jit_step(model, spec, tx):
  return jax.jit(functools.partial(step_lib.train_step, model=model, spec=spec, tx=tx))


def run_steps(fn, model, spec, tx, variables, batch, device, steps=2):
  """``steps`` calls of the jitted step ``fn`` on ``device`` from host copies; returns (losses,
  host state)."""
  params, frozen = jax.device_put(variables, device)
  state = step_lib.make_state(model, spec, tx, params, frozen)
  state = jax.device_put(state, device)
  b = jax.device_put(batch, device)
  rng = jax.device_put(jax.random.key(0), device)
  losses = []
  for _ in range(steps):
    state, metrics = fn(state, b, rng)
    losses.append(float(metrics['loss']))
  return losses, jax.device_get(state)


def state_groups(state):
  return {'params': state.student.params, 'batch_stats': state.student.batch_stats,
          'teacher': state.teacher.params, 'teacher_batch_stats': state.teacher.batch_stats}


def part_parity(args, clock, report, accel, cpu, box):
  part = report.part('parity')
  enc_set = TINY if args.dry_run else SMALL
  b = 2 if args.dry_run else 4
  end = clock.elapsed() + box
  batch = host_batch(enc_set, b)
  variables = jax.device_get(init_variables(enc_set, cpu))
  part['notes'].append(
      f'encoders {", ".join(f"{m}: {n} {kw}" for m, (n, kw, _) in enc_set.items())}; inputs '
      + ', '.join(f'{m} {"x".join(map(str, s))}' for m, (_, _, s) in enc_set.items())
      + f'; batch {b}; method mbcd, DSU on in port mode; accelerator {accel.device_kind} vs '
      'cpu; float32 under default_matmul_precision("highest"); bf16 = bfloat16 encoders on the '
      'accelerator (default precision) vs the float32 CPU run; rel = max|diff| / max|cpu value|')
  cost = None
  for bn_mode in ('port', 'frozen'):
    if cost is not None and clock.elapsed() + cost > end:
      part['notes'].append(f'{bn_mode}: skipped (time box {box:.0f}s)')
      continue
    t = clock.elapsed()
    model, spec, tx = build(enc_set, 'mbcd', bn_mode, 'float32')
    with jax.default_matmul_precision('highest'):
      fn = jit_step(model, spec, tx)   # compiled once per backend
      l_acc, s_acc = run_steps(fn, model, spec, tx, variables, batch, accel)
      l_cpu, s_cpu = run_steps(fn, model, spec, tx, variables, batch, cpu)
    ref = state_groups(s_cpu)
    rows = [('float32', l_acc, state_groups(s_acc))]
    log(clock, f'parity {bn_mode} float32 done')
    if cost is None or clock.elapsed() + cost / 2 <= end:
      model16, _, _ = build(enc_set, 'mbcd', bn_mode, 'bfloat16')
      l16, s16 = run_steps(jit_step(model16, spec, tx), model16, spec, tx, variables, batch,
                           accel)
      rows.append(('bfloat16', l16, state_groups(s16)))
      log(clock, f'parity {bn_mode} bfloat16 done')
    else:
      part['notes'].append(f'{bn_mode} bfloat16: skipped (time box)')
    for dtype, losses, groups in rows:
      row = {'bn_mode': bn_mode, 'dtype': dtype}
      for i, (la, lc) in enumerate(zip(losses, l_cpu)):
        row[f'loss{i + 1} cpu'] = lc
        row[f'|dloss{i + 1}|'] = abs(la - lc)
      for g, tree in groups.items():
        if tree is None:
          continue
        d = tree_max_diff(tree, ref[g])
        row[f'{g} max|d|'] = d
        row[f'{g} rel'] = d / max(tree_max_abs(ref[g]), 1e-30)
      part['rows'].append(row)
    report.save()
    cost = clock.elapsed() - t


# ---------------------------------------------------------------------------------- part 2 / 4
def time_config(enc_set, method, bn_mode, dtype, b, variables, accel, reps, peaks):
  """Compiles and times one train step at batch ``b``; returns a result row (may raise OOM)."""
  model, spec, tx = build(enc_set, method, bn_mode, dtype)
  # Copies of every leaf: make_state's teacher shares the student's buffers, and a donated
  # argument must not hold one buffer twice.
  state = jax.tree.map(jnp.copy, step_lib.make_state(model, spec, tx, *variables))
  batch = device_batch(enc_set, b, accel)
  rng = jax.device_put(jax.random.key(1), accel)
  jitted = jax.jit(functools.partial(step_lib.train_step, model=model, spec=spec, tx=tx),
                   donate_argnums=(0,))
  t = time.perf_counter()
  lowered = jitted.lower(state, batch, rng)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t
  # The MFU's flops come from the lowered (pre-optimisation) HLO: after GPU compilation the
  # convolutions are cuDNN custom calls that XLA's cost analysis counts as 0 flops (on the H200
  # the compiled count was 1.1 of the 13 TFLOP of the MBCD step), so only the lowered count is
  # the same on every backend.
  flops = _flops(lowered)
  compiled_flops = _flops(compiled)
  try:
    mem = compiled.memory_analysis()
    temp_gib = (mem.temp_size_in_bytes + mem.argument_size_in_bytes
                + mem.output_size_in_bytes - mem.alias_size_in_bytes) / 2**30
  except Exception:  # pylint: disable=broad-except
    temp_gib = float('nan')
  for _ in range(2):   # warm-up
    state, metrics = compiled(state, batch, rng)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready((state.student.params, metrics))
    times.append(time.perf_counter() - t)
  sec = statistics.median(times)
  row = {'method': method, 'bn_mode': bn_mode, 'dtype': dtype, 'batch': b,
         'compile_s': compile_s, 'step_ms': 1e3 * sec, 'clips/s': b / sec,
         'TFLOP/step': flops / 1e12, 'TFLOP/s': flops / sec / 1e12,
         'compiled TFLOP/step': compiled_flops / 1e12, 'loss': float(metrics['loss'])}
  if peaks:
    row['MFU'] = flops / sec / 1e12 / peaks[dtype]
  row['XLA mem GiB'] = temp_gib
  stats = memory_stats(accel)
  if 'peak_bytes_in_use' in stats:
    row['peak GiB so far'] = stats['peak_bytes_in_use'] / 2**30
  del state, batch, metrics, compiled
  gc.collect()
  return row


def part_perf(args, clock, report, accel, box, variables, peaks):
  part = report.part('perf')
  enc_set = TINY if args.dry_run else FULL
  b = 2 if args.dry_run else 16
  end = clock.elapsed() + box
  part['notes'].append(
      'encoders ' + ', '.join(f'{m}: {n} {kw}' for m, (n, kw, _) in enc_set.items())
      + '; inputs ' + ', '.join(f'{m} {"x".join(map(str, s))}' for m, (_, _, s) in enc_set.items())
      + f'; median of {args.reps} steps after 2 warm-up steps; state donated; MFU = XLA cost '
      'analysis flops / step time / peak '
      + (f'{peaks}' if peaks else f'(no peak known for {accel.device_kind!r})')
      + ' TFLOP/s; "XLA mem" = compiled arguments + outputs + temporaries - aliased; '
      '"peak so far" = memory_stats peak_bytes_in_use of the process up to this row')
  cost = None
  if args.plan == 'next':
    rows = DRY_NEXT_PERF_ROWS if args.dry_run else NEXT_PERF_ROWS
  else:
    rows = [r + (b,) for r in (DRY_PERF_ROWS if args.dry_run else PERF_ROWS)]
  for method, bn_mode, dtype, b in rows:
    if cost is not None and clock.elapsed() + cost * b / 16 > end:
      part['notes'].append(f'{method} {bn_mode} {dtype}: skipped (time box {box:.0f}s)')
      continue
    t = clock.elapsed()
    try:
      row = time_config(enc_set, method, bn_mode, dtype, b, variables, accel, args.reps, peaks)
    except Exception as e:  # pylint: disable=broad-except
      if not is_oom(e):
        raise
      row = {'method': method, 'bn_mode': bn_mode, 'dtype': dtype, 'batch': b,
             'step_ms': 'OOM'}
    part['rows'].append(row)
    report.save()
    cost = (clock.elapsed() - t) * 16 / b
    log(clock, f'perf {method} {bn_mode} {dtype} b{b}: {row.get("step_ms")} ms')


def part_max_batch(args, clock, report, accel, box, variables, peaks):
  part = report.part('max_batch')
  enc_set = TINY if args.dry_run else FULL
  start, cap = (4, 4) if args.dry_run else (32, 1024)
  end = clock.elapsed() + box
  part['notes'].append(f'doubling from {start} (cap {cap}) until out of memory; XLA may use '
                       '75% of the device memory (XLA_PYTHON_CLIENT_MEM_FRACTION default)')
  for method, bn_mode, dtype in DRY_MAX_BATCH_ROWS if args.dry_run else MAX_BATCH_ROWS:
    b, best, cost = start, None, None
    while b <= cap:
      if cost is not None and clock.elapsed() + 2 * cost > end:  # doubling costs ~2x
        part['notes'].append(f'{method} {bn_mode} {dtype}: stopped before batch {b} (time box)')
        break
      t = clock.elapsed()
      try:
        best = time_config(enc_set, method, bn_mode, dtype, b, variables, accel,
                           max(2, args.reps // 2), peaks)
      except Exception as e:  # pylint: disable=broad-except
        if not is_oom(e):
          raise
        part['notes'].append(f'{method} {bn_mode} {dtype}: batch {b} out of memory')
        gc.collect()
        break
      cost = clock.elapsed() - t
      log(clock, f'max_batch {method} {bn_mode} {dtype} b{b}: {best["step_ms"]:.1f} ms')
      b *= 2
    if best is not None:
      part['rows'].append(best)
      report.save()
    if clock.elapsed() > end:
      break


# ---------------------------------------------------------------------------------- part 3
def _torch_draws(draws, device):
  """SharedDraws with the noise as tensors on ``device`` (the port's step mixes them with its
  activations there)."""
  import torch  # pylint: disable=g-import-not-at-top
  t = lambda x: torch.as_tensor(np.asarray(x, np.float32), device=device)
  dsu = {m: {s: (u, [(t(a), t(c)) for a, c in eps]) for s, (u, eps) in sites.items()}
         for m, sites in draws.dsu.items()}
  return types.SimpleNamespace(dsu=dsu, amd={m: t(v) for m, v in draws.amd.items()})


def _import_port_reference():
  """mbcd_jax/reference/ (the PyTorch twins: encoders, the port's step, the parity harness),
  with a ConfigDict stand-in if ml_collections is absent."""
  try:
    import ml_collections  # pylint: disable=g-import-not-at-top,unused-import
    shim = False
  except ImportError:
    sys.modules['ml_collections'] = types.SimpleNamespace(ConfigDict=Cfg)
    shim = True
  # pylint: disable-next=g-import-not-at-top
  from mbcd_jax.reference import encoders_torch, mbcd_torch, port_parity
  return encoders_torch, mbcd_torch, port_parity, shim


def torch_net(ref, kind, kw):
  """The PyTorch reference network of our encoder ``kind`` built with ``kw``."""
  if kind == 'slowfast_r101':
    return ref.ResNet3dSlowFast(depth=kw.get('depth', 101),
                                slow_base=kw.get('slow_base_channels', 64))
  if kind == 'slowonly_r50_flow':
    return ref.ResNet3dSlowOnly(depth=kw.get('depth', 50), in_channels=2,
                                base_channels=kw.get('base_channels', 64))
  return ref.AVENet(width=kw.get('width', 64))


def part_torch(args, clock, report, accel, box):
  part = report.part('torch')
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    part['skipped'] = 'torch missing'
    return
  cuda = torch.cuda.is_available()
  if not cuda and not args.dry_run:
    part['skipped'] = f'torch {torch.__version__} without CUDA'
    return
  dev = torch.device('cuda' if cuda else 'cpu')
  ref, mbcd_torch, port_parity, shim = _import_port_reference()
  end = clock.elapsed() + box
  b = 2 if args.dry_run else 16
  enc_set = TINY if args.dry_run else FULL
  nets = {m: (kind, kw, functools.partial(torch_net, ref, kind, kw))
          for m, (kind, kw, _) in enc_set.items()}
  torch.backends.cudnn.benchmark = True
  part['notes'].append(
      f'torch {torch.__version__} on {dev}; port semantics (BN train mode, DSU, AMD, EMA over '
      f'the whole state), float32, batch {b}, head dropout 0, same weights and random draws; '
      f'cudnn.benchmark, TF32 convs {torch.backends.cudnn.allow_tf32}, TF32 matmul '
      f'{torch.backends.cuda.matmul.allow_tf32}; JAX float32 at its default precision'
      + ('; ml_collections absent: a dict stand-in served the reused benchmark' if shim else ''))
  encoders = {m: port_parity.paper_encoder(kind, kw, ref.randomize_(mk(), seed=i))
              for i, (m, (kind, kw, mk)) in enumerate(nets.items())}
  g = torch.Generator().manual_seed(100)
  shapes = {m: (s[-1],) + tuple(s[:-1]) for m, (_, _, s) in enc_set.items()}  # torch layout
  batch = {m: torch.randn((b,) + shapes[m], generator=g) for m in enc_set}
  labels = torch.randint(0, NUM_CLASSES, (b,), generator=g)
  # On the host: the port's step, its heads and our variables from the same weights (the
  # converter reads host copies), before any step changes them.
  dims = {m: encoders_lib.build(e.name, e.kwargs).feature_dim for m, e in encoders.items()}
  impl = mbcd_torch.TorchPortMBCD({m: e.torch for m, e in encoders.items()}, dims,
                                  hidden=HIDDEN, dtype=torch.float32)
  heads = ({m: mbcd_torch.torch_head_np(impl.uni[m]) for m in impl.encs},
           mbcd_torch.torch_head_np(impl.fused))
  jax_encoders = {m: dataclasses.replace(e, kwargs=dict(e.kwargs, dtype='float32'))
                  for m, e in encoders.items()}
  model, spec, tx, state = port_parity.build_jax_port(
      jax_encoders, heads[0], heads[1], hidden=HIDDEN, dsu=True, amd=True, dtype='float32')
  state = jax.device_put(state, accel)
  # Module.to keeps the Parameter objects: the optimizer (no state yet) still holds them.
  for mod in (*impl.encs.values(), *impl.t_encs.values(), *impl.uni.values(), impl.fused,
              impl.t_fused):
    mod.to(dev)
  encs = impl.encs
  tb = {m: x.to(dev) for m, x in batch.items()}
  tl = labels.to(dev)
  channels = mbcd_torch.dsu_channels(encs, tb)
  jb = {m: jax.device_put(np.moveaxis(x.numpy(), 1, -1), accel) for m, x in batch.items()}
  jb['label'] = jax.device_put(labels.numpy().astype(np.int32), accel)
  draws = [mbcd_torch.make_draws(1000 + i, channels, b, gates=port_parity.PORT_GATES[i])
           for i in range(2)]
  sync = torch.cuda.synchronize if cuda else (lambda: None)

  # Two steps of each from the same start: loss terms side by side (the first check did
  # this; --plan=next goes straight to the PyTorch timings).
  if args.plan == 'next':
    _torch_timings(args, clock, part, report, end, impl, tb, tl, _torch_draws(draws[0], dev),
                   cuda, b)
    del impl, tb, state
    gc.collect()
    if cuda:
      part['notes'].append(
          f'torch peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB')
      torch.cuda.empty_cache()
    return
  t = clock.elapsed()
  t_losses = [impl.step(tb, tl, _torch_draws(d, dev)) for d in draws]
  log(clock, f'torch: 2 port steps in {clock.elapsed() - t:.1f}s')
  jstep = port_parity.jax_port_step_fn(model, spec, tx)
  t = clock.elapsed()
  j_losses = []
  for d in draws:
    state, metrics = jstep(state, jb, d.dsu, d.amd)
    j_losses.append({k: float(v) for k, v in metrics.items()})
  log(clock, f'jax: 2 port steps (compile included) in {clock.elapsed() - t:.1f}s')
  for i, (lt, lj) in enumerate(zip(t_losses, j_losses)):
    row = {'what': f'step {i + 1} loss terms'}
    for k, v in lt.items():
      row[f'{k} torch'] = v
      row[f'{k} |d|'] = abs(v - lj[k])
    part['rows'].append(row)
  report.save()

  def time_fn(fn, reps):
    for _ in range(1 if args.dry_run else 2):   # warm-up (the first call compiles)
      fn()
    ts = []
    for _ in range(reps):
      t0 = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

  td = _torch_draws(draws[0], dev)
  jd = (draws[0].dsu, draws[0].amd)   # as in the steps above: no retrace
  holder = [state]

  def jax_call():
    holder[0], m = jstep(holder[0], jb, *jd)
    jax.block_until_ready(m)

  def torch_call():
    impl.step(tb, tl, td)
    sync()

  times = {}
  for name, fn in (('torch eager', torch_call), ('jax jit', jax_call)):
    if clock.elapsed() > end:
      part['notes'].append(f'{name} timing: skipped (time box)')
      continue
    times[name] = time_fn(fn, args.reps)
    part['rows'].append({'what': f'{name} step', 'step_ms': 1e3 * times[name],
                         'clips/s': b / times[name]})
    report.save()
    log(clock, f'{name}: {1e3 * times[name]:.1f} ms/step')

  # torch.compile of the encoders' trunk and layer4 (the step's optimizer and autograd.grad
  # stay eager), if there is time: compiling is minutes at the paper's sizes.
  if not cuda:
    part['notes'].append('torch.compile: not tried on the CPU (dry run)')
  elif end - clock.elapsed() < 90:
    part['notes'].append('torch.compile: skipped (time box)')
  else:
    try:
      for e in encs.values():
        e.trunk = torch.compile(e.trunk)
        e.layer4 = torch.compile(e.layer4)
      t = clock.elapsed()
      torch_call()
      log(clock, f'torch.compile: first step in {clock.elapsed() - t:.1f}s')
      if clock.elapsed() < end:
        sec = time_fn(torch_call, args.reps)
        part['rows'].append({'what': 'torch compiled encoders step', 'step_ms': 1e3 * sec,
                             'clips/s': b / sec})
      else:
        part['notes'].append('torch.compile: compiled but not timed (time box)')
    except Exception as e:  # pylint: disable=broad-except
      part['notes'].append(f'torch.compile failed: {type(e).__name__}: {str(e)[:200]}')
  report.save()
  del impl, encs, tb, holder, state
  gc.collect()
  if cuda:
    part['notes'].append(f'torch peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB')
    torch.cuda.empty_cache()


def _torch_timings(args, clock, part, report, end, impl, tb, tl, td, cuda, b):
  """--plan=next: the port's eager step timed, then with torch.compile'd encoders."""
  import torch  # pylint: disable=g-import-not-at-top
  sync = torch.cuda.synchronize if cuda else (lambda: None)

  def call():
    impl.step(tb, tl, td)
    sync()

  def timed(reps):
    ts = []
    for _ in range(reps):
      t0 = time.perf_counter()
      call()
      ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

  for _ in range(1 if args.dry_run else 2):
    call()
  sec = timed(args.reps)
  part['rows'].append({'what': 'torch eager step', 'step_ms': 1e3 * sec, 'clips/s': b / sec})
  report.save()
  log(clock, f'torch eager: {1e3 * sec:.1f} ms/step')
  if not cuda:
    part['notes'].append('torch.compile: not tried on the CPU (dry run)')
    return
  if end - clock.elapsed() < 60:
    part['notes'].append('torch.compile: skipped (time box)')
    return
  try:
    for e in impl.encs.values():
      e.trunk = torch.compile(e.trunk)
      e.layer4 = torch.compile(e.layer4)
    t = clock.elapsed()
    call()
    part['notes'].append(f'torch.compile: first step {clock.elapsed() - t:.1f}s')
    call()
    sec = timed(args.reps)
    part['rows'].append({'what': 'torch compiled encoders step', 'step_ms': 1e3 * sec,
                         'clips/s': b / sec})
  except Exception as e:  # pylint: disable=broad-except
    part['notes'].append(f'torch.compile failed: {type(e).__name__}: {str(e)[:200]}')
  report.save()


# ---------------------------------------------------------------------------------- part 5
PIPELINE_MODULES = ('grain', 'array_record', 'av', 'ml_collections', 'cv2')


def _skip_without(part: dict, modules) -> bool:
  """Marks ``part`` skipped, naming the first of ``modules`` that cannot be imported."""
  for mod in modules:
    try:
      __import__(mod)
    except ImportError:
      part['skipped'] = f'{mod} missing'
      return True
  return False


def part_pipeline(args, clock, report, box):
  part = report.part('pipeline')
  if _skip_without(part, PIPELINE_MODULES):
    return
  from benchmarks import pipeline_throughput as pt  # pylint: disable=g-import-not-at-top
  from mbcd_jax.data import prepare  # pylint: disable=g-import-not-at-top
  clips, frames, batch = (1, 40, 2) if args.dry_run else (8, 96, 16)
  workers = 0 if args.dry_run else os.cpu_count()
  with tempfile.TemporaryDirectory(prefix='device_check_pipe_') as root:
    src, out = os.path.join(root, 'src'), os.path.join(root, 'prepared')
    t = time.perf_counter()
    pt.make_tree(src, clips, frames, frames / pt.FPS)
    index = prepare.run('hac', src, out, workers=os.cpu_count(), progress=False)
    prep_s = time.perf_counter() - t
    log(clock, f'pipeline: store of {len(index["entries"])} clips in {prep_s:.1f}s')
    seconds = 2.0 if args.dry_run else max(5.0, min(30.0, box - (clock.elapsed() - t) - 20))
    rate, startup = pt.time_ours(out, batch, workers, 1, seconds)
  part['rows'].append({'loader': f'prepared store, {workers} worker processes', 'batch': batch,
                       'clips/s': rate, 'first batch s': startup,
                       'host cores': os.cpu_count()})
  part['notes'].append(f'{clips} train clips per domain x 3 domains, {frames} frames each, '
                       f'prepared in {prep_s:.1f}s; timed {seconds:.0f}s')
  report.save()


# ---------------------------------------------------------------------------------- part 6
def trace_times(trace_dir):
  """{hlo_op: total microseconds} of the device events in the newest perfetto trace under
  ``trace_dir`` (the host's events when no device process is named, as on the CPU)."""
  import glob  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(os.path.join(trace_dir, '**', '*perfetto_trace.json.gz'),
                           recursive=True), key=os.path.getmtime)
  if not paths:
    return {}
  with gzip.open(paths[-1], 'rt') as f:
    doc = json.load(f)
  events = doc['traceEvents'] if isinstance(doc, dict) else doc
  pnames = {e.get('pid'): str(e.get('args', {}).get('name', '')) for e in events
            if e.get('ph') == 'M' and e.get('name') == 'process_name'}
  device = {pid for pid, n in pnames.items() if re.search(r'GPU|TPU|device', n, re.I)}
  out = {}
  for e in events:
    op = (e.get('args') or {}).get('hlo_op')
    if e.get('ph') != 'X' or not op or (device and e.get('pid') not in device):
      continue
    if 'train_step' not in str((e.get('args') or {}).get('hlo_module', 'train_step')):
      continue
    out[op] = out.get(op, 0.0) + float(e.get('dur', 0.0))
  return out


def part_profile(args, clock, report, accel, box, variables, peaks):
  """The MBCD port bf16 step under the profiler: measured time per roofline group."""
  from mbcd_jax.study import hlo_cost  # pylint: disable=g-import-not-at-top
  part = report.part('profile')
  enc_set = TINY if args.dry_run else FULL
  b, steps = (2, 2) if args.dry_run else (16, 3)
  model, spec, tx = build(enc_set, 'mbcd', 'port', 'bfloat16')
  state = jax.tree.map(jnp.copy, step_lib.make_state(model, spec, tx, *variables))
  batch = device_batch(enc_set, b, accel)
  rng = jax.device_put(jax.random.key(1), accel)
  t = time.perf_counter()
  compiled = jax.jit(functools.partial(step_lib.train_step, model=model, spec=spec, tx=tx),
                     donate_argnums=(0,)).lower(state, batch, rng).compile()
  log(clock, f'profile: compiled in {time.perf_counter() - t:.1f}s')
  text = compiled.as_text()
  with open(os.path.join(args.out, 'train_step.compiled.hlo'), 'w') as f:
    f.write(text)
  for _ in range(2):
    state, metrics = compiled(state, batch, rng)
  jax.block_until_ready(metrics)
  trace_dir = os.path.join(args.out, 'trace')
  t = time.perf_counter()
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(steps):
      state, metrics = compiled(state, batch, rng)
    jax.block_until_ready((state.student.params, metrics))
  wall_ms = (time.perf_counter() - t) * 1e3 / steps
  times = trace_times(trace_dir)
  ops = hlo_cost.module_ops(text)
  group_of = {o.name: o.group for o in ops}
  peak = (peaks or {}).get('bfloat16', 989.0) * 1e12
  bw = {'NVIDIA H100': 3.35e12, 'NVIDIA H200': 4.8e12}.get(
      next((k for k in ('NVIDIA H100', 'NVIDIA H200') if accel.device_kind.startswith(k)), ''),
      3.35e12)
  rows = {}
  for o in ops:
    r = rows.setdefault(o.group, {'group': o.group, 'measured ms/step': 0.0, 'ops': 0,
                                  'GFLOP': 0.0, 'GB': 0.0})
    r['ops'] += 1
    r['GFLOP'] += (o.flops + o.other_flops) / 1e9
    r['GB'] += o.bytes / 1e9
  unmapped = 0.0
  for op, us in times.items():
    g = group_of.get(op)
    if g is None:
      unmapped += us
      continue
    rows[g]['measured ms/step'] += us / 1e3 / steps
  table = sorted(rows.values(), key=lambda r: -r['measured ms/step'])
  for r in table:
    r['roofline ms'] = max(r['GFLOP'] * 1e9 / peak, r['GB'] * 1e9 / bw) * 1e3
    r['x roofline'] = r['measured ms/step'] / max(r['roofline ms'], 1e-9)
  table.append({'group': '(events not in the module)', 'measured ms/step': unmapped / 1e3 / steps})
  part['rows'] += table
  part['notes'].append(
      f'batch {b}, {steps} profiled steps, wall {wall_ms:.1f} ms/step; {len(times)} traced ops '
      f'of {len(ops)} instructions; measured = sum of event durations (streams may overlap); '
      f'roofline at {peak / 1e12:.0f} TFLOP/s and {bw / 1e12} TB/s from the compiled module '
      '(DIR/train_step.compiled.hlo; raw trace in DIR/trace)')
  report.save()
  del state, batch, compiled
  gc.collect()


# ---------------------------------------------------------------------------------- part 8
def part_whole_run(args, clock, report, box):
  """benchmarks/whole_run.py for one target, as many epochs as the time box allows (its own
  whole_run.json, phase by phase, is kept if the box ends first)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  part = report.part('whole_run')
  if _skip_without(part, PIPELINE_MODULES):
    return
  out = os.path.join(args.out, 'whole_run')
  cmd = [sys.executable, '-m', 'benchmarks.whole_run', f'--out={out}', '--targets=human',
         f'--cache_dir={os.path.join(args.out, "xla_cache")}']
  if args.dry_run:
    cmd.append('--dry_run')
  else:
    cores = os.cpu_count() or 1
    cmd += ['--dtype=bfloat16', f'--workers={cores}', f'--loader_workers={max(1, cores - 2)}',
            f'--epochs={args.whole_run_epochs}']
  part['notes'].append('command: ' + ' '.join(cmd[1:]))
  try:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, box),
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    part['notes'].append(f'exit {res.returncode}')
    if res.returncode:
      part['notes'].append('stderr: ' + res.stderr[-500:].replace('\n', ' | '))
  except subprocess.TimeoutExpired:
    part['notes'].append(f'stopped by its time box ({box:.0f}s); the phases done are below')
  path = os.path.join(out, 'whole_run.json')
  if os.path.exists(path):
    with open(path) as f:
      doc = json.load(f)
    for ph in doc['phases']:
      part['rows'].append({'phase': ph['phase'], 'wall_s': ph['wall_s'],
                           'peak_rss_mib': ph['peak_rss_mib']})
      for k, v in ph.get('split', {}).items():
        part['rows'].append({'phase': f'  {k}', 'wall_s': v})
  report.save()


# ---------------------------------------------------------------------------------- flops
def count_flops(enc_set, rows, b):
  """Lowered-HLO TFLOP per train step of each (method, bn_mode, dtype) row at batch ``b``.

  Traces and lowers only (abstract shapes, nothing compiled or run), so it runs anywhere in
  seconds: the MFU denominator of part 2's rows, checkable on a laptop.
  """
  out = []
  for method, bn_mode, dtype in rows:
    model, spec, tx = build(enc_set, method, bn_mode, dtype)
    rng = jax.random.key(0)
    variables = jax.eval_shape(model.init, rng, abstract_inputs(enc_set, 1))
    state = jax.eval_shape(lambda v, m=model, s=spec, t=tx: step_lib.make_state(m, s, t, *v),
                           variables)
    batch = abstract_inputs(enc_set, b)
    batch['label'] = jax.ShapeDtypeStruct((b,), jnp.int32)
    lowered = jax.jit(functools.partial(step_lib.train_step, model=model, spec=spec,
                                        tx=tx)).lower(state, batch, rng)
    out.append({'method': method, 'bn_mode': bn_mode, 'dtype': dtype, 'batch': b,
                'TFLOP/step': _flops(lowered) / 1e12})
  return out


# ---------------------------------------------------------------------------------- main
def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--out', required=True, help='folder for device_check.json / .md')
  ap.add_argument('--dry_run', action='store_true', help='CPU, reduced encoders, tiny inputs')
  ap.add_argument('--budget_s', type=float, default=420.0, help='wall-clock budget, seconds')
  ap.add_argument('--reps', type=int, default=0, help='timed steps per row (default 5; dry 2)')
  ap.add_argument('--parts', default='', help='comma-separated subset of the plan\'s parts')
  ap.add_argument('--plan', default='first', choices=('first', 'next'),
                  help="'first': the parts above; 'next': the second check (docstring)")
  ap.add_argument('--whole_run_epochs', type=int, default=2,
                  help='--plan=next: epochs of the whole run (its time box may stop it)')
  ap.add_argument('--flops_only', action='store_true',
                  help='print the lowered TFLOP/step of every perf row (batch 16) and exit')
  args = ap.parse_args()
  args.reps = args.reps or (2 if args.dry_run else 5)
  if args.flops_only:
    rows = count_flops(TINY if args.dry_run else FULL,
                       DRY_PERF_ROWS if args.dry_run else PERF_ROWS, 2 if args.dry_run else 16)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'flops.json'), 'w') as f:
      json.dump(rows, f, indent=1)
    print(markdown({'meta': {'jax': jax.__version__}, 'parts': {
        'flops': {'rows': rows, 'notes': ['lowered (pre-optimisation) HLO, XLA cost analysis']}}}))
    return
  shares = NEXT_SHARES if args.plan == 'next' else SHARES
  args.parts = args.parts or ','.join(shares)
  # Parts that compile the same step (profile and perf, a rerun of the script) load it.
  jax.config.update('jax_compilation_cache_dir', os.path.join(args.out, 'xla_cache'))
  clock = Clock(args.budget_s)
  accel = jax.devices()[0]
  cpu = jax.devices('cpu')[0]
  peaks = peak_tflops(accel.device_kind)
  meta = {'jax': jax.__version__, 'backend': jax.default_backend(),
          'device_kind': accel.device_kind, 'devices': jax.device_count(),
          'host cores': os.cpu_count(), 'dry_run': args.dry_run, 'budget_s': args.budget_s,
          'plan': args.plan,
          'peak TFLOP/s (bf16, f32)': (f'{peaks["bfloat16"]}, {peaks["float32"]}' if peaks
                                        else 'unknown')}
  report = Report(args.out, meta)
  report.save()
  log(clock, f'{accel.device_kind} ({jax.default_backend()}), budget {args.budget_s:.0f}s, '
      f'dry_run={args.dry_run}')
  wanted = args.parts.split(',')
  done, variables = [p for p in shares if p not in wanted], None
  for name in shares:
    if name not in wanted:
      continue
    box = clock.box(name, done, shares)
    log(clock, f'part {name}: time box {box:.0f}s')
    part = report.part(name)
    if box < (1 if args.dry_run else 20):
      part['skipped'] = f'out of time ({clock.left():.0f}s left of the budget)'
      done.append(name)
      report.save()
      continue
    try:
      if name == 'parity':
        part_parity(args, clock, report, accel, cpu, box)
      elif name in ('perf', 'max_batch', 'profile'):
        t = clock.elapsed()
        if variables is None:   # the part's time box includes this
          variables = init_variables(TINY if args.dry_run else FULL, accel)
          log(clock, f'{"tiny" if args.dry_run else "full-size"} variables initialised in '
              f'{clock.elapsed() - t:.1f}s')
        fn = {'perf': part_perf, 'max_batch': part_max_batch, 'profile': part_profile}[name]
        fn(args, clock, report, accel, max(0.0, box - (clock.elapsed() - t)), variables, peaks)
      elif name == 'torch':
        part_torch(args, clock, report, accel, box)
      elif name == 'whole_run':
        part_whole_run(args, clock, report, box)
      else:
        part_pipeline(args, clock, report, box)
    except Exception as e:  # pylint: disable=broad-except
      part['error'] = f'{type(e).__name__}: {str(e)[:2000]}'
      part['notes'].append('error: ' + part['error'].splitlines()[0][:300])
      traceback.print_exc()
    done.append(name)
    report.save()
    log(clock, f'part {name} finished')
  log(clock, f'done; wrote {os.path.join(args.out, "device_check.json")}')
  print(markdown(report.data), flush=True)


if __name__ == '__main__':
  main()
