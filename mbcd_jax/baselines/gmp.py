"""GMP: gradient modulation and projection per modality, its pieces and its plug-in.

As the MMDG benchmark trains it (``Action recognition/train_GMP.py``, lihongzhao99/MMDG_Benchmark
e98e837). Per present modality m with uni-modal logits ``u_m`` and (multi-source only) a
domain prediction ``q_m = D(P2_m(GRL_0.3(e_m)))`` (JAT's second projector and domain
discriminator), the step builds, on modality m's own parameters ``theta_m`` (its last stage and
its uni-modal head) only:

    g_cls = k_m * grad_{theta_m} (3.0 CE(u_m, y)),   g_dom = p_m * grad_{theta_m} (0.5 CE(q_m, d))

* Confidences: ``c_m`` = batch mean of the softmax probability of the true class (of y for
  ``u_m``, of d for ``q_m``). Semantic ratio ``r_m = c_m / (mean_{j != m} c_j + 1e-6)``; domain
  ratio ``s_m = mean_{j != m} c^dom_j / (c^dom_m + 1e-6)`` (one modality: 1).
* Modulation: ``k_m = 1 - tanh(0.5 r_m)`` clipped to [0, 1] where ``r_m > 1``, else 1 (the
  dominant modality is slowed); ``p_m`` likewise from ``s_m``. Both are constants for the
  gradient (applied to gradients already taken).
* Projection, multi-source only, when ``<g_cls, g_dom> < 0`` over ``theta_m``: the gradient of
  the larger ratio (``r_m >= s_m``: g_cls) loses its component along the other,
  ``g - <g, h> / (|h|^2 + 1e-12) h``.
* The update's gradient is the fused CE's (every trained parameter) plus, per modality,
  ``g_cls + g_dom``. The domain discriminator and projectors receive no gradient at all (they
  are in the optimizer but their ``.grad`` stays None): they stay at their random init.
* Recipe: Adam lr 1e-4, no weight decay (the ``adam`` branch), 15 epochs, batch 16.

The plug-in (``EXTENSION``, ``--config.method.name=gmp``): its terms are the fused CE, per
modality ``cls/<m>`` = 3.0 CE(u_m, y) and (multi-source) ``dom/<m>`` = 0.5 CE(q_m, d); the
step takes each term's gradient separately (``Extension.grad_transform``, ``step.per_term_grad``)
and :func:`transform_grads` assembles the update's gradient as above. ``theta_m`` is modality
m's trained parameters of the model (``models.py``): ``params['encoders'][m]`` (with the
benchmark's frozen trunks, the last stage; the audio tail), its learnable LayerNorm if any and
``params['uni_heads'][m]``. JAT's second projectors and domain discriminator (:func:`init`,
:func:`domain_logits`) are the method's non-trained state (``TrainState.extra_state``), not
parameters: they stay at their random init as the authors', while the discriminator's BN
running statistics are updated by its training-mode passes (in the script's order video, flow,
audio). The method has no trained parameters of its own. The domain labels are
``extensions.StepView.sources`` and the number of sources the ``num_sources`` hyper-parameter
(filled in by ``methods.resolve``; one source: no domain terms, no projection, as the script).
The step's ``loss`` metric is the sum of the weighted terms (the update is not its gradient);
a step costs one forward pass and 1 + 2M backward passes (M modalities; 1 + M single-source).
The pieces are checked against the authors' functions by
``benchmarks/baselines_harness_nel_jat_gmp.py``; the plug-in's gradient against one assembled
from separate ``jax.grad`` calls by ``tests/test_baselines_nel_jat_gmp.py``.
"""
import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp

from mbcd_jax import baselines
from mbcd_jax import extensions
from mbcd_jax.baselines import jat
from mbcd_jax.baselines import simmmdg
from mbcd_jax.errors import ConfigError
from mbcd_jax.method import losses

PyTree = object


@dataclasses.dataclass(frozen=True)
class Hparams:
  alpha_k: float = 0.5              # semantic modulation's tanh slope
  alpha_p: float = 0.5              # domain modulation's
  cls_loss: float = 3.0
  domain_adv_loss_local: float = 0.5
  alpha_rev2: float = 0.3
  project_out_dim: int = 512
  # The run's number of source domains S (the domain discriminator's max(S, 2) outputs; S = 1:
  # no domain terms). None: len(config.data.sources), filled in by methods.resolve.
  num_sources: int | None = None


