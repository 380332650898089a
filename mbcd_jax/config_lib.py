"""Shared config defaults and validation for ``configs/*.py``.

A config has ``seed`` and five groups: ``data`` (dataset, domains, modalities, batch, the
synthetic benchmark's knobs), ``model`` (encoders, heads), ``method`` (which objective: MBCD,
its ablations, ERM/EMA), ``optim`` and ``train``. ``base_config`` declares every key a run
reads, with its unit or meaning; ``DATASETS`` holds what each dataset's protocol fixes;
``validate`` is the one place that checks a config, turning every mistake a user can make on
the command line into a one-line ``ValueError`` naming the field.
"""
import dataclasses
import typing

import ml_collections
from ml_collections import config_dict

from mbcd_jax import MODALITIES
from mbcd_jax.encoders import batchnorm
from mbcd_jax import methods
from mbcd_jax import recipes
# The split readers own each dataset's domain and class names; they import nothing heavy.
from mbcd_jax.data import epic as epic_data
from mbcd_jax.data import hac as hac_data
from mbcd_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Protocol:
  """What a dataset fixes for the multi-source DG protocol.

  Attributes:
    domains: every domain, in label-index order of the prepared store.
    num_classes: actions to classify.
    target_test_split_only: the target domain's test split is the test set (EPIC, MM-SADA
      splits); otherwise the whole target domain is (HAC, as SimMMDG and the port), unless
      ``data.hac_test_split_only``.
  """
  domains: tuple[str, ...]
  num_classes: int
  target_test_split_only: bool


DATASETS = {
    'hac': Protocol(hac_data.DOMAINS, len(hac_data.CLASSES), hac_data.TARGET_TEST_SPLIT_ONLY),
    'epic': Protocol(epic_data.DOMAINS, len(epic_data.CLASSES), epic_data.TARGET_TEST_SPLIT_ONLY),
}
NAN_POLICIES = ('stop', 'skip')
FEATURE_NORMS = methods.VARIANT_CHOICES['feature_norm']
UNI_HEADS = methods.VARIANT_CHOICES['uni_head']


def _hparams_group(hparams) -> ml_collections.ConfigDict:
  """A plug-in's ``Hparams`` defaults as a config group; a None default (``x: int | None =
  None``: "decided at resolve time") becomes a typed placeholder, so that
  ``--config.method.<name>.x=...`` parses to the declared type."""
  hints = typing.get_type_hints(type(hparams))
  out = {}
  for k, v in dataclasses.asdict(hparams).items():
    if v is None:
      kinds = [t for t in typing.get_args(hints[k]) if t is not type(None)]
      v = config_dict.placeholder(kinds[0] if len(kinds) == 1 else object)
    out[k] = v
  return ml_collections.ConfigDict(out)


def method_config(name: str = 'mbcd') -> ml_collections.ConfigDict:
  """``config.method``: the preset name, component switches (None = from the preset), the
  paper's coefficients, and one group per plug-in method (``config.method.<name>.*``, the
  defaults of its module's ``Hparams``: the authors' values)."""
  groups = {n: _hparams_group(e.hparams) for n, e in methods.EXTENSIONS.items()}
  return ml_collections.ConfigDict(dict(
      **groups,
      name=name,
      amd=config_dict.placeholder(str),          # 'adaptive' | 'fixed' | 'off'
      consistency=config_dict.placeholder(str),  # 'inner_first_order' | 'inner_second_order' | 'grad_dot' | 'off'
      ema=config_dict.placeholder(bool),
      distill=config_dict.placeholder(bool),
      unimodal_ce=config_dict.placeholder(bool),  # sum_k CE_k trains the encoders (None: auto)
      amd_base=0.0,         # the port's modality_drop_base
      amd_fixed_p=0.5,      # drop probability of the 'fixed' ablation (Table 5)
      alpha=1e-4,           # inner-loop step size
      ema_beta=0.999,       # EMA decay per optimizer step (None: from ema_horizon_ratio)
      # The run's steps / the EMA horizon 1 / (1 - beta): beta = 1 - ratio / steps, resolved by
      # normalize once the overrides are in, where ema_beta is None (configs/hac.py:synthetic: 2).
      ema_horizon_ratio=config_dict.placeholder(float),
      lambda_mm=1.0,        # KL(teacher || fused student)
      lambda_um=1.0,        # sum_k KL(teacher || uni-modal student k)
      temperature=1.0,
  ))


