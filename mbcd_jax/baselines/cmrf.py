"""CMRF, cross-modal representation flattening (Fan et al., NeurIPS 2024), as its code runs.

The README commands (``--vanilla_learning --DG_algorithm naive --SMA --CM_mixup --contrast
--distill``) train with, per step:

1. ``ce_fused``: CE of the fused head (weight 1).
2. ``ce_uni``: ``mix_coef * sum_m w_m CE(uni_m)``, w = 1 for video and flow, 1/2 for audio.
3. ``supcon``: a projector per modality on the *whole* embedding (SimMMDG's projector,
   L2-normalised output), SupCon over the modalities as views, times ``alpha_contrast``.
4. ``distill``: a simple-moving-average (SMA) teacher -- the uniform average of the student's
   weights since ``sma_start_step`` -- embeds the batch in eval mode and projects it with its
   own averaged projectors. For every pair of modalities (a, b) the teacher projections are
   mixed per sample, ``t_a = l1 P_a + (1 - l1) P_b`` with l1 in (0.5, 1] and
   ``t_b = l2 P_a + (1 - l2) P_b`` with l2 in [0, 0.5), l ~ Beta(mix_alpha, mix_alpha)
   (the authors resample until l lands on the right side of 1/2; folding one draw about 1/2 has
   the same law). Each student projection is pulled to its (L2-normalised, stop-gradient)
   targets: ``mean_b ||n(t_m) - n(s_m)||_2``, weight w_m (1/2 for audio), summed over pairs,
   times ``distill_coef``; only once the step index passes ``sma_start_step``.

SMA (``sma_init``/``sma_update``): the teacher copies the student after every step up to
``sma_start_step``; afterwards it is the running mean of the student states since then. It
covers every entry of the student's state dicts -- trained last stages and heads, the frozen
weights (a no-op) and BatchNorm running statistics -- and the projectors and fused head.

Where the code is more specific than the paper (we follow the code): the paper assigns
distinct weights to the modalities according to their generalization ability; the code fixes
them (1/2 for audio, 1 otherwise) in both the uni-modal CE and the distillation. The teacher is
a uniform average from a fixed step (not an EMA). The per-projection classifiers the code
creates (``*_proj_m_cls``) never enter a loss (no gradient, no effect) and are left out here.
On HAC its heads keep 8 outputs for 7 classes. It logs the student's accuracy (model
selection uses it), the SMA teacher's, and both with uni-modal and fused logits averaged.

Inputs the train step must provide (see ``loss_terms``):
  * ``feats``: modality -> ``[B, D_m]`` student embeddings (authors: pooled last-stage output
    after the head's dropout(0.5) for video/flow; audio tail output for audio), which also
    feed the uni-modal classifier (a single Linear in the authors' code) and the fused head.
  * ``uni_logits`` modality -> ``[B, C]``; ``fused_logits`` ``[B, C]``.
  * ``teacher_feats``: modality -> ``[B, D_m]`` the SMA teacher's embeddings of the same batch,
    eval mode (running BN statistics of the averaged encoder, no dropout). Audio: the frozen
    trunk's output through the teacher's audio tail.
  * the projectors' params/BN statistics (``init``) and the teacher's SMA copies of them;
    ``step`` (0-based index of this optimizer step); ``labels`` ``[B]``; one PRNG key.
The step must not add its own CE: terms 1-2 are the method's classification loss.
"""
import dataclasses
import itertools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from mbcd_jax import baselines
from mbcd_jax import extensions
from mbcd_jax.method import losses
from mbcd_jax.baselines import simmmdg

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Config:
  """CMRF's coefficients as every README command sets them (EPIC: sma_start_step 400;
  HAC: 100). All README runs: lr 1e-4, batch 16, 15 epochs."""
  mix_alpha: float = 0.1            # Beta(a, a) of the teacher mixup
  mix_coef: float = 2.0             # uni-modal CE weight
  distill_coef: float = 3.0
  alpha_contrast: float = 3.0       # SupCon weight (argparse default)
  temperature: float = 0.1          # SupCon temperature
  base_temperature: float = 0.07
  sma_start_step: int = 400         # EPIC 400, HAC 100
  # Set instead of sma_start_step (None): that share of the run's steps, resolved by
  # config_lib.derive_from_length (the embedded benchmark's 10%).
  sma_start_percent: int | None = None
  proj_hidden: int = 2048
  proj_out: int = 128
  audio_weight: float = 0.5         # the authors' 1/2 on audio's CE and distillation terms


# The README commands: 15 epochs everywhere; the SMA teacher starts averaging at this step.
AUTHORS_SMA_START_STEP = {'epic': 400, 'hac': 100}


