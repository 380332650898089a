"""The public port's own MBCD training step against ours: same weights, batch and random draws.

Get the port (it is never copied into this repository) and run:

    git clone https://github.com/lihongzhao99/MMDG_Benchmark /tmp/port_clone
    pip download learn2learn==0.2.0 --no-deps -d /tmp/l2l && tar xzf /tmp/l2l/*.tar.gz -C /tmp/l2l
    JAX_PLATFORMS=cpu python -m benchmarks.port_harness --port_dir=/tmp/port_clone \\
        --l2l_dir=/tmp/l2l/learn2learn-0.2.0

(``--l2l_dir`` only when learn2learn is not installed.) Prints, for two steps in float64 and in
float32, the largest absolute difference per quantity between the port and each of our
implementations (``torch-ref``: the PyTorch port-semantics step of
``mbcd_jax/reference/mbcd_torch.py``; ``jax``: ``mbcd_jax.step.train_step`` with the port's network semantics, when available).

How the port's code runs here without its environment (mmcv, mmaction, CUDA, data):

* ``Action recognition/train_MBCD.py`` is parsed with ``ast`` and only these pieces are compiled
  and executed, unmodified: ``train_one_step``, ``PredHead``, ``LayerNorm``, the ``__main__``
  statements from ``criterion = ...`` to ``optim = torch.optim.Adam(...)`` (the optimizer's
  parameter list), and the body of the training loop's ``if split == 'train':`` (the call of
  ``train_one_step`` and the EMA over the state dicts). The module-level globals they read
  (``v_norm``, ``f_cls``, ``args``, the models, ...) are put in their namespace by us.
* ``mbcd/runtime_patches.py`` is imported as it is and ``apply_mbcd_runtime_patches()`` run; the
  classes it patches (mmaction's ``ResNet3d`` / ``ResNet3dSlowFast`` / heads, VGGSound's
  ``ResNet``) are stub modules in ``sys.modules`` naming our stand-in encoders: the PyTorch
  re-implementations of ``mbcd_jax/reference/encoders_torch.py`` (same module and state-dict names,
  reduced width), so the port's own DSU / ``avg_pool`` / VGGSound ``get_feature`` attach to them.
  The port's mmaction ``get_feature`` / ``get_predict`` are parsed from its vendored
  ``mmaction/models/backbones/resnet3d{,_slowfast}.py`` and attached the same way.
* ``learn2learn``: the installed package, else ``learn2learn/utils/__init__.py`` of ``--l2l_dir``
  (``clone_module`` / ``update_module``, all the port uses).
* Random sources replayed with shared NumPy draws: ``random.random`` (DSU's gate; the name
  ``random`` inside runtime_patches), ``torch.randn_like`` (DSU noise) and ``torch.bernoulli``
  (AMD masks, matched to modalities through the uni-modal logits captured by forward hooks).
* ``Tensor.cuda`` is the identity; models are wrapped in ``torch.nn.DataParallel`` (a plain
  wrapper without GPUs) like the port's. Heads' dropout is set to 0 (their draws are not shared).

Result (the command above; port commit e98e837; V+F+A, batch 4, SlowFast-R50 / SlowOnly-R50 at
base 8, ResNet-18 width 8, heads 512 with dropout 0, DSU on (step 1: every site fires, step 2: a
mix), AMD on). Max |port - ours| after steps 1 and 2, over the three modalities; ``port moved``:
max |state after the two steps - initial state| of the port, the scale the differences compare
to. ``torch-ref`` is bit-identical to the port in float64 (same operations in the same order).

    float64 (port loss: step 1 8.156355, step 2 7.509364)
    | quantity                | 1: torch-ref | 1: jax | 2: torch-ref | 2: jax | port moved |
    | loss: loss              | 0 | 7e-14 | 0 | 3e-14 |       |
    | loss: ce_fused          | 0 | 6e-14 | 0 | 5e-14 |       |
    | loss: kl_mm             | 0 | 3e-15 | 0 | 9e-15 |       |
    | loss: ce_uni/k          | 0 | 2e-14 | 0 | 3e-14 |       |
    | loss: kl_um/k           | 0 | 3e-15 | 0 | 3e-15 |       |
    | student trunk params    | 0 | 0     | 0 | 0     | 0     |
    | student trunk BN stats  | 0 | 2e-14 | 0 | 4e-14 | 3e+00 |
    | student layer4 params   | 0 | 1e-11 | 0 | 1e-11 | 2e-04 |
    | student layer4 BN stats | 0 | 3e-13 | 0 | 5e-13 | 2e+00 |
    | teacher trunk params    | 0 | 0     | 0 | 0     | 0     |
    | teacher trunk BN stats  | 0 | 2e-15 | 0 | 2e-15 | 5e-03 |
    | teacher layer4 params   | 0 | 1e-14 | 0 | 2e-14 | 3e-07 |
    | teacher layer4 BN stats | 0 | 2e-15 | 0 | 2e-15 | 3e-03 |
    | uni heads               | 0 | 1e-12 | 0 | 1e-12 | 2e-04 |
    | fused head              | 0 | 4e-12 | 0 | 4e-12 | 2e-04 |
    | teacher fused head      | 0 | 4e-15 | 0 | 8e-15 | 3e-07 |

    float32 (port loss: step 1 8.156375, step 2 7.509371)
    | quantity                | 1: torch-ref | 1: jax | 2: torch-ref | 2: jax | port moved |
    | loss: loss              | 1e-06 | 2e-05 | 0 | 4e-05 |       |
    | loss: ce_fused          | 0     | 7e-06 | 0 | 3e-05 |       |
    | loss: kl_mm             | 0     | 2e-07 | 0 | 2e-07 |       |
    | loss: ce_uni/k          | 0     | 7e-06 | 0 | 2e-05 |       |
    | loss: kl_um/k           | 0     | 3e-07 | 0 | 1e-05 |       |
    | student trunk params    | 0     | 0     | 0 | 0     | 0     |
    | student trunk BN stats  | 0     | 2e-06 | 0 | 4e-06 | 3e+00 |
    | student layer4 params   | 0     | 2e-04 | 0 | 4e-04 | 2e-04 |
    | student layer4 BN stats | 0     | 1e-05 | 0 | 1e-04 | 2e+00 |
    | teacher trunk params    | 0     | 1e-07 | 0 | 1e-07 | 5e-07 |
    | teacher trunk BN stats  | 0     | 6e-08 | 0 | 1e-07 | 5e-03 |
    | teacher layer4 params   | 0     | 2e-07 | 0 | 6e-07 | 4e-07 |
    | teacher layer4 BN stats | 0     | 1e-07 | 0 | 2e-07 | 3e-03 |
    | uni heads               | 0     | 2e-04 | 0 | 2e-04 | 2e-04 |
    | fused head              | 0     | 2e-04 | 0 | 2e-04 | 2e-04 |
    | teacher fused head      | 0     | 2e-07 | 0 | 4e-07 | 3e-07 |

Reading the float32 table: Adam's first updates are ~lr * g / |g| even for a gradient at
rounding level, so a parameter whose gradient is essentially zero moves by up to +-lr = 1e-4 per
step in either framework; float32 parameter differences of 2-4e-4 are that, not a disagreement
(float64 shows the steps agree to 1e-11). In float32 the port's EMA of the frozen weights drifts
by rounding (``teacher trunk params`` moved 5e-7 although beta w + (1 - beta) w = w).
"""
import argparse
import ast
import contextlib
import copy
import importlib.util
import os
import sys
import types
from unittest import mock

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

