r"""Parity of ``mbcd_jax.baselines.{moosa,cmrf}`` with the AUTHORS' OWN training-step code.

The authors' repositories are not part of this project; clone them locally first:

    git clone https://github.com/donghao51/MOOSA /tmp/moosa
    git clone https://github.com/fanyunfeng-bit/Cross-modal-Representation-Flattening-for-MMDG \
        /tmp/cmrf
    JAX_PLATFORMS=cpu python -m benchmarks.baselines_harness_moosa_cmrf \
        --moosa_dir=/tmp/moosa --cmrf_dir=/tmp/cmrf

How their code is run without their environment (mmaction2, mmcv, VGGSound, CUDA, data):
  * From ``EPIC-rgb-flow-audio/train_video_flow_audio_EPIC_MOOSA.py`` (MOOSA) and
    ``EPIC-rgb-flow-audio/train_video_flow_audio_EPIC_ours2.py`` (CMRF) only the top-level
    definitions the loss needs are taken with ``ast`` and exec'd -- ``train_one_step`` itself
    (unchanged), their MLP/projector classes and CMRF's ``mix_feature`` -- so the heavy imports
    at the top of the scripts never run. Their ``SupConLoss`` is imported from their
    ``losses.py`` (it only needs torch).
  * ``train_one_step`` reads module-level globals; the harness puts them in the exec namespace:
    ``args`` (a Namespace with the README's flags), the authors' own MLP classes at small
    widths, and stand-ins for the encoders (``model``, ``model_flow``, ``audio_model``,
    ``audio_cls_model``, their SMA copies): each returns a fixed leaf tensor as the embedding
    and a Linear classifier's logits on it, so the gradient of their loss w.r.t. the embedding
    is read off the leaf. The optimizer is a no-op stub; ``.cuda()`` is the identity.
  * Random draws are recorded, not re-derived: ``torch.rand_like`` (the translation masks) is
    wrapped to record its output per input tensor, ``nn.Dropout.forward`` is replaced by the
    same math (``x * (u >= p) / (1 - p)``, u uniform) recording its keep mask per module,
    and CMRF's ``mix_feature`` is wrapped to record the mixup coefficients it draws with
    ``np.random.beta``. MOOSA's permutation classes are drawn exactly as their ``__main__``
    does (``random.seed(seed); random.sample(...)``) and handed to their code; our side
    derives its own from the seed (so that check is independent).
  * Loss terms are not returned separately by ``train_one_step``; each is obtained as the
    difference of two runs with identical draws (re-seeded), one with only that term's
    coefficient switched on. Everything runs in float64 (torch default dtype, JAX x64).
  * CMRF's SMA update is inline in their ``__main__`` loop, so it cannot be called; it is
    checked against a transcription in ``tests/test_baselines_moosa_cmrf.py``.

What the harness feeds MOOSA -- embeddings concatenated in ``moosa.authors_order`` (V, A, F
for three modalities) and the permutation classes of the run's seed -- is what the plug-in's
step now uses too (``moosa._terms_ext``; ``Config.seed=None`` takes ``config.seed``). Re-run
2026-12-06 with the plug-ins' real-data variants in place: every number below unchanged
except MOOSA video+audio (grads 2.0e-14, supcon 7.1e-15), video+flow (supcon 3.6e-15, grads
1.2e-14), flow+audio (grads 8.9e-15), V+A+F (jigsaw 4.4e-16, entmin 1.4e-16, supcon 7.1e-15,
total 7.1e-15, grads 5.8e-15) and CMRF video+audio (grads 1.5e-14), video+flow (supcon 3.6e-15,
grads 1.1e-14), flow+audio step 10 (grads 1.1e-14), V+A+F step 10 (ce_uni 1.8e-15, grads
5.1e-15): float64 rounding-level moves from the earlier record (not traced); worst 7.3e-09
(CMRF's float32 mixup, as before).

Recorded result (2026-11-30, CPU, float64; B=8, C=5, D = video 24 / audio 8 / flow 16; max abs
difference; 'grads' = over the embeddings, uni-modal and fused heads and every MOOSA/CMRF
parameter):

  method  modalities        terms (max abs diff)                                        total    grads    max|grad|
  MOOSA   video+audio       ce_w 2e-16 jigsaw 4e-16 entmin 0 trans 0 supcon 0 split 0          0        1.7e-14  12
  MOOSA   video+flow        ce_w 0 jigsaw 9e-16 entmin 3e-17 trans 8e-17 supcon 0 split 0      0        1.1e-14  8.7
  MOOSA   flow+audio        ce_w 0 jigsaw 0 entmin 6e-17 trans 8e-17 supcon 7e-15 split 2e-16  7.1e-15  1.1e-14  12
  MOOSA   video+audio+flow  ce_w 2e-16 jigsaw 0 entmin 8e-17 trans 6e-17 supcon 0 split 2e-16  0        4.4e-15  5.2
  CMRF    video+audio       step 10 (distill off): ce_f 0 ce_uni 0 supcon 7e-15 distill 0     7.1e-15  9.8e-15  5.7
  CMRF    video+audio       step 11 (|distill| 4.5): supcon 7e-15 distill 1.5e-9              1.5e-9   2.0e-9   6.1
  CMRF    video+flow        step 10: all terms 0                                               0        6.4e-15  8.6
  CMRF    video+flow        step 11 (|distill| 6.8): distill 4.5e-10                          4.5e-10  3.9e-9   8.7
  CMRF    flow+audio        step 10: all terms 0                                               3.6e-15  8.4e-15  8.8
  CMRF    flow+audio        step 11 (|distill| 4.4): distill 7.8e-10                          7.8e-10  3.4e-9   8.9
  CMRF    video+audio+flow  step 10: ce_f 2e-16 ce_uni 2e-15                                   7.1e-15  1.2e-14  5.3
  CMRF    video+audio+flow  step 11 (|distill| 16): distill 2.8e-9                            2.8e-9   7.3e-9   5.3

  ('step' is the authors' 1-based global_step with sma_start_step = 10.) The ~1e-9 left in
  CMRF's distillation is the authors' own float32 rounding: ``mix_feature`` casts the mixup
  coefficients to float32 (``.float()``) and forms ``1 - lambda`` in float32, while we mix in
  float64 with the same (float32-valued) coefficients. The run fails above 1e-7.
"""
import argparse
import ast
import copy
import importlib.util
import itertools
import math
import os
import random
import types

