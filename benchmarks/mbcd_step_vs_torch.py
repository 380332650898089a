"""The whole MBCD training step: our JAX step (jit) vs a PyTorch eager re-implementation.

    JAX_PLATFORMS=cpu python -u benchmarks/mbcd_step_vs_torch.py [--reps 3] [--setups ...]
    JAX_PLATFORMS=cpu python -u benchmarks/mbcd_step_vs_torch.py --no_check --no_timing  # port

(~4 min for the check + F+A, ~3.5 min for V+F+A alone on 2 loaded cores.)

Needs torch (requirements-dev.txt). The paper's encoders (mmaction2 SlowFast, SlowOnly flow,
VGGSound ResNet-18; tests/encoders/torch_reference.py for PyTorch, mbcd_jax/encoders/paper.py for
Flax) at the paper's structure but reduced width / input size so that it runs in minutes on 2
CPU cores. Both frameworks get the same weights (PyTorch -> converter -> Flax; heads copied),
compute in float32, run the BatchNorms on running statistics and use the same threads
(``torch.set_num_threads(os.cpu_count())``; XLA's CPU client uses every core).

Timed step = the default method ('mbcd': adaptive modality dropout, first-order inner step on
layer4, EMA teacher, KL distillation into fused and uni-modal heads, Adam(weight_decay=1e-4),
EMA update):

* ``jax``: ``mbcd_jax.step.train_step`` under ``jax.jit`` (state donated): frozen trunks once.
* ``torch (port)``: as the public port's train_one_step does it: the frozen trunk under
  ``no_grad`` recomputed for each of the 3 passes (uni-modal at theta, fused at theta', teacher);
  learn2learn-style inner step (``torch.autograd.grad`` of sum_k CE_k w.r.t. layer4, detached,
  theta' = theta - alpha g, fused pass through ``torch.func.functional_call``); AMD masks;
  KL(teacher || student) batchmean; ``torch.optim.Adam(weight_decay=1e-4)``; EMA over every
  parameter of the teacher copy (a parameter loop, trunk included, as a deepcopy-based EMA does).
* ``torch (trunk once)``: the same step with the trunk run once per step and shared by the three
  passes, and the EMA over the trainable parameters only (``torch._foreach``): the fairer
  PyTorch baseline.

Before timing, a correctness check on the V+F+A set-up: head dropout 0, AMD off, same weights
and batch: JAX's and PyTorch's losses agree at step 1 and again at step 2 (after one Adam update
and one EMA update), i.e. the two implement the same step.

Then the port-semantics check (``--port_check float64,float32``; ``--no_timing`` to stop after
it): ``TorchPortMBCD`` runs the public port's network semantics -- every encoder in train mode
(BN on batch statistics, running statistics updated as PyTorch does, twice per step: the port
re-runs the frozen trunk and layer4 for the theta' pass), DSU on the first pass's trunk and
layer4 outputs, AMD, EMA over the encoders' whole state dict (frozen weights and BN statistics)
and the fused head -- and ``mbcd_jax.step.train_step`` runs with ``bn_mode='port'``,
``dsu=True``. The random draws are shared: NumPy draws the DSU coins and noise and the AMD
uniforms (``SharedDraws``); PyTorch consumes them directly, our step through ``jax_replay``
(which patches ``dsu.apply`` / ``amd.sample_keep`` while tracing, keeping our DSU arithmetic).
Two steps from the same weights and batch, in float64 (JAX x64, torch double) and float32;
prints max |torch - jax| of every loss term, the trunk / layer4 parameters, the trunk / layer4
BN running statistics, the heads, and the teacher's whole state, and asserts them within
``PORT_TOL`` (~13 min on 2 loaded cores, most of it XLA compiling the reduced paper encoders'
step). Seen (V+F+A, SlowFast-R50 / SlowOnly-R50 at base 8, ResNet-18 width 8, batch 4):
float64: loss terms <= 1.1e-13, parameters <= 5.2e-12, BN statistics <= 5.4e-13, teacher
<= 1e-14; float32: loss terms <= 3.7e-4, parameters <= 4e-4 (Adam on rounding-level
gradients, see PORT_TOL), BN statistics <= 3.1e-4. ``TorchPortMBCD`` itself is checked
against the port's own code by
``benchmarks/port_harness.py``; ``tests/test_port_semantics_torch.py`` runs the same comparison
on tiny encoders.

Each time is the median of ``--reps`` calls after two warm-up calls (JAX compiles in the first);
the frameworks' calls alternate round by round so that load from other processes hits all
alike. Ratio = torch ms / JAX ms (> 1: JAX faster). The machine's load is sampled at the
start, after every round and at the end, shown per row and under the table, and the table is
flagged LOADED when others used the CPUs (``benchmarks/_load.py``; ``--refuse_under_load``
exits non-zero instead).
"""
import argparse
import contextlib
import copy
import dataclasses
import functools
import os
import sys
import time
from typing import Callable
from unittest import mock

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch
import torch.nn.functional as F

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path[:0] = [_ROOT, os.path.join(_ROOT, 'tests', 'encoders'), os.path.dirname(__file__)]
import _load  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch_reference as ref  # pylint: disable=g-import-not-at-top,wrong-import-position
from encoders_vs_torch import _median_times  # pylint: disable=g-import-not-at-top,wrong-import-position

from mbcd_jax import methods, models  # pylint: disable=g-import-not-at-top,wrong-import-position
from mbcd_jax import step as step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from mbcd_jax.encoders import convert  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_CLASSES = 7


