"""Our RNA-Net and SimMMDG losses vs the AUTHORS' OWN training-step code, same tensors, float64.

    JAX_PLATFORMS=cpu python -m benchmarks.baselines_harness_rna_simmmdg \\
        --simmmdg_dir=/tmp/simmmdg --mmdg_benchmark_dir=/tmp/mmdg_benchmark

Getting the clones (their code is never copied into this repository): clone
``github.com/donghao51/SimMMDG`` and ``github.com/lihongzhao99/MMDG_Benchmark``; only these files
are read, so a partial checkout is enough::

    git clone --no-checkout https://github.com/donghao51/SimMMDG /tmp/simmmdg
    git -C /tmp/simmmdg restore --source=HEAD -- EPIC-rgb-flow-audio/losses.py \\
        EPIC-rgb-flow-audio/train_video_flow_audio_EPIC_SimMMDG.py
    git clone --no-checkout https://github.com/lihongzhao99/MMDG_Benchmark /tmp/mmdg_benchmark
    git -C /tmp/mmdg_benchmark restore --source=HEAD -- "Action recognition/train_RNA.py"

How their code runs here: each training script is imported as a module (so its ``__main__``
block does not run) after stubbing its heavy imports in ``sys.modules`` (mmaction.apis,
VGGSound.*, the dataloaders); SimMMDG's real ``losses.py`` (SupConLoss, pure torch) is imported.
``Tensor.cuda`` is made the identity. Then their own ``train_one_step`` is called with the
module globals it reads set by us: ``args`` (coefficients, modality flags), fake encoders whose
head returns our embeddings as leaf tensors, their ``Encoder`` / ``EncoderTrans`` /
``ProjectHead`` classes built with our Flax weights, their ``SupConLoss(temperature=0.1)``, and an
optimizer stub (zero_grad/step do nothing, so the gradients stay readable). Their step only
returns the total loss, so each term is isolated by running it with that term's coefficient at
1 and the others at 0, minus the run with all at 0 (the fused CE); gradients likewise. Dropout
is off on both sides (their Dropout modules in eval mode); their projection-head BatchNorms run
in train mode (batch statistics) as in training.

Compared: each unweighted term (``value`` = ours) and the fused CE; ``max|g_e|`` = our largest
gradient w.r.t. the embeddings; ``|d ...|`` = max abs difference to theirs in the value, the
embedding gradients and the extra parameters' gradients (projection heads, translators).
CPU, float64, B = 8, widths v 8 / f 6 / a 4, 5 classes; their commits SimMMDG fbca1f06,
MMDG_Benchmark e98e837d; the plug-ins' real-data variant (fused head with ``nn.Linear``'s
initialisers, ``param_init='torch'``; recorded 2026-12-06, ~1 min on 2 loaded cores):

    method   mods   term             value  max|g_e|  |d value|  |d g_e| |d g_par|
    rna      V+F+A  ce_fused        1.6334         -    0.0e+00        -         -
    rna      V+F+A  rna            54.3346   1.8e+01    2.1e-14  7.1e-15         -
    rna      V+F    ce_fused        1.6428         -    0.0e+00        -         -
    rna      V+F    rna             6.1226   6.8e-01    2.7e-15  2.2e-16         -
    rna      V+A    ce_fused        1.6405         -    2.2e-16        -         -
    rna      V+A    rna           149.0328   5.0e+01    5.7e-14  7.1e-15         -
    rna      F+A    ce_fused        1.6138         -    0.0e+00        -         -
    rna      F+A    rna             7.8485   3.3e+00    0.0e+00  4.4e-16         -
    simmmdg  V+F+A  ce_fused        1.6334         -    0.0e+00        -         -
    simmmdg  V+F+A  contrast       10.2356   9.3e+00    5.3e-15  9.2e-15   9.0e-15
    simmmdg  V+F+A  translation     1.1254   3.1e-02    0.0e+00  6.9e-18   3.8e-17
    simmmdg  V+F+A  distance       -1.9091   1.3e-01    4.4e-16  6.9e-18   0.0e+00
    simmmdg  V+F    ce_fused        1.6428         -    0.0e+00        -         -
    simmmdg  V+F    contrast       10.1325   9.7e-01    0.0e+00  1.6e-15   1.2e-14
    simmmdg  V+F    translation     1.3723   1.8e-02    0.0e+00  6.9e-18   6.9e-17
    simmmdg  V+F    distance       -2.8219   2.0e-01    4.4e-16  6.9e-18   0.0e+00
    simmmdg  V+A    ce_fused        1.6405         -    2.2e-16        -         -
    simmmdg  V+A    contrast        9.1336   3.6e+00    1.8e-15  5.9e-15   1.2e-14
    simmmdg  V+A    translation     1.1820   8.9e-02    0.0e+00  2.8e-17   8.3e-17
    simmmdg  V+A    distance       -2.5105   2.0e-01    4.4e-16  8.7e-19   0.0e+00
    simmmdg  F+A    ce_fused        1.6138         -    0.0e+00        -         -
    simmmdg  F+A    contrast       10.7395   3.6e+00    1.8e-15  9.1e-15   2.8e-14
    simmmdg  F+A    translation     1.0298   1.1e-01    0.0e+00  2.3e-17   1.1e-16
    simmmdg  F+A    distance       -0.3949   6.6e-02    0.0e+00  6.9e-18   0.0e+00

    initialiser (param_init=torch)  std ours    theirs max|w| ours    theirs
    fused Dense_0 kernel             0.01088   0.01088     0.01884   0.01884
    fused Dense_0 bias               0.01109   0.01137     0.01883   0.01877
    fused Dense_1 kernel             0.02550   0.02537     0.04419   0.04418
    layer4.0.conv1                   0.02085   0.02084     0.09798   0.10752
    layer4.1.conv2                   0.02084   0.02084     0.10443   0.10239
    layer4.0.downsample.0            0.06251   0.06255     0.29730   0.29276
    layer4 BN weights                0.02020   0.02001     1.07687   1.08703
    layer4 BN biases                 0.00000   0.00000     0.00000   0.00000

(The second table is one draw of each side — their ``Encoder(2816, 8)`` and VGGSound's
``AudioAttGenModule`` from the SimMMDG clone vs ``models.Head(param_init='torch')`` and
``torch_init.vggsound_tail`` — so the columns agree to sampling error, ~1%: expected std
1/sqrt(3 * 2816) = 0.01088, sqrt(2 / (9 * 512)) = 0.02083, sqrt(2 / 512) = 0.0625, 0.02.)

Agreement is to rounding (<= 6e-14 on values up to 149), so our terms are the authors' terms,
coefficient conventions and gradients included (nothing detached on either side).
"""
import argparse
import importlib.util
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update('jax_enable_x64', True)