def authors_recipe(dataset: str, modalities: Sequence[str], target: str) -> dict | None:
  """``Extension.recipes``: per dataset (the same for every modality set and target)."""
  del modalities, target
  if dataset not in AUTHORS_SMA_START_STEP:
    return None
  return {'epochs': 15, 'sma_start_step': AUTHORS_SMA_START_STEP[dataset]}


def authors_pairs(modalities: Sequence[str]) -> list[tuple[str, str]]:
  """The mixed pairs in the authors' order (it decides which draw goes to which pair):
  (video, flow), (video, audio), (flow, audio), restricted to the modalities present."""
  return list(itertools.combinations(baselines.present(modalities, 'cmrf'), 2))


def modality_weight(m: str, cfg: Config) -> float:
  return cfg.audio_weight if m == 'audio' else 1.0


def init(rng: jax.Array, dims: Mapping[str, int], cfg: Config = Config()
         ) -> tuple[PyTree, PyTree]:
  """The projectors: ``(params, batch_stats)``, each ``{'proj': {m: ...}}``."""
  return jax.jit(lambda r: _init(r, dict(dims), cfg))(rng)   # one compile, not eager inits


def _init(rng, dims, cfg):
  params, stats = {'proj': {}}, {'proj': {}}
  for i, (m, d) in enumerate(dims.items()):
    v = simmmdg.ProjectionHead(cfg.proj_hidden, cfg.proj_out).init(
        jax.random.fold_in(rng, i), jnp.zeros((2, d)))
    params['proj'][m] = v['params']
    stats['proj'][m] = v['batch_stats']
  return params, stats


# ---------------------------------------------------------------------------- SMA teacher
def sma_init(student: PyTree) -> PyTree:
  """The teacher starts as the student (the authors' deepcopy before training)."""
  return student


def sma_update(teacher: PyTree, student: PyTree, step, start_step: int) -> PyTree:
  """After optimizer step ``step`` (0-based): a copy of the student while
  ``step < start_step``; then ``(n * teacher + student) / (n + 1)`` with
  ``n = step + 1 - start_step``, i.e. the mean of the student states after steps
  ``start_step - 1, ..., step``. Jittable in ``step``. Integer leaves take the student's."""
  n = jnp.asarray(step, jnp.float32) + 1.0 - start_step

  def one(t, s):
    if not jnp.issubdtype(jnp.asarray(s).dtype, jnp.floating):
      return s
    nn_ = n.astype(s.dtype)
    return jnp.where(n > 0, (t * nn_ + s) / (nn_ + 1), s)
  return jax.tree.map(one, teacher, student)


# ---------------------------------------------------------------------------- the method
def draw(rng: jax.Array, batch: int, modalities: Sequence[str], cfg: Config = Config()) -> dict:
  """Mixup coefficients per pair: ``{'a+b': ([B] in (0.5, 1], [B] in [0, 0.5))}``."""
  out = {}
  for i, (a, b) in enumerate(authors_pairs(modalities)):
    r1, r2 = jax.random.split(jax.random.fold_in(rng, i))
    hi = 0.5 + jnp.abs(jax.random.beta(r1, cfg.mix_alpha, cfg.mix_alpha, (batch,)) - 0.5)
    lo = 0.5 - jnp.abs(jax.random.beta(r2, cfg.mix_alpha, cfg.mix_alpha, (batch,)) - 0.5)
    out[f'{a}+{b}'] = (hi, lo)
  return out