def synthetic_config() -> ml_collections.ConfigDict:
  """``config.data.synthetic``: the embedded benchmark's knobs (mbcd_jax/data/synthetic.py), read
  only when ``data.source='synthetic'``."""
  return ml_collections.ConfigDict(dict(
      train_per_domain=160,    # examples in each domain's train split
      test_per_domain=48,      # examples in each domain's test split
      video_shape=(8, 32, 32),   # T, H, W (frames, px)
      flow_shape=(4, 32, 32),    # T, H, W
      audio_shape=(64, 64),      # F, S (frequency bins, time steps)
      amp=0.6,                 # weak modalities' class-signal amplitude (noise std = 1)
      dominant='video',        # the fast-learning modality
      dominance=2.0,           # amplitude ratio dominant / weak (1.0 = balanced control)
      dominant_specific=0.5,   # share of the dominant modality's signal that is domain-specific
      weak_specific=0.1,       # the same share for the other modalities
      visibility=0.7,          # P(a weak modality shows its class in an example)
      shift=1.0,               # domain-shift strength in every modality
      shift_video=1.0, shift_flow=1.0, shift_audio=1.0,   # per-modality multipliers of shift
      noise=1.0,               # noise std
      world_seed=0,            # fixes the benchmark itself (config.seed varies training)
  ))