import jax

jax.config.update('jax_enable_x64', True)

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical
import torch.nn.functional as F

from mbcd_jax.baselines import cmrf, moosa  # pylint: disable=g-import-not-at-top

B, C = 8, 5
DIMS = {'video': 24, 'audio': 8, 'flow': 16}
HID = 32
SEED = 0


# ------------------------------------------------------------------------------ loading
def load_defs(path: str, names: set[str]) -> dict:
  """Exec only the named top-level functions/classes of ``path``; returns their namespace."""
  if not os.path.exists(path):
    raise SystemExit(f'harness: {path} not found (clone the authors\' repository, see --help)')
  tree = ast.parse(open(path).read(), path)
  keep = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
          and n.name in names]
  missing = names - {n.name for n in keep}
  if missing:
    raise SystemExit(f'harness: {path} lacks definitions {sorted(missing)}')
  ns = {'torch': torch, 'nn': nn, 'F': F, 'np': np, 'Categorical': Categorical,
        'itertools': itertools, 'copy': copy, 'List': list}
  exec(compile(ast.Module(body=keep, type_ignores=[]), path, 'exec'), ns)  # pylint: disable=exec-used
  return ns


def load_supcon(repo_subdir: str):
  path = os.path.join(repo_subdir, 'losses.py')
  spec = importlib.util.spec_from_file_location('authors_losses_' + str(abs(hash(path))), path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.SupConLoss


# ------------------------------------------------------------------------------ recording
class Recorder:
  """Patches torch so that the authors' random draws are recorded (see module docstring)."""

  def __init__(self):
    self.rand_like, self.dropout = {}, {}
    self._saved = None

  def __enter__(self):
    self._saved = (torch.rand_like, nn.Dropout.forward, torch.Tensor.cuda, nn.Module.cuda)
    orig_rand_like = torch.rand_like
    rec = self

    def rand_like(x, *a, **k):
      u = orig_rand_like(x, *a, **k)
      rec.rand_like[id(x)] = u.detach().clone()
      return u

    def dropout_forward(mod, x):
      if not mod.training or mod.p == 0:
        return x
      keep = torch.rand(x.shape, dtype=x.dtype) >= mod.p
      rec.dropout[id(mod)] = keep
      return x * keep.to(x.dtype) / (1 - mod.p)
    torch.rand_like = rand_like
    nn.Dropout.forward = dropout_forward
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    return self

  def __exit__(self, *exc):
    torch.rand_like, nn.Dropout.forward, torch.Tensor.cuda, nn.Module.cuda = self._saved


def stub_encoder(emd: torch.Tensor, fc: nn.Linear, video: bool):
  """Stand-in for an mmaction recognizer: ``.module.backbone`` / ``.module.cls_head``."""
  head = lambda _: (fc(emd), emd)
  backbone = types.SimpleNamespace(get_feature=(lambda x: (x, x)) if video else (lambda x: x),
                                   get_predict=lambda x: x)
  return types.SimpleNamespace(module=types.SimpleNamespace(backbone=backbone, cls_head=head))


class NoOptim:
  def zero_grad(self):
    pass

  def step(self):
    pass


def batch_inputs():
  dummy = {'imgs': torch.zeros(B, 1, 1)}
  return dummy, dummy, torch.zeros(B, 1)


# ------------------------------------------------------------------------------ conversion
def lin(m: nn.Linear, get) -> dict:
  return {'Dense_0': {'kernel': get(m.weight).T, 'bias': get(m.bias)}}


def proj_params(ph, get) -> dict:
  h = ph.head
  bn = lambda b: {'scale': get(b.weight), 'bias': get(b.bias)}
  return {'TorchDense_0': lin(h[0], get), 'BatchNorm_0': bn(h[1]),
          'TorchDense_1': lin(h[3], get), 'BatchNorm_1': bn(h[4]),
          'TorchDense_2': lin(h[6], get)}


def proj_stats(ph) -> dict:
  h = ph.head
  st = lambda b: {'mean': b.running_mean.detach().numpy().copy(),
                  'var': b.running_var.detach().numpy().copy()}
  return {'BatchNorm_0': st(h[1]), 'BatchNorm_1': st(h[4])}


VAL = lambda t: t.detach().numpy().copy()
GRAD = lambda t: (t.grad if t.grad is not None else torch.zeros_like(t)).numpy().copy()


def head_params(fcs, mlp, get):
  return {'uni': {m: lin(fc, get) for m, fc in fcs.items()},
          'fused': {'l0': lin(mlp.enc_net[0], get), 'l1': lin(mlp.enc_net[3], get)}}


def jax_heads(hp, feats, order, fused_keep):
  """Uni-modal Linear heads and the fused Linear-ReLU-Dropout-Linear, replaying the keep."""
  dense = lambda p, x: x @ p['Dense_0']['kernel'] + p['Dense_0']['bias']
  uni = {m: dense(hp['uni'][m], feats[m]) for m in order}
  h = jax.nn.relu(dense(hp['fused']['l0'], jnp.concatenate([feats[m] for m in order], 1)))
  return uni, dense(hp['fused']['l1'], h * fused_keep / 0.5)


def max_diff(a, b) -> float:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb), (len(la), len(lb))
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(la, lb))


