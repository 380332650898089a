"""Per-instruction flops and bytes of an HLO module, read from its text, grouped by source.

XLA's ``cost_analysis()`` gives a module's totals; this gives them per instruction, so that a
train step can be placed on a roofline piece by piece (``benchmarks/roofline.py``). It reads the
text of ``jax.jit(f).lower(...).as_text(dialect='hlo', debug_info=True)`` (the module before
XLA's passes: the same on every backend) or of ``compiled.as_text()`` (after them: fused, laid
out, for that backend).

* flops: convolutions and dots exactly as XLA's ``HloCostAnalysis`` counts them (2 per
  multiply-add, kernel taps that fall in the padding not counted, ``feature_group_count`` and
  ``batch_group_count`` divided out); elementwise and reduce instructions one flop per result /
  operand element (XLA counts some ops, e.g. ``exp``, as transcendentals instead: the totals of
  this module and XLA's differ there, never in the convolutions).
* bytes: each top-level instruction reads its operands and writes its result once; a fusion
  counts its operands and outputs, not what stays inside it. Parameters, constants, tuples,
  bitcasts and ``get-tuple-element`` move nothing. On the lowered module this is the unfused
  traffic (an upper bound); on a compiled one, that backend's fusion decisions.
* group: from the instruction's metadata: its ``op_name`` (the Flax module path and the
  ``jvp`` / ``transpose`` wrappers of autodiff) and its stack frames (the module's
  ``FileNames`` / ``StackFrames`` tables: which file and function of ``mbcd_jax`` or optax made
  it). See :func:`classify`.

Only the standard library: the parser runs on text saved anywhere.
"""
import collections
import dataclasses
import linecache
import math
import re
from typing import Iterable

DTYPE_BYTES = {'pred': 1, 's4': 0.5, 'u4': 0.5, 's8': 1, 'u8': 1, 'f8e4m3fn': 1, 'f8e5m2': 1,
               'bf16': 2, 'f16': 2, 's16': 2, 'u16': 2, 'f32': 4, 's32': 4, 'u32': 4,
               'f64': 8, 's64': 8, 'u64': 8, 'c64': 8, 'c128': 16, 'token': 0}
# Instructions that move no data of their own.
FREE = {'parameter', 'constant', 'tuple', 'get-tuple-element', 'bitcast', 'after-all',
        'partition-id', 'replica-id', 'iota', 'opt-barrier', 'add-dependency'}
# Instructions that only move data (their bytes are the point, no flops).
MOVES = {'copy', 'transpose', 'broadcast', 'reshape', 'slice', 'dynamic-slice',
         'dynamic-update-slice', 'concatenate', 'pad', 'reverse', 'gather', 'scatter',
         'copy-start', 'copy-done', 'convert', 'bitcast-convert', 'select', 'reduce-precision'}
CONTROL = {'while', 'call', 'conditional', 'fusion', 'custom-call', 'async-start',
           'async-done', 'async-update'}

_SHAPE = re.compile(r'\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]')
_INSTR = re.compile(r'^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$')
_COMP = re.compile(r'^\s*(ENTRY\s+)?%?([\w.\-]+)\s*(\(.*\))?\s*(->\s*.*)?\{\s*$')


@dataclasses.dataclass
class Instr:
  name: str
  opcode: str
  type_str: str
  operands: list
  attrs: str
  op_name: str = ''
  frame: int = 0
  root: bool = False


@dataclasses.dataclass
class Op:
  """One top-level instruction's cost (a fusion counted as one)."""
  name: str
  opcode: str          # for a fusion: 'fusion:<root opcode>'
  flops: float         # conv / dot flops (see conv_dot_flops)
  other_flops: float   # elementwise / reduce flops
  bytes: float         # operands read + result written
  op_name: str
  frames: tuple        # ((file, function, line), ...) innermost first
  shape: str
  group: str = ''
  fused_bytes: float = 0.0   # module_ops(ideal_fusion=True): this op's share of its region's


