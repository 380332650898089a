"""The embedded multi-modal DG benchmark: seeded synthetic clips with a domain shift in every
modality and a modality imbalance, in the pre-decoded record format the real data uses.

Generative model, for modality m, class c, domain d and one example::

    signal   = sqrt(1 - rho_m) * S_m[c] + sqrt(rho_m) * D_m[c, d]   (unit-variance patterns)
    x        = style_d( amp_m * visible * roll(signal) + noise * eps )

- ``S_m[c]`` is shared by all domains (what transfers), ``D_m[c, d]`` is specific to domain d
  (what does not transfer: an unseen domain draws fresh ``D_m[., d]``). ``rho_m`` is the
  modality's domain-specific share of the class signal.
- **Imbalance**: the dominant modality (``dominant``, video by default) has ``amp *
  dominance`` and a large ``rho`` (``dominant_specific``): it is learnt much faster but
  transfers worse. The other modalities have ``amp`` and a small ``rho`` (``weak_specific``),
  and each hides its signal in a random ``1 - visibility`` fraction of examples, independently,
  so they complement each other.
- **Domain shift** (``shift``) in every modality: a per-domain gain, offset and background
  pattern — a colour cast and texture for video, a global motion bias for flow, a spectral
  tilt for audio.
- Random per-example temporal and spatial rolls make the patterns non-trivially located.
- **Styles** (``styles``): ``'fixed'``, one style per domain (the original benchmark);
  ``'interpolated'``, the D domains share D style prototypes and domain d's examples each
  interpolate (uniform weight) between prototypes d and d+1 (mod D), so with D >= 3 a domain
  held out of the rest has every one of its styles between styles the sources show, modality by
  modality, yet its style distribution differs from each source's (docs/benchmark.md).

Everything is a pure function of ``(world_seed, domain, split, index)``, so the source is
random-access, needs no storage and gives the same example every time it is read.

Records (as ``mbcd_jax.data`` produces from real clips):
  'video' uint8 ``[T, H, W, 3]``; 'flow' uint8 ``[Tf, H, W, 2]`` (128 = no motion);
  'audio' float32 ``[F, S]`` log-spectrogram; 'label' int32; 'domain' int32.
"""
import dataclasses

import numpy as np

from mbcd_jax import MODALITIES
from mbcd_jax.data import hac
from mbcd_jax.errors import ConfigError

_SPLIT_IDS = {'train': 0, 'test': 1}
_MODALITY_IDS = {m: i for i, m in enumerate(MODALITIES)}   # seeds per modality


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """Knobs of the benchmark (``config.data.synthetic``); see the module docstring."""
  num_classes: int = 7
  domains: tuple = hac.DOMAINS
  train_per_domain: int = 160      # examples in each domain's train split
  test_per_domain: int = 48        # examples in each domain's test split
  video_shape: tuple = (8, 32, 32)   # T, H, W
  flow_shape: tuple = (4, 32, 32)
  audio_shape: tuple = (64, 64)      # F, S
  amp: float = 0.6                 # class-signal amplitude of the weak modalities (noise std 1)
  dominant: str = 'video'
  dominance: float = 2.0           # amplitude ratio dominant / weak; 1 = balanced
  dominant_specific: float = 0.5   # rho of the dominant modality
  weak_specific: float = 0.1       # rho of the other modalities
  visibility: float = 0.7          # fraction of examples where a weak modality shows its class
  shift: float = 1.0               # domain-shift strength in every modality
  shift_video: float = 1.0         # per-modality multipliers of ``shift`` (0 = no style shift)
  shift_flow: float = 1.0
  shift_audio: float = 1.0
  noise: float = 1.0               # noise std
  world_seed: int = 0              # fixes the patterns and domains (not the training seed)
  styles: str = 'fixed'            # 'fixed' | 'interpolated' (module docstring)

  def shape(self, m: str) -> tuple:
    return {'video': self.video_shape + (3,), 'flow': self.flow_shape + (2,),
            'audio': self.audio_shape}[m]