# ------------------------------------------------------------------------------ MOOSA
def run_moosa(moosa_dir: str, mods: tuple[str, ...]) -> dict:
  sub = os.path.join(moosa_dir, 'EPIC-rgb-flow-audio')
  ns = load_defs(os.path.join(sub, 'train_video_flow_audio_EPIC_MOOSA.py'),
                 {'train_one_step', 'Encoder', 'EncoderTrans', 'EncoderJigsaw', 'ProjectHead'})
  supcon_cls = load_supcon(sub)
  order = moosa.authors_order(mods)
  splits = 2 if len(mods) == 3 else 4
  cfg = moosa.Config(mask_ratio=0.7, trans_hidden=HID, jigsaw_num_splits=splits,
                     jigsaw_samples=16, jigsaw_hidden=HID, entropy_min_weight=0.1,
                     proj_hidden=HID, proj_out=16, seed=SEED)
  full = dict(jigsaw_ratio=cfg.jigsaw_ratio, entropy_min_weight=cfg.entropy_min_weight,
              alpha_trans=cfg.alpha_trans, alpha_contrast=cfg.alpha_contrast,
              explore_loss_coeff=cfg.explore_coeff)
  random.seed(SEED)
  jigsaw_indices = random.sample(range(math.factorial(len(mods) * splits)), cfg.jigsaw_samples)

  torch.manual_seed(1)
  rng = np.random.default_rng(2)
  emd = {m: torch.tensor(rng.standard_normal((B, DIMS[m])), requires_grad=True) for m in mods}
  fcs = {m: nn.Linear(DIMS[m], C) for m in mods}
  short = {'video': 'v', 'audio': 'a', 'flow': 'f'}
  trans = {(a, b): ns['EncoderTrans'](input_dim=DIMS[a], hidden=HID, out_dim=DIMS[b])
           for a, b in moosa.pairs(mods)}
  projs = {m: ns['ProjectHead'](input_dim=DIMS[m] // 2, hidden_dim=HID, out_dim=16)
           for m in mods}
  mlp = ns['Encoder'](input_dim=sum(DIMS[m] for m in mods), out_dim=C)
  jig = ns['EncoderJigsaw'](input_dim=sum(DIMS[m] for m in mods), out_dim=cfg.jigsaw_samples,
                            hidden=HID)
  stats0 = {m: proj_stats(projs[m]) for m in mods}
  ns.update(
      criterion=nn.CrossEntropyLoss(reduction='none'),
      criterion_contrast=supcon_cls(temperature=cfg.temperature),
      jigsaw_indices=jigsaw_indices, mlp_cls=mlp, jigsaw_cls=jig, optim=NoOptim(),
      model=stub_encoder(emd.get('video'), fcs.get('video'), True),
      model_flow=stub_encoder(emd.get('flow'), fcs.get('flow'), False),
      audio_model=lambda s: (None, s, None),
      audio_cls_model=(lambda _: (fcs['audio'](emd['audio']), emd['audio'])))
  for (a, b), t in trans.items():
    ns[f'mlp_{short[a]}2{short[b]}'] = t
  for m, p in projs.items():
    ns[f'{short[m]}_proj'] = p
  labels = torch.tensor(rng.integers(0, C, B))
  leaves = list(emd.values()) + [p for mod in [*fcs.values(), *trans.values(), *projs.values(),
                                               mlp, jig] for p in mod.parameters()]

  def authors(**coefs):
    ns['args'] = argparse.Namespace(
        use_video='video' in mods, use_audio='audio' in mods, use_flow='flow' in mods,
        jigsaw_num_splits=splits, entropy_weight_temp=cfg.entropy_weight_temp,
        mask_ratio=cfg.mask_ratio, **coefs)
    for t in leaves:
      t.grad = None
    torch.manual_seed(5)
    clip, flow, spec = batch_inputs()
    with Recorder() as rec:
      _, loss = ns['train_one_step'](clip, labels, flow, spec)
    return loss, rec

  zero = {k: 0.0 for k in full}
  base, _ = authors(**zero)
  names = {'jigsaw_ratio': 'jigsaw', 'entropy_min_weight': 'entropy_min',
           'alpha_trans': 'translation', 'alpha_contrast': 'supcon',
           'explore_loss_coeff': 'split_distance'}
  want = {'ce_weighted': base.item()}
  for k, name in names.items():
    loss, _ = authors(**{**zero, k: full[k]})
    want[name] = loss.item() - base.item()
  loss, rec = authors(**full)       # their train_one_step ran loss.backward() itself
  want_total = loss.item()

  # ---- ours, on the same weights and draws
  params = {'translators': {f'{a}_to_{b}': {'TorchDense_0': lin(t.enc_net[0], VAL),
                                            'TorchDense_1': lin(t.enc_net[2], VAL),
                                            'TorchDense_2': lin(t.enc_net[5], VAL)}
                            for (a, b), t in trans.items()},
            'jigsaw': {'TorchDense_0': lin(jig.enc_net[0], VAL),
                       'TorchDense_1': lin(jig.enc_net[2], VAL)},
            'proj': {m: proj_params(projs[m], VAL) for m in mods}}
  stats = {'proj': stats0}
  draws = {'masked': {m: rec.rand_like[id(emd[m])].numpy() < cfg.mask_ratio for m in mods},
           'keep': {f'{a}_to_{b}': rec.dropout[id(t.enc_net[4])].numpy()
                    for (a, b), t in trans.items()}}
  fused_keep = rec.dropout[id(mlp.enc_net[2])].numpy().astype(np.float64)
  cols = moosa.jigsaw_setup(DIMS, order, cfg)
  feats = {m: VAL(emd[m]) for m in mods}
  hp = head_params(fcs, mlp, VAL)

  def total(params, hp, feats):
    uni, fused = jax_heads(hp, feats, order, fused_keep)
    terms, _ = moosa.loss_terms_given(params, stats, feats, uni, fused, jnp.asarray(labels),
                                      draws, modalities=order, cfg=cfg, cols=cols)
    return sum(terms.values()), terms
  (tot, terms), grads = jax.value_and_grad(total, argnums=(0, 1, 2), has_aux=True)(
      params, hp, feats)
  torch_grads = (
      {'translators': {f'{a}_to_{b}': {'TorchDense_0': lin(t.enc_net[0], GRAD),
                                       'TorchDense_1': lin(t.enc_net[2], GRAD),
                                       'TorchDense_2': lin(t.enc_net[5], GRAD)}
                       for (a, b), t in trans.items()},
       'jigsaw': {'TorchDense_0': lin(jig.enc_net[0], GRAD),
                  'TorchDense_1': lin(jig.enc_net[2], GRAD)},
       'proj': {m: proj_params(projs[m], GRAD) for m in mods}},
      head_params(fcs, mlp, GRAD), {m: GRAD(emd[m]) for m in mods})
  out = {k: abs(float(terms[k]) - v) for k, v in want.items()}
  out['total'] = abs(float(tot) - want_total)
  out['grads'] = max_diff(grads, torch_grads)
  out['|grad|max'] = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(torch_grads))
  return out


