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

Not a plug-in yet (no ``EXTENSION``). The domain labels it needs, each example's position among
the run's source domains, reach a method as ``extensions.StepView.sources``
(``tests/test_sources.py``); what is left is the ``Extension`` itself: its projectors and
discriminators (``init``, with the domain discriminator's BN as state), ``max(S, 2)`` outputs from
the number of sources, and its model variant and recipe. Checked against the authors' functions
by ``benchmarks/baselines_harness_nel_jat_gmp.py``.
"""
import dataclasses
import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

from mbcd_jax.method import losses

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
