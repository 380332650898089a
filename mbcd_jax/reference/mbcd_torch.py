"""The PyTorch twin of the MBCD train step, in eager PyTorch (test / benchmark use only).

Two twins of ``mbcd_jax.step.train_step``, on the paper's encoders
(``mbcd_jax/reference/encoders_torch.py``) split as training splits them (``TorchEncoder``:
frozen trunk, trainable layer4):

* ``TorchMBCD``: our step's semantics (BN on running statistics, AMD, the first-order inner
  step on layer4, the EMA teacher, KL distillation, Adam), either as the public port computes it
  (the frozen trunk re-run for each of its three passes, EMA over every parameter) or with the
  trunk once per step (``trunk_once``). ``benchmarks/mbcd_step_vs_torch.py`` times it against
  our jitted step and checks that the two give the same losses.
* ``TorchPortMBCD``: the public port's network semantics (BN in train mode throughout, DSU, the
  teacher's EMA over the whole state dict), driven by shared random draws (``SharedDraws``);
  ``mbcd_jax/reference/port_parity.py`` runs our step with the same semantics and draws and
  compares the two states.

torch is a dev-only dependency (requirements-dev.txt): nothing outside tests/ and benchmarks/
imports this module.
"""
import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from mbcd_jax.reference import encoders_torch as ref

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