import jax
import jax.numpy as jnp

from mbcd_jax.reference import encoders_torch as ref
from mbcd_jax.reference import mbcd_torch, port_parity

PORT_ORDER = ('video', 'flow', 'audio')    # the port's per-modality order (DSU, AMD draws)
PORT_PREFIX = {'video': 'v', 'flow': 'f', 'audio': 'a'}


# ------------------------------------------------------------------ loading the port's code
def _parse(path):
  with open(path, encoding='utf-8') as f:
    return ast.parse(f.read(), filename=path)


def _compile(nodes, path):
  return compile(ast.Module(body=list(nodes), type_ignores=[]), path, 'exec')


def _class_methods(path, cls, names):
  """The ``names`` methods of class ``cls`` in ``path``, compiled as plain functions."""
  for node in _parse(path).body:
    if isinstance(node, ast.ClassDef) and node.name == cls:
      defs = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name in names]
      missing = set(names) - {d.name for d in defs}
      if missing:
        raise SystemExit(f'{path}: class {cls} has no {sorted(missing)}')
      ns = {'torch': torch, 'nn': nn, 'F': F}
      exec(_compile(defs, path), ns)  # pylint: disable=exec-used
      return {n: ns[n] for n in names}
  raise SystemExit(f'{path}: no class {cls}')


