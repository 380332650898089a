"""JAT: joint adversarial training across modalities and domains, its loss pieces.

As the MMDG benchmark trains it (``Action recognition/train_JAT.py``, lihongzhao99/MMDG_Benchmark
e98e837), for present modalities m in the order (video, audio, flow) with embeddings ``e_m``
(the mmaction heads' input after dropout; no LayerNorm) and uni-modal logits ``u_m``:

    L = CE(fused(concat e), y) + 0.5 L_dom_global + 0.5 L_dom_local + 0.1 L_modal + 3.0 L_cls

* ``L_modal = (1/M) sum_m CE(modal_disc(P_m(GRL_0.1(e_m))), m)``: a modality discriminator
  (one Linear 512 -> M) on a projector per modality (Linear D_m -> 512, ReLU, Dropout 0.5)
  behind a gradient reversal of strength ``alpha_rev`` = 0.1; the label is the modality's
  position in (video, audio, flow) among those present.
* Multi-source only (more than one source domain; the script switches it off otherwise):
  ``L_dom_local = (1/M) sum_m CE(domain_disc(P2_m(GRL_0.3(e_m))), d)``, a second projector per
  modality and a shared domain discriminator (Linear 512 -> 256, BN, ReLU, Linear -> max(S, 2));
  ``L_dom_global = CE(G(concat_m GRL_0.3(e_m)), d)``, G the fused head's shape (Linear -> 512,
  ReLU, Dropout 0.5, Linear -> max(S, 2)), its input concatenated (video, audio, flow), flow +
  audio as (flow, audio) as the fused head's; ``d`` the example's position among the source
  domains as listed on the command line.
* ``L_cls = sum_m w_m CE(u_m, y)`` with ``w = softmax_m(H_m)``, ``H_m`` the batch-mean entropy
  (``-sum p log(p + 1e-10)``) of the domain discriminator's prediction on modality m
  (multi-source) or of ``u_m`` (single-source). Nothing is detached: the weights pull too.
* Coefficients (the script's defaults): global 0.5, local 0.5, modal 0.1, cls 3.0, alpha_rev
  0.1, alpha_rev2 0.3, projector width 512. Recipe: Adam lr 1e-4, no weight decay (the
  ``adam`` branch ignores ``--weight_decay``), 15 epochs, batch 16; uni-modal heads trained.

The plug-in (``EXTENSION``, ``--config.method.name=jat``): the step gives the embeddings and
both heads' logits; :func:`init` makes the projectors and discriminators (the domain side only
for a multi-source run, with the domain discriminator's BN statistics as the method's state),
:func:`heads` runs them behind the reversals with the dropouts of one step's :func:`draw`, and
:func:`loss_terms` is the objective. The domain labels are ``extensions.StepView.sources``
(each example's position in ``config.data.sources``), and the number of sources S is the
hyper-parameter ``num_sources``, which ``methods.resolve`` fills in from the run's
``config.data.sources``; a multi-source run whose batches carry no domain is refused
(ConfigError) when the step is first traced, before any update (every dataset's loaders carry
'domain', from which ``train.jit_steps`` derives the positions). Checked against the authors'
functions (the heads too, on their modules' weights) by
``benchmarks/baselines_harness_nel_jat_gmp.py``; the plug-in against :func:`loss_terms` by
``tests/test_baselines_nel_jat_gmp.py`` and ``tests/test_plugins.py``.
"""
import dataclasses
import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mbcd_jax import baselines
from mbcd_jax import extensions
from mbcd_jax.baselines import moosa
from mbcd_jax.baselines import simmmdg
from mbcd_jax.encoders import batchnorm
from mbcd_jax.errors import ConfigError
from mbcd_jax.method import losses

PyTree = Any

ORDER = ('video', 'audio', 'flow')   # the script's modality labels and concatenation order


