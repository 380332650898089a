"""Per-modality encoders behind one interface: a frozen trunk and a trainable last stage.

Every encoder is an :class:`EncoderDef`, built by a factory registered under a name::

    enc = encoders.build('frame_cnn', cfg)      # cfg: ml_collections.ConfigDict of kwargs
    fmap = enc.trunk.apply(trunk_vars, x)       # frozen: run once per step, shared
    feat = enc.stage.apply(stage_vars, fmap)    # trainable: [B, enc.feature_dim] pooled
    feat = enc.stage.apply(stage_vars, fmap, perturb=fn)   # fn on the last map, before the pool

Why the split: the paper (and its port) train only each encoder's last stage (`layer4`); the
trunk's output is identical for the student's two passes (and, with frozen BN statistics, for
the EMA teacher), so the train step computes it once (see `mbcd_jax/step.py`). Both parts are
pure Flax linen modules. Their BatchNorms (`mbcd_jax/encoders/batchnorm.py`) use the running statistics
in `batch_stats`, or batch statistics when applied with ``mutable=['bn_moments']``.

Inputs are channels-last: video ``[B, T, H, W, 3]``, flow ``[B, T, H, W, 2]``,
audio ``[B, F, S, 1]`` (log-spectrogram, frequency x time).
"""
import dataclasses
from typing import Any, Callable

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class EncoderDef:
  """A modality encoder split into a frozen trunk and a trainable stage.

  Attributes:
    trunk: module mapping the model input to an intermediate feature map (any pytree).
    stage: module mapping the trunk's output to a pooled feature ``[B, feature_dim]``.
    feature_dim: size of the pooled feature.
  """
  trunk: nn.Module
  stage: nn.Module
  feature_dim: int


_REGISTRY: dict[str, Callable[..., EncoderDef]] = {}


def register(name: str):
  """Decorator registering an encoder factory ``fn(**kwargs) -> EncoderDef`` under ``name``."""
  def deco(fn):
    _REGISTRY[name] = fn
    return fn
  return deco


def names() -> list[str]:
  _import_all()
  return sorted(_REGISTRY)


def build(name: str, kwargs: Any = None) -> EncoderDef:
  """Builds the encoder registered as ``name`` with keyword arguments ``kwargs``."""
  _import_all()
  if name not in _REGISTRY:
    raise ValueError(f'unknown encoder {name!r}; known: {", ".join(sorted(_REGISTRY))}')
  kwargs = dict(kwargs or {})
  return _REGISTRY[name](**kwargs)


def _import_all():
  # Factories register themselves on import; import lazily so that heavy encoders cost nothing
  # until asked for.
  from mbcd_jax.encoders import small  # pylint: disable=g-import-not-at-top,unused-import
  try:
    from mbcd_jax.encoders import paper  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    pass