def base_config() -> ml_collections.ConfigDict:
  """Every key a run reads, with the paper's recipe and the real encoders' defaults.

  ``configs/hac.py`` / ``configs/epic.py`` fill the dataset fields (``dataset_config``) and the
  encoders; nothing else may be read with ``.get`` or added later.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0                      # training seed: init, dropout, AMD draws, data order
  c.data = ml_collections.ConfigDict(dict(
      dataset='hac',              # 'hac' | 'epic' : the protocol (domains, classes, test set)
      source='synthetic',         # 'synthetic' (embedded, no download) | 'prepared' (data.dir)
      dir=config_dict.placeholder(str),   # prepared clip store (python -m mbcd_jax.data.prepare)
      domains=DATASETS['hac'].domains,
      sources=('animal', 'cartoon'),      # training domains
      target='human',                     # unseen test domain
      modalities=MODALITIES,      # any non-empty subset, each with a model.encoders entry
      num_classes=DATASETS['hac'].num_classes,
      # HAC only: test on the target's test split instead of the whole target domain
      # (SimMMDG / port). EPIC always tests on the target's test split.
      hac_test_split_only=False,
      batch_size=16,              # global train batch (examples), split over devices and hosts
      eval_batch_size=32,         # global eval batch (examples)
      num_workers=0,              # grain worker processes (0 = in-process)
      read_threads=2,             # threads per process running the per-example transform
      # Ship RGB / flow frames as uint8 and normalise them in the jitted steps (the same float32
      # values, bit for bit): ~10% less host CPU per clip, 4x fewer frame bytes to the device.
      normalize_on_device=False,
      # Prepared data only: the clip recipe (mbcd_jax/data/transforms.py), the paper's values.
      clip=ml_collections.ConfigDict(dict(
          video_frames=32,            # RGB frames per example
          video_stride=2,             # source frames between sampled RGB frames
          flow_frames=8,              # flow frames per example
          flow_stride=4,              # source flow frames between sampled ones
          crop_size=224,              # px, square crop fed to the encoders
          resize_short=256,           # px, short side before cropping
          area_range=(0.08, 1.0),     # train: RandomResizedCrop area, fraction of the frame
          aspect_range=(3 / 4, 4 / 3),  # train: RandomResizedCrop aspect ratio (w / h)
          flip_prob=0.5,              # train: P(horizontal flip; flow-x is inverted)
          audio_samples=160000,       # waveform samples per example (10 s at 16 kHz)
          audio_rate=16000,           # Hz, when the record does not store its rate
          audio_noise=0.05,           # train: U(-a, a) added to the z-scored log-spectrogram
          freq_mask=9,                # train: consecutive frequency rows set to 0
          hac_audio_fps=24.0,         # HAC: frames/s placing the audio window on the RGB frames
      )),
      synthetic=synthetic_config(),
  ))
  c.model = ml_collections.ConfigDict(dict(
      # modality -> {name (mbcd_jax/encoders registry), the encoder's kwargs, pretrained (path
      # of converted weights, '' = random init)}; filled by the config files.
      encoders=ml_collections.ConfigDict(),
      freeze_trunk=True,          # paper: only the last stage (layer4) and the heads train
      # Seed of the random trunk init when no pretrained weights are loaded; -1: from
      # config.seed. A fixed value gives every training seed the same frozen trunk, as the
      # paper's seeds share one pretrained checkpoint (only the trained part varies).
      trunk_seed=-1,
      # The model variant: how the networks are built and run. None = the method's: a plug-in's
      # own (``Extension.model``: the authors' scripts, baselines.SCRIPTS_NETWORKS), else
      # ``defaults`` below (MBCD, its ablations, ERM, EMA). Resolved by methods.model_variant.
      # 'parameter_free' LayerNorm (MBCD port) | 'learnable' | 'none' (the peers' baselines)
      feature_norm=config_dict.placeholder(str),
      feature_dropout=config_dict.placeholder(float),  # video/flow embedding dropout (0.0)
      uni_head=config_dict.placeholder(str),   # 'mlp' (port's PredHead) | 'linear' (MOOSA, CMRF)
      # BatchNorm semantics (mbcd_jax/models.py). 'port': as the reference's model.train(True),
      # every encoder BN (frozen layers too) normalises with batch statistics in training and
      # updates its running statistics (momentum 0.1, unbiased variance) once per student
      # pass; the EMA teacher averages them with the weights; evaluation runs on each
      # network's own running statistics. 'frozen': running statistics only, never updated
      # (faster: one trunk pass for student and teacher), to be measured against 'port'.
      bn_mode=config_dict.placeholder(str),
      # Modalities whose trunk stays in eval mode in every pass whatever bn_mode (running
      # statistics, never updated, shared with the teacher): the peers' ``audio_model.eval()``.
      eval_trunks=config_dict.placeholder(tuple),
      dsu=config_dict.placeholder(bool),   # DSU feature-statistics noise (mbcd_jax/method/dsu.py)
      # 'pretrained': the audio encoder's last stage (layer4) starts from the checkpoint (MBCD
      # reference); 'random': from random init while the trunk is loaded (SimMMDG-style
      # baselines, whose audio tail never receives the checkpoint).
      audio_tail_init=config_dict.placeholder(str),
      # 'flax': Flax's default initialisers | 'torch': the heads as torch.nn.Linear, a random
      # audio tail as VGGSound's AudioAttGenModule (baselines/torch_init.py), as the peers.
      param_init=config_dict.placeholder(str),
      # The variant of the methods that declare none (MBCD, its ablations, ERM, EMA): the MBCD
      # port's on real data ('port' BN and DSU, as its script); the embedded benchmark's
      # configs change bn_mode and dsu here (configs/hac.py).
      defaults=ml_collections.ConfigDict(
          dict(methods.MODEL_DEFAULTS, bn_mode=batchnorm.PORT, dsu=True)),
      head_hidden=512,            # hidden units of every classifier head's MLP
      head_dropout=0.5,           # dropout probability in the heads (train only)
      dsu_p=0.5,                  # probability of DSU per call (trunk / last stage output)
  ))
  c.method = method_config('mbcd')
  c.optim = ml_collections.ConfigDict(dict(
      lr=1e-4,                    # constant learning rate (the port has no schedule)
      weight_decay=1e-4,          # L2 coupled to the gradient, as torch.optim.Adam
      b1=0.9, b2=0.999, eps=1e-8))   # Adam moments
  c.train = ml_collections.ConfigDict(dict(
      epochs=20,                  # passes over the source domains' train splits
      # 'shared': the values here (the MMDG benchmark's recipe) | 'authors': each method's
      # authors' per-setting epochs and coefficients (mbcd_jax/recipes.py), set by normalize.
      recipe='shared',
      log_every=10,               # steps between train-metric log lines
      eval_every_epochs=1,        # epochs between val + test evaluations
      progress=True,              # tqdm progress bar with rate and ETA
      # Checkpoints (mbcd_jax/checkpoint.py) under <workdir>/checkpoints, also at every epoch end.
      checkpoint_every_steps=200,  # optimizer steps between mid-epoch checkpoints (0: epoch ends only)
      keep_checkpoints=3,         # the latest K are kept, plus the best-validation one
      async_checkpointing=True,   # write checkpoints in a background thread (orbax)
      resume_mode='strict',       # 'strict' | 'allow_changes' | 'restart' (an existing workdir)
      nan_policy='stop',          # non-finite loss/gradient: 'stop' the run | 'skip' the update
      # Frozen trunks run once per example instead of every step where that gives the same
      # bits (no random transforms, BN on running statistics: mbcd_jax/trunk_cache.py).
      trunk_cache=True,
  ))
  return c


CONFIG_ARGS = ('synthetic', 'smoke', 'scratch', 'short')


def parse_config_arg(arg: str | None, config_file: str) -> set[str]:
  """``configs/x.py:synthetic,smoke`` -> {'synthetic', 'smoke'}; unknown words are an error."""
  args = set(filter(None, (arg or '').split(',')))
  unknown = args - set(CONFIG_ARGS)
  if unknown:
    raise ConfigError(f'{config_file}: unknown argument(s) {sorted(unknown)}; known: '
                     f'{", ".join(CONFIG_ARGS)}')
  return args


def dataset_config(dataset: str, sources: tuple, target: str) -> ml_collections.ConfigDict:
  """``base_config()`` for ``dataset`` (its domains and classes) on real, prepared data."""
  c = base_config()
  c.data.dataset = dataset
  c.data.source = 'prepared'
  c.data.domains = DATASETS[dataset].domains
  c.data.num_classes = DATASETS[dataset].num_classes
  c.data.sources = tuple(sources)
  c.data.target = target
  return c


def target_test_split_only(data_config) -> bool:
  """Whether the test set is the target domain's test split (else the whole target domain)."""
  return DATASETS[data_config.dataset].target_test_split_only or bool(
      data_config.hac_test_split_only)


