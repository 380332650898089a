"""Methods as switches: MBCD, its ablations and the ERM / EMA baselines through one code path.

``config.method.name`` picks a preset; any component field set explicitly in the config
(``--config.method.amd=fixed``) overrides the preset. Presets:

  erm            fused CE only (the peers' ERM); uni-modal heads are trained as probes on
                 stop-gradient features, so per-modality accuracy can be reported without
                 changing what the encoders learn.
  ema            erm + EMA teacher (evaluated model = teacher).               Table 4 "EMA"
  ema_amd        ema + adaptive modality dropout.                             Table 4 "EMA+AMD"
  ema_gcc        ema + gradient consistency (inner step).                     Table 4 "EMA+GCC"
  ema_dl         ema + distillation.                                          Table 4 "EMA+DL"
  mbcd           all components.                                              Table 4 "all"
  mbcd_no_amd / mbcd_no_gcc / mbcd_no_dl    leave-one-out rows.
  mbcd_fixed_dropout   mbcd with p = 0.5 for every modality.                  Table 5 "fixed"

Whenever AMD, consistency or distillation is on, the uni-modal CE terms sum_k CE_k are part of
the objective (Eq. 9): AMD's confidences and the inner step need trained uni-modal heads.

The peers' methods (Tables 1-2) are plug-ins (``mbcd_jax/extensions.py``), one module each under
``mbcd_jax/baselines/`` and one entry in ``EXTENSIONS``; their hyper-parameters are the config
group ``config.method.<name>`` (declared by the module's ``Hparams``):

  rna            RNA-Net: fused CE + relative norm alignment      baselines/rna.py
  simmmdg        SimMMDG: + SupCon, translation, split distance   baselines/simmmdg.py
  moosa          MOOSA (closed-set): entropy-weighted CE, jigsaw, masked translation, ...
                                                                  baselines/moosa.py
  cmrf           CMRF: SMA teacher, cross-modal mixup distillation, SupCon
                                                                  baselines/cmrf.py
  jat            JAT: modality and domain discriminators behind gradient reversals,
                 entropy-weighted uni-modal CE                    baselines/jat.py
  nel            NEL: two views per clip, SupCon, mean-shift contrast, spectrum entropy
                                                                  baselines/nel.py
  gmp            GMP: per-modality gradient modulation and (on a conflict with the domain
                 term) projection                                 baselines/gmp.py

They train without AMD, consistency or MBCD's distillation, on the model variant their
extension names: features without LayerNorm, head dropout on video/flow, and the networks run
as the authors' scripts run them (``baselines.SCRIPTS_NETWORKS``: video/flow BN in training
mode, the audio trunk in eval mode, random audio tail, no DSU, PyTorch's initialisers).
"""
import dataclasses
from typing import Any

from mbcd_jax import MODALITIES
from mbcd_jax.encoders import batchnorm
from mbcd_jax.method import amd as amd_lib
from mbcd_jax.method import consistency as consistency_lib
from mbcd_jax.baselines import cmrf, gmp, jat, moosa, nel, rna, simmmdg
from mbcd_jax.errors import ConfigError

EXTENSIONS = {e.name: e for e in (rna.EXTENSION, simmmdg.EXTENSION, moosa.EXTENSION,
                                  cmrf.EXTENSION, jat.EXTENSION, nel.EXTENSION, gmp.EXTENSION)}
# The model variant of MBCD and its baselines (ERM, EMA, the ablations) where nothing sets it:
# a bare model config (tests, benchmarks). ``config_lib.base_config`` declares the keys and
# keeps a config's own defaults in ``config.model.defaults`` (the real-data ones: 'port' BN and
# DSU, as the MBCD port); a plug-in's ``model`` replaces entries.
MODEL_DEFAULTS = dict(feature_norm='parameter_free', feature_dropout=0.0, uni_head='mlp',
                      audio_tail_init='pretrained', bn_mode=batchnorm.FROZEN, dsu=False, eval_trunks=(),
                      param_init='flax')
# The values each model-variant key may take (feature_dropout: [0, 1); dsu: a bool;
# eval_trunks: distinct modality names).
VARIANT_CHOICES = dict(
    feature_norm=('parameter_free', 'learnable', 'none'),   # models.MultiModalModel
    uni_head=('mlp', 'linear'),
    audio_tail_init=('pretrained', 'random'),                # models.load_pretrained
    bn_mode=batchnorm.MODES,                                 # models.py, encoders/batchnorm.py
    param_init=('flax', 'torch'),                            # baselines/torch_init.py
)


