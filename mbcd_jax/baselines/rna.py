"""RNA-Net: relative norm alignment between modality embeddings (Planamente et al., WACV 2022).

As the public benchmark port trains it (``train_RNA.py``), the objective is

    L = CE(fused_head(concat(e)), y) + alpha * mean_{(i, j) in pairs} (mean_b ||e_i|| / mean_b ||e_j|| - 1)^2

* ``e_m`` ``[B, D_m]``: each modality's pooled last-stage feature, with no LayerNorm (after a
  parameter-free LayerNorm every row has norm ~sqrt(D_m), so the ratio is a constant and the term
  has no gradient). For video and flow the port's ``e_m`` is the mmaction head's input *after* its
  dropout (p = 0.5, train mode); audio has no dropout. The same ``e_m`` feeds the fused head.
* Norms are L2 over features, averaged over the batch *before* the ratio; nothing is detached,
  so the term pulls on both modalities.
* Pairs are ordered video > flow > audio (numerator first): V+F+A uses (v, a), (v, f), (f, a);
  two modalities use their single pair. The square makes the order matter
  ((r - 1)^2 != (1/r - 1)^2).
* ``alpha`` = 1.0 (the port's default ``--alpha_RNA``). Only the fused head gets a CE; uni-modal
  heads are not trained.
* Recipe (benchmark defaults, no per-target settings): Adam lr 1e-4, weight decay 1e-4, batch
  16, 20 epochs; the audio tail (layer4 + fc) starts from random init; model selection = the
  epoch with the best source-validation accuracy.
"""
import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp

from mbcd_jax import baselines
from mbcd_jax import extensions

ORDER = baselines.ORDER   # numerator-before-denominator order of the pairs


def pairs(modalities) -> list[tuple[str, str]]:
  """Ordered (numerator, denominator) pairs for the present modalities."""
  ms = baselines.present(modalities, 'rna')
  return [(a, b) for i, a in enumerate(ms) for b in ms[i + 1:]]


def mean_norm(x: jax.Array) -> jax.Array:
  """``[B, D]`` -> scalar: batch mean of the rows' L2 norms."""
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=-1)).mean()


def relative_norm_alignment(feats: Mapping[str, jax.Array]) -> jax.Array:
  """Unweighted RNA term: mean over ``pairs`` of ``(mean||e_i|| / mean||e_j|| - 1)^2``.

  Args:
    feats: modality -> ``[B, D_m]`` embeddings (pre-LayerNorm; see the module docstring).
  Returns:
    A scalar (float32 or wider).
  """
  for m, x in feats.items():
    if x.ndim != 2:
      raise ValueError(f'rna: feats[{m!r}] must be [B, D], got shape {x.shape}')
  norms = {m: mean_norm(x.astype(jnp.promote_types(x.dtype, jnp.float32)))
           for m, x in feats.items()}
  ps = pairs(feats)
  return sum(jnp.square(norms[a] / norms[b] - 1.0) for a, b in ps) / len(ps)


def loss_terms(feats: Mapping[str, jax.Array], *, alpha: float = 1.0) -> tuple[dict, dict]:
  """Terms RNA-Net adds to the fused cross-entropy.

  Returns:
    ``({'rna': alpha * L_rna}, {'rna_unweighted': L_rna})``.
  """
  l = relative_norm_alignment(feats)
  return {'rna': alpha * l}, {'rna_unweighted': l}


# ---------------------------------------------------------------- the train step's plug-in
@dataclasses.dataclass(frozen=True)
class Hparams:
  alpha: float = 1.0   # the port's --alpha_RNA


def _init(rng, dims, modalities, hp):
  del rng, dims, hp
  pairs(modalities)   # refuses a single modality at build time
  return {}, {}


def _terms(view: extensions.StepView, hp: Hparams):
  terms, raw = loss_terms(view.feats, alpha=hp.alpha)
  return terms, raw, view.state


def authors_recipe(dataset: str, modalities, target: str) -> dict | None:
  """``Extension.recipes``: the benchmark port's defaults (the module docstring's recipe), the
  same for every setting."""
  del modalities, target
  return {'epochs': 20} if dataset in ('epic', 'hac') else None


# The features without LayerNorm, the mmaction heads' dropout on video/flow, the random audio
# tail (the module docstring); uni-modal heads stay probes (stop-gradient), fused CE only.
EXTENSION = extensions.Extension(
    name='rna', hparams=Hparams(), init=_init, terms=_terms, classification='fused',
    model=(('feature_norm', 'none'), ('feature_dropout', 0.5), ('uni_head', 'mlp'),
           *baselines.SCRIPTS_NETWORKS),
    recipes=authors_recipe)
