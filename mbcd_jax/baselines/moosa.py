"""MOOSA (Dong et al., ECCV 2024), run closed-set as multi-modal DG baselines run it.

What the authors' training step adds on top of per-modality and fused classifiers, in the
order their code computes it (``fused`` is the fused head, ``m`` ranges over modalities):

1. Entropy-weighted CE: per sample, the CE of every uni-modal head and of the fused head is
   weighted by ``softmax_k(-H_k / T)`` over the M + 1 predictions (H = entropy of the softmax),
   then averaged over the batch. This *replaces* the plain sum of CEs. The weights are not
   detached, so gradients also flow through the entropies.
2. Multimodal jigsaw: each modality's embedding is cut into ``jigsaw_num_splits`` equal parts;
   ``jigsaw_samples`` fixed permutations of all M * splits parts (drawn once from all
   (M * splits)! orderings) reorder the concatenated parts; an MLP classifies which
   permutation was applied. CE over the K * B rows, weight ``jigsaw_ratio``.
3. Entropy minimisation: mean over samples of ``-sum p log(p + 1e-5)`` for the fused and every
   uni-modal prediction, summed, times ``entropy_min_weight / (M + 1)``.
4. Masked cross-modal translation: every element of each embedding is zeroed with probability
   ``mask_ratio`` (no 1/(1-p) rescaling); an MLP per ordered pair (a -> b) maps the masked
   embedding of a to b; loss = mean over samples of ``|| n(T(mask(x_a))) - n(x_b) ||_2`` with
   ``n`` the L2 normalisation and the target *not* detached; mean over pairs, times
   ``alpha_trans``.
5. Supervised contrastive loss (SimMMDG's): a projector per modality on the first half of its
   embedding, SupCon over the modalities as views, times ``alpha_contrast``.
6. Feature-splitting distance (SimMMDG's): ``-MSE(first half, second half)`` per modality,
   averaged over modalities, times ``explore_coeff``.

Where the code goes beyond the paper (we follow the code): the paper's method is the two
pretext tasks (jigsaw, translation) and entropy weighting; the released training script also
keeps SimMMDG's SupCon (5) and feature-splitting (6) terms with SimMMDG's coefficients, and
entropy minimisation (3). The entropy weights are not stop-gradient'ed and the translation
targets are not detached.

Closed-set: the authors' script trains on the source classes minus one held-out class and
scores unknown-class detection; multi-modal DG papers train it on all classes and report top-1
accuracy of the fused head. Nothing in the losses depends on that choice.

Inputs the train step must provide (see ``loss_terms``):
  * ``feats``: modality -> ``[B, D_m]`` embedding, the tensor that feeds both that modality's
    classifier and (concatenated) the fused head. In the authors' code it is the pooled last
    stage output after the head's dropout(0.5) for video and flow, and the pooled audio tail
    output (no dropout) for audio; D_m must be even and divisible by ``jigsaw_num_splits``.
  * ``uni_logits`` (modality -> ``[B, C]``) and ``fused_logits`` ``[B, C]``. The authors'
    uni-modal classifier is a single Linear on the embedding; the fused head is
    Linear-ReLU-Dropout(0.5)-Linear on the concatenation in the order of
    ``authors_order(modalities)``.
  * ``labels`` ``[B]`` int and one PRNG key; the method's own parameters (``init``) and the
    projectors' BatchNorm statistics, whose update comes back in ``aux['batch_stats']``.
The step must not add its own CE: term (1) is the method's classification loss.
"""
import dataclasses
import itertools
import math
import random
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mbcd_jax import baselines
from mbcd_jax import extensions
from mbcd_jax.method import losses
from mbcd_jax import recipes
from mbcd_jax.errors import ConfigError
from mbcd_jax.baselines import simmmdg

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Config:
  """MOOSA's coefficients; defaults are the authors' argparse defaults.

  Per-setting values from the authors' README (``mask_ratio``, ``entropy_min_weight``,
  ``jigsaw_num_splits``, ``jigsaw_samples``, ``alpha_trans`` and epochs) are listed in
  ``README_RECIPES``.
  """
  mask_ratio: float = 0.3           # probability that an embedding element is zeroed
  alpha_trans: float = 0.1          # translation loss weight
  trans_hidden: int = 2048          # translator MLP width
  jigsaw_num_splits: int = 4        # parts per modality (README: 2 for three modalities)
  jigsaw_samples: int = 128         # number of permutation classes K
  jigsaw_hidden: int = 512          # jigsaw classifier width
  jigsaw_ratio: float = 1.0         # jigsaw loss weight
  entropy_weight_temp: float = 1.0  # T of the entropy weighting softmax
  entropy_min_weight: float = 0.001
  alpha_contrast: float = 3.0       # SupCon weight
  temperature: float = 0.1          # SupCon temperature
  base_temperature: float = 0.07    # SupCon's loss scale is temperature / base_temperature
  proj_hidden: int = 2048           # projector width
  proj_out: int = 128               # projector output dim
  explore_coeff: float = 0.7        # feature-splitting distance weight
  dropout: float = 0.5              # translator dropout
  # Seeds the choice of permutation classes; None: the run's config.seed, as the authors'
  # script draws them with its --seed (methods.resolve fills it in).
  seed: int | None = None