@dataclasses.dataclass(frozen=True)
class Hparams:
  domain_adv_loss_global: float = 0.5
  domain_adv_loss_local: float = 0.5
  modal_adv_loss: float = 0.1
  cls_loss: float = 3.0
  alpha_rev: float = 0.1        # reversal strength into the modality discriminator
  alpha_rev2: float = 0.3       # into the domain discriminators
  project_out_dim: int = 512
  global_discriminator_hidden_dim: int = 512
  # The run's number of source domains S (the domain heads' max(S, 2) outputs; S = 1: no
  # domain terms). None: len(config.data.sources), filled in by methods.resolve.
  num_sources: int | None = None


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def grad_reverse(x: jax.Array, alpha: float) -> jax.Array:
  """Identity forward; the backward multiplies the cotangent by ``-alpha``."""
  return x


def _gr_fwd(x, alpha):
  return x, None


def _gr_bwd(alpha, _, g):
  return (-alpha * g,)


grad_reverse.defvjp(_gr_fwd, _gr_bwd)


def entropy(logits: jax.Array) -> jax.Array:
  """``[B, C]`` -> batch mean of ``-sum p log(p + 1e-10)``."""
  p = jax.nn.softmax(losses.at_least_f32(logits), -1)
  return -(p * jnp.log(p + 1e-10)).sum(-1).mean()


def modality_weights(entropies: Mapping[str, jax.Array]) -> dict:
  """``softmax`` over the modalities of their entropies (temperature 1), not detached."""
  ms = list(entropies)
  w = jax.nn.softmax(jnp.stack([entropies[m] for m in ms]))
  return {m: w[i] for i, m in enumerate(ms)}


def loss_terms(uni_logits: Mapping[str, jax.Array], fused_logits: jax.Array,
               modal_logits: Mapping[str, jax.Array], labels: jax.Array, *,
               domain_logits: Mapping[str, jax.Array] | None = None,
               global_logits: jax.Array | None = None, domains: jax.Array | None = None,
               hp: Hparams = Hparams()) -> tuple[dict, dict]:
  """JAT's objective from its heads' outputs (the reversals sit before the heads).

  Args:
    uni_logits: modality -> ``[B, C]``; fused_logits ``[B, C]``; labels ``[B]``.
    modal_logits: modality -> ``[B, M]`` the modality discriminator's outputs.
    domain_logits, global_logits, domains: the multi-source terms' inputs (modality ->
      ``[B, S']``, ``[B, S']``, ``[B]`` source positions), or None for a single source.
  Returns:
    ``(terms, raw)``: weighted terms (sum = the loss) and unweighted values (with the
    modality weights ``w/<m>``).
  """
  ms = [m for m in ORDER if m in uni_logits]
  n = len(ms)
  modal = sum(losses.cross_entropy(modal_logits[m], jnp.full(labels.shape, i, jnp.int32))
              for i, m in enumerate(ms)) / n
  multi = domain_logits is not None
  ents = {m: entropy(domain_logits[m] if multi else uni_logits[m]) for m in ms}
  w = modality_weights(ents)
  cls = sum(w[m] * losses.cross_entropy(uni_logits[m], labels) for m in ms)
  ce = losses.cross_entropy(fused_logits, labels)
  raw = {'ce_fused': ce, 'modal_adv': modal, 'cls': cls, **{f'w/{m}': w[m] for m in ms}}
  terms = {'ce_fused': ce, 'modal_adv': hp.modal_adv_loss * modal, 'cls': hp.cls_loss * cls}
  if multi:
    local = sum(losses.cross_entropy(domain_logits[m], domains) for m in ms) / n
    glob = losses.cross_entropy(global_logits, domains)
    raw.update(dom_local=local, dom_global=glob)
    terms.update(dom_local=hp.domain_adv_loss_local * local,
                 dom_global=hp.domain_adv_loss_global * glob)
  return terms, raw


# ---------------------------------------------------------------- the heads
DROPOUT = 0.5          # the script's projectors' and global discriminator's nn.Dropout
DOMAIN_HIDDEN = 256    # the domain discriminator's width (DomainClassifier)