# ------------------------------------------------------------------ encoders, both frameworks
class TorchEncoder(torch.nn.Module):
  """A paper encoder split as in training: ``trunk(x)`` (frozen) and ``forward(f)`` = layer4 +
  global average pool (trainable), so that ``functional_call`` can swap layer4's parameters."""

  def __init__(self, kind, net):
    super().__init__()
    self.kind, self.net = kind, net

  def trunk(self, x):
    n = self.net
    if self.kind == 'slowfast_r101':
      return n.trunk(x)
    if self.kind == 'vggsound_r18':
      n = n.audnet
      return n.layer3(n.layer2(n.layer1(n.maxpool(F.relu(n.bn1(n.conv1(x)))))))
    return n.layer3(n.layer2(n.layer1(n.maxpool(n.conv1(x)))))

  def layer4(self, f):
    """Trunk output -> layer4 output before pooling ((slow, fast) for SlowFast)."""
    n = self.net
    if self.kind == 'slowfast_r101':
      return n.slow_path.layer4(f[0]), n.fast_path.layer4(f[1])
    if self.kind == 'vggsound_r18':
      return n.audnet.layer4(f)
    return n.layer4(f)

  def pool(self, y):
    """Global average pool; SlowFast's feature is cat(fast, slow) as mmaction's SlowFastHead."""
    if self.kind == 'slowfast_r101':
      return torch.cat((y[1].mean(dim=(2, 3, 4)), y[0].mean(dim=(2, 3, 4))), 1)
    return y.mean(dim=tuple(range(2, y.ndim)))

  def forward(self, f):
    return self.pool(self.layer4(f))


def make_encoders(video_depth, width_div, audio_width):
  """modality -> (kind, flax kwargs, torch module, torch input shape without batch)."""
  sb = 64 // width_div
  return {
      'video': ('slowfast_r101', dict(depth=video_depth, slow_base_channels=sb),
                lambda: ref.ResNet3dSlowFast(depth=video_depth, slow_base=sb)),
      'flow': ('slowonly_r50_flow', dict(depth=50, base_channels=sb),
               lambda: ref.ResNet3dSlowOnly(depth=50, in_channels=2, base_channels=sb)),
      'audio': ('vggsound_r18', dict(width=audio_width),
                lambda: ref.AVENet(width=audio_width)),
  }


INPUT_SHAPES = {  # torch layout [C, ...]; the Flax layout puts C last
    'video': (3, 8, 64, 64),   # SlowFast 8x8: slow path 8 / 8 = 1 frame, fast path 8 frames
    'flow': (2, 4, 64, 64),
    'audio': (1, 64, 128),
}


# ------------------------------------------------------------------ the PyTorch step
class Head(torch.nn.Module):
  """The port's PredHead: Linear(d, hidden) -> ReLU -> Dropout -> Linear(hidden, classes)."""

  def __init__(self, d, hidden, classes, dropout):
    super().__init__()
    self.fc1, self.fc2, self.p = torch.nn.Linear(d, hidden), torch.nn.Linear(hidden, classes), dropout

  def forward(self, x):
    return self.fc2(F.dropout(F.relu(self.fc1(x)), self.p, self.training))


class TorchMBCD:
  """One MBCD step in eager PyTorch. ``trunk_once`` switches between the port's way (trunk 3x,
  EMA over every parameter) and the optimised one."""

  def __init__(self, encs, dims, *, hidden, dropout, amd=True, alpha=1e-4, beta=0.999, lr=1e-4,
               weight_decay=1e-4, trunk_once=False, seed=0):
    g = torch.manual_seed(seed)
    del g
    self.mods = list(encs)
    self.encs = encs
    self.uni = {m: Head(dims[m], hidden, NUM_CLASSES, dropout) for m in self.mods}
    self.fused = Head(sum(dims.values()), hidden, NUM_CLASSES, dropout)
    for e in encs.values():
      e.eval()                                    # BN on running statistics, as our JAX step
      for p in e.parameters():
        p.requires_grad_(False)
    self.stage = {m: {k: p for k, p in e.named_parameters() if 'layer4' in k}
                  for m, e in encs.items()}
    for d in self.stage.values():
      for p in d.values():
        p.requires_grad_(True)
    self.trainable = ([p for d in self.stage.values() for p in d.values()] +
                      [p for h in self.uni.values() for p in h.parameters()] +
                      list(self.fused.parameters()))
    self.opt = torch.optim.Adam(self.trainable, lr=lr, weight_decay=weight_decay)
    # The teacher: a copy of the student (the port's deepcopy).
    self.t_encs = {m: copy.deepcopy(e) for m, e in encs.items()}
    self.t_fused = copy.deepcopy(self.fused).eval()
    self.t_uni = {m: copy.deepcopy(h).eval() for m, h in self.uni.items()}
    self.amd, self.alpha, self.beta, self.trunk_once = amd, alpha, beta, trunk_once
    if trunk_once:  # EMA over the trainable parameters only
      self.ema_dst = ([p for e in self.t_encs.values() for k, p in e.named_parameters()
                       if 'layer4' in k] + [p for h in self.t_uni.values() for p in h.parameters()]
                      + list(self.t_fused.parameters()))
      self.ema_src = self.trainable
    for h in [*self.uni.values(), self.fused]:
      h.train()

  def _trunks(self, batch):
    with torch.no_grad():
      return {m: self.encs[m].trunk(batch[m]) for m in self.mods}

  def step(self, batch, labels):
    mods = self.mods
    feats = self._trunks(batch)
    # 1. Uni-modal pass at theta.
    h = {m: F.layer_norm(self.encs[m](feats[m]), (self.uni[m].fc1.in_features,)) for m in mods}
    z = {m: self.uni[m](h[m]) for m in mods}
    ces = {m: F.cross_entropy(z[m], labels) for m in mods}
    ce_uni = sum(ces.values())
    # 2. First-order inner step on layer4 (learn2learn adapt(first_order=True)).
    names = [(m, k) for m in mods for k in self.stage[m]]
    grads = torch.autograd.grad(ce_uni, [self.stage[m][k] for m, k in names], retain_graph=True)
    prime = {m: {} for m in mods}
    for (m, k), gk in zip(names, grads):
      prime[m][k] = self.stage[m][k] - self.alpha * gk.detach()
    # AMD masks from the pre-update confidences.
    keep = {}
    if self.amd:
      with torch.no_grad():
        s = {m: F.softmax(z[m], -1).max(-1).values.sum() for m in mods}
        for k in mods:
          r = sum(s[k] / s[j] for j in mods if j != k) / (len(mods) - 1)
          p = torch.tanh(r - 1) if r > 1 else torch.zeros(())
          keep[k] = torch.bernoulli(torch.full((labels.shape[0],), 1.0 - float(p)))
    # 3. Fused pass at theta' (the port recomputes the trunk).
    if not self.trunk_once:
      feats = self._trunks(batch)
    parts = []
    for m in mods:
      hp = torch.func.functional_call(self.encs[m], prime[m], (feats[m],), strict=False)
      hp = F.layer_norm(hp, (hp.shape[-1],))
      parts.append(hp * keep[m][:, None] if self.amd else hp)
    z_mm = self.fused(torch.cat(parts, -1))
    ce_mm = F.cross_entropy(z_mm, labels)
    # 4. Teacher's fused prediction, unmasked, no dropout, no gradient.
    with torch.no_grad():
      t_feats = feats if self.trunk_once else {m: self.t_encs[m].trunk(batch[m]) for m in mods}
      t_h = [self.t_encs[m](t_feats[m]) for m in mods]
      t_h = [F.layer_norm(x, (x.shape[-1],)) for x in t_h]
      p_t = F.softmax(self.t_fused(torch.cat(t_h, -1)), -1)
    kl = lambda zs: F.kl_div(F.log_softmax(zs, -1), p_t.clamp_min(1e-12), reduction='batchmean')
    loss = ce_mm + ce_uni + kl(z_mm) + sum(kl(z[m]) for m in mods)
    # 5. Adam step; 6. EMA.
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    with torch.no_grad():
      if self.trunk_once:
        torch._foreach_mul_(self.ema_dst, self.beta)
        torch._foreach_add_(self.ema_dst, self.ema_src, alpha=1 - self.beta)
      else:
        pairs = [(self.t_encs[m], self.encs[m]) for m in mods] + [(self.t_fused, self.fused)] + [
            (self.t_uni[m], self.uni[m]) for m in mods]
        for t_mod, s_mod in pairs:
          for tp, sp in zip(t_mod.parameters(), s_mod.parameters()):
            tp.mul_(self.beta).add_(sp, alpha=1 - self.beta)
    return loss.detach()