# (dataset, modalities, sources -> target): (epochs, mask_ratio, entropy_min_weight, extra).
# Every command uses lr 1e-4, batch 16; three-modality runs add jigsaw_num_splits=2.
README_RECIPES = {
    ('epic', 'video+audio', 'D2,D3->D1'): (5, 0.7, 0.001, {}),
    ('epic', 'video+audio', 'D1,D3->D2'): (10, 0.7, 1.0, {}),
    ('epic', 'video+audio', 'D1,D2->D3'): (20, 0.7, 0.001, {}),
    ('epic', 'video+flow', 'D2,D3->D1'): (15, 0.7, 0.001, {}),
    ('epic', 'video+flow', 'D1,D3->D2'): (20, 0.7, 1.0, {}),
    ('epic', 'video+flow', 'D1,D2->D3'): (15, 0.7, 0.001, {}),
    ('epic', 'flow+audio', 'D2,D3->D1'): (25, 0.3, 0.001, {}),
    ('epic', 'flow+audio', 'D1,D3->D2'): (10, 0.3, 0.001, {}),
    ('epic', 'flow+audio', 'D1,D2->D3'): (10, 0.3, 0.001, {}),
    ('epic', 'video+flow+audio', 'D2,D3->D1'): (15, 0.7, 0.001, {'jigsaw_num_splits': 2}),
    ('epic', 'video+flow+audio', 'D1,D3->D2'): (20, 0.7, 0.1, {'jigsaw_num_splits': 2}),
    ('epic', 'video+flow+audio', 'D1,D2->D3'): (20, 0.3, 0.1, {'jigsaw_num_splits': 2}),
    ('hac', 'video+audio', 'A,C->H'): (5, 0.3, 0.001, {}),
    ('hac', 'video+audio', 'H,C->A'): (10, 0.7, 0.001, {}),
    ('hac', 'video+audio', 'H,A->C'): (10, 0.3, 0.001, {}),
    ('hac', 'video+flow', 'A,C->H'): (20, 0.3, 0.001, {}),
    ('hac', 'video+flow', 'H,C->A'): (20, 0.3, 0.001, {}),
    ('hac', 'video+flow', 'H,A->C'): (20, 0.3, 0.001, {}),
    ('hac', 'flow+audio', 'A,C->H'): (10, 0.3, 0.001, {}),
    ('hac', 'flow+audio', 'H,C->A'): (10, 0.3, 0.001, {}),
    ('hac', 'flow+audio', 'H,A->C'): (10, 0.7, 0.001, {}),
    ('hac', 'video+flow+audio', 'A,C->H'): (10, 0.7, 0.001, {'jigsaw_num_splits': 2}),
    ('hac', 'video+flow+audio', 'H,C->A'): (10, 0.7, 0.001, {'jigsaw_num_splits': 2,
                                                             'jigsaw_samples': 64}),
    ('hac', 'video+flow+audio', 'H,A->C'): (20, 0.7, 0.001, {'jigsaw_num_splits': 2,
                                                             'alpha_trans': 0.5}),
}


