"""NEL: nonpolarized embedding learning (Neurocomputing 658, 2025, 131754), its loss pieces.

As the MMDG benchmark trains it (``Action recognition/train_NEL.py``, lihongzhao99/MMDG_Benchmark
e98e837), every training batch holds two augmented views of the same B clips, stacked
``[view 1; view 2]`` (2B rows, labels repeated), and the objective (the paper's Eq. 14) is

    L = ( CE(fused_head(concat(e)), y)  +  alpha * L_UNC  +  (1 - alpha) * L_C  +  beta * L_NEE ) / 2

* ``e_m`` ``[2B, D_m]``: each modality's embedding (no LayerNorm; the mmaction heads' input after
  their dropout, as RNA-Net's); the fused head sees ``concat(e)``.
* ``z_m = P_m(e_m[:, :D_m/2])``: a projector per modality on the first half of the embedding,
  (Linear -> BN -> ReLU) x 2 -> Linear -> L2 normalise (SimMMDG's ``ProjectionHead``, hidden
  2048, out 128, BN in training mode).
* ``L_C`` (Eq. 9): supervised contrastive loss over the ``[2B, M, 128]`` views ``z`` (all
  anchors, temperature ``temp_s`` = 0.1, base temperature 0.07 — the class's default, which
  the script leaves, so the loss is scaled by 0.1 / 0.07; the positives' count clamped at 1,
  ``+1e-12`` inside the log): :func:`supcon_loss`.
* ``L_UNC`` (Eq. 8): each modality's ``z_m`` is replaced by its mean-shift embedding over the 2B
  rows (:func:`mean_shift`, Eqs. 4-6: half the row plus half the mean of its k = 8 nearest
  neighbours by cosine, renormalised); the M of them are concatenated per row and view 1's
  rows are contrasted against view 2's (:func:`con_mean_shift_loss`, temperature ``temp_u`` =
  0.25, positives the same clip's other view, negatives the other clips of view 2).
* ``L_NEE`` (Eqs. 11-12): ``sum_i lam_i log lam_i`` over the eigenvalues of ``concat(e)^T
  concat(e) / 2B`` above 1e-6, renormalised to sum 1 (:func:`nee_loss`); minimising it spreads
  the spectrum.
* Coefficients (the script's defaults): ``alpha`` = 0.7, ``beta`` = 1 / bsz = 1/16, ``k`` = 8.
  Recipe: Adam lr 1e-4, weight decay 1e-4, cosine annealing to lr/100 over 15 epochs, batch 16
  clips (32 rows), selection on source-validation accuracy.

The plug-in (``EXTENSION``, ``--config.method.name=nel``) declares ``views=2``
(``extensions.Extension.views``): the input pipeline then builds every training batch as
``[view 1 of the B clips; view 2 of the same B clips]``, each view the train transform with
randomness of its own (``mbcd_jax/input_pipeline.py``). On the embedded synthetic benchmark
the train transform is not random, so there the two views are the same example and ``L_UNC``
contrasts each clip with an identical copy of itself (nothing is invented to make them
differ). Its own classification loss is the fused CE (halved with the rest); the uni-modal
heads get no loss, as in the script, so their reported accuracies are those of heads that
never train (the fused head is the model). Deviation: the script's cosine annealing of the
learning rate (to lr / 100 over its 15 epochs) is not reproduced: the step's Adam has a
constant learning rate. The pieces here
are checked against the authors' functions by ``benchmarks/baselines_harness_nel_jat_gmp.py``;
the plug-in against :func:`loss_terms` by ``tests/test_baselines_nel_jat_gmp.py`` and
``tests/test_plugins.py``.
"""
import dataclasses
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

from mbcd_jax import baselines
from mbcd_jax import extensions
from mbcd_jax.method import losses
from mbcd_jax.baselines import simmmdg
from mbcd_jax.errors import ConfigError

ORDER = ('video', 'audio', 'flow')   # the script's order of the stacked projector views


@dataclasses.dataclass(frozen=True)
class Hparams:
  alpha: float = 0.7        # --alpha: L_UNC's weight; (1 - alpha) weights L_C
  beta: float = 1.0 / 16    # --beta: L_NEE's weight, default 1 / --bsz
  temp_s: float = 0.1       # --temp_s: L_C's temperature
  base_temperature: float = 0.07   # SupConLoss's default, left by the script
  temp_u: float = 0.25      # --temp_u: L_UNC's temperature
  k: int = 8                # --k: neighbours of the mean shift
  proj_hidden: int = 2048   # --hidden_dim
  proj_out: int = 128       # --out_dim