class ProjectHead(nn.Module):
  """Linear -> ReLU -> Dropout: ``[B, D] -> [B, out]``. ``keep``: the dropout's ``[B, out]``
  keep mask (None: no dropout), kept elements scaled by ``1 / (1 - DROPOUT)``."""
  out: int

  @nn.compact
  def __call__(self, x, keep: jax.Array | None = None):
    x = nn.relu(simmmdg.TorchDense(self.out)(x))
    return x if keep is None else x * keep.astype(x.dtype) / (1.0 - DROPOUT)


class GlobalDiscriminator(nn.Module):
  """The fused head's shape (the script's ``Encoder``): Linear -> ReLU -> Dropout -> Linear."""
  out: int
  hidden: int = 512

  @nn.compact
  def __call__(self, x, keep: jax.Array | None = None):
    return simmmdg.TorchDense(self.out)(ProjectHead(self.hidden)(x, keep))


class DomainDiscriminator(nn.Module):
  """Linear -> BN -> ReLU -> Linear (``DomainClassifier``); run through
  ``simmmdg.project``'s pattern (:func:`heads`) for BN in training mode."""
  out: int

  @nn.compact
  def __call__(self, x):
    x = nn.relu(batchnorm.BatchNorm()(simmmdg.TorchDense(DOMAIN_HIDDEN)(x)))
    return simmmdg.TorchDense(self.out)(x)


def multi_source(hp: Hparams) -> bool:
  """Whether the domain terms are on (more than one source domain, as the script)."""
  if hp.num_sources is None:
    raise ValueError("jat: Hparams.num_sources is None; methods.resolve sets it to the run's "
                     'number of source domains')
  return hp.num_sources > 1


def init(rng: jax.Array, dims: Mapping[str, int], modalities: Sequence[str],
         hp: Hparams = Hparams()) -> tuple[PyTree, PyTree]:
  """JAT's parameters and state for embeddings of sizes ``dims``.

  Returns ``(params, state)``: ``params = {'modal_proj': {m: ...}, 'modal_disc': ...}`` plus,
  multi-source, ``'domain_proj': {m: ...}, 'domain_disc': ..., 'global_disc': ...``;
  ``state = {'domain_disc': BN statistics}`` (multi-source) or ``{}``.
  """
  ms = baselines.present(modalities, 'jat')
  return jax.jit(lambda r: _init(r, {m: dims[m] for m in ms}, hp))(rng)


def _init(rng, dims, hp):
  ms, p = list(dims), hp.project_out_dim
  keys = iter(jax.random.split(rng, 2 * len(ms) + 3))
  params = {'modal_proj': {m: ProjectHead(p).init(next(keys), jnp.zeros((1, dims[m])))['params']
                           for m in ms},
            'modal_disc': simmmdg.TorchDense(len(ms)).init(next(keys), jnp.zeros((1, p)))['params']}
  state = {}
  if multi_source(hp):
    out = max(hp.num_sources, 2)
    params['domain_proj'] = {m: ProjectHead(p).init(next(keys), jnp.zeros((1, dims[m])))['params']
                             for m in ms}
    v = DomainDiscriminator(out).init(next(keys), jnp.zeros((2, p)))
    params['domain_disc'], state['domain_disc'] = v['params'], v['batch_stats']
    params['global_disc'] = GlobalDiscriminator(out, hp.global_discriminator_hidden_dim).init(
        next(keys), jnp.zeros((1, sum(dims.values()))))['params']
  return params, state


def draw(rng: jax.Array, batch: int, modalities: Sequence[str], hp: Hparams = Hparams()) -> dict:
  """One step's dropout keep masks: ``{'modal': {m: [B, P]}, 'domain': {m: [B, P]}, 'global':
  [B, H]}`` (the last two multi-source only)."""
  r_modal, r_domain, r_global = jax.random.split(rng, 3)
  p = hp.project_out_dim
  keep = lambda r, i, width: simmmdg.dropout_keep(jax.random.fold_in(r, i), DROPOUT,
                                                   (batch, width))
  out = {'modal': {m: keep(r_modal, i, p) for i, m in enumerate(modalities)}}
  if multi_source(hp):
    out['domain'] = {m: keep(r_domain, i, p) for i, m in enumerate(modalities)}
    out['global'] = keep(r_global, 0, hp.global_discriminator_hidden_dim)
  return out