def _names(value) -> tuple:
  return (value,) if isinstance(value, str) else tuple(value)


def _check(ok: bool, message: str):
  if not ok:
    raise ConfigError(message)


def _check_range(config, key: str, lo=None, hi=None, *, lo_open=False, hi_open=False,
                 integer=False):
  """``config.<key>`` within [lo, hi] (open ends as asked), one line naming the key if not."""
  value = config
  for part in key.split('.'):
    value = value[part]
  kind = int if integer else (int, float)
  ok = isinstance(value, kind) and not isinstance(value, bool)
  if ok and lo is not None:
    ok = value > lo if lo_open else value >= lo
  if ok and hi is not None:
    ok = value < hi if hi_open else value <= hi
  if not ok:
    left = '' if lo is None else ('(' if lo_open else '[') + f'{lo}, '
    right = '' if hi is None else f'{hi}' + (')' if hi_open else ']')
    bound = f'in {left or "(-inf, "}{right or "inf)"}'
    raise ConfigError(f'config.{key} must be {"an integer" if integer else "a number"} {bound}, '
                     f'got {value!r}')


def _validate_data(config):
  d = config.data
  _check(d.dataset in DATASETS, f'config.data.dataset: unknown dataset {d.dataset!r}; known: '
                                f'{", ".join(DATASETS)}')
  _check(d.source in ('synthetic', 'prepared'),
         f"config.data.source must be 'synthetic' or 'prepared', got {d.source!r}")
  protocol = DATASETS[d.dataset]
  domains, sources = tuple(d.domains), _names(d.sources)
  for name in sources + (d.target,):
    _check(name in domains, f'config.data: unknown domain {name!r}; the {d.dataset} domains '
                            f'are {", ".join(domains)}')
  _check(bool(sources), 'config.data.sources: at least one source domain is required')
  _check(d.target not in sources,
         f'config.data: target domain {d.target!r} is also a source domain')
  if d.source == 'prepared':
    # The prepared store's labels and domain indices follow the dataset's own lists.
    _check(domains == protocol.domains, f'config.data.domains must be the {d.dataset} domains '
                                        f'{protocol.domains} for prepared data, got {domains}')
    _check(d.num_classes == protocol.num_classes,
           f'config.data.num_classes must be {protocol.num_classes} for prepared {d.dataset} '
           f'data, got {d.num_classes}')
  _check(not (d.hac_test_split_only and d.dataset != 'hac'),
         f'config.data.hac_test_split_only applies to HAC only; the {d.dataset} test set is '
         'always the target domain\'s test split')
  mods = _names(d.modalities)
  _check(bool(mods), 'config.data.modalities: at least one modality is required')
  for m in mods:
    _check(m in MODALITIES, f'config.data.modalities: unknown modality {m!r}; known: '
                            f'{", ".join(MODALITIES)}')
    _check(m in config.model.encoders,
           f'config.model.encoders has no encoder for modality {m!r}')
  _check(len(set(mods)) == len(mods), f'config.data.modalities has duplicates: {mods}')
  _check_range(config, 'data.num_classes', 2, integer=True)
  _check_range(config, 'data.batch_size', 1, integer=True)
  _check_range(config, 'data.eval_batch_size', 1, integer=True)
  _check_range(config, 'data.num_workers', 0, integer=True)
  _check(isinstance(d.normalize_on_device, bool),
         f'config.data.normalize_on_device must be True or False, got {d.normalize_on_device!r}')
  if d.source == 'synthetic':
    _check(d.synthetic.dominant in MODALITIES,
           f'config.data.synthetic.dominant: unknown modality {d.synthetic.dominant!r}; '
           f'known: {", ".join(MODALITIES)}')
    for key in ('train_per_domain', 'test_per_domain'):
      _check_range(config, f'data.synthetic.{key}', 1, integer=True)
    for key in ('dominant_specific', 'weak_specific', 'visibility'):
      _check_range(config, f'data.synthetic.{key}', 0.0, 1.0)