def _normalize(x: jax.Array) -> jax.Array:
  """``F.normalize(x, dim=1)``: rows divided by ``max(||x||, 1e-12)``."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def mean_shift(e: jax.Array, k: int = 8) -> jax.Array:
  """Eqs. 4-6: ``[N, D] -> [N, D]`` unit rows ``normalize(0.5 e_i + 0.5/k sum_{j in kNN(i)} e_j)``.

  Neighbours by cosine similarity, the row itself (the top match) excluded; ``k`` is capped at
  N - 1; N < 2 returns the normalised rows. The neighbour choice carries no gradient.
  """
  n = e.shape[0]
  if n < 2:
    return _normalize(e)
  k = min(k, n - 1)
  en = _normalize(e)
  _, idx = jax.lax.top_k(en @ en.T, k + 1)
  return _normalize(0.5 * e + (0.5 / k) * e[idx[:, 1:]].sum(1))


def supcon_loss(z: jax.Array, labels: jax.Array, temperature: float = 0.1,
                base_temperature: float = 0.07) -> jax.Array:
  """L_C: ``z`` ``[N, V, D]`` (V views per row), ``labels`` ``[N]`` -> scalar.

  Every one of the N V rows is an anchor; positives are the other rows with its label."""
  n, v = z.shape[:2]
  feats = jnp.concatenate([z[:, i] for i in range(v)], 0)            # [V N, D], view-major
  logits = feats @ feats.T / temperature
  logits = logits - jax.lax.stop_gradient(logits.max(1, keepdims=True))
  lab = jnp.tile(labels, v)
  not_self = 1.0 - jnp.eye(n * v, dtype=logits.dtype)
  pos = (lab[:, None] == lab[None, :]).astype(logits.dtype) * not_self
  log_prob = logits - jnp.log((jnp.exp(logits) * not_self).sum(1, keepdims=True) + 1e-12)
  mean_pos = (pos * log_prob).sum(1) / jnp.maximum(pos.sum(1), 1.0)
  return -(temperature / base_temperature) * mean_pos.mean()


def con_mean_shift_loss(anchor: jax.Array, positive: jax.Array,
                        temperature: float = 0.25) -> jax.Array:
  """L_UNC's contrast: ``[B, D]`` anchors vs ``[B, D]`` positives (row i's positive is row i;
  its negatives the other rows of ``positive``) -> scalar."""
  a, p = _normalize(anchor), _normalize(positive)
  sim = a @ p.T / temperature
  shift = jax.lax.stop_gradient(sim.max(1, keepdims=True))
  pos = (a * p).sum(1, keepdims=True) / temperature - shift
  sim = sim - shift
  neg = jnp.where(jnp.eye(sim.shape[0], dtype=bool), 0.0, jnp.exp(sim)).sum(1, keepdims=True)
  return -(pos - jnp.log(neg + jnp.exp(pos) + 1e-12)).mean()


def nee_loss(feat: jax.Array) -> jax.Array:
  """L_NEE (Eqs. 11-12): ``[N, D]`` -> ``sum lam log(lam + 1e-10)`` over the eigenvalues of
  ``feat^T feat / N`` above 1e-6, divided by their sum (+1e-10). Uncentred, as the paper."""
  c = feat.T @ feat / feat.shape[0]
  lam = jnp.linalg.eigvalsh(c)
  keep = lam > 1e-6
  lam = jnp.where(keep, lam, 0.0)
  lam = lam / (lam.sum() + 1e-10)
  return jnp.where(keep, lam * jnp.log(lam + 1e-10), 0.0).sum()


def loss_terms(proj_z: jax.Array, fused_logits: jax.Array, feats: Mapping[str, jax.Array],
               labels: jax.Array, modalities: Sequence[str], hp: Hparams = Hparams()
               ) -> tuple[dict, dict]:
  """NEL's objective on a two-view batch.

  Args:
    proj_z: ``[2B, M, out]`` the projectors' unit outputs, modalities in ``ORDER``.
    fused_logits: ``[2B, C]``; feats: modality -> ``[2B, D_m]``; labels: ``[2B]`` (view 1's
      B labels, then the same again).
    modalities: the present modalities (the fused features are concatenated in ``ORDER``).
  Returns:
    ``(terms, raw)``: weighted terms (their sum is the whole loss, the final / 2 included) and
    the unweighted values.
  """
  ms = [m for m in ORDER if m in modalities]
  ce = losses.cross_entropy(fused_logits, labels)
  l_c = supcon_loss(proj_z, labels, hp.temp_s, hp.base_temperature)
  half = proj_z.shape[0] // 2
  shifted = jnp.stack([mean_shift(proj_z[:, i], hp.k) for i in range(len(ms))], 1)
  flat = shifted.reshape(shifted.shape[0], -1)
  l_unc = con_mean_shift_loss(flat[:half], flat[half:], hp.temp_u)
  l_nee = nee_loss(jnp.concatenate([feats[m] for m in ms], 1))
  raw = {'ce_fused': ce, 'unc': l_unc, 'supcon': l_c, 'nee': l_nee}
  terms = {'ce_fused': ce / 2, 'unc': hp.alpha * l_unc / 2, 'supcon': (1 - hp.alpha) * l_c / 2,
           'nee': hp.beta * l_nee / 2}
  return terms, raw


def projector(hp: Hparams = Hparams()) -> simmmdg.ProjectionHead:
  """Each modality's projector (applied to the first half of its embedding)."""
  return simmmdg.ProjectionHead(hp.proj_hidden, hp.proj_out)