def _shapes(type_str: str) -> list:
  """[(dtype, dims)] of an HLO type: one array or a tuple of them."""
  out = []
  for dt, dims in _SHAPE.findall(type_str):
    if dt in DTYPE_BYTES:
      out.append((dt, tuple(int(d) for d in dims.split(',') if d)))
  return out


def type_bytes(type_str: str) -> float:
  return sum(DTYPE_BYTES[dt] * math.prod(dims) for dt, dims in _shapes(type_str))


def _split_top(s: str) -> list:
  """Splits ``s`` at commas outside brackets."""
  parts, depth, cur = [], 0, []
  for ch in s:
    if ch in '([{':
      depth += 1
    elif ch in ')]}':
      depth -= 1
    if ch == ',' and depth == 0:
      parts.append(''.join(cur))
      cur = []
    else:
      cur.append(ch)
  if cur:
    parts.append(''.join(cur))
  return [p.strip() for p in parts if p.strip()]


def _parse_instr(line: str):
  m = _INSTR.match(line)
  if not m:
    return None
  name, rest = m.group(2), m.group(3)
  # type: a tuple "( ... )" or one array "f32[..]{..}"
  if rest.startswith('('):
    depth = 0
    for i, ch in enumerate(rest):
      depth += ch == '('
      depth -= ch == ')'
      if depth == 0:
        break
    type_str, rest = rest[:i + 1], rest[i + 1:].lstrip()
  else:
    sp = rest.find(' ')
    type_str, rest = rest[:sp], rest[sp + 1:].lstrip()
  mo = re.match(r'([\w\-]+)\(', rest)
  if not mo:
    return None
  opcode = mo.group(1)
  depth, start = 0, mo.end() - 1
  for i in range(start, len(rest)):
    depth += rest[i] == '('
    depth -= rest[i] == ')'
    if depth == 0:
      break
  operand_str, attrs = rest[start + 1:i], rest[i + 1:]
  operands = []
  for tok in _split_top(operand_str):
    # "%name", "name", or "f32[2]{0} %name" (older printers)
    operands.append(tok.split()[-1].lstrip('%'))
  op_name = re.search(r'op_name="([^"]*)"', attrs)
  frame = re.search(r'stack_frame_id=(\d+)', attrs)
  return Instr(name, opcode, type_str, operands, attrs,
               op_name.group(1) if op_name else '', int(frame.group(1)) if frame else 0,
               bool(m.group(1)))


@dataclasses.dataclass
class Module:
  computations: dict    # name -> [Instr]
  entry: str
  frames: dict          # stack frame id -> ((file, function, line), parent id)

  def stack(self, frame_id: int) -> tuple:
    out, seen = [], set()
    while frame_id and frame_id in self.frames and frame_id not in seen:
      seen.add(frame_id)
      loc, frame_id = self.frames[frame_id]
      out.append(loc)
    return tuple(out)


def parse_module(text: str) -> Module:
  """Computations, their instructions and the stack-frame tables of an HLO module's text."""
  comps, entry, cur = {}, None, None
  files, funcs, locs, frames = {}, {}, {}, {}
  table = None
  for line in text.splitlines():
    s = line.strip()
    if s in ('FileNames', 'FunctionNames', 'FileLocations', 'StackFrames'):
      table = s
      continue
    if table and s and cur is None:
      m = re.match(r'(\d+)\s+(.*)$', s)
      if m:
        k, v = int(m.group(1)), m.group(2)
        if table == 'FileNames':
          files[k] = v.strip('"')
        elif table == 'FunctionNames':
          funcs[k] = v.strip('"')
        elif table == 'FileLocations':
          f = re.search(r'file_name_id=(\d+)', v)
          fn = re.search(r'function_name_id=(\d+)', v)
          ln = re.search(r'line=(\d+)', v)
          locs[k] = (int(f.group(1)) if f else 0, int(fn.group(1)) if fn else 0,
                     int(ln.group(1)) if ln else 0)
        else:
          fl = re.search(r'file_location_id=(\d+)', v)
          pa = re.search(r'parent_frame_id=(\d+)', v)
          # The printed parent id is one more than the parent's printed key (0: none).
          frames[k] = (int(fl.group(1)) if fl else 0, int(pa.group(1)) - 1 if pa else 0)
        continue
    if not s:
      table = None if cur is None else table
      continue
    if cur is None:
      m = _COMP.match(line)
      if m and not s.startswith('HloModule'):
        table = None
        cur = m.group(2)
        comps[cur] = []
        if m.group(1):
          entry = cur
      continue
    if s == '}':
      cur = None
      continue
    ins = _parse_instr(line)
    if ins is not None:
      comps[cur].append(ins)
  resolved = {}
  for k, (loc, parent) in frames.items():
    f, fn, ln = locs.get(loc, (0, 0, 0))
    resolved[k] = ((files.get(f, ''), funcs.get(fn, ''), ln), parent)
  if entry is None and comps:
    entry = list(comps)[-1]
  return Module(comps, entry, resolved)


