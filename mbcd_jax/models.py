"""The student: one encoder per modality, a feature norm, uni-modal heads and a fused head.

The model is a set of pure functions over explicit parameter pytrees (no module state), so the
train step can take gradients, inner-loop updates and EMA averages of any subset of them:

    params = {'encoders': {m: {'stage': ..., ['trunk': ...]}},   # trainable
              'norms': {m: ...},                                  # learnable LayerNorm (optional)
              'uni_heads': {m: ...}, 'fused_head': ...}
    frozen = {'encoders': {m: {'trunk': variables, 'stage': non-param collections}}}
    batch_stats = {'encoders': {m: {'trunk': ..., 'stage': ...}}}  # BN running statistics

With ``freeze_trunk`` (the paper's set-up), the trunk lives in ``frozen`` and its output is
computed once per step and shared by the student's passes.

BatchNorm modes (``bn_mode``, see ``mbcd_jax/batchnorm.py``):
  'frozen'  every BN runs on its running statistics, which never change; they stay inside
            ``frozen`` (``batch_stats`` is None) and student and teacher share the trunk.
  'port'    as the reference's ``model.train(True)``: in training passes every BN (frozen
            layers included) normalises with batch statistics and the running statistics are
            updated (PyTorch's rule); they live outside ``frozen`` in ``batch_stats``, the
            teacher holds its own, and inference uses each network's own running statistics.
            (docs/method.md §6.1: what the reference does and why it decides real accuracy.)

:class:`Weights` bundles what one network (student or teacher) reads; :meth:`predict` is the
one inference forward pass (trunk -> encoders -> feature norm -> heads).
"""
import dataclasses
import zlib
from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from mbcd_jax import batchnorm
from mbcd_jax import dsu as dsu_lib
from mbcd_jax import encoders as encoders_lib
from mbcd_jax import methods

PyTree = Any