class _StandInSlowOnly(ref.ResNet3dSlowOnly):
  """Stand-in for mmaction's ResNet3d (the flow backbone)."""


class _StandInSlowFast(ref.ResNet3dSlowFast):
  """Stand-in for mmaction's ResNet3dSlowFast, with mmaction's ``lateral_connections``."""

  def __init__(self, *a, **k):
    super().__init__(*a, **k)
    self.slow_path.lateral_connections = [f'layer{i + 1}_lateral' for i in range(3)]


class _StandInAudio(ref.ResNet18Audio):
  """Stand-in for VGGSound's ResNet (the port's get_feature calls ``self.relu``)."""

  def __init__(self, *a, **k):
    super().__init__(*a, **k)
    self.relu = nn.ReLU(inplace=True)


class _Dummy:
  pass


def _stub_modules():
  """sys.modules entries for the framework modules runtime_patches imports."""
  mods = {
      'mmaction': {}, 'mmaction.models': {}, 'mmaction.models.backbones': {},
      'mmaction.models.backbones.resnet3d': {'ResNet3d': _StandInSlowOnly},
      'mmaction.models.backbones.resnet3d_slowfast': {'ResNet3dSlowFast': _StandInSlowFast},
      'mmaction.models.heads': {}, 'mmaction.models.heads.base': {'BaseHead': _Dummy},
      'mmaction.models.heads.i3d_head': {'I3DHead': type('I3DHead', (_Dummy,), {})},
      'mmaction.models.heads.slowfast_head': {'SlowFastHead': type('SlowFastHead', (_Dummy,), {})},
      'VGGSound': {}, 'VGGSound.models': {}, 'VGGSound.models.resnet': {'ResNet': _StandInAudio},
  }
  out = {}
  for name, attrs in mods.items():
    m = types.ModuleType(name)
    m.__path__ = []
    m.__dict__.update(attrs)
    out[name] = m
  return out


def _load_learn2learn(l2l_dir):
  try:
    import learn2learn  # pylint: disable=g-import-not-at-top
    return learn2learn
  except ImportError:
    pass
  path = os.path.join(l2l_dir or '', 'learn2learn', 'utils', '__init__.py')
  if not l2l_dir or not os.path.exists(path):
    raise SystemExit('learn2learn is not installed; pass --l2l_dir=<unpacked learn2learn source> '
                     f'(looked for {path})')
  spec = importlib.util.spec_from_file_location('learn2learn_utils', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


class Port:
  """The port's training-step code, loaded from a clone. Attributes: ``defs_code`` (its
  ``train_one_step`` / ``PredHead`` / ``LayerNorm``), ``opt_code``, ``train_code`` (compiled
  statements), ``rp`` (its runtime_patches module), ``l2l`` (learn2learn)."""

  def __init__(self, port_dir, l2l_dir=None):
    src = os.path.join(port_dir, 'Action recognition')
    script = os.path.join(src, 'train_MBCD.py')
    if not os.path.exists(script):
      raise SystemExit(f'--port_dir={port_dir}: no "Action recognition/train_MBCD.py" there')
    tree = _parse(script)
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
            and n.name in ('train_one_step', 'PredHead', 'LayerNorm')]
    main = [n for n in tree.body if isinstance(n, ast.If)
            and isinstance(n.test, ast.Compare) and ast.unparse(n.test) == "__name__ == '__main__'"]
    if len(defs) != 3 or len(main) != 1:
      raise SystemExit(f'{script}: did not find train_one_step / PredHead / LayerNorm / __main__')
    body = main[0].body
    names = [ast.unparse(s.targets[0]) if isinstance(s, ast.Assign) else None for s in body]
    first, last = names.index('criterion'), names.index('optim')
    self.opt_code = _compile(body[first:last + 1], script)
    train_if = [n for n in ast.walk(main[0]) if isinstance(n, ast.If)
                and ast.unparse(n.test) == "split == 'train'"]
    if len(train_if) != 1:
      raise SystemExit(f"{script}: expected one `if split == 'train':` in the training loop")
    self.train_code = _compile(train_if[0].body, script)
    self.l2l = _load_learn2learn(l2l_dir)
    self.defs_code = _compile(defs, script)
    # runtime_patches + the vendored mmaction methods, onto the stand-ins.
    with mock.patch.dict(sys.modules, _stub_modules()):
      spec = importlib.util.spec_from_file_location(
          'port_runtime_patches', os.path.join(src, 'mbcd', 'runtime_patches.py'))
      self.rp = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(self.rp)
      self.rp.apply_mbcd_runtime_patches()
    backbones = os.path.join(src, 'mmaction', 'models', 'backbones')
    for cls, fname, name in ((_StandInSlowOnly, 'resnet3d.py', 'ResNet3d'),
                             (_StandInSlowFast, 'resnet3d_slowfast.py', 'ResNet3dSlowFast')):
      for k, fn in _class_methods(os.path.join(backbones, fname), name,
                                  ('get_feature', 'get_predict')).items():
        setattr(cls, k, fn)


