"""SimMMDG (Dong et al., NeurIPS 2023): shared/specific split, cross-modal SupCon, translation.

Follows the authors' code (``train_video_flow_audio_{EPIC,HAC}_SimMMDG.py`` and its ``losses.py``;
the benchmark port's ``train_SimMMDG.py`` is the same math). Per step:

    L = CE(fused_head(concat(e)), y)
      + alpha_contrast * SupCon({proj_m(e_m[:, :D_m/2])}_m, y)           (contrast)
      + alpha_trans    * mean_{a != b} mean_b || n(T_ab(e_a)) - n(e_b) ||_2  (translation)
      + distance_coeff * mean_m ( - mean((e_m[:, :D_m/2] - e_m[:, D_m/2:])^2) )  (distance)

with ``n(x) = x / ||x||_2`` per row. Facts from the code (the step must match them):

* ``e_m`` ``[B, D_m]`` is the pooled last-stage feature with no LayerNorm. For video and flow it
  is taken *after* the mmaction head's dropout (p = 0.5, train mode); audio has none. The same
  ``e_m`` feeds the fused head, the split, the projections and the translators.
* Split: the first ``D_m // 2`` channels are "modality-shared", the rest "modality-specific"
  (a plain index split; for the SlowFast feature [fast 256, slow 2048] the shared half is the
  fast channels and the first 896 slow ones).
* Contrast: a projection head per modality, Linear(D/2, 2048) -> BN -> ReLU -> Linear(2048,
  2048) -> BN -> ReLU -> Linear(2048, 128) -> L2-normalise, BN in train mode (batch statistics);
  the modalities are the "views" of Khosla et al.'s SupCon (contrast_mode 'all'). temperature
  0.1 (``--temp``) but ``base_temperature`` left at its default 0.07, so the loss carries a
  factor 0.1 / 0.07 = 1.43.
* Translation: one MLP per *ordered* pair (6 for V+F+A, 2 for two modalities), Linear(D_a, H) ->
  ReLU -> Linear(H, H) -> ReLU -> Dropout(0.5) -> Linear(H, D_b), H = ``--trans_hidden_num``
  (2048). It maps the *whole* embedding (both halves), the loss is the unsquared L2 distance of
  the normalised vectors, and the target ``e_b`` is not detached.
* Distance: negative element-wise MSE between the halves, no margin (so unbounded below; the
  head dropout and the other terms keep it finite in practice).
* Coefficients (argparse defaults): alpha_contrast 3.0, alpha_trans 0.1, distance 0.7.
  Per-run overrides in the authors' README: EPIC D1,D2 -> D3 V+F+A ``--alpha_trans 1.0``;
  EPIC D2,D3 -> D1 V+F+A ``--trans_hidden_num 1024``.
* Extra Linear layers use PyTorch's default init (U(+-1/sqrt(fan_in)) for kernel and bias),
  BN scale 1 / bias 0, and the BN layers are PyTorch's (``mbcd_jax.batchnorm``: momentum 0.1,
  unbiased batch variance in the running update). The running statistics are never read here
  (the projection heads only exist in training); CMRF's teacher does read them.
* Only the fused head gets a CE; uni-modal heads are not trained. At evaluation only the fused
  head is used.

Recipe of the authors' README (Adam lr 1e-4, weight decay 1e-4, batch 16; model selection =
the epoch with the best source-validation accuracy, ties to the later one): the epochs per
dataset, modality set and target, and the two per-run overrides above, are ``AUTHORS_RECIPES``
(``config.train.recipe='authors'``). The script's own default is 15 epochs; the MMDG benchmark
runs every setting for 20.
"""
import dataclasses
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mbcd_jax import baselines
from mbcd_jax.encoders import batchnorm
from mbcd_jax import extensions
from mbcd_jax import recipes
from mbcd_jax.errors import ConfigError
from mbcd_jax.baselines import torch_init

ORDER = baselines.ORDER   # canonical order; naming only (no term depends on it)
PyTree = dict


@dataclasses.dataclass(frozen=True)
class Hparams:
  """The authors' defaults (argparse of the EPIC/HAC training scripts)."""
  alpha_contrast: float = 3.0
  alpha_trans: float = 0.1
  distance_coeff: float = 0.7      # --explore_loss_coeff
  temperature: float = 0.1         # --temp
  base_temperature: float = 0.07   # SupConLoss default, not overridden by the script
  proj_hidden: int = 2048          # --hidden_dim
  proj_dim: int = 128              # --out_dim
  trans_hidden: int = 2048         # --trans_hidden_num
  trans_dropout: float = 0.5


