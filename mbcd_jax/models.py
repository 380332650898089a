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

BatchNorm modes (``bn_mode``, see ``mbcd_jax/encoders/batchnorm.py``):
  'frozen'  every BN runs on its running statistics, which never change; they stay inside
            ``frozen`` (``batch_stats`` is None) and student and teacher share the trunk.
  'port'    as the reference's ``model.train(True)``: in training passes every BN (frozen
            layers included) normalises with batch statistics and the running statistics are
            updated (PyTorch's rule); they live outside ``frozen`` in ``batch_stats``, the
            teacher holds its own, and inference uses each network's own running statistics.
            (docs/method.md §6.1: what the reference does and why it decides real accuracy.)
``eval_trunks`` (the peers' scripts keep ``audio_model.eval()``): those modalities' trunks run
in inference mode in every pass whatever ``bn_mode``; their statistics stay inside ``frozen``,
never change, and student and teacher share the trunk and its output, as in 'frozen'.
:meth:`MultiModalModel.bn_trains` is the one place that decides a part's mode.

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

from mbcd_jax.encoders import batchnorm
from mbcd_jax.method import dsu as dsu_lib
from mbcd_jax import encoders as encoders_lib
from mbcd_jax import methods
from mbcd_jax.baselines import torch_init

PyTree = Any


def _dense_inits(init: str, fan_in: int) -> dict:
  """``nn.Dense`` initialisers: Flax's defaults or ``torch.nn.Linear``'s (``init='torch'``)."""
  return torch_init.linear_inits(fan_in) if init == 'torch' else {}


class Head(nn.Module):
  """Linear(d, hidden) -> ReLU -> Dropout -> Linear(hidden, classes), as the port's PredHead.

  ``param_init``: 'flax' (Flax's default initialisers) | 'torch' (``nn.Linear``'s, the
  peers')."""
  num_classes: int
  hidden: int = 512
  dropout: float = 0.5
  param_init: str = 'flax'

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.relu(nn.Dense(self.hidden, **_dense_inits(self.param_init, x.shape[-1]))(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, **_dense_inits(self.param_init, self.hidden))(x)


def layer_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Parameter-free LayerNorm over the last axis (the port never trains the affine params)."""
  mean = x.mean(-1, keepdims=True)
  var = jnp.square(x - mean).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


AUDIO_TAIL_INITS = methods.VARIANT_CHOICES['audio_tail_init']


@flax.struct.dataclass
class Weights:
  """Everything one network (the student or its teacher) holds; ``step.TrainState`` keeps one
  per network. What it contains depends on the BN mode, never its shape:

  Attributes:
    params: the trainable parameters (layout in the module docstring; a plug-in method's own
      under ``params['extra']``).
    frozen: the non-trained variables. A teacher's is None where it shares the student's
      (the 'frozen' BN mode: one copy of the frozen trunk, in memory and in checkpoints);
      ``step.weights`` resolves it before a forward pass.
    batch_stats: BN running statistics in the 'port' BN mode; None in the 'frozen' mode
      (they are part of ``frozen`` there).
    extra_state: a plug-in method's non-trained state (e.g. its projectors' BN statistics;
      ``mbcd_jax/extensions.py``), else None. :meth:`MultiModalModel.predict` does not read it.
  """
  params: PyTree
  frozen: PyTree | None
  batch_stats: PyTree | None = None
  extra_state: PyTree | None = None


def split_batch_stats(frozen: PyTree, eval_trunks: tuple[str, ...] = ()
                      ) -> tuple[PyTree, PyTree]:
  """``frozen`` with the BN running statistics inside -> ``(frozen without them, batch_stats)``.

  The trunks of ``eval_trunks`` keep theirs inside ``frozen`` (never updated, shared by student
  and teacher); their ``batch_stats`` entry is empty."""
  rest, stats = {'encoders': {}}, {'encoders': {}}
  for m, parts in frozen['encoders'].items():
    keep = lambda k: k == 'trunk' and m in eval_trunks   # pylint: disable=cell-var-from-loop
    rest['encoders'][m] = {k: {c: v for c, v in part.items() if c != 'batch_stats' or keep(k)}
                           for k, part in parts.items()}
    stats['encoders'][m] = {k: {} if keep(k) else part.get('batch_stats', {})
                            for k, part in parts.items()}
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
    dsu: DSU (``mbcd_jax/method/dsu.py``) on the trunk output and the last stage's output in
      training passes that ask for it (the step's first pass), with probability ``dsu_p``.
    eval_trunks: modalities whose trunk runs in inference mode in every pass (module
      docstring).
    param_init: 'flax' | 'torch': the heads' initialisers, and with 'torch' the audio stage drawn as
      VGGSound's ``AudioAttGenModule`` (``baselines/torch_init.py``; a loaded checkpoint
      replaces it).
    given_trunks: modalities whose batch entry is already their frozen trunk's output
      (``mbcd_jax/trunk_cache.py``); each must ``shares_trunk``.
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
  bn_mode: str = methods.MODEL_DEFAULTS['bn_mode']
  dsu: bool = False
  dsu_p: float = 0.5
  eval_trunks: tuple[str, ...] = ()
  param_init: str = 'flax'
  given_trunks: tuple[str, ...] = ()

  def __post_init__(self):
    bad = [m for m in self.given_trunks if m not in self.modalities or not self.shares_trunk(m)]
    if bad:
      raise ValueError(f'given_trunks {bad}: only the frozen trunks that student and teacher '
                       'share (BN on running statistics) can be given as precomputed outputs')

  @property
  def head(self) -> Head:
    return Head(self.num_classes, self.head_hidden, self.head_dropout, self.param_init)

  def uni_head_module(self, m: str) -> nn.Module:
    """Modality ``m``'s uni-modal head (``uni_head``: the MLP or one Linear)."""
    if self.uni_head == 'mlp':
      return self.head
    return nn.Dense(self.num_classes, **_dense_inits(self.param_init, self.feature_dims[m]))

  @property
  def trains_bn(self) -> bool:
    """Whether training passes run BN on batch statistics and update the running statistics
    (the 'port' BN mode; the state then carries them, ``step.make_state``)."""
    return self.bn_mode == batchnorm.PORT

  def bn_trains(self, m: str, part: str) -> bool:
    """Whether modality ``m``'s ``part`` ('trunk' | 'stage') runs its BN on batch statistics
    in training passes and updates its running statistics (else: running statistics, never
    updated, shared with the teacher)."""
    return self.trains_bn and not (part == 'trunk' and m in self.eval_trunks)

  @property
  def feature_dims(self) -> dict:
    """modality -> embedding width ``D_m``."""
    return {m: self.encoders[m].feature_dim for m in self.modalities}

  # ---------------------------------------------------------------- initialisation
  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array], *,
           loaded: frozenset = frozenset()) -> tuple[PyTree, PyTree]:
    """Initialises ``(params, frozen)`` from one (possibly tiny) example batch.

    ``loaded``: ``(modality, part)`` pairs ('trunk' | 'stage') whose variables the caller
    replaces by pretrained weights (``load_pretrained``): they get zeros of the right shapes
    instead of their initialisers, whose random draws are most of a paper-size init's compile
    time. Every other variable is exactly what a full init gives (each part's key is split
    off whether or not it is drawn).
    """
    params = {'encoders': {}, 'norms': {}, 'uni_heads': {}}
    frozen = {'encoders': {}}
    dims = 0
    for m in self.modalities:
      rng, r_t, r_s, r_h, r_n = jax.random.split(rng, 5)
      if self.trunk_seed >= 0:   # same trunk for every training seed (a stand-in checkpoint)
        # keyed by the name, so a modality subset (V+A) gets the same trunks as V+F+A
        r_t = jax.random.fold_in(jax.random.key(self.trunk_seed), zlib.crc32(m.encode()) >> 1)
      enc = self.encoders[m]
      # Variables only, from the inputs' shapes: lazy_init keeps just the initialisers of the
      # traced program (each variable's key comes from its path, not from the data), so the
      # jitted init never compiles the encoders' forward pass (minutes at the paper's sizes).
      x = jax.ShapeDtypeStruct(batch[m].shape, batch[m].dtype)
      trunk_vars = _init_part(enc.trunk, r_t, x, (m, 'trunk') in loaded)
      fmap = jax.eval_shape(enc.trunk.apply, trunk_vars, x)
      stage_vars = dict(_init_part(enc.stage, r_s, fmap, (m, 'stage') in loaded))
      trunk_vars = dict(trunk_vars)
      if self.param_init == 'torch' and m == 'audio':
        stage_vars['params'] = torch_init.vggsound_tail(r_s, stage_vars['params'])
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
      params['uni_heads'][m] = self.uni_head_module(m).init(r_h, jnp.zeros((1, d)),
                                                            **self._head_kwargs())['params']
      dims += d
    rng, r_f = jax.random.split(rng)
    params['fused_head'] = self.head.init(r_f, jnp.zeros((1, dims)), train=False)['params']
    return params, frozen

  def _head_kwargs(self, train: bool = False) -> dict:
    return {'train': train} if self.uni_head == 'mlp' else {}

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
    """``module.apply``; with ``train`` (a training pass of a part that ``bn_trains``) with BN
    on batch statistics. Returns ``(output, BN moments or None)``."""
    if train:
      y, mutated = module.apply(variables, x, mutable=[batchnorm.MOMENTS], **kwargs)
      return y, mutated.get(batchnorm.MOMENTS, {})
    return module.apply(variables, x, **kwargs), None

  def trunk_features(self, frozen: PyTree, batch: Mapping[str, jax.Array],
                     batch_stats: PyTree | None = None,
                     given: Mapping[str, jax.Array] | None = None) -> dict:
    """Runs the frozen trunks in inference mode. Returns modality -> trunk output (or the raw
    input when the trunk is trainable, in which case every pass runs it itself); the
    modalities in ``given`` take that output instead of running their trunk."""
    given = given or {}
    if all(m in given for m in self.modalities):
      return dict(given)
    feats = self._trunks(frozen, batch, batch_stats, train=False,
                         skip=tuple(given))[0]
    return {m: given[m] if m in given else feats[m] for m in self.modalities}

  def shares_trunk(self, m: str) -> bool:
    """Whether student and teacher share modality ``m``'s trunk (frozen, BN never trained:
    the teacher's trunk variables are the student's, so is its output)."""
    return self.freeze_trunk and not self.bn_trains(m, 'trunk')

  def shared_trunks(self, feats: Mapping[str, jax.Array]) -> dict:
    """The entries of the student's trunk outputs ``feats`` the teacher's pass reuses."""
    return {m: feats[m] for m in self.modalities if self.shares_trunk(m)}

  def shared_trunk_features(self, frozen: PyTree, batch: Mapping[str, jax.Array]) -> dict:
    """Inference-mode outputs of the shared trunks only (``shares_trunk``)."""
    skip = tuple(m for m in self.modalities if not self.shares_trunk(m))
    return self._trunks(frozen, batch, None, train=False, skip=skip)[0]

  def share_trunks(self, teacher_frozen: PyTree, frozen: PyTree) -> PyTree:
    """``teacher_frozen`` with the student's variables for the trunks of ``eval_trunks``
    (the authors' teacher runs the student's eval-mode trunk; a copy averaged with itself
    could differ from it in the last bit)."""
    if not self.eval_trunks:
      return teacher_frozen
    enc = dict(teacher_frozen['encoders'])
    for m in self.eval_trunks:
      enc[m] = {**enc[m], 'trunk': frozen['encoders'][m]['trunk']}
    return {**teacher_frozen, 'encoders': enc}

  def trunk_features_train(self, frozen: PyTree, batch: Mapping[str, jax.Array],
                           batch_stats: PyTree | None = None) -> tuple[dict, dict]:
    """The frozen trunks in training mode ('port': BN on batch statistics; 'frozen': as
    :meth:`trunk_features`). Returns (modality -> output, modality -> BN moments or None)."""
    return self._trunks(frozen, batch, batch_stats, train=True)

  def _trunks(self, frozen, batch, batch_stats, *, train, skip=()):
    feats, moments = {}, {}
    for m in self.modalities:
      if m in skip:
        continue
      x, mom = batch[m], None
      if m in self.given_trunks:
        x = jax.lax.stop_gradient(x)
      elif self.freeze_trunk:
        x, mom = self._apply(self.encoders[m].trunk,
                             self._variables(m, 'trunk', frozen, batch_stats), x,
                             train=train and self.bn_trains(m, 'trunk'))
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
          feats, train=train and self.bn_trains(m, 'trunk'))
    kwargs = {}
    if dsu_rng is not None:
      r_trunk, r_stage = jax.random.split(dsu_rng)
      feats = dsu_lib.apply(r_trunk, feats, self.dsu_p)
      kwargs['perturb'] = lambda y: dsu_lib.apply(r_stage, y, self.dsu_p)
    h, moments['stage'] = self._apply(
        enc.stage, self._variables(m, 'stage', frozen, batch_stats, enc_params['stage']),
        feats, train=train and self.bn_trains(m, 'stage'), **kwargs)
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
      feats: trunk outputs to reuse instead of running those trunks, for some or all
        modalities (only valid when they were computed from the same frozen variables:
        ``shared_trunks`` of the student's).
      with_features: also return the normalised encoder features.
    Returns:
      {'fused': ``[B, C]``, <modality>: ``[B, C]`` uni-modal logits}; with ``with_features``,
      (those logits, modality -> ``[B, D_m]`` features).
    """
    feats = self.trunk_features(weights.frozen, batch, weights.batch_stats, given=feats)
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
        out[m] = self.uni_head_module(m).apply({'params': head_params[m]}, h[m])
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


def _init_part(module: nn.Module, rng: jax.Array, x: jax.ShapeDtypeStruct, shapes_only: bool):
  """``module``'s variables for input ``x``: initialised, or zeros of their shapes."""
  if shapes_only:
    return jax.tree.map(lambda v: jnp.zeros(v.shape, v.dtype),
                        jax.eval_shape(module.init, rng, x))
  return module.lazy_init(rng, x)


def loaded_parts(model: MultiModalModel, model_config, method: str = 'mbcd') -> frozenset:
  """The ``(modality, part)`` pairs ``load_pretrained`` replaces for ``model_config``."""
  tail_init = methods.check_variant(
      methods.model_variant(model_config, method))['audio_tail_init']
  out = set()
  for m in model.modalities:
    if model_config.encoders[m].get('pretrained') or '':
      out.add((m, 'trunk'))
      if not (m == 'audio' and tail_init == 'random'):
        out.add((m, 'stage'))
  return frozenset(out)


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
  tail_init = methods.check_variant(
      methods.model_variant(model_config, method))['audio_tail_init']
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
  variant = methods.check_variant(methods.model_variant(model_config, method))
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
      bn_mode=variant['bn_mode'], dsu=variant['dsu'],
      dsu_p=float(model_config.get('dsu_p', 0.5)),
      eval_trunks=tuple(m for m in variant['eval_trunks'] if m in modalities),
      param_init=variant['param_init'])