# ------------------------------------------------------------------ the port's models
class _Recognizer(nn.Module):
  def __init__(self, backbone):
    super().__init__()
    self.backbone = backbone


def stand_in_nets(mods, video_depth, width_div, audio_width, seed=0):
  """modality -> (kind, flax kwargs, stand-in backbone with random weights and statistics)."""
  sb = 64 // width_div
  out = {}
  for i, m in enumerate(mods):
    if m == 'video':
      kind, kw, net = 'slowfast_r101', dict(depth=video_depth, slow_base_channels=sb), \
          _StandInSlowFast(depth=video_depth, slow_base=sb)
    elif m == 'flow':
      kind, kw, net = 'slowonly_r50_flow', dict(depth=50, base_channels=sb), \
          _StandInSlowOnly(depth=50, in_channels=2, base_channels=sb)
    else:   # VGGSound's AVENet: the port reads ``model_audio.audnet``
      kind, kw, net = 'vggsound_r18', dict(width=audio_width), ref.AVENet(width=audio_width)
      net.audnet = _StandInAudio(width=audio_width)
    out[m] = (kind, kw, ref.randomize_(net, seed=seed + i))
  return out


class _Replay:
  """Replays SharedDraws into the port's random calls, in the port's call order."""

  def __init__(self, mods, draws, logits_of):
    self.order = [m for m in PORT_ORDER if m in mods]
    self.gates = [draws.dsu[m][s][0] for m in self.order for s in ('trunk', 'layer4')]
    self.noise = [e for m in self.order for s in ('trunk', 'layer4')
                  if draws.dsu[m][s][0] <= mbcd_torch.DSU_P
                  for pair in draws.dsu[m][s][1] for e in pair]
    self.draws, self.logits_of, self.amd_queue = draws, logits_of, None

  def random(self):
    return self.gates.pop(0)

  def randn_like(self, t):
    e = self.noise.pop(0)
    assert tuple(e.shape) == tuple(t.shape), (e.shape, t.shape)
    return torch.as_tensor(e, dtype=t.dtype)

  def bernoulli(self, probs):
    if self.amd_queue is None:   # the modalities whose r > 1, in the port's order
      s = {m: F.softmax(self.logits_of[m], -1).max(-1).values.sum() for m in self.order}
      r = {k: sum(s[k] / s[j] for j in self.order if j != k) / (len(self.order) - 1)
           for k in self.order}
      self.amd_queue = [m for m in self.order if r[m] > 1]
    m = self.amd_queue.pop(0)
    u = torch.as_tensor(self.draws.amd[m], dtype=probs.dtype)
    return (u < probs).to(probs.dtype)

  def done(self):
    return not self.gates and not self.noise and not self.amd_queue