def _validate_model(config):
  from mbcd_jax import encoders  # pylint: disable=g-import-not-at-top  (flax: only when checking)
  known = encoders.names()
  for m in _names(config.data.modalities):
    name = config.model.encoders[m].get('name')
    _check(name in known, f'config.model.encoders.{m}.name: unknown encoder {name!r}; known: '
                          f'{", ".join(known)}')
  # The model variant: the one check of its keys, on the values this method runs with.
  for key in methods.MODEL_DEFAULTS:
    value = config.model.defaults.get(key)
    _check(value is not None, f'config.model.defaults.{key} must be set (the variant of MBCD '
                              'and its baselines)')
  methods.check_variant(methods.model_variant(config.model, config.method.name))
  _check_range(config, 'model.trunk_seed', -1, integer=True)
  _check_range(config, 'model.head_hidden', 1, integer=True)
  _check_range(config, 'model.head_dropout', 0.0, 1.0, hi_open=True)
  _check_range(config, 'model.dsu_p', 0.0, 1.0)


def _validate_optim(config):
  _check_range(config, 'optim.lr', 0.0, lo_open=True)
  _check_range(config, 'optim.weight_decay', 0.0)
  _check_range(config, 'optim.b1', 0.0, 1.0, hi_open=True)
  _check_range(config, 'optim.b2', 0.0, 1.0, hi_open=True)
  _check_range(config, 'optim.eps', 0.0, lo_open=True)


def _validate_train(config):
  from mbcd_jax import checkpoint  # pylint: disable=g-import-not-at-top  (orbax: only here)
  t = config.train
  _check_range(config, 'train.epochs', 1, integer=True)
  _check(t.recipe in recipes.RECIPES,
         f'config.train.recipe must be one of {recipes.RECIPES}, got {t.recipe!r}')
  _check_range(config, 'train.log_every', 1, integer=True)
  _check_range(config, 'train.eval_every_epochs', 1, integer=True)
  _check_range(config, 'train.checkpoint_every_steps', 0, integer=True)
  _check_range(config, 'train.keep_checkpoints', 1, integer=True)
  _check(t.resume_mode in checkpoint.RESUME_MODES,
         f'config.train.resume_mode must be one of {checkpoint.RESUME_MODES}, got '
         f'{t.resume_mode!r}')
  _check(t.nan_policy in NAN_POLICIES,
         f"config.train.nan_policy must be 'stop' or 'skip', got {t.nan_policy!r}")