# ------------------------------------------------------------------------------ CMRF
def run_cmrf(cmrf_dir: str, mods: tuple[str, ...], global_step: int, start: int) -> dict:
  sub = os.path.join(cmrf_dir, 'EPIC-rgb-flow-audio')
  ns = load_defs(os.path.join(sub, 'train_video_flow_audio_EPIC_ours2.py'),
                 {'train_one_step', 'mix_feature', 'norm', 'Encoder', 'ProjectHead'})
  supcon_cls = load_supcon(sub)
  cfg = cmrf.Config(proj_hidden=HID, proj_out=16, sma_start_step=start)
  order = moosa.authors_order(mods)       # CMRF concatenates the fused input the same way
  torch.manual_seed(3)
  rng = np.random.default_rng(4)
  emd = {m: torch.tensor(rng.standard_normal((B, DIMS[m])), requires_grad=True) for m in mods}
  temd = {m: torch.tensor(rng.standard_normal((B, DIMS[m]))) + emd[m].detach() for m in mods}
  fcs = {m: nn.Linear(DIMS[m], C) for m in mods}
  mlp = ns['Encoder'](input_dim=sum(DIMS[m] for m in mods), out_dim=C)
  projs = {m: ns['ProjectHead'](input_dim=DIMS[m], hidden_dim=HID, out_dim=16) for m in mods}
  tprojs = {}
  for m in mods:           # an SMA teacher: other weights, non-trivial running statistics
    t = copy.deepcopy(projs[m])
    with torch.no_grad():
      for p in t.parameters():
        p.add_(0.05 * torch.randn_like(p))
      for b in (t.head[1], t.head[4]):
        b.running_mean.copy_(0.1 * torch.randn_like(b.running_mean))
        b.running_var.copy_(1 + 0.5 * torch.rand_like(b.running_var))
    tprojs[m] = t.eval()
  stats0 = {m: proj_stats(projs[m]) for m in mods}
  short = {'video': 'v', 'audio': 'a', 'flow': 'f'}
  lam_log = []
  orig_mix = ns['mix_feature']

  def mix_feature(m1, m2, a1=None, a2=None):
    f1, f2, lams = orig_mix(m1, m2, a1, a2)
    lam_log.append([l.detach().numpy().astype(np.float64)[:, 0] for l in lams])
    return f1, f2, lams
  ns.update(
      mix_feature=mix_feature, criterion=nn.CrossEntropyLoss(),
      criterion_contrast=supcon_cls(temperature=cfg.temperature), mlp_cls=mlp,
      optim=NoOptim(),
      model=stub_encoder(emd.get('video'), fcs.get('video'), True),
      model_flow=stub_encoder(emd.get('flow'), fcs.get('flow'), False),
      model_sma=stub_encoder(temd.get('video'), fcs.get('video'), True),
      model_flow_sma=stub_encoder(temd.get('flow'), fcs.get('flow'), False),
      audio_model=lambda s: (None, s, None),
      audio_cls_model=(lambda _: (fcs['audio'](emd['audio']), emd['audio'])),
      audio_cls_model_sma=(lambda _: (None, temd['audio'])))
  for m in mods:
    ns[f'{short[m]}_proj_m'] = projs[m]
    ns[f'{short[m]}_proj_m_sma'] = tprojs[m]
  labels = torch.tensor(rng.integers(0, C, B))
  leaves = list(emd.values()) + [p for mod in [*fcs.values(), *projs.values(), mlp]
                                 for p in mod.parameters()]

  def authors(mix_coef, contrast, distill):
    ns['args'] = argparse.Namespace(
        use_video='video' in mods, use_audio='audio' in mods, use_flow='flow' in mods,
        CM_mixup=True, SMA=True, contrast=contrast, distill=distill, vanilla_learning=True,
        DG_algorithm='naive', mix_alpha=cfg.mix_alpha, mix_coef=mix_coef,
        distill_coef=cfg.distill_coef, alpha_contrast=cfg.alpha_contrast,
        sma_start_step=start)
    for t in leaves:
      t.grad = None
    lam_log.clear()
    torch.manual_seed(6)
    np.random.seed(7)
    clip, flow, spec = batch_inputs()
    with Recorder() as rec:
      _, loss = ns['train_one_step'](clip, labels, flow, spec, global_step)
    return loss, rec

  base, _ = authors(0.0, False, False)
  want = {'ce_fused': base.item(),
          'ce_uni': authors(cfg.mix_coef, False, False)[0].item() - base.item(),
          'supcon': authors(0.0, True, False)[0].item() - base.item(),
          'distill': authors(0.0, False, True)[0].item() - base.item()}
  loss, rec = authors(cfg.mix_coef, True, True)   # ran loss.backward() itself
  want_total = loss.item()

  pairs = cmrf.authors_pairs(mods)
  assert len(lam_log) == len(pairs), (len(lam_log), pairs)
  draws = {f'{a}+{b}': (lam_log[i][0], lam_log[i][1]) for i, (a, b) in enumerate(pairs)}
  params = {'proj': {m: proj_params(projs[m], VAL) for m in mods}}
  tparams = {'proj': {m: proj_params(tprojs[m], VAL) for m in mods}}
  tstats = {'proj': {m: proj_stats(tprojs[m]) for m in mods}}
  fused_keep = rec.dropout[id(mlp.enc_net[2])].numpy().astype(np.float64)
  feats = {m: VAL(emd[m]) for m in mods}
  tfeats = {m: temd[m].numpy() for m in mods}
  hp = head_params(fcs, mlp, VAL)

  def total(params, hp, feats):
    uni, fused = jax_heads(hp, feats, order, fused_keep)
    terms, _ = cmrf.loss_terms_given(
        params, {'proj': stats0}, feats, uni, fused, jnp.asarray(labels), draws,
        modalities=order, teacher_params=tparams, teacher_batch_stats=tstats,
        teacher_feats=tfeats, step=global_step - 1, cfg=cfg)
    return sum(terms.values()), terms
  (tot, terms), grads = jax.value_and_grad(total, argnums=(0, 1, 2), has_aux=True)(
      params, hp, feats)
  torch_grads = ({'proj': {m: proj_params(projs[m], GRAD) for m in mods}},
                 head_params(fcs, mlp, GRAD), {m: GRAD(emd[m]) for m in mods})
  out = {k: abs(float(terms[k]) - v) for k, v in want.items()}
  out['total'] = abs(float(tot) - want_total)
  out['grads'] = max_diff(grads, torch_grads)
  out['|distill|'] = abs(want['distill'])
  out['|grad|max'] = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(torch_grads))
  return out