# ------------------------------------------------------------------------- flops
def _attr(attrs: str, key: str):
  m = re.search(key + r'=(\{[^}]*\}|[^,\s]+)', attrs)
  return m.group(1) if m else None


def _valid_taps(in_size, out_size, k, stride, lo, lhs_dil, rhs_dil):
  """(output position, kernel tap) pairs of one spatial axis that read a real input element."""
  n = 0
  span = (in_size - 1) * lhs_dil
  for o in range(out_size):
    base = o * stride - lo
    for t in range(k):
      p = base + t * rhs_dil
      if 0 <= p <= span and p % lhs_dil == 0:
        n += 1
  return n


def conv_flops(ins: Instr, shapes: dict) -> float:
  """Flops of a convolution as XLA's HloCostAnalysis counts them."""
  labels = _attr(ins.attrs, 'dim_labels')
  lhs_l, rest = labels.split('_', 1)
  rhs_l, out_l = rest.split('->')
  lhs = shapes[ins.operands[0]][0][1]
  rhs = shapes[ins.operands[1]][0][1]
  out = _shapes(ins.type_str)[0][1]
  fgc = int(_attr(ins.attrs, 'feature_group_count') or 1)
  bgc = int(_attr(ins.attrs, 'batch_group_count') or 1)
  window = re.search(r'window=\{([^}]*)\}', ins.attrs)
  win = {}
  for item in (window.group(1).split() if window else []):
    k, v = item.split('=')
    win[k] = v
  nsp = len([c for c in rhs_l if c.isdigit()])
  size = [int(x) for x in win.get('size', 'x'.join(['1'] * nsp)).split('x')]
  stride = [int(x) for x in win.get('stride', 'x'.join(['1'] * nsp)).split('x')]
  pads = [tuple(int(y) for y in x.split('_')) for x in
          win.get('pad', 'x'.join(['0_0'] * nsp)).split('x')]
  lhs_dil = [int(x) for x in win.get('lhs_dilate', 'x'.join(['1'] * nsp)).split('x')]
  rhs_dil = [int(x) for x in win.get('rhs_dilate', 'x'.join(['1'] * nsp)).split('x')]
  taps = 1
  for d in range(nsp):
    c = str(d)
    taps *= _valid_taps(lhs[lhs_l.index(c)], out[out_l.index(c)], size[d], stride[d],
                        pads[d][0], lhs_dil[d], rhs_dil[d])
  batch = lhs[lhs_l.index('b')]
  in_feat = lhs[lhs_l.index('f')]
  out_feat = rhs[rhs_l.index('o')]
  return 2.0 * batch / bgc * in_feat / fgc * out_feat * taps


def dot_flops(ins: Instr, shapes: dict) -> float:
  lhs = shapes[ins.operands[0]][0][1]
  contract = _attr(ins.attrs, 'lhs_contracting_dims')
  dims = [int(x) for x in contract.strip('{}').split(',') if x] if contract else []
  out = _shapes(ins.type_str)
  n_out = math.prod(out[0][1]) if out else 0
  return 2.0 * n_out * math.prod(lhs[d] for d in dims)


