"""Shared config defaults and validation for ``configs/*.py``.

A config has five groups: ``data`` (dataset, domains, modalities, batch), ``model`` (encoders,
heads), ``method`` (which objective: MBCD, its ablations, ERM/EMA), ``optim`` and ``train``.
``validate`` turns every mistake a user can make on the command line into a one-line
``ValueError`` naming the field.
"""
import ml_collections
from ml_collections import config_dict

from mbcd_jax import MODALITIES
from mbcd_jax import methods

DATASETS = {
    'hac': dict(domains=('human', 'animal', 'cartoon'), num_classes=7),
    'epic': dict(domains=('D1', 'D2', 'D3'), num_classes=8),
}


def method_config(name: str = 'mbcd') -> ml_collections.ConfigDict:
  """``config.method``: the preset name, component switches (None = from the preset) and the
  paper's coefficients."""
  return ml_collections.ConfigDict(dict(
      name=name,
      amd=config_dict.placeholder(str),          # 'adaptive' | 'fixed' | 'off'
      consistency=config_dict.placeholder(str),  # 'inner_first_order' | 'inner_second_order' | 'grad_dot' | 'off'
      ema=config_dict.placeholder(bool),
      distill=config_dict.placeholder(bool),
      unimodal_ce=config_dict.placeholder(bool),  # sum_k CE_k trains the encoders (None: auto)
      amd_base=0.0,         # the port's modality_drop_base
      amd_fixed_p=0.5,      # drop probability of the 'fixed' ablation (Table 5)
      alpha=1e-4,           # inner-loop step size
      ema_beta=0.999,       # EMA decay per optimizer step
      lambda_mm=1.0,        # KL(teacher || fused student)
      lambda_um=1.0,        # sum_k KL(teacher || uni-modal student k)
      temperature=1.0,
  ))