def _validate_method(config) -> methods.MethodSpec:
  _check(config.method.ema_beta is not None,
         'config.method.ema_beta is not set (config.method.ema_horizon_ratio derives it on the '
         'embedded benchmark only, whose size is in the config)')
  cmrf = config.method.get('cmrf')
  _check(config.method.name != 'cmrf' or cmrf.sma_start_step is not None,
         'config.method.cmrf.sma_start_step is not set (config.method.cmrf.sma_start_percent '
         'derives it on the embedded benchmark only, whose size is in the config)')
  # names, modes, ema_beta, temperature; the run's seed and number of sources for a plug-in's
  # own (MOOSA's permutations, JAT's domain discriminators)
  spec = methods.resolve(config.method, seed=config.seed,
                         num_sources=len(_names(config.data.sources)))
  _check_range(config, 'method.alpha', 0.0)
  _check_range(config, 'method.amd_base', 0.0, 1.0)
  _check_range(config, 'method.amd_fixed_p', 0.0, 1.0)
  _check_range(config, 'method.lambda_mm', 0.0)
  _check_range(config, 'method.lambda_um', 0.0)
  _check(spec.amd == 'off' or len(_names(config.data.modalities)) >= 2,
         'config.method.amd needs at least two modalities')
  return spec


def validate(config: ml_collections.ConfigDict) -> methods.MethodSpec:
  """Checks every field a user can set; returns the resolved method.

  The one place for config checks: the library's modules trust a validated config. The batch
  sizes' divisibility by the device count needs the mesh and is checked by
  ``sharding.check_batch_size`` when the run is built.

  Raises:
    ValueError: one line naming the field at fault.
  """
  _check_range(config, 'seed', integer=True)
  _validate_data(config)
  _validate_model(config)
  _validate_optim(config)
  _validate_train(config)
  return _validate_method(config)


def normalize(config: ml_collections.ConfigDict, *, recipe: bool = True
              ) -> ml_collections.ConfigDict:
  """Lets ``--config.data.sources=animal`` or ``=animal,cartoon`` mean a tuple of domains, and
  resolves ``config.train.recipe`` (``recipes.apply``) and then the settings relative to the
  run's length (``derive_from_length``) unless ``recipe=False`` (a study's base config, whose
  runs each resolve their own)."""
  with config.unlocked():
    # absl turns --config.data.sources=D2,D3 into ('D2,D3',): split on commas too.
    split = lambda value: tuple(s.strip() for item in ([value] if isinstance(value, str)
                                                       else list(value))
                                for s in str(item).split(',') if s.strip())
    for key in ('sources', 'modalities', 'domains'):
      config.data[key] = split(config.data[key])
    for group in (config.model, config.model.get('defaults')):
      if group is not None and group.get('eval_trunks') is not None:
        group.eval_trunks = split(group.eval_trunks)
  return derive_from_length(recipes.apply(config, methods.EXTENSIONS)) if recipe else config


def steps_per_epoch(data_config) -> int | None:
  """Optimizer steps per epoch of the embedded benchmark (its train split: every source
  domain's ``train_per_domain`` examples, the last partial batch dropped, as the loader);
  None for prepared data (its size is in the store) or a batch size ``validate`` refuses."""
  if data_config.source != 'synthetic' or not isinstance(data_config.batch_size, int) or (
      data_config.batch_size < 1):
    return None
  per_domain = (data_config.synthetic or {}).get('train_per_domain',
                                                 synthetic_config().train_per_domain)
  return len(_names(data_config.sources)) * per_domain // data_config.batch_size


def derive_from_length(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The settings given relative to the run's length, from its final epochs and batch size
  (after the command line's overrides and the recipe): ``method.ema_beta`` from
  ``method.ema_horizon_ratio`` and CMRF's ``sma_start_step`` from its ``sma_start_percent``,
  each only where the setting itself is None (a value given explicitly is kept). Prepared
  data's size is not in the config: there the settings must be given."""
  m = config.method
  cmrf = m.get('cmrf')
  beta = m.get('ema_horizon_ratio') is not None and m.ema_beta is None
  sma = (cmrf is not None and cmrf.get('sma_start_percent') is not None
         and cmrf.sma_start_step is None)
  per_epoch = steps_per_epoch(config.data)
  if not (beta or sma) or per_epoch is None or not isinstance(config.train.epochs, int):
    return config   # left unset: validate names the setting (or the mistake that stopped it)
  steps = config.train.epochs * per_epoch
  if steps < 1:
    return config
  with config.unlocked():
    if beta:
      m.ema_beta = 1.0 - m.ema_horizon_ratio / steps
    if sma:
      cmrf.sma_start_step = steps * cmrf.sma_start_percent // 100
  return config