# ---------------------------------------------------------------- the train step's plug-in
def present(modalities: Sequence[str]) -> list[str]:
  """The modalities in ``ORDER`` (the script stacks its projector views so); one or more."""
  unknown = set(modalities) - set(ORDER)
  if unknown or not modalities:
    raise ConfigError(f'nel: modalities must be a non-empty subset of {ORDER}, got '
                      f'{tuple(modalities)}')
  return [m for m in ORDER if m in modalities]


def init(rng: jax.Array, dims: Mapping[str, int], modalities: Sequence[str],
         hp: Hparams = Hparams()):
  """The projectors (one per modality, on the first ``D_m // 2`` channels) and their BN
  statistics: ``({'proj': {m: params}}, {'proj': {m: batch_stats}})``."""
  ms = present(modalities)

  def _init(r):
    params, stats = {}, {}
    for i, m in enumerate(ms):
      v = projector(hp).init(jax.random.fold_in(r, i), jnp.zeros((2, dims[m] // 2)))
      params[m], stats[m] = v['params'], v['batch_stats']
    return {'proj': params}, {'proj': stats}
  return jax.jit(_init)(rng)


def project_views(params, state, feats: Mapping[str, jax.Array], modalities: Sequence[str],
                  hp: Hparams = Hparams()) -> tuple[jax.Array, dict]:
  """``[2B, M, out]`` projector outputs (modalities in ``ORDER``, BN in training mode) and the
  projectors' new statistics."""
  z, stats = [], {}
  for m in present(modalities):
    x = feats[m][:, :feats[m].shape[1] // 2]
    out, stats[m] = simmmdg.project(projector(hp), params['proj'][m], state['proj'][m], x,
                                    train=True)
    z.append(out)
  return jnp.stack(z, 1), {'proj': stats}


def _terms_ext(view: extensions.StepView, hp: Hparams):
  rows = view.labels.shape[0]
  if rows % 2:
    raise ValueError(f'nel: a training batch holds two views of each clip (2B rows), got '
                     f'{rows} rows: the loader was not built with the method\'s views')
  proj_z, new_state = project_views(view.params, view.state, view.feats, view.modalities, hp)
  terms, raw = loss_terms(proj_z, view.fused_logits, view.feats, view.labels, view.modalities,
                          hp)
  return terms, raw, new_state


def authors_recipe(dataset: str, modalities, target: str) -> dict | None:
  """``Extension.recipes``: the script's defaults, the same for every setting: 15 epochs (Adam
  with weight decay 1e-4, the shared recipe's; its cosine schedule is not reproduced)."""
  del modalities, target
  return {'epochs': 15} if dataset in ('epic', 'hac') else None


# Two views per clip; its own classification loss (the fused CE within Eq. 14's halving);
# features without LayerNorm, the heads' dropout on video/flow, as the benchmark's scripts.
EXTENSION = extensions.Extension(
    name='nel', hparams=Hparams(), init=init, terms=_terms_ext, classification='own',
    model=(('feature_norm', 'none'), ('feature_dropout', 0.5), ('uni_head', 'linear'),
           *baselines.SCRIPTS_NETWORKS),
    recipes=authors_recipe, views=2)