def loss_terms_given(params: PyTree, batch_stats: PyTree, feats: Mapping[str, jax.Array],
                     uni_logits: Mapping[str, jax.Array], fused_logits: jax.Array,
                     labels: jax.Array, draws: dict, *, modalities: Sequence[str],
                     teacher_params: PyTree,
                     teacher_batch_stats: PyTree, teacher_feats: Mapping[str, jax.Array],
                     step, cfg: Config = Config()) -> tuple[dict, dict]:
  """``loss_terms`` with explicit mixup coefficients (see ``draw``)."""
  mods = list(modalities)
  ce_fused = losses.cross_entropy(fused_logits, labels)
  ce_uni = sum(modality_weight(m, cfg) * losses.cross_entropy(uni_logits[m], labels)
               for m in mods)

  head = simmmdg.ProjectionHead(cfg.proj_hidden, cfg.proj_out)
  student, new_stats = {}, {}
  for m in mods:
    student[m], new_stats[m] = simmmdg.project(head, params['proj'][m], batch_stats['proj'][m],
                                               feats[m], train=True)
  con = simmmdg.supcon_loss(jnp.stack([student[m] for m in mods], 1), labels, cfg.temperature,
                            cfg.base_temperature)

  teacher = {m: jax.lax.stop_gradient(simmmdg.project(
      head, teacher_params['proj'][m], teacher_batch_stats['proj'][m], teacher_feats[m],
      train=False)[0]) for m in mods}
  distill = 0.0
  for a, b in authors_pairs(mods):
    hi, lo = draws[f'{a}+{b}']
    t_a = hi[:, None] * teacher[a] + (1 - hi[:, None]) * teacher[b]
    t_b = lo[:, None] * teacher[a] + (1 - lo[:, None]) * teacher[b]
    for m, t in ((a, t_a), (b, t_b)):
      distill = distill + modality_weight(m, cfg) * simmmdg.translation_loss(student[m], t)
  active = jnp.asarray(step) >= cfg.sma_start_step
  distill = jnp.where(active, distill, 0.0)

  raw = {'ce_fused': ce_fused, 'ce_uni': ce_uni, 'supcon': con, 'distill': distill}
  terms = {'ce_fused': ce_fused, 'ce_uni': cfg.mix_coef * ce_uni,
           'supcon': cfg.alpha_contrast * con, 'distill': cfg.distill_coef * distill}
  return terms, {'raw': raw, 'batch_stats': {'proj': new_stats}, 'distill_active': active}


def loss_terms(params: PyTree, batch_stats: PyTree, feats: Mapping[str, jax.Array],
               uni_logits: Mapping[str, jax.Array], fused_logits: jax.Array,
               labels: jax.Array, rng: jax.Array, *, modalities: Sequence[str],
               teacher_params: PyTree,
               teacher_batch_stats: PyTree, teacher_feats: Mapping[str, jax.Array],
               step, cfg: Config = Config()) -> tuple[dict, dict]:
  """CMRF's loss for one training step.

  Args:
    params, batch_stats: the student's projectors (``init``).
    feats: modality -> ``[B, D_m]`` student embeddings.
    uni_logits: modality -> ``[B, C]``; fused_logits: ``[B, C]``.
    labels: ``[B]`` int.
    rng: key for the mixup coefficients.
    modalities: the modalities present (the SupCon view order; the loss does not depend on
      it).
    teacher_params, teacher_batch_stats: the SMA teacher's projectors.
    teacher_feats: modality -> ``[B, D_m]`` the SMA teacher's embeddings (eval mode).
    step: 0-based index of this optimizer step (int or traced scalar); distillation is on
      from ``step == cfg.sma_start_step`` (the authors' 1-based ``global_step > start``).
  Returns:
    ``(terms, aux)``: 'ce_fused', 'ce_uni', 'supcon', 'distill' already weighted (their sum is
    the loss); ``aux``: unweighted values ('raw'), the projectors' updated 'batch_stats' and
    'distill_active'.
  """
  draws = draw(rng, labels.shape[0], modalities, cfg)
  return loss_terms_given(params, batch_stats, feats, uni_logits, fused_logits, labels, draws,
                          modalities=modalities,
                          teacher_params=teacher_params, teacher_batch_stats=teacher_batch_stats,
                          teacher_feats=teacher_feats, step=step, cfg=cfg)


# ---------------------------------------------------------------- the train step's plug-in
def _init_ext(rng, dims, modalities, cfg):
  return init(rng, {m: dims[m] for m in modalities}, cfg)


def _terms_ext(view, cfg):
  t = view.teacher
  terms, aux = loss_terms(view.params, view.state, view.feats, view.uni_logits,
                          view.fused_logits, view.labels, view.rng,
                          modalities=tuple(view.modalities), teacher_params=t.params,
                          teacher_batch_stats=t.state, teacher_feats=t.feats, step=view.step,
                          cfg=cfg)
  return terms, aux['raw'], aux['batch_stats']


def _teacher_update(teacher, student, step, cfg):
  return sma_update(teacher, student, step, cfg.sma_start_step)


# CE of the fused and (weighted) uni-modal Linear heads are among its terms; the SMA teacher
# averages the whole student; model selection and the reported model are the student's.
EXTENSION = extensions.Extension(
    name='cmrf', hparams=Config(), init=_init_ext, terms=_terms_ext, classification='own',
    model=(('feature_norm', 'none'), ('feature_dropout', 0.5), ('uni_head', 'linear'),
           *baselines.SCRIPTS_NETWORKS),
    teacher='sma', teacher_update=_teacher_update, evaluated='student',
    recipes=authors_recipe)