TorchDense = torch_init.TorchDense   # the peers' nn.Linear (its params keep this name)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Row-wise ``x / max(||x||, eps)`` (``F.normalize``; the eps only guards all-zero rows)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class ProjectionHead(nn.Module):
  """``[B, D_in]`` -> unit-norm ``[B, out]``: (Linear -> BN -> ReLU) x 2 -> Linear -> L2.

  The BN layers are ``mbcd_jax.batchnorm.BatchNorm`` (PyTorch semantics); use ``project`` to
  run the head in training or eval mode. MOOSA and CMRF reuse this head (CMRF on the whole
  embedding instead of the shared half).
  """
  hidden: int = 2048
  out: int = 128

  @nn.compact
  def __call__(self, x):
    for _ in range(2):
      x = nn.relu(batchnorm.BatchNorm()(TorchDense(self.hidden)(x)))
    return l2_normalize(TorchDense(self.out)(x))


def project(head: ProjectionHead, params: PyTree, batch_stats: PyTree, x: jax.Array, *,
            train: bool) -> tuple[jax.Array, PyTree]:
  """Applies ``head`` to ``x`` ``[B, D_in]``; returns ``(z [B, out], new batch_stats)``.

  ``train``: BN on batch statistics and the running statistics get PyTorch's update (momentum
  0.1, unbiased variance); else BN on the running statistics, returned unchanged.
  """
  variables = {'params': params, 'batch_stats': batch_stats}
  if not train:
    return head.apply(variables, x), batch_stats
  z, moments = head.apply(variables, x, mutable=[batchnorm.MOMENTS])
  return z, batchnorm.update_running(batch_stats, moments[batchnorm.MOMENTS])


class Translator(nn.Module):
  """Cross-modal translation MLP: ``[B, D_a]`` -> ``[B, D_b]``,
  Linear -> ReLU -> Linear -> ReLU -> Dropout -> Linear.

  ``keep`` is the dropout's ``[B, hidden]`` 0/1 keep mask (``None``: no dropout), kept
  elements scaled by ``1 / (1 - dropout)``; taking the mask rather than a key lets a test
  replay another framework's draw (see ``dropout_keep``).
  """
  out: int
  hidden: int = 2048
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, keep: jax.Array | None = None):
    x = nn.relu(TorchDense(self.hidden)(x))
    x = nn.relu(TorchDense(self.hidden)(x))
    if keep is not None:
      x = x * keep.astype(x.dtype) / (1.0 - self.dropout)
    return TorchDense(self.out)(x)


def dropout_keep(rng: jax.Array, rate: float, shape) -> jax.Array:
  """A dropout keep mask: bool ``shape``, True with probability ``1 - rate``."""
  return jax.random.bernoulli(rng, 1.0 - rate, shape)


# ------------------------------------------------------------------ pure loss pieces
def supcon_loss(features: jax.Array, labels: jax.Array, temperature: float = 0.1,
                base_temperature: float = 0.07) -> jax.Array:
  """Supervised contrastive loss (Khosla et al. 2020), every view an anchor.

  Args:
    features: ``[B, V, D]``, unit-norm rows; the V views are the modalities.
    labels: ``[B]`` int.
  Returns:
    Scalar: ``-(T / T_base) * mean over the V*B anchors of the mean log-probability of its
    positives`` (same label, itself excluded; the softmax runs over all other V*B - 1 rows).
    The arithmetic is the authors' ``SupConLoss`` (row max subtracted, exp, masked sum, log),
    so float64 results agree with theirs to the last bits.
  """
  if features.ndim != 3 or features.shape[1] < 2:
    raise ValueError(f'supcon_loss: features must be [B, V>=2, D], got {features.shape}')
  b, v, d = features.shape
  x = jnp.transpose(features, (1, 0, 2)).reshape(v * b, d)             # view-major rows
  logits = x @ x.T / temperature
  logits = logits - jax.lax.stop_gradient(logits.max(1, keepdims=True))
  lab = jnp.tile(labels, v)
  not_self = 1.0 - jnp.eye(v * b, dtype=logits.dtype)
  pos = (lab[:, None] == lab[None, :]).astype(logits.dtype) * not_self
  log_prob = logits - jnp.log((jnp.exp(logits) * not_self).sum(1, keepdims=True))
  # every anchor has >= V-1 positives (its own other views), so the count is never 0
  mean_pos = (pos * log_prob).sum(1) / pos.sum(1)
  return -(temperature / base_temperature) * mean_pos.mean()