class Head(nn.Module):
  """Linear(d, hidden) -> ReLU -> Dropout -> Linear(hidden, classes), as the port's PredHead."""
  num_classes: int
  hidden: int = 512
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.relu(nn.Dense(self.hidden)(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def layer_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Parameter-free LayerNorm over the last axis (the port never trains the affine params)."""
  mean = x.mean(-1, keepdims=True)
  var = jnp.square(x - mean).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


BN_MODES = ('frozen', 'port')
AUDIO_TAIL_INITS = ('pretrained', 'random')


@flax.struct.dataclass
class Weights:
  """Everything one network's forward pass reads (the student's or the EMA teacher's).

  Attributes:
    params: the trainable parameters (layout in the module docstring).
    frozen: the non-trained variables.
    batch_stats: BN running statistics in the 'port' BN mode; None in the 'frozen' mode
      (they are part of ``frozen`` there).
  """
  params: PyTree
  frozen: PyTree
  batch_stats: PyTree | None = None


def split_batch_stats(frozen: PyTree) -> tuple[PyTree, PyTree]:
  """``frozen`` with the BN running statistics inside -> ``(frozen without them, batch_stats)``."""
  rest, stats = {'encoders': {}}, {'encoders': {}}
  for m, parts in frozen['encoders'].items():
    rest['encoders'][m] = {k: {c: v for c, v in part.items() if c != 'batch_stats'}
                           for k, part in parts.items()}
    stats['encoders'][m] = {k: part.get('batch_stats', {}) for k, part in parts.items()}
  return rest, stats


def merge_batch_stats(frozen: PyTree, batch_stats: PyTree | None) -> PyTree:
  """Inverse of :func:`split_batch_stats` (``batch_stats=None``: ``frozen`` as it is)."""
  if batch_stats is None:
    return frozen
  out = {'encoders': {}}
  for m, parts in frozen['encoders'].items():
    out['encoders'][m] = {}
    for k, part in parts.items():
      stats = batch_stats['encoders'][m][k]
      out['encoders'][m][k] = {**part, **({'batch_stats': stats} if stats else {})}
  return out


@dataclasses.dataclass(frozen=True)
class MultiModalModel:
  """Functional wrapper around the per-modality encoders and the heads.

  Attributes:
    modalities: ordered modality names; the fused head sees their features concatenated in
      this order.
    encoders: modality -> EncoderDef.
    num_classes: number of classes C.
    head_hidden, head_dropout: the heads' hidden width and dropout rate.
    freeze_trunk: whether the trunk is frozen (paper) or trained with the stage.
    feature_norm: 'parameter_free' LayerNorm on every embedding (the MBCD port), 'learnable'
      (with scale/bias) or 'none' (the peers' baselines: the pooled feature as it is).
    feature_dropout: dropout on the video and flow embeddings in training passes (the
      mmaction heads' dropout, which the peers' code applies before every use of the
      pooled feature; the audio network has none); 0 = off (MBCD).
    uni_head: 'mlp' (Linear-ReLU-Dropout-Linear, the port's PredHead) | 'linear' (one Linear,
      the uni-modal classifiers of MOOSA and CMRF).
    trunk_seed: >= 0: trunks drawn from this seed, not from the init rng.
    bn_mode: 'frozen' | 'port' (module docstring).
    dsu: DSU (``mbcd_jax/dsu.py``) on the trunk output and the last stage's output in
      training passes that ask for it (the step's first pass), with probability ``dsu_p``.
  """
  modalities: tuple[str, ...]
  encoders: Mapping[str, encoders_lib.EncoderDef]
  num_classes: int
  head_hidden: int = 512
  head_dropout: float = 0.5
  freeze_trunk: bool = True
  feature_norm: str = 'parameter_free'
  feature_dropout: float = 0.0
  uni_head: str = 'mlp'
  trunk_seed: int = -1
  bn_mode: str = 'frozen'
  dsu: bool = False
  dsu_p: float = 0.5

  @property
  def head(self) -> Head:
    return Head(self.num_classes, self.head_hidden, self.head_dropout)

  @property
  def uni_head_module(self) -> nn.Module:
    return self.head if self.uni_head == 'mlp' else nn.Dense(self.num_classes)

  @property
  def feature_dims(self) -> dict:
    """modality -> embedding width ``D_m``."""
    return {m: self.encoders[m].feature_dim for m in self.modalities}

  # ---------------------------------------------------------------- initialisation
  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> tuple[PyTree, PyTree]:
    """Initialises ``(params, frozen)`` from one (possibly tiny) example batch."""
    params = {'encoders': {}, 'norms': {}, 'uni_heads': {}}
    frozen = {'encoders': {}}
    dims = 0
    for m in self.modalities:
      rng, r_t, r_s, r_h, r_n = jax.random.split(rng, 5)
      if self.trunk_seed >= 0:   # same trunk for every training seed (a stand-in checkpoint)
        # keyed by the name, so a modality subset (V+A) gets the same trunks as V+F+A
        r_t = jax.random.fold_in(jax.random.key(self.trunk_seed), zlib.crc32(m.encode()) >> 1)
      enc = self.encoders[m]
      trunk_vars = enc.trunk.init(r_t, batch[m])
      fmap = enc.trunk.apply(trunk_vars, batch[m])
      stage_vars = dict(enc.stage.init(r_s, fmap))
      trunk_vars = dict(trunk_vars)
      trainable = {'stage': stage_vars.pop('params')}
      frozen_m = {'stage': stage_vars}
      if self.freeze_trunk:
        frozen_m['trunk'] = trunk_vars
      else:
        trainable['trunk'] = trunk_vars.pop('params')
        frozen_m['trunk'] = trunk_vars
      params['encoders'][m] = trainable
      frozen['encoders'][m] = frozen_m
      d = enc.feature_dim
      if self.feature_norm == 'learnable':
        params['norms'][m] = {'scale': jnp.ones((d,)), 'bias': jnp.zeros((d,))}
      params['uni_heads'][m] = self._uni_apply_init(r_h, d)
      dims += d
    rng, r_f = jax.random.split(rng)
    params['fused_head'] = self.head.init(r_f, jnp.zeros((1, dims)), train=False)['params']
    return params, frozen

  def _uni_apply_init(self, rng, d):
    x = jnp.zeros((1, d))
    if self.uni_head == 'mlp':
      return self.head.init(rng, x, train=False)['params']
    return self.uni_head_module.init(rng, x)['params']

  # ---------------------------------------------------------------- forward pieces
  def _variables(self, m: str, part: str, frozen: PyTree, batch_stats: PyTree | None,
                 params: PyTree | None = None) -> dict:
    """Flax variables of modality ``m``'s ``part`` ('trunk' | 'stage')."""
    v = dict(frozen['encoders'][m][part])
    if batch_stats is not None and batch_stats['encoders'][m][part]:
      v['batch_stats'] = batch_stats['encoders'][m][part]
    if params is not None:
      v['params'] = params
    return v

  def _apply(self, module: nn.Module, variables: dict, x, *, train: bool, **kwargs):
    """``module.apply``; in a 'port' training pass with BN on batch statistics. Returns
    ``(output, BN moments or None)``."""
    if train and self.bn_mode == 'port':
      y, mutated = module.apply(variables, x, mutable=[batchnorm.MOMENTS], **kwargs)
      return y, mutated.get(batchnorm.MOMENTS, {})
    return module.apply(variables, x, **kwargs), None

  def trunk_features(self, frozen: PyTree, batch: Mapping[str, jax.Array],
                     batch_stats: PyTree | None = None) -> dict:
    """Runs the frozen trunks in inference mode. Returns modality -> trunk output (or the raw
    input when the trunk is trainable, in which case every pass runs it itself)."""
    return self._trunks(frozen, batch, batch_stats, train=False)[0]

  def trunk_features_train(self, frozen: PyTree, batch: Mapping[str, jax.Array],
                           batch_stats: PyTree | None = None) -> tuple[dict, dict]:
    """The frozen trunks in training mode ('port': BN on batch statistics; 'frozen': as
    :meth:`trunk_features`). Returns (modality -> output, modality -> BN moments or None)."""
    return self._trunks(frozen, batch, batch_stats, train=True)

  def _trunks(self, frozen, batch, batch_stats, *, train):
    feats, moments = {}, {}
    for m in self.modalities:
      x, mom = batch[m], None
      if self.freeze_trunk:
        x, mom = self._apply(self.encoders[m].trunk,
                             self._variables(m, 'trunk', frozen, batch_stats), x, train=train)
        x = jax.lax.stop_gradient(x)
      feats[m], moments[m] = x, mom
    return feats, moments

  def _encode(self, m, enc_params, norm_params, frozen, feats, batch_stats, *, train,
              dsu_rng=None, dropout_rng=None):
    """Trainable part of modality ``m``'s encoder + feature norm -> (``[B, D_m]``, moments).

    ``dropout_rng`` (training passes, ``feature_dropout > 0``): the embedding dropout of video
    and flow."""
    enc = self.encoders[m]
    moments = {}
    if not self.freeze_trunk:
      feats, moments['trunk'] = self._apply(
          enc.trunk, self._variables(m, 'trunk', frozen, batch_stats, enc_params['trunk']),
          feats, train=train)
    kwargs = {}
    if dsu_rng is not None:
      r_trunk, r_stage = jax.random.split(dsu_rng)
      feats = dsu_lib.apply(r_trunk, feats, self.dsu_p)
      kwargs['perturb'] = lambda y: dsu_lib.apply(r_stage, y, self.dsu_p)
    h, moments['stage'] = self._apply(
        enc.stage, self._variables(m, 'stage', frozen, batch_stats, enc_params['stage']),
        feats, train=train, **kwargs)
    if self.feature_norm != 'none':
      h = layer_norm(h)
    if norm_params is not None:
      h = h * norm_params['scale'] + norm_params['bias']
    if dropout_rng is not None and self.feature_dropout > 0 and m != 'audio':
      keep = jax.random.bernoulli(dropout_rng, 1.0 - self.feature_dropout, h.shape)
      h = jnp.where(keep, h / (1.0 - self.feature_dropout), 0.0).astype(h.dtype)
    return h, moments

  def encode(self, m: str, enc_params: PyTree, norm_params: PyTree | None, frozen: PyTree,
             feats: jax.Array, batch_stats: PyTree | None = None) -> jax.Array:
    """Trainable part of modality ``m``'s encoder + feature norm, inference mode.
    Returns ``[B, D_m]``."""
    return self._encode(m, enc_params, norm_params, frozen, feats, batch_stats,
                        train=False)[0]

  def encode_all(self, enc_params: PyTree, norm_params: PyTree, frozen: PyTree,
                 feats: Mapping[str, jax.Array], batch_stats: PyTree | None = None) -> dict:
    """``encode`` for every modality: modality -> ``[B, D_m]``."""
    return {m: self.encode(m, enc_params[m], norm_params.get(m), frozen, feats[m], batch_stats)
            for m in self.modalities}

  def encode_all_train(self, enc_params: PyTree, norm_params: PyTree, frozen: PyTree,
                       feats: Mapping[str, jax.Array], batch_stats: PyTree | None = None, *,
                       dsu_rng: jax.Array | None = None,
                       dropout_rng: jax.Array | None = None) -> tuple[dict, dict]:
    """A training pass of every modality's trainable part.

    'port' BN mode: BN on batch statistics. ``dsu_rng`` (with ``self.dsu``): DSU on the trunk
    output and on the last stage's output (independent draws per modality and site).
    ``dropout_rng`` (with ``self.feature_dropout``): the video/flow embedding dropout.

    Returns:
      (modality -> ``[B, D_m]``, modality -> {'stage': BN moments[, 'trunk': ...]}; the
      moments are None in the 'frozen' BN mode).
    """
    h, moments = {}, {}
    for i, m in enumerate(self.modalities):
      r = jax.random.fold_in(dsu_rng, i) if (self.dsu and dsu_rng is not None) else None
      rd = (jax.random.fold_in(dropout_rng, i)
            if (self.feature_dropout > 0 and dropout_rng is not None) else None)
      h[m], moments[m] = self._encode(m, enc_params[m], norm_params.get(m), frozen, feats[m],
                                      batch_stats, train=True, dsu_rng=r, dropout_rng=rd)
    return h, moments

  def predict(self, weights: Weights, batch: Mapping[str, jax.Array], *,
              keep: Mapping[str, jax.Array] | None = None,
              feats: Mapping[str, jax.Array] | None = None, with_features: bool = False):
    """The inference forward pass: trunk -> encoders -> feature norm -> heads.

    No dropout, no DSU, BN on ``weights``' running statistics. Used by the teacher in the
    train step, by the eval step and by analysis code.

    Args:
      weights: the network (``step.weights(state, 'student' | 'teacher')``).
      batch: modality -> ``[B, ...]`` inputs.
      keep: optional modality -> ``[B]`` 0/1 masks on the fused head's inputs.
      feats: trunk outputs to reuse instead of running the trunks (only valid when they were
        computed from the same frozen variables, e.g. student and teacher in 'frozen' mode).
      with_features: also return the normalised encoder features.
    Returns:
      {'fused': ``[B, C]``, <modality>: ``[B, C]`` uni-modal logits}; with ``with_features``,
      (those logits, modality -> ``[B, D_m]`` features).
    """
    if feats is None:
      feats = self.trunk_features(weights.frozen, batch, weights.batch_stats)
    p = weights.params
    h = self.encode_all(p['encoders'], p['norms'], weights.frozen, feats, weights.batch_stats)
    out = {'fused': self.fused_logits(p['fused_head'], h, keep, train=False)}
    out.update(self.uni_logits(p['uni_heads'], h, train=False))
    return (out, h) if with_features else out

  def uni_logits(self, head_params: PyTree, h: Mapping[str, jax.Array], *, train: bool,
                 rng: jax.Array | None = None) -> dict:
    """Uni-modal heads: modality -> ``[B, C]`` logits."""
    out = {}
    for i, m in enumerate(self.modalities):
      if self.uni_head == 'linear':
        out[m] = self.uni_head_module.apply({'params': head_params[m]}, h[m])
        continue
      rngs = {'dropout': jax.random.fold_in(rng, i)} if train else None
      out[m] = self.head.apply({'params': head_params[m]}, h[m], train=train, rngs=rngs)
    return out

  def fused_logits(self, head_params: PyTree, h: Mapping[str, jax.Array],
                   keep: Mapping[str, jax.Array] | None = None, *, train: bool,
                   rng: jax.Array | None = None) -> jax.Array:
    """Fused head on the concatenated (optionally AMD-masked) features. Returns ``[B, C]``.

    Args:
      keep: modality -> ``[B]`` 0/1 mask multiplying that modality's feature (no 1/(1-p)
        rescaling, as the port); ``None`` keeps everything.
    """
    parts = []
    for m in self.modalities:
      x = h[m]
      if keep is not None:
        x = x * keep[m][:, None].astype(x.dtype)
      parts.append(x)
    rngs = {'dropout': rng} if train else None
    return self.head.apply({'params': head_params}, jnp.concatenate(parts, -1), train=train,
                           rngs=rngs)


def load_pretrained(model: MultiModalModel, model_config, params: PyTree,
                    frozen: PyTree, method: str = 'mbcd') -> tuple[PyTree, PyTree]:
  """Replaces freshly initialised encoder variables by converted pretrained weights.

  For every modality whose ``config.model.encoders[m].pretrained`` names a file written by
  ``python -m mbcd_jax.encoders.convert``: the trunk variables and the stage's frozen
  collections (BN statistics) go to ``frozen``, the stage parameters to ``params``. Runs on the
  host, outside jit, so the weights never become compile-time constants.

  ``config.model.audio_tail_init='random'`` keeps the audio stage (layer4: parameters and BN
  statistics) at its random initialisation while the audio trunk is loaded: the SimMMDG-style
  baselines' audio tail never receives the checkpoint (their loader matches none of its keys),
  whereas the MBCD reference trains the pretrained layer4 ('pretrained', the default).

  Args:
    frozen: the non-trained variables *with* the BN statistics inside (``merge_batch_stats``).
  """
  params = jax.tree.map(lambda x: x, params)      # copies of the containers, not the arrays
  frozen = jax.tree.map(lambda x: x, frozen)
  tail_init = methods.model_variant(model_config, method)['audio_tail_init']
  if tail_init not in AUDIO_TAIL_INITS:
    raise ValueError(f'config.model.audio_tail_init must be one of {AUDIO_TAIL_INITS}, got '
                     f'{tail_init!r}')
  for m in model.modalities:
    ec = model_config.encoders[m]
    path = ec.get('pretrained') or ''
    if not path:
      continue
    from mbcd_jax.encoders import convert  # pylint: disable=g-import-not-at-top
    kwargs = {k: v for k, v in ec.items() if k not in ('name', 'pretrained')}
    trunk_vars, stage_vars = convert.load_pretrained(ec.name, path, modality=m, **kwargs)
    stage_vars = dict(stage_vars)
    stage_params = stage_vars.pop('params')
    if model.freeze_trunk:
      frozen['encoders'][m]['trunk'] = trunk_vars
    else:
      trunk_vars = dict(trunk_vars)
      params['encoders'][m]['trunk'] = trunk_vars.pop('params')
      frozen['encoders'][m]['trunk'] = trunk_vars
    if m == 'audio' and tail_init == 'random':
      continue
    params['encoders'][m]['stage'] = stage_params
    frozen['encoders'][m]['stage'] = stage_vars
  return params, frozen


def build_model(model_config, modalities: tuple[str, ...], num_classes: int,
                method: str = 'mbcd') -> MultiModalModel:
  """Builds the model from ``config.model`` (see ``mbcd_jax/config_lib.py``); the model-variant
  keys left unset take method ``method``'s values (``methods.model_variant``)."""
  variant = methods.model_variant(model_config, method)
  bn_mode = model_config.get('bn_mode', 'frozen')
  if bn_mode not in BN_MODES:
    raise ValueError(f'config.model.bn_mode must be one of {BN_MODES}, got {bn_mode!r}')
  encs = {}
  for m in modalities:
    ec = model_config.encoders[m]
    kwargs = ec.to_dict() if hasattr(ec, 'to_dict') else dict(ec)
    name = kwargs.pop('name')
    kwargs.pop('pretrained', None)
    encs[m] = encoders_lib.build(name, kwargs)
  return MultiModalModel(
      modalities=tuple(modalities), encoders=encs, num_classes=num_classes,
      head_hidden=model_config.head_hidden, head_dropout=model_config.head_dropout,
      freeze_trunk=model_config.freeze_trunk,
      feature_norm=variant['feature_norm'],
      feature_dropout=float(variant['feature_dropout']),
      uni_head=variant['uni_head'],
      trunk_seed=int(model_config.get('trunk_seed', -1)),
      bn_mode=bn_mode, dsu=bool(model_config.get('dsu', False)),
      dsu_p=float(model_config.get('dsu_p', 0.5)))