def heads(params: PyTree, state: PyTree, feats: Mapping[str, jax.Array], draws: dict,
          modalities: Sequence[str], hp: Hparams = Hparams()) -> tuple[dict, PyTree]:
  """The discriminators' outputs behind the gradient reversals (training mode).

  Args:
    params, state: from :func:`init`; feats: modality -> ``[B, D_m]``; draws: :func:`draw`'s.
    modalities: the present modalities in the script's order (video, flow, audio): the order
      its domain discriminator runs in, so the order its BN statistics are updated in.
  Returns:
    ``({'modal': {m: [B, M]}, 'domain': {m: [B, S']} | None, 'global': [B, S'] | None},
    new state)``.
  """
  p = hp.project_out_dim
  modal_disc = simmmdg.TorchDense(len(modalities))
  out = {'modal': {}, 'domain': None, 'global': None}
  for m in modalities:
    z = ProjectHead(p).apply({'params': params['modal_proj'][m]},
                             grad_reverse(feats[m], hp.alpha_rev), draws['modal'][m])
    out['modal'][m] = modal_disc.apply({'params': params['modal_disc']}, z)
  if not multi_source(hp):
    return out, state
  n_out = max(hp.num_sources, 2)
  rev = {m: grad_reverse(feats[m], hp.alpha_rev2) for m in modalities}
  stats, out['domain'] = state['domain_disc'], {}
  for m in modalities:
    z = ProjectHead(p).apply({'params': params['domain_proj'][m]}, rev[m], draws['domain'][m])
    out['domain'][m], stats = simmmdg.project(DomainDiscriminator(n_out), params['domain_disc'],
                                              stats, z, train=True)
  glob_in = jnp.concatenate([rev[m] for m in moosa.authors_order(modalities)], 1)
  out['global'] = GlobalDiscriminator(n_out, hp.global_discriminator_hidden_dim).apply(
      {'params': params['global_disc']}, glob_in, draws['global'])
  return out, {'domain_disc': stats}


# ---------------------------------------------------------------- the train step's plug-in
def _init_ext(rng, dims, modalities, hp):
  return init(rng, dims, modalities, hp)


def _terms_ext(view: extensions.StepView, hp: Hparams):
  ms = baselines.present(view.modalities, 'jat')
  multi = multi_source(hp)
  if multi and view.sources is None:
    raise ConfigError(f'jat: a multi-source run (num_sources={hp.num_sources}) needs each '
                      "training example's source domain, and the batch carries no 'domain'")
  batch = view.labels.shape[0]
  out, new_state = heads(view.params, view.state, view.feats, draw(view.rng, batch, ms, hp), ms,
                         hp)
  terms, raw = loss_terms(view.uni_logits, view.fused_logits, out['modal'], view.labels,
                          domain_logits=out['domain'], global_logits=out['global'],
                          domains=view.sources if multi else None, hp=hp)
  return terms, raw, new_state


def authors_recipe(dataset: str, modalities, target: str) -> dict | None:
  """``Extension.recipes``: the script's defaults, the same for every setting (15 epochs;
  Adam without weight decay: its ``adam`` branch ignores ``--weight_decay``)."""
  del modalities, target
  return {'epochs': 15, 'weight_decay': 0.0} if dataset in ('epic', 'hac') else None


# Its own classification loss: the fused CE plus the entropy-weighted uni-modal CEs, which
# train the uni-modal heads (the mmaction heads' fc_cls and the audio fc: single Linears) and,
# through them, the encoders. Features without LayerNorm, the heads' dropout on video/flow.
EXTENSION = extensions.Extension(
    name='jat', hparams=Hparams(), init=_init_ext, terms=_terms_ext, classification='own',
    model=(('feature_norm', 'none'), ('feature_dropout', 0.5), ('uni_head', 'linear'),
           *baselines.SCRIPTS_NETWORKS),
    recipes=authors_recipe)
