"""Our NEL, JAT and GMP loss pieces vs the AUTHORS' OWN code (MMDG benchmark), same tensors, float64.

    JAX_PLATFORMS=cpu python -m benchmarks.baselines_harness_nel_jat_gmp \\
        --mmdg_benchmark_dir=/tmp/mmdg_benchmark

Getting the clone (its code is never copied here)::

    git clone --no-checkout https://github.com/lihongzhao99/MMDG_Benchmark /tmp/mmdg_benchmark
    git -C /tmp/mmdg_benchmark restore --source=HEAD -- "Action recognition/train_NEL.py" \\
        "Action recognition/train_JAT.py" "Action recognition/train_GMP.py"

How their code runs: each script is imported as a module (its ``__main__`` does not run) with
its heavy imports stubbed (``baselines_harness_rna_simmmdg.load_script``, plus cv2 and the
domain-label dataloaders). Then:
  * NEL: their ``compute_mean_shift_embedding``, ``SupConLoss(temperature=0.1)``,
    ``ConMeanShiftLoss(temperature=0.25)`` and ``compute_nee_loss`` against ours on the same
    inputs, values and input gradients; and the whole Eq. 14 objective assembled as their
    ``train_one_step`` does from those pieces.
  * JAT: their own ``train_one_step`` with fake encoders returning our leaf embeddings and
    uni-modal logits, their ``ProjectHead`` / ``Classifier`` / ``DomainClassifier`` /
    ``Encoder`` (random torch init, dropouts in eval mode, BN in train mode) and a no-op
    optimizer; ours gets their heads' outputs (computed again in torch) and the same labels,
    and its loss is compared with the loss their step returns; the plug-in's ``jat.heads`` on
    their modules' weights against their heads' outputs (in the same row's difference); the
    GRL's gradient separately.
  * GMP: their ``_mean_confidence``, ``_compute_diff_ratios(_domain)``,
    ``_mod_coeff_from_ratio_tanh``, ``_project_conflict`` and the per-modality
    modulate/project/add sequence of their ``train_one_step`` (written with their helpers) on
    random logits and random gradient lists, against ``gmp.coefficients`` / ``gmp.combine``.
Prints one row per check: the value and the max abs difference.
"""
import argparse
import dataclasses
import os
import sys
import types

import jax
jax.config.update('jax_enable_x64', True)
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import baselines_harness_rna_simmmdg as rna_harness

from mbcd_jax.baselines import gmp, jat, nel  # noqa: E402

torch.set_default_dtype(torch.float64)
torch.Tensor.cuda = lambda self, *a, **k: self
_ones = torch.ones
torch.ones = lambda *a, device=None, **k: _ones(*a, **k)   # their device='cuda' on a CPU host
B, C, S = 8, 5, 2
DIMS = {'video': 8, 'flow': 6, 'audio': 4}
SETUPS = [('video', 'flow', 'audio'), ('video', 'flow'), ('video', 'audio'), ('flow', 'audio')]


def load(path, name):
  for mod_name, attrs in {
      'cv2': {'setNumThreads': lambda n: None,
              'ocl': types.SimpleNamespace(setUseOpenCL=lambda b: None)},
      'dataloaders.dataloader_EPIC_domain_labels': {'EPICDOMAIN': None},
      'dataloaders.dataloader_HAC_domain_labels': {'HACDOMAIN': None}}.items():
    m = types.ModuleType(mod_name)
    m.__dict__.update(attrs)
    sys.modules[mod_name] = m
  mod = rna_harness.load_script(path, name)
  torch.set_num_threads(2)
  return mod