def _smooth_pattern(rng: np.random.Generator, shape: tuple, block: int = 4) -> np.ndarray:
  """Unit-variance random pattern, piecewise constant over ``block``-sized cells."""
  if len(shape) == 2:       # audio [F, S]
    low = rng.standard_normal((-(-shape[0] // block), -(-shape[1] // block)))
    pat = np.kron(low, np.ones((block, block)))[:shape[0], :shape[1]]
  else:                     # [T, H, W, C]
    t, h, w, ch = shape
    low = rng.standard_normal((t, -(-h // block), -(-w // block), ch))
    pat = np.repeat(np.repeat(low, block, 1), block, 2)[:, :h, :w]
  return (pat / (pat.std() + 1e-8)).astype(np.float32)


def _texture(rng: np.random.Generator, shape: tuple, period: int = 8) -> np.ndarray:
  """Unit-variance periodic texture: a random ``period``-sized tile (cells of 2) repeated.

  Class evidence is local and translation-invariant, as in real clips (an object or a motion
  anywhere in the frame), so convolutional features with global pooling can pick it up.
  """
  if len(shape) == 2:
    tile = _smooth_pattern(rng, (period, period), block=2)
    reps = (-(-shape[0] // period), -(-shape[1] // period))
    pat = np.tile(tile, reps)[:shape[0], :shape[1]]
  else:
    t, h, w, ch = shape
    tile = _smooth_pattern(rng, (t, period, period, ch), block=2)
    pat = np.tile(tile, (1, -(-h // period), -(-w // period), 1))[:, :h, :w]
  return (pat / (pat.std() + 1e-8)).astype(np.float32)


def _class_pattern(rng: np.random.Generator, shape: tuple) -> np.ndarray:
  """A class's evidence in one modality: a profile plus a texture, unit variance.

  The profile is what pooled conv features see first: a colour / intensity course over the
  frames (video), a motion direction over time (flow), a spectral envelope (audio). The texture
  adds local, translation-invariant detail.
  """
  if len(shape) == 2:       # audio [F, S]: envelope over frequency, constant in time
    env = np.repeat(rng.standard_normal((-(-shape[0] // 4), 1)), 4, 0)[:shape[0]]
    pat = env + 0.7 * _texture(rng, shape)
  else:                     # [T, H, W, C]: per-frame, per-channel profile
    t, _, _, ch = shape
    pat = rng.standard_normal((t, 1, 1, ch)) + 0.7 * _texture(rng, shape)
  return (pat / (pat.std() + 1e-8)).astype(np.float32)


STYLES = ('fixed', 'interpolated')


def draw_style(rng: np.random.Generator, m: str, shape: tuple, shift: float) -> tuple:
  """One random style of modality ``m``: ``(gain, background [shape], offset)``.

  A gain, a background pattern and an offset: a per-channel colour cast (video) or motion bias
  (flow), a spectral tilt (audio, an offset linear in frequency). ``shift`` scales all three.
  """
  gain = np.exp(0.3 * shift * rng.standard_normal())
  background = 0.5 * shift * _smooth_pattern(rng, shape, block=8)
  if m == 'audio':   # spectral tilt: a frequency-dependent offset
    f = np.linspace(-1, 1, shape[0], dtype=np.float32)[:, None]
    offset = shift * rng.standard_normal() * f
  else:              # colour cast / motion bias: a per-channel offset
    offset = 0.5 * shift * rng.standard_normal(shape[-1]).astype(np.float32)
  return np.float32(gain), background.astype(np.float32), offset


def mix_styles(a: tuple, b: tuple, w: float) -> tuple:
  """The style ``w`` of the way from ``a`` to ``b``: log-gain and offset linear in ``w``; the
  background on the arc ``cos(pi w / 2) a + sin(pi w / 2) b``, which keeps the variance of two
  independent patterns (a straight line would fade the texture half-way, a style neither end
  has)."""
  gain = np.exp((1 - w) * np.log(a[0]) + w * np.log(b[0]))
  c, s = np.cos(np.pi / 2 * w), np.sin(np.pi / 2 * w)
  return (np.float32(gain), (c * a[1] + s * b[1]).astype(np.float32),
          ((1 - w) * a[2] + w * b[2]).astype(np.float32))


def apply_style(x: np.ndarray, style: tuple) -> np.ndarray:
  gain, background, offset = style
  return gain * (x + background) + offset


class _World:
  """The class patterns and domain styles, derived from ``world_seed``."""

  def __init__(self, spec: SyntheticSpec, modalities):
    self.spec = spec
    self.shared, self.specific, self.style = {}, {}, {}
    for m in modalities:
      mid = _MODALITY_IDS[m]
      shape = spec.shape(m)
      rng = np.random.default_rng([spec.world_seed, mid, 0])
      self.shared[m] = np.stack([_class_pattern(rng, shape) for _ in range(spec.num_classes)])
      for d in range(len(spec.domains)):
        rng = np.random.default_rng([spec.world_seed, mid, 1, d])
        self.specific[m, d] = np.stack(
            [_class_pattern(rng, shape) for _ in range(spec.num_classes)])
        self.style[m, d] = draw_style(rng, m, shape, spec.shift * getattr(spec, f'shift_{m}'))
    if spec.styles not in STYLES:
      raise ConfigError(f'synthetic styles must be one of {STYLES}, got {spec.styles!r}')

  def domain_style(self, m: str, domain: int, rng: np.random.Generator) -> tuple:
    """The style of one example of ``domain`` (draws from ``rng`` only if 'interpolated')."""
    if self.spec.styles == 'fixed':
      return self.style[m, domain]
    n = len(self.spec.domains)
    return mix_styles(self.style[m, domain], self.style[m, (domain + 1) % n], rng.random())

  def render(self, m: str, label: int, domain: int, rng: np.random.Generator) -> np.ndarray:
    spec = self.spec
    dominant = m == spec.dominant
    rho = spec.dominant_specific if dominant else spec.weak_specific
    amp = spec.amp * (spec.dominance if dominant else 1.0)
    visible = 1.0 if dominant or rng.random() < spec.visibility else 0.0
    signal = (np.sqrt(1 - rho) * self.shared[m][label]
              + np.sqrt(rho) * self.specific[m, domain][label])
    axes = (1,) if m == 'audio' else (1, 2)   # time (audio) / space (video, flow)
    signal = np.roll(signal, tuple(int(s) for s in rng.integers(-4, 5, len(axes))), axis=axes)
    x = amp * visible * signal + spec.noise * rng.standard_normal(signal.shape, np.float32)
    return apply_style(x, self.domain_style(m, domain, rng))


class SyntheticSource:
  """Random-access source (grain ``RandomAccessDataSource``) over one or more domains' split.

  Args:
    spec: the benchmark knobs.
    domains: domain names to include (concatenated in this order).
    split: 'train' or 'test' (each domain's own split) or 'all' (train + test, HAC's rule for
      the unseen target domain).
    modalities: which modalities to render.
  """

  def __init__(self, spec: SyntheticSpec, domains, split: str, modalities):
    if split not in ('train', 'test', 'all'):
      raise ValueError(f"synthetic split must be 'train', 'test' or 'all', got {split!r}")
    for d in domains:
      if d not in spec.domains:
        raise ConfigError(f'unknown synthetic domain {d!r}; known: {", ".join(spec.domains)}')
    self.spec, self.modalities = spec, tuple(modalities)
    self._world = _World(spec, self.modalities)
    splits = ('train', 'test') if split == 'all' else (split,)
    sizes = {'train': spec.train_per_domain, 'test': spec.test_per_domain}
    self._items = [(spec.domains.index(d), s, i)
                   for d in domains for s in splits for i in range(sizes[s])]

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, index: int) -> dict:
    domain, split, i = self._items[index]
    rng = np.random.default_rng([self.spec.world_seed, 7, domain, _SPLIT_IDS[split], i])
    label = int(rng.integers(self.spec.num_classes))
    rec = {'label': np.int32(label), 'domain': np.int32(domain)}
    for m in self.modalities:
      x = self._world.render(m, label, domain, rng)
      if m == 'audio':
        rec[m] = x.astype(np.float32)
      else:   # stored like decoded frames / flow JPEGs: uint8, 128 = zero
        rec[m] = np.clip(np.round(128 + 32 * x), 0, 255).astype(np.uint8)
    return rec