import torch  # pylint: disable=g-import-not-at-top,wrong-import-position

from mbcd_jax import encoders, models  # pylint: disable=g-import-not-at-top,wrong-import-position
from mbcd_jax.method import losses  # pylint: disable=g-import-not-at-top,wrong-import-position
from mbcd_jax.baselines import rna, simmmdg, torch_init

DIMS = {'video': 8, 'flow': 6, 'audio': 4}
NUM_CLASSES = 5
B = 8
SETUPS = [('video', 'flow', 'audio'), ('video', 'flow'), ('video', 'audio'), ('flow', 'audio')]
HP = simmmdg.Hparams(proj_hidden=10, proj_dim=5, trans_hidden=7, trans_dropout=0.0)


# ------------------------------------------------------------------ loading their code
def _stub_modules():
  """Empty stand-ins for the imports their scripts make at module level."""
  names = {
      'mmaction': {}, 'mmaction.apis': {'init_recognizer': None},
      'VGGSound': {}, 'VGGSound.model': {'AVENet': None}, 'VGGSound.models': {},
      'VGGSound.models.resnet': {'AudioAttGenModule': None},
      'VGGSound.test': {'get_arguments': None},
      'dataloader_video_flow_audio_EPIC_SimMMDG': {'EPICDOMAIN': None},
      'dataloaders': {}, 'dataloaders.dataloader_EPIC': {'EPICDOMAIN': None},
      'dataloaders.dataloader_HAC': {'HACDOMAIN': None},
  }
  for name, attrs in names.items():
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod


def load_script(path: str, name: str):
  if not os.path.isfile(path):
    raise SystemExit(f'not found: {path} (see this file\'s docstring for how to clone it)')
  _stub_modules()
  # Loading the user's clone of their code: its folder goes on the path for the script's own
  # `from losses import SupConLoss` (the one sys.path edit in benchmarks/, undone below).
  sys.path.insert(0, os.path.dirname(path))
  sys.modules.pop('losses', None)
  try:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
  finally:
    sys.path.pop(0)
    sys.modules.pop('losses', None)
  return mod


# ------------------------------------------------------------------ fakes around their step
class _Fake:
  """Attribute bag; ``module`` / ``backbone`` point back to itself."""

  def __init__(self, **kw):
    self.__dict__.update(kw)
    self.module = self
    self.backbone = self


def _fake_encoders(emb):
  """Encoders whose heads return the current leaf tensors in ``emb`` (modality -> tensor)."""
  x = torch.zeros(B, 1)
  video = _Fake(get_feature=lambda clip: (x, x), get_predict=lambda f: f,
                cls_head=lambda f: (None, emb['video']))
  flow = _Fake(get_feature=lambda flow: x, get_predict=lambda f: f,
               cls_head=lambda f: (None, emb['flow']))
  audio_model = lambda spec: (None, x, None)
  audio_cls = lambda f: (None, emb['audio'])
  return video, flow, audio_model, audio_cls


class _NoOptim:
  def zero_grad(self):
    pass

  def step(self):
    pass


def _copy_linear(lin, p):
  with torch.no_grad():
    lin.weight.copy_(torch.tensor(np.asarray(p['kernel']).T))
    lin.bias.copy_(torch.tensor(np.asarray(p['bias'])))


def _copy_bn(bn, p):
  with torch.no_grad():
    bn.weight.copy_(torch.tensor(np.asarray(p['scale'])))
    bn.bias.copy_(torch.tensor(np.asarray(p['bias'])))


def _dense(p, i):
  return p[f'TorchDense_{i}']['Dense_0']


def _their_order(mods):
  """Their fused-input order: (v, a, f) / (v, f) / (v, a) / (f, a)."""
  return [m for m in ('video', 'audio', 'flow') if m in mods] if len(mods) == 3 else (
      ['flow', 'audio'] if set(mods) == {'flow', 'audio'} else [m for m in ('video', 'flow', 'audio') if m in mods])


def _eval_dropouts(*nets):
  for net in nets:
    for m in net.modules():
      if isinstance(m, torch.nn.Dropout):
        m.eval()


def _run_theirs(mod, mods, feats, labels, args_kw, extra_modules):
  """One call of their train_one_step; returns (loss, grads of embeddings, module grads)."""
  emb = {m: torch.tensor(feats[m], requires_grad=True) for m in mods}
  video, flow, audio_model, audio_cls = _fake_encoders(emb)
  for net in extra_modules.values():
    net.zero_grad(set_to_none=True)
  mod.args = argparse.Namespace(use_video='video' in mods, use_flow='flow' in mods,
                                use_audio='audio' in mods, **args_kw)
  mod.model, mod.model_flow, mod.audio_model, mod.audio_cls_model = video, flow, audio_model, audio_cls
  mod.optim = _NoOptim()
  mod.criterion = torch.nn.CrossEntropyLoss()
  mod.__dict__.update(extra_modules)
  clip = {'imgs': torch.zeros(B, 1, 1)}
  _, loss = mod.train_one_step(clip, torch.tensor(labels), {'imgs': torch.zeros(B, 1, 1)},
                               torch.zeros(B, 1))
  eg = {m: emb[m].grad.numpy().copy() for m in mods}
  pg = {name: [p.grad.numpy().copy() if p.grad is not None else np.zeros(p.shape)
               for p in net.parameters()] for name, net in extra_modules.items()}
  return loss.item(), eg, pg