class PortRun:
  """The port's models + optimizer + EMA copies, stepped by its own code."""

  def __init__(self, port, nets, mods, *, hidden, dtype):
    self.port, self.mods, self.dtype = port, mods, dtype
    # A fresh namespace per run: the port's functions read their models from module globals.
    ns = {'torch': torch, 'nn': nn, 'F': F, 'l2l': port.l2l, 'copy': copy, 'np': np}
    exec(port.defs_code, ns)  # pylint: disable=exec-used
    use = {m: m in mods for m in PORT_ORDER}
    ns['args'] = types.SimpleNamespace(
        use_video=use['video'], use_flow=use['flow'], use_audio=use['audio'], use_dsu=True,
        inner_lr=1e-4, ema_beta=0.999, kl_mm_coeff=1.0, kl_um_coeff=1.0, modality_drop_base=0.0,
        lr=1e-4)
    input_dim = 0
    for m in PORT_ORDER:
      p = PORT_PREFIX[m]
      ns[f'model_{m}'] = None
      if m not in mods:
        continue
      net = copy.deepcopy(nets[m]).to(dtype)
      model = net if m == 'audio' else nn.DataParallel(_Recognizer(net))
      dim = feature_dim(m, net)
      ns[f'model_{m}'] = model
      ns[f'{p}_norm'] = ns['LayerNorm'](dim).to(dtype)
      ns[f'{p}_cls'] = ns['PredHead'](input_dim=dim, out_dim=mbcd_torch.NUM_CLASSES).to(dtype)
      input_dim += dim
    ns['mm_cls'] = ns['PredHead'](input_dim=input_dim, out_dim=mbcd_torch.NUM_CLASSES).to(dtype)
    for head in [ns['mm_cls']] + [ns[f'{PORT_PREFIX[m]}_cls'] for m in mods]:
      head.enc_net[2].p = 0.0
    exec(port.opt_code, ns)  # pylint: disable=exec-used
    # As the port's __main__: EMA copies in eval mode, then the training-split modes.
    for m in PORT_ORDER:
      ns[f'model_{m}_ema'] = None
      if m in mods:
        ns[f'model_{m}_ema'] = copy.deepcopy(ns[f'model_{m}']).eval()
        ns[f'model_{m}'].train(True)
    ns['mm_cls_ema'] = copy.deepcopy(ns['mm_cls']).eval()
    ns['mm_cls'].train(True)
    self.ns = ns

  def backbone(self, m, teacher=False):
    """The net whose state dict matches our TorchEncoder's ``net`` (AVENet for audio)."""
    model = self.ns[f'model_{m}_ema' if teacher else f'model_{m}']
    return model if m == 'audio' else model.module.backbone

  def step(self, batch, labels, draws):
    """One iteration of the port's training loop. Returns its loss terms (from its logits)."""
    ns, captured = self.ns, {}

    def capture(name):
      def hook(module, inputs, output):  # returns None: the output is left as it is
        del module, inputs
        captured.setdefault(name, output.detach())
      return hook

    hooks = [ns[f'{PORT_PREFIX[m]}_cls'].register_forward_hook(capture(m)) for m in self.mods]
    hooks.append(ns['mm_cls_ema'].register_forward_hook(capture('teacher')))
    replay = _Replay(self.mods, draws, captured)
    ns['clip'] = {'imgs': batch['video'][:, None]} if 'video' in batch else None
    ns['flow'] = {'imgs': batch['flow'][:, None]} if 'flow' in batch else None
    ns['spectrogram'] = batch['audio'][:, 0] if 'audio' in batch else None
    ns['labels'], ns['criterion'] = labels, nn.CrossEntropyLoss()
    patches = [mock.patch.object(torch.Tensor, 'cuda', lambda t, *a, **k: t, create=True),
               mock.patch.object(torch, 'randn_like', replay.randn_like),
               mock.patch.object(torch, 'bernoulli', replay.bernoulli),
               mock.patch.object(self.port.rp, 'random', replay)]
    old_default = torch.get_default_dtype()
    torch.set_default_dtype(self.dtype)
    try:
      with contextlib.ExitStack() as stack:
        for p in patches:
          stack.enter_context(p)
        exec(self.port.train_code, ns)  # pylint: disable=exec-used
    finally:
      torch.set_default_dtype(old_default)
      for h in hooks:
        h.remove()
    assert replay.done(), 'the port consumed fewer random draws than expected'
    p_t = F.softmax(captured['teacher'], -1).clamp_min(1e-12)
    kl = lambda z: float(F.kl_div(F.log_softmax(z, -1), p_t, reduction='batchmean'))
    z_mm = ns['predict1'].detach()
    out = {'loss': float(ns['loss'].detach()), 'ce_fused': float(F.cross_entropy(z_mm, labels)),
           'kl_mm': kl(z_mm)}
    for m in self.mods:
      out[f'ce_uni/{m}'] = float(F.cross_entropy(captured[m], labels))
      out[f'kl_um/{m}'] = kl(captured[m])
    return out