def _elementwise_flops(ins: Instr, shapes: dict) -> float:
  if ins.opcode in FREE or ins.opcode in MOVES or ins.opcode in CONTROL:
    return 0.0
  if ins.opcode in ('reduce', 'reduce-window'):
    src = shapes.get(ins.operands[0]) if ins.operands else None
    return float(math.prod(src[0][1])) if src else 0.0
  out = _shapes(ins.type_str)
  return float(sum(math.prod(d) for _, d in out))


# ------------------------------------------------------------------------- the walk
def _called(ins: Instr) -> list:
  names = []
  for key in ('calls', 'to_apply', 'body', 'condition', 'true_computation',
              'false_computation'):
    v = _attr(ins.attrs, key)
    if v:
      names += [x.strip().lstrip('%') for x in v.strip('{}').split(',')]
  v = re.search(r'branch_computations=\{([^}]*)\}', ins.attrs)
  if v:
    names += [x.strip().lstrip('%') for x in v.group(1).split(',')]
  return names


class _Costs:
  def __init__(self, module: Module):
    self.m = module
    self.shapes = {}
    for comp in module.computations.values():
      for ins in comp:
        self.shapes[ins.name] = _shapes(ins.type_str)
    self.cache = {}

  def inner(self, comp_name: str):
    """(conv/dot flops, other flops, root instruction, the costliest conv/dot) of a fused
    computation, everything inside it counted."""
    if comp_name in self.cache:
      return self.cache[comp_name]
    flops = other = 0.0
    heavy, heavy_f, root = None, -1.0, None
    for ins in self.m.computations.get(comp_name, []):
      f = self.flops(ins)
      if f > heavy_f and f > 0:
        heavy, heavy_f = ins, f
      flops += f
      if ins.opcode in ('fusion', 'call'):
        for c in _called(ins):
          other += self.inner(c)[1]
      else:
        other += _elementwise_flops(ins, self.shapes)
      root = ins
    self.cache[comp_name] = (flops, other, root, heavy)
    return self.cache[comp_name]

  def flops(self, ins: Instr) -> float:
    if ins.opcode == 'convolution':
      return conv_flops(ins, self.shapes)
    if ins.opcode == 'dot':
      return dot_flops(ins, self.shapes)
    if ins.opcode == 'custom-call' and 'dim_labels' in ins.attrs and 'window' in ins.attrs:
      return conv_flops(ins, self.shapes)   # a cuDNN convolution
    if ins.opcode in ('fusion', 'call'):
      return sum(self.inner(c)[0] for c in _called(ins))
    return 0.0

  def operand_bytes(self, ins: Instr) -> float:
    return sum(sum(DTYPE_BYTES[dt] * math.prod(d) for dt, d in self.shapes.get(o, []))
               for o in ins.operands)


def _trip_count(ins: Instr) -> int:
  m = re.search(r'known_trip_count[^0-9]*(\d+)', ins.attrs)
  return int(m.group(1)) if m else 1


# Instructions no fusion crosses: library calls (cuDNN / cuBLAS), control flow, the
# computation's inputs and outputs.
BOUNDARY = {'convolution', 'dot', 'custom-call', 'while', 'call', 'conditional', 'fusion',
            'parameter', 'constant', 'get-tuple-element', 'tuple', 'after-all', 'sort',
            'rng-bit-generator', 'all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all',
            'async-start', 'async-done', 'opt-barrier', 'optimization-barrier'}
# Their results are written out before any consumer runs (a reduction is its own kernel).
MATERIALISED = {'reduce', 'reduce-window', 'select-and-scatter'}


