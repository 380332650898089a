"""The student: one encoder per modality, a feature norm, uni-modal heads and a fused head.

The model is a set of pure functions over explicit parameter pytrees (no module state), so the
train step can take gradients, inner-loop updates and EMA averages of any subset of them:

    params = {'encoders': {m: {'stage': ..., ['trunk': ...]}},   # trainable
              'norms': {m: ...},                                  # learnable LayerNorm (optional)
              'uni_heads': {m: ...}, 'fused_head': ...}
    frozen = {'encoders': {m: {'trunk': variables, 'stage': non-param collections}}}

With ``freeze_trunk`` (the paper's set-up), the trunk lives in ``frozen`` and its output is
computed once per step and shared by every student pass and the teacher.
"""
import dataclasses
import zlib
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mbcd_jax import encoders as encoders_lib

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
    learnable_norm: LayerNorm with a learnable scale/bias instead of the parameter-free one.
  """
  modalities: tuple[str, ...]
  encoders: Mapping[str, encoders_lib.EncoderDef]
  num_classes: int
  head_hidden: int = 512
  head_dropout: float = 0.5
  freeze_trunk: bool = True
  learnable_norm: bool = False
  trunk_seed: int = -1      # >= 0: trunks drawn from this seed, not the init rng

  @property
  def head(self) -> Head:
    return Head(self.num_classes, self.head_hidden, self.head_dropout)

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
      if self.learnable_norm:
        params['norms'][m] = {'scale': jnp.ones((d,)), 'bias': jnp.zeros((d,))}
      params['uni_heads'][m] = self.head.init(r_h, jnp.zeros((1, d)), train=False)['params']
      dims += d
    rng, r_f = jax.random.split(rng)
    params['fused_head'] = self.head.init(r_f, jnp.zeros((1, dims)), train=False)['params']
    return params, frozen

  # ---------------------------------------------------------------- forward pieces
  def trunk_features(self, frozen: PyTree, batch: Mapping[str, jax.Array]) -> dict:
    """Runs the frozen trunks once. Returns modality -> trunk output (or the raw input when
    the trunk is trainable, in which case every pass runs it itself)."""
    out = {}
    for m in self.modalities:
      x = batch[m]
      if self.freeze_trunk:
        x = jax.lax.stop_gradient(self.encoders[m].trunk.apply(frozen['encoders'][m]['trunk'], x))
      out[m] = x
    return out

  def encode(self, m: str, enc_params: PyTree, norm_params: PyTree | None, frozen: PyTree,
             feats: jax.Array) -> jax.Array:
    """Trainable part of modality ``m``'s encoder + feature norm. Returns ``[B, D_m]``."""
    enc = self.encoders[m]
    fz = frozen['encoders'][m]
    if not self.freeze_trunk:
      feats = enc.trunk.apply({**fz['trunk'], 'params': enc_params['trunk']}, feats)
    h = enc.stage.apply({**fz['stage'], 'params': enc_params['stage']}, feats)
    h = layer_norm(h)
    if norm_params is not None:
      h = h * norm_params['scale'] + norm_params['bias']
    return h

  def encode_all(self, enc_params: PyTree, norm_params: PyTree, frozen: PyTree,
                 feats: Mapping[str, jax.Array]) -> dict:
    """``encode`` for every modality: modality -> ``[B, D_m]``."""
    return {m: self.encode(m, enc_params[m], norm_params.get(m), frozen, feats[m])
            for m in self.modalities}

  def uni_logits(self, head_params: PyTree, h: Mapping[str, jax.Array], *, train: bool,
                 rng: jax.Array | None = None) -> dict:
    """Uni-modal heads: modality -> ``[B, C]`` logits."""
    out = {}
    for i, m in enumerate(self.modalities):
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
                    frozen: PyTree) -> tuple[PyTree, PyTree]:
  """Replaces freshly initialised encoder variables by converted pretrained weights.

  For every modality whose ``config.model.encoders[m].pretrained`` names a file written by
  ``python -m mbcd_jax.encoders.convert``: the trunk variables and the stage's frozen
  collections (BN statistics) go to ``frozen``, the stage parameters to ``params``. Runs on the
  host, outside jit, so the weights never become compile-time constants.
  """
  params = jax.tree.map(lambda x: x, params)      # copies of the containers, not the arrays
  frozen = jax.tree.map(lambda x: x, frozen)
  for m in model.modalities:
    ec = model_config.encoders[m]
    path = ec.get('pretrained') or ''
    if not path:
      continue
    from mbcd_jax.encoders import convert  # pylint: disable=g-import-not-at-top
    kwargs = {k: v for k, v in ec.items() if k not in ('name', 'pretrained')}
    trunk_vars, stage_vars = convert.load_pretrained(ec.name, path, **kwargs)
    stage_vars = dict(stage_vars)
    stage_params = stage_vars.pop('params')
    if model.freeze_trunk:
      frozen['encoders'][m]['trunk'] = trunk_vars
    else:
      trunk_vars = dict(trunk_vars)
      params['encoders'][m]['trunk'] = trunk_vars.pop('params')
      frozen['encoders'][m]['trunk'] = trunk_vars
    params['encoders'][m]['stage'] = stage_params
    frozen['encoders'][m]['stage'] = stage_vars
  return params, frozen


def build_model(model_config, modalities: tuple[str, ...], num_classes: int) -> MultiModalModel:
  """Builds the model from ``config.model`` (see ``configs/common.py``)."""
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
      learnable_norm=model_config.feature_norm == 'learnable',
      trunk_seed=int(model_config.get('trunk_seed', -1)))