def _fused_head(rng, mods):
  # The plug-ins' real-data variant: nn.Linear's initialisers (the weights are copied to their
  # head, so the comparison does not depend on them).
  head = models.Head(NUM_CLASSES, param_init=dict(rna.EXTENSION.model)['param_init'])
  d = sum(DIMS[m] for m in mods)
  return head, head.init(rng, jnp.zeros((1, d)), train=False)['params']


def _their_fused(mod, head_params, mods):
  d = sum(DIMS[m] for m in mods)
  enc = mod.Encoder(input_dim=d, out_dim=NUM_CLASSES)
  _copy_linear(enc.enc_net[0], head_params['Dense_0'])
  _copy_linear(enc.enc_net[3], head_params['Dense_1'])
  _eval_dropouts(enc)
  return enc


def _our_ce(head, head_params, feats, labels, mods):
  x = jnp.concatenate([feats[m] for m in _their_order(mods)], -1)
  return losses.cross_entropy(head.apply({'params': head_params}, x, train=False), labels)


def _diff(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# ------------------------------------------------------------------ RNA
def compare_rna(mod, mods, feats, labels):
  head, hp_ = _fused_head(jax.random.key(1), mods)
  extra = {'mlp_cls': _their_fused(mod, hp_, mods)}
  jf = {m: jnp.asarray(feats[m]) for m in mods}
  ce0, eg0, _ = _run_theirs(mod, mods, feats, labels, {'alpha_RNA': 0.0}, extra)
  ce1, eg1, _ = _run_theirs(mod, mods, feats, labels, {'alpha_RNA': 1.0}, extra)
  val, g = jax.value_and_grad(rna.relative_norm_alignment)(jf)
  our_ce = _our_ce(head, hp_, jf, jnp.asarray(labels), mods)
  gmax = max(float(jnp.abs(g[m]).max()) for m in mods)
  rows = [('ce_fused', float(our_ce), None, _diff(our_ce, ce0), None, None),
          ('rna', float(val), gmax, _diff(val, ce1 - ce0),
           max(_diff(g[m], eg1[m] - eg0[m]) for m in mods), None)]
  return rows, float(val)


# ------------------------------------------------------------------ SimMMDG
def _their_extras(mod, params, mods):
  ex = {}
  short = {'video': 'v', 'flow': 'f', 'audio': 'a'}
  for m in mods:
    p = params['proj'][m]
    net = mod.ProjectHead(input_dim=DIMS[m] // 2, hidden_dim=HP.proj_hidden, out_dim=HP.proj_dim)
    for i, j in ((0, 0), (3, 1), (6, 2)):
      _copy_linear(net.head[i], _dense(p, j))
    _copy_bn(net.head[1], p['BatchNorm_0'])
    _copy_bn(net.head[4], p['BatchNorm_1'])
    ex[f'{short[m]}_proj'] = net
  for a in mods:
    for b in mods:
      if a == b:
        continue
      p = params['trans'][simmmdg.pair_name(a, b)]
      net = mod.EncoderTrans(input_dim=DIMS[a], hidden=HP.trans_hidden, out_dim=DIMS[b])
      for i, j in ((0, 0), (2, 1), (5, 2)):
        _copy_linear(net.enc_net[i], _dense(p, j))
      _eval_dropouts(net)
      ex[f'mlp_{short[a]}2{short[b]}'] = net
  return ex


def _our_param_grads_like_theirs(gp, mods):
  """Our grads, in the order of their modules' ``parameters()`` (weights transposed)."""
  out = {}
  short = {'video': 'v', 'flow': 'f', 'audio': 'a'}
  for m in mods:
    p = gp['proj'][m]
    seq = [_dense(p, 0), p['BatchNorm_0'], _dense(p, 1), p['BatchNorm_1'], _dense(p, 2)]
    flat = []
    for q in seq:
      flat += [q['kernel'].T, q['bias']] if 'kernel' in q else [q['scale'], q['bias']]
    out[f'{short[m]}_proj'] = flat
  for a in mods:
    for b in mods:
      if a != b:
        p = gp['trans'][simmmdg.pair_name(a, b)]
        out[f'mlp_{short[a]}2{short[b]}'] = sum(
            ([_dense(p, i)['kernel'].T, _dense(p, i)['bias']] for i in range(3)), [])
  return out


def compare_simmmdg(mod, mods, feats, labels):
  dims = {m: DIMS[m] for m in mods}
  params, stats = simmmdg.init(jax.random.key(0), dims, HP)
  params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
  head, hp_ = _fused_head(jax.random.key(1), mods)
  extra = _their_extras(mod, params, mods)
  extra['mlp_cls'] = _their_fused(mod, hp_, mods)
  mod.criterion_contrast = mod.SupConLoss(temperature=HP.temperature)
  jf = {m: jnp.asarray(feats[m]) for m in mods}
  y = jnp.asarray(labels)

  def ours(p, f, key):
    _, aux = simmmdg.loss_terms(p, f, y, None, batch_stats=stats, hp=HP)
    return aux['unweighted'][key]

  zero = {'alpha_trans': 0.0, 'alpha_contrast': 0.0, 'explore_loss_coeff': 0.0}
  ce0, eg0, pg0 = _run_theirs(mod, mods, feats, labels, zero, extra)
  our_ce = _our_ce(head, hp_, jf, y, mods)
  rows = [('ce_fused', float(our_ce), None, _diff(our_ce, ce0), None, None)]
  for key, arg in (('contrast', 'alpha_contrast'), ('translation', 'alpha_trans'),
                   ('distance', 'explore_loss_coeff')):
    l1, eg1, pg1 = _run_theirs(mod, mods, feats, labels, {**zero, arg: 1.0}, extra)
    val, (gp, gf) = jax.value_and_grad(ours, argnums=(0, 1))(params, jf, key)
    ogp = _our_param_grads_like_theirs(gp, mods)
    gdiff_f = max(_diff(gf[m], eg1[m] - eg0[m]) for m in mods)
    gdiff_p = max(_diff(o, t1 - t0) for name in ogp
                  for o, t1, t0 in zip(ogp[name], pg1[name], pg0[name]))
    gmax = max(float(jnp.abs(gf[m]).max()) for m in mods)
    rows.append((key, float(val), gmax, _diff(val, l1 - ce0), gdiff_f, gdiff_p))
  return rows


def compare_init(simmmdg_dir: str, seed: int = 0) -> list[tuple]:
  """The real-data variant's initialisers (``param_init='torch'``) vs the authors' modules.

  Their fused head (``Encoder(2816, 8)``, two ``nn.Linear``) and their random audio tail
  (VGGSound's ``AudioAttGenModule``, layer4 of width 512) against ours
  (``models.Head(param_init='torch')``, ``torch_init.vggsound_tail`` on the VGGSound stage),
  one draw each: per tensor, the standard deviation and the largest magnitude. Returns rows
  ``(tensor, ours std, theirs std, ours max, theirs max)``."""
  path = os.path.join(simmmdg_dir, 'EPIC-rgb-flow-audio', 'VGGSound', 'models', 'resnet.py')
  spec = importlib.util.spec_from_file_location('authors_vggsound_resnet', path)
  vgg = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(vgg)
  torch.manual_seed(seed)
  tail = vgg.AudioAttGenModule()
  sim = load_script(os.path.join(simmmdg_dir, 'EPIC-rgb-flow-audio',
                                 'train_video_flow_audio_EPIC_SimMMDG.py'), 'authors_simmmdg_init')
  head = sim.Encoder(input_dim=2816, out_dim=8)
  theirs = {'fused Dense_0 kernel': head.enc_net[0].weight, 'fused Dense_0 bias': head.enc_net[0].bias,
            'fused Dense_1 kernel': head.enc_net[3].weight,
            'layer4.0.conv1': tail.layer4[0].conv1.weight, 'layer4.1.conv2': tail.layer4[1].conv2.weight,
            'layer4.0.downsample.0': tail.layer4[0].downsample[0].weight,
            'layer4 BN weights': torch.cat([tail.layer4[b].bn1.weight for b in (0, 1)] +
                                           [tail.layer4[b].bn2.weight for b in (0, 1)]),
            'layer4 BN biases': torch.cat([tail.layer4[b].bn1.bias for b in (0, 1)])}
  theirs = {k: v.detach().numpy() for k, v in theirs.items()}
  param_init = dict(simmmdg.EXTENSION.model)['param_init']
  hp = models.Head(8, param_init=param_init).init(jax.random.key(seed), jnp.zeros((1, 2816)),
                                                  train=False)['params']
  stage = encoders.build('vggsound_r18', {}).stage
  sp = stage.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 256)))['params']
  l4 = torch_init.vggsound_tail(jax.random.key(seed), sp)['layer4']
  ours = {'fused Dense_0 kernel': hp['Dense_0']['kernel'], 'fused Dense_0 bias': hp['Dense_0']['bias'],
          'fused Dense_1 kernel': hp['Dense_1']['kernel'],
          'layer4.0.conv1': l4['0']['conv1']['kernel'], 'layer4.1.conv2': l4['1']['conv2']['kernel'],
          'layer4.0.downsample.0': l4['0']['downsample']['0']['kernel'],
          'layer4 BN weights': jnp.concatenate([l4[b]['bn1']['scale'] for b in ('0', '1')] +
                                               [l4[b]['bn2']['scale'] for b in ('0', '1')]),
          'layer4 BN biases': jnp.concatenate([l4[b]['bn1']['bias'] for b in ('0', '1')])}
  rows = []
  for k, t in theirs.items():
    o = np.asarray(ours[k], np.float64)
    if o.shape[::-1] != t.shape and o.size != t.size:
      raise AssertionError(f'init: {k} shapes differ, ours {o.shape} theirs {t.shape}')
    rows.append((k, o.std(), t.std(), np.abs(o).max(), np.abs(t).max()))
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--simmmdg_dir', required=True)
  ap.add_argument('--mmdg_benchmark_dir', required=True)
  a = ap.parse_args()
  torch.set_default_dtype(torch.float64)
  torch.Tensor.cuda = lambda self, *args, **kw: self
  torch.nn.Module.cuda = lambda self, *args, **kw: self
  sim = load_script(os.path.join(a.simmmdg_dir, 'EPIC-rgb-flow-audio',
                                 'train_video_flow_audio_EPIC_SimMMDG.py'), 'authors_simmmdg')
  rn = load_script(os.path.join(a.mmdg_benchmark_dir, 'Action recognition', 'train_RNA.py'),
                   'authors_rna')
  rs = np.random.RandomState(0)
  scale = {'video': 3.0, 'flow': 1.0, 'audio': 0.4}     # norm ratios far from 1
  feats = {m: scale[m] * (np.abs(rs.randn(B, d)) + 0.1) for m, d in DIMS.items()}
  labels = rs.randint(0, NUM_CLASSES, B)
  fmt = lambda v: '-' if v is None else f'{v:.1e}'
  print(f'{"method":8s} {"mods":6s} {"term":12s} {"value":>9s} {"max|g_e|":>9s} '
        f'{"|d value|":>10s} {"|d g_e|":>8s} {"|d g_par|":>9s}')
  results = [('rna', mods, compare_rna(rn, mods, feats, labels)[0]) for mods in SETUPS]
  results += [('simmmdg', mods, compare_simmmdg(sim, mods, feats, labels)) for mods in SETUPS]
  for method, mods, rows in results:
    tag = '+'.join(m[0].upper() for m in mods)
    for name, v, gm, dv, dgf, dgp in rows:
      print(f'{method:8s} {tag:6s} {name:12s} {v:9.4f} {fmt(gm):>9s} {fmt(dv):>10s} '
            f'{fmt(dgf):>8s} {fmt(dgp):>9s}')
  print(f'\n{"initialiser (param_init=torch)":30s} {"std ours":>9s} {"theirs":>9s} '
        f'{"max|w| ours":>11s} {"theirs":>9s}')
  for k, so, st, mo, mt in compare_init(a.simmmdg_dir):
    print(f'{k:30s} {so:9.5f} {st:9.5f} {mo:11.5f} {mt:9.5f}')


if __name__ == '__main__':
  main()