def base_config() -> ml_collections.ConfigDict:
  """The paper's recipe (method.md §6) with the real encoders; dataset fields are filled by
  ``configs/hac.py`` / ``configs/epic.py``."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      dataset='hac',              # 'hac' | 'epic' : the protocol (domains, classes)
      source='synthetic',         # 'synthetic' (embedded, no download) | 'prepared' (data.dir)
      dir=config_dict.placeholder(str),   # prepared clip store (python -m mbcd_jax.data.prepare)
      domains=('human', 'animal', 'cartoon'),
      sources=('animal', 'cartoon'),      # training domains
      target='human',                     # unseen test domain
      modalities=('video', 'flow', 'audio'),
      num_classes=7,
      hac_test_split_only=False,  # HAC target: whole domain (SimMMDG/port) vs its test split
      batch_size=16,              # global batch, split over all devices and hosts
      eval_batch_size=32,
      num_workers=0,              # grain worker processes (0 = in-process)
  ))
  c.model = ml_collections.ConfigDict(dict(
      encoders=ml_collections.ConfigDict(),   # modality -> {name, **kwargs, pretrained}
      freeze_trunk=True,          # paper: only the last stage (layer4) and the heads train
      # Seed of the random trunk init when no pretrained weights are loaded; -1: from
      # config.seed. A fixed value gives every training seed the same frozen trunk, as the
      # paper's seeds share one pretrained checkpoint (only the trained part varies).
      trunk_seed=-1,
      feature_norm='parameter_free',   # 'parameter_free' (port) | 'learnable'
      head_hidden=512,
      head_dropout=0.5,
      # BatchNorm semantics (mbcd_jax/models.py). 'port': as the reference's model.train(True),
      # every encoder BN (frozen layers too) normalises with batch statistics in training and
      # updates its running statistics (momentum 0.1, unbiased variance) once per student
      # pass; the EMA teacher averages them with the weights; evaluation runs on each
      # network's own running statistics. 'frozen': running statistics only, never updated
      # (faster: one trunk pass for student and teacher), to be measured against 'port'.
      bn_mode='port',
      dsu=True,                   # DSU feature-statistics noise (mbcd_jax/dsu.py), as the reference
      dsu_p=0.5,                  # probability of applying DSU, per call (trunk / last stage output)
      # 'pretrained': the audio encoder's last stage (layer4) starts from the checkpoint (MBCD
      # reference); 'random': from random init while the trunk is loaded (SimMMDG-style
      # baselines, whose audio tail never receives the checkpoint).
      audio_tail_init='pretrained',
  ))
  c.method = method_config('mbcd')
  c.optim = ml_collections.ConfigDict(dict(
      lr=1e-4, weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8))   # torch Adam, coupled L2
  c.train = ml_collections.ConfigDict(dict(
      epochs=20,
      log_every=10,               # steps between train-metric log lines
      eval_every_epochs=1,
      progress=True,              # tqdm progress bar with rate and ETA
      # Checkpoints (mbcd_jax/checkpoint.py) under <workdir>/checkpoints, also at every epoch end.
      checkpoint_every_steps=200,  # optimizer steps between mid-epoch checkpoints (0: epoch ends only)
      keep_checkpoints=3,         # the latest K are kept, plus the best-validation one
      async_checkpointing=True,   # write checkpoints in a background thread (orbax)
      resume_mode='strict',       # 'strict' | 'allow_changes' | 'restart' (an existing workdir)
      nan_policy='stop',          # non-finite loss/gradient: 'stop' the run | 'skip' the update
  ))
  return c


CONFIG_ARGS = ('synthetic', 'smoke')


def parse_config_arg(arg: str | None, config_file: str) -> set[str]:
  """``configs/x.py:synthetic,smoke`` -> {'synthetic', 'smoke'}; unknown words are an error."""
  args = set(filter(None, (arg or '').split(',')))
  unknown = args - set(CONFIG_ARGS)
  if unknown:
    raise ValueError(f'{config_file}: unknown argument(s) {sorted(unknown)}; known: '
                     f'{", ".join(CONFIG_ARGS)}')
  return args


def dataset_config(dataset: str, sources: tuple, target: str) -> ml_collections.ConfigDict:
  """``base_config()`` for ``dataset`` (its domains and classes) on real, prepared data."""
  c = base_config()
  c.data.dataset = dataset
  c.data.source = 'prepared'
  c.data.domains = DATASETS[dataset]['domains']
  c.data.num_classes = DATASETS[dataset]['num_classes']
  c.data.sources = tuple(sources)
  c.data.target = target
  return c


def validate(config: ml_collections.ConfigDict) -> methods.MethodSpec:
  """Checks a config; returns the resolved method. Raises a one-line ValueError on a mistake."""
  d = config.data
  if d.dataset not in DATASETS:
    raise ValueError(f'config.data.dataset: unknown dataset {d.dataset!r}; known: '
                     f'{", ".join(DATASETS)}')
  if d.source not in ('synthetic', 'prepared'):
    raise ValueError(f"config.data.source must be 'synthetic' or 'prepared', got {d.source!r}")
  domains = tuple(d.domains)
  sources = (d.sources,) if isinstance(d.sources, str) else tuple(d.sources)
  for name in sources + (d.target,):
    if name not in domains:
      raise ValueError(f'config.data: unknown domain {name!r}; the {d.dataset} domains are '
                       f'{", ".join(domains)}')
  if not sources:
    raise ValueError('config.data.sources: at least one source domain is required')
  if d.target in sources:
    raise ValueError(f'config.data: target domain {d.target!r} is also a source domain')
  mods = (d.modalities,) if isinstance(d.modalities, str) else tuple(d.modalities)
  if not mods:
    raise ValueError('config.data.modalities: at least one modality is required')
  for m in mods:
    if m not in MODALITIES:
      raise ValueError(f'config.data.modalities: unknown modality {m!r}; known: '
                       f'{", ".join(MODALITIES)}')
    if m not in config.model.encoders:
      raise ValueError(f'config.model.encoders has no encoder for modality {m!r}')
  if len(set(mods)) != len(mods):
    raise ValueError(f'config.data.modalities has duplicates: {mods}')
  if d.batch_size <= 0 or d.eval_batch_size <= 0:
    raise ValueError('config.data.batch_size and eval_batch_size must be positive')
  if config.model.feature_norm not in ('parameter_free', 'learnable'):
    raise ValueError(f"config.model.feature_norm must be 'parameter_free' or 'learnable', got "
                     f'{config.model.feature_norm!r}')
  from mbcd_jax import models  # pylint: disable=g-import-not-at-top  (heavy: flax, encoders)
  m = config.model
  if m.bn_mode not in models.BN_MODES:
    raise ValueError(f'config.model.bn_mode must be one of {models.BN_MODES}, got '
                     f'{m.bn_mode!r}')
  if not 0.0 <= m.dsu_p <= 1.0:
    raise ValueError(f'config.model.dsu_p must be in [0, 1], got {m.dsu_p}')
  if m.audio_tail_init not in models.AUDIO_TAIL_INITS:
    raise ValueError(f'config.model.audio_tail_init must be one of {models.AUDIO_TAIL_INITS}, '
                     f'got {m.audio_tail_init!r}')
  if config.train.epochs <= 0:
    raise ValueError(f'config.train.epochs must be positive, got {config.train.epochs}')
  spec = methods.resolve(config.method)
  if spec.amd != 'off' and len(mods) < 2:
    raise ValueError('config.method.amd needs at least two modalities')
  return spec


def normalize(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Lets ``--config.data.sources=animal`` or ``=animal,cartoon`` mean a tuple of domains."""
  with config.unlocked():
    for key in ('sources', 'modalities', 'domains'):
      value = config.data[key]
      items = [value] if isinstance(value, str) else list(value)
      # absl turns --config.data.sources=D2,D3 into ('D2,D3',): split on commas too.
      config.data[key] = tuple(s.strip() for item in items for s in str(item).split(',')
                               if s.strip())
  return config