def fmt(row: dict) -> str:
  return '  '.join(f'{k}={v:.1e}' for k, v in row.items())


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--moosa_dir', required=True, help='clone of donghao51/MOOSA')
  parser.add_argument('--cmrf_dir', required=True,
                      help='clone of fanyunfeng-bit/Cross-modal-Representation-Flattening-for-MMDG')
  args = parser.parse_args()
  torch.set_default_dtype(torch.float64)
  sets = [('video', 'audio'), ('video', 'flow'), ('flow', 'audio'), ('video', 'audio', 'flow')]
  worst = 0.0
  for mods in sets:
    row = run_moosa(args.moosa_dir, mods)
    worst = max(worst, *(v for k, v in row.items() if not k.startswith('|')))
    print(f'MOOSA {"+".join(mods):18s} {fmt(row)}')
  for mods in sets:
    for step in (10, 11):       # authors' 1-based global_step; distillation from step > 10
      row = run_cmrf(args.cmrf_dir, mods, step, 10)
      worst = max(worst, *(v for k, v in row.items() if not k.startswith('|')))
      print(f'CMRF  {"+".join(mods):18s} global_step={step}  {fmt(row)}')
  print(f'worst abs difference: {worst:.1e}')
  if worst > 1e-7:
    raise SystemExit('harness: parity FAILED')


if __name__ == '__main__':
  main()