def feature_dim(m, net):
  """Width of the pooled feature of a stand-in net."""
  kind = {'video': 'slowfast_r101', 'flow': 'slowonly_r50_flow', 'audio': 'vggsound_r18'}[m]
  enc = mbcd_torch.TorchEncoder(kind, copy.deepcopy(net).eval())
  p = next(net.parameters())
  with torch.no_grad():
    x = torch.zeros((1,) + mbcd_torch.INPUT_SHAPES[m], dtype=p.dtype)
    return enc(enc.trunk(x)).shape[-1]


def port_fused_order(mods):
  """The port's concatenation order of the fused head's input."""
  if len(mods) == 3:
    return ('video', 'audio', 'flow')
  return tuple(m for m in PORT_ORDER if m in mods)


# ------------------------------------------------------------------ comparison
def _port_head(head):
  return mbcd_torch.head_np(head.enc_net[0].weight, head.enc_net[0].bias, head.enc_net[3].weight,
                       head.enc_net[3].bias)


def compare(port, args, dtype, with_jax=True):
  """Two steps of the port, of TorchPortMBCD and (``with_jax``) of our JAX train_step, from
  the same weights, batch and draws.

  Returns:
    {'step 1' | 'step 2': {quantity: (|port - torch-ref|, |port - jax| or None)},
     'port moved': {quantity: (max |state after 2 steps - initial|, None)}}, port losses.
  """
  mods = tuple(args.mods.split('+'))
  order = port_fused_order(mods)   # = our model's modality order, so the fused heads match
  nets = stand_in_nets(order, args.video_depth, args.width_div, args.audio_width)
  tdt = getattr(torch, dtype)
  g = torch.Generator().manual_seed(100)
  batch = {m: torch.randn((args.batch,) + mbcd_torch.INPUT_SHAPES[m], generator=g).to(tdt)
           for m in order}
  labels = torch.randint(0, mbcd_torch.NUM_CLASSES, (args.batch,), generator=g)
  torch.manual_seed(0)
  run = PortRun(port, {m: n for m, (_, _, n) in nets.items()}, mods, hidden=512, dtype=tdt)
  encoders = {m: port_parity.paper_encoder(kind, dict(kw, dtype=dtype), copy.deepcopy(n).to(tdt))
              for m, (kind, kw, n) in nets.items()}
  encs = {m: e.torch for m, e in encoders.items()}
  channels = mbcd_torch.dsu_channels(encs, batch)
  dims = {m: run.ns[f'{PORT_PREFIX[m]}_norm'].layernorm.normalized_shape[0] for m in order}
  impl = mbcd_torch.TorchPortMBCD(encs, dims, hidden=512, dtype=tdt)
  port_heads = lambda: ({m: _port_head(run.ns[f'{PORT_PREFIX[m]}_cls']) for m in order},
                        _port_head(run.ns['mm_cls']), _port_head(run.ns['mm_cls_ema']))
  uni0, fused0, _ = port_heads()
  with torch.no_grad():   # our heads start as the port's
    for ours, theirs in [(impl.uni[m], run.ns[f'{PORT_PREFIX[m]}_cls']) for m in order] + [
        (impl.fused, run.ns['mm_cls']), (impl.t_fused, run.ns['mm_cls_ema'])]:
      ours.fc1.weight.copy_(theirs.enc_net[0].weight)
      ours.fc1.bias.copy_(theirs.enc_net[0].bias)
      ours.fc2.weight.copy_(theirs.enc_net[3].weight)
      ours.fc2.bias.copy_(theirs.enc_net[3].bias)
  if with_jax:
    model, spec, tx, state = port_parity.build_jax_port(encoders, uni0, fused0, hidden=512, dsu=True,
                                                  amd=True, dtype=dtype)
    jstep = port_parity.jax_port_step_fn(model, spec, tx)
    jb = {m: jnp.asarray(np.moveaxis(x.numpy(), 1, -1), dtype) for m, x in batch.items()}
    jb['label'] = jnp.asarray(labels.numpy(), jnp.int32)

  def port_view():
    sds = {m: mbcd_torch.state_dict_np(run.backbone(m)) for m in order} 
    t_sds = {m: mbcd_torch.state_dict_np(run.backbone(m, teacher=True)) for m in order}
    return port_parity.torch_view(encoders, sds, t_sds, *port_heads())

  start = port_view()
  rows, losses = {}, {}
  for i in range(2):
    draws = mbcd_torch.make_draws(1000 + i, channels, args.batch, gates=port_parity.PORT_GATES[i])
    lp = run.step(batch, labels, draws)
    lr = impl.step(batch, labels, draws)
    pv = port_view()
    rv = port_parity.torch_view(
        encoders, {m: mbcd_torch.state_dict_np(e) for m, e in impl.encs.items()},
        {m: mbcd_torch.state_dict_np(e) for m, e in impl.t_encs.items()},
        {m: mbcd_torch.torch_head_np(impl.uni[m]) for m in order}, mbcd_torch.torch_head_np(impl.fused),
        mbcd_torch.torch_head_np(impl.t_fused))
    d_ref = port_parity.view_diffs(pv, rv)
    d_jax, lj = {}, {}
    if with_jax:
      state, metrics = jstep(state, jb, draws.dsu, draws.amd)
      lj = {k: float(v) for k, v in metrics.items()}
      d_jax = port_parity.view_diffs(pv, port_parity.jax_view(state, model.modalities))
    col = {f'loss: {k}': (abs(v - lr[k]), abs(v - lj[k]) if lj else None) for k, v in lp.items()}
    col.update({k: (d, d_jax.get(k)) for k, d in d_ref.items()})
    rows[f'step {i + 1}'] = col
    losses[f'step {i + 1}'] = lp['loss']
  rows['port moved'] = {k: (d, None) for k, d in port_parity.view_diffs(port_view(), start).items()}
  return rows, losses


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--port_dir', required=True, help='clone of lihongzhao99/MMDG_Benchmark')
  parser.add_argument('--l2l_dir', default='',
                      help='unpacked learn2learn source (if it is not installed)')
  parser.add_argument('--mods', default='video+flow+audio')
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--video_depth', type=int, default=50)
  parser.add_argument('--width_div', type=int, default=8)
  parser.add_argument('--audio_width', type=int, default=8)
  parser.add_argument('--dtypes', default='float64,float32')
  parser.add_argument('--no_jax', action='store_true')
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())
  port = Port(args.port_dir, args.l2l_dir)
  print(f'{args.mods}, batch {args.batch}, SlowFast-R{args.video_depth} / SlowOnly-R50 at base '
        f'{64 // args.width_div}, ResNet-18 width {args.audio_width}, heads 512 (dropout 0), '
        'DSU and AMD on; max |port - ours|', flush=True)
  for dt in args.dtypes.split(','):
    with jax.enable_x64(dt == 'float64'):
      rows, losses = compare(port, args, dt, with_jax=not args.no_jax)
    steps = [s for s in rows if s.startswith('step')]
    print(f'\n{dt}: port loss ' + ', '.join(f'{s} {losses[s]:.6f}' for s in steps))
    print('| quantity | ' + ' | '.join(f'{s} torch-ref | {s} jax' for s in steps)
          + ' | port moved |')
    print('|---|' + '---|---|' * len(steps) + '---|')
    fmt = lambda v: '' if v is None else f'{v:.1e}'
    for k in rows['step 1']:
      cells = [fmt(c) for s in steps for c in rows[s][k]]
      print(f'| {k} | ' + ' | '.join(cells) + f' | {fmt(rows["port moved"].get(k, (None,))[0])} |',
            flush=True)


if __name__ == '__main__':
  main()