def check_variant(variant: dict) -> dict:
  """``variant`` (``model_variant``'s) or a one-line ValueError naming ``config.model.<key>``.

  The one check of the model-variant keys, for configs (``config_lib.validate``) and for bare
  model configs (``models.build_model``) alike."""
  for key, choices in VARIANT_CHOICES.items():
    if variant[key] not in choices:
      raise ConfigError(f'config.model.{key} must be one of {choices}, got {variant[key]!r}')
  p = variant['feature_dropout']
  if not (isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p < 1.0):
    raise ConfigError(f'config.model.feature_dropout must be in [0, 1), got {p!r}')
  if not isinstance(variant['dsu'], bool):
    raise ConfigError(f'config.model.dsu must be True or False, got {variant["dsu"]!r}')
  trunks = variant['eval_trunks']
  if any(m not in MODALITIES for m in trunks) or len(set(trunks)) != len(trunks):
    raise ConfigError(f'config.model.eval_trunks must be distinct modalities of {MODALITIES}, '
                     f'got {trunks!r}')
  return variant


PRESETS = {
    'erm': dict(amd='off', consistency='off', ema=False, distill=False),
    'ema': dict(amd='off', consistency='off', ema=True, distill=False),
    'ema_amd': dict(amd='adaptive', consistency='off', ema=True, distill=False),
    'ema_gcc': dict(amd='off', consistency='inner_first_order', ema=True, distill=False),
    'ema_dl': dict(amd='off', consistency='off', ema=True, distill=True),
    'mbcd': dict(amd='adaptive', consistency='inner_first_order', ema=True, distill=True),
    'mbcd_no_amd': dict(amd='off', consistency='inner_first_order', ema=True, distill=True),
    'mbcd_no_gcc': dict(amd='adaptive', consistency='off', ema=True, distill=True),
    'mbcd_no_dl': dict(amd='adaptive', consistency='inner_first_order', ema=True, distill=False),
    'mbcd_fixed_dropout': dict(amd='fixed', consistency='inner_first_order', ema=True,
                               distill=True),
}
for _name, _ext in EXTENSIONS.items():
  # Uni-modal heads: trained by the method's own terms ('own') or probes ('fused').
  PRESETS[_name] = dict(amd='off', consistency='off', ema=False, distill=False,
                        unimodal_ce=_ext.classification == 'own')


def train_views(name: str) -> int:
  """Transformed views of each clip in a training batch for method ``name`` (its
  ``Extension.views``; 1 for every other method): read by ``input_pipeline.make_loader``."""
  ext = EXTENSIONS.get(name)
  return ext.views if ext is not None else 1


def model_variant(model_config, name: str) -> dict:
  """The model-variant keys (``MODEL_DEFAULTS``' names) method ``name`` runs with: the
  config's value where set (``config.model.<key>``), else the plug-in's (``Extension.model``),
  else the config's defaults (``config.model.defaults``), else ``MODEL_DEFAULTS``. The one
  place they resolve (``models.build_model``, ``models.load_pretrained``,
  ``config_lib.validate``)."""
  ext = EXTENSIONS.get(name)
  defaults = model_config.get('defaults') or {}
  out = {**MODEL_DEFAULTS, **{k: v for k, v in dict(defaults).items() if v is not None},
         **dict(ext.model if ext else ())}
  for key in MODEL_DEFAULTS:
    value = model_config.get(key)
    if value is not None:
      out[key] = value
  out['eval_trunks'] = tuple(out['eval_trunks'])
  return out


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """Resolved, hashable description of one training objective (static under jit)."""
  name: str
  amd: str = 'off'
  amd_base: float = 0.0
  amd_fixed_p: float = 0.5
  consistency: str = 'off'
  alpha: float = 1e-4
  ema: bool = False
  ema_beta: float = 0.999
  distill: bool = False
  lambda_mm: float = 1.0
  lambda_um: float = 1.0
  temperature: float = 1.0
  unimodal_ce: bool | None = None
  extension: Any = None   # extensions.Extension of a plug-in method, with its hparams

  @property
  def teacher(self) -> str:
    """'ema' | the plug-in's teacher ('sma') | 'none'."""
    if self.ema:
      return 'ema'
    return self.extension.teacher if self.extension is not None else 'none'

  @property
  def has_teacher(self) -> bool:
    return self.teacher != 'none'

  @property
  def train_unimodal(self) -> bool:
    """Whether sum_k CE_k shapes the encoders (else the uni-modal heads are probes).

    Automatic (``unimodal_ce=None``): on whenever AMD, consistency or distillation is on.
    """
    if self.unimodal_ce is not None:
      return self.unimodal_ce
    return self.amd != 'off' or self.consistency != 'off' or self.distill

  @property
  def evaluated(self) -> str:
    """Which weights are the method's model: the plug-in's choice, else the EMA teacher when
    there is one."""
    if self.extension is not None:
      return self.extension.evaluated
    return 'teacher' if self.ema else 'student'