def authors_recipe(dataset: str, modalities: Sequence[str], target: str) -> dict | None:
  """``Extension.recipes``: the README command of the multi-source setting with this target
  (``README_RECIPES``) as ``{'epochs', 'mask_ratio', 'entropy_min_weight', ...}``, or None."""
  mods = recipes.modality_key(modalities)
  # README_RECIPES names the target by its letter on HAC ('A,C->H') and in full on EPIC.
  abbrev = target if any(c.isdigit() for c in target) else target[:1].upper()
  for (ds, m, setting), (epochs, mask, ent_min, extra) in README_RECIPES.items():
    if (ds, m) == (dataset, mods) and setting.split('->')[1] == abbrev:
      return {'epochs': epochs, 'mask_ratio': mask, 'entropy_min_weight': ent_min, **extra}
  return None


def authors_order(modalities: Sequence[str]) -> tuple[str, ...]:
  """The order the authors concatenate embeddings (fused head input and jigsaw parts) in:
  (video, audio, flow) for three modalities, (flow, audio) for flow + audio."""
  ms = baselines.present(modalities, 'moosa')
  rank = {'video': 0, 'audio': 1, 'flow': 2} if 'video' in ms else {'flow': 0, 'audio': 1}
  return tuple(sorted(ms, key=rank.__getitem__))


# ---------------------------------------------------------------------------- modules
# The projector, the translator, SupCon and the two distances are SimMMDG's (``simmmdg``).
class JigsawHead(nn.Module):
  """Linear-ReLU-Linear: ``[N, sum D] -> [N, K]`` permutation logits."""
  num_classes: int
  hidden: int = 512

  @nn.compact
  def __call__(self, x):
    x = nn.relu(simmmdg.TorchDense(self.hidden)(x))
    return simmmdg.TorchDense(self.num_classes)(x)


# ---------------------------------------------------------------------------- jigsaw set
def _unrank_permutation(index: int, n: int) -> tuple[int, ...]:
  """The ``index``-th element of ``itertools.permutations(range(n))`` (lexicographic)."""
  pool = list(range(n))
  out = []
  for i in range(n, 0, -1):
    q, index = divmod(index, math.factorial(i - 1))
    out.append(pool.pop(q))
  return tuple(out)


def jigsaw_permutations(num_parts: int, samples: int, seed: int) -> np.ndarray:
  """The K fixed permutation classes: ``[K, num_parts]`` int, row k = class k.

  As the authors: ``random.seed(seed); random.sample(range(num_parts!), K)`` picks indices into
  the lexicographic list of all permutations (unranked here instead of listing all n!)."""
  total = math.factorial(num_parts)
  if samples > total:
    raise ConfigError(f'moosa: jigsaw_samples={samples} > {num_parts}! = {total} permutations')
  idx = random.Random(seed).sample(range(total), samples)
  return np.array([_unrank_permutation(i, num_parts) for i in idx], np.int32)


def jigsaw_columns(dims: Sequence[int], splits: int, perms: np.ndarray) -> np.ndarray:
  """Column gathers: ``[K, sum(dims)]`` so that ``concat(feats)[:, cols[k]]`` is the
  concatenation of the parts in permutation k's order. Parts are numbered modality by
  modality (in ``dims`` order), ``splits`` equal parts each."""
  parts, off = [], 0
  for d in dims:
    if d % splits:
      raise ConfigError(f'moosa: embedding dim {d} not divisible by jigsaw_num_splits={splits}')
    s = d // splits
    parts += [np.arange(off + j * s, off + (j + 1) * s) for j in range(splits)]
    off += d
  if perms.shape[1] != len(parts):
    raise ValueError(f'moosa: permutations have {perms.shape[1]} parts, embeddings give '
                     f'{len(parts)}')
  return np.stack([np.concatenate([parts[p] for p in perm]) for perm in perms]).astype(np.int32)