def _d(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _t(x, grad=False):
  return torch.tensor(np.asarray(x), requires_grad=grad)


# ------------------------------------------------------------------ NEL
def compare_nel(mod, rng):
  rows = []
  x = rng.normal(size=(2 * B, 6))
  z = x / np.linalg.norm(x, axis=1, keepdims=True)
  t = _t(z, True)
  theirs = mod.compute_mean_shift_embedding(t, k=3)
  theirs.sum().backward()
  ours, g = jax.value_and_grad(lambda a: nel.mean_shift(a, 3).sum())(jnp.asarray(z))
  rows.append(('nel', 'mean_shift k=3 (sum)', float(ours), _d(ours, theirs.sum().item()),
               _d(g, t.grad)))
  labels = rng.integers(0, 3, 2 * B)
  views = rng.normal(size=(2 * B, 3, 5))
  views /= np.linalg.norm(views, axis=2, keepdims=True)
  t = _t(views, True)
  theirs = mod.SupConLoss(temperature=0.1)(t, torch.tensor(labels))
  theirs.backward()
  ours, g = jax.value_and_grad(lambda v: nel.supcon_loss(v, jnp.asarray(labels), 0.1, 0.07))(
      jnp.asarray(views))
  rows.append(('nel', 'supcon (L_C)', float(ours), _d(ours, theirs.item()), _d(g, t.grad)))
  a, p = rng.normal(size=(B, 7)), rng.normal(size=(B, 7))
  ta, tp = _t(a, True), _t(p, True)
  theirs = mod.ConMeanShiftLoss(n_views=2, alpha=0.5, temperature=0.25)(ta, tp)
  theirs.backward()
  ours, (ga, gp) = jax.value_and_grad(nel.con_mean_shift_loss, argnums=(0, 1))(
      jnp.asarray(a), jnp.asarray(p), 0.25)
  rows.append(('nel', 'con_mean_shift (L_UNC)', float(ours), _d(ours, theirs.item()),
               max(_d(ga, ta.grad), _d(gp, tp.grad))))
  f = rng.normal(size=(2 * B, 10))
  tf = _t(f, True)
  theirs = mod.compute_nee_loss(tf)
  theirs.backward()
  ours, g = jax.value_and_grad(nel.nee_loss)(jnp.asarray(f))
  rows.append(('nel', 'nee (L_NEE)', float(ours), _d(ours, theirs.item()), _d(g, tf.grad)))
  # Eq. 14 as their train_one_step assembles it, from their pieces.
  hp = nel.Hparams(k=3)
  logits = rng.normal(size=(2 * B, C))
  lab2 = np.tile(rng.integers(0, C, B), 2)
  feats = {'video': rng.normal(size=(2 * B, 8)), 'audio': rng.normal(size=(2 * B, 4))}
  ce = torch.nn.CrossEntropyLoss()(_t(logits), torch.tensor(lab2))
  sup = mod.SupConLoss(temperature=hp.temp_s)(_t(views[:, :2]), torch.tensor(lab2))
  ms = torch.stack([mod.compute_mean_shift_embedding(_t(views[:, i]), k=hp.k) for i in range(2)], 1)
  unc = mod.ConMeanShiftLoss(temperature=hp.temp_u)(ms[:B].reshape(B, -1), ms[B:].reshape(B, -1))
  nee = mod.compute_nee_loss(torch.cat([_t(feats['video']), _t(feats['audio'])], 1))
  theirs = (ce + hp.alpha * unc + (1 - hp.alpha) * sup + hp.beta * nee) / 2
  terms, _ = nel.loss_terms(jnp.asarray(views[:, :2]), jnp.asarray(logits),
                            {m: jnp.asarray(v) for m, v in feats.items()}, jnp.asarray(lab2),
                            ('video', 'audio'), hp)
  ours = sum(terms.values())
  rows.append(('nel', 'Eq.14 total (V+A)', float(ours), _d(ours, theirs.item()), None))
  return rows


# ------------------------------------------------------------------ JAT
def _jat_run(mod, mods, rng, multi):
  hp = jat.Hparams(project_out_dim=6, global_discriminator_hidden_dim=7)
  emb = {m: torch.tensor(rng.normal(size=(B, DIMS[m])), requires_grad=True) for m in mods}
  uni = {m: torch.tensor(rng.normal(size=(B, C)), requires_grad=True) for m in mods}
  x = torch.zeros(B, 1)
  fv = rna_harness._Fake(get_feature=lambda c: (x, x), get_predict=lambda f: f,
                         cls_head=lambda f: (uni['video'], emb['video']))
  ff = rna_harness._Fake(get_feature=lambda c: x, get_predict=lambda f: f,
                         cls_head=lambda f: (uni['flow'], emb['flow']))
  n = len(mods)
  n_dom = S if multi else 2
  torch.manual_seed(0)
  nets = dict(
      modal_disc=mod.Classifier(hp.project_out_dim, n),
      domain_disc=mod.DomainClassifier(hp.project_out_dim, n_dom),
      domain_disc_global=mod.Encoder(sum(DIMS[m] for m in mods), n_dom,
                                     hidden=hp.global_discriminator_hidden_dim),
      mlp_cls=mod.Encoder(sum(DIMS[m] for m in mods), C))
  short = {'video': 'v', 'flow': 'f', 'audio': 'a'}
  for m in DIMS:   # input widths per modality
    for suf in ('_proj', '_proj2'):
      nets[short[m] + suf] = mod.ProjectHead(DIMS[m], hp.project_out_dim)
  rna_harness._eval_dropouts(*nets.values())
  labels = torch.tensor(rng.integers(0, C, B))
  domains = torch.tensor(rng.integers(0, S, B))
  mod.args = argparse.Namespace(
      use_video='video' in mods, use_flow='flow' in mods, use_audio='audio' in mods,
      num_modals=n, enable_domain_adv=multi, alpha_rev=hp.alpha_rev, alpha_rev2=hp.alpha_rev2,
      domain_adv_loss_global=hp.domain_adv_loss_global,
      domain_adv_loss_local=hp.domain_adv_loss_local, modal_adv_loss=hp.modal_adv_loss,
      cls_loss=hp.cls_loss)
  mod.model, mod.model_flow = fv, ff
  mod.audio_model = lambda s: (None, x, None)
  mod.audio_cls_model = lambda f: (uni['audio'], emb['audio'])
  mod.optim, mod.criterion, mod.batch_size = rna_harness._NoOptim(), torch.nn.CrossEntropyLoss(), B
  mod.__dict__.update(nets)
  _, loss = mod.train_one_step({'imgs': torch.zeros(B, 1, 1)}, labels,
                               {'imgs': torch.zeros(B, 1, 1)}, torch.zeros(B, 1), domains)
  # Their heads' outputs again (BN in train mode: same batch, same outputs), fed to ours.
  with torch.no_grad():
    order = rna_harness._their_order(mods)   # (v, a, f); F+A as (f, a)
    modal = {m: nets['modal_disc'](nets[short[m] + '_proj'](emb[m])) for m in mods}
    kw = {}
    if multi:
      kw = dict(domain_logits={m: nets['domain_disc'](nets[short[m] + '_proj2'](emb[m]))
                               for m in mods},
                global_logits=nets['domain_disc_global'](torch.cat([emb[m] for m in order], 1)),
                domains=jnp.asarray(domains.numpy()))
    fused = nets['mlp_cls'](torch.cat([emb[m] for m in order], 1))
  j = lambda d: {k: jnp.asarray(v.detach().numpy()) for k, v in d.items()}
  if multi:
    kw['domain_logits'] = j(kw['domain_logits'])
    kw['global_logits'] = jnp.asarray(kw['global_logits'].numpy())
  terms, _ = jat.loss_terms(j(uni), jnp.asarray(fused.numpy()), j(modal),
                            jnp.asarray(labels.numpy()), hp=hp, **kw)
  ours = sum(terms.values())
  # The plug-in's own heads (jat.heads) on their modules' weights, dropouts off as theirs.
  hp_s = dataclasses.replace(hp, num_sources=S if multi else 1)
  lin = lambda l: {'Dense_0': {'kernel': jnp.asarray(l.weight.detach().numpy().T),
                               'bias': jnp.asarray(l.bias.detach().numpy())}}
  proj = lambda net: {'TorchDense_0': lin(net.proj[0])}
  params = {'modal_proj': {m: proj(nets[short[m] + '_proj']) for m in mods},
            'modal_disc': lin(nets['modal_disc'].classifier[0])}
  state, draws = {}, {'modal': {m: None for m in mods}}
  if multi:
    dd, g = nets['domain_disc'].domainclassifier, nets['domain_disc_global'].enc_net
    params.update(
        domain_proj={m: proj(nets[short[m] + '_proj2']) for m in mods},
        domain_disc={'TorchDense_0': lin(dd[0]), 'TorchDense_1': lin(dd[3]), 'BatchNorm_0': {
            'scale': jnp.asarray(dd[1].weight.detach().numpy()),
            'bias': jnp.asarray(dd[1].bias.detach().numpy())}},
        global_disc={'ProjectHead_0': {'TorchDense_0': lin(g[0])}, 'TorchDense_0': lin(g[3])})
    n_hidden = dd[1].num_features
    state = {'domain_disc': {'BatchNorm_0': {'mean': jnp.zeros(n_hidden),
                                             'var': jnp.ones(n_hidden)}}}
    draws.update(domain={m: None for m in mods}, global_=None)
    draws['global'] = draws.pop('global_')
  heads, _ = jat.heads(params, state, {m: jnp.asarray(emb[m].detach().numpy()) for m in mods},
                       draws, mods, hp_s)
  theirs = [*j(modal).values()] + ([*kw['domain_logits'].values(), kw['global_logits']]
                                   if multi else [])
  mine = [*heads['modal'].values()] + ([*heads['domain'].values(), heads['global']]
                                       if multi else [])
  heads_d = max(_d(a, b) for a, b in zip(mine, theirs))
  return float(ours), max(_d(ours, loss.item()), heads_d)


def compare_jat(mod, rng):
  rows = []
  for mods in SETUPS:
    for multi in (True, False):
      v, d = _jat_run(mod, mods, rng, multi)
      tag = '+'.join(m[0].upper() for m in mods)
      rows.append(('jat', f'loss {tag} {"multi" if multi else "single"}-source', v, d, None))
  x = rng.normal(size=(B, 4))
  t = _t(x, True)
  (mod.grad_reverse(t, alpha=0.3) * _t(x)).sum().backward()
  g = jax.grad(lambda a: (jat.grad_reverse(a, 0.3) * jnp.asarray(x)).sum())(jnp.asarray(x))
  rows.append(('jat', 'grad_reverse 0.3 (grad)', float(np.abs(g).max()), _d(g, t.grad), None))
  return rows


# ------------------------------------------------------------------ GMP
def compare_gmp(mod, rng):
  rows = []
  hp = gmp.Hparams()
  for mods in SETUPS:
    for multi in (True, False):
      labels, domains = rng.integers(0, C, B), rng.integers(0, S, B)
      uni = {m: rng.normal(size=(B, C)) * 2 for m in mods}
      dom = {m: rng.normal(size=(B, S)) * 2 for m in mods}
      shapes = [(3, 2), (4,)]
      g_cls = {m: [rng.normal(size=s) for s in shapes] for m in mods}
      g_dom = {m: [rng.normal(size=s) for s in shapes] for m in mods}
      # theirs, in their train_one_step's order, with their helpers
      sem_conf = {m: mod._mean_confidence(_t(uni[m]), torch.tensor(labels)) for m in mods}
      sem_ratio = mod._compute_diff_ratios(sem_conf)
      sem_coeff = {m: mod._mod_coeff_from_ratio_tanh(sem_ratio[m], hp.alpha_k) for m in mods}
      if multi:
        dom_conf = {m: mod._mean_confidence(_t(dom[m]), torch.tensor(domains)) for m in mods}
        dom_ratio = mod._compute_diff_ratios_domain(dom_conf)
        dom_coeff = {m: mod._mod_coeff_from_ratio_tanh(dom_ratio[m], hp.alpha_p) for m in mods}
      theirs = {}
      for m in mods:
        gc = mod._scale_grads([_t(a) for a in g_cls[m]], sem_coeff[m])
        gd = (mod._scale_grads([_t(a) for a in g_dom[m]], dom_coeff[m]) if multi
              else [None] * len(shapes))
        if multi and mod._dot_grads(gc, gd) < 0:
          if sem_ratio[m] >= dom_ratio[m]:
            gc = mod._project_conflict(gc, gd)
          else:
            gd = mod._project_conflict(gd, gc)
        theirs[m] = mod._add_grads(gc, gd)
      coeffs = gmp.coefficients({m: jnp.asarray(v) for m, v in uni.items()}, jnp.asarray(labels),
                                {m: jnp.asarray(v) for m, v in dom.items()} if multi else None,
                                jnp.asarray(domains) if multi else None, hp)
      d_coef, d_grad, big = 0.0, 0.0, 0.0
      for m in mods:
        r, s, k, p = coeffs[m]
        d_coef = max(d_coef, _d(r, sem_ratio[m].item()), _d(k, sem_coeff[m].item()))
        if multi:
          d_coef = max(d_coef, _d(s, dom_ratio[m].item()), _d(p, dom_coeff[m].item()))
        ours = gmp.combine([jnp.asarray(a) for a in g_cls[m]],
                           [jnp.asarray(a) for a in g_dom[m]] if multi else None, r, s, k, p)
        for a, b in zip(ours, theirs[m]):
          d_grad = max(d_grad, _d(a, b.detach()))
          big = max(big, float(np.abs(a).max()))
      tag = '+'.join(m[0].upper() for m in mods)
      kind = 'multi' if multi else 'single'
      rows.append(('gmp', f'ratios+coeffs {tag} {kind}', float(coeffs[mods[0]][2]), d_coef, None))
      rows.append(('gmp', f'combined grads {tag} {kind}', big, d_grad, None))
  return rows


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--mmdg_benchmark_dir', required=True)
  args = ap.parse_args()
  root = os.path.join(args.mmdg_benchmark_dir, 'Action recognition')
  rng = np.random.default_rng(0)
  rows = []
  rows += compare_nel(load(os.path.join(root, 'train_NEL.py'), 'their_nel'), rng)
  rows += compare_jat(load(os.path.join(root, 'train_JAT.py'), 'their_jat'), rng)
  rows += compare_gmp(load(os.path.join(root, 'train_GMP.py'), 'their_gmp'), rng)
  print(f'{"method":7s} {"check":34s} {"value":>11s} {"|d value|":>10s} {"|d grad|":>9s}')
  worst = 0.0
  for meth, name, v, dv, dg in rows:
    worst = max(worst, dv, dg or 0.0)
    print(f'{meth:7s} {name:34s} {v:11.4f} {dv:10.1e} {"-" if dg is None else f"{dg:.1e}":>9s}')
  print(f'worst difference {worst:.1e}')
  return worst


if __name__ == '__main__':
  sys.exit(0 if main() <= 1e-12 else 1)