def split(e: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``[B, D]`` -> (shared ``[B, D/2]``, specific ``[B, D/2]``). D must be even."""
  if e.shape[-1] % 2:
    raise ConfigError(f'simmmdg: feature dim {e.shape[-1]} must be even to split in halves')
  h = e.shape[-1] // 2
  return e[:, :h], e[:, h:]


def distance_loss(e: jax.Array) -> jax.Array:
  """Negative MSE between the shared and specific halves of ``e`` ``[B, D]`` (no margin)."""
  shared, specific = split(e)
  return -jnp.mean(jnp.square(shared - specific))


def split_distance(feats: Mapping[str, jax.Array]) -> jax.Array:
  """``distance_loss`` averaged over the modalities of ``feats`` (modality -> ``[B, D_m]``)."""
  return sum(distance_loss(x) for x in feats.values()) / len(feats)


def translation_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Batch mean of ``|| n(pred) - n(target) ||_2`` (unsquared); the target is not detached."""
  return jnp.linalg.norm(l2_normalize(pred) - l2_normalize(target), axis=-1).mean()


def ordered_pairs(modalities) -> list[tuple[str, str]]:
  """Every ordered (source, target) pair of the present modalities, in ``ORDER``."""
  ms = baselines.present(modalities, 'simmmdg')
  return [(a, b) for a in ms for b in ms if a != b]


def pair_name(a: str, b: str) -> str:
  return f'{a}_to_{b}'


# ------------------------------------------------------------------ parameters
def init(rng: jax.Array, dims: Mapping[str, int], hp: Hparams = Hparams()) -> tuple[PyTree, PyTree]:
  """Initialises the extra modules.

  Args:
    dims: modality -> embedding width D_m (even), e.g. {'video': 2304, 'flow': 2048, 'audio': 512}.
  Returns:
    ``(params, batch_stats)``: params = {'proj': {m: ...}, 'trans': {'a_to_b': ...}};
    batch_stats = {'proj': {m: ...}} (projection-head BN running statistics; never read).
  """
  params, stats = {'proj': {}, 'trans': {}}, {'proj': {}}
  ordered_pairs(dims)   # validates the modality names
  for m in [m for m in ORDER if m in dims]:
    if dims[m] % 2:
      raise ConfigError(f'simmmdg: dims[{m!r}] = {dims[m]} must be even')
    rng, r = jax.random.split(rng)
    v = ProjectionHead(hp.proj_hidden, hp.proj_dim).init(r, jnp.zeros((2, dims[m] // 2)))
    params['proj'][m], stats['proj'][m] = v['params'], v['batch_stats']
  for a, b in ordered_pairs(dims):
    rng, r = jax.random.split(rng)
    t = Translator(dims[b], hp.trans_hidden, hp.trans_dropout)
    params['trans'][pair_name(a, b)] = t.init(r, jnp.zeros((1, dims[a])))['params']
  return params, stats


def loss_terms(params: PyTree, feats: Mapping[str, jax.Array], labels: jax.Array,
               rng: jax.Array | None, *, batch_stats: PyTree, hp: Hparams = Hparams()
               ) -> tuple[dict, dict]:
  """SimMMDG's terms beyond the fused CE, for one training batch.

  Args:
    params: from ``init`` (differentiated).
    feats: modality -> ``[B, D_m]`` embeddings ``e_m`` (see the module docstring).
    labels: ``[B]`` int.
    rng: translator-dropout randomness; None (or ``hp.trans_dropout == 0``) -> no dropout.
    batch_stats: projection-head BN statistics (updated, returned in aux).
  Returns:
    ``(terms, aux)``: terms = {'contrast', 'translation', 'distance'} already weighted, to be
    added to the loss; aux = {'unweighted': same keys unweighted, 'batch_stats': new stats}.
  """
  ms = [m for m in ORDER if m in feats]
  pairs = ordered_pairs(feats)
  for m in ms:
    if feats[m].ndim != 2 or feats[m].shape[0] != labels.shape[0]:
      raise ValueError(f'simmmdg: feats[{m!r}] must be [B={labels.shape[0]}, D], '
                       f'got {feats[m].shape}')
  f = {m: feats[m].astype(jnp.promote_types(feats[m].dtype, jnp.float32)) for m in ms}

  # Contrast: each modality's projected shared half is one view of the sample.
  proj, new_stats = [], {'proj': {}}
  for m in ms:
    z, new_stats['proj'][m] = project(
        ProjectionHead(hp.proj_hidden, hp.proj_dim), params['proj'][m], batch_stats['proj'][m],
        split(f[m])[0], train=True)
    proj.append(z)
  l_con = supcon_loss(jnp.stack(proj, axis=1), labels, hp.temperature, hp.base_temperature)

  # Translation between every ordered pair of whole embeddings.
  dropout = rng is not None and hp.trans_dropout > 0
  l_trans = 0.0
  for i, (a, b) in enumerate(pairs):
    keep = (dropout_keep(jax.random.fold_in(rng, i), hp.trans_dropout,
                         (f[a].shape[0], hp.trans_hidden)) if dropout else None)
    pred = Translator(f[b].shape[-1], hp.trans_hidden, hp.trans_dropout).apply(
        {'params': params['trans'][pair_name(a, b)]}, f[a], keep)
    l_trans = l_trans + translation_loss(pred, f[b])
  l_trans = l_trans / len(pairs)

  l_dis = split_distance(f)

  raw = {'contrast': l_con, 'translation': l_trans, 'distance': l_dis}
  terms = {'contrast': hp.alpha_contrast * l_con, 'translation': hp.alpha_trans * l_trans,
           'distance': hp.distance_coeff * l_dis}
  return terms, {'unweighted': raw, 'batch_stats': new_stats}


# ---------------------------------------------------------------- the authors' recipes
# (dataset, modalities, target) -> the README command's epochs and its overrides of ``Hparams``
# (multi-source: the other domains are the sources).
AUTHORS_RECIPES = {
    ('epic', 'video+audio', 'D1'): {'epochs': 20},
    ('epic', 'video+audio', 'D2'): {'epochs': 20},
    ('epic', 'video+audio', 'D3'): {'epochs': 25},
    ('epic', 'video+flow', 'D1'): {'epochs': 15},
    ('epic', 'video+flow', 'D2'): {'epochs': 15},
    ('epic', 'video+flow', 'D3'): {'epochs': 15},
    ('epic', 'flow+audio', 'D1'): {'epochs': 10},
    ('epic', 'flow+audio', 'D2'): {'epochs': 20},
    ('epic', 'flow+audio', 'D3'): {'epochs': 20},
    ('epic', 'video+flow+audio', 'D1'): {'epochs': 10, 'trans_hidden': 1024},
    ('epic', 'video+flow+audio', 'D2'): {'epochs': 20},
    ('epic', 'video+flow+audio', 'D3'): {'epochs': 15, 'alpha_trans': 1.0},
    ('hac', 'video+audio', 'human'): {'epochs': 10},
    ('hac', 'video+audio', 'animal'): {'epochs': 10},
    ('hac', 'video+audio', 'cartoon'): {'epochs': 10},
    ('hac', 'video+flow', 'human'): {'epochs': 20},
    ('hac', 'video+flow', 'animal'): {'epochs': 20},
    ('hac', 'video+flow', 'cartoon'): {'epochs': 20},
    ('hac', 'flow+audio', 'human'): {'epochs': 15},
    ('hac', 'flow+audio', 'animal'): {'epochs': 15},
    ('hac', 'flow+audio', 'cartoon'): {'epochs': 20},
    ('hac', 'video+flow+audio', 'human'): {'epochs': 15},
    ('hac', 'video+flow+audio', 'animal'): {'epochs': 10},
    ('hac', 'video+flow+audio', 'cartoon'): {'epochs': 15},
}


def authors_recipe(dataset: str, modalities, target: str) -> dict | None:
  """``Extension.recipes``: the README command for this setting, or None."""
  return AUTHORS_RECIPES.get((dataset, recipes.modality_key(modalities), target))


# ---------------------------------------------------------------- the train step's plug-in
def _init_ext(rng, dims, modalities, hp):
  del modalities
  return init(rng, dims, hp)


def _terms_ext(view, hp):
  terms, aux = loss_terms(view.params, view.feats, view.labels, view.rng,
                          batch_stats=view.state, hp=hp)
  return terms, aux['unweighted'], aux['batch_stats']


# Features without LayerNorm, the mmaction heads' dropout on video/flow, the random audio tail;
# fused CE only (the uni-modal heads stay stop-gradient probes).
EXTENSION = extensions.Extension(
    name='simmmdg', hparams=Hparams(), init=_init_ext, terms=_terms_ext,
    classification='fused', recipes=authors_recipe,
    model=(('feature_norm', 'none'), ('feature_dropout', 0.5), ('uni_head', 'mlp'),
           *baselines.SCRIPTS_NETWORKS),
    frozen_bn_caution=baselines.SPLIT_DISTANCE_FROZEN_BN)
