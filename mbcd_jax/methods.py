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
"""
import dataclasses

from mbcd_jax import amd as amd_lib
from mbcd_jax import consistency as consistency_lib

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
    """Which weights are the method's model: the EMA teacher when there is one."""
    return 'teacher' if self.ema else 'student'


def resolve(method_config) -> MethodSpec:
  """``config.method`` -> MethodSpec, applying the preset then the explicit overrides.

  Raises:
    ValueError: unknown method / mode names, or distillation without a teacher.
  """
  name = method_config.name
  if name not in PRESETS:
    raise ValueError(f'config.method.name: unknown method {name!r}; known: '
                     f'{", ".join(PRESETS)}')
  fields = dict(PRESETS[name])
  for key in ('amd', 'consistency', 'ema', 'distill'):
    value = method_config.get(key)
    if value is not None:
      fields[key] = value
  if fields['amd'] not in amd_lib.MODES:
    raise ValueError(f'config.method.amd: unknown mode {fields["amd"]!r}; known: '
                     f'{", ".join(amd_lib.MODES)}')
  if fields['consistency'] not in consistency_lib.MODES:
    raise ValueError(f'config.method.consistency: unknown mode {fields["consistency"]!r}; '
                     f'known: {", ".join(consistency_lib.MODES)}')
  if fields['distill'] and not fields['ema']:
    raise ValueError('config.method.distill=True needs the EMA teacher (config.method.ema)')
  fields['unimodal_ce'] = method_config.get('unimodal_ce')
  if fields['unimodal_ce'] is False and fields['consistency'] != 'off':
    raise ValueError('config.method.unimodal_ce=False leaves no uni-modal objective for the '
                     f'inner step of consistency={fields["consistency"]!r}')
  for key in ('amd_base', 'amd_fixed_p', 'alpha', 'ema_beta', 'lambda_mm', 'lambda_um',
              'temperature'):
    fields[key] = float(method_config[key])
  if not 0.0 <= fields['ema_beta'] < 1.0:
    raise ValueError(f'config.method.ema_beta must be in [0, 1), got {fields["ema_beta"]}')
  if fields['temperature'] <= 0:
    raise ValueError(f'config.method.temperature must be > 0, got {fields["temperature"]}')
  return MethodSpec(name=name, **fields)