def _ideal_fusion(comp: list, ops_of: dict, costs) -> list:
  """Sets ``fused_bytes`` of one computation's ops as XLA's GPU fusion would roughly give them:
  each connected group of elementwise and data-movement instructions is one kernel (it reads
  each outside tensor it uses once and writes each tensor used outside it once); a reduction is
  a kernel of its own that recomputes its elementwise producers from their inputs, shared by
  the reductions that read the same inputs (so a training-mode BatchNorm reads its input three
  times: the mean, the variance around it, the normalisation) and writes its result. Convolutions and dots keep their bytes. Returns the
  names of the ops it set (before any loop's trip count)."""
  by_name = {ins.name: ins for ins in comp}
  nbytes_of = lambda n: sum(DTYPE_BYTES[dt] * math.prod(d) for dt, d in costs.shapes.get(n, []))
  fusible = {ins.name for ins in comp if ins.opcode not in BOUNDARY}
  loop = {n for n in fusible if by_name[n].opcode not in MATERIALISED}
  parent = {n: n for n in loop}

  def find(x):
    while parent[x] != x:
      parent[x] = parent[parent[x]]
      x = parent[x]
    return x

  for n in loop:
    for o in by_name[n].operands:
      if o in loop:
        parent[find(o)] = find(n)
  used_outside = set()
  for ins in comp:
    if ins.name in fusible and ins.name not in loop:
      continue   # a reduction recomputes what it reads
    for o in ins.operands:
      if o in loop and (ins.name not in loop or find(ins.name) != find(o)):
        used_outside.add(o)
    if ins.root and ins.name in loop:
      used_outside.add(ins.name)
  regions = collections.defaultdict(list)
  for name in loop:
    regions[find(name)].append(name)
  for members in regions.values():
    inside = set(members)
    inputs = {o for n in members for o in by_name[n].operands if o not in inside}
    total_bytes = (sum(nbytes_of(o) for o in inputs)
                   + sum(type_bytes(by_name[n].type_str) for n in members if n in used_outside))
    mops = [ops_of[n] for n in members if n in ops_of]
    total = sum(op.bytes for op in mops)
    for op in mops:
      op.fused_bytes = total_bytes * (op.bytes / total if total else 1.0 / len(mops))
  # Reductions: the inputs of their elementwise cone, read once per group of siblings that read
  # the same inputs (XLA's multi-output fusion: e.g. BN's backward sums of dy and dy * x_hat),
  # and their results.
  siblings = collections.defaultdict(list)
  for n in fusible - loop:
    leaves, seen, stack = set(), set(), list(by_name[n].operands)
    while stack:
      o = stack.pop()
      if o in seen:
        continue
      seen.add(o)
      if o in loop:
        stack.extend(by_name[o].operands)
      else:
        leaves.add(o)
    siblings[frozenset(leaves)].append(n)
  for leaves, members in siblings.items():
    read = sum(nbytes_of(o) for o in leaves) / len(members)
    for n in members:
      if n in ops_of:
        ops_of[n].fused_bytes = read + type_bytes(by_name[n].type_str)
  return [n for n in fusible if n in ops_of]