def jigsaw_setup(dims: Mapping[str, int], modalities: Sequence[str],
                 cfg: Config = Config()) -> np.ndarray:
  """The run's jigsaw column gathers ``[K, sum D]`` for embeddings concatenated in
  ``modalities`` order, with the authors' permutation classes for ``cfg.seed``."""
  if cfg.seed is None:
    raise ValueError("moosa: Config.seed is None; methods.resolve sets it to the run's seed")
  perms = jigsaw_permutations(cfg.jigsaw_num_splits * len(modalities), cfg.jigsaw_samples,
                              cfg.seed)
  return jigsaw_columns([dims[m] for m in modalities], cfg.jigsaw_num_splits, perms)


# ---------------------------------------------------------------------------- init
def pairs(modalities: Sequence[str]) -> list[tuple[str, str]]:
  """Ordered translation pairs (a -> b), a != b."""
  return list(itertools.permutations(modalities, 2))


def init(rng: jax.Array, dims: Mapping[str, int], cfg: Config = Config()
         ) -> tuple[PyTree, PyTree]:
  """MOOSA's own parameters and BN statistics for embeddings of sizes ``dims`` (ordered as the
  fused head's input). Returns ``(params, batch_stats)``:
  ``params = {'translators': {'a_to_b': ...}, 'jigsaw': ..., 'proj': {m: ...}}``,
  ``batch_stats = {'proj': {m: ...}}``."""
  for m, d in dims.items():
    if d % 2:
      raise ConfigError(f'moosa: embedding dim of {m!r} is {d}; the split losses need it even')
  # One compiled program instead of dozens of eager module inits (seconds on a CPU).
  return jax.jit(lambda r: _init(r, dict(dims), cfg))(rng)