# ------------------------------------------------------------------ the port's semantics (PyTorch)
DSU_P = 0.5      # the port's DSU probability per site
DSU_EPS = 1e-6   # inside every square root of the port's DSU


@dataclasses.dataclass
class SharedDraws:
  """The random draws of one step, given to both frameworks so that they can be compared.

  Attributes:
    dsu: modality -> site ('trunk' | 'layer4') -> (gate u in [0, 1), [(eps_mu, eps_sigma), ...])
      with one ``[B, C]`` pair per tensor of the site (SlowFast: slow, then fast). The site is
      perturbed iff ``u <= DSU_P`` (the port skips it when ``random.random() > p``).
    amd: modality -> ``[B]`` uniforms; sample i keeps modality m iff ``u < 1 - p_m``.
  """
  dsu: dict
  amd: dict


def dsu_channels(encs, batch):
  """modality -> site -> channel counts of that site's tensors, from an eval-mode dry run (which
  updates no BN statistics). ``batch``: modality -> torch input."""
  out = {}
  with torch.no_grad():
    for m, enc in encs.items():
      was = enc.training
      enc.eval()
      f = enc.trunk(batch[m][:1])
      y = enc.layer4(f)
      enc.train(was)
      chans = lambda t: [x.shape[1] for x in (t if isinstance(t, tuple) else (t,))]
      out[m] = {'trunk': chans(f), 'layer4': chans(y)}
  return out


def make_draws(seed, channels, batch_size, gates=None):
  """NumPy draws for one step (float64). ``gates``: optional modality -> site -> u, to pin
  which DSU sites fire (default: drawn uniformly)."""
  rng = np.random.default_rng(seed)
  dsu, amd = {}, {}
  for m, sites in channels.items():
    dsu[m] = {}
    for site, chans in sites.items():
      u = float(rng.uniform()) if gates is None else float(gates[m][site])
      eps = [(rng.standard_normal((batch_size, c)), rng.standard_normal((batch_size, c)))
             for c in chans]
      dsu[m][site] = (u, eps)
    amd[m] = rng.uniform(size=(batch_size,))
  return SharedDraws(dsu=dsu, amd=amd)


def dsu_torch(x, u, eps, p=DSU_P):
  """The port's DSU on one site: per-sample, per-channel feature statistics re-drawn around
  their batch spread. ``x``: a tensor ``[B, C, ...]`` or a tuple of them (one gate for all);
  gradients flow through every statistic, as in the port."""
  if u > p:
    return x
  outs = []
  for t, (e_mu, e_sig) in zip(x if isinstance(x, tuple) else (x,), eps):
    dims = tuple(range(2, t.ndim))
    shape = t.shape[:2] + (1,) * len(dims)
    mean = t.mean(dim=dims)
    std = (t.var(dim=dims) + DSU_EPS).sqrt()
    spread = lambda s: (s.var(dim=0, keepdim=True) + DSU_EPS).sqrt()
    beta = mean + torch.as_tensor(e_mu, dtype=t.dtype) * spread(mean)
    gamma = std + torch.as_tensor(e_sig, dtype=t.dtype) * spread(std)
    outs.append((t - mean.reshape(shape)) / std.reshape(shape) * gamma.reshape(shape)
                + beta.reshape(shape))
  return tuple(outs) if isinstance(x, tuple) else outs[0]


