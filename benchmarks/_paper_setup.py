"""The paper-shape set-up the accelerator benchmarks share: the encoders and input shapes of
each size, and ``build`` (model, method spec and optimizer from plain-dict configs).

Imported by ``device_check.py`` and ``pipeline_throughput.py`` (and through ``device_check`` by
``roofline.py`` and ``whole_run.py``); it imports only the library, so that neither script
imports the other.
"""
from mbcd_jax import methods, models
from mbcd_jax import step as step_lib
from mbcd_jax.encoders import batchnorm

NUM_CLASSES = 7
MODALITIES = ('video', 'flow', 'audio')
# Encoders (name, kwargs) and per-example input shapes (channels last) of each size.
FULL = {'video': ('slowfast_r101', {}, (32, 224, 224, 3)),
        'flow': ('slowonly_r50_flow', {}, (8, 224, 224, 2)),
        'audio': ('vggsound_r18', {}, (257, 1004, 1))}
# Parity's: reduced SlowFast (3D convs, both pathways) and the audio ResNet-18 (2D); SlowOnly is
# SlowFast's pathway code again and would add compile time only.
SMALL = {'video': ('slowfast_r101', dict(depth=50, slow_base_channels=16), (8, 64, 64, 3)),
         'audio': ('vggsound_r18', dict(width=16), (64, 128, 1))}
# The dry run's: two modalities, each the audio ResNet-18 at width 4. The 3D networks' depth-50
# steps take minutes to compile on a busy 2-core host; every code path of this script is the same
# for any paper encoder and modality set (the encoders themselves are tested in tests/encoders).
TINY = {m: ('vggsound_r18', dict(width=4), (64, 32, 1)) for m in ('video', 'audio')}
HIDDEN = 512


class Cfg(dict):
  """A dict read by attribute: stands in for ``ml_collections.ConfigDict`` where the mbcd_jax
  builders read a config (``models.build_model``, ``step.make_optimizer``)."""

  def __getattr__(self, key):
    try:
      v = self[key]
    except KeyError as e:
      raise AttributeError(key) from e
    return Cfg(v) if isinstance(v, dict) and not isinstance(v, Cfg) else v

  def to_dict(self):
    return dict(self)


def encoder_config(enc_set, dtype):
  return {m: dict(name=name, **kw, dtype=dtype) for m, (name, kw, _) in enc_set.items()}


def build(enc_set, method, bn_mode, dtype, dropout=0.5):
  """(model, spec, tx) with plain-dict configs; DSU on in the port BN mode, as the port."""
  mc = Cfg(encoders=encoder_config(enc_set, dtype), head_hidden=HIDDEN, head_dropout=dropout,
           freeze_trunk=True, feature_norm='parameter_free', bn_mode=bn_mode,
           dsu=bn_mode == batchnorm.PORT, dsu_p=0.5)
  model = models.build_model(mc, tuple(enc_set), NUM_CLASSES)
  spec = methods.MethodSpec(name=method, **methods.PRESETS[method])
  tx = step_lib.make_optimizer(Cfg(lr=1e-4, weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8))
  return model, spec, tx