def _init(rng, dims, cfg):
  mods = list(dims)
  r_t, r_j, r_p = jax.random.split(rng, 3)
  params = {'translators': {}, 'jigsaw': None, 'proj': {}}
  batch_stats = {'proj': {}}
  for i, (a, b) in enumerate(pairs(mods)):
    tr = simmmdg.Translator(dims[b], cfg.trans_hidden, cfg.dropout)
    params['translators'][f'{a}_to_{b}'] = tr.init(jax.random.fold_in(r_t, i),
                                                    jnp.zeros((1, dims[a])))['params']
  params['jigsaw'] = JigsawHead(cfg.jigsaw_samples, cfg.jigsaw_hidden).init(
      r_j, jnp.zeros((1, sum(dims.values()))))['params']
  for i, m in enumerate(mods):
    v = simmmdg.ProjectionHead(cfg.proj_hidden, cfg.proj_out).init(
        jax.random.fold_in(r_p, i), jnp.zeros((2, dims[m] // 2)))
    params['proj'][m] = v['params']
    batch_stats['proj'][m] = v['batch_stats']
  return params, batch_stats


# ---------------------------------------------------------------------------- loss pieces
def torch_categorical_entropy(logits: jax.Array) -> jax.Array:
  """``Categorical(probs=softmax(logits)).entropy()``: ``[B, C] -> [B]``, including torch's
  clamp of the probabilities to [eps, 1 - eps] inside the log."""
  logits = losses.at_least_f32(logits)
  p = jax.nn.softmax(logits, -1)
  eps = jnp.finfo(p.dtype).eps
  logq = jnp.log(jnp.clip(p, eps, 1 - eps))
  logq = logq - jax.nn.logsumexp(logq, -1, keepdims=True)
  return -(p * logq).sum(-1)


def per_sample_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``[B, C], [B] -> [B]`` cross-entropy without the batch mean."""
  logp = jax.nn.log_softmax(losses.at_least_f32(logits))
  return -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), -1)[:, 0]


def entropy_weighted_ce(logits: Sequence[jax.Array], labels: jax.Array,
                        temp: float) -> tuple[jax.Array, jax.Array]:
  """Term 1. ``logits``: K arrays ``[B, C]``. Returns (scalar, weights ``[B, K]``)."""
  neg_h = -jnp.stack([torch_categorical_entropy(l) for l in logits], 1)
  w = jax.nn.softmax(neg_h / temp, 1)
  ce = jnp.stack([per_sample_ce(l, labels) for l in logits], 1)
  return (w * ce).sum(1).mean(), w


def entropy_min(logits: Sequence[jax.Array]) -> jax.Array:
  """Term 3 before its weight: sum over predictions of mean ``-sum p log(p + 1e-5)``."""
  out = 0.0
  for l in logits:
    p = jax.nn.softmax(losses.at_least_f32(l), -1)
    out = out + (-p * jnp.log(p + 1e-5)).sum(-1).mean()
  return out


# ---------------------------------------------------------------------------- the method
def draw(rng: jax.Array, feats: Mapping[str, jax.Array], modalities: Sequence[str],
         cfg: Config = Config(), train: bool = True) -> dict:
  """All random draws of one step: ``{'masked': {m: [B, D_m] bool (True = zeroed)},
  'keep': {'a_to_b': [B, trans_hidden] bool or None}}``."""
  r_mask, r_drop = jax.random.split(rng)
  masked = {m: jax.random.uniform(jax.random.fold_in(r_mask, i), feats[m].shape)
               < cfg.mask_ratio for i, m in enumerate(modalities)}
  keep = {}
  for i, (a, b) in enumerate(pairs(modalities)):
    bsz = feats[a].shape[0]
    keep[f'{a}_to_{b}'] = (simmmdg.dropout_keep(jax.random.fold_in(r_drop, i), cfg.dropout,
                                                (bsz, cfg.trans_hidden)) if train else None)
  return {'masked': masked, 'keep': keep}


def loss_terms_given(params: PyTree, batch_stats: PyTree, feats: Mapping[str, jax.Array],
                     uni_logits: Mapping[str, jax.Array], fused_logits: jax.Array,
                     labels: jax.Array, draws: dict, *, modalities: Sequence[str],
                     cfg: Config = Config(), cols: np.ndarray) -> tuple[dict, dict]:
  """``loss_terms`` with explicit random draws (see ``draw``)."""
  mods = list(modalities)
  m_count = len(mods)
  all_logits = [uni_logits[m] for m in mods] + [fused_logits]

  ce, weights = entropy_weighted_ce(all_logits, labels, cfg.entropy_weight_temp)

  cat = jnp.concatenate([feats[m] for m in mods], 1)                   # [B, sum D]
  k = cols.shape[0]
  shuffled = jnp.transpose(cat[:, jnp.asarray(cols)], (1, 0, 2)).reshape(k * cat.shape[0], -1)
  jig_labels = jnp.repeat(jnp.arange(k), cat.shape[0])
  jig_logits = JigsawHead(cfg.jigsaw_samples, cfg.jigsaw_hidden).apply(
      {'params': params['jigsaw']}, shuffled)
  jigsaw = losses.cross_entropy(jig_logits, jig_labels)

  ent = entropy_min(all_logits)

  masked_in = {m: jnp.where(draws['masked'][m], 0.0, feats[m]) for m in mods}
  trans = 0.0
  for a, b in pairs(mods):
    name = f'{a}_to_{b}'
    pred = simmmdg.Translator(feats[b].shape[1], cfg.trans_hidden, cfg.dropout).apply(
        {'params': params['translators'][name]}, masked_in[a], draws['keep'][name])
    trans = trans + simmmdg.translation_loss(pred, feats[b])
  trans = trans / len(pairs(mods))

  new_stats, views = {}, []
  for m in mods:
    z, new_stats[m] = simmmdg.project(
        simmmdg.ProjectionHead(cfg.proj_hidden, cfg.proj_out), params['proj'][m],
        batch_stats['proj'][m], simmmdg.split(feats[m])[0], train=True)
    views.append(z)
  con = simmmdg.supcon_loss(jnp.stack(views, 1), labels, cfg.temperature, cfg.base_temperature)

  explore = simmmdg.split_distance({m: feats[m] for m in mods})

  raw = {'ce_weighted': ce, 'jigsaw': jigsaw, 'entropy_min': ent, 'translation': trans,
         'supcon': con, 'split_distance': explore}
  terms = {'ce_weighted': ce,
           'jigsaw': cfg.jigsaw_ratio * jigsaw,
           'entropy_min': cfg.entropy_min_weight / (m_count + 1) * ent,
           'translation': cfg.alpha_trans * trans,
           'supcon': cfg.alpha_contrast * con,
           'split_distance': cfg.explore_coeff * explore}
  aux = {'raw': raw, 'entropy_weights': weights, 'batch_stats': {'proj': new_stats}}
  return terms, aux


def loss_terms(params: PyTree, batch_stats: PyTree, feats: Mapping[str, jax.Array],
               uni_logits: Mapping[str, jax.Array], fused_logits: jax.Array,
               labels: jax.Array, rng: jax.Array, *, modalities: Sequence[str],
               cfg: Config = Config(), cols: np.ndarray) -> tuple[dict, dict]:
  """MOOSA's loss for one training step.

  Args:
    params, batch_stats: from ``init``.
    feats: modality -> ``[B, D_m]`` embeddings.
    uni_logits: modality -> ``[B, C]``; fused_logits: ``[B, C]``.
    labels: ``[B]`` int.
    rng: key for the translation masks and the translators' dropout.
    modalities: the order of the embeddings in the jigsaw's concatenation, the one ``cols``
      was built for (a dict's own order does not survive JAX transformations, which sort
      keys); ``authors_order`` gives the authors'.
    cfg: coefficients.
    cols: ``jigsaw_setup(dims, modalities, cfg)``, static: computed once per run.
  Returns:
    ``(terms, aux)``: ``terms`` maps 'ce_weighted', 'jigsaw', 'entropy_min', 'translation',
    'supcon', 'split_distance' to scalars already multiplied by their coefficients (their sum
    is the whole loss); ``aux`` has the unweighted values ('raw'), the entropy weights
    ``[B, M + 1]`` and the projectors' updated ``batch_stats``.
  """
  return loss_terms_given(params, batch_stats, feats, uni_logits, fused_logits, labels,
                          draw(rng, feats, modalities, cfg), modalities=modalities, cfg=cfg,
                          cols=cols)


# ---------------------------------------------------------------- the train step's plug-in
def _init_ext(rng, dims, modalities, cfg):
  return init(rng, {m: dims[m] for m in modalities}, cfg)


def _terms_ext(view, cfg):
  # The authors' concatenation order (V, A, F for three modalities): it numbers the jigsaw
  # parts, so it decides which shuffle each permutation class is.
  mods = authors_order(view.modalities)
  dims = {m: view.feats[m].shape[-1] for m in mods}
  terms, aux = loss_terms(view.params, view.state, view.feats, view.uni_logits,
                          view.fused_logits, view.labels, view.rng, modalities=mods, cfg=cfg,
                          cols=jigsaw_setup(dims, mods, cfg))
  return terms, aux['raw'], aux['batch_stats']


# Its entropy-weighted CE is the classification loss (uni-modal Linear heads trained by it);
# features without LayerNorm, head dropout on video/flow, random audio tail (SimMMDG's code).
EXTENSION = extensions.Extension(
    name='moosa', hparams=Config(), init=_init_ext, terms=_terms_ext, classification='own',
    recipes=authors_recipe,
    model=(('feature_norm', 'none'), ('feature_dropout', 0.5), ('uni_head', 'linear'),
           *baselines.SCRIPTS_NETWORKS),
    frozen_bn_caution=baselines.SPLIT_DISTANCE_FROZEN_BN)