def mean_confidence(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``[B, C], [B]`` -> batch mean of ``softmax(logits)[label]``."""
  p = jax.nn.softmax(losses.at_least_f32(logits), -1)
  return jnp.take_along_axis(p, labels[:, None].astype(jnp.int32), -1).mean()


def ratios(conf: Mapping[str, jax.Array], *, domain: bool, eps: float = 1e-6) -> dict:
  """Each modality's confidence against the others' mean: ``c_m / (mean_others + eps)``, or
  for the domain side ``mean_others / (c_m + eps)``; 1 for a single modality."""
  ms = list(conf)
  if len(ms) <= 1:
    return {m: jnp.ones(()) for m in ms}
  out = {}
  for m in ms:
    others = jnp.stack([conf[j] for j in ms if j != m]).mean()
    out[m] = others / (conf[m] + eps) if domain else conf[m] / (others + eps)
  return out


def modulation(ratio: jax.Array, alpha: float) -> jax.Array:
  """``1 - tanh(alpha r)`` clipped to [0, 1] where ``r > 1``, else 1."""
  return jnp.where(ratio > 1.0, jnp.clip(1.0 - jnp.tanh(alpha * ratio), 0.0, 1.0), 1.0)


def _dot(a: PyTree, b: PyTree) -> jax.Array:
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def project_conflict(g: PyTree, h: PyTree, eps: float = 1e-12) -> PyTree:
  """``g - <g, h> / (|h|^2 + eps) h`` over whole pytrees."""
  c = _dot(g, h) / (_dot(h, h) + eps)
  return jax.tree.map(lambda x, y: x - c * y, g, h)


def combine(g_cls: PyTree, g_dom: PyTree | None, sem_ratio: jax.Array, dom_ratio: jax.Array,
            sem_coeff: jax.Array, dom_coeff: jax.Array) -> PyTree:
  """One modality's ``g_cls + g_dom`` after modulation and (on conflict) projection.

  ``g_cls``, ``g_dom``: gradients over the modality's parameters (same pytree), unscaled;
  ``g_dom`` None for a single source (no domain term, no projection)."""
  g_cls = jax.tree.map(lambda x: sem_coeff * x, g_cls)
  if g_dom is None:
    return g_cls
  g_dom = jax.tree.map(lambda x: dom_coeff * x, g_dom)
  conflict = _dot(g_cls, g_dom) < 0
  proj_cls = sem_ratio >= dom_ratio
  g_cls2 = jax.tree.map(lambda a, b: jnp.where(conflict & proj_cls, a, b),
                        project_conflict(g_cls, g_dom), g_cls)
  g_dom2 = jax.tree.map(lambda a, b: jnp.where(conflict & ~proj_cls, a, b),
                        project_conflict(g_dom, g_cls), g_dom)
  return jax.tree.map(jnp.add, g_cls2, g_dom2)


def coefficients(uni_logits: Mapping[str, jax.Array], labels: jax.Array,
                 domain_logits: Mapping[str, jax.Array] | None = None,
                 domains: jax.Array | None = None, hp: Hparams = Hparams()) -> dict:
  """``{m: (r_m, s_m, k_m, p_m)}`` from the step's predictions (all constants)."""
  sem_conf = {m: mean_confidence(uni_logits[m], labels) for m in uni_logits}
  sem_r = ratios(sem_conf, domain=False)
  if domain_logits is None:
    one = {m: jnp.ones(()) for m in uni_logits}
    dom_r, dom_k = one, one
  else:
    dom_r = ratios({m: mean_confidence(domain_logits[m], domains) for m in uni_logits},
                   domain=True)
    dom_k = {m: modulation(dom_r[m], hp.alpha_p) for m in uni_logits}
  return {m: tuple(jax.lax.stop_gradient(v) for v in (
      sem_r[m], dom_r[m], modulation(sem_r[m], hp.alpha_k), dom_k[m])) for m in uni_logits}


# ---------------------------------------------------------------- the train step's plug-in
GROUPS = ('encoders', 'norms', 'uni_heads')   # where modality m's own parameters live


def multi_source(hp: Hparams) -> bool:
  """Whether the domain terms are on (more than one source domain, as the script)."""
  if hp.num_sources is None:
    raise ValueError("gmp: Hparams.num_sources is None; methods.resolve sets it to the run's "
                     'number of source domains')
  return hp.num_sources > 1


def init(rng: jax.Array, dims: Mapping[str, int], modalities, hp: Hparams = Hparams()
         ) -> tuple[PyTree, PyTree]:
  """``(params, state)``: no trained parameters (``{}``); ``state`` = the never-trained
  ``{'domain_proj': {m: ...}, 'domain_disc': ..., 'domain_disc_stats': BN statistics}``
  (multi-source; one source: ``{}``), JAT's modules and initialisers."""
  ms = baselines.present(modalities, 'gmp')
  if not multi_source(hp):
    return {}, {}
  return {}, jax.jit(lambda r: _init_state(r, {m: dims[m] for m in ms}, hp))(rng)


def _init_state(rng, dims, hp):
  keys = iter(jax.random.split(rng, len(dims) + 1))
  p = hp.project_out_dim
  proj = {m: jat.ProjectHead(p).init(next(keys), jnp.zeros((1, d)))['params']
          for m, d in dims.items()}
  v = jat.DomainDiscriminator(max(hp.num_sources, 2)).init(next(keys), jnp.zeros((2, p)))
  return {'domain_proj': proj, 'domain_disc': v['params'], 'domain_disc_stats': v['batch_stats']}


def domain_logits(state: PyTree, feats: Mapping[str, jax.Array], rng: jax.Array,
                  modalities, hp: Hparams = Hparams()) -> tuple[dict, PyTree]:
  """``q_m = D(P2_m(GRL_alpha_rev2(e_m)))`` per modality in training mode (the projectors'
  dropout drawn from ``rng``), in the order of ``modalities``, which is the order the
  discriminator's BN statistics are updated in. Returns ``({m: [B, S']}, new state)``."""
  p, out = hp.project_out_dim, {}
  disc = jat.DomainDiscriminator(max(hp.num_sources, 2))
  stats = state['domain_disc_stats']
  for i, m in enumerate(modalities):
    keep = simmmdg.dropout_keep(jax.random.fold_in(rng, i), jat.DROPOUT,
                                (feats[m].shape[0], p))
    z = jat.ProjectHead(p).apply({'params': state['domain_proj'][m]},
                                 jat.grad_reverse(feats[m], hp.alpha_rev2), keep)
    out[m], stats = simmmdg.project(disc, state['domain_disc'], stats, z, train=True)
  return out, {**state, 'domain_disc_stats': stats}


def _terms_ext(view: extensions.StepView, hp: Hparams):
  ms = baselines.present(view.modalities, 'gmp')
  multi = multi_source(hp)
  if multi and view.sources is None:
    raise ConfigError(f'gmp: a multi-source run (num_sources={hp.num_sources}) needs each '
                      "training example's source domain, and the batch carries no 'domain'")
  y = view.labels
  ce = losses.cross_entropy(view.fused_logits, y)
  terms, raw = {'ce_fused': ce}, {'ce_fused': ce}
  uni = {m: view.uni_logits[m] for m in ms}
  for m in ms:
    raw[f'cls/{m}'] = losses.cross_entropy(uni[m], y)
    terms[f'cls/{m}'] = hp.cls_loss * raw[f'cls/{m}']
  q, new_state = None, view.state
  if multi:
    q, new_state = domain_logits(view.state, view.feats, view.rng, ms, hp)
    for m in ms:
      raw[f'dom/{m}'] = losses.cross_entropy(q[m], view.sources)
      terms[f'dom/{m}'] = hp.domain_adv_loss_local * raw[f'dom/{m}']
  coeffs = coefficients(uni, y, q, view.sources if multi else None, hp)
  for m, (r, s, k, p) in coeffs.items():
    raw.update({f'sem_ratio/{m}': r, f'dom_ratio/{m}': s, f'sem_coeff/{m}': k,
                f'dom_coeff/{m}': p})
  return terms, raw, new_state


def own(tree: PyTree, m: str) -> dict:
  """Modality m's part of a ``params``-shaped tree: ``{group: tree[group][m]}`` over
  ``GROUPS`` where present (``theta_m``)."""
  return {g: tree[g][m] for g in GROUPS if m in tree.get(g, {})}


def transform_grads(term_grads: Mapping[str, PyTree], metrics: Mapping[str, jax.Array],
                    params: PyTree, hp: Hparams) -> PyTree:
  """``Extension.grad_transform``: the fused CE's gradient over every trained parameter plus,
  on each modality's ``theta_m``, :func:`combine` of its ``cls/<m>`` and ``dom/<m>`` gradients
  with the step's coefficients (``metrics``, from :func:`coefficients`)."""
  del params
  ms = [k[len('cls/'):] for k in term_grads if k.startswith('cls/')]
  out = {g: dict(v) if g in GROUPS else v for g, v in term_grads['ce_fused'].items()}
  for m in ms:
    g_dom = term_grads.get(f'dom/{m}')
    mod = combine(own(term_grads[f'cls/{m}'], m), None if g_dom is None else own(g_dom, m),
                  metrics[f'sem_ratio/{m}'], metrics[f'dom_ratio/{m}'],
                  metrics[f'sem_coeff/{m}'], metrics[f'dom_coeff/{m}'])
    for g, sub in mod.items():
      out[g][m] = jax.tree.map(jnp.add, out[g][m], sub)
  return out


# Its own classification loss (the fused CE and the uni-modal CEs, which train the uni-modal
# heads and through them the encoders). The same scripts' networks and recipe as JAT's (15
# epochs; Adam without weight decay: the ``adam`` branch ignores ``--weight_decay``).
EXTENSION = extensions.Extension(
    name='gmp', hparams=Hparams(), init=init, terms=_terms_ext, classification='own',
    model=jat.EXTENSION.model, recipes=jat.authors_recipe, grad_transform=transform_grads)