def resolve(method_config, seed: int = 0, num_sources: int | None = None) -> MethodSpec:
  """``config.method`` -> MethodSpec, applying the preset then the explicit overrides.

  ``seed``: the run's ``config.seed``, given to a plug-in hyper-parameter ``seed`` left None
  (MOOSA's permutation classes, drawn with the authors' ``--seed``).
  ``num_sources``: the run's number of source domains (``len(config.data.sources)``; None: a
  bare method config, taken as one), given to a plug-in hyper-parameter ``num_sources`` left
  None (JAT's domain discriminators); an explicit value must agree with the run's.

  Raises:
    ValueError: unknown method / mode names, or distillation without a teacher.
  """
  name = method_config.name
  if name not in PRESETS:
    raise ConfigError(f'config.method.name: unknown method {name!r}; known: '
                     f'{", ".join(PRESETS)}')
  fields = dict(PRESETS[name])
  for key in ('amd', 'consistency', 'ema', 'distill'):
    value = method_config.get(key)
    if value is not None:
      fields[key] = value
  if fields['amd'] not in amd_lib.MODES:
    raise ConfigError(f'config.method.amd: unknown mode {fields["amd"]!r}; known: '
                     f'{", ".join(amd_lib.MODES)}')
  if fields['consistency'] not in consistency_lib.MODES:
    raise ConfigError(f'config.method.consistency: unknown mode {fields["consistency"]!r}; '
                     f'known: {", ".join(consistency_lib.MODES)}')
  ext = EXTENSIONS.get(name)
  if ext is not None:
    if fields['amd'] != 'off' or fields['consistency'] != 'off' or fields['ema'] \
        or fields['distill']:
      raise ConfigError(f'config.method: {name} is a plug-in method; AMD, consistency, EMA and '
                       'distillation are MBCD switches (leave config.method.amd/consistency/'
                       'ema/distill unset)')
    group = method_config.get(name)
    ext = ext.with_hparams(group.to_dict() if group is not None else {})
    if getattr(ext.hparams, 'seed', 0) is None:
      ext = ext.with_hparams({'seed': int(seed)})
    if hasattr(ext.hparams, 'num_sources'):
      given = ext.hparams.num_sources
      if given is None:
        ext = ext.with_hparams({'num_sources': int(num_sources or 1)})
      elif num_sources is not None and given != num_sources:
        raise ConfigError(f'config.method.{name}.num_sources={given} disagrees with the run\'s '
                         f'{num_sources} source domains (config.data.sources); leave it unset')
    fields['extension'] = ext
  if fields['distill'] and not fields['ema']:
    raise ConfigError('config.method.distill=True needs the EMA teacher (config.method.ema)')
  fields['unimodal_ce'] = method_config.get('unimodal_ce')
  if fields['unimodal_ce'] is None:
    fields['unimodal_ce'] = PRESETS[name].get('unimodal_ce')
  if fields['unimodal_ce'] is False and fields['consistency'] != 'off':
    raise ConfigError('config.method.unimodal_ce=False leaves no uni-modal objective for the '
                     f'inner step of consistency={fields["consistency"]!r}')
  for key in ('amd_base', 'amd_fixed_p', 'alpha', 'ema_beta', 'lambda_mm', 'lambda_um',
              'temperature'):
    fields[key] = float(method_config[key])
  if not 0.0 <= fields['ema_beta'] < 1.0:
    raise ConfigError(f'config.method.ema_beta must be in [0, 1), got {fields["ema_beta"]}')
  if fields['temperature'] <= 0:
    raise ConfigError(f'config.method.temperature must be > 0, got {fields["temperature"]}')
  return MethodSpec(name=name, **fields)