class TorchPortMBCD:
  """One MBCD step with the public port's network semantics, in eager PyTorch.

  * Encoders in train mode throughout, frozen trunk included: every BatchNorm normalises with
    the batch statistics and updates its running statistics (momentum 0.1, unbiased variance).
    The trunk runs in both student passes (twice per step, so its statistics are updated
    twice) and layer4 runs twice (at theta on the DSU-perturbed trunk output, at theta' on the
    clean one), as the port's learn2learn clone shares the BN buffers with the student.
  * DSU on the trunk output and on the layer4 output of the first (uni-modal) pass only, with
    the draws of ``SharedDraws``.
  * AMD from the first pass's confidences, masks from the shared uniforms.
  * The teacher: a copy of the encoders and the fused head in eval mode (its own running
    statistics), EMA over the encoders' whole state dict (frozen weights and BN statistics
    included) and the fused head, after the optimizer step.
  Heads have no dropout (its draws are not shared). ``dtype``: torch.float64 or float32.
  """

  def __init__(self, encs, dims, *, hidden, alpha=1e-4, beta=0.999, lr=1e-4, weight_decay=1e-4,
               dsu=True, amd=True, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    self.mods = list(encs)
    self.encs = {m: e.to(dtype).train() for m, e in encs.items()}
    self.uni = {m: Head(dims[m], hidden, NUM_CLASSES, 0.0).to(dtype) for m in self.mods}
    self.fused = Head(sum(dims.values()), hidden, NUM_CLASSES, 0.0).to(dtype)
    self.stage = {}
    for m, e in self.encs.items():
      for k, p in e.named_parameters():
        p.requires_grad_('layer4' in k)
      self.stage[m] = {k: p for k, p in e.named_parameters() if 'layer4' in k}
    self.trainable = ([p for d in self.stage.values() for p in d.values()] +
                      [p for h in self.uni.values() for p in h.parameters()] +
                      list(self.fused.parameters()))
    self.opt = torch.optim.Adam(self.trainable, lr=lr, weight_decay=weight_decay)
    self.t_encs = {m: copy.deepcopy(e).eval() for m, e in self.encs.items()}
    self.t_fused = copy.deepcopy(self.fused).eval()
    self.alpha, self.beta, self.dsu, self.amd = alpha, beta, dsu, amd

  def step(self, batch, labels, draws):
    """``batch``: modality -> torch input; ``draws``: SharedDraws. Returns scalar floats."""
    mods, ln = self.mods, lambda x: F.layer_norm(x, (x.shape[-1],))
    # 1. Uni-modal pass at theta (BN update 1 of trunk and layer4), DSU around layer4.
    z = {}
    for m in mods:
      with torch.no_grad():
        f = self.encs[m].trunk(batch[m])
      if self.dsu:
        f = dsu_torch(f, *draws.dsu[m]['trunk'])
      y = self.encs[m].layer4(f)
      if self.dsu:
        y = dsu_torch(y, *draws.dsu[m]['layer4'])
      z[m] = self.uni[m](ln(self.encs[m].pool(y)))
    ces = {m: F.cross_entropy(z[m], labels) for m in mods}
    # 2. First-order inner step on each modality's layer4, from its own CE.
    prime = {}
    for m in mods:
      names = list(self.stage[m])
      g = torch.autograd.grad(ces[m], [self.stage[m][k] for k in names], retain_graph=True)
      prime[m] = {k: self.stage[m][k] - self.alpha * gk for k, gk in zip(names, g)}
    keep = {}
    if self.amd:
      with torch.no_grad():
        s = {m: F.softmax(z[m], -1).max(-1).values.sum() for m in mods}
        for k in mods:
          r = sum(s[k] / s[j] for j in mods if j != k) / (len(mods) - 1)
          if r > 1:
            p = torch.tanh(r - 1)
            keep[k] = (torch.as_tensor(draws.amd[k], dtype=z[k].dtype) < 1 - p).to(z[k].dtype)
    # 3. Fused pass at theta' (BN update 2 of trunk and layer4), no DSU.
    parts = []
    for m in mods:
      with torch.no_grad():
        f = self.encs[m].trunk(batch[m])
      h = ln(torch.func.functional_call(self.encs[m], prime[m], (f,), strict=False))
      parts.append(h * keep[m][:, None] if m in keep else h)
    z_mm = self.fused(torch.cat(parts, -1))
    ce_mm = F.cross_entropy(z_mm, labels)
    # 4. Teacher: eval mode, its own statistics.
    with torch.no_grad():
      t_h = [ln(self.t_encs[m](self.t_encs[m].trunk(batch[m]))) for m in mods]
      p_t = F.softmax(self.t_fused(torch.cat(t_h, -1)), -1).clamp_min(1e-12)
    kl = lambda zs: F.kl_div(F.log_softmax(zs, -1), p_t, reduction='batchmean')
    kls = {'kl_mm': kl(z_mm), **{f'kl_um/{m}': kl(z[m]) for m in mods}}
    loss = ce_mm + sum(ces.values()) + sum(kls.values())
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    # 6. EMA over the whole state dicts (the port's state_dict loop).
    with torch.no_grad():
      for t_mod, s_mod in [(self.t_encs[m], self.encs[m]) for m in mods] + [
          (self.t_fused, self.fused)]:
        s_sd = s_mod.state_dict()
        t_mod.load_state_dict({k: v * self.beta + s_sd[k] * (1 - self.beta)
                               for k, v in t_mod.state_dict().items()})
    out = {'loss': loss, 'ce_fused': ce_mm, **{f'ce_uni/{m}': ces[m] for m in mods}, **kls}
    return {k: float(v.detach()) for k, v in out.items()}


# ------------------------------------------------------------------ the JAX step
def _head_params(head):
  t = lambda x: jnp.asarray(x.detach().numpy())
  return {'Dense_0': {'kernel': t(head.fc1.weight).T, 'bias': t(head.fc1.bias)},
          'Dense_1': {'kernel': t(head.fc2.weight).T, 'bias': t(head.fc2.bias)}}


def build_jax(setup, torch_nets, torch_impl, *, hidden, dropout, method, example):
  """(jitted step, initial state) with the torch implementation's weights."""
  mc = ml_collections.ConfigDict(dict(
      encoders={m: dict(name=kind, **kw) for m, (kind, kw) in setup.items()},
      head_hidden=hidden, head_dropout=dropout, freeze_trunk=True,
      feature_norm='parameter_free'))
  mods = tuple(setup)
  model = models.build_model(mc, mods, NUM_CLASSES)
  mcfg = ml_collections.ConfigDict(dict(
      name=method, amd=None, consistency=None, ema=None, distill=None, unimodal_ce=None,
      amd_base=0.0, amd_fixed_p=0.5, alpha=1e-4, ema_beta=0.999, lambda_mm=1.0, lambda_um=1.0,
      temperature=1.0))
  spec = methods.resolve(mcfg)
  tx = step_lib.make_optimizer(ml_collections.ConfigDict(dict(
      lr=1e-4, weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8)))
  state = jax.jit(functools.partial(step_lib.init_state, model, spec, tx))(
      jax.random.key(0), {m: v[:1] for m, v in example.items()})
  params = jax.tree.map(lambda x: x, state.student.params)
  frozen = jax.tree.map(lambda x: x, state.student.frozen)
  for m, (kind, kw) in setup.items():
    sd = {k: v.numpy() for k, v in torch_nets[m].state_dict().items()}
    trunk_vars, stage_vars = convert.convert_state_dict(kind, sd, **kw)
    stage_vars = dict(stage_vars)
    params['encoders'][m]['stage'] = stage_vars.pop('params')
    frozen['encoders'][m] = {'trunk': trunk_vars, 'stage': stage_vars}
    params['uni_heads'][m] = _head_params(torch_impl.uni[m])
  params['fused_head'] = _head_params(torch_impl.fused)
  params, frozen = jax.tree.map(jnp.asarray, (params, frozen))
  state = state.replace(student=state.student.replace(params=params, frozen=frozen),
                        opt_state=tx.init(params),
                        teacher=state.teacher.replace(params=jax.tree.map(jnp.copy, params)))
  step = jax.jit(functools.partial(step_lib.train_step, model=model, spec=spec, tx=tx),
                 donate_argnums=(0,))
  return step, state


# ------------------------------------------------------------------ JAX with the port's semantics
@dataclasses.dataclass
class ParityEncoder:
  """One modality's encoder in both frameworks, for ``port_parity``.

  Attributes:
    name, kwargs: our encoder (``mbcd_jax.encoders.build(name, kwargs)``).
    torch: the PyTorch module: ``trunk(x)``, ``layer4(f)`` (unpooled; the parameters to train
      have 'layer4' in their names), ``pool(y)``, ``forward(f) = pool(layer4(f))``.
    to_flax: PyTorch state dict (name -> float64 numpy) -> ``(trunk_vars, stage_vars)``.
  """
  name: str
  kwargs: dict
  torch: torch.nn.Module
  to_flax: Callable


def paper_to_flax(kind, kw, state_dict):
  """A TorchEncoder's state dict -> our variables, in float64 and exact to ~1e-14: the
  converter only renames and transposes but works in float32, so each value is split into a
  float32 head and a float32 remainder, converted separately and summed."""
  sd = {k[len('net.'):] if k.startswith('net.') else k: np.asarray(v, np.float64)
        for k, v in state_dict.items()}
  hi = {k: v.astype(np.float32) for k, v in sd.items()}
  lo = {k: (v - hi[k]).astype(np.float32) for k, v in sd.items()}
  kw = {k: v for k, v in kw.items() if k != 'dtype'}
  a, b = convert.convert_state_dict(kind, hi, **kw), convert.convert_state_dict(kind, lo, **kw)
  return jax.tree.map(lambda x, y: np.asarray(x, np.float64) + np.asarray(y, np.float64), a, b)


def paper_encoder(kind, kw, net):
  """ParityEncoder for a paper encoder (``tests/encoders/torch_reference.py`` net)."""
  return ParityEncoder(kind, dict(kw), TorchEncoder(kind, net),
                       functools.partial(paper_to_flax, kind, kw))


def head_np(w1, b1, w2, b2):
  """Torch Linear weights of a head -> our Head's params (float64 numpy copies)."""
  # Copies: a float64 tensor's .numpy() shares its memory, which the optimizer updates in place.
  t = lambda x: np.array(x.detach().double().numpy() if isinstance(x, torch.Tensor) else x,
                         np.float64)
  return {'Dense_0': {'kernel': t(w1).T, 'bias': t(b1)},
          'Dense_1': {'kernel': t(w2).T, 'bias': t(b2)}}


def torch_head_np(head):
  return head_np(head.fc1.weight, head.fc1.bias, head.fc2.weight, head.fc2.bias)


def state_dict_np(module):
  return {k: np.array(v.detach().double().numpy(), np.float64)
          for k, v in module.state_dict().items()}


# Paper encoders take a dtype; the small CPU encoders (also converter kinds) do not.
_DTYPED = ('slowfast_r101', 'slowonly_r50_flow', 'vggsound_r18')


def build_jax_port(encoders, uni_heads, fused_head, *, hidden, dsu, amd, dtype):
  """Our model / method / optimizer and a step-0 state with the PyTorch modules' weights.

  Args:
    encoders: modality -> ParityEncoder, in model order (= the fused head's input order).
    uni_heads / fused_head: modality -> / one ``head_np`` dict.
    dtype: 'float64' (needs x64) or 'float32': computation and variables.
  Returns:
    (model, spec, tx, state).
  """
  mc = ml_collections.ConfigDict(dict(
      encoders={m: dict(name=e.name, **e.kwargs) for m, e in encoders.items()},
      head_hidden=hidden, head_dropout=0.0, freeze_trunk=True, feature_norm='parameter_free',
      bn_mode='port', dsu=dsu, dsu_p=DSU_P))
  model = models.build_model(mc, tuple(encoders), NUM_CLASSES)
  spec = methods.resolve(ml_collections.ConfigDict(dict(
      name='mbcd' if amd else 'mbcd_no_amd', amd=None, consistency=None, ema=None,
      distill=None, unimodal_ce=None, amd_base=0.0, amd_fixed_p=0.5, alpha=1e-4,
      ema_beta=0.999, lambda_mm=1.0, lambda_um=1.0, temperature=1.0)))
  tx = step_lib.make_optimizer(ml_collections.ConfigDict(dict(
      lr=1e-4, weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8)))
  # The variables' layout of MultiModalModel.init, filled with the PyTorch weights.
  params = {'encoders': {}, 'norms': {}, 'uni_heads': dict(uni_heads), 'fused_head': fused_head}
  frozen = {'encoders': {}}
  for m, e in encoders.items():
    trunk_vars, stage_vars = e.to_flax(state_dict_np(e.torch))
    stage_vars = dict(stage_vars)
    params['encoders'][m] = {'stage': stage_vars.pop('params')}
    frozen['encoders'][m] = {'trunk': dict(trunk_vars), 'stage': stage_vars}
  cast = lambda t: jax.tree.map(lambda x: jnp.asarray(x, dtype), t)
  state = step_lib.make_state(model, spec, tx, cast(params), cast(frozen))
  return model, spec, tx, state


@contextlib.contextmanager
def jax_replay(dsu_draws, amd_draws, modalities):
  """Makes our step use the given draws (arrays or tracers, a SharedDraws' ``dsu`` / ``amd``):
  DSU's coin and noise (``dsu.apply``, called per modality in model order, trunk site then
  layer4 site, while the step is traced) and the AMD masks (``amd.sample_keep``). The DSU
  arithmetic stays ours (``dsu.perturb_map``). Yields the list of DSU sites traced."""
  from mbcd_jax import amd as amd_lib  # pylint: disable=g-import-not-at-top
  from mbcd_jax import dsu as dsu_lib  # pylint: disable=g-import-not-at-top
  sites = [(m, s) for m in modalities for s in ('trunk', 'layer4')]
  calls = []
  perturb = dsu_lib.perturb_map

  def apply(rng, feats, p):
    del rng
    m, site = sites[len(calls) % len(sites)]
    calls.append((m, site))
    u, eps = dsu_draws[m][site]
    leaves, treedef = jax.tree.flatten(feats)
    assert len(leaves) == len(eps), (m, site, len(leaves), len(eps))
    out = []
    for x, (e_mu, e_sig) in zip(leaves, eps):
      assert e_mu.shape == (x.shape[0], x.shape[-1]), (m, site, x.shape, e_mu.shape)
      y = perturb(x, jnp.asarray(e_mu, x.dtype), jnp.asarray(e_sig, x.dtype))
      out.append(jnp.where(u <= p, y, x))   # the port skips the site when u > p
    return jax.tree.unflatten(treedef, out)

  def sample_keep(rng, probs, batch_size, order):
    del rng, batch_size
    return {m: (jnp.asarray(amd_draws[m], probs[m].dtype) < 1 - probs[m]).astype(probs[m].dtype)
            for m in order}

  with mock.patch.object(dsu_lib, 'apply', apply), \
      mock.patch.object(amd_lib, 'sample_keep', sample_keep):
    yield calls


def jax_port_step_fn(model, spec, tx):
  """Our train_step, jitted, taking the draws as arguments: ``(state, batch, draws.dsu,
  draws.amd) -> (state, metrics)``."""

  def fn(state, batch, dsu_draws, amd_draws):
    with jax_replay(dsu_draws, amd_draws, model.modalities) as calls:
      out = step_lib.train_step(state, batch, jax.random.key(0), model=model, spec=spec, tx=tx)
    want = 2 * len(model.modalities) if model.dsu else 0
    assert len(calls) == want, f'DSU traced at {calls}, expected {want} sites'
    return out

  return jax.jit(fn)


def _flat(tree, prefix):
  return {prefix + '/' + '/'.join(str(getattr(k, 'key', k)) for k in path):
          np.asarray(v, np.float64) for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def torch_view(encoders, student_sds, teacher_sds, uni_heads, fused_head, teacher_fused_head):
  """PyTorch states in our layout: name -> float64 array. Names start with the comparison group
  ('<m> student|teacher trunk|layer4 params|BN stats', '<m> uni head', '[teacher ]fused head')."""
  out = {}
  for m, e in encoders.items():
    for who, sds in (('student', student_sds), ('teacher', teacher_sds)):
      trunk_vars, stage_vars = e.to_flax(sds[m])
      for part, v in (('trunk', trunk_vars), ('layer4', stage_vars)):
        out.update(_flat(v.get('params', {}), f'{m} {who} {part} params'))
        out.update(_flat(v.get('batch_stats', {}), f'{m} {who} {part} BN stats'))
    out.update(_flat(uni_heads[m], f'{m} uni head'))
  out.update(_flat(fused_head, 'fused head'))
  out.update(_flat(teacher_fused_head, 'teacher fused head'))
  return out


def jax_view(state, modalities):
  """Our TrainState in ``torch_view``'s names."""
  out = {}
  for m in modalities:
    for who in ('student', 'teacher'):
      w = step_lib.weights(state, who)
      params, frozen, stats = w.params, w.frozen, w.batch_stats
      out.update(_flat(frozen['encoders'][m]['trunk'].get('params', {}),
                       f'{m} {who} trunk params'))
      out.update(_flat(params['encoders'][m]['stage'], f'{m} {who} layer4 params'))
      out.update(_flat(stats['encoders'][m]['trunk'], f'{m} {who} trunk BN stats'))
      out.update(_flat(stats['encoders'][m]['stage'], f'{m} {who} layer4 BN stats'))
    out.update(_flat(state.student.params['uni_heads'][m], f'{m} uni head'))
  out.update(_flat(state.student.params['fused_head'], 'fused head'))
  out.update(_flat(state.teacher.params['fused_head'], 'teacher fused head'))
  return out


def view_diffs(a, b):
  """Max abs difference per group (the name up to the first '/'); the key sets must match."""
  if set(a) != set(b):
    raise AssertionError(f'state layouts differ: only in first {sorted(set(a) - set(b))[:5]}, '
                         f'only in second {sorted(set(b) - set(a))[:5]}')
  out = {}
  for k in a:
    g = k.split('/')[0]
    out[g] = max(out.get(g, 0.0), float(np.abs(a[k] - b[k]).max()))
  return out


PORT_GATES = (  # DSU gates of steps 1 and 2 (u <= 0.5 fires): every site, then a mix
    {m: {'trunk': 0.25, 'layer4': 0.25} for m in ('video', 'flow', 'audio')},
    {'video': {'trunk': 0.75, 'layer4': 0.25}, 'flow': {'trunk': 0.25, 'layer4': 0.75},
     'audio': {'trunk': 0.25, 'layer4': 0.25}},
)
# Tolerances of the two-step agreement. float64: rounding (1e-11 or less is seen). float32:
# rounding amplified by Adam's first steps, whose update is ~lr * g / |g| even for a gradient
# at rounding level: such a parameter can end up 2 lr = 2e-4 apart per step (4e-4 after two,
# seen), and step 2's losses move accordingly (4e-4 seen). The float64 check is the strict one.
PORT_TOL = {'float64': dict(loss=1e-9, state=1e-9), 'float32': dict(loss=1e-3, state=1e-3)}


def torch_port_run(encoders, batch, labels, *, dtype='float64', hidden=512, dsu=True, amd=True,
                   gates=PORT_GATES, seed=1000, variant=None):
  """Two steps of TorchPortMBCD. ``variant``: optional ``fn(impl)`` applied before the steps
  (negative controls). Returns (initial heads (uni, fused), per step: (loss terms, state view))."""
  tdt = getattr(torch, dtype)
  encs = {m: copy.deepcopy(e.torch).to(tdt) for m, e in encoders.items()}
  batch = {m: x.to(tdt) for m, x in batch.items()}
  channels = dsu_channels(encs, batch)
  with torch.no_grad():
    dims = {m: e.eval()(e.trunk(batch[m][:2])).shape[-1] for m, e in encs.items()}
  impl = TorchPortMBCD(encs, dims, hidden=hidden, dsu=dsu, amd=amd, dtype=tdt)
  heads = ({m: torch_head_np(impl.uni[m]) for m in encs}, torch_head_np(impl.fused))
  if variant is not None:
    variant(impl)
  out = []
  for i in range(2):
    draws = make_draws(seed + i, channels, labels.shape[0], gates=gates[i])
    lt = impl.step(batch, labels, draws)
    out.append((lt, torch_view(
        encoders, {m: state_dict_np(e) for m, e in impl.encs.items()},
        {m: state_dict_np(e) for m, e in impl.t_encs.items()},
        {m: torch_head_np(impl.uni[m]) for m in encs}, torch_head_np(impl.fused),
        torch_head_np(impl.t_fused))))
  return heads, out, channels


def jax_port_run(encoders, heads, channels, batch, labels, *, dtype='float64', hidden=512,
                 dsu=True, amd=True, gates=PORT_GATES, seed=1000):
  """Two steps of our train_step with the port's semantics and the same draws as
  ``torch_port_run``. Call under ``jax.enable_x64(True)`` for float64.
  Returns per step: (metrics, state view)."""
  encoders = {m: dataclasses.replace(   # the paper encoders compute in their dtype kwarg
      e, kwargs=dict(e.kwargs, dtype=dtype) if e.name in _DTYPED else e.kwargs)
              for m, e in encoders.items()}
  model, spec, tx, state = build_jax_port(encoders, heads[0], heads[1], hidden=hidden, dsu=dsu,
                                          amd=amd, dtype=dtype)
  jb = {m: jnp.asarray(np.moveaxis(x.double().numpy(), 1, -1), dtype) for m, x in batch.items()}
  jb['label'] = jnp.asarray(labels.numpy(), jnp.int32)
  step = jax_port_step_fn(model, spec, tx)
  out = []
  for i in range(2):
    draws = make_draws(seed + i, channels, labels.shape[0], gates=gates[i])
    state, metrics = step(state, jb, draws.dsu, draws.amd)
    out.append(({k: float(v) for k, v in metrics.items()}, jax_view(state, model.modalities)))
  return out


def port_parity(encoders, batch, labels, *, dtype='float64', **kwargs):
  """Two steps of TorchPortMBCD and of our train_step with the port's semantics, from the same
  weights, batch and draws. Call under ``jax.enable_x64(True)`` for float64.

  Args:
    encoders: modality -> ParityEncoder, in model order (the torch modules are copied).
    batch: modality -> PyTorch input ``[B, C, ...]``; labels: ``[B]`` int64.
    dtype: 'float64' (PyTorch double, JAX x64) or 'float32'.
    **kwargs: hidden, dsu, amd, gates, seed (as ``torch_port_run``).
  Returns:
    [per step: (loss terms torch, metrics jax, {group: max |torch - jax|})].
  """
  heads, t_rows, channels = torch_port_run(encoders, batch, labels, dtype=dtype, **kwargs)
  j_rows = jax_port_run(encoders, heads, channels, batch, labels, dtype=dtype, **kwargs)
  return [(lt, lj, view_diffs(tv, jv)) for (lt, tv), (lj, jv) in zip(t_rows, j_rows)]


def assert_port_parity(rows, dtype):
  """Raises AssertionError unless every loss term and state group agrees within PORT_TOL."""
  tol = PORT_TOL[dtype]
  for i, (lt, lj, diffs) in enumerate(rows):
    for k, v in lt.items():
      assert np.isfinite(v) and abs(v - lj[k]) <= tol['loss'] * max(1.0, abs(v)), \
          f'{dtype} step {i + 1}: {k} torch {v!r} jax {lj[k]!r}'
    bad = {g: d for g, d in diffs.items() if not d <= tol['state']}
    assert not bad, f'{dtype} step {i + 1}: state differs: {bad}'


def port_parity_table(rows_by_dtype):
  """Markdown table of max |torch - jax| per quantity, for each dtype and step."""
  cols = [(dt, i) for dt, rows in rows_by_dtype.items() for i in range(len(rows))]
  first = next(iter(rows_by_dtype.values()))[0]
  keys = [f'loss: {k}' for k in first[0]] + list(first[2])
  lines = ['| quantity | ' + ' | '.join(f'{dt} step {i + 1}' for dt, i in cols) + ' |',
           '|---|' + '---|' * len(cols)]
  for k in keys:
    vals = []
    for dt, i in cols:
      lt, lj, diffs = rows_by_dtype[dt][i]
      vals.append(abs(lt[k[6:]] - lj[k[6:]]) if k.startswith('loss: ') else diffs[k])
    lines.append(f'| {k} | ' + ' | '.join(f'{v:.1e}' for v in vals) + ' |')
  return '\n'.join(lines)


def make_setup(mods, encs, batch, dropout=0.5, amd=True, trunk_once=False, hidden=512,
               method='mbcd', seed=0):
  """Builds both frameworks for ``mods``. Returns (torch impl, jax step, jax state, batches)."""
  setup = {m: encs[m][:2] for m in mods}
  nets = {}
  for i, m in enumerate(mods):
    nets[m] = ref.randomize_(encs[m][2](), seed=seed + i)
  g = torch.Generator().manual_seed(seed + 100)
  tb = {m: torch.randn((batch,) + INPUT_SHAPES[m], generator=g) for m in mods}
  labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
  jb = {m: jnp.asarray(np.moveaxis(tb[m].numpy(), 1, -1)) for m in mods}
  jb['label'] = jnp.asarray(labels.numpy(), jnp.int32)
  wrapped = {m: TorchEncoder(encs[m][0], nets[m]) for m in mods}
  with torch.no_grad():
    dims = {m: wrapped[m](wrapped[m].trunk(tb[m][:1])).shape[-1] for m in mods}
  torch.manual_seed(seed)
  impl = TorchMBCD(wrapped, dims, hidden=hidden, dropout=dropout, amd=amd, trunk_once=trunk_once)
  step, state = build_jax(setup, nets, impl, hidden=hidden, dropout=dropout, method=method,
                          example={m: jb[m] for m in mods})
  return impl, step, state, (tb, labels), jb


def check(encs, batch):
  """Same weights, batch, no dropout, no AMD: the losses of steps 1 and 2 agree."""
  mods = ('video', 'flow', 'audio')
  impl, step, state, (tb, labels), jb = make_setup(mods, encs, batch, dropout=0.0, amd=False,
                                                   method='mbcd_no_amd')
  rng = jax.random.key(1)
  out = []
  for _ in range(2):
    lt = float(impl.step(tb, labels))
    state, metrics = step(state, jb, rng)
    out.append((lt, float(metrics['loss'])))
  for lt, lj in out:
    assert np.isfinite(lt) and np.isfinite(lj), out
    assert abs(lt - lj) <= 1e-4 * abs(lt) + 1e-5, f'torch vs JAX loss differ: {out}'
  return out


def bench(mods, encs, batch, reps, monitor=None):
  port, step, state, (tb, labels), jb = make_setup(mods, encs, batch)
  once = make_setup(mods, encs, batch, trunk_once=True)[0]
  first = float(port.step(tb, labels))
  assert np.isfinite(first), first
  holder = {'state': state}
  rng = jax.random.key(0)

  def jax_step():
    holder['state'], metrics = step(holder['state'], jb, rng)
    jax.block_until_ready(metrics['loss'])

  t0 = time.perf_counter()
  jax_step()
  compile_s = time.perf_counter() - t0
  ms = _median_times([jax_step, lambda: port.step(tb, labels), lambda: once.step(tb, labels)],
                     reps, monitor)
  return ms, compile_s, first


def port_check(args, dtypes, mods=('video', 'flow', 'audio')):
  """port_parity on the paper's encoders (reduced) for each dtype -> {dtype: rows}."""
  encs = make_encoders(args.video_depth, args.port_width_div, args.port_audio_width)
  encoders = {m: paper_encoder(encs[m][0], encs[m][1], ref.randomize_(encs[m][2](), seed=i))
              for i, m in enumerate(mods)}
  g = torch.Generator().manual_seed(100)
  batch = {m: torch.randn((args.batch,) + INPUT_SHAPES[m], generator=g) for m in mods}
  labels = torch.randint(0, NUM_CLASSES, (args.batch,), generator=g)
  out = {}
  for dt in dtypes:
    with jax.enable_x64(dt == 'float64'):
      out[dt] = port_parity(encoders, batch, labels, dtype=dt)
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--video_depth', type=int, default=50, help='SlowFast depth (paper: 101)')
  parser.add_argument('--width_div', type=int, default=4,
                      help='SlowFast / SlowOnly base channels = 64 / width_div')
  parser.add_argument('--audio_width', type=int, default=16, help='ResNet-18 width (paper: 64)')
  parser.add_argument('--setups', default='flow+audio,video+audio,video+flow+audio')
  parser.add_argument('--no_check', action='store_true')
  parser.add_argument('--port_check', default='float64,float32',
                      help="dtypes of the port-semantics two-step check ('' to skip)")
  parser.add_argument('--port_width_div', type=int, default=8,
                      help='width_div of the port-semantics check (smaller: faster)')
  parser.add_argument('--port_audio_width', type=int, default=8)
  parser.add_argument('--no_timing', action='store_true')
  _load.add_flag(parser)
  args = parser.parse_args()
  monitor = _load.LoadMonitor()
  if not args.no_timing:
    _load.refuse_at_start(monitor, args.refuse_under_load)
  threads = os.cpu_count()
  torch.set_num_threads(threads)
  encs = make_encoders(args.video_depth, args.width_div, args.audio_width)
  print(f'jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}, '
        f'{threads} CPU threads, float32, batch {args.batch}, median of {args.reps}; '
        f'SlowFast-R{args.video_depth} / SlowOnly-R50 at base {64 // args.width_div}, '
        f'ResNet-18 width {args.audio_width}; inputs (torch layout) '
        + ', '.join(f'{m} {"x".join(map(str, s))}' for m, s in INPUT_SHAPES.items()), flush=True)
  if not args.no_check:
    out = check(encs, args.batch)
    print('check (V+F+A, dropout 0, AMD off): loss step 1 torch %.6f jax %.6f; '
          'step 2 torch %.6f jax %.6f' % (*out[0], *out[1]), flush=True)
  if args.port_check:
    rows = port_check(args, args.port_check.split(','))
    print('\nport semantics (V+F+A, BN train mode, DSU, AMD, head dropout 0; SlowFast-R'
          f'{args.video_depth} / SlowOnly-R50 at base {64 // args.port_width_div}, ResNet-18 '
          f'width {args.port_audio_width}): max |torch - jax| over two steps')
    print(port_parity_table(rows), flush=True)
    for dt, r in rows.items():
      assert_port_parity(r, dt)
    print('port semantics: torch and JAX agree within', PORT_TOL, flush=True)
  if args.no_timing:
    return
  print('\n| set-up | JAX ms | torch (port) ms | ratio | torch (trunk once) ms | ratio | '
        'JAX compile s | load |')
  print('|' + '---|' * 8)
  for name in args.setups.split(','):
    mods = tuple(name.split('+'))
    since = len(monitor.samples)
    ms, compile_s, _ = bench(mods, encs, args.batch, args.reps, monitor)
    print(f'| {"+".join(m[0].upper() for m in mods)} | {ms[0]:.0f} | {ms[1]:.0f} | '
          f'{ms[1] / ms[0]:.2f} | {ms[2]:.0f} | {ms[2] / ms[0]:.2f} | {compile_s:.0f} | '
          f'{monitor.span(since)} |', flush=True)
  _load.finish(monitor, args.refuse_under_load)


if __name__ == '__main__':
  main()