def _flatten(module: Module, comp_name: str, prefix: str = '', params=None, ctx=None):
  """One computation's instructions with every ``call`` inlined (as XLA does before fusing):
  callee instructions renamed ``<call>/<name>``, its parameters replaced by the call's
  operands, the call's result (or its tuple's elements) by the callee's root. An inlined
  instruction without metadata of its own (jitted helpers such as ``jax.nn.relu`` and
  ``jnp.pad`` are traced once, apart from their call sites) takes the call site's ``op_name``
  (prefixed) and stack frame. Returns (instructions, the root's name)."""
  out, rename, tuples, root = [], {}, {}, None
  for ins in module.computations.get(comp_name, []):
    ops = [rename.get(o, o) for o in ins.operands]
    if ins.opcode == 'parameter' and params is not None:
      rename[ins.name] = params[int(ins.operands[0])] if ins.operands else ''
      root = rename[ins.name] if ins.root else root
      continue
    if ins.opcode == 'get-tuple-element' and ops and ops[0] in tuples:
      idx = int(_attr(ins.attrs, 'index') or 0)
      rename[ins.name] = tuples[ops[0]][idx]
      root = rename[ins.name] if ins.root else root
      continue
    if ins.opcode == 'call':
      called = _called(ins)
      site = (f'{ctx[0]}/{ins.op_name}' if ctx and ctx[0] else ins.op_name,
              ins.frame or (ctx[1] if ctx else 0))
      sub, sub_root = _flatten(module, called[0], f'{prefix}{ins.name}/', ops, site)
      out += sub
      rename[ins.name] = sub_root
      if sub_root in tuples:
        tuples[ins.name] = tuples[sub_root]
      root = sub_root if ins.root else root
      continue
    name = prefix + ins.name
    op_name, frame = ins.op_name, ins.frame
    if ctx:
      op_name = f'{ctx[0]}/{op_name}' if ctx[0] else op_name
      frame = frame or ctx[1]
    new = dataclasses.replace(ins, name=name, operands=ops, op_name=op_name, frame=frame,
                              root=ins.root and params is None)
    if ins.opcode == 'tuple':
      tuples[name] = ops
    out.append(new)
    rename[ins.name] = name
    if ins.root:
      root = name
  for ins in out:   # names that pointed at an inlined tuple's elements
    ins.operands = [rename.get(o, o) for o in ins.operands]
  return out, root


def module_ops(text: str, ideal_fusion: bool = False) -> list:
  """Every top-level instruction of the entry computation (loops and calls entered, fusions
  counted whole) as an :class:`Op` with its group (:func:`classify`); with ``ideal_fusion``
  (for a lowered module) also each op's share of its fusion region's bytes
  (:func:`_ideal_fusion`), else ``fused_bytes`` = ``bytes``."""
  module = parse_module(text)
  costs = _Costs(module)
  ops = []

  def walk(comp_name, times):
    ops_of = {}
    comp, _ = _flatten(module, comp_name)
    for ins in comp:
      costs.shapes[ins.name] = _shapes(ins.type_str)
    for ins in comp:
      if ins.opcode == 'while':
        n = times * _trip_count(ins)
        for c in _called(ins):
          walk(c, n)
        continue
      if ins.opcode in ('conditional', 'async-start'):
        for c in _called(ins):
          walk(c, times)
        continue
      if ins.opcode in FREE:
        continue
      meta_ins, opcode = ins, ins.opcode
      if ins.opcode == 'fusion':
        called = _called(ins)
        flops, other, root, heavy = costs.inner(called[0]) if called else (0, 0, None, None)
        roots = [i for i in module.computations.get(called[0], [])] if called else []
        root = roots[-1] if roots else None
        opcode = f'fusion:{root.opcode if root else "?"}'
        if heavy is not None:
          meta_ins = heavy if heavy.op_name else ins
        elif not ins.op_name:
          # The root's metadata, else the first inner instruction that has any.
          named = [i for i in ([root] if root else []) + roots if i.op_name]
          meta_ins = named[0] if named else ins
      else:
        flops = costs.flops(ins)
        other = _elementwise_flops(ins, costs.shapes)
      nbytes = costs.operand_bytes(ins) + type_bytes(ins.type_str)
      op = Op(ins.name, opcode, times * flops, times * other, times * nbytes,
              meta_ins.op_name or ins.op_name, module.stack(meta_ins.frame or ins.frame),
              ins.type_str.split('{')[0])
      op.group = classify(op)
      op.fused_bytes = op.bytes
      ops.append(op)
      ops_of[ins.name] = op
    if ideal_fusion:
      for name in _ideal_fusion(comp, ops_of, costs):
        ops_of[name].fused_bytes *= times

  walk(module.entry, 1)
  return ops


# ------------------------------------------------------------------------- groups
def _where(op_name: str) -> str:
  if re.search(r'Stage|layer4', op_name):
    return 'layer4'
  if re.search(r'Trunk|ResNet3dPart|/conv1/|/layer[123]/|FrameTrunk|SpecTrunk', op_name):
    return 'trunk'
  if re.search(r'Head|Dense', op_name):
    return 'heads'
  return ''


_RNG_OPS = re.compile(r'(threefry|random_bits|random_split|random_fold_in|_uniform|_normal|'
                      r'erf_inv|iota_2x32_shape|shift_right_logical|shift_left)')
# Source text of a step.py line -> group, for what jax attributes to train_step itself (optax's
# and the EMA's own frames are library frames that jax leaves out of the stack).
_STEP_LINES = (('optimizer (Adam) + grad norm', re.compile(r'tx\.update|apply_updates|tree\.norm')),
               ('EMA teacher update', re.compile(r'ema\.|average\(')),
               ('BN running-statistics update', re.compile(r'update_batch_stats|update_running')))


def _step_line_group(frames) -> str:
  for f, fn, line in frames:
    if f.endswith('step.py'):
      text = linecache.getline(f, line)
      for group, pattern in _STEP_LINES:
        if pattern.search(text):
          return group
      return ''
  return ''


def classify(op: Op) -> str:
  """The op's group, first match wins:

  1. layout: a transpose, copy or reverse (alone or as a fusion's root) with no flops;
  2. the step's bookkeeping by source file / function: EMA (ema.py), optimizer (optax),
     BN running statistics (``update_batch_stats`` / ``update_running``), DSU (dsu.py), RNG
     (jax.random's threefry), AMD / consistency / distillation / losses;
  3. encoder work by Flax module path: trunk or layer4 (the trainable stage) or heads; forward
     or backward (an autodiff ``transpose(...)`` in the path); convolutions / matmuls, BN
     (batchnorm.py: normalisation and batch statistics) or other elementwise work; the
     teacher's forward pass (``MultiModalModel.predict`` in the stack) apart.
  """
  files = ' '.join(f for f, _, _ in op.frames)
  funcs = {fn.split('.')[-1] for _, fn, _ in op.frames}
  kind = op.opcode.split(':')[-1]
  if op.flops == 0 and kind in ('transpose', 'copy', 'copy-start', 'copy-done', 'reverse'):
    return 'layout: transposes / copies'
  if op.flops == 0:
    if 'ema.py' in files:
      return 'EMA teacher update'
    if 'optax' in files:
      return 'optimizer (Adam) + grad norm'
    if funcs & {'update_batch_stats', 'update_running'}:
      return 'BN running-statistics update'
    if 'dsu.py' in files:
      return 'DSU'
    if _RNG_OPS.search(op.op_name):
      return 'RNG (threefry)'
    by_line = _step_line_group(op.frames)
    if by_line and not _where(op.op_name):
      return by_line
  where = _where(op.op_name)
  if not where:
    if re.search(r'amd\.py|consistency\.py|distill\.py|losses\.py', files):
      return 'AMD / consistency / distillation / losses'
    return 'other' + (' (matmul)' if op.flops else '')
  teacher = 'predict' in funcs
  direction = 'bwd' if 'transpose(' in op.op_name else 'fwd'
  what = ('convs' if op.flops else
          'BN' if 'batchnorm.py' in files or re.search(r'/bn\d?/|downsample/1/|/norm', op.op_name)
          else 'elementwise')
  if where == 'heads':
    what = 'matmuls' if op.flops else 'elementwise'
  who = ' teacher' if teacher else ''
  if where == 'trunk':
    return f'trunk{who} {what}'
  return f'{where}{who} {what} {direction}'


def group_table(ops: Iterable[Op]) -> dict:
  """group -> {'flops', 'other_flops', 'bytes', 'fused_bytes', 'count'} summed."""
  out = collections.defaultdict(lambda: {'flops': 0.0, 'other_flops': 0.0, 'bytes': 0.0,
                                         'fused_bytes': 0.0, 'count': 0})
  for op in ops:
    g = out[op.group]
    g['flops'] += op.flops
    g['other_flops'] += op.other_flops
    g['bytes'] += op.bytes
    g['fused_bytes'] += op.fused_bytes
    g['count'] += 1
  return dict(out)
